"""C13, C14 and C15's rules on constructed runs: each reaches holds, contradicted and
inconclusive, and a failed run is never smooth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from xent_tf.claims.comparison import Verdict
from xent_tf.claims.studies import (
    STUDIES,
    ClaimCheck,
    StudyOptions,
    _oscillation_or_inf,
    grid_best_loss,
    group_variants,
    loss_at_rate,
    rank_correlation,
)
from xent_tf.metrics import PROBE_LOSS_METRIC
from xent_tf.track.run_record import RunRecord, RunStatus, no_suggestion_tags

HOLDS, CONTRADICTED, INCONCLUSIVE = Verdict.HOLDS, Verdict.CONTRADICTED, Verdict.INCONCLUSIVE
NAN_ERROR = "NonFiniteLossError: training loss became NaN/inf at epoch 1"
NO_RATE_ERROR = (
    "NoSuggestionError: lr_find: no suggestion: the smoothed loss never fell below the first "
    "batch's loss 0.7"
)
RATES = ("0.001", "0.01", "0.1", "1.0", "10.0")
# 8 pick the roles, 8 are judged: a sign test over 8 of 8 has p = 0.004, below Holm's
# 0.025 / 6 for C13's six parts.
SEEDS = 16


def _probe(bounce: float, seed: int, steps: int = 200) -> list[float]:
    """A falling probe-loss curve with a late bounce of +-``bounce`` (0: monotone)."""
    trend = np.linspace(0.6, 0.3, steps) - 0.001 * seed
    zigzag = bounce * (1 + 0.02 * seed) * (-1.0) ** np.arange(steps)
    return list(trend + np.where(np.arange(steps) >= steps // 2, zigzag, 0.0))


def _grid_run(
    rate: str,
    seed: int,
    final: float,
    first: float,
    bounce: float,
    diverged: bool = False,
    suggestions: dict[str, float] | None = None,
    curve: Sequence[float] = (),
    stop_reason: str = "(none)",
    val_acc: float = 0.9,
) -> RunRecord:
    """One run of the rate grid: val loss after epoch 1 and at the end (a little seed jitter),
    a training loss below the class-prior loss unless it diverged, the probe curve, and the
    range test's rates and curve."""
    jitter = 0.002 * seed
    params = {
        "optimizer.learning_rate": rate,
        "data.prior_loss": "0.693147",
        "data.majority_share": "0.5000",
        "lr_find.stop_reason": stop_reason,
        "lr_find.use": "given",
        **{f"lr_find.{k}_lr": str(v) for k, v in (suggestions or {}).items()},
    }
    history: dict[str, Sequence[float]] = {
        "val/loss": [first + jitter, final + jitter],
        "train/loss": [first, final],
        "val/acc": [val_acc, val_acc],
        PROBE_LOSS_METRIC: _probe(bounce, seed),
    }
    if curve:
        history["lr_find/loss_smoothed"] = list(curve)
    if diverged:
        return RunRecord(
            f"{rate}-{seed}",
            params,
            seed,
            "FAILED",
            {"val/loss": [math.nan], "train/loss": [math.nan]},
            error=NAN_ERROR,
            diverged_epoch=1,
        )
    return RunRecord(f"{rate}-{seed}", params, seed, "FINISHED", history)


# rate: (final val loss, val loss after epoch 1, late probe bounce, diverged)
TUTORIAL = {
    "0.001": (0.6, 0.68, 0.0, False),
    "0.01": (0.4, 0.6, 0.001, False),
    "0.1": (0.2, 0.4, 0.005, False),
    "1.0": (0.3, 0.3, 0.05, False),
    "10.0": (0.0, 0.0, 0.0, True),
}


def _checks(
    shape: dict[str, tuple[float, float, float, bool]], **run_args: object
) -> dict[str, ClaimCheck]:
    runs = [
        _grid_run(rate, seed, final, first, bounce, diverged, **run_args)  # type: ignore[arg-type]
        for rate, (final, first, bounce, diverged) in shape.items()
        for seed in range(SEEDS)
    ]
    spec = STUDIES["lr_sweep"]
    return {c.claim: c for c in spec.evaluate(group_variants(runs, spec.group_by), StudyOptions())}


