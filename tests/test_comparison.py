"""Aggregation and verdict rules on constructed run histories with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xent_tf.claims.comparison import (
    SIGN_FLIP_SAMPLES,
    Finding,
    Interval,
    RunOutcome,
    TimeToTarget,
    Verdict,
    band,
    clopper_pearson,
    close_to,
    combine_findings,
    combine_verdicts,
    difference_verdict,
    equivalence_verdict,
    family_adjusted,
    first_to_target,
    holm_rejections,
    kaplan_meier_median,
    mean_interval,
    one_match,
    one_sided_p,
    paired_difference,
    probe_oscillation,
    run_outcome,
    share_rule,
    sign_flip_p,
    sign_test,
    step_swing,
    time_to_target,
)
from xent_tf.claims.studies import StudyOptions, get_study, group_variants
from xent_tf.track.run_record import RunRecord

HOLDS, CONTRADICTED, INCONCLUSIVE = Verdict.HOLDS, Verdict.CONTRADICTED, Verdict.INCONCLUSIVE


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
    assert verdict.verdict == INCONCLUSIVE
    assert "needs at least 3 paired seeds, has 1" in verdict.measured
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
    # built from its bounds alone (no values): the t-test the bounds imply
    interval = Interval((low + high) / 2, low, high, 5)
    result = difference_verdict(interval, expect_positive, "metric")
    assert result.verdict == verdict
    assert "exact one-sided sign-flip (permutation) test at 0.025" in result.rule
    assert "t-test from the interval's bounds" in result.measured


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
    interval = Interval((low + high) / 2, low, high, 5)
    assert equivalence_verdict(interval, 0.01, "acc").verdict == verdict


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


def test_band_and_threshold_rules_reach_all_three_verdicts() -> None:
    assert band(0.005, 0.01, 0.05, "drop").verdict == HOLDS
    assert band(0.03, 0.01, 0.05, "drop").verdict == INCONCLUSIVE
    assert band(0.2, 0.01, 0.05, "drop").verdict == CONTRADICTED
    assert band(math.nan, 0.01, 0.05, "drop").verdict == INCONCLUSIVE
    assert "holds if <= 0.01, contradicted if >= 0.05" in band(0, 0.01, 0.05, "x").rule
    with pytest.raises(ValueError, match=r"holds_at_most < contradicted_from; got 0\.5 and 0\.1"):
        band(0.0, 0.5, 0.1, "x")
    assert close_to(0.3567, 0.36, 0.005, "x").verdict == HOLDS
    assert close_to(0.6931, 0.0, 0.005, "x").verdict == CONTRADICTED
    assert one_match(["a"], ["a", "b"]).verdict == HOLDS
    assert one_match([], ["a", "b"]).verdict == CONTRADICTED
    assert one_match(["a", "b"], ["a", "b"]).verdict == INCONCLUSIVE


def test_a_part_not_measured_caps_the_claim_at_inconclusive() -> None:
    assert combine_verdicts([HOLDS, Verdict.NOT_MEASURED]) == INCONCLUSIVE
    assert combine_verdicts([Verdict.NOT_MEASURED]) == INCONCLUSIVE
    # The parts that were measured can still contradict it.
    assert combine_verdicts([CONTRADICTED, Verdict.NOT_MEASURED]) == CONTRADICTED


def test_time_to_target_is_censored_when_never_reached() -> None:
    record = _run(0, {}, val_acc=[0.5, 0.8, 0.91, 0.95])
    assert time_to_target(record, 0.9) == TimeToTarget(3, True)
    assert time_to_target(record, 0.99) == TimeToTarget(4, False)


def test_kaplan_meier_median_and_who_reached_first() -> None:
    reached = [TimeToTarget(e, True) for e in (2, 3, 5)]
    censored = [TimeToTarget(20, False)] * 2
    # S: 4/5 after epoch 2, 3/5 after 3, 2/5 after 5 -> the median is 5
    assert kaplan_meier_median(reached + censored) == 5.0
    assert math.isnan(kaplan_meier_median([TimeToTarget(3, True), *censored]))
    assert first_to_target(TimeToTarget(3, True), TimeToTarget(20, False)) == 1
    assert first_to_target(TimeToTarget(20, False), TimeToTarget(3, True)) == -1
    assert first_to_target(TimeToTarget(20, False), TimeToTarget(20, False)) == 0
    assert first_to_target(TimeToTarget(4, True), TimeToTarget(4, True)) == 0
    # a run censored at epoch 3 might still have reached it before epoch 5: unknown
    assert first_to_target(TimeToTarget(5, True), TimeToTarget(3, False)) == 0


def test_sign_test_reaches_each_verdict() -> None:
    assert sign_test(10, 0, "x").verdict == HOLDS  # p = 0.002
    assert sign_test(0, 10, "x").verdict == CONTRADICTED
    assert sign_test(5, 0, "x").verdict == INCONCLUSIVE  # p = 0.0625: five seeds cannot show it
    assert "p = 0.00195" in sign_test(10, 0, "x").measured
    assert sign_test(0, 0, "x").measured == "no untied pair"


def test_step_swing_measures_the_swing_around_the_trend() -> None:
    steps = np.arange(400)
    trend = 1.0 / (1 + steps / 50)
    assert step_swing(trend) == pytest.approx(0.0, abs=2e-4)  # a smooth curve barely swings
    zigzag = trend + 0.1 * (-1.0) ** steps
    assert step_swing(zigzag) == pytest.approx(0.1, rel=0.05)
    assert math.isnan(step_swing([*trend[:-1], math.nan]))
    assert math.isnan(step_swing(trend[:40]))  # too few late steps


def _mse_vs_ce_runs(ce_epochs: list[int], mse_epochs: list[int], init: str) -> list[RunRecord]:
    """Runs whose val accuracy jumps from 0.5 to 0.95 at the given epoch (> 10: never): an
    epoch later is 0.045 less area under the 10-epoch curve."""
    runs = []
    for loss, reach in (("bce", ce_epochs), ("mse", mse_epochs)):
        for seed, epoch in enumerate(reach):
            acc = [0.5 if e < epoch else 0.95 for e in range(1, 11)]
            params = {
                "data.name": "reference",
                "loss.name": loss,
                "optimizer.name": "sgd",
                "model.output_init": init,
                "trainer.target_val_acc": "0.9",
                "data.majority_share": "0.5",  # the fixed target: 0.5 + 0.5 x (1 - 0.5) = 0.75
            }
            runs.append(_run(seed, params, val_acc=acc))
    return runs


def _c12(standard: tuple[list[int], list[int]], saturated: tuple[list[int], list[int]]):  # type: ignore[no-untyped-def]
    spec = get_study("mse_vs_ce")
    runs = _mse_vs_ce_runs(*standard, "standard") + _mse_vs_ce_runs(*saturated, "saturated")
    return spec.evaluate(group_variants(runs, spec.group_by), StudyOptions())


def test_mse_vs_ce_rule_reaches_each_verdict_on_censored_times() -> None:
    fast, slow, never = [2] * 10, [6] * 10, [99] * 10

    def c12(ce: list[int], mse: list[int]) -> str:
        return _c12((ce, mse), (ce, mse))[0].verdict

    assert c12(fast, slow) == HOLDS  # area difference 0.18 on every seed
    assert c12(fast, never) == HOLDS  # MSE never learned: 0.405 less area
    assert c12(slow, fast) == CONTRADICTED
    assert c12(fast[:5] + slow[:5], slow[:5] + fast[:5]) == INCONCLUSIVE  # +-0.18, mean 0
    assert c12(never, never) == INCONCLUSIVE  # all ties: nothing is known
    part = _c12((fast, never), (fast, never))[0].parts[0]
    # The times to the fixed target are reported beside the judged area.
    assert "difference 0.4050" in part.verdict.measured
    assert (
        "target 0.75 (share 0.5): ce 10/10 (KM median 2), mse 0/10 (KM median not reached); "
        "ce first in 10, mse first in 0, 0 ties"
    ) in part.verdict.measured


def test_c12b_saturation_rule_reaches_each_verdict() -> None:
    fast, slow, slower = [2] * 10, [4] * 10, [8] * 10
    assert _c12((fast, slow), (fast, slower))[1].verdict == HOLDS  # gap 2 -> 6
    assert _c12((fast, slower), (fast, slow))[1].verdict == CONTRADICTED  # gap 6 -> 2
    assert _c12((fast, slow), (fast, slow))[1].verdict == INCONCLUSIVE  # same gap: all ties


def test_adam_is_a_named_context_that_is_not_counted() -> None:
    spec = get_study("mse_vs_ce")
    sgd = [
        *_mse_vs_ce_runs([2] * 10, [6] * 10, "standard"),
        *_mse_vs_ce_runs([2] * 10, [9] * 10, "saturated"),
    ]
    adam = [
        RunRecord(
            r.run_id + "a", {**r.params, "optimizer.name": "adam"}, r.seed, r.status, r.history
        )
        for r in _mse_vs_ce_runs([6] * 10, [2] * 10, "standard")
    ]
    check = spec.evaluate(group_variants(sgd + adam, spec.group_by), StudyOptions())[0]
    verdicts = {p.context: p.verdict.verdict for p in check.parts}
    adam_context = "reference data, adam, standard init (adam: a separate context, not counted)"
    assert verdicts[adam_context] == CONTRADICTED
    assert verdicts["reference data, sgd, standard init"] == HOLDS
    assert check.verdict == HOLDS


def test_c8_rule_and_failed_runs_are_not_averaged() -> None:
    spec = get_study("binary_vs_categorical")
    runs = []
    bce = [0.95, 0.951, 0.949, 0.95, 0.952, 0.948]
    cce = [0.951, 0.950, 0.949, 0.951, 0.95, 0.949]
    for loss, accs in (("bce", bce), ("cce", cce)):
        for seed, acc in enumerate(accs):
            runs.append(_run(seed, {"data.name": "reference", "loss.name": loss}, val_acc=[acc]))
    failed = RunRecord(
        "x", {"data.name": "reference", "loss.name": "cce"}, 6, "FAILED", error="RuntimeError: boom"
    )
    variants = group_variants([*runs, failed], spec.group_by)
    cce_variant = next(v for v in variants if v.param("loss.name") == "cce")
    assert len(cce_variant.runs) == 7 and len(cce_variant.finished) == 6
    assert cce_variant.failed == [failed]
    check = spec.evaluate(variants, StudyOptions())[0]
    part = next(p for p in check.parts if "sigmoid+bce vs 2-unit softmax+cce" in p.context)
    # every difference within ±0.002 of 0, inside ±0.01 on all 6 seeds: P = 1/64 each side
    assert part.verdict.verdict == HOLDS
    assert part.verdict.p_holds == pytest.approx(1 / 64)


def test_unknown_study_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"study='nope' is not one of \['annealing'"):
        get_study("nope")


def test_share_rule_is_an_exact_binomial_test_beyond_the_stated_shares() -> None:
    # holds: share >= 80% and P(X >= k | n, 1/2) <= 0.025 (the Clopper-Pearson 95% interval
    # lies above one half); 5 of 5 has P = 1/32: five outcomes cannot show it.
    assert share_rule(6, 6, "x").verdict == HOLDS  # 1/64
    assert share_rule(5, 5, "x").verdict == INCONCLUSIVE  # 1/32
    assert share_rule(0, 6, "x").verdict == CONTRADICTED
    assert share_rule(9, 10, "x").verdict == HOLDS  # P(X >= 9) = 11/1024 = 0.0107
    assert share_rule(8, 10, "x").verdict == INCONCLUSIVE  # 56/1024 = 0.055
    assert share_rule(2, 10, "x").verdict == INCONCLUSIVE  # <= 20% but P(X <= 2) = 0.055
    assert share_rule(1, 10, "x").verdict == CONTRADICTED
    # 15 of 20 is significant (P = 0.021) but below the stated 80%: not a hold
    assert share_rule(15, 20, "x").verdict == INCONCLUSIVE
    assert share_rule(16, 20, "x").verdict == HOLDS
    assert share_rule(2, 2, "x").verdict == INCONCLUSIVE  # below min_seeds
    finding = share_rule(9, 10, "x")
    assert finding.p_holds == pytest.approx(11 / 1024)
    # Clopper-Pearson 95% for 9 of 10: (0.5550, 0.9975) (scipy's exact binomtest interval)
    low, high = stats.binomtest(9, 10).proportion_ci(0.95, "exact")
    assert clopper_pearson(9, 10, 0.95) == pytest.approx((low, high))
    assert "exact CI 0.55-1.00" in finding.measured


# --- statistics with a stated error rate (protocol 2) ---------------------------------------


def test_one_sided_p_is_the_exact_sign_flip_test_scipy_computes() -> None:
    values = [0.3, -0.1, 0.25, 0.05, 0.2, -0.02, 0.4]
    interval = mean_interval(values)
    for threshold, greater in ((0.0, True), (0.3, False), (0.05, True)):
        alternative = "greater" if greater else "less"
        shifted = np.asarray(values) - threshold
        expected = stats.permutation_test(
            (shifted,),
            np.mean,
            permutation_type="samples",
            alternative=alternative,
            n_resamples=np.inf,
        ).pvalue
        assert one_sided_p(interval, threshold, greater) == pytest.approx(expected, rel=1e-12)
    # The observed sum is 1.08 of at most 1.32: the patterns that reach it flip a set of |v|
    # summing to <= 0.12: none, {0.02}, {0.05}, {0.1}, {0.02, 0.05}, {0.02, 0.1} (counted by
    # hand): 6 of 128.
    assert sign_flip_p(values, 0.0, greater=True) == pytest.approx(6 / 128)
    # Built from its bounds alone (no values): the t-test the bounds imply
    bare = Interval(interval.mean, interval.low, interval.high, interval.n)
    t_p = stats.ttest_1samp(values, 0.0, alternative="greater").pvalue
    assert one_sided_p(bare, 0.0, greater=True) == pytest.approx(t_p, rel=1e-9)


def test_sign_flip_above_sixteen_values_samples_a_fixed_set_of_patterns() -> None:
    rng = np.random.default_rng(4)
    values = list(rng.normal(0.3, 1.0, 18))
    # exact over all 2^18 patterns, computed here independently
    signs = 1 - 2 * ((np.arange(1 << 18)[:, None] >> np.arange(18)) & 1)
    sizes = np.abs(values)
    exact = float(np.mean(signs @ sizes >= np.sum(values) - 1e-12))
    sampled = sign_flip_p(values, 0.0, greater=True)
    # 65,536 samples: the binomial SD of the estimate is <= 0.002
    assert sampled == pytest.approx(exact, abs=0.008)
    assert sampled == sign_flip_p(values, 0.0, greater=True)  # the same every time
    assert sampled >= 1 / (1 + SIGN_FLIP_SAMPLES)


def test_sign_flip_keeps_its_level_where_the_t_test_does_not() -> None:
    """Four seeds whose pair includes a stalled run (|d| = 0.3) and six whose does not
    (|d| = 0.01), as relabelled real runs give: with random signs (the null) the t-test
    rejects whenever the four agree, 2.5 times its 2.5%; the sign-flip test stays within its
    level (every one of the 1024 sign patterns enumerated)."""
    sizes = np.array([0.3] * 4 + [0.01] * 6)
    signs = 1 - 2 * ((np.arange(1 << 10)[:, None] >> np.arange(10)) & 1)
    t_rejects = flip_rejects = 0
    for pattern in signs:
        values = pattern * sizes
        t_rejects += stats.ttest_1samp(values, 0.0, alternative="greater").pvalue <= 0.025
        flip_rejects += sign_flip_p(values, 0.0, greater=True) <= 0.025
    assert t_rejects == 63  # 6.2% of the patterns
    assert flip_rejects == 22  # 2.1%: the 22 patterns whose p (own rank) is <= 25/1024


def test_a_zero_variance_difference_needs_the_sign_test_not_a_zero_width_interval() -> None:
    two = paired_difference({0: 0.9, 1: 0.9}, {0: 0.8, 1: 0.8})
    assert (two.low, two.high) == pytest.approx((0.1, 0.1))  # zero width: it used to hold
    assert difference_verdict(two, True, "x").verdict == INCONCLUSIVE  # 2 < min_seeds
    five = mean_interval([0.1] * 5)
    # every seed on the claim's side: the exact sign test's P = 1/32 > 0.025
    finding = difference_verdict(five, True, "x")
    assert finding.verdict == INCONCLUSIVE and finding.p_holds == pytest.approx(1 / 32)
    assert "exact sign-flip test" in finding.measured
    six = difference_verdict(mean_interval([0.1] * 6), True, "x")
    assert six.verdict == HOLDS and six.p_holds == pytest.approx(1 / 64)
    assert difference_verdict(mean_interval([0.1] * 6), False, "x").verdict == CONTRADICTED
    # float rounding is not seed-to-seed variation
    rounded = mean_interval([0.1 + 1e-17 * i for i in range(6)] + [0.1 + 2e-16])
    assert difference_verdict(rounded, True, "x").p_holds == pytest.approx(1 / 128)
    assert difference_verdict(mean_interval([0.0] * 6), True, "x").verdict == INCONCLUSIVE


def test_equivalence_on_zero_variance_uses_sign_tests_both_sides() -> None:
    assert equivalence_verdict(mean_interval([-0.005] * 6), 0.01, "acc").verdict == HOLDS
    assert equivalence_verdict(mean_interval([-0.005] * 5), 0.01, "acc").verdict == INCONCLUSIVE
    assert equivalence_verdict(mean_interval([0.05] * 7), 0.01, "acc").verdict == CONTRADICTED


def test_holm_steps_down_and_stops_at_the_first_failure() -> None:
    # m = 4 at level 0.05: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    assert holm_rejections([0.01, 0.04, 0.016, 0.03], 0.05) == [True, False, True, False]
    assert holm_rejections([0.02, 0.001], 0.05) == [True, True]  # 0.001 <= 0.025, 0.02 <= 0.05
    assert holm_rejections([0.03, 0.001], 0.05) == [True, True]
    assert holm_rejections([0.03, 0.03], 0.05) == [False, False]  # 0.03 > 0.025 stops it
    # nan = not a test: neither rejected nor counted in m
    assert holm_rejections([0.02, math.nan], 0.05) == [True, False]
    assert holm_rejections([], 0.05) == []


def _stat(p_for: float, p_against: float) -> Finding:
    verdict = HOLDS if p_for <= 0.025 else CONTRADICTED if p_against <= 0.025 else INCONCLUSIVE
    return Finding(verdict, "r", "m", p_for, p_against)


def test_contradicted_only_after_holm_over_every_statistical_part() -> None:
    # one part at p = 0.02 against the claim: contradicted alone (<= 0.025) ...
    assert combine_findings([_stat(0.5, 0.02)]) == CONTRADICTED
    # ... but not among three statistical parts (Holm's first threshold 0.025 / 3)
    family = [_stat(0.5, 0.02), _stat(0.3, 0.6), _stat(0.4, 0.7)]
    assert combine_findings(family) == INCONCLUSIVE
    adjusted = family_adjusted(family)
    assert adjusted[0].verdict == INCONCLUSIVE
    assert adjusted[0].before_correction == CONTRADICTED and adjusted[0].own_verdict == CONTRADICTED
    assert (
        "not after Holm's correction over the claim's 3 statistical parts" in adjusted[0].measured
    )
    # idempotent: adjusting again in a larger family starts from the part's own verdict
    again = family_adjusted([*adjusted, _stat(0.5, 0.9)])
    assert again[0].measured.count("(Holm:") == 1 and "4 statistical parts" in again[0].measured
    assert family_adjusted(adjusted[:1])[0].verdict == CONTRADICTED
    # a strong one survives: 0.001 <= 0.025 / 3
    assert combine_findings([_stat(0.5, 0.001), _stat(0.3, 0.6), _stat(0.4, 0.7)]) == CONTRADICTED
    # exact parts are not in the family and are never corrected
    exact = Finding(CONTRADICTED, "exact", "m")
    assert combine_findings([exact, _stat(0.01, 0.99)]) == CONTRADICTED
    assert family_adjusted([exact, _stat(0.5, 0.02), _stat(0.5, 0.5)])[0] == exact


def test_holds_needs_every_part_at_its_own_level() -> None:
    # intersection-union: no correction, every part must hold at alpha / 2
    assert combine_findings([_stat(0.02, 0.9), _stat(0.024, 0.9), _stat(0.001, 0.99)]) == HOLDS
    assert combine_findings([_stat(0.02, 0.9), _stat(0.03, 0.9)]) == INCONCLUSIVE
    assert combine_findings([_stat(0.02, 0.9), Finding(Verdict.NOT_MEASURED, "r", "m")]) == (
        INCONCLUSIVE
    )


def test_not_applicable_is_never_counted() -> None:
    na = Verdict.NOT_APPLICABLE
    assert combine_verdicts([HOLDS, na]) == HOLDS
    assert combine_verdicts([CONTRADICTED, na]) == CONTRADICTED
    assert combine_verdicts([na, na]) == na
    assert combine_verdicts([na, Verdict.NOT_MEASURED]) == INCONCLUSIVE
    # a not-applicable part's p-values do not enter Holm's family
    shown = Finding(na, "identical by construction", "m", 0.5, 0.0001)
    assert combine_findings([shown, _stat(0.5, 0.02)]) == CONTRADICTED


def test_probe_oscillation_is_zero_for_monotone_or_frozen_curves_and_the_relative_bounce() -> None:
    falling = list(np.linspace(1.0, 0.2, 200))
    assert probe_oscillation(falling) == 0.0  # falls fast or slow: no oscillation
    assert probe_oscillation([0.5] * 200) == 0.0  # frozen weights: the same rows, one loss
    # A bounce of +-0.05 around 0.5 on every step: about 0.05 / 0.5 (exactly: 99 moves of 0.1
    # less the net change 0.1 between the late half's first and last step, over 2 x 99 x 0.5).
    bounce = [0.5 + (0.05 if i % 2 else -0.05) for i in range(200)]
    assert probe_oscillation(bounce) == pytest.approx((99 * 0.1 - 0.1) / 99, rel=1e-9)
    # Only the late half counts: an early bounce followed by a smooth fall scores 0.
    assert probe_oscillation(bounce[:100] + list(np.linspace(0.5, 0.3, 100))) == 0.0
    assert math.isnan(probe_oscillation([0.5, math.inf, 0.4, 0.3]))
    assert math.isnan(probe_oscillation([0.5, 0.4]))


def test_run_outcome_calls_a_stuck_run_diverged_or_collapsed_never_smooth() -> None:
    params = {"data.prior_loss": "0.693147", "data.majority_share": "0.5000"}

    def run(
        train_loss: float,
        val_acc: float,
        error: str | None = None,
        diverged_epoch: int | None = None,
    ) -> RunRecord:
        return RunRecord(
            "r",
            params,
            0,
            "FAILED" if error else "FINISHED",
            history={"train/loss": [train_loss], "val/acc": [val_acc]},
            error=error,
            diverged_epoch=diverged_epoch,
        )

    assert run_outcome(run(0.3, 0.9), 0.01) == RunOutcome.LEARNED
    # A constant prediction cannot beat the prior's loss (Gibbs): ln 2 on balanced labels.
    assert run_outcome(run(0.6932, 0.5), 0.01) == RunOutcome.DIVERGED
    assert run_outcome(run(5.0, 0.49), 0.01) == RunOutcome.DIVERGED  # exploded, finite
    # Still above the prior's loss (a slow rate from a poor start), but it classifies: learning.
    assert run_outcome(run(0.75, 0.62), 0.01) == RunOutcome.LEARNED
    assert run_outcome(run(math.nan, 0.5), 0.01) == RunOutcome.DIVERGED
    nan_error = "NonFiniteLossError: training loss became NaN/inf"
    assert run_outcome(run(0.3, 0.9, nan_error, diverged_epoch=1), 0.01) == RunOutcome.DIVERGED
    # Below the prior's loss but the accuracy never left the majority share.
    assert run_outcome(run(0.68, 0.505), 0.01) == RunOutcome.COLLAPSED
    assert run_outcome(run(0.68, 0.505), 0.01).failed
    assert not RunOutcome.LEARNED.failed
