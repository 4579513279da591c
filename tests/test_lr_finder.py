"""The learning-rate range test: curve, smoothing, suggestions, state restore, bad input.

The TensorFlow tests share one logistic-regression loop (Input -> Dense(1, sigmoid), SGD) on
512 near-separable rows and use the same number of steps, so the compiled epoch is traced once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import pytest
from sklearn.datasets import make_classification

from xent_tf.train.lr_finder import (
    RangeTestResult,
    analyse_curve,
    divergence_index,
    find_learning_rate,
    minimum_lr,
    range_test_rates,
    smooth_losses,
    steepest_lr,
    valley_lr,
)
from xent_tf.train.training import CompiledLoop, TensorSplit

N_STEPS = 100  # every TF test uses this many steps: one trace of the compiled epoch
BATCH = 32
MIN_LR, MAX_LR = 1e-4, 1e3

# ---------------------------------------------------------------------------------------------
# The curve arithmetic, by hand.


def test_smoothing_matches_hand_computed_example() -> None:
    # beta = 0.5:  avg 0.5, 0.5, 0.65, 0.425;  corrections 1-0.5, 1-0.25, 1-0.125, 1-0.0625.
    smoothed = smooth_losses(np.array([1.0, 0.5, 0.8, 0.2]), beta=0.5)
    np.testing.assert_allclose(smoothed, [1.0, 2 / 3, 26 / 35, 34 / 75], rtol=1e-12)


def test_smoothing_with_beta_zero_is_the_raw_loss_and_the_first_point_is_unbiased() -> None:
    losses = np.array([0.7, 0.3, 0.9])
    np.testing.assert_array_equal(smooth_losses(losses, beta=0.0), losses)
    assert smooth_losses(losses, beta=0.98)[0] == pytest.approx(0.7, rel=1e-12)


def test_divergence_index_is_the_first_step_above_factor_times_best_or_not_finite() -> None:
    # Best so far 0.5 from step 1: 1.9 <= 4 x 0.5, 2.1 > 2.0 trips at step 3.
    assert divergence_index(np.array([1.0, 0.5, 1.9, 2.1, 0.1]), 4.0) == 3
    assert divergence_index(np.array([1.0, 0.9, np.nan, 0.5]), 4.0) == 2
    assert divergence_index(np.array([1.0, np.inf]), 4.0) == 1
    assert divergence_index(np.array([1.0, 0.8, 3.2]), 4.0) is None  # equal is not above


def test_rates_are_geometric_or_linear_from_min_to_max() -> None:
    exponential = range_test_rates(1e-6, 1.0, 13, "exponential")
    np.testing.assert_array_equal(exponential, np.geomspace(1e-6, 1.0, 13))
    np.testing.assert_allclose(exponential[1:] / exponential[:-1], 10 ** (6 / 12), rtol=1e-12)
    linear = range_test_rates(0.1, 1.3, 13, "linear")
    np.testing.assert_allclose(np.diff(linear), 0.1, rtol=1e-12)
    for rates, first, last in ((exponential, 1e-6, 1.0), (linear, 0.1, 1.3)):
        assert (rates[0], rates[-1]) == (first, last)


def test_valley_matches_a_hand_worked_example() -> None:
    # Longest strictly decreasing run ending at each point: 1 2 1 3 4 1 5. It ends at step 6
    # with length 5, so start = 6 - 5 = 1, sections = 5/3, index = 1 + 1 + int(0.83) = 2.
    lrs = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert valley_lr(lrs, np.array([5.0, 4.0, 6.0, 3.0, 2.0, 7.0, 1.0])) == 3.0
    # A run from step 0: fastai's start would be -1 and could wrap to the last rate; clamped.
    assert valley_lr(lrs[:4], np.array([4.0, 3.0, 2.0, 1.0])) == 2.0
    assert valley_lr(lrs[:3], np.array([1.0, 2.0, 3.0])) is None


def test_minimum_is_the_rate_at_the_lowest_loss_over_ten() -> None:
    assert minimum_lr(np.array([0.01, 0.1, 1.0]), np.array([0.9, 0.2, 5.0])) == (0.1, 0.01)


def _synthetic_curve() -> tuple[np.ndarray, np.ndarray]:
    """Flat at 1.0, a sigmoid fall to 0.2 centred on lr=1e-3, then an explosion past 0.1."""
    lrs = np.geomspace(1e-6, 1.0, 121)  # 20 points per decade
    log_lr = np.log10(lrs)
    loss = 1.0 - 0.8 / (1.0 + np.exp(-4.0 * (log_lr + 3.0)))
    loss = loss + np.where(log_lr > -1.0, 50.0 * (log_lr + 1.0) ** 2, 0.0)
    return lrs, loss


def test_steepest_is_the_middle_of_the_fall() -> None:
    lrs, loss = _synthetic_curve()
    assert steepest_lr(lrs, loss) == pytest.approx(1e-3)


def test_steepest_ignores_wander_on_the_flat_start_and_oscillation_past_the_minimum() -> None:
    lrs, loss = _synthetic_curve()
    noisy = loss.copy()
    # The fall's steepest slope is 0.8 per decade = 0.35 per unit of ln(lr).
    noisy[15] -= 0.1  # lr 5.6e-6: a one-batch dip on the flat start, slope 0.43 next to it
    noisy[110] = 0.5  # lr 0.32: a swing down inside the explosion, slope about -33
    for dip in (15, 110):
        curve = loss.copy()
        curve[dip] = noisy[dip]
        assert lrs[np.argmin(np.gradient(curve, np.log(lrs)))] != pytest.approx(1e-3)
    assert steepest_lr(lrs, noisy) == pytest.approx(1e-3)


def test_steepest_is_none_on_a_rising_curve() -> None:
    lrs = np.geomspace(1e-3, 1.0, 20)
    assert steepest_lr(lrs, np.linspace(1.0, 3.0, 20)) is None


# ---------------------------------------------------------------------------------------------
# The range test on logistic regression.


@pytest.fixture(scope="module")
def train() -> TensorSplit:
    """512 near-separable rows: one cluster per class, well apart, 5% of labels flipped."""
    x, y = make_classification(
        n_samples=512,
        n_features=8,
        n_informative=4,
        n_redundant=0,
        n_clusters_per_class=1,
        class_sep=2.0,
        flip_y=0.05,
        random_state=0,
    )
    return TensorSplit.from_numpy(
        x.astype(np.float32), y.astype(np.float32).reshape(-1, 1), y.astype(np.int32)
    )


def _logistic_loop(optimizer: keras.optimizers.Optimizer, seed: int = 0) -> CompiledLoop:
    """Logistic regression: no hidden layer (build_mlp needs one), so built here."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(8,))
    outputs = keras.layers.Dense(1, activation="sigmoid", name="output")(inputs)
    model = keras.Model(inputs, outputs)
    return CompiledLoop(model, keras.losses.BinaryCrossentropy(), optimizer, BATCH, False)


