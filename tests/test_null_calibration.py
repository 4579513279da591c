"""Null calibration: every training claim's rules, fed two (or more) arms drawn from the same
runs and randomly relabelled, call the claim holds / contradicted no more often than the
protocol's stated error rate (alpha / 2 per direction), within the binomial tolerance of the
number of draws.

The pools are constructed run records (seed-paired, with every metric the rules read); the
relabelling (``claims.calibration``) is the same one a real stored study can be fed
(``experiments/null_calibration.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from xent_tf.claims.calibration import NullRates, null_rates, relabel
from xent_tf.claims.comparison import Verdict
from xent_tf.claims.from_studies import evaluate_study_claim
from xent_tf.claims.ledger import combine_datasets
from xent_tf.claims.protocol import statistic
from xent_tf.claims.records import StudyEvidence
from xent_tf.claims.studies import STUDIES, StudyOptions, group_variants
from xent_tf.metrics import PROBE_LOSS_METRIC
from xent_tf.track.run_record import RunRecord

DRAWS = 300
SIDE = statistic("alpha") / 2  # the stated false-alarm rate of each verdict direction
# A count above this is not binomial noise around the stated rate (one-sided, 0.1%).
MOST_FALSE_ALARMS = int(stats.binom.ppf(0.999, DRAWS, SIDE))


def _c8_pool(rng: np.random.Generator, seeds: int) -> list[RunRecord]:
    # final accuracies as noisy as the margin (sd 0.01 per run): equivalence is no sure thing
    return [
        RunRecord(
            f"b{seed}-{i}",
            {"data.name": "b", "data.n_classes": "2", "loss.name": "x", "model.n_params": "1"},
            seed,
            "FINISHED",
            {"val/acc": [0.8, 0.9 + 0.01 * rng.standard_normal()]},
        )
        for seed in range(seeds)
        for i in range(3)
    ]


def _c12_pool(rng: np.random.Generator, seeds: int) -> list[RunRecord]:
    out = []
    epochs = np.arange(1, 11)
    for seed in range(seeds):
        for init in ("standard", "saturated"):
            for i in range(3):  # ce, mse and the control mse_raw
                tau = rng.uniform(1.0, 5.0)
                curve = 0.5 + 0.45 * (1 - np.exp(-epochs / tau)) + 0.01 * rng.standard_normal(10)
                out.append(
                    RunRecord(
                        f"{seed}-{init}-{i}",
                        {
                            "data.name": "d",
                            "data.majority_share": "0.5000",
                            "data.n_classes": "2",
                            "loss.name": "x",
                            "optimizer.name": "sgd",
                            "model.output_init": init,
                        },
                        seed,
                        "FINISHED",
                        {
                            "val/acc": list(curve),
                            "val/loss": list(1 - curve),
                            "grad_norm/output": list(rng.uniform(0.1, 1.0, 10)),
                        },
                    )
                )
    return out


def _probe_losses(rng: np.random.Generator, level: float, bounce: float) -> list[float]:
    steps = np.arange(200)
    trend = level + 0.3 / (1 + steps / 20)
    return list(trend + bounce * rng.standard_normal(steps.size))


def _c13_pool(rng: np.random.Generator, seeds: int) -> list[RunRecord]:
    # Ten rates per seed whose runs come from one distribution: half of them diverge (a final
    # training loss above the class-prior loss: "diverged" at its null share), the others end
    # near 0.3 with a random probe-loss bounce.
    out = []
    for seed in range(seeds):
        for i in range(10):
            diverged = rng.random() < 0.5
            final = 0.8 + 0.05 * rng.random() if diverged else 0.3 + 0.05 * rng.standard_normal()
            out.append(
                RunRecord(
                    f"{seed}-{i}",
                    {
                        "optimizer.learning_rate": "x",
                        "lr_find.use": "given",
                        "data.prior_loss": "0.693147",
                        "data.majority_share": "0.5000",
                    },
                    seed,
                    "FINISHED",
                    {
                        "val/loss": [0.6 + 0.05 * rng.standard_normal(), final],
                        "train/loss": [0.6, final],
                        "val/acc": [0.7, 0.5 if diverged else 0.9],
                        PROBE_LOSS_METRIC: _probe_losses(rng, final, rng.uniform(0.001, 0.05)),
                    },
                )
            )
    return out


def _c15_pool(rng: np.random.Generator, seeds: int) -> list[RunRecord]:
    out = []
    for seed in range(seeds):
        for i in range(4):
            final = 0.3 + 0.05 * rng.standard_normal()
            out.append(
                RunRecord(
                    f"{seed}-{i}",
                    {
                        "schedule.name": "x",
                        "data.prior_loss": "0.693147",
                        "data.majority_share": "0.5000",
                    },
                    seed,
                    "FINISHED",
                    {
                        "val/loss": [0.6 + 0.05 * rng.standard_normal(), final],
                        "train/loss": [0.6, final],
                        "val/acc": [0.8, 0.9],
                        PROBE_LOSS_METRIC: _probe_losses(rng, final, rng.uniform(0.001, 0.05)),
                    },
                )
            )
    return out


Pool = Callable[[np.random.Generator, int], list[RunRecord]]
# (study, the compared param, its values, the pool, seeds, the directions that are false
# alarms): C8's claim is an equivalence, and equal arms are equivalent: only "contradicted" is
# a false alarm there.
CASES: list[tuple[str, str, tuple[str, ...], Pool, int, tuple[str, ...]]] = [
    (
        "binary_vs_categorical",
        "loss.name",
        ("bce", "cce", "sparse_cce"),
        _c8_pool,
        10,
        ("contradicted",),
    ),
    ("mse_vs_ce", "loss.name", ("ce", "mse", "mse_raw"), _c12_pool, 12, ("holds", "contradicted")),
    (
        "lr_sweep",
        "optimizer.learning_rate",
        (
            "0.0001",
            "0.000464",
            "0.00215",
            "0.01",
            "0.0464",
            "0.215",
            "1.0",
            "4.64",
            "21.5",
            "100.0",
        ),
        _c13_pool,
        16,
        ("holds", "contradicted"),
    ),
    (
        "annealing",
        "schedule.name",
        ("constant", "cosine", "exponential", "step"),
        _c15_pool,
        10,
        ("holds", "contradicted"),
    ),
]


def _check_rates(rates: NullRates, directions: tuple[str, ...]) -> None:
    if "holds" in directions:
        assert rates.holds <= MOST_FALSE_ALARMS, rates.describe()
    if "contradicted" in directions:
        assert rates.contradicted <= MOST_FALSE_ALARMS, rates.describe()


@pytest.mark.parametrize(
    ("study", "key", "labels", "pool", "seeds", "alarms"), CASES, ids=[c[0] for c in CASES]
)
def test_relabelled_arms_raise_no_more_false_alarms_than_stated(
    study: str,
    key: str,
    labels: tuple[str, ...],
    pool: Pool,
    seeds: int,
    alarms: tuple[str, ...],
) -> None:
    records = pool(np.random.default_rng(1), seeds)
    rates = null_rates(STUDIES[study], records, key, labels, DRAWS, seed=2)
    sub_claims = {"mse_vs_ce": {"C12b", "C12c"}}.get(study, set())
    assert set(rates) == set(STUDIES[study].claims) | sub_claims
    for claim, claim_rates in rates.items():
        assert claim_rates.draws == DRAWS
        # C12c says the mse/ce gradient ratio is << 1: with equal arms it is ~1, and
        # "contradicted" is the right answer there, not a false alarm.
        _check_rates(claim_rates, ("holds",) if claim == "C12c" else alarms)


def test_one_claim_on_four_data_sets_keeps_its_rate() -> None:
    """C15 on four data sets: 24 paired comparisons; uncorrected, "contradicted if any part is"
    would fire on most draws of equal arms."""
    spec = STUDIES["annealing"]
    rng = np.random.default_rng(3)
    pools = {f"d{i}": _c15_pool(rng, 10) for i in range(4)}
    draws, holds, contradicted, uncorrected = 150, 0, 0, 0
    labels = ("constant", "cosine", "exponential", "step")
    for _ in range(draws):
        per_dataset = {}
        for name, pool in pools.items():
            runs = relabel(pool, "schedule.name", labels, [], rng)
            checks = tuple(spec.evaluate(group_variants(runs, spec.group_by), StudyOptions()))
            per_dataset[name] = evaluate_study_claim(
                "C15", StudyEvidence("annealing", checks=checks, dataset=name)
            )
        row = combine_datasets("C15", per_dataset)
        holds += row.verdict == Verdict.HOLDS
        contradicted += row.verdict == Verdict.CONTRADICTED
        uncorrected += any(p.verdict.own_verdict == Verdict.CONTRADICTED for p in row.parts)
    bound = int(stats.binom.ppf(0.999, draws, SIDE))
    assert holds <= bound and contradicted <= bound, (holds, contradicted)
    # without the correction: well above the stated rate (the old protocol's false alarms)
    assert uncorrected > 3 * bound, uncorrected


def test_relabelling_keeps_seeds_and_contexts_and_names_a_short_group() -> None:
    records = _c12_pool(np.random.default_rng(0), 2)
    out = relabel(
        records,
        "loss.name",
        ("ce", "mse", "mse_raw"),
        ["model.output_init"],
        np.random.default_rng(0),
    )
    assert len(out) == len(records)
    for seed in (0, 1):
        for init in ("standard", "saturated"):
            group = [r for r in out if r.seed == seed and r.params["model.output_init"] == init]
            assert sorted(r.params["loss.name"] for r in group) == ["ce", "mse", "mse_raw"]
            # each arm got a run of this seed and context
            assert all(r.run_id.startswith(f"{seed}-{init}-") for r in group)
    with pytest.raises(ValueError, match=r"has 3 runs; relabelling loss.name needs one per label"):
        relabel(
            records,
            "loss.name",
            ("a", "b", "c", "d"),
            ["model.output_init"],
            np.random.default_rng(0),
        )
