"""The spool: what a run cannot send while the server is away is kept, replayed exactly once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from xent_tf.track import artifacts, connection, recovery, spool, sql_metrics, writing
from xent_tf.track.spool import REPLAYED_FILE, SPOOL_FILE, SpoolError, read_spool


class Outage:
    """A store that stops answering while ``down``: its client's writes raise, probes fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, client: MlflowClient) -> None:
        self.down = False
        self.probes = 0
        self.up_after_probes: int | None = None
        monkeypatch.setattr(connection, "server_answers", self.answers)
        # The store stands in for a server: records go through the client, as to a server.
        monkeypatch.setattr(sql_metrics, "fast_store", lambda client: None)
        for name in (
            "log_batch",
            "log_text",
            "log_artifact",
            "set_terminated",
            "log_inputs",
            "create_logged_model",
            "log_model_artifacts",
            "log_outputs",
            "finalize_logged_model",
        ):
            monkeypatch.setattr(client, name, self._failing(getattr(client, name)))

    def answers(self, uri: str, timeout_seconds: float = 0.0) -> bool:
        self.probes += 1
        if self.up_after_probes is not None and self.probes >= self.up_after_probes:
            self.down = False
        return not self.down

    def _failing(self, call: Any) -> Any:
        def maybe(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise ConnectionError("connection refused")
            return call(*args, **kwargs)

        return maybe


def _open(uri: str, spool_dir: Path, parent: str = "parent-1") -> writing.MlflowRun:
    client = MlflowClient(uri)
    experiment_id = connection.get_or_create_experiment(client, "spooled")
    run = client.create_run(experiment_id, run_name="job")
    recorder = writing.MlflowRun(client, run.info.run_id, experiment_id, uri)
    recorder.spool = spool.SpoolWriter(
        spool_dir, spool.SpoolHeader(run.info.run_id, experiment_id, uri, parent)
    )
    return recorder


def _record_a_run_through_an_outage(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[writing.MlflowRun, Outage]:
    """Params and epoch 1 delivered; then the server goes away: epochs 2-4, a file, a text and
    the FINISHED status are spooled (the server stays away past the run's wait)."""
    recorder = _open(uri, tmp_path / "job")
    outage = Outage(monkeypatch, recorder.client)
    recorder.log_params({"lr": "0.1"})
    recorder.log_metrics({"val/loss": 1.0, "val/acc": 0.5}, step=1)
    recorder.flush()
    outage.down = True
    for epoch in (2, 3, 4):
        recorder.log_metrics({"val/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10}, step=epoch)
    recorder.flush()
    log = tmp_path / "run.log"
    log.write_text("epoch lines\n")
    recorder.log_file(log, "logs")
    log.write_text("changed after the upload was spooled\n")
    recorder.log_text("a: 1\n", "config.yaml")
    monkeypatch.setenv("XENT_SPOOL_WAIT_SECONDS", "0")
    with pytest.raises(connection.TrackingUnavailableError, match="did not come back within 0 s"):
        recorder.end("FINISHED")
    return recorder, outage


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_a_replayed_spool_lands_every_point_exactly_once_and_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder, outage = _record_a_run_through_an_outage(uri, tmp_path, monkeypatch)
    spool = tmp_path / "job" / SPOOL_FILE
    header, records = read_spool(spool, "parent-1")
    assert header.run_id == recorder.run_id
    assert [r.kind for r in records] == ["metrics", "artifact", "text", "status"]
    assert len(records[0].data["metrics"]) == 6  # 3 epochs x 2 metrics
    client = MlflowClient(uri)
    assert client.get_run(recorder.run_id).info.status == "RUNNING"
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 1.0)]

    outage.down = False
    first = recovery.replay_spool(spool, "parent-1")
    assert (first.records, first.points_sent, first.points_present) == (4, 6, 0)
    run = client.get_run(recorder.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"}
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]
    assert len(_history(uri, recorder.run_id, "val/acc")) == 4
    artifacts = {a.path for a in client.list_artifacts(recorder.run_id)}
    assert {"config.yaml", "logs"} <= artifacts
    kept = Path(client.download_artifacts(recorder.run_id, "logs/run.log", str(tmp_path / "dl")))
    assert kept.read_text() == "epoch lines\n"  # the file as it was when it was logged
    assert not spool.exists() and (tmp_path / "job" / REPLAYED_FILE).exists()
    assert recovery.replay_spools(tmp_path / "job", "parent-1") == []  # nothing left to send

    # The same spool replayed again (an interrupted replay, run twice): no point doubles.
    shutil.copy(tmp_path / "job" / REPLAYED_FILE, spool)
    again = recovery.replay_spool(spool, "parent-1")
    assert (again.points_sent, again.points_present) == (0, 6)
    assert len(_history(uri, recorder.run_id, "val/loss")) == 4


def test_a_run_whose_server_returns_within_its_wait_replays_its_own_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = _open(uri, tmp_path / "job")
    outage = Outage(monkeypatch, recorder.client)
    outage.down = True
    recorder.log_metrics({"val/loss": 0.5}, step=1)
    recorder.flush()
    outage.up_after_probes = outage.probes + 2  # back at the run's second probe while it waits
    monkeypatch.setenv("XENT_SPOOL_WAIT_SECONDS", "30")
    recorder.end("FINISHED")
    assert MlflowClient(uri).get_run(recorder.run_id).info.status == "FINISHED"
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 0.5)]
    assert (tmp_path / "job" / REPLAYED_FILE).exists()


