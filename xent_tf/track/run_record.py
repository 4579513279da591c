"""A run as read back from the store: what every rule, report and resumed sweep works on.

Plain data (no MLflow here), so the rules can be tested on constructed records;
``reading.fetch_children`` builds them from the store. Also the run statuses, and the tags a
run that diverged or whose range test gave no rate carries (written by ``train.pipeline``,
read by ``reading``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class RunStatus(enum.StrEnum):
    """An MLflow run's status, as MLflow spells it (a ``str``: MLflow's calls take it as is)."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


# A run whose training loss became NaN/inf carries the epoch (from 1) and the step within that
# epoch (from 1) where it did: a measured outcome (C13-C15), told apart from a crash by these
# tags, never by the error's text.
DIVERGED_EPOCH_TAG = "xent.diverged_epoch"
DIVERGED_STEP_TAG = "xent.diverged_step"


# A run whose range test gave no rate to train with (``lr_finder.NoSuggestionError``): also a
# measured outcome (C14's suggestion arms), told apart from a crash by this tag.
NO_SUGGESTION_TAG = "xent.lr_find_no_suggestion"


def no_suggestion_tags() -> dict[str, str]:
    """The tag that marks a run whose range test gave no rate to train with.

    Returns:
        {tag: value} to set on the run.
    """
    return {NO_SUGGESTION_TAG: "true"}


def no_suggestion_of(tags: Mapping[str, str]) -> bool:
    """Whether a run's range test gave no rate to train with, from its tags
    (``no_suggestion_tags``; never from the error's text).

    Args:
        tags: the run's tags.

    Returns:
        True when the run carries the tag.

    Raises:
        ValueError: the tag is there with another value than "true".
    """
    value = tags.get(NO_SUGGESTION_TAG)
    if value is None:
        return False
    if value != "true":
        raise ValueError(f"tag {NO_SUGGESTION_TAG}={value!r} is not 'true'")
    return True


def divergence_tags(epoch: int, step: int) -> dict[str, str]:
    """The tags that mark a run whose loss became NaN/inf.

    Args:
        epoch: the epoch it happened in (from 1).
        step: the step within that epoch (from 1).

    Returns:
        {tag: value} to set on the run.
    """
    return {DIVERGED_EPOCH_TAG: str(epoch), DIVERGED_STEP_TAG: str(step)}


def diverged_epoch_of(tags: Mapping[str, str]) -> int | None:
    """The epoch a run's loss became NaN/inf in, from its tags (``divergence_tags``).

    Args:
        tags: the run's tags.

    Returns:
        The epoch, or None when the run did not diverge.

    Raises:
        ValueError: the tag is there but is not a positive integer.
    """
    value = tags.get(DIVERGED_EPOCH_TAG)
    if value is None:
        return None
    try:
        epoch = int(value)
    except ValueError:
        epoch = 0
    if epoch < 1:
        raise ValueError(f"tag {DIVERGED_EPOCH_TAG}={value!r} is not an epoch number (>= 1)")
    return epoch


@dataclass(frozen=True)
class RunRecord:
    """One finished (or failed) child run of a study.

    Attributes:
        run_id: MLflow run id.
        params: the run's params (dotted config keys -> string values).
        seed: the run's seed.
        status: its MLflow status.
        history: per-epoch values of each logged metric, in epoch order.
        final: the last value of every metric (test/*, epochs_to_target, ...).
        error: why the run failed, if it did.
        start_time: when the run started (ms since the epoch; 0 if unknown): of two runs of
            the same variant and seed (a re-run sweep), the later one counts.
        tags: the run's tags (e.g. ``xent.variant``).
        diverged_epoch: the epoch whose training loss became NaN/inf (``DIVERGED_EPOCH_TAG``),
            or None.
        no_suggestion: its range test gave no rate to train with (``NO_SUGGESTION_TAG``).
    """

    run_id: str
    params: Mapping[str, str]
    seed: int
    status: RunStatus
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    final: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    start_time: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)
    diverged_epoch: int | None = None
    no_suggestion: bool = False

    @property
    def finished(self) -> bool:
        return self.status == RunStatus.FINISHED

    @property
    def diverged(self) -> bool:
        """The run stopped because its loss became NaN/inf (a measured outcome, not a crash)."""
        return self.diverged_epoch is not None