def _parts(check: ClaimCheck) -> dict[str, Verdict]:
    return {p.context.split(":")[0].split(" (")[0]: p.verdict.verdict for p in check.parts}


def test_c13_holds_on_the_tutorials_picture() -> None:
    c13 = _checks(TUTORIAL)["C13"]
    assert _parts(c13) == {
        "small rates converge slowly": HOLDS,
        "larger rates drop faster at first": HOLDS,
        "small rates are smooth, large ones oscillate": HOLDS,
        "too large diverges": HOLDS,
        "a large rate": HOLDS,
        "the too-large rates diverge": HOLDS,
    }
    assert c13.verdict == HOLDS
    # The roles were measured on seeds 0-5, not assumed from the list.
    assert "good 0.1" in c13.combine_rule and "too large from 10" in c13.combine_rule


def test_c13_is_contradicted_when_oscillation_falls_with_the_rate() -> None:
    smoother_when_larger = {
        "0.001": (0.6, 0.68, 0.05, False),
        "0.01": (0.4, 0.6, 0.02, False),
        "0.1": (0.2, 0.4, 0.005, False),
        "1.0": (0.3, 0.3, 0.001, False),
        "10.0": (0.35, 0.25, 0.0, False),
    }
    c13 = _checks(smoother_when_larger)["C13"]
    parts = _parts(c13)
    assert parts["small rates are smooth, large ones oscillate"] == CONTRADICTED
    assert parts["a large rate"] == CONTRADICTED
    assert c13.verdict == CONTRADICTED


def test_c13_is_inconclusive_when_no_rate_diverges() -> None:
    never = {**TUTORIAL, "10.0": (0.35, 0.25, 0.1, False)}
    c13 = _checks(never)["C13"]
    parts = _parts(c13)
    assert parts["too large diverges"] == INCONCLUSIVE  # no seed's divergence varies
    assert parts["the too-large rates diverge"] == INCONCLUSIVE
    assert parts["small rates are smooth, large ones oscillate"] == HOLDS
    assert c13.verdict == INCONCLUSIVE


def test_a_run_stuck_at_the_majority_share_is_never_smooth() -> None:
    # A flat probe curve (no oscillation at all), but the accuracy never left 0.5.
    stuck = _grid_run("0.001", 0, 0.68, 0.69, 0.0, val_acc=0.5)
    assert _oscillation_or_inf(stuck, 0.01) == math.inf
    learning = _grid_run("0.001", 0, 0.4, 0.6, 0.0)
    assert _oscillation_or_inf(learning, 0.01) == 0.0
    # Stuck at a loss no better than predicting the class frequencies: diverged.
    prior = _grid_run("0.001", 0, 0.69, 0.6932, 0.0, val_acc=0.5)
    prior = RunRecord(
        prior.run_id, prior.params, 0, "FINISHED", {**prior.history, "train/loss": [0.6932]}
    )
    assert _oscillation_or_inf(prior, 0.01) == math.inf
    # Still above the prior's loss (slow, from a poor start) but classifying: it learns.
    slow = RunRecord(
        prior.run_id, prior.params, 0, "FINISHED", {**learning.history, "train/loss": [0.75]}
    )
    assert _oscillation_or_inf(slow, 0.01) == 0.0


def test_rank_correlation_is_spearmans_with_infinite_values_ranked_last() -> None:
    assert rank_correlation([1, 2, 3, 4], [0.1, 0.2, 0.3, math.inf], 3) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [3.0, 2.0, 1.0], 3) == pytest.approx(-1.0)
    from scipy import stats

    xs, ys = [1, 2, 3, 4, 5], [0.3, 0.1, 0.4, 0.2, 0.5]
    assert rank_correlation(xs, ys, 3) == pytest.approx(stats.spearmanr(xs, ys).statistic)
    assert math.isnan(rank_correlation([1, 2], [1.0, 2.0], 3))  # too few rates
    assert math.isnan(rank_correlation([1, 2, 3], [0.0, 0.0, 0.0], 3))  # constant


