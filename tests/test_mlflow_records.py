"""A run's logged model and dataset inputs: what they hold, that the model predicts like the
run's own, and that a store refusing either still leaves the run FAILED with its metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from xent_tf.config import Config
from xent_tf.track import artifacts, connection, writing
from xent_tf.train.data import make_dataset
from xent_tf.train.pipeline import run_experiment


def _with_store(config: Config, uri: str) -> Config:
    return replace(config, tracking=replace(config.tracking, uri=uri, enabled=True))


def _only_run(uri: str) -> mlflow.entities.Run:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("reference")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_the_logged_model_predicts_what_the_runs_model_predicts(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    import keras

    config = _with_store(make_config("trainer.epochs=3"), tracking_uri)
    summary = run_experiment(config, tmp_path)
    run = _only_run(tracking_uri)
    client = MlflowClient(tracking_uri)
    [output] = run.outputs.model_outputs
    assert output.step == 3
    logged = client.get_logged_model(output.model_id)
    assert logged.source_run_id == summary.run_id and logged.name == "model"
    assert str(logged.status) == "READY"
    # Linked to the run's final metrics (step 3), with their values.
    linked = {m.key: m.value for m in logged.metrics or []}
    assert linked["val/loss"] == pytest.approx(summary.history[-1].val_loss)
    assert linked["test/acc"] == pytest.approx(summary.test_acc)
    # Re-logging them to link them left one value per step in the run's history.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [1, 2, 3]

    model_uri = f"models:/{output.model_id}"
    mlflow.set_tracking_uri(tracking_uri)
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
        x = make_dataset(config.data).test.x[:50]
        # The run's own model, as the pipeline saved it in the job's output directory.
        expected = keras.models.load_model(tmp_path / "model.keras").predict(x, verbose=0)
        np.testing.assert_allclose(np.asarray(loaded.predict(x)), expected, rtol=1e-6)
        assert loaded.metadata.get_input_schema().inputs[0].shape == (-1, 20)
        assert loaded.metadata.get_output_schema().inputs[0].shape == (-1, 1)
        files = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "m")))
    finally:
        mlflow.set_tracking_uri("")
    # Pinned as given, not inferred.
    assert (files / "requirements.txt").read_text().split() == artifacts.model_requirements()
    assert (files / "input_example.json").exists()


def test_each_split_is_a_dataset_input_with_its_digest(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = _with_store(make_config(), tracking_uri)
    run_experiment(config, tmp_path)
    data = make_dataset(config.data)
    inputs = _only_run(tracking_uri).inputs.dataset_inputs
    by_split = {{t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset for i in inputs}
    assert sorted(by_split) == ["test", "train", "val"]
    for split, arrays in (("train", data.train), ("val", data.val), ("test", data.test)):
        assert by_split[split].name == "reference"
        assert by_split[split].digest == artifacts.array_digest(arrays.x, arrays.y)
    assert len({d.digest for d in by_split.values()}) == 3


def test_array_digest_sees_every_value_and_the_shape() -> None:
    x = np.zeros((20_000, 20), np.float32)
    changed = x.copy()
    changed[-1, -1] = 1.0  # past MLflow's own digest's first 10,000 values
    assert artifacts.array_digest(x) != artifacts.array_digest(changed)
    assert artifacts.array_digest(x) != artifacts.array_digest(x.reshape(40_000, 10))
    assert artifacts.array_digest(x) == artifacts.array_digest(x.copy())


@pytest.mark.parametrize("refused", ["log_model", "log_datasets"])
def test_a_store_refusing_a_record_fails_the_run_but_keeps_metrics_and_model_file(
    refused: str,
    make_config: Callable[..., Config],
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing.MlflowRun, refused, disk_full)
    config = _with_store(make_config("trainer.epochs=3"), tracking_uri)
    with pytest.raises(OSError, match="No space left on device"):
        run_experiment(config, tmp_path)
    run = _only_run(tracking_uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "OSError: [Errno 28] No space left on device"
    history = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val/acc")
    assert [m.step for m in history] == [1, 2, 3]
    assert "test/acc" in run.data.metrics
    assert (tmp_path / "model.keras").stat().st_size > 1000


# Found by the fuzz campaign (tests/fuzz, issue 29): a damaged, full or locked SQLite store
# failed with SQLAlchemy's message, which does not say which store.
def test_a_store_that_cannot_create_the_run_names_the_store(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not SQLite\x00" * 200)
    uri = f"sqlite:///{db}"
    with (
        pytest.raises(connection.TrackingUnavailableError) as refused,
        writing.open_run(uri, "fuzzed", "run"),
    ):
        raise AssertionError("the run opened")
    assert str(refused.value) == (
        f"tracking.uri={uri!r}: the store cannot create a run in experiment 'fuzzed': "
        "(sqlite3.DatabaseError) file is not a database"
    )


def test_a_read_only_store_file_is_refused_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")
    real_access = connection.os.access

    def access(path: object, mode: int) -> bool:  # root may write any file: say it may not
        return False if Path(str(path)) == db.resolve() else real_access(path, mode)

    monkeypatch.setattr(connection.os, "access", access)
    with pytest.raises(connection.TrackingUnavailableError, match=r"store file .* is read-only"):
        connection.check_tracking_uri(f"sqlite:///{db}")
