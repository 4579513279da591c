"""Reading runs back from the store: what reports and the ledger see of a study's children."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Run

from xent_tf.track import reading, sql_reads, writing
from xent_tf.track.run_record import RunRecord, RunStatus


def test_series_read_where_a_local_store_keeps_them_equal_the_downloaded_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    parent_id, experiment_id = writing.start_parent_run(uri, "study", "parent", {})
    losses = np.array([0.7, 0.6931472, 1e-8, 3.25], dtype=np.float32)
    with writing.open_run(uri, "study", "child", parent_id, {"seed": "3"}) as run:
        run.log_metrics({"val/loss": 0.5}, step=0)
        writing.log_series_artifact(run, "train/batch_loss", losses, tmp_path / "job")
    parent = reading.StudyRun(parent_id, experiment_id, "study", "", "RUNNING", 0)

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError("a local store's series are read in place, not downloaded")

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "download_artifacts", no_download)
        (record,) = reading.fetch_children(uri, parent, ("val/loss", "train/batch_loss"))

    # float32 values come back exactly, as Python floats, in step order.
    assert record.history["train/batch_loss"] == [float(v) for v in losses]
    assert record.history["val/loss"] == [0.5]
    assert record.seed == 3
    # The same values as MLflow's own list-and-download (the path a remote store takes).
    downloaded = reading._series_from_artifacts(
        MlflowClient(uri), record.run_id, ["train/batch_loss", "train/absent"]
    )
    assert downloaded == {"train/batch_loss": record.history["train/batch_loss"]}


def test_histories_read_in_bulk_equal_each_runs_own_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    parent_id, experiment_id = writing.start_parent_run(uri, "study", "parent", {})
    for seed in range(3):
        with writing.open_run(uri, "study", f"child {seed}", parent_id, {"seed": str(seed)}) as run:
            # Steps logged out of order, and a metric only the first run has.
            for step in (2, 0, 1):
                run.log_metrics({"val/loss": seed + step / 10, "train/loss": -step}, step=step)
            if seed == 0:
                run.log_metrics({"lr": 0.5}, step=0)
    parent = reading.StudyRun(parent_id, experiment_id, "study", "", "RUNNING", 0)
    wanted = ("val/loss", "train/loss", "lr", "never/logged")

    bulk = reading.fetch_children(uri, parent, wanted)
    with monkeypatch.context() as patch:  # the run-by-run path a tracking server takes
        patch.setattr(sql_reads, "read_store", lambda client: None)
        patch.setattr(reading, "_bulk_histories", lambda *args: None)
        one_by_one = reading.fetch_children(uri, parent, wanted)

    by_seed = {r.seed: r.history for r in bulk}
    assert by_seed[2] == {"val/loss": [2.0, 2.1, 2.2], "train/loss": [0.0, -1.0, -2.0]}
    assert by_seed[0]["lr"] == [0.5] and "lr" not in by_seed[1]
    assert {r.run_id: r.history for r in bulk} == {r.run_id: r.history for r in one_by_one}


def test_a_read_handed_over_is_what_reading_the_store_gives_and_is_used_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hand_over_reads`` (the reports' reads given to reproduce's ledger): a read covering the
    metrics asked for gives, with only their histories, what the store gives; it is used once,
    only for its store and parent, and not when it lacks a metric asked for."""
    monkeypatch.setattr(reading, "_handed_reads", {})
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    parent_id, experiment_id = writing.start_parent_run(uri, "study", "parent", {})
    for seed in range(2):
        with writing.open_run(uri, "study", f"c{seed}", parent_id, {"seed": str(seed)}) as run:
            for step in range(3):
                run.log_metrics({"val/loss": seed + step, "val/acc": step / 4}, step=step)
    parent = reading.StudyRun(parent_id, experiment_id, "study", "", "FINISHED", 0)
    report_metrics = ("val/loss", "val/acc")
    read = reading.ChildrenRead(
        uri, parent_id, report_metrics, tuple(reading.fetch_children(uri, parent, report_metrics))
    )
    from_store = reading.fetch_children(uri, parent, ("val/loss",))
    assert [r.history for r in from_store] != [r.history for r in read.records]

    reading.hand_over_reads([read])
    assert reading.fetch_children(uri, parent, ("val/loss",)) == from_store

    # Used, not the store: a constructed read (one record, another seed) is what comes back...
    forged = reading.ChildrenRead(
        uri, parent_id, report_metrics, (dataclasses.replace(read.records[0], seed=99),)
    )
    reading.hand_over_reads([forged])
    (record,) = reading.fetch_children(uri, parent, ("val/acc",))
    assert record.seed == 99 and set(record.history) == {"val/acc"}
    # ...once; and never for another store, nor when it lacks a metric asked for.
    assert len(reading.fetch_children(uri, parent, ("val/acc",))) == 2
    reading.hand_over_reads([dataclasses.replace(forged, tracking_uri=uri + "-other")])
    assert len(reading.fetch_children(uri, parent, ("val/acc",))) == 2
    reading.hand_over_reads([forged])
    assert len(reading.fetch_children(uri, parent, ("val/acc", "train/loss"))) == 2