@pytest.fixture(scope="module")
def loop() -> CompiledLoop:
    """One loop shared by the module; every test leaves its state as it found it."""
    return _logistic_loop(keras.optimizers.SGD(learning_rate=0.1))


def _state(loop: CompiledLoop) -> list[np.ndarray]:
    return [
        np.array(v.numpy(), copy=True) for v in [*loop.model.variables, *loop.optimizer.variables]
    ]


def _set_state(loop: CompiledLoop, state: list[np.ndarray]) -> None:
    for variable, value in zip(
        [*loop.model.variables, *loop.optimizer.variables], state, strict=True
    ):
        variable.assign(value)


def _assert_same_state(before: list[np.ndarray], after: list[np.ndarray]) -> None:
    assert len(before) == len(after)
    for b, a in zip(before, after, strict=True):
        assert b.dtype == a.dtype and np.array_equal(b, a)


def _final_loss(
    loop: CompiledLoop, train: TensorSplit, lr: float, start: list[np.ndarray]
) -> float:
    """Full-data loss after N_STEPS steps at a constant rate from ``start`` (state put back)."""
    order = np.concatenate([np.random.default_rng(1).permutation(len(train)) for _ in range(7)])
    _set_state(loop, start)
    loop.run_epoch(train, order[: N_STEPS * BATCH], np.full(N_STEPS, lr))
    loss = loop.evaluate(train).loss
    _set_state(loop, start)
    return loss


