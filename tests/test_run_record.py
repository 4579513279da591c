"""A run as read back: its status is MLflow's, its divergence and its range test's missing rate
are tags, never the error's text."""

from __future__ import annotations

import math

import pytest
from mlflow.entities import RunStatus as MlflowRunStatus

from xent_tf.claims.comparison import RunOutcome, run_outcome
from xent_tf.claims.studies import val_loss_area
from xent_tf.track.run_record import (
    DIVERGED_EPOCH_TAG,
    NO_SUGGESTION_TAG,
    RunRecord,
    RunStatus,
    diverged_epoch_of,
    divergence_tags,
    no_suggestion_of,
    no_suggestion_tags,
)

PARAMS = {"data.prior_loss": "0.693147", "data.majority_share": "0.5000"}
NAN_ERROR = "NonFiniteLossError: training loss became NaN/inf at epoch 2 (step 5 of that epoch)"
NO_RATE_ERROR = (
    "NoSuggestionError: lr_find: no suggestion: the smoothed loss never fell below the first "
    "batch's loss 0.7 and its own value 0.9 at step 4 (lr 0.01)"
)


def _failed(error: str | None, tags: dict[str, str]) -> RunRecord:
    """A FAILED run whose last epoch was finite and learned (0.3 train loss, 0.9 val acc), as
    ``reading`` builds it: ``diverged_epoch`` from the tags."""
    return RunRecord(
        "r",
        PARAMS,
        0,
        RunStatus.FAILED,
        history={"train/loss": [0.3], "val/loss": [0.35], "val/acc": [0.9]},
        error=error,
        tags=tags,
        diverged_epoch=diverged_epoch_of(tags),
        no_suggestion=no_suggestion_of(tags),
    )


def test_the_statuses_are_mlflows_and_compare_as_its_strings() -> None:
    assert {s.value for s in RunStatus} == set(MlflowRunStatus._STRING_TO_STATUS)
    for status in RunStatus:
        assert MlflowRunStatus.from_string(status) == MlflowRunStatus.from_string(status.value)
    assert RunStatus("FINISHED") is RunStatus.FINISHED and f"{RunStatus.KILLED}" == "KILLED"
    assert RunRecord("r", {}, 0, RunStatus.FINISHED).finished
    assert not RunRecord("r", {}, 0, RunStatus.FAILED).finished
    with pytest.raises(ValueError, match="'DONE' is not a valid RunStatus"):
        RunStatus("DONE")


def test_divergence_tags_are_written_and_read_back_as_the_epoch() -> None:
    tags = divergence_tags(2, 5)
    assert tags == {"xent.diverged_epoch": "2", "xent.diverged_step": "5"}
    assert diverged_epoch_of(tags) == 2
    assert diverged_epoch_of({"error": NAN_ERROR}) is None
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match=f"xent.diverged_epoch='{bad}' is not an epoch"):
            diverged_epoch_of({DIVERGED_EPOCH_TAG: bad})


def test_a_run_is_diverged_by_its_tag_whatever_its_error_text_says() -> None:
    tagged = _failed(NAN_ERROR, divergence_tags(2, 5))
    assert tagged.diverged and tagged.diverged_epoch == 2
    # The same error text without the tag: a crash (renaming the exception or rewording its
    # message can move no run between the two).
    untagged = _failed(NAN_ERROR, {})
    assert not untagged.diverged and untagged.diverged_epoch is None
    # A run tagged diverged whose exception was renamed (or had no error recorded at all).
    renamed = _failed("LossBecameNaN: whatever it says", divergence_tags(1, 3))
    assert renamed.diverged and renamed.diverged_epoch == 1
    assert _failed(None, divergence_tags(1, 3)).diverged
    # The rules follow: a diverged run's loss is unbounded and its outcome DIVERGED; a crash
    # is missing (nan), and one whose last epoch learned is judged as it is.
    assert val_loss_area(tagged) == math.inf and math.isnan(val_loss_area(untagged))
    assert run_outcome(tagged, 0.01) == RunOutcome.DIVERGED
    assert run_outcome(untagged, 0.01) == RunOutcome.LEARNED


def test_a_run_without_a_suggested_rate_is_known_by_its_tag_whatever_its_error_text_says() -> None:
    assert no_suggestion_tags() == {"xent.lr_find_no_suggestion": "true"}
    tagged = _failed(NO_RATE_ERROR, no_suggestion_tags())
    assert tagged.no_suggestion and not tagged.diverged and not tagged.finished
    # The same error text without the tag is a crash; the tag without the text still counts.
    assert not _failed(NO_RATE_ERROR, {}).no_suggestion
    assert _failed(None, no_suggestion_tags()).no_suggestion
    assert not _failed(NAN_ERROR, divergence_tags(2, 5)).no_suggestion
    assert not RunRecord("r", {}, 0, RunStatus.FAILED).no_suggestion  # the default
    for bad in ("false", "True", "1", ""):
        with pytest.raises(ValueError, match=f"xent.lr_find_no_suggestion='{bad}' is not 'true'"):
            no_suggestion_of({NO_SUGGESTION_TAG: bad})
