"""Aggregate runs over seeds and turn measured numbers into verdicts.

Everything here is plain Python/NumPy/SciPy on run records, so the rules can be tested on
constructed histories. A verdict is always the output of one of the rules below applied to
measured numbers, and carries the text of its rule.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

import numpy as np

from xent_tf.claims.protocol import statistic
from xent_tf.metrics import BATCH_LOSS_METRIC, TRAIN_LOSS_METRIC, VAL_ACC_METRIC
from xent_tf.track.run_record import RunRecord


class Verdict(enum.StrEnum):
    """What a rule concluded about a claim (or one part of it)."""

    HOLDS = "holds"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    # The two disjoint seed sets of a stability run gave different verdicts.
    UNSTABLE = "unstable"
    # Nothing was measured (e.g. the reference framework is not installed): caps the claim at
    # inconclusive (a claim never holds on the parts that happened to be measured).
    NOT_MEASURED = "not measured"
    # The contrast is identical by construction (C8's cce vs sparse_cce: same head, same
    # loss): shown, never counted, and not a data set a claim "holds on".
    NOT_APPLICABLE = "not applicable"


# A spread this small relative to the mean is float rounding, not seed-to-seed variation.
ZERO_SPREAD = 1e-9


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval over ``n`` values (nan bounds when n < 2).

    ``values`` are the numbers it was computed from (empty when built from bounds alone): the
    rules judge them with the exact sign-flip test (``one_sided_p``).
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    values: tuple[float, ...] = field(default=(), compare=False, repr=False)

    @property
    def zero_variance(self) -> bool:
        """Every value the same, up to float rounding (a t statistic would be meaningless)."""
        return self.n >= 2 and self.high - self.low <= ZERO_SPREAD * max(1.0, abs(self.mean))

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high)

    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 4) -> str:
        """ "0.9512 ± 0.0031 (n=5)", or the single value when no interval can be given."""
        if self.n == 0:
            return "n/a (no runs)"
        if not self.has_interval:
            return f"{self.mean:.{digits}f} (n={self.n}, no interval)"
        half = (self.high - self.low) / 2
        return f"{self.mean:.{digits}f} ± {half:.{digits}f} (n={self.n})"


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval of ``values``.

    Args:
        values: one number per seed.
        confidence: coverage of the interval.

    Returns:
        The interval; with fewer than two values the bounds are nan (no interval can be given).
    """
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(data.mean())
    if data.size < 2:
        return Interval(mean, math.nan, math.nan, 1, confidence)
    sem = float(data.std(ddof=1) / math.sqrt(data.size))
    kept = tuple(float(v) for v in data)
    if sem == 0.0:
        return Interval(mean, mean, mean, int(data.size), confidence, kept)
    # Imported here: scipy.stats costs ~1 s to import, and a study's report and the
    # ledger import this module, and most of them never need an interval.
    from scipy import stats

    low, high = stats.t.interval(confidence, df=data.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), int(data.size), confidence, kept)


def paired_difference(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95
) -> Interval:
    """Interval of the mean of a[seed] - b[seed] over the seeds both have.

    Pairing by seed removes the part of the seed-to-seed variation both variants share
    (same data order, same initial hidden weights), so it detects smaller differences than
    comparing two independent means.
    """
    seeds = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in seeds], confidence)


@dataclass(frozen=True)
class Finding:
    """A verdict, the rule that produced it, and the numbers it was applied to.

    Attributes:
        verdict: the rule's verdict on this part alone (at ``alpha / 2`` per direction for a
            statistical rule; see ``family_adjusted`` for the claim-wide correction).
        rule: the rule, in words.
        measured: the numbers it was applied to.
        p_holds: one-sided p-value of the test for the claim's side (small: holds); nan for an
            exact rule (no sampling error).
        p_contradicted: one-sided p-value against it (small: contradicted); nan for an exact
            rule. Holm's correction over a claim's parts runs on these.
        before_correction: the part's own verdict when Holm's correction over its claim
            changed it (None: unchanged).
    """

    verdict: Verdict
    rule: str
    measured: str
    p_holds: float = math.nan
    p_contradicted: float = math.nan
    before_correction: Verdict | None = None

    @property
    def statistical(self) -> bool:
        """Judged by a test with sampling error (it has p-values), not computed exactly."""
        return not math.isnan(self.p_contradicted)

    @property
    def own_verdict(self) -> Verdict:
        """The part's verdict on its own, before any family-wise correction."""
        return self.before_correction or self.verdict