def test_a_long_run_description_is_cut_at_a_line_end_and_says_where_the_rest_is() -> None:
    from xent_tf.track.writing import fit_note

    rows = "".join(f"| row {i} | {'x' * 50} |\n" for i in range(200))
    assert fit_note("short\n") == "short\n"
    cut = fit_note(rows)
    assert len(cut) <= 8000 < len(rows)
    kept = cut.split("\n\n*(Cut here")[0]
    assert rows.startswith(kept + "\n") and kept.endswith("|")  # whole rows only
    assert "MLflow's 8,000-character limit" in cut and "report.html" in cut


def test_a_resumed_sweep_skips_finished_and_diverged_jobs_and_reruns_crashed_ones(
    tmp_path: Path,
) -> None:
    """A diverged run, or one whose range test gave no rate, measured its seeded config: run
    again it would only diverge again. A crash, a kill, a run left RUNNING measured nothing."""
    from mlflow import MlflowClient

    from xent_tf.track.recovery import finished_children
    from xent_tf.track.resume import CONFIG_HASH_TAG
    from xent_tf.track.run_record import divergence_tags, no_suggestion_tags

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("resume")
    parent = client.create_run(experiment).info.run_id
    ended = {
        "finished": ("FINISHED", {}),
        "diverged": ("FAILED", divergence_tags(3, 7)),
        "no_rate": ("FAILED", no_suggestion_tags()),
        "crashed": ("FAILED", {}),
        "damaged_tag": ("FAILED", {"xent.diverged_epoch": "soon"}),
        "killed": ("KILLED", divergence_tags(1, 1)),
        "running": ("RUNNING", {}),
    }
    ids = {}
    for config, (status, tags) in ended.items():
        run = client.create_run(
            experiment,
            tags={"mlflow.parentRunId": parent, CONFIG_HASH_TAG: config, **tags},
        )
        ids[config] = run.info.run_id
        client.log_metric(run.info.run_id, "val/loss", 0.5)
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
    skipped = finished_children(uri, parent, experiment)
    assert {config: job.run_id for config, job in skipped.items()} == {
        "finished": ids["finished"],
        "diverged": ids["diverged"],
        "no_rate": ids["no_rate"],
    }
    assert skipped["finished"].val_loss == 0.5