def test_the_suggestions_fall_in_the_measured_good_range(
    loop: CompiledLoop, train: TensorSplit
) -> None:
    start = _state(loop)
    result = find_learning_rate(loop, train, MIN_LR, MAX_LR, N_STEPS)
    # The good range, measured: the same 100 steps at fixed rates across the tested range.
    grid = np.geomspace(MIN_LR, MAX_LR, 15)
    finals = np.array([_final_loss(loop, train, lr, start) for lr in grid])
    best = finals.min()
    # There is a range to find: the flat and the exploding ends are far worse.
    assert finals[0] > 3 * best and finals[-1] > 3 * best
    good = grid[finals <= 1.5 * best]  # measured: 0.01 to 1.8
    suggestions = result.suggestions()
    assert all(rate is not None for rate in suggestions.values()), result.message
    for method, rate in suggestions.items():
        assert rate is not None
        final = _final_loss(loop, train, rate, start)
        message = f"{method} {rate:.3g}: loss {final:.4f}, best {best:.4f}, {result.message}"
        if method == "minimum":
            # (min-loss rate)/10 lands on the upper edge, where the loss starts to climb
            # (measured: 2.36 -> 1.55 x best): good, not as safe as the other two.
            assert final <= 2.0 * best, message
        else:
            assert good.min() <= rate <= good.max(), message
            assert final <= 1.25 * best, message
    assert result.method == "steepest" and result.suggestion == result.steepest_lr
    assert result.minimum_lr == pytest.approx(result.min_loss_lr / 10)  # type: ignore[operator]


