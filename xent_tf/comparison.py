"""Aggregate runs over seeds and turn measured numbers into verdicts.

Everything here is plain Python/NumPy/SciPy on run records, so the rules can be tested on
constructed histories. A verdict is always the output of one of the rules below applied to
measured numbers, and carries the text of its rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

HOLDS = "holds"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE)


@dataclass(frozen=True)
class RunRecord:
    """One finished (or failed) child run of a study.

    Attributes:
        run_id: MLflow run id.
        params: the run's params (dotted config keys -> string values).
        seed: the run's seed.
        status: MLflow status ("FINISHED", "FAILED", "KILLED", "RUNNING").
        history: per-epoch values of each logged metric, in epoch order.
        final: the last value of every metric (test/*, epochs_to_target, ...).
        error: why the run failed, if it did.
        start_time: when the run started (ms since the epoch; 0 if unknown): of two runs of
            the same variant and seed (a re-run sweep), the later one counts.
    """

    run_id: str
    params: Mapping[str, str]
    seed: int
    status: str
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    final: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    start_time: int = 0

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def diverged(self) -> bool:
        """The run stopped because its loss became NaN/inf (a measured outcome, not a crash)."""
        return self.error is not None and self.error.startswith("NonFiniteLossError")


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
    # Imported here: scipy.stats costs ~1 s to import, and every training job (and a sweep's
    # launcher) imports this module for RunRecord without ever needing an interval.
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
class Verdict:
    """A verdict, the rule that produced it, and the numbers it was applied to."""

    verdict: str
    rule: str
    measured: str


def difference_verdict(diff: Interval, expect_positive: bool, what: str) -> Verdict:
    """Directional rule: the claim expects ``diff`` (a - b) to be > 0 (or < 0).

    holds: the CI of the paired difference lies entirely on the expected side of 0;
    contradicted: entirely on the other side; inconclusive: it contains 0 or cannot be given.
    """
    side = "> 0" if expect_positive else "< 0"
    rule = f"{what}: holds if the {diff.confidence:.0%} CI of the paired difference is {side}, "
    rule += "contradicted if it is entirely on the other side, else inconclusive"
    measured = f"difference {diff.format()}"
    if not diff.has_interval:
        return Verdict(INCONCLUSIVE, rule, measured + " — needs at least 2 paired seeds")
    if (diff.low > 0) == expect_positive and diff.excludes_zero():
        return Verdict(HOLDS, rule, measured)
    if diff.excludes_zero():
        return Verdict(CONTRADICTED, rule, measured)
    return Verdict(INCONCLUSIVE, rule, measured)


def equivalence_verdict(diff: Interval, margin: float, what: str) -> Verdict:
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
        return Verdict(INCONCLUSIVE, rule, measured + " — needs at least 2 paired seeds")
    if -margin <= diff.low and diff.high <= margin:
        return Verdict(HOLDS, rule, measured)
    if diff.low > margin or diff.high < -margin:
        return Verdict(CONTRADICTED, rule, measured)
    return Verdict(INCONCLUSIVE, rule, measured)


def combine_verdicts(verdicts: Sequence[str]) -> str:
    """All parts hold -> holds; any part contradicted -> contradicted; else inconclusive."""
    if not verdicts:
        return INCONCLUSIVE
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    return INCONCLUSIVE


# --- per-run derived numbers -------------------------------------------------------------


def epochs_to_target(record: RunRecord, target: float) -> float:
    """First epoch with val/acc >= target; epochs + 1 when never reached (censored)."""
    accuracies = record.history.get("val/acc", [])
    for epoch, value in enumerate(accuracies, start=1):
        if value >= target:
            return float(epoch)
    return float(len(accuracies) + 1)


def final_value(record: RunRecord, metric: str) -> float:
    """The last logged value of ``metric`` (history first, then final metrics)."""
    values = record.history.get(metric)
    if values:
        return float(values[-1])
    return float(record.final.get(metric, math.nan))


def late_oscillation(record: RunRecord, metric: str = "val/loss") -> float:
    """Mean |change| of ``metric`` between consecutive epochs over the second half of training.

    A curve that has settled moves little from epoch to epoch; one that bounces (a too-large
    constant rate) keeps moving. Lower is smoother.
    """
    values = np.asarray(record.history.get(metric, []), dtype=np.float64)
    if values.size < 3:
        return math.nan
    late = values[values.size // 2 :]
    return float(np.mean(np.abs(np.diff(late)))) if late.size >= 2 else math.nan