def test_the_loss_at_a_rate_is_interpolated_in_log_rate_on_the_grid() -> None:
    grid, losses = [0.01, 0.1, 1.0], [0.4, 0.2, math.inf]
    assert loss_at_rate(0.1, grid, losses) == 0.2
    assert loss_at_rate(math.sqrt(0.001), grid, losses) == pytest.approx(0.3)  # half-way in log
    assert loss_at_rate(1e-5, grid, losses) == 0.4  # below the grid: its smallest rate
    assert loss_at_rate(0.5, grid, losses) == math.inf  # next to a diverged rate
    assert math.isnan(loss_at_rate(math.nan, grid, losses))
    assert math.isnan(loss_at_rate(0.05, grid, [math.nan, 0.2, 0.3]))


FLAT_FALL_EXPLODE = [1.0] * 30 + list(np.linspace(1.0, 0.3, 40)) + list(np.linspace(0.3, 3, 30))
SUGGESTED = {"steepest": 0.2, "valley": 0.05, "minimum": 0.01, "flat": 1e-5, "exploding": 30.0}


def _c14(
    steepest: Sequence[float], stop_reason: str = "smoothed loss above 4x its best"
) -> ClaimCheck:
    """C14 of ``_lr_sweep_checks``."""
    return next(c for c in _lr_sweep_checks(steepest, stop_reason) if c.claim == "C14")


def _lr_sweep_checks(
    steepest: Sequence[float],
    stop_reason: str = "smoothed loss above 4x its best",
    no_rate_seeds: Sequence[int] = (),
    tagged: bool = True,
) -> list[ClaimCheck]:
    """lr_sweep's checks on the tutorial's grid (best rate 0.1) and the three suggestion arms:
    the steepest arm ends at val loss ``steepest[seed % len]``, valley at 0.25, minimum at 0.45
    (plus the seed jitter every run has); each seed's range test puts its flat part at 1e-5
    (below the grid) and its explosion at 30 (above it). On ``no_rate_seeds`` every arm's run
    ends FAILED as the pipeline records a range test without a rate (its curve, no training),
    carrying the no-suggestion tag when ``tagged``."""
    runs = []
    for seed in range(SEEDS):
        arms = {
            "steepest": steepest[seed % len(steepest)],
            "valley": 0.25,
            "minimum": 0.45,
        }
        shape = {rate: (rate, *values) for rate, values in TUTORIAL.items()}
        shape.update({arm: ("0.01", final, 0.5, 0.01, False) for arm, final in arms.items()})
        for arm, (rate, final, first, bounce, diverged) in shape.items():
            record = _grid_run(
                rate,
                seed,
                final,
                first,
                bounce,
                diverged,
                SUGGESTED,
                FLAT_FALL_EXPLODE,
                stop_reason,
            )
            use = arm if arm in arms else "given"
            params = {**record.params, "lr_find.use": use}
            if use != "given" and seed in no_rate_seeds:
                runs.append(
                    RunRecord(
                        record.run_id + use,
                        params,
                        seed,
                        RunStatus.FAILED,
                        {"lr_find/loss_smoothed": FLAT_FALL_EXPLODE},
                        error=NO_RATE_ERROR,
                        tags=no_suggestion_tags() if tagged else {},
                        no_suggestion=tagged,
                    )
                )
                continue
            if use != "given":
                params["lr_find.used_lr"] = str(SUGGESTED[use])
            runs.append(replace(record, run_id=record.run_id + use, params=params))
    spec = STUDIES["lr_sweep"]
    return list(spec.evaluate(group_variants(runs, spec.group_by), StudyOptions()))


