"""Aggregation and verdict rules on constructed run histories with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xent_tf.comparison import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    Interval,
    RunRecord,
    combine_verdicts,
    difference_verdict,
    epochs_to_target,
    equivalence_verdict,
    late_oscillation,
    mean_interval,
    paired_difference,
)
from xent_tf.studies import StudyOptions, get_study, group_variants


def test_mean_interval_matches_the_student_t_formula() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    interval = mean_interval(values)
    # mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert interval.mean == 3.0 and interval.n == 5
    assert (interval.low, interval.high) == pytest.approx((3 - half, 3 + half), rel=1e-9)
    low, high = stats.t.interval(0.95, 4, loc=3.0, scale=stats.sem(values))
    assert (interval.low, interval.high) == pytest.approx((low, high))


def test_one_value_has_no_interval_and_says_so() -> None:
    interval = mean_interval([0.9])
    assert not interval.has_interval and interval.format() == "0.9000 (n=1, no interval)"
    verdict = difference_verdict(interval, True, "x")
    assert verdict.verdict == INCONCLUSIVE and "needs at least 2 paired seeds" in verdict.measured
    assert mean_interval([]).format() == "n/a (no runs)"


def test_paired_difference_uses_common_seeds_only() -> None:
    diff = paired_difference({0: 5.0, 1: 6.0, 2: 7.0, 3: 100.0}, {0: 4.0, 1: 5.0, 2: 6.0})
    assert diff.n == 3 and diff.mean == 1.0 and (diff.low, diff.high) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("low", "high", "expect_positive", "verdict"),
    [
        (0.5, 1.5, True, HOLDS),
        (-1.5, -0.5, True, CONTRADICTED),
        (-0.5, 1.5, True, INCONCLUSIVE),
        (-1.5, -0.5, False, HOLDS),
        (0.5, 1.5, False, CONTRADICTED),
    ],
)
def test_difference_rule(low: float, high: float, expect_positive: bool, verdict: str) -> None:
    interval = Interval((low + high) / 2, low, high, 5)
    result = difference_verdict(interval, expect_positive, "metric")
    assert result.verdict == verdict
    assert "95% CI of the paired difference" in result.rule


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (-0.004, 0.006, HOLDS),
        (0.02, 0.05, CONTRADICTED),
        (-0.05, -0.02, CONTRADICTED),
        (-0.004, 0.03, INCONCLUSIVE),
    ],
)
def test_equivalence_rule(low: float, high: float, verdict: str) -> None:
    assert equivalence_verdict(Interval(0, low, high, 5), 0.01, "acc").verdict == verdict


def test_combine() -> None:
    assert combine_verdicts([HOLDS, HOLDS]) == HOLDS
    assert combine_verdicts([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine_verdicts([HOLDS, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED
    assert combine_verdicts([]) == INCONCLUSIVE


def _run(seed: int, params: dict[str, str], **history: list[float]) -> RunRecord:
    return RunRecord(
        f"r{seed}{sorted(params.items())}",
        {k: str(v) for k, v in params.items()},
        seed,
        "FINISHED",
        {k.replace("_", "/"): v for k, v in history.items()},
    )


def test_epochs_to_target_is_censored_when_never_reached() -> None:
    record = _run(0, {}, val_acc=[0.5, 0.8, 0.91, 0.95])
    assert epochs_to_target(record, 0.9) == 3.0
    assert epochs_to_target(record, 0.99) == 5.0


def test_late_oscillation() -> None:
    smooth = _run(0, {}, val_loss=[1.0, 0.5, 0.4, 0.39, 0.38, 0.37])
    bouncy = _run(0, {}, val_loss=[1.0, 0.5, 0.7, 0.3, 0.8, 0.2])
    assert late_oscillation(smooth) == pytest.approx(0.01)
    assert late_oscillation(bouncy) == pytest.approx(np.mean([0.5, 0.6]))


def _mse_vs_ce_runs(ce_epochs: list[int], mse_epochs: list[int], init: str) -> list[RunRecord]:
    runs = []
    for loss, reach in (("bce", ce_epochs), ("mse", mse_epochs)):
        for seed, epoch in enumerate(reach):
            acc = [0.5] * (epoch - 1) + [0.95] * (10 - epoch + 1)
            params = {
                "data.name": "reference",
                "loss.name": loss,
                "optimizer.name": "sgd",
                "model.output_init": init,
                "trainer.target_val_acc": "0.9",
            }
            runs.append(_run(seed, params, val_acc=acc))
    return runs


def test_mse_vs_ce_rule_reaches_each_verdict() -> None:
    spec = get_study("mse_vs_ce")

    def c12(ce: list[int], mse: list[int]) -> str:
        runs = _mse_vs_ce_runs(ce, mse, "standard") + _mse_vs_ce_runs(ce, mse, "saturated")
        checks = spec.evaluate(group_variants(runs, spec.group_by), StudyOptions())
        return checks[0].verdict

    assert c12([2, 2, 3, 2, 3], [5, 6, 6, 5, 7]) == HOLDS  # mse needs ~3 more epochs
    assert c12([5, 6, 6, 5, 7], [2, 2, 3, 2, 3]) == CONTRADICTED
    assert c12([3, 4, 3, 4, 3], [4, 3, 3, 4, 3]) == INCONCLUSIVE


def test_c8_rule_and_failed_runs_are_not_averaged() -> None:
    spec = get_study("binary_vs_categorical")
    runs = []
    for loss, accs in (("bce", [0.95, 0.951, 0.949]), ("cce", [0.951, 0.950, 0.949])):
        for seed, acc in enumerate(accs):
            runs.append(_run(seed, {"data.name": "reference", "loss.name": loss}, val_acc=[acc]))
    failed = RunRecord(
        "x", {"data.name": "reference", "loss.name": "cce"}, 3, "FAILED", error="RuntimeError: boom"
    )
    variants = group_variants([*runs, failed], spec.group_by)
    cce = next(v for v in variants if v.param("loss.name") == "cce")
    assert len(cce.runs) == 4 and len(cce.finished) == 3 and cce.failed == [failed]
    check = spec.evaluate(variants, StudyOptions())[0]
    part = next(p for p in check.parts if "sigmoid+bce vs 2-unit softmax+cce" in p.context)
    assert part.verdict.verdict == HOLDS  # mean diff 0, CI within ±0.01


def test_unknown_study_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"study='nope' is not one of \['annealing'"):
        get_study("nope")


def test_lr_sweep_divergence_is_judged_against_the_untrained_loss() -> None:
    spec = get_study("lr_sweep")

    def runs_for(rate: str, finals: list[float], initial: float = 0.7) -> list[RunRecord]:
        out = []
        for seed, final in enumerate(finals):
            record = _run(seed, {"optimizer.learning_rate": rate}, val_loss=[0.6, final])
            out.append(
                RunRecord(
                    record.run_id,
                    record.params,
                    seed,
                    "FINISHED",
                    record.history,
                    {"val/initial_loss": initial},
                )
            )
        return out

    def too_large_part(finals: list[float]) -> str:
        runs = (
            runs_for("0.001", [0.5, 0.52, 0.51])
            + runs_for("0.1", [0.2, 0.21, 0.22])
            + runs_for("1.0", [0.3, 0.35, 0.32])
            + runs_for("10.0", finals)
        )
        checks = spec.evaluate(group_variants(runs, spec.group_by), StudyOptions())
        part = next(p for p in checks[0].parts if "diverges" in p.context)
        return part.verdict.verdict

    assert too_large_part([0.9, 0.71, 5.0]) == HOLDS  # all no better than the untrained 0.7
    assert too_large_part([0.3, 0.4, 0.5]) == CONTRADICTED
    assert too_large_part([0.9, 0.3, 0.4]) == INCONCLUSIVE  # 1 of 3