def test_a_spool_of_another_sweep_or_a_damaged_one_is_refused_and_nothing_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder, outage = _record_a_run_through_an_outage(uri, tmp_path, monkeypatch)
    outage.down = False
    spool = tmp_path / "job" / SPOOL_FILE
    with pytest.raises(SpoolError) as other:
        recovery.replay_spools(tmp_path, "parent-2")
    assert str(other.value) == (
        f"spool {spool} belongs to another sweep: its run {recorder.run_id} has parent run "
        "parent-1, this sweep's parent is parent-2"
    )
    original = spool.read_text().splitlines()
    lines = list(original)
    lines[1] = lines[1].replace("0.25", "0.26")  # one value changed on disk
    spool.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpoolError, match=f"spool {spool} is damaged at line 2: checksum mismatch"):
        recovery.replay_spools(tmp_path, "parent-1")
    spool.write_text("\n".join(original[:2]) + "\n{truncated")
    with pytest.raises(SpoolError, match=f"spool {spool} is damaged at line 3"):
        recovery.replay_spools(tmp_path, "parent-1")
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 1.0)]
    assert MlflowClient(uri).get_run(recorder.run_id).info.status == "RUNNING"
    assert spool.exists()


def _splits() -> dict[str, artifacts.DatasetSplit]:
    rng = np.random.default_rng(0)
    return {
        split: artifacts.DatasetSplit(
            rng.normal(size=(rows, 4)).astype(np.float32), rng.integers(0, 2, rows)
        )
        for split, rows in (("train", 12), ("val", 6), ("test", 5))
    }


def _inputs(uri: str, run_id: str) -> list[tuple[str, str]]:
    """(context, digest) of each dataset input of the run, sorted."""
    run = MlflowClient(uri).get_run(run_id)
    assert run.inputs is not None
    return sorted(
        ({t.key: t.value for t in i.tags}["mlflow.data.context"], i.dataset.digest)
        for i in run.inputs.dataset_inputs
    )


def _models(uri: str, run: writing.MlflowRun) -> list[Any]:
    return list(
        MlflowClient(uri).search_logged_models(
            [run.experiment_id], filter_string=f"source_run_id = '{run.run_id}'"
        )
    )


