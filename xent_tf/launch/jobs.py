"""A sweep job's fate, decided in one place for experiments/run.py and for every launcher.

Before a job of a sweep trains (``decide_job``): a config that does not validate is INVALID
(it never runs; the rest of the sweep goes on); a config whose choices do not fit together
(``config.NotApplicableError``: bce on 5-class data, when a study sweeps heads over data sets) is
NOT_APPLICABLE (left out, not failed); a config that already FINISHED under the resumed parent
is SKIPPED (its recorded validation loss is its value). Every other job trains: TRAINED, its
value its final validation loss, or NaN if it failed (``sweep_goes_on``: its run is FAILED in
MLflow with the reason and the sweep goes on). A job whose worker process died is WORKER_DIED.

A launcher hands Hydra a ``DecidedJob`` for a job it did not run: a ``JobReturn`` whose
``outcome`` says why, counted by that field rather than by its task name.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hydra.core.utils import JobReturn, JobStatus

from xent_tf.config import Config, NotApplicableError
from xent_tf.track.resume import FinishedJob

log = logging.getLogger(__name__)


class JobOutcome(enum.StrEnum):
    """What became of one job of a sweep."""

    TRAINED = "trained"  # it ran; its value is its final val loss (NaN: its run FAILED)
    SKIPPED = "skipped"  # its config already FINISHED under the resumed parent
    NOT_APPLICABLE = "not applicable"  # its choices do not fit together: left out
    INVALID = "invalid"  # its config does not validate: never ran
    WORKER_DIED = "worker died"  # its worker process died (SIGKILL, the OOM killer)


@dataclass(frozen=True)
class JobDecision:
    """The fate of a job before it trains.

    Attributes:
        outcome: TRAINED (train it), SKIPPED, NOT_APPLICABLE or INVALID.
        config: the job's validated config (None when it does not validate or does not apply).
        value: the job's value when it does not train (the recorded val loss of a SKIPPED
            one, NaN otherwise).
        error: why an INVALID or NOT_APPLICABLE job does not train.
        finished: the run a SKIPPED job keeps in its place.
    """

    outcome: JobOutcome
    config: Config | None = None
    value: float = math.nan
    error: Exception | None = None
    finished: FinishedJob | None = None


def decide_job(
    validate: Callable[[], Config], finished_run: Callable[[Config], FinishedJob | None]
) -> JobDecision:
    """Decide whether a sweep's job trains, and if not, why.

    Args:
        validate: gives the job's validated config (raises if it does not validate).
        finished_run: the FINISHED run of the resumed parent with that config, or None.

    Returns:
        The decision; ``outcome`` is TRAINED for a job to train.
    """
    try:
        config = validate()
    except NotApplicableError as error:
        return JobDecision(JobOutcome.NOT_APPLICABLE, error=error)
    except Exception as error:
        return JobDecision(JobOutcome.INVALID, error=error)
    done = finished_run(config)
    if done is not None:
        return JobDecision(JobOutcome.SKIPPED, config, done.val_loss, finished=done)
    return JobDecision(JobOutcome.TRAINED, config)


@dataclass
class DecidedJob(JobReturn):
    """The ``JobReturn`` of a job that did not train: Hydra's sweeper reads its value (COMPLETED,
    so the sweep goes on); the launchers count it by ``outcome``."""

    outcome: JobOutcome = JobOutcome.INVALID


def decided_job(
    overrides: Sequence[str], decision: JobDecision | JobOutcome, value: float = math.nan
) -> DecidedJob:
    """The ``JobReturn`` of a job that did not train, logged as such.

    Args:
        overrides: the job's overrides.
        decision: ``decide_job``'s decision, or an outcome found later (WORKER_DIED).
        value: the job's value for an outcome given without a decision.

    Returns:
        A COMPLETED ``DecidedJob``: NaN, or a SKIPPED job's recorded value.
    """
    if isinstance(decision, JobOutcome):
        decision = JobDecision(decision, value=value)
    job = " ".join(overrides)
    if decision.outcome == JobOutcome.INVALID:
        log.error("job %s is invalid and was not run: %s", job, decision.error)
    elif decision.outcome == JobOutcome.NOT_APPLICABLE:
        log.warning("job %s left out: %s", job, decision.error)
    return DecidedJob(
        overrides=list(overrides),
        status=JobStatus.COMPLETED,
        _return_value=decision.value,
        outcome=decision.outcome,
    )


def count_outcomes(returns: Sequence[JobReturn], outcome: JobOutcome) -> int:
    """How many of a sweep's job returns have ``outcome``."""
    return sum(isinstance(r, DecidedJob) and r.outcome == outcome for r in returns)


def sweep_goes_on(error: Exception) -> float:
    """A job that trained and failed: its run is FAILED in MLflow with the reason, the report
    lists it, and the sweep goes on (Hydra's sweeper would stop at the first failed job).

    Returns:
        NaN, the job's value.
    """
    log.error("job failed, the sweep goes on: %s: %s", type(error).__name__, error)
    return math.nan
