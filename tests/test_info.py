"""Information theory in NumPy (claims C1-C4): known values, identities, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from xent_tf.claims import info


def random_distributions(seed: int, n_rows: int = 200, n: int = 6) -> np.ndarray:
    """Dirichlet(0.5) rows: includes peaked ones, where the identities are hardest."""
    return np.random.default_rng(seed).dirichlet(np.full(n, 0.5), size=n_rows)


# --------------------------------------------------------------------------- C1


@pytest.mark.parametrize(
    ("p", "nats"), [(0.7, 0.356675), (0.2, 1.609438), (0.1, 2.302585), (1.0, 0.0)]
)
def test_self_information_known_values(p: float, nats: float) -> None:
    assert info.self_information(p) == pytest.approx(nats, abs=1e-6)


def test_self_information_vectorised_and_edge_cases() -> None:
    values = info.self_information([0.7, 0.2, 0.1])
    np.testing.assert_allclose(values, [-math.log(0.7), -math.log(0.2), -math.log(0.1)])
    assert info.self_information(1.0) == 0.0
    assert info.self_information(0.0) == math.inf
    assert info.self_information(0.5, base=2) == pytest.approx(1.0)
    assert info.self_information(0.125, base=2) == pytest.approx(3.0)


# --------------------------------------------------------------------------- C2


def test_entropy_of_tutorial_distribution() -> None:
    assert info.entropy([0.7, 0.2, 0.1]) == pytest.approx(0.801819, abs=1e-6)


def test_entropy_is_expected_self_information() -> None:
    p = np.array([0.7, 0.2, 0.1])
    expected = float(np.sum(p * np.asarray(info.self_information(p))))
    assert info.entropy(p) == pytest.approx(expected, rel=1e-12)


def test_fair_coin_has_one_bit_not_zero() -> None:
    assert info.entropy([0.5, 0.5], base=2) == pytest.approx(1.0, abs=1e-12)
    assert info.entropy([0.5, 0.5]) == pytest.approx(math.log(2), abs=1e-12)


def test_entropy_extremes() -> None:
    # 0 log 0 = 0: a certain outcome has no uncertainty; uniform over n has ln n.
    assert info.entropy([1.0, 0.0, 0.0]) == 0.0
    assert info.entropy(np.full(8, 1 / 8), base=2) == pytest.approx(3.0)


def test_entropy_matches_scipy_over_batch() -> None:
    p = random_distributions(seed=0)
    ours = info.entropy(p)
    np.testing.assert_allclose(ours, stats.entropy(p, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(info.entropy(p, base=2), stats.entropy(p, base=2, axis=-1))
    assert np.shape(ours) == (200,)
    assert isinstance(info.entropy(p[0]), float)


# --------------------------------------------------------------------------- C3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cross_entropy_is_entropy_plus_kl(seed: int) -> None:
    p = random_distributions(seed)
    q = random_distributions(seed + 100)
    lhs = np.asarray(info.cross_entropy(p, q))
    rhs = np.asarray(info.entropy(p)) + np.asarray(info.kl_divergence(p, q))
    np.testing.assert_allclose(lhs, rhs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [4, 5])
def test_kl_non_negative_zero_iff_equal_and_asymmetric(seed: int) -> None:
    p = random_distributions(seed)
    q = random_distributions(seed + 100)
    kl_pq = np.asarray(info.kl_divergence(p, q))
    kl_qp = np.asarray(info.kl_divergence(q, p))
    assert np.all(kl_pq >= 0)
    assert np.all(kl_pq > 1e-6)  # independent draws are never equal
    np.testing.assert_allclose(info.kl_divergence(p, p), 0.0, atol=1e-12)
    # Asymmetric in general: most pairs differ by far more than rounding.
    assert np.median(np.abs(kl_pq - kl_qp)) > 1e-2


def test_kl_and_cross_entropy_match_scipy() -> None:
    p = random_distributions(seed=6)
    q = random_distributions(seed=7)
    np.testing.assert_allclose(info.kl_divergence(p, q), stats.entropy(p, q, axis=-1), rtol=1e-10)
    # scipy.stats.entropy(p, q) is KL; cross-entropy is H(p) + KL.
    expected_ce = stats.entropy(p, axis=-1) + stats.entropy(p, q, axis=-1)
    np.testing.assert_allclose(info.cross_entropy(p, q), expected_ce, rtol=1e-10)


def test_known_asymmetric_pair() -> None:
    p, q = [0.9, 0.1], [0.5, 0.5]
    assert info.kl_divergence(p, q) == pytest.approx(0.368064, abs=1e-6)
    assert info.kl_divergence(q, p) == pytest.approx(0.510826, abs=1e-6)


def test_zero_conventions() -> None:
    # q = 0 where p > 0: infinitely surprised.
    assert info.cross_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert info.kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    # p = 0 where q = 0: the term is 0 (0 log 0 = 0), result finite.
    assert info.cross_entropy([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert info.kl_divergence([0.0, 1.0], [0.0, 1.0]) == 0.0


def test_objectives_share_argmin_over_one_parameter_family() -> None:
    p = np.array([0.5, 0.3, 0.2])
    labels = np.random.default_rng(8).choice(3, size=5000, p=p)
    # q(theta) = (theta, 0.6 (1 - theta), 0.4 (1 - theta)): every objective is minimised at
    # theta = p_0 = 0.5 (grid index 9).
    thetas = np.linspace(0.05, 0.95, 19)
    family = np.stack([thetas, 0.6 * (1 - thetas), 0.4 * (1 - thetas)], axis=1)
    result = info.compare_objectives(p, family, labels)
    assert result.argmin_cross_entropy == result.argmin_kl_divergence == 9
    assert result.argmin_mean_nll == 9
    np.testing.assert_allclose(
        result.cross_entropy - result.kl_divergence, result.entropy_p, atol=1e-12
    )


def test_mean_nll_is_cross_entropy_against_empirical_distribution() -> None:
    rng = np.random.default_rng(9)
    labels = rng.choice(4, size=300, p=[0.4, 0.3, 0.2, 0.1])
    candidates = rng.dirichlet(np.ones(4), size=50)
    p_hat = info.empirical_distribution(labels, 4)
    result = info.compare_objectives(p_hat, candidates, labels)
    np.testing.assert_allclose(result.mean_nll, result.cross_entropy, rtol=1e-12)
    assert result.argmin_mean_nll == result.argmin_cross_entropy == result.argmin_kl_divergence
    assert result.entropy_p == pytest.approx(stats.entropy(p_hat))


def test_mean_negative_log_likelihood_hand_computed() -> None:
    q = [0.5, 0.25, 0.25]
    assert info.mean_negative_log_likelihood([0, 1], q) == pytest.approx(
        (math.log(2) + math.log(4)) / 2
    )
    assert info.mean_negative_log_likelihood([0, 1], q, base=2) == pytest.approx(1.5)


# --------------------------------------------------------------------------- C4


def test_bits_are_nats_over_ln2() -> None:
    p = random_distributions(seed=10)
    q = random_distributions(seed=11)
    for fn in (info.cross_entropy, info.kl_divergence):
        np.testing.assert_allclose(fn(p, q, base=2), np.asarray(fn(p, q)) / math.log(2))
    np.testing.assert_allclose(info.entropy(p, base=2), info.nats_to_bits(info.entropy(p)))
    assert info.bits_to_nats(info.nats_to_bits(1.234)) == pytest.approx(1.234)


def test_cross_entropy_in_bits_is_mean_code_length() -> None:
    # Dyadic p: its optimal prefix code has lengths 1, 2, 3, 3 (0, 10, 110, 111).
    p = [0.5, 0.25, 0.125, 0.125]
    mean_length = 0.5 * 1 + 0.25 * 2 + 0.125 * 3 + 0.125 * 3
    assert info.entropy(p, base=2) == pytest.approx(mean_length)
    # A code built for the uniform q uses 2 bits for every event.
    assert info.cross_entropy(p, [0.25] * 4, base=2) == pytest.approx(2.0)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: info.entropy([-0.1, 1.1]), r"negative entry -0\.1 at index \(0,\)"),
        (lambda: info.entropy([0.5, 0.6]), r"sum to 1 .* atol=1e-06; it sums to 1\.1"),
        (lambda: info.entropy([[0.5, 0.5], [0.5, 0.4]]), r"row 1 sums to 0\.9"),
        (lambda: info.entropy([0.5, 0.5000001], atol=1e-9), r"atol=1e-09"),
        (lambda: info.cross_entropy([0.5, 0.5], [0.2, 0.3, 0.5]), r"p\.shape=\(2,\).*\(3,\)"),
        (lambda: info.kl_divergence([0.5, 0.5], [[0.5, 0.5]]), r"same shape"),
        (lambda: info.entropy([0.5, 0.5], base=10), r"base must be one of .*got base=10"),  # type: ignore[arg-type]
        (lambda: info.entropy([0.5, 0.5], base="2"), r"got base='2'"),  # type: ignore[arg-type]
        (lambda: info.entropy([0.5, 0.5], base=True), r"got base=True"),  # type: ignore[arg-type]
        (lambda: info.entropy(0.5), r"at least one axis"),
        (lambda: info.entropy([0.5, np.nan]), r"finite; found nan"),
        (lambda: info.cross_entropy([0.5, 0.5], [-0.5, 1.5]), r"q has a negative entry"),
        (lambda: info.self_information(1.5), r"probability in \[0, 1\]; got 1\.5"),
        (lambda: info.mean_negative_log_likelihood([0, 3], [0.5, 0.5]), r"\[0, 1\]; got 3"),
        (lambda: info.mean_negative_log_likelihood([0.0, 1.0], [0.5, 0.5]), r"integer"),
    ],
)
def test_bad_input_raises_helpful_value_error(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_tolerance_is_a_keyword() -> None:
    # float32 softmax rows are off by ~1e-7: accepted by default, rejected when asked.
    p = np.array([0.5, 0.5 + 5e-7])
    assert info.entropy(p) == pytest.approx(math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="atol=1e-08"):
        info.entropy(p, atol=1e-8)
