"""A run recorded buffered (``writing.BufferedRun``: created, then written in one transaction
at its end) reads back through MLflow's client exactly as the same run recorded by MLflow's
own calls (``MlflowRun``): tags, params, metric histories and latest values, dataset inputs,
status, times, artifacts; finished, failed in its block, killed, diverged, rateless, and on a
disk that fills (a tmpfs, root only)."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException

from xent_tf.config import Config
from xent_tf.track import disk_reserve, sql_metrics, sql_runs, writing
from xent_tf.track.artifacts import DatasetSplit
from xent_tf.track.sql_runs import PendingRecords
from xent_tf.train.lr_finder import NoSuggestionError
from xent_tf.train.replica_batch import record_outcome, train_batch
from xent_tf.train.runtime import configure_runtime
from xent_tf.train.training import NonFiniteLossError

TAGS = {"mlflow.user": "ada", "mlflow.source.name": "experiments/run.py", "seed": "3"}


def _value(value: float) -> object:
    return "nan" if math.isnan(value) else value


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(found)


def snapshot(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """What MLflow's client reads of a run, its own ids and times taken out (checked here:
    every metric's timestamp lies within the run's start and end)."""
    run = client.get_run(run_id)
    info = run.info
    assert info.start_time is not None and info.end_time is not None
    assert info.start_time <= info.end_time
    searched: list[Run] = client.search_runs(
        [info.experiment_id], filter_string=f"attributes.run_id = '{run_id}'"
    )
    assert [r.info.run_id for r in searched] == [run_id]
    histories = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run_id, key)
        assert all(info.start_time <= m.timestamp <= info.end_time for m in history), key
        histories[key] = sorted((m.step, _value(m.value)) for m in history)
    datasets = sorted(
        (
            d.dataset.name,
            d.dataset.digest,
            d.dataset.source_type,
            d.dataset.source,
            d.dataset.schema,
            d.dataset.profile,
            tuple(sorted((t.key, t.value) for t in d.tags)),
        )
        for d in run.inputs.dataset_inputs
    )
    return {
        "status": info.status,
        "lifecycle": info.lifecycle_stage,
        "name": info.run_name,
        "user": info.user_id,
        "experiment": info.experiment_id,
        "artifact_uri": info.artifact_uri.replace(run_id, "<run>"),
        "tags": run.data.tags,
        "params": run.data.params,
        "latest": {k: _value(v) for k, v in run.data.metrics.items()},
        "histories": histories,
        "datasets": datasets,
        "artifacts": _artifacts(client, run_id),
        "searched": (
            searched[0].data.tags,
            searched[0].data.params,
            {k: _value(v) for k, v in searched[0].data.metrics.items()},
            searched[0].info.status,
        ),
    }


def _splits() -> dict[str, DatasetSplit]:
    rng = np.random.default_rng(0)
    return {
        split: DatasetSplit(rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n))
        for split, n in (("train", 40), ("val", 10), ("test", 10))
    }


SPLITS = _splits()


def _record(recorder: writing.MlflowRun, fail: BaseException | None) -> None:
    """One run's records: every kind, NaN and +-inf among the metrics, a tag set twice."""
    recorder.log_text("a: 1\n", "config.yaml")
    recorder.log_params({"loss.name": "bce", "optimizer.learning_rate": "0.1", "long": "x" * 7000})
    recorder.set_tags({"xent.batch": "b#1", "stage": "training"})
    recorder.log_series({"lr_find/loss": [1.0, 0.5, math.nan, math.inf], "lr_find/lr": [1, 2, 3]})
    recorder.log_metrics({"val/loss": 0.9, "val/acc": 0.5}, step=0)
    for epoch in range(1, 4):
        recorder.log_metrics({"val/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10}, step=epoch)
    recorder.log_metrics({"odd": -math.inf}, step=3)
    recorder.log_params({"lr_find.used_lr": "0.05"})
    if fail is not None:
        recorder.set_tags({"xent.diverged_epoch": "3"})
        raise fail
    recorder.log_datasets(SPLITS, "reference", {"source": "MakeClassificationConfig"})
    recorder.set_tags({"stage": "done"})


def _run(uri: str, buffered: bool, fail: BaseException | None, parent: str) -> str:
    """Record ``_record`` in a run of the experiment "e" (buffered or not); its id."""
    opened: list[str] = []
    try:
        with writing.open_run(
            uri, "e", "the-run", parent_run_id=parent, tags=TAGS, buffered=buffered
        ) as recorder:
            assert isinstance(recorder, writing.BufferedRun) is buffered
            opened.append(recorder.run_id)
            _record(recorder, fail)
    except (ValueError, KeyboardInterrupt):
        pass
    return opened[0]


def _error_text(client: MlflowClient, run_id: str) -> str:
    path = client.download_artifacts(run_id, "error.txt")
    return Path(path).read_text().splitlines()[-1]


@pytest.mark.parametrize(
    ("fail", "status"),
    [(None, "FINISHED"), (ValueError("bad epoch"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_a_buffered_run_reads_back_as_the_same_run_recorded_call_by_call(
    tracking_uri: str, fail: BaseException | None, status: str
) -> None:
    parent, _ = writing.start_parent_run(tracking_uri, "e", "sweep", {})
    by_mlflow = _run(tracking_uri, False, fail, parent)
    buffered = _run(tracking_uri, True, fail, parent)
    client = MlflowClient(tracking_uri)
    ours, theirs = snapshot(client, buffered), snapshot(client, by_mlflow)
    assert ours == theirs
    assert ours["status"] == status and ours["lifecycle"] == "active"
    assert ours["name"] == "the-run" and ours["user"] == "ada"
    assert ours["tags"]["mlflow.parentRunId"] == parent
    assert ours["tags"]["mlflow.runName"] == "the-run"
    assert ours["tags"]["mlflow.source.name"] == "experiments/run.py"
    assert ours["params"]["long"] == "x" * 6000  # MLflow's cut
    assert ours["histories"]["val/loss"] == [(0, 0.9), (1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    assert ours["histories"]["lr_find/loss"] == [
        (0, 1.0),
        (1, 0.5),
        (2, "nan"),
        (3, 1.7976931348623157e308),  # +inf, stored as MLflow stores it
    ]
    assert ours["latest"]["odd"] == -1.7976931348623157e308 and ours["latest"]["val/acc"] == 0.8
    if fail is None:
        assert ours["tags"]["stage"] == "done" and "error" not in ours["tags"]
        assert [d[0] for d in ours["datasets"]] == ["reference"] * 3
        assert {d[6] for d in ours["datasets"]} == {
            (("mlflow.data.context", split),) for split in ("train", "val", "test")
        }
        assert ours["artifacts"] == ["config.yaml"]
    else:
        # Failed or killed: its partial metrics, params and tags kept, and why it stopped.
        assert ours["tags"]["stage"] == "training" and ours["datasets"] == []
        assert ours["tags"]["error"] == f"{type(fail).__name__}: {fail}"
        assert ours["artifacts"] == ["config.yaml", "error.txt"]
        assert _error_text(client, buffered) == _error_text(client, by_mlflow)


def test_buffered_records_are_checked_when_logged_as_mlflow_checks_them(
    tracking_uri: str,
) -> None:
    client = MlflowClient(tracking_uri)
    with (
        pytest.raises(MlflowException, match="Changing param values is not allowed"),
        writing.open_run(tracking_uri, "e", "r", buffered=True) as recorder,
    ):
        recorder.log_params({"seed": "1", "a": "x"})
        recorder.log_params({"seed": "2"})
    run = client.search_runs([recorder.experiment_id])[0]
    # Failed where the bad value was logged, with what was logged before it.
    assert run.info.status == "FAILED" and run.data.params == {"seed": "1", "a": "x"}
    assert "Changing param values" in run.data.tags["error"]
    with (
        pytest.raises(MlflowException, match=r"metrics\[0\].name.*Names may only contain"),
        writing.open_run(tracking_uri, "e", "r", buffered=True) as recorder,
    ):
        recorder.log_metrics({"bad\tname": 1.0}, step=0)
    assert client.get_run(recorder.run_id).info.status == "FAILED"
    with pytest.raises(MlflowException, match="Invalid value"):
        PendingRecords().add_metrics([Metric("x", "high", 0, 0)])  # type: ignore[arg-type]


def test_a_buffered_run_deleted_before_its_end_is_refused_as_mlflow_refuses_it(
    tracking_uri: str,
) -> None:
    client = MlflowClient(tracking_uri)
    with writing.open_run(tracking_uri, "e", "r", buffered=True) as recorder:
        recorder.log_metrics({"x": 1.0}, step=0)
        store = sql_metrics.fast_store(client)
        pending = PendingRecords(metrics=list(recorder.pending.metrics))
        client.delete_run(recorder.run_id)
        with pytest.raises(MlflowException, match="must be in the 'active' state"):
            pending.write(store, recorder.run_id, "FINISHED", 1)
        assert pending.metrics  # kept for another try
        with pytest.raises(MlflowException, match="not found"):
            pending.write(store, "0" * 32, "FINISHED", 1)
        client.restore_run(recorder.run_id)
    assert client.get_run(recorder.run_id).info.status == "FINISHED"
    assert client.get_run(recorder.run_id).data.metrics == {"x": 1.0}


def test_a_server_or_an_unbuffered_run_keeps_mlflows_calls(tracking_uri: str) -> None:
    with writing.open_run(tracking_uri, "e", "r") as recorder:
        assert type(recorder) is writing.MlflowRun
    assert sql_runs.buffered_store(MlflowClient("http://127.0.0.1:9")) is None  # a server
    assert sql_runs.buffered_store(MlflowClient(tracking_uri)) is not None


# ------------------------------------------------------------------ a replica batch's runs


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A trained batch of three replicas with a range test: one finishes, one diverges, one
    gets no rate from its range test (the configs of ``test_replicas``'s tagging test)."""
    from tests.conftest import TINY, compose_config
    from xent_tf.config import to_config

    uri = f"sqlite:///{tmp_path_factory.mktemp('batch') / 'mlflow.db'}"
    store = ("tracking=sqlite", f"tracking.uri={uri}", "tracking.plots=false")
    no_rate = ("lr_find=on", "lr_find.min_lr=1e3", "lr_find.max_lr=1e8", "lr_find.num_steps=20")
    given = (*no_rate, "lr_find.use=given")

    def make(*overrides: str) -> Config:
        return to_config(compose_config([*TINY, *overrides, *store]))

    configs = [
        make("optimizer=sgd", "optimizer.learning_rate=0.1", *given),
        make("optimizer=sgd", "optimizer.learning_rate=1e30", "seed=1", *given),
        make("optimizer=sgd", "seed=2", *no_rate, "lr_find.use=steepest"),
    ]
    configure_runtime("cpu", 1, 0)
    yield uri, train_batch(configs)


@pytest.mark.parametrize("logged_model", [False, True])
def test_each_replicas_run_buffered_is_the_run_recorded_call_by_call(
    batch: Any, tmp_path: Path, logged_model: bool
) -> None:
    uri, trained = batch
    for outcome in trained.outcomes:
        tracking = dataclasses.replace(outcome.config.tracking, logged_model=logged_model)
        outcome.config = dataclasses.replace(outcome.config, tracking=tracking)
    parent, _ = writing.start_parent_run(uri, "reference", f"sweep {logged_model}", {})
    ids: dict[bool, list[str]] = {}
    for buffered in (False, True):
        for k, expected in enumerate((None, NonFiniteLossError, NoSuggestionError)):
            out = tmp_path / f"{buffered}-{k}"
            out.mkdir()

            def record(k: int = k, out: Path = out, buffered: bool = buffered) -> object:
                return record_outcome(
                    trained, k, out, [f"seed={k}"], parent, f"r{k}", None, "b#1", buffered=buffered
                )

            if expected is None:
                record()
            else:
                with pytest.raises(expected):
                    record()
        client = MlflowClient(uri)
        children = client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
            order_by=["attributes.start_time ASC"],
        )
        ids[buffered] = [r.info.run_id for r in children][-3:]
    client = MlflowClient(uri)
    for k, (theirs, ours) in enumerate(zip(ids[False], ids[True], strict=True)):
        mine, reference = snapshot(client, ours), snapshot(client, theirs)
        assert mine == reference, k
        assert mine["status"] == ("FINISHED", "FAILED", "FAILED")[k]
    finished = snapshot(client, ids[True][0])
    assert len(finished["datasets"]) == 3 and "test/acc" in finished["latest"]
    assert "lr_find/loss" in finished["histories"]
    assert finished["artifacts"] == sorted(
        ["config.yaml", "series/train_batch_loss.npy"]
        + ([] if logged_model else ["model/model.keras"])
    )
    diverged = snapshot(client, ids[True][1])
    assert diverged["tags"]["xent.diverged_epoch"] == "1"
    assert diverged["tags"]["error"].startswith("NonFiniteLossError")
    assert "val/loss" in diverged["histories"] and diverged["datasets"] == []
    if logged_model:
        model = client.search_logged_models([finished["experiment"]])
        assert {m.source_run_id for m in model} >= {ids[True][0], ids[False][0]}


# ------------------------------------------------------------------ a disk that fills


def _mount(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def _fill(path: Path) -> None:
    """Write ``path`` until its disk is full."""
    with path.open("wb") as ballast:
        try:
            while True:
                ballast.write(b"\0" * 65536)
                ballast.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


@pytest.mark.skipif(os.geteuid() != 0, reason="fills a tmpfs of its own, which needs root")
@pytest.mark.parametrize("values", [500, 60_000])
def test_a_buffered_run_whose_disk_fills_ends_failed_saying_so(tmp_path: Path, values: int) -> None:
    """The disk fills before the run's records are written: the reserve freed, the run ends
    FAILED with them (500 values fit in the reserve) or, when they do not fit (60,000), with
    its params and an error tag saying what was not written; never RUNNING."""
    template = tmp_path / "template.db"
    writing.start_parent_run(f"sqlite:///{template}", "e", "sweep", {})
    disk = tmp_path / "disk"
    assert _mount(disk, 8 * 1024 + disk_reserve.RESERVE_BYTES // 1024)
    try:
        # A copy through SQLite's backup: no write-ahead log yet, whose pages, once there,
        # would take the run's records without the disk growing.
        source, copy = sqlite3.connect(template), sqlite3.connect(disk / "mlflow.db")
        source.backup(copy)
        copy.close()
        source.close()
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        with (
            pytest.raises(MlflowException, match="disk is full"),
            writing.open_run(uri, "e", "r", buffered=True) as recorder,
        ):
            recorder.log_params({"seed": "4"})
            recorder.log_series({"train/batch_loss": np.linspace(1, 0, values)})
            _fill(disk / "ballast")
        (disk / "ballast").unlink()
        run = MlflowClient(uri).get_run(recorder.run_id)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert run.info.status == "FAILED" and run.data.params == {"seed": "4"}
    assert "database or disk is full" in run.data.tags["error"]
    if values == 500:
        assert run.data.metrics == {"train/batch_loss": 0.0}
    else:
        assert run.data.metrics == {}
        assert (
            f"{values} metric values and 0 dataset inputs were not written"
            in (run.data.tags["error"])
        )
