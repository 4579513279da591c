"""Resuming a sweep: config-hash matching, study definitions, and sweeps that skip what FINISHED."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.test_entrypoint import run_cli
from xent_tf.config import Config
from xent_tf.launch.callback import ResumeRefusedError, _resume_mode
from xent_tf.track.resume import (
    CONFIG_HASH_TAG,
    FinishedJob,
    definition_differences,
    read_finished,
    study_definition,
    training_config_hash,
    write_finished,
)


def test_the_config_hash_ignores_where_a_run_is_recorded_but_not_what_it_trains(
    make_config: Callable[..., Config],
) -> None:
    base = make_config()
    assert len(training_config_hash(base)) == 64
    same_training = make_config(
        "tracking.uri=sqlite:////elsewhere/x.db",
        "experiment_name=other",
        "trainer.verbose=false",
        "tracking.plots=false",
    )
    assert training_config_hash(same_training) == training_config_hash(base)
    for changed in ("seed=1", "optimizer.learning_rate=0.5", "trainer.epochs=3", "optimizer=sgd"):
        assert training_config_hash(make_config(changed)) != training_config_hash(base), changed


def test_finished_jobs_round_trip_through_the_sweep_directory(tmp_path: Path) -> None:
    assert read_finished(tmp_path) == {}
    jobs = {"a" * 64: FinishedJob("run1", 0.25), "b" * 64: FinishedJob("run2", math.inf)}
    write_finished(tmp_path, jobs)
    assert read_finished(tmp_path) == jobs


def test_a_study_definition_leaves_out_seeds_and_recording_and_lists_each_difference() -> None:
    flat = {"seed": "0", "optimizer.learning_rate": "0.1", "tracking.uri": "sqlite:///a.db"}
    overrides = ["seed=range(8)", "+variant/x=a,b", "hydra/launcher=joblib"]
    definition = study_definition(flat, overrides)
    assert definition == {"optimizer.learning_rate": "0.1", "variant/x": "a,b"}
    # A nested config is flattened as its runs' params are.
    assert study_definition({"optimizer": {"learning_rate": 0.1}}, []) == {
        "optimizer.learning_rate": "0.1"
    }
    other = study_definition(
        {**flat, "optimizer.learning_rate": "0.5", "seed": "3"},
        ["seed=range(10)", "trainer.epochs=5"],
    )
    assert definition_differences(definition, other) == [
        "optimizer.learning_rate: 0.1 -> 0.5",
        "trainer.epochs: (unset) -> 5",
        "variant/x: a,b -> (unset)",
    ]
    assert definition_differences(definition, dict(definition)) == []


def _children(uri: str) -> list:  # type: ignore[type-arg]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("reference")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


SWEEP = ["-m", "+debug=tiny", "trainer.verbose=false", "tracking.log_model=false"]


def test_a_resumed_sweep_runs_only_what_did_not_finish(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    # 1. Replica launcher, seeds 0 and 1; then seed 1's run is marked FAILED (as a crash would).
    first = run_cli(*SWEEP, "seed=0,1", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = _children(uri)
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    by_seed = {r.data.tags["seed"]: r for r in runs}
    assert by_seed["0"].data.tags[CONFIG_HASH_TAG] != by_seed["1"].data.tags[CONFIG_HASH_TAG]
    MlflowClient(uri).set_terminated(by_seed["1"].info.run_id, status="FAILED")

    # 2. Re-run into the same directory, per-job launcher, one more seed: seed 0 is skipped,
    # the FAILED seed 1 and the new seed 2 train.
    second = run_cli(
        *SWEEP, "seed=0,1,2", "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    out = second.stdout + second.stderr
    assert "1 configs that already FINISHED there are skipped" in out
    job_0 = (sweep_dir / "0" / "run.log").read_text()
    assert f"skipped: run {by_seed['0'].info.run_id} FINISHED with this config already" in job_0
    runs = _children(uri)
    assert [(r.data.tags["seed"], r.info.status) for r in runs] == [
        ("0", "FINISHED"),
        ("1", "FAILED"),
        ("1", "FINISHED"),
        ("2", "FINISHED"),
    ]

    # 3. +resume=true from a new sweep directory (replica launcher): every job is skipped.
    third = run_cli(*SWEEP, "seed=0,1,2", "+resume=true", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    out = third.stdout + third.stderr
    assert "3 jobs skipped: their config already FINISHED under the parent run" in out
    assert len(_children(uri)) == 4
    parent = MlflowClient(uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"

    # 4. +resume=true with another study definition is refused, naming the key; nothing runs.
    fourth = run_cli(*SWEEP, "seed=0,1,2", "+resume=true", "trainer.epochs=3", cwd=tmp_path)
    assert fourth.returncode == 1
    out = fourth.stdout + fourth.stderr
    assert "+resume=true refused: this sweep is not the study of parent run" in out
    assert "trainer.epochs: 2 -> 3" in out
    assert len(_children(uri)) == 4

    # 5. +resume=matching (make reproduce) with that other definition: no sweep of it yet, so a
    # new one starts, and is now the experiment's latest.
    fifth = run_cli(*SWEEP, "seed=0", "+resume=matching", "trainer.epochs=3", cwd=tmp_path)
    assert fifth.returncode == 0, fifth.stderr
    out = fifth.stdout + fifth.stderr
    assert "+resume=matching: none of the 1 sweeps of experiment 'reference' is this study" in out
    assert len(_children(uri)) == 5
    # 6. +resume=matching with the first definition passes the newer sweep over and continues
    # the first one: nothing is trained.
    sixth = run_cli(*SWEEP, "seed=0,1,2", "+resume=matching", cwd=tmp_path)
    assert sixth.returncode == 0, sixth.stderr
    out = sixth.stdout + sixth.stderr
    assert f"its jobs join parent run {parent.info.run_id} again" in out
    assert "3 jobs skipped: their config already FINISHED under the parent run" in out
    assert len(_children(uri)) == 5
    # 7. Another study into the first sweep's directory is refused, naming the key: its runs
    # would join the first study's parent (and report). Nothing runs.
    seventh = run_cli(
        *SWEEP, "seed=0", "trainer.epochs=3", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )
    assert seventh.returncode == 1
    out = seventh.stdout + seventh.stderr
    assert f"sweep directory {sweep_dir} belongs to another study (parent run " in out
    assert "trainer.epochs: 2 -> 3" in out
    assert len(_children(uri)) == 5


def test_resume_modes_are_true_matching_or_off_and_nothing_else() -> None:
    assert [_resume_mode(v) for v in (None, False, True, "matching")] == [
        False,
        False,
        True,
        "matching",
    ]
    with pytest.raises(ResumeRefusedError, match=r"\+resume='yes' is not a resume mode: use"):
        _resume_mode("yes")


# Found by the fuzz campaign (tests/fuzz, issue 29): a truncated file raised JSONDecodeError
# ("Expecting value: line 1 column 1") without saying which file.
@pytest.mark.parametrize("text", ['{"a": {"run_id": "r", "val', "[1, 2]", ""])
def test_a_damaged_finished_jobs_file_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    (tmp_path / "finished_jobs.json").write_text(text)
    with pytest.raises(ValueError, match=r"finished_jobs.json is damaged \("):
        read_finished(tmp_path)


@pytest.mark.parametrize("text", ['{"run_id": "abc", "experim', '{"run_id": "abc"}', "null"])
def test_a_damaged_parent_file_is_refused_naming_it(tmp_path: Path, text: str) -> None:
    from xent_tf.launch.callback import ResumeRefusedError, parent_for_sweep

    (tmp_path / "mlflow_parent.json").write_text(text)
    with pytest.raises(ResumeRefusedError, match=r"mlflow_parent.json is damaged \(.*new hydra"):
        parent_for_sweep(tmp_path)