def test_the_grids_best_is_interpolated_by_a_parabola_in_log_rate() -> None:
    # Through (ln 0.01, 0.4), (ln 0.1, 0.2), (ln 1, 0.3): vertex value 0.3 - 0.25^2 / (4 x 0.15)
    assert grid_best_loss([0.01, 0.1, 1.0], [0.4, 0.2, 0.3], 1) == pytest.approx(0.1958333)
    assert grid_best_loss([0.01, 0.1, 1.0], [0.4, 0.2, math.inf], 1) == 0.2  # a diverged side
    assert grid_best_loss([0.01, 0.1, 1.0], [0.4, 0.2, 0.3], 0) == 0.4  # at the grid's end


def test_c14_holds_when_training_with_the_steepest_rate_matches_the_grids_best() -> None:
    check = _c14([0.2])
    parts = {p.context.split(" (rate")[0]: p.verdict for p in check.parts}
    assert parts["the curve is flat, then falls fast, then explodes"].verdict == HOLDS
    assert parts["the steepest rate is within seed noise of the grid's best"].verdict == HOLDS
    assert parts["training with the steepest rate beats the flat part's rate"].verdict == HOLDS
    assert parts["training with the steepest rate beats the exploding part's rate"].verdict == (
        HOLDS
    )
    table = parts["regret of each suggestion rule (shown, not counted)"].measured
    # Regret = the arm's loss - 0.195833 (the parabola's minimum) on every seed.
    assert "steepest: median regret 0.004167, mean 0.004167, within noise 16/16" in table
    assert "valley: median regret 0.05417" in table and "minimum: median regret 0.2542" in table
    assert "lowest median regret: steepest" in table
    assert check.verdict == HOLDS


def test_c14_is_contradicted_far_from_the_best_and_inconclusive_half_way() -> None:
    assert _c14([0.6]).verdict == CONTRADICTED  # regret 0.4 on every seed
    half = _c14([0.2, 0.6])  # within noise on 8 of 16 seeds
    [within] = [p for p in half.parts if "within seed noise" in p.context]
    assert within.verdict.verdict == INCONCLUSIVE
    assert half.verdict == INCONCLUSIVE


def test_runs_without_a_suggested_rate_are_judged_alike_tagged_or_not() -> None:
    # The tag makes a stored sweep usable (``from_studies``); the rules judge the same FAILED
    # records either way: no train loss, so C14 counts such an arm's seed as unbounded regret
    # ("diverged"), and C13 (the grid, which trains every seed) is untouched.
    tagged = _lr_sweep_checks([0.2], no_rate_seeds=(3, 11))
    assert tagged == _lr_sweep_checks([0.2], no_rate_seeds=(3, 11), tagged=False)
    c13, c14 = (next(c for c in tagged if c.claim == claim) for claim in ("C13", "C14"))
    assert c13 == next(c for c in _lr_sweep_checks([0.2]) if c.claim == "C13")
    [table] = [p.verdict.measured for p in c14.parts if "shown, not counted" in p.context]
    assert "steepest: median regret 0.004167, mean 0.004167, within noise 14/16, diverged 2" in (
        table
    )
    [within] = [p.verdict for p in c14.parts if "within seed noise" in p.context]
    assert "14 of 16" in within.measured


def test_c14_explodes_only_when_the_range_tests_stop_rule_fired() -> None:
    check = _c14([0.2], stop_reason="(none)")
    [shape] = [p for p in check.parts if "flat, then falls" in p.context]
    # The curve climbs back above its start, but the stop rule never fired: no explosion.
    assert shape.verdict.verdict == CONTRADICTED
    assert "explosion 0" in shape.verdict.measured