def _comparable(value: object) -> object:
    """``value`` with NaN spelled "nan" (NaN != NaN would make equal records differ)."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


def _fields(record: RunRecord) -> dict[str, object]:
    return {f.name: _comparable(getattr(record, f.name)) for f in dataclasses.fields(record)}


def test_children_read_by_sql_equal_what_mlflows_calls_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compare_read_paths(f"sqlite:///{tmp_path / 'store.db'}", tmp_path, monkeypatch)


def compare_read_paths(uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local database store's children read with a few SQL statements
    (``sql_reads``) are the records MLflow's ``search_runs`` and bulk histories give, in the
    same order: buffered and unbuffered runs, a FAILED run with NaN and inf values, a range
    test's series, points at one step and time told apart by value; deleted runs, another
    parent's and another experiment's runs left out (also run on PostgreSQL:
    ``tests/integration/test_buffered_runs.py``)."""
    client = MlflowClient(uri)
    client.create_experiment("study", artifact_location=(tmp_path / "artifacts").as_uri())
    parent_id, experiment_id = writing.start_parent_run(uri, "study", "parent", {})
    other_parent, _ = writing.start_parent_run(uri, "study", "other parent", {})
    for buffered in (True, False):
        with writing.open_run(
            uri, "study", f"b{buffered}", parent_id, {"seed": "1"}, buffered=buffered
        ) as run:
            run.log_params({"lr": "0.1", "model": "mlp"})
            for step in (2, 0, 1):
                run.log_metrics({"val/loss": 1 / (step + 1), "val/acc": step / 4}, step=step)
            run.log_series({"lr_find/loss": [0.9, 0.7, 0.8, 5.0]})
        with (
            pytest.raises(RuntimeError),
            writing.open_run(
                uri, "study", f"f{buffered}", parent_id, {"seed": "2"}, buffered=buffered
            ) as run,
        ):
            run.log_metrics({"val/loss": 0.5}, step=0)
            run.log_metrics({"val/loss": math.nan, "val/acc": math.inf}, step=1)
            raise RuntimeError("diverged")
    with writing.open_run(uri, "study", "series", parent_id, {"seed": "3"}) as run:
        run.log_metrics({"val/loss": 0.25}, step=0)
        writing.log_series_artifact(run, "train/batch_loss", np.array([0.5, 0.25]), tmp_path)
    # Two runs started at the same time (ordered by id), one with points at one step and time.
    tied = [
        client.create_run(experiment_id, start_time=5, tags={"mlflow.parentRunId": parent_id})
        for _ in range(2)
    ]
    client.log_batch(
        tied[0].info.run_id,
        [Metric("val/loss", v, 7, 0) for v in (0.3, -1.0, 0.2)] + [Metric("val/loss", 0.1, 6, 1)],
    )
    deleted = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_id})
    client.delete_run(deleted.info.run_id)
    client.create_run(experiment_id, tags={"mlflow.parentRunId": other_parent})
    elsewhere = client.create_experiment(
        "elsewhere", artifact_location=(tmp_path / "elsewhere").as_uri()
    )
    client.create_run(elsewhere, tags={"mlflow.parentRunId": parent_id})
    parent = reading.StudyRun(parent_id, experiment_id, "study", "", "RUNNING", 0)
    wanted = ("val/loss", "val/acc", "lr_find/loss", "train/batch_loss", "never/logged")

    sql_read = sql_reads.child_runs
    calls: list[str] = []

    def spied_child_runs(store: object, experiment: str, parent_run: str) -> list[Run]:
        calls.append(parent_run)
        return sql_read(store, experiment, parent_run)

    monkeypatch.setattr(sql_reads, "child_runs", spied_child_runs)
    by_sql = reading.fetch_children(uri, parent, wanted)
    assert calls == [parent_id]
    with monkeypatch.context() as patch:  # the path a tracking server takes
        patch.setattr(sql_reads, "read_store", lambda client: None)
        by_mlflow = reading.fetch_children(uri, parent, wanted)
    assert calls == [parent_id]

    assert [_fields(r) for r in by_sql] == [_fields(r) for r in by_mlflow]
    # What they hold: 7 children (not the deleted one, nor the other parent's or experiment's).
    assert len(by_sql) == 7 and deleted.info.run_id not in {r.run_id for r in by_sql}
    assert [r.run_id for r in by_sql[-2:]] == sorted(r.info.run_id for r in tied)
    assert [r.start_time for r in by_sql] == sorted((r.start_time for r in by_sql), reverse=True)
    for buffered in (True, False):
        finished = next(r for r in by_sql if r.tags["mlflow.runName"] == f"b{buffered}")
        assert finished.history["val/loss"] == [1.0, 0.5, 1 / 3]
        assert finished.history["lr_find/loss"] == [0.9, 0.7, 0.8, 5.0]
        assert finished.params == {"lr": "0.1", "model": "mlp"}
        failed = next(r for r in by_sql if r.tags["mlflow.runName"] == f"f{buffered}")
        assert failed.status == RunStatus.FAILED and failed.error == "RuntimeError: diverged"
        assert failed.history["val/loss"][0] == 0.5 and math.isnan(failed.history["val/loss"][1])
        assert failed.history["val/acc"] == [sys.float_info.max]
        assert (
            math.isnan(failed.final["val/loss"]) and failed.final["val/acc"] == sys.float_info.max
        )
    series = next(r for r in by_sql if r.tags["mlflow.runName"] == "series")
    assert series.history == {"val/loss": [0.25], "train/batch_loss": [0.5, 0.25]}
    tied_record = next(r for r in by_sql if r.run_id == tied[0].info.run_id)
    assert tied_record.history == {"val/loss": [-1.0, 0.2, 0.3, 0.1]}
    assert tied_record.final == {"val/loss": 0.1}

    # The runs themselves, as MLflow's search_runs gives them (info, params, tags, metrics).
    store = sql_reads.read_store(client)
    searched = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert [_run_fields(r) for r in sql_read(store, experiment_id, parent_id)] == [
        _run_fields(r) for r in searched
    ]


def _run_fields(run: Run) -> dict[str, object]:
    info = run.info
    return {
        "info": [
            info.run_id,
            info.run_name,
            info.experiment_id,
            info.user_id,
            info.status,
            info.start_time,
            info.end_time,
            info.lifecycle_stage,
            info.artifact_uri,
        ],
        "params": run.data.params,
        "tags": run.data.tags,
        "metrics": _comparable(run.data.metrics),
    }