def side_level() -> float:
    """The one-sided level every statistical part is judged at: alpha / 2."""
    return statistic("alpha") / 2


def min_seeds() -> int:
    """Fewest paired seeds (or runs of a share) a statistical rule may conclude from."""
    return int(statistic("min_seeds"))


# Up to this many values every sign pattern is enumerated (2^16 sums); above it, a fixed,
# seeded sample of SIGN_FLIP_SAMPLES patterns (p = (1 + at least as extreme) / (1 + samples),
# still a valid p-value).
EXACT_SIGN_FLIP_VALUES = 16
SIGN_FLIP_SAMPLES = 1 << 16


@functools.cache
def _sign_patterns(n: int) -> np.ndarray:
    """Every +-1 pattern of n signs, one per row (2^n rows)."""
    bits = (np.arange(1 << n)[:, None] >> np.arange(n)[None, :]) & 1
    return (1 - 2 * bits).astype(np.float64)


@functools.cache
def _sampled_sign_patterns(n: int) -> np.ndarray:
    """SIGN_FLIP_SAMPLES random +-1 patterns of n signs, from a fixed seed: a verdict never
    depends on the draw."""
    return np.random.default_rng(0).choice((-1.0, 1.0), size=(SIGN_FLIP_SAMPLES, n))


def sign_flip_p(values: Sequence[float], threshold: float, greater: bool) -> float:
    """The exact one-sided p-value of the paired sign-flip (permutation) test.

    Under the null each value - ``threshold`` is as likely to have either sign (what a seed's
    two relabelled arms give); the p-value is the share of the 2^n sign patterns of
    |value - threshold| whose sum is at least (``greater``; at most otherwise) the observed
    sum. It is exact whatever the values' distribution, so relabelled arms cannot raise more
    false alarms than its level (the Student-t test does, when a few seeds differ by much more
    than the others). With n values it cannot go below 1 / 2^n: below 6 values nothing is
    significant at 0.025.

    Args:
        values: one paired difference per seed (finite).
        threshold: the value the mean is compared with.
        greater: True: H1 mean > threshold; False: H1 mean < threshold.

    Returns:
        The p-value in (0, 1]; nan without values.
    """
    deviations = np.asarray(values, dtype=np.float64) - threshold
    if deviations.size == 0:
        return math.nan
    if not greater:
        deviations = -deviations
    observed = float(deviations.sum())
    sizes = np.abs(deviations)
    # Sums that differ from the observed one by float rounding only count as ties.
    slack = 1e-12 * max(1.0, float(sizes.sum()))
    if sizes.size <= EXACT_SIGN_FLIP_VALUES:
        sums = _sign_patterns(int(sizes.size)) @ sizes
        return float(np.mean(sums >= observed - slack))
    extreme = int(np.sum(_sampled_sign_patterns(int(sizes.size)) @ sizes >= observed - slack))
    return (1 + extreme) / (1 + SIGN_FLIP_SAMPLES)