def _annealing(
    cosine: tuple[float, float, float], constant_diverges: int = 0
) -> dict[str, Verdict]:
    """C15 with 10 seeds (a sign test over 10 of 10 has p = 0.001, below Holm's 0.025 / 3): the
    constant rate ends at val loss 0.3 (area 0.45) with a late bounce
    0.05; cosine at (final, area-maker first epoch, bounce)."""
    runs = []
    for seed in range(10):
        for schedule, (final, first, bounce) in (
            ("constant", (0.3, 0.6, 0.05)),
            ("cosine", cosine),
        ):
            diverged = schedule == "constant" and seed < constant_diverges
            record = _grid_run("1.0", seed, final, first, bounce, diverged)
            params = {**record.params, "schedule.name": schedule}
            runs.append(replace(record, run_id=record.run_id + schedule, params=params))
    spec = STUDIES["annealing"]
    [check] = spec.evaluate(group_variants(runs, spec.group_by), StudyOptions())
    parts = {p.context: p.verdict.verdict for p in check.parts}
    return {**parts, "overall": check.verdict}


def test_c15_judges_final_loss_speed_and_late_oscillation() -> None:
    held = _annealing((0.2, 0.4, 0.005))
    assert held == {
        "cosine reaches a lower final val loss than constant": HOLDS,
        "cosine reaches a low loss quickly: a lower area under the val-loss curve than constant": (
            HOLDS
        ),
        "cosine oscillates less late than constant": HOLDS,
        "overall": HOLDS,
    }
    # Lower at the end, but slower to get there and bouncing more late.
    slow = _annealing((0.2, 0.9, 0.2))
    assert (
        slow[
            "cosine reaches a low loss quickly: a lower area under the val-loss curve than constant"
        ]
        == CONTRADICTED
    )
    assert slow["cosine oscillates less late than constant"] == CONTRADICTED
    assert slow["overall"] == CONTRADICTED
    assert _annealing((0.3, 0.6, 0.05))["overall"] == INCONCLUSIVE  # the same curves


def test_c15_counts_a_diverged_constant_run_as_beaten_with_a_sign_test() -> None:
    parts = _annealing((0.2, 0.4, 0.005), constant_diverges=2)
    assert parts["cosine reaches a lower final val loss than constant"] == HOLDS


@pytest.mark.parametrize("first", [True, False])
def test_each_rate_arm_sets_its_rate_and_use_whatever_the_override_order(first: bool) -> None:
    """The sweeper may put a swept override before or after +experiment."""
    from tests.conftest import compose_config
    from xent_tf.claims.registry import rule_floats
    from xent_tf.config import to_config

    def arm(name: str) -> tuple[float, str]:
        overrides = ["+experiment=lr_sweep", f"+rate_arm={name}"]
        config = to_config(compose_config(overrides if first else overrides[::-1]))
        return config.optimizer.learning_rate, config.lr_find.use

    grid = rule_floats("C13", "rate_grid")
    assert [arm(f"grid{i}") for i in range(len(grid))] == [(rate, "given") for rate in grid]
    for rule in ("steepest", "valley", "minimum"):
        assert arm(rule)[1] == rule


@pytest.mark.parametrize(("experiment", "claim"), [("lr_sweep", "C13"), ("annealing", "C15")])
def test_the_studies_record_the_probe_their_claims_state(experiment: str, claim: str) -> None:
    from tests.conftest import compose_config
    from xent_tf.claims.registry import rule_float
    from xent_tf.config import to_config

    trainer = to_config(compose_config([f"+experiment={experiment}"])).trainer
    assert trainer.probe_rows == rule_float(claim, "probe_rows") == 64
    assert trainer.probe_late_fraction == rule_float(claim, "late_fraction") == 0.5


def test_the_probe_starts_in_the_last_share_of_the_epochs() -> None:
    from xent_tf.train.training import probe_start_epoch

    assert probe_start_epoch(20, 0.5) == 11
    assert probe_start_epoch(20, 1.0) == 1
    assert probe_start_epoch(2, 0.5) == 2  # +debug=tiny: the last epoch
    assert probe_start_epoch(5, 0.01) == 5  # never less than one epoch
    with pytest.raises(ValueError, match="probe_late_fraction=0"):
        probe_start_epoch(20, 0.0)
