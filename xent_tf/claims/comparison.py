"""Aggregate runs over seeds and turn measured numbers into verdicts.

Everything here is plain Python/NumPy/SciPy on run records, so the rules can be tested on
constructed histories. A verdict is always the output of one of the rules below applied to
measured numbers, and carries the text of its rule.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xent_tf.metrics import BATCH_LOSS_METRIC
from xent_tf.track.run_record import RunRecord


class Verdict(enum.StrEnum):
    """What a rule concluded about a claim (or one part of it)."""

    HOLDS = "holds"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    # The two disjoint seed sets of a stability run gave different verdicts.
    UNSTABLE = "unstable"
    # Nothing was measured (e.g. the reference framework is not installed); never counted.
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval over ``n`` values (nan bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

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
    if sem == 0.0:
        return Interval(mean, mean, mean, int(data.size), confidence)
    # Imported here: scipy.stats costs ~1 s to import, and a study's report and the
    # ledger import this module, and most of them never need an interval.
    from scipy import stats

    low, high = stats.t.interval(confidence, df=data.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), int(data.size), confidence)


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
    """A verdict, the rule that produced it, and the numbers it was applied to."""

    verdict: Verdict
    rule: str
    measured: str


def difference_verdict(diff: Interval, expect_positive: bool, what: str) -> Finding:
    """Directional rule: the claim expects ``diff`` (a - b) to be > 0 (or < 0).

    holds: the CI of the paired difference lies entirely on the expected side of 0;
    contradicted: entirely on the other side; inconclusive: it contains 0 or cannot be given.
    """
    side = "> 0" if expect_positive else "< 0"
    rule = f"{what}: holds if the {diff.confidence:.0%} CI of the paired difference is {side}, "
    rule += "contradicted if it is entirely on the other side, else inconclusive"
    measured = f"difference {diff.format()}"
    if not diff.has_interval:
        return Finding(Verdict.INCONCLUSIVE, rule, measured + " — needs at least 2 paired seeds")
    if (diff.low > 0) == expect_positive and diff.excludes_zero():
        return Finding(Verdict.HOLDS, rule, measured)
    if diff.excludes_zero():
        return Finding(Verdict.CONTRADICTED, rule, measured)
    return Finding(Verdict.INCONCLUSIVE, rule, measured)


def equivalence_verdict(diff: Interval, margin: float, what: str) -> Finding:
    """Equivalence rule: the claim says a and b are the same within ``margin``.

    holds: the CI of the paired difference lies inside [-margin, +margin];
    contradicted: the CI lies entirely outside it (a real difference larger than the margin);
    inconclusive: anything in between, or no interval.
    """
    rule = (
        f"{what}: holds if the {diff.confidence:.0%} CI of the paired difference lies within "
        f"±{margin:g}, contradicted if it lies entirely outside, else inconclusive"
    )
    measured = f"difference {diff.format()}"
    if not diff.has_interval:
        return Finding(Verdict.INCONCLUSIVE, rule, measured + " — needs at least 2 paired seeds")
    if -margin <= diff.low and diff.high <= margin:
        return Finding(Verdict.HOLDS, rule, measured)
    if diff.low > margin or diff.high < -margin:
        return Finding(Verdict.CONTRADICTED, rule, measured)
    return Finding(Verdict.INCONCLUSIVE, rule, measured)


PARTS_RULE = (
    "all parts hold -> holds; any contradicted -> contradicted; else inconclusive "
    "(a part not measured caps the claim at inconclusive)"
)


def combine_verdicts(verdicts: Sequence[Verdict]) -> Verdict:
    """All parts hold -> holds; any part contradicted -> contradicted; else inconclusive.

    A part that was not measured is not a pass: it caps the claim at inconclusive, so a claim
    never holds on the parts that happened to be measured (it can still be contradicted by
    the parts that were).
    """
    if any(v == Verdict.CONTRADICTED for v in verdicts):
        return Verdict.CONTRADICTED
    if verdicts and all(v == Verdict.HOLDS for v in verdicts):
        return Verdict.HOLDS
    return Verdict.INCONCLUSIVE


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


def share_rule(share: float, n: int, what: str) -> Finding:
    """holds if >= 80% of ``n`` outcomes show it, contradicted if <= 20%, else inconclusive;
    a single outcome is not a share (inconclusive)."""
    rule = f"{what}: holds if >= 80%, contradicted if <= 20%, else inconclusive (needs >= 2)"
    if not math.isfinite(share) or n < 2:
        return Finding(Verdict.INCONCLUSIVE, rule, f"{n} outcome(s) measured: too few for a share")
    verdict = (
        Verdict.HOLDS
        if share >= 0.8
        else Verdict.CONTRADICTED
        if share <= 0.2
        else Verdict.INCONCLUSIVE
    )
    return Finding(verdict, rule, f"{share:.0%} of {n}")


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
    accuracies = record.history.get("val/acc", [])
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


SIGN_TEST_LEVEL = 0.05


def sign_test(wins: int, losses: int, what: str, level: float = SIGN_TEST_LEVEL) -> Finding:
    """Directional rule on paired outcomes: the claim expects ``wins`` > ``losses``.

    holds: more wins, and a two-sided binomial sign test over the untied pairs gives p < level;
    contradicted: more losses with p < level; inconclusive otherwise (ties are left out).
    """
    rule = (
        f"{what}: sign test over the seed pairs (ties left out): holds if the claim's side wins "
        f"with two-sided p < {level:g}, contradicted if the other side does, else inconclusive"
    )
    n = wins + losses
    if n == 0:
        return Finding(Verdict.INCONCLUSIVE, rule, "no untied pair")
    from scipy import stats  # see mean_interval: scipy.stats is slow to import

    p_value = float(stats.binomtest(wins, n, 0.5).pvalue)
    measured = f"claim's side first in {wins}, other side in {losses} pairs (p = {p_value:.3g})"
    if p_value < level:
        return Finding(Verdict.HOLDS if wins > losses else Verdict.CONTRADICTED, rule, measured)
    return Finding(Verdict.INCONCLUSIVE, rule, measured)