def one_sided_p(interval: Interval, threshold: float, greater: bool) -> float:
    """p-value of "the mean is above (``greater``) or below ``threshold``" against its null.

    The exact sign-flip test of the interval's values (``sign_flip_p``); with identical values
    it equals the exact sign test (1 / 2^n when all lie on one side). An interval built from
    bounds alone (no values) falls back to the t-test its half-width implies.

    Args:
        interval: a mean interval (``mean_interval``/``paired_difference``).
        threshold: the value the mean is compared with.
        greater: True: H1 mean > threshold; False: H1 mean < threshold.

    Returns:
        The p-value; nan when no test can be made (fewer than 2 values).
    """
    if interval.n < 2 or not math.isfinite(interval.mean):
        return math.nan
    if interval.values:
        return sign_flip_p(interval.values, threshold, greater)
    if not interval.has_interval or interval.zero_variance:
        return math.nan
    from scipy import stats  # see mean_interval: scipy.stats is slow to import

    t_crit = float(stats.t.ppf(0.5 + interval.confidence / 2, interval.n - 1))
    sem = (interval.high - interval.low) / 2 / t_crit
    t_value = (interval.mean - threshold) / sem
    return float(stats.t.sf(t_value if greater else -t_value, interval.n - 1))


def _p_text(p_for: float, p_against: float) -> str:
    return f"p(claim's side) = {p_for:.3g}, p(other side) = {p_against:.3g}"


def _test_name(interval: Interval) -> str:
    """Which test ``one_sided_p`` ran on the interval."""
    return "exact sign-flip test" if interval.values else "t-test from the interval's bounds"


def _too_few(n: int) -> str:
    return f" — needs at least {max(2, min_seeds())} paired seeds, has {n}"


def difference_verdict(diff: Interval, expect_positive: bool, what: str) -> Finding:
    """Directional rule: the claim expects ``diff`` (a - b) to be > 0 (or < 0).

    holds: the exact one-sided sign-flip test of the paired differences (``sign_flip_p``) finds
    them on the expected side of 0 at ``side_level``; contradicted: on the other side;
    inconclusive otherwise. The t interval is shown beside it, not judged.
    """
    side = "> 0" if expect_positive else "< 0"
    rule = f"{what}: holds if the paired differences are {side} by the exact one-sided "
    rule += f"sign-flip (permutation) test at {side_level():g}, contradicted if they are on the "
    rule += "other side, else inconclusive (the t interval is shown, not judged; "
    rule += f"needs >= {min_seeds()} seeds, and 6 for p <= {side_level():g})"
    measured = f"difference {diff.format()}"
    if diff.n < max(2, min_seeds()) or not math.isfinite(diff.mean):
        return Finding(Verdict.INCONCLUSIVE, rule, measured + _too_few(diff.n))
    p_above = one_sided_p(diff, 0.0, greater=True)
    p_below = one_sided_p(diff, 0.0, greater=False)
    p_for, p_against = (p_above, p_below) if expect_positive else (p_below, p_above)
    measured += f"; {_p_text(p_for, p_against)} ({_test_name(diff)})"
    return Finding(_two_way(p_for, p_against), rule, measured, p_for, p_against)


def _two_way(p_for: float, p_against: float) -> Verdict:
    """holds / contradicted at ``side_level`` each way, else inconclusive."""
    if p_for <= side_level():
        return Verdict.HOLDS
    if p_against <= side_level():
        return Verdict.CONTRADICTED
    return Verdict.INCONCLUSIVE


