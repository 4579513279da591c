"""Reading runs back from the store: what reports and the ledger see of a study's children."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from xent_tf.track import reading, writing


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
