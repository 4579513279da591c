"""A sweep job's fate (xent_tf.launch.jobs), decided once for run.py and every launcher."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from xent_tf.config import Config, NotApplicableError
from xent_tf.launch.jobs import (
    DecidedJob,
    JobOutcome,
    count_outcomes,
    decide_job,
    decided_job,
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
    assert math.isnan(returns[0].return_value)  # COMPLETED: Hydra's sweeper goes on
    assert "job seed=0 is invalid and was not run: optimizer.learning_rate=-1.0" in caplog.text