def test_dataset_inputs_and_the_logged_model_are_spooled_and_replayed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = _open(uri, tmp_path / "job")
    outage = Outage(monkeypatch, recorder.client)
    splits = _splits()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    recorder.log_metrics({"val/loss": 0.5}, step=1)
    recorder.flush()
    outage.down = True
    recorder.log_metrics({"val/loss": 0.25, "test/acc": 0.75}, step=2)
    recorder.log_datasets(splits, "tiny", {"generator": "normal"})
    assert recorder.log_model(model, splits["test"].features[:2], step=2) == ""  # no id yet
    monkeypatch.setenv("XENT_SPOOL_WAIT_SECONDS", "0")
    with pytest.raises(connection.TrackingUnavailableError):
        recorder.end("FINISHED")
    spool = tmp_path / "job" / SPOOL_FILE
    _, records = read_spool(spool, "parent-1")
    assert [r.kind for r in records] == ["datasets", "metrics", "model", "status"]
    assert [c for c, _ in _inputs(uri, recorder.run_id)] == [] and _models(uri, recorder) == []
    # The saved model gone from next to the spool: refused, nothing sent.
    kept = tmp_path / "job" / "mlflow_spool_files" / records[2].data["file"]
    kept.rename(tmp_path / "moved")
    outage.down = False
    with pytest.raises(SpoolError, match=f"line 4: kept file {records[2].data['file']} missing"):
        recovery.replay_spool(spool, "parent-1")
    (tmp_path / "moved").rename(kept)
    assert _inputs(uri, recorder.run_id) == []
    # A replay that stopped after creating the logged model (the server went away again).
    pending = recorder.client.create_logged_model(
        recorder.experiment_id, name=artifacts.MODEL_NAME, source_run_id=recorder.run_id
    )

    first = recovery.replay_spool(spool, "parent-1")
    assert (first.points_sent, first.points_present) == (2, 0)  # the points, then the model
    shutil.copy(tmp_path / "job" / REPLAYED_FILE, spool)
    again = recovery.replay_spool(spool, "parent-1")  # the same spool replayed twice
    assert (again.points_sent, again.points_present) == (0, 2)

    digests = {split: artifacts.array_digest(d.features, d.targets) for split, d in splits.items()}
    assert _inputs(uri, recorder.run_id) == sorted(digests.items())  # each split once
    [logged] = _models(uri, recorder)  # the interrupted one, completed: not a second model
    assert logged.model_id == pending.model_id and str(logged.status) == "READY"
    run = MlflowClient(uri).get_run(recorder.run_id)
    assert run.info.status == "FINISHED"
    assert run.outputs is not None
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(logged.model_id, 2)]
    assert {m.key: m.value for m in logged.metrics or []} == {"val/loss": 0.25, "test/acc": 0.75}
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 0.5), (2, 0.25)]
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    finally:
        mlflow.set_tracking_uri("")
    x = splits["val"].features
    np.testing.assert_allclose(
        np.asarray(loaded.predict(x)), model.predict(x, verbose=0), rtol=1e-6
    )


# Found by the fuzz campaign (tests/fuzz, issue 29).
def test_a_spool_missing_a_record_in_the_middle_is_refused_and_a_cut_one_is_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line dropped from the middle used to replay the rest as if nothing were missing."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder, outage = _record_a_run_through_an_outage(uri, tmp_path, monkeypatch)
    outage.down = False
    spool = tmp_path / "job" / SPOOL_FILE
    original = spool.read_text().splitlines()
    spool.write_text("\n".join([original[0], *original[2:]]) + "\n")  # record 1 lost
    with pytest.raises(SpoolError, match=f"spool {spool} line 2: record 2 where record 1 belongs"):
        recovery.replay_spools(tmp_path, "parent-1")
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 1.0)]  # nothing was sent
    spool.write_text("\n".join(original[:2]) + "\n")  # cut after record 1: a job stopped there
    (replayed,) = recovery.replay_spools(tmp_path, "parent-1")
    assert replayed.records == 1
    assert _history(uri, recorder.run_id, "val/loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]


def test_a_spool_with_bytes_that_are_not_text_is_refused_as_damaged(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 raised UnicodeDecodeError instead of SpoolError."""
    spool = tmp_path / SPOOL_FILE
    spool.write_bytes(b'{"format": "xent-spool-1"\xff\xfe}\n')
    with pytest.raises(SpoolError, match=f"spool {spool} is damaged: 'utf-8' codec can't decode"):
        read_spool(spool, None)
