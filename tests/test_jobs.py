"""A sweep job's fate (xent_tf.launch.jobs), decided once for run.py and every launcher."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import pytest
from hydra.core.utils import JobReturn, JobStatus

from xent_tf.config import Config, NotApplicableError
from xent_tf.launch.jobs import (
    DecidedJob,
    InvalidJobError,
    InvalidJobsError,
    JobDecision,
    JobOutcome,
    count_outcomes,
    decide_job,
    decided_job,
    invalid_error,
    sweep_outcome,
)
from xent_tf.track.resume import FinishedJob


def _never_finished(_: Config) -> FinishedJob | None:
    return None


def test_each_fate_before_training(make_config: Callable[..., Config]) -> None:
    config = make_config()
    done = FinishedJob(run_id="abc", val_loss=0.25)

    trained = decide_job(lambda: config, _never_finished)
    assert (trained.outcome, trained.config, trained.error) == (JobOutcome.TRAINED, config, None)

    skipped = decide_job(lambda: config, lambda _: done)
    assert (skipped.outcome, skipped.value, skipped.finished) == (JobOutcome.SKIPPED, 0.25, done)

    def not_applicable() -> Config:
        raise NotApplicableError("loss=bce needs 2 classes, data has 5")

    left_out = decide_job(not_applicable, _never_finished)
    assert left_out.outcome == JobOutcome.NOT_APPLICABLE and left_out.config is None
    assert str(left_out.error) == "loss=bce needs 2 classes, data has 5"

    def invalid() -> Config:
        raise ValueError("optimizer.learning_rate=-1.0 must be > 0")

    bad = decide_job(invalid, _never_finished)
    assert bad.outcome == JobOutcome.INVALID and math.isnan(bad.value)
    assert isinstance(bad.error, ValueError)


def test_a_job_that_did_not_train_is_counted_by_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def invalid() -> Config:
        raise ValueError("optimizer.learning_rate=-1.0 must be > 0")

    returns = [
        decided_job(["seed=0"], decide_job(invalid, _never_finished)),
        decided_job(["seed=1"], JobOutcome.WORKER_DIED),
        decided_job(["seed=2"], JobOutcome.WORKER_DIED),
    ]
    assert all(isinstance(r, DecidedJob) for r in returns)
    assert [r.outcome for r in returns] == [
        JobOutcome.INVALID,
        JobOutcome.WORKER_DIED,
        JobOutcome.WORKER_DIED,
    ]
    assert count_outcomes(returns, JobOutcome.WORKER_DIED) == 2
    assert count_outcomes(returns, JobOutcome.SKIPPED) == 0
    # A job that did not run is not COMPLETED: FAILED with the reason, which pickles (a
    # worker's task raises it too).
    assert returns[0].status == JobStatus.FAILED
    with pytest.raises(InvalidJobError) as raised:
        _ = returns[0].return_value
    assert pickle.loads(pickle.dumps(raised.value)).args == raised.value.args
    assert str(raised.value) == (
        "job seed=0 is invalid and was not run: optimizer.learning_rate=-1.0 must be > 0"
    )
    assert "job seed=0 is invalid and was not run: optimizer.learning_rate=-1.0" in caplog.text
    # A job whose worker died ran (its run is FAILED in MLflow): NaN, so the sweep goes on.
    assert returns[1].status == JobStatus.COMPLETED and math.isnan(returns[1].return_value)


def test_a_sweep_with_invalid_jobs_fails_naming_each_and_what_is_allowed() -> None:
    done = JobReturn(overrides=["seed=0"], status=JobStatus.COMPLETED, _return_value=0.5)
    crashed = JobReturn(overrides=["seed=9"], status=JobStatus.FAILED, _return_value=OSError())
    skipped = decided_job(["seed=1"], JobOutcome.SKIPPED, 0.25)
    left_out = decided_job(["loss=bce"], JobDecision(JobOutcome.NOT_APPLICABLE))
    assert sweep_outcome([done, skipped, left_out]) is None
    # A job that failed otherwise is not an invalid one (Hydra's sweeper raises it).
    assert invalid_error(crashed) is None and sweep_outcome([done, crashed]) is None
    # From a worker (the task raised it) or from the launcher (decided_job): the same.
    from_task = JobReturn(
        overrides=["lr=-1", "seed=0"],
        status=JobStatus.FAILED,
        _return_value=InvalidJobError(["lr=-1", "seed=0"], "lr=-1.0 must be > 0"),
    )
    from_launcher = decided_job(
        ["lr=-1", "seed=1"],
        JobDecision(JobOutcome.INVALID, error=ValueError("lr=-1.0 must be > 0")),
    )
    failure = sweep_outcome([done, from_task, skipped, from_launcher, left_out])
    assert isinstance(failure, InvalidJobsError)
    assert str(failure) == (
        "2 of the sweep's 5 jobs are invalid and were not run (the other jobs ran and are "
        "recorded):\n  lr=-1 seed=0: lr=-1.0 must be > 0\n  lr=-1 seed=1: lr=-1.0 must be > 0"
    )
