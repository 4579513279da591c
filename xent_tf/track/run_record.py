"""A run as read back from the store: what every rule, report and resumed sweep works on.

Plain data (no MLflow here), so the rules can be tested on constructed records;
``reading.fetch_children`` builds them from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


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
        tags: the run's tags (e.g. ``xent.variant``).
    """

    run_id: str
    params: Mapping[str, str]
    seed: int
    status: str
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    final: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    start_time: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @property
    def diverged(self) -> bool:
        """The run stopped because its loss became NaN/inf (a measured outcome, not a crash)."""
        return self.error is not None and self.error.startswith("NonFiniteLossError")
