"""One run end to end against a temporary MLflow store: records, failures, the reference numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from xent_tf.config import Config
from xent_tf.track import reading, writing
from xent_tf.track.connection import TrackingUnavailableError
from xent_tf.track.run_record import RunStatus
from xent_tf.train import pipeline
from xent_tf.train.lr_finder import MIN_STEPS, NoSuggestionError
from xent_tf.train.pipeline import run_experiment
from xent_tf.train.training import NonFiniteLossError


def _with_store(config: Config, uri: str) -> Config:
    return replace(config, tracking=replace(config.tracking, uri=uri, enabled=True))


def _only_run(uri: str, experiment: str = "reference") -> mlflow.entities.Run:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_a_run_records_params_metrics_artifacts_and_tags(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = _with_store(make_config(), tracking_uri)
    log_file = tmp_path / "run.log"
    log_file.write_text("a log line\n")
    summary = run_experiment(config, tmp_path, overrides=["+debug=tiny"], log_file=log_file)

    run = _only_run(tracking_uri)
    client = MlflowClient(tracking_uri)
    assert run.info.status == "FINISHED" and run.info.run_id == summary.run_id
    params = run.data.params
    assert params["trainer.epochs"] == "2" and params["optimizer.learning_rate"] == "0.001"
    assert params["model.hidden_units"] == "[10, 10]" and params["model.n_params"] == "331"
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "grad_norm/output"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    assert client.get_metric_history(run.info.run_id, "val/loss")[-1].value == pytest.approx(
        summary.history[-1].val_loss
    )
    assert run.data.metrics["test/acc"] == pytest.approx(summary.test_acc)
    assert 0.0 < run.data.metrics["val/initial_loss"] < 5.0  # the untrained model, step 0
    assert "test/loss" in run.data.metrics
    tags = run.data.tags
    assert tags["device"] == "cpu" and tags["seed"] == "0"
    assert tags["hydra.overrides"] == "+debug=tiny"
    assert tags["version.tensorflow"] and tags["version.keras"].startswith("3.")
    assert tags["git.commit"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots", "logs"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == [
        "plots/loss_curve.png"
    ]
    # The model is a logged model of the run (tests/test_mlflow_records.py), not a run artifact.
    assert [m.model_id for m in run.outputs.model_outputs] == [
        m.model_id for m in client.search_logged_models([run.info.experiment_id])
    ]
    png = Path(client.download_artifacts(run.info.run_id, "plots/loss_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_config_and_seed_give_identical_metric_histories(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = _with_store(make_config("trainer.epochs=3", "seed=7"), tracking_uri)
    first = run_experiment(config, tmp_path / "a")
    second = run_experiment(config, tmp_path / "b")
    client = MlflowClient(tracking_uri)
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "grad_norm/hidden_1"):
        a = [(m.step, m.value) for m in client.get_metric_history(first.run_id, name)]
        b = [(m.step, m.value) for m in client.get_metric_history(second.run_id, name)]
        assert len(a) == 3 and sorted(a) == sorted(b), name
    assert first.test_loss == second.test_loss


def test_an_exception_during_training_ends_the_run_failed_with_metrics_kept(
    make_config: Callable[..., Config],
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _with_store(make_config("trainer.epochs=3"), tracking_uri)
    real_format = pipeline._format_epoch

    def explode_on_epoch_two(record, epochs):  # type: ignore[no-untyped-def]
        if record.epoch == 2:
            raise RuntimeError("disk on fire")
        return real_format(record, epochs)

    monkeypatch.setattr(pipeline, "_format_epoch", explode_on_epoch_two)
    config = replace(config, trainer=replace(config.trainer, verbose=True))
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_experiment(config, tmp_path)
    run = _only_run(tracking_uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: disk on fire"
    history = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in history] == [1, 2]  # logged before the failure, kept


def test_ctrl_c_ends_the_run_killed(
    make_config: Callable[..., Config],
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _with_store(make_config(), tracking_uri)

    def interrupt(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fit", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, tmp_path)
    assert _only_run(tracking_uri).info.status == "KILLED"


def test_nan_loss_or_no_suggested_rate_ends_the_run_failed_tagged_and_read_back_so(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = _with_store(
        make_config(
            "optimizer=sgd", "optimizer.learning_rate=1e30", "loss=mse", "trainer.epochs=2"
        ),
        tracking_uri,
    )
    parent_id, experiment_id = writing.start_parent_run(tracking_uri, "reference", "sweep", {})
    with pytest.raises(NonFiniteLossError) as raised:
        run_experiment(config, tmp_path, parent_run_id=parent_id)
    assert raised.value.epoch == 1 and raised.value.step >= 1
    client = MlflowClient(tracking_uri)
    (child,) = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert child.info.status == "FAILED"
    assert "NaN/inf at epoch 1" in child.data.tags["error"]
    assert "plots" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert child.data.tags["xent.diverged_epoch"] == "1"
    assert child.data.tags["xent.diverged_step"] == str(raised.value.step)
    parent = reading.StudyRun(parent_id, experiment_id, "reference", "", RunStatus.RUNNING, 0)
    (record,) = reading.fetch_children(tracking_uri, parent, ("val/loss",))
    assert record.status is RunStatus.FAILED
    assert record.diverged_epoch == 1 and record.diverged
    # A run that trains to the end carries no divergence tag.
    finished = _with_store(make_config("trainer.epochs=1"), tracking_uri)
    run_experiment(finished, tmp_path / "finished", parent_run_id=parent_id)
    records = reading.fetch_children(tracking_uri, parent, ("val/loss",))
    (ok,) = [r for r in records if r.run_id != record.run_id]
    assert ok.status is RunStatus.FINISHED and ok.diverged_epoch is None and not ok.diverged
    assert "xent.diverged_epoch" not in ok.tags
    assert not ok.no_suggestion and not record.no_suggestion
    # A range test that diverges from its first steps gives no rate: the run trains nothing and
    # ends FAILED, tagged, its curve kept.
    no_rate = _with_store(
        make_config(
            "optimizer=sgd",
            "lr_find=on",
            "lr_find.min_lr=1e3",
            "lr_find.max_lr=1e8",
            "lr_find.num_steps=20",
            "tracking.plots=false",
        ),
        tracking_uri,
    )
    with pytest.raises(NoSuggestionError, match=r"^lr_find: no suggestion: the test stopped"):
        run_experiment(no_rate, tmp_path / "no_rate", parent_run_id=parent_id)
    records = reading.fetch_children(tracking_uri, parent, ("val/loss",))
    (untrained,) = [r for r in records if r.run_id not in {record.run_id, ok.run_id}]
    assert untrained.status is RunStatus.FAILED and untrained.no_suggestion
    assert not untrained.diverged and untrained.tags["xent.lr_find_no_suggestion"] == "true"
    assert untrained.error is not None
    assert untrained.error.startswith("NoSuggestionError: lr_find: no suggestion")
    assert untrained.params["lr_find.steepest_lr"] == "None"
    assert "lr_find.used_lr" not in untrained.params and "val/loss" not in untrained.history
    smoothed = client.get_metric_history(untrained.run_id, "lr_find/loss_smoothed")
    assert 1 <= len(smoothed) < MIN_STEPS  # the test stopped before it could suggest


def test_unreachable_tracking_server_is_reported_before_training(
    make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _with_store(make_config(), "http://127.0.0.1:9")  # port 9: nothing listens

    def must_not_train(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(pipeline, "configure_runtime", must_not_train)
    with pytest.raises(TrackingUnavailableError, match=r"http://127\.0\.0\.1:9 is unreachable"):
        run_experiment(config, tmp_path)


def test_every_loss_and_data_combination_trains_one_epoch(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    combos = [
        ("reference", "bce", False),
        ("reference", "bce", True),
        ("reference", "cce", False),
        ("reference", "sparse_cce", True),
        ("reference", "mse", False),
        ("multiclass", "cce", True),
        ("multiclass", "sparse_cce", False),
        ("multiclass", "mse", False),
    ]
    for data, loss, logits in combos:
        config = make_config(
            f"data={data}",
            f"loss={loss}",
            f"loss.from_logits={str(logits).lower()}",
            "trainer.epochs=1",
            "tracking=off",
            "data.n_samples=400",
            "data.n_test=100",
        )
        summary = run_experiment(config, tmp_path)
        assert np.isfinite(summary.test_loss), (data, loss, logits)
        assert 0.0 <= summary.test_acc <= 1.0


def test_lr_find_runs_the_range_test_first_and_trains_with_its_rate(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = _with_store(make_config("lr_find=on", "lr_find.num_steps=40"), tracking_uri)
    run_experiment(config, tmp_path)
    run = _only_run(tracking_uri)
    client = MlflowClient(tracking_uri)
    curve = client.get_metric_history(run.info.run_id, "lr_find/lr")
    assert [m.step for m in sorted(curve, key=lambda m: m.step)][:3] == [0, 1, 2]
    assert min(m.value for m in curve) == pytest.approx(1e-6)  # the range starts at min_lr
    used = float(run.data.params["lr_find.used_lr"])
    assert used == pytest.approx(float(run.data.params["lr_find.steepest_lr"]))
    assert client.get_metric_history(run.info.run_id, "lr")[0].value == pytest.approx(used)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/lr_find.png" in plots


def test_without_plots_a_range_test_run_keeps_its_curve_and_rates_but_draws_no_png(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = _with_store(
        make_config("lr_find=on", "lr_find.num_steps=40", "tracking.plots=false"), tracking_uri
    )
    run_experiment(config, tmp_path)
    run = _only_run(tracking_uri)
    client = MlflowClient(tracking_uri)
    assert len(client.get_metric_history(run.info.run_id, "lr_find/loss_smoothed")) >= 10
    used = float(run.data.params["lr_find.used_lr"])
    assert used == pytest.approx(float(run.data.params["lr_find.steepest_lr"]))
    assert client.list_artifacts(run.info.run_id, "plots") == []
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_reference_run_reaches_the_published_accuracy(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config("tracking=off", tiny=False)
    summary = run_experiment(config, tmp_path)
    assert summary.n_params == 331 and len(summary.history) == 20
    assert summary.test_acc >= 0.93  # C16: it lands near 0.95
    # C16: training and validation loss fall together
    assert summary.history[-1].train_loss < summary.history[0].train_loss / 3
    assert summary.history[-1].val_loss < summary.history[0].val_loss / 2


@pytest.mark.parametrize(
    "experiment",
    ["", "lr_sweep", "lr_range_test", "mse_vs_ce", "annealing", "binary_vs_categorical"],
)
def test_config_yaml_is_the_text_pyyamls_own_emitter_writes(
    make_config: Callable[..., Config], experiment: str
) -> None:
    import dataclasses

    import yaml

    config = make_config(*([f"+experiment={experiment}"] if experiment else []), "seed=7")
    text = pipeline.config_text(config)
    assert text == yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
    assert yaml.safe_load(text)["seed"] == 7