def equivalence_verdict(diff: Interval, margin: float, what: str) -> Finding:
    """Equivalence rule: the claim says a and b are the same within ``margin``.

    holds: the paired differences lie inside [-margin, +margin] (two one-sided exact sign-flip
    tests, ``sign_flip_p``, at ``side_level``); contradicted: outside it (a real difference
    larger than the margin, either side at ``side_level / 2``); inconclusive otherwise.
    """
    level = side_level()
    rule = (
        f"{what}: holds if the paired differences lie within ±{margin:g} (two one-sided exact "
        f"sign-flip tests at {level:g}), contradicted if they lie outside (the nearer side's "
        f"one-sided test at {level / 2:g}: either side may reject), else inconclusive (the t "
        f"interval is shown, not judged; needs >= {min_seeds()} seeds)"
    )
    measured = f"difference {diff.format()}"
    if diff.n < max(2, min_seeds()) or not math.isfinite(diff.mean):
        return Finding(Verdict.INCONCLUSIVE, rule, measured + _too_few(diff.n))
    # Equivalence: both "above -margin" and "below +margin" must be shown (TOST).
    p_for = max(one_sided_p(diff, -margin, greater=True), one_sided_p(diff, margin, greater=False))
    # A real difference: either side outside the margin; Bonferroni over the two sides.
    p_against = min(
        1.0,
        2 * min(one_sided_p(diff, margin, greater=True), one_sided_p(diff, -margin, greater=False)),
    )
    measured += f"; {_p_text(p_for, p_against)} ({_test_name(diff)})"
    return Finding(_two_way(p_for, p_against), rule, measured, p_for, p_against)


PARTS_RULE = (
    "all parts hold -> holds; any contradicted (after Holm's correction over the statistical "
    "parts) -> contradicted; else inconclusive (a part not measured caps the claim at "
    "inconclusive; a part not applicable is not counted)"
)


def combine_verdicts(verdicts: Sequence[Verdict]) -> Verdict:
    """All parts hold -> holds; any part contradicted -> contradicted; else inconclusive.

    A part that was not measured is not a pass: it caps the claim at inconclusive, so a claim
    never holds on the parts that happened to be measured (it can still be contradicted by
    the parts that were). A part that is not applicable is left out; when every part is, the
    claim is not applicable. The verdicts of statistical parts must already be corrected for
    the family (``family_adjusted``); ``combine_findings`` does both.
    """
    counted = [v for v in verdicts if v != Verdict.NOT_APPLICABLE]
    if verdicts and not counted:
        return Verdict.NOT_APPLICABLE
    if any(v == Verdict.CONTRADICTED for v in counted):
        return Verdict.CONTRADICTED
    if counted and all(v == Verdict.HOLDS for v in counted):
        return Verdict.HOLDS
    return Verdict.INCONCLUSIVE