def test_records_each_batch_own_loss_and_its_smoothing(
    loop: CompiledLoop, train: TensorSplit
) -> None:
    result = find_learning_rate(loop, train, MIN_LR, MAX_LR, N_STEPS, beta=0.9)
    assert len(result.losses) == len(result.lrs) == len(result.smoothed)
    np.testing.assert_array_equal(result.smoothed, smooth_losses(result.losses, 0.9))
    # The first batch's own loss, measured directly: not a running mean over the epoch.
    order = np.random.default_rng(0).permutation(len(train))[:BATCH]
    first = loop.loss(np.asarray(train.targets)[order], loop.model(np.asarray(train.x)[order]))
    assert result.losses[0] == pytest.approx(float(first), rel=1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.suggestion = 1.0  # type: ignore[misc]


@pytest.fixture
def spy(loop: CompiledLoop, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, np.ndarray]]:
    """Record what the range test hands to the compiled loop, and the rate it last applied."""
    calls: list[dict[str, np.ndarray]] = []
    run_epoch = loop.run_epoch

    def recording(
        train: TensorSplit, order: np.ndarray, learning_rates: np.ndarray
    ) -> tuple[np.ndarray, float, float]:
        out = run_epoch(train, order, learning_rates)
        # Read before the range test restores the optimizer.
        applied = loop.optimizer.learning_rate.numpy()
        calls.append({"order": order, "rates": learning_rates, "applied_last": applied})
        return out

    monkeypatch.setattr(loop, "run_epoch", recording)
    return calls


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("exponential", np.geomspace(1e-4, 10.0, N_STEPS)),
        ("linear", np.linspace(1e-4, 10.0, N_STEPS)),
    ],
)
def test_the_schedule_visits_exactly_the_requested_rates(
    loop: CompiledLoop,
    train: TensorSplit,
    spy: list[dict[str, np.ndarray]],
    mode: str,
    expected: np.ndarray,
) -> None:
    result = find_learning_rate(loop, train, 1e-4, 10.0, N_STEPS, mode=mode, seed=3)
    assert len(spy) == 1  # one compiled call for all steps
    np.testing.assert_array_equal(spy[0]["rates"], expected)
    assert not result.stopped_early, result.stop_reason
    np.testing.assert_array_equal(result.lrs, expected)
    assert (result.lrs[0], result.lrs[-1]) == (1e-4, 10.0)
    assert spy[0]["applied_last"] == np.float32(10.0)  # the last step ran at max_lr
    # Rows: per-epoch permutations end to end, one full batch per step, across 7 epochs.
    order = spy[0]["order"]
    assert len(order) == N_STEPS * BATCH
    for epoch in range(len(order) // len(train)):
        block = order[epoch * len(train) : (epoch + 1) * len(train)]
        np.testing.assert_array_equal(np.sort(block), np.arange(len(train)))


def test_linear_mode_suggests_a_rate_inside_the_good_range(
    loop: CompiledLoop, train: TensorSplit
) -> None:
    start = _state(loop)
    result = find_learning_rate(loop, train, 1e-3, 10.0, N_STEPS, mode="linear")
    assert result.mode == "linear" and result.suggestion is not None, result.message
    best = min(_final_loss(loop, train, lr, start) for lr in np.geomspace(1e-3, 10.0, 9))
    assert _final_loss(loop, train, result.suggestion, start) <= 1.5 * best


def test_early_stop_on_a_diverging_curve(loop: CompiledLoop, train: TensorSplit) -> None:
    result = find_learning_rate(loop, train, 1e-2, 1e8, N_STEPS)
    assert result.stopped_early and len(result.lrs) < N_STEPS
    assert "exceeded 4 x its best" in result.stop_reason or "NaN/inf" in result.stop_reason
    np.testing.assert_array_equal(result.lrs, np.geomspace(1e-2, 1e8, N_STEPS)[: len(result.lrs)])
    assert np.all(np.isfinite(result.smoothed))
    # The last kept step tripped the 4x rule (or the next one was not finite).
    tripped = result.smoothed[-1] > 4 * result.smoothed[:-1].min()
    assert tripped or "NaN/inf" in result.stop_reason
    assert result.suggestion is not None  # it fell first (from 0.01 up to about 10)


def test_a_larger_divergence_factor_runs_longer(loop: CompiledLoop, train: TensorSplit) -> None:
    strict = find_learning_rate(loop, train, 1e-2, 1e8, N_STEPS, divergence_factor=1.5)
    lenient = find_learning_rate(loop, train, 1e-2, 1e8, N_STEPS, divergence_factor=4.0)
    assert len(strict.lrs) < len(lenient.lrs)


@pytest.mark.parametrize(
    ("min_lr", "max_lr", "factor", "why"),
    [
        (1e3, 1e8, 4.0, "stopped after"),  # blows up within a few steps
        # With the stop switched off: jumps from 1.8 to 13 at once, then wanders upwards.
        (1e2, 1e4, 1e9, "never fell below"),
    ],
)
def test_a_curve_diverging_from_the_start_gives_no_suggestion_and_says_what_to_try(
    loop: CompiledLoop, train: TensorSplit, min_lr: float, max_lr: float, factor: float, why: str
) -> None:
    result = find_learning_rate(
        loop, train, min_lr, max_lr, N_STEPS, divergence_factor=factor, method="valley"
    )
    assert result.suggestion is None
    assert result.suggestions() == {"steepest": None, "valley": None, "minimum": None}
    assert why in result.message
    assert "no suggestion" in result.message and "lower min_lr" in result.message.lower()


def test_a_curve_that_only_rises_after_a_lucky_first_batch_gives_no_suggestion() -> None:
    rates = np.geomspace(1e-2, 1e2, 40)
    wobble = 0.05 * np.sin(np.arange(40))  # dips, but never below the first batch's 0.7
    losses = np.concatenate([[0.7], np.linspace(0.9, 2.0, 39)]) + np.r_[0.0, wobble[1:]]
    result = analyse_curve(rates, losses, beta=0.5)
    assert not result.stopped_early and result.suggestion is None
    assert "never fell below the first batch's loss 0.7" in result.message
    # After the same lucky first batch, a real fall is still read.
    falling = np.r_[0.7, np.linspace(0.9, 0.2, 30), np.linspace(0.3, 2.0, 9)] + wobble / 5
    assert analyse_curve(rates, falling, beta=0.5).suggestion is not None


def test_analyse_curve_checks_its_input() -> None:
    with pytest.raises(ValueError, match="got 3 losses for 2 rates"):
        analyse_curve(np.array([0.1, 1.0]), np.ones(3))
    with pytest.raises(ValueError, match="positive and increasing"):
        analyse_curve(np.array([1.0, 0.1]), np.ones(2))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(learning_rate=0.01),
    ],
    ids=["sgd_momentum", "adam"],
)
def test_weights_and_optimizer_state_are_bit_identical_afterwards(
    train: TensorSplit, make_optimizer: Callable[[], keras.optimizers.Optimizer]
) -> None:
    loop = _logistic_loop(make_optimizer(), seed=1)
    rng = np.random.default_rng(0)
    # Some real training first, so the slots and the iteration counter are not zeros.
    loop.run_epoch(train, rng.permutation(len(train)), np.full(16, 0.05))
    before = _state(loop)
    assert int(loop.optimizer.iterations.numpy()) == 16
    order = rng.permutation(len(train))
    reference_losses, _, _ = loop.run_epoch(train, order, np.full(16, 0.05))
    _set_state(loop, before)

    for kwargs in ({}, {"min_lr": 1.0, "max_lr": 1e12}):  # a normal curve, one that blows up
        find_learning_rate(loop, train, num_steps=N_STEPS, **kwargs)  # type: ignore[arg-type]
        _assert_same_state(before, _state(loop))
    assert int(loop.optimizer.iterations.numpy()) == 16
    assert loop.optimizer.learning_rate.numpy() == np.float32(0.05)
    # And training carries on exactly as if no test had run.
    losses, _, _ = loop.run_epoch(train, order, np.full(16, 0.05))
    np.testing.assert_array_equal(losses, reference_losses)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_lr": 1.0, "max_lr": 1.0}, r"min_lr=1\.0 must be < max_lr=1\.0"),
        ({"min_lr": 2.0, "max_lr": 1.0}, r"min_lr=2\.0 must be < max_lr=1\.0"),
        ({"min_lr": 0.0}, r"min_lr=0\.0 must be > 0"),
        ({"min_lr": -1e-3}, r"min_lr=-0\.001 must be > 0"),
        ({"min_lr": float("nan")}, r"min_lr=nan must be > 0"),
        ({"max_lr": -5.0}, r"max_lr=-5\.0 must be > 0"),
        ({"max_lr": float("inf")}, r"max_lr=inf must be finite"),
        ({"num_steps": 9}, r"num_steps=9 must be >= 10"),
        ({"beta": 1.0}, r"beta=1\.0 must be in \[0, 1\)"),
        ({"beta": -0.1}, r"beta=-0\.1 must be in \[0, 1\)"),
        ({"mode": "cubic"}, r"mode='cubic' is not one of \['exponential', 'linear'\]"),
        ({"method": "fastest"}, r"method='fastest' is not one of"),
        ({"divergence_factor": 1.0}, r"divergence_factor=1\.0 must be > 1"),
    ],
)
def test_bad_input_names_the_value(
    loop: CompiledLoop, train: TensorSplit, kwargs: dict[str, object], match: str
) -> None:
    before = _state(loop)
    with pytest.raises(ValueError, match=match):
        find_learning_rate(loop, train, **kwargs)  # type: ignore[arg-type]
    _assert_same_state(before, _state(loop))


def test_a_schedule_object_learning_rate_is_refused(train: TensorSplit) -> None:
    # CompiledLoop refuses one at construction; the range test checks again on its own.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    loop = CompiledLoop.__new__(CompiledLoop)
    loop.optimizer = keras.optimizers.SGD(learning_rate=schedule)
    with pytest.raises(ValueError, match=r"schedule object \(ExponentialDecay\).*float"):
        find_learning_rate(loop, train)


def test_result_exposes_the_per_step_series_for_tracking(
    loop: CompiledLoop, train: TensorSplit
) -> None:
    result: RangeTestResult = find_learning_rate(loop, train, MIN_LR, MAX_LR, N_STEPS)
    series = result.step_metrics()
    assert set(series) == {"lr_find/lr", "lr_find/loss", "lr_find/loss_smoothed"}
    assert {len(values) for values in series.values()} == {len(result.lrs)}
    assert result.seconds > 0
    rate = result.suggestion
    assert rate is not None
    assert min(result.smoothed) <= result.smoothed_loss_at(rate) <= max(result.smoothed)
