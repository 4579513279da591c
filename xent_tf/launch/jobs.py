"""A sweep job's fate, decided in one place for experiments/run.py and for every launcher.

Before a job of a sweep trains (``decide_job``): a config that does not validate is INVALID
(it never runs; its ``JobReturn`` is FAILED with an ``InvalidJobError``; the rest of the sweep
goes on, and the ``replicas`` sweeper fails the command when the sweep has ended and been
reported: ``sweep_outcome``); a config whose choices do not fit together
(``config.NotApplicableError``: bce on 5-class data, when a study sweeps heads over data sets) is
NOT_APPLICABLE (left out, not failed); a config that already FINISHED under the resumed parent
is SKIPPED (its recorded validation loss is its value). Every other job trains: TRAINED, its
value its final validation loss, or NaN if it failed (``sweep_goes_on``: its run is FAILED in
MLflow with the reason and the sweep goes on). A job whose worker process died is WORKER_DIED.

A launcher hands Hydra a ``DecidedJob`` for a job it did not run: a ``JobReturn`` whose
``outcome`` says why, counted by that field rather than by its task name. Only INVALID is
FAILED: a SKIPPED job's run FINISHED before (its recorded value is its value), a NOT_APPLICABLE
one is left out of the study by design (NaN), and a job whose worker died ran, like a job that
failed in training (NaN; its run is FAILED in MLflow).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException

from xent_tf.config import Config, NotApplicableError
from xent_tf.track.resume import FinishedJob

log = logging.getLogger(__name__)


class JobOutcome(enum.StrEnum):
    """What became of one job of a sweep."""

    TRAINED = "trained"  # it ran; its value is its final val loss (NaN: its run FAILED)
    SKIPPED = "skipped"  # its config already FINISHED (or diverged) under the resumed parent
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


class InvalidJobError(ValueError):
    """A sweep job whose config does not validate: it was not run.

    The failed ``JobReturn`` of such a job carries it, whichever process decided (the launcher,
    or ``xent_tf.tasks.task`` in a worker): pickled with the job's overrides and the reason.

    Attributes:
        overrides: the job's overrides.
        reason: the validation error's message (it names the bad value and what is allowed).
    """

    def __init__(self, overrides: Sequence[str], reason: str) -> None:
        self.overrides = tuple(overrides)
        self.reason = reason
        super().__init__(f"job {' '.join(overrides)} is invalid and was not run: {reason}")

    def __reduce__(self) -> tuple[type[InvalidJobError], tuple[tuple[str, ...], str]]:
        return InvalidJobError, (self.overrides, self.reason)


def invalid_job(overrides: Sequence[str], error: Exception) -> InvalidJobError:
    """The error an INVALID job fails with, logged as the job's line.

    Args:
        overrides: the job's overrides.
        error: why its config does not validate.
    """
    invalid = InvalidJobError(overrides, str(error))
    log.error("%s", invalid)
    return invalid


class InvalidJobsError(CompactHydraException):
    """A sweep ran and was recorded, but some of its jobs were invalid and never ran.

    Hydra prints a ``CompactHydraException`` as its message alone and exits with status 1.
    """


@dataclass
class DecidedJob(JobReturn):
    """The ``JobReturn`` of a job that did not train; the launchers count it by ``outcome``.

    An INVALID job's is FAILED (its value an ``InvalidJobError``); the others' COMPLETED, so
    Hydra's sweeper reads their value and goes on.
    """

    outcome: JobOutcome = JobOutcome.INVALID


def decided_job(
    overrides: Sequence[str], decision: JobDecision | JobOutcome, value: float = math.nan
) -> DecidedJob:
    """The ``JobReturn`` of a job that did not train.

    Args:
        overrides: the job's overrides.
        decision: ``decide_job``'s decision, or an outcome found later (WORKER_DIED).
        value: the job's value for an outcome given without a decision.

    Returns:
        An INVALID job's FAILED ``DecidedJob`` (its value the ``InvalidJobError``); the others'
        COMPLETED: NaN, or a SKIPPED job's recorded value.
    """
    if isinstance(decision, JobOutcome):
        decision = JobDecision(decision, value=value)
    if decision.outcome == JobOutcome.INVALID:
        error = decision.error if decision.error is not None else ValueError("(no reason given)")
        return DecidedJob(
            overrides=list(overrides),
            status=JobStatus.FAILED,
            _return_value=invalid_job(overrides, error),
            outcome=decision.outcome,
        )
    return DecidedJob(
        overrides=list(overrides),
        status=JobStatus.COMPLETED,
        _return_value=decision.value,
        outcome=decision.outcome,
    )


def invalid_error(job: JobReturn) -> InvalidJobError | None:
    """The ``InvalidJobError`` a job failed with, or None (it ran, or failed otherwise)."""
    if job.status == JobStatus.FAILED and isinstance(job._return_value, InvalidJobError):
        return job._return_value
    return None


def sweep_outcome(returns: Sequence[JobReturn]) -> InvalidJobsError | None:
    """What a sweep's end says about its jobs: the error naming its invalid jobs, if any.

    Hydra's sweeper reads every job's value after each batch and stops at the first FAILED
    one; the ``replicas`` sweeper reads the others' and raises this once the sweep has ended
    (its callbacks have reported it).

    Args:
        returns: every job's ``JobReturn``, all batches.

    Returns:
        An error naming each invalid job and why (None: every job ran or was decided).
    """
    invalid = [e for e in map(invalid_error, returns) if e is not None]
    if not invalid:
        return None
    lines = "\n".join(f"  {' '.join(e.overrides)}: {e.reason}" for e in invalid)
    return InvalidJobsError(
        f"{len(invalid)} of the sweep's {len(returns)} jobs are invalid and were not run (the "
        f"other jobs ran and are recorded):\n{lines}"
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