def holm_rejections(p_values: Sequence[float], level: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise ``level``.

    Sorted ascending, p_(j) is rejected while p_(j) <= level / (m - j + 1) for it and every
    smaller one; the first that fails stops it. It controls the chance of any false rejection
    at ``level`` whatever the dependence between the tests.

    Args:
        p_values: one per hypothesis (nan: not a test, never rejected and not counted in m).
        level: the family-wise error rate.

    Returns:
        One flag per p-value, in the given order.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    tested.sort()
    rejected = [False] * len(p_values)
    m = len(tested)
    for j, (p, index) in enumerate(tested):
        if p > level / (m - j):
            break
        rejected[index] = True
    return rejected


def family_adjusted(findings: Sequence[Finding]) -> list[Finding]:
    """The findings of one claim (all its parts, on every data set) after Holm's correction.

    A statistical part stays contradicted only if Holm's procedure over the p-values against
    the claim of every statistical part rejects it at ``side_level``: the chance of calling a
    true claim contradicted is then at most alpha / 2 however many parts it has. A part the
    correction demotes becomes inconclusive and says so. Holds needs no correction (every
    part must hold: an intersection-union test). Exact parts are left as they are.
    Idempotent: a finding keeps its own verdict in ``before_correction``.
    """
    own = [f.own_verdict for f in findings]
    p_against = [
        f.p_contradicted if f.statistical and v != Verdict.NOT_APPLICABLE else math.nan
        for f, v in zip(findings, own, strict=True)
    ]
    m = sum(not math.isnan(p) for p in p_against)
    rejected = holm_rejections(p_against, side_level())
    out = []
    for finding, verdict, reject in zip(findings, own, rejected, strict=True):
        demote = finding.statistical and verdict == Verdict.CONTRADICTED and not reject
        if finding.before_correction is None and not demote:
            out.append(finding)  # unchanged (the same object)
            continue
        base = dataclass_replace(finding, verdict=verdict, before_correction=None)
        base = dataclass_replace(base, measured=base.measured.split(_HOLM_NOTE_START)[0])
        if demote:
            out.append(
                dataclass_replace(
                    base,
                    verdict=Verdict.INCONCLUSIVE,
                    before_correction=Verdict.CONTRADICTED,
                    measured=base.measured
                    + f"{_HOLM_NOTE_START}contradicted on its own, not after Holm's correction "
                    f"over the claim's {m} statistical parts)",
                )
            )
        else:
            out.append(base)
    return out


_HOLM_NOTE_START = " (Holm: "


def combine_findings(findings: Sequence[Finding]) -> Verdict:
    """A claim's verdict from its parts' findings: Holm's correction, then ``combine_verdicts``."""
    return combine_verdicts([f.verdict for f in family_adjusted(findings)])


# --- rule primitives: one measured number against a stated one -------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def close_to(measured: float, stated: float, tolerance: float, what: str) -> Finding:
    """holds if ``|measured - stated| <= tolerance``, contradicted if farther, inconclusive if
    the measurement is not a finite number."""
    rule = f"{what}: holds if |measured - stated| <= {tolerance:g}, else contradicted"
    if not math.isfinite(measured):
        return Finding(Verdict.INCONCLUSIVE, rule, f"measured {measured}: not a number")
    gap = abs(measured - stated)
    measured_text = f"measured {measured:.6g}, stated {stated:g}, |diff| {gap:.3g}"
    return Finding(Verdict.HOLDS if gap <= tolerance else Verdict.CONTRADICTED, rule, measured_text)


def at_most(value: float, limit: float, what: str) -> Finding:
    """holds if ``value <= limit``, contradicted if above, inconclusive if not finite."""
    rule = f"{what}: holds if <= {limit:g}, else contradicted"
    if not math.isfinite(value):
        return Finding(Verdict.INCONCLUSIVE, rule, f"measured {value}: not a number")
    return Finding(
        Verdict.HOLDS if value <= limit else Verdict.CONTRADICTED, rule, f"measured {_fmt(value)}"
    )


def at_least(value: float, limit: float, what: str) -> Finding:
    """holds if ``value >= limit``, contradicted if below, inconclusive if not finite."""
    rule = f"{what}: holds if >= {limit:g}, else contradicted"
    if not math.isfinite(value):
        return Finding(Verdict.INCONCLUSIVE, rule, f"measured {value}: not a number")
    return Finding(
        Verdict.HOLDS if value >= limit else Verdict.CONTRADICTED, rule, f"measured {_fmt(value)}"
    )


def band(value: float, holds_at_most: float, contradicted_from: float, what: str) -> Finding:
    """Three-way rule for "this stays small": holds if ``value <= holds_at_most``,
    contradicted if ``value >= contradicted_from``, inconclusive in between or if not finite."""
    if not holds_at_most < contradicted_from:
        raise ValueError(
            f"band needs holds_at_most < contradicted_from; got {holds_at_most} and "
            f"{contradicted_from}"
        )
    rule = (
        f"{what}: holds if <= {holds_at_most:g}, contradicted if >= {contradicted_from:g}, "
        "inconclusive in between"
    )
    if not math.isfinite(value):
        return Finding(Verdict.INCONCLUSIVE, rule, f"measured {value}: not a number")
    if value <= holds_at_most:
        verdict = Verdict.HOLDS
    elif value >= contradicted_from:
        verdict = Verdict.CONTRADICTED
    else:
        verdict = Verdict.INCONCLUSIVE
    return Finding(verdict, rule, f"measured {_fmt(value)}")


def one_match(matches: Sequence[str], candidates: Sequence[str]) -> Finding:
    """holds if a value equals exactly one candidate, contradicted if none, inconclusive if
    several (the measurement cannot tell them apart)."""
    rule = f"equals exactly one of {list(candidates)} -> holds; none -> contradicted; several -> "
    rule += "inconclusive"
    measured = f"equals {list(matches)}" if matches else "equals none of them"
    if len(matches) == 1:
        return Finding(Verdict.HOLDS, rule, measured)
    return Finding(Verdict.CONTRADICTED if not matches else Verdict.INCONCLUSIVE, rule, measured)


def clopper_pearson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial share.

    Args:
        successes: outcomes that show it.
        n: outcomes.
        confidence: coverage.

    Returns:
        (low, high); (nan, nan) when n == 0.
    """
    if n == 0:
        return (math.nan, math.nan)
    from scipy import stats  # see mean_interval: scipy.stats is slow to import

    tail = (1 - confidence) / 2
    low = 0.0 if successes == 0 else float(stats.beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(stats.beta.ppf(1 - tail, successes + 1, n - successes))
    return (low, high)


def share_rule(successes: int, n: int, what: str) -> Finding:
    """A share of ``n`` outcomes against the protocol's shares.

    holds: at least ``share_holds`` of them show it and the exact Clopper-Pearson interval
    lies above ``share_null`` (one-sided binomial test at alpha / 2); contradicted: at most
    ``share_contradicted`` and the interval lies below ``share_null``; else inconclusive, as
    is any share of fewer than ``min_seeds`` outcomes.

    Args:
        successes: outcomes that show what the claim says.
        n: outcomes measured.
        what: what is counted, for the rule's text.
    """
    holds_at, contra_at = statistic("share_holds"), statistic("share_contradicted")
    null, alpha = statistic("share_null"), statistic("alpha")
    rule = (
        f"{what}: holds if >= {holds_at:.0%} and the exact {1 - alpha:.0%} (Clopper-Pearson) "
        f"interval lies above {null:.0%}, contradicted if <= {contra_at:.0%} and it lies below, "
        f"else inconclusive (needs >= {min_seeds()})"
    )
    if n < max(2, min_seeds()) or not 0 <= successes <= n:
        return Finding(Verdict.INCONCLUSIVE, rule, f"{successes} of {n}: too few for a share")
    from scipy import stats  # see mean_interval: scipy.stats is slow to import

    share = successes / n
    low, high = clopper_pearson(successes, n, 1 - alpha)
    # The share thresholds gate the tests: below share_holds a share never holds, whatever
    # its p-value (p = 1), so Holm's correction sees the rule the part applies.
    p_for = float(stats.binom.sf(successes - 1, n, null)) if share >= holds_at else 1.0
    p_against = float(stats.binom.cdf(successes, n, null)) if share <= contra_at else 1.0
    measured = f"{successes} of {n} ({share:.0%}; exact CI {low:.2f}-{high:.2f})"
    return Finding(_two_way(p_for, p_against), rule, measured, p_for, p_against)


# --- per-run derived numbers -------------------------------------------------------------


def final_value(record: RunRecord, metric: str) -> float:
    """The last logged value of ``metric`` (history first, then final metrics)."""
    values = record.history.get(metric)
    if values:
        return float(values[-1])
    return float(record.final.get(metric, math.nan))


SWING_WINDOW = 25  # steps in the moving average the per-step swing is measured around


def step_swing(batch_losses: Sequence[float], window: int = SWING_WINDOW) -> float:
    """How much the training loss swings step by step in the second half of training.

    The root mean square of (batch loss - its centred moving average over ``window`` steps):
    the part of the curve that goes up and down around its trend, which is what a tutorial's
    "the loss oscillates" describes. Mini-batch noise alone gives a floor every rate shares.

    Args:
        batch_losses: the loss of every step, in order.
        window: steps in the moving average (the trend).

    Returns:
        The swing; nan when a loss is not finite (the run diverged) or there are fewer than
        ``2 * window`` late steps.
    """
    values = np.asarray(batch_losses, dtype=np.float64)
    late = values[values.size // 2 :]
    if late.size < 2 * window or not np.all(np.isfinite(late)):
        return math.nan
    trend = np.convolve(late, np.ones(window) / window, mode="valid")
    offset = window // 2
    residual = late[offset : offset + trend.size] - trend
    return float(np.sqrt(np.mean(residual**2)))


def late_step_swing(record: RunRecord) -> float:
    """``step_swing`` of a run's per-step training loss (nan when it was not logged)."""
    return step_swing(record.history.get(BATCH_LOSS_METRIC, []))


def probe_oscillation(probe_losses: Sequence[float], late_fraction: float = 0.5) -> float:
    """How much the probe loss goes up and comes back down, late in training.

    Over the last ``late_fraction`` of the steps: the total variation of the probe curve less
    its net change, per step, as a share of its mean level,
    ``(sum |diff| - |last - first|) / (2 (n - 1) mean)``. A curve that only falls (or only
    rises), however fast, scores 0; a curve bouncing by +-a around a level L scores about a / L.
    The probe loss is measured on the same rows at every step (``trainer.probe_rows``), so a
    model whose weights do not move scores exactly 0: mini-batch sampling noise cannot pass for
    oscillation here (the batch-loss swing, ``step_swing``, is large for a frozen model).

    Args:
        probe_losses: the probe loss after every step, in order.
        late_fraction: the share of the last steps measured (the claims' "late").

    Returns:
        The oscillation (>= 0); nan with fewer than 3 late values or a non-finite one.
    """
    if not 0 < late_fraction <= 1:
        raise ValueError(f"late_fraction={late_fraction} must be in (0, 1]")
    values = np.asarray(probe_losses, dtype=np.float64)
    late = values[round(values.size * (1 - late_fraction)) :]
    if late.size < 3 or not np.all(np.isfinite(late)):
        return math.nan
    level = float(np.mean(late))
    if level <= 0:
        return math.nan
    travelled = float(np.sum(np.abs(np.diff(late))))
    net = abs(float(late[-1] - late[0]))
    return (travelled - net) / (2 * (late.size - 1) * level)


class RunOutcome(enum.StrEnum):
    """How a training run ended, for the rules that treat failures apart (C13, C15)."""

    LEARNED = "learned"
    # The loss went NaN/inf, or the run learned nothing: a final training loss no better than
    # predicting the class frequencies (``data.prior_loss``) with the val accuracy at the
    # majority share (a network collapsed to a constant prediction lands here; a slow run that
    # started above the prior's loss and has not got below it yet, but classifies, does not).
    DIVERGED = "diverged"
    # Finite loss below the prior's, but the val accuracy never left the majority share.
    COLLAPSED = "collapsed"

    @property
    def failed(self) -> bool:
        return self is not RunOutcome.LEARNED


def run_outcome(record: RunRecord, collapse_margin: float) -> RunOutcome:
    """Diverged, collapsed or learned (see ``RunOutcome``): a run whose final val accuracy is
    above the majority share by more than ``collapse_margin`` learned (whatever its loss).

    Args:
        record: the run (its ``train/loss`` and ``val/acc`` histories, the params
            ``data.prior_loss`` and ``data.majority_share``).
        collapse_margin: a final val accuracy at most this above the majority share is
            "stays at the majority share".

    Returns:
        The outcome. A run without ``data.prior_loss`` is judged on non-finite losses alone.
    """
    if record.diverged:
        return RunOutcome.DIVERGED
    final_loss = final_value(record, TRAIN_LOSS_METRIC)
    if not math.isfinite(final_loss):
        return RunOutcome.DIVERGED
    majority = float(record.params.get("data.majority_share", "nan") or "nan")
    accuracy = final_value(record, VAL_ACC_METRIC)
    if not (math.isfinite(majority) and accuracy <= majority + collapse_margin):
        return RunOutcome.LEARNED
    prior = float(record.params.get("data.prior_loss", "nan") or "nan")
    if math.isfinite(prior) and final_loss >= prior:
        return RunOutcome.DIVERGED
    return RunOutcome.COLLAPSED


# --- censored times: epochs to a target that some runs never reach -----------------------


@dataclass(frozen=True)
class TimeToTarget:
    """When a run reached a target, or that it had not by its last epoch (censored).

    Attributes:
        epochs: the first epoch at the target, or the epochs observed when never reached.
        reached: False = censored: the run's time to target is only known to exceed ``epochs``.
    """

    epochs: int
    reached: bool


def time_to_target(record: RunRecord, target: float) -> TimeToTarget:
    """The first epoch with val/acc >= target, or the run censored at its last epoch."""
    accuracies = record.history.get(VAL_ACC_METRIC, [])
    for epoch, value in enumerate(accuracies, start=1):
        if value >= target:
            return TimeToTarget(epoch, True)
    return TimeToTarget(len(accuracies), False)


def kaplan_meier_median(times: Sequence[TimeToTarget]) -> float:
    """The Kaplan-Meier median time to target (nan when fewer than half are known to reach it).

    S(t) is the product over event times t_i <= t of (1 - reached_i / at_risk_i); a censored
    run stays at risk up to its own last epoch. The median is the first t with S(t) <= 0.5.
    """
    survival = 1.0
    for epoch in sorted({t.epochs for t in times if t.reached}):
        at_risk = sum(t.epochs >= epoch for t in times)
        events = sum(t.epochs == epoch and t.reached for t in times)
        survival *= 1 - events / at_risk
        if survival <= 0.5:
            return float(epoch)
    return math.nan


def first_to_target(a: TimeToTarget, b: TimeToTarget) -> int:
    """+1 if ``a`` provably reached the target first, -1 if ``b`` did, 0 if tied or unknown.

    A censored run loses to one that reached the target within its observed epochs; two
    censored runs, or equal times, are a tie (their order is not known).
    """

    def first(x: TimeToTarget, y: TimeToTarget) -> bool:
        if not x.reached:
            return False
        return x.epochs < y.epochs if y.reached else x.epochs <= y.epochs

    return 1 if first(a, b) else -1 if first(b, a) else 0


def sign_test(wins: int, losses: int, what: str, level: float | None = None) -> Finding:
    """Directional rule on paired outcomes: the claim expects ``wins`` > ``losses``.

    holds: more wins, and a two-sided binomial sign test over the untied pairs gives p < level;
    contradicted: more losses with p < level; inconclusive otherwise (ties are left out).
    ``level`` defaults to the protocol's alpha; each direction is one-sided at level / 2.
    """
    level = statistic("alpha") if level is None else level
    rule = (
        f"{what}: sign test over the seed pairs (ties left out): holds if the claim's side wins "
        f"with two-sided p < {level:g} (one-sided {level / 2:g}), contradicted if the other side "
        f"does, else inconclusive (needs >= {min_seeds()} untied pairs)"
    )
    n = wins + losses
    if n == 0:
        return Finding(Verdict.INCONCLUSIVE, rule, "no untied pair")
    from scipy import stats  # see mean_interval: scipy.stats is slow to import

    p_value = float(stats.binomtest(wins, n, 0.5).pvalue)
    p_for = float(stats.binom.sf(wins - 1, n, 0.5))
    p_against = float(stats.binom.sf(losses - 1, n, 0.5))
    measured = f"claim's side first in {wins}, other side in {losses} pairs (p = {p_value:.3g})"
    if n < min_seeds():
        return Finding(Verdict.INCONCLUSIVE, rule, measured + _too_few(n))
    verdict = (
        Verdict.HOLDS
        if p_for <= level / 2
        else Verdict.CONTRADICTED
        if p_against <= level / 2
        else Verdict.INCONCLUSIVE
    )
    return Finding(verdict, rule, measured, p_for, p_against)
