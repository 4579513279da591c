"""One run end to end: data, model, training, test evaluation and its MLflow records."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import keras
import tensorflow as tf
import yaml

from xent_tf import plotting, tracking
from xent_tf.config import Config
from xent_tf.data import Dataset, Split, make_dataset
from xent_tf.identity import run_identity
from xent_tf.losses import LossSpec, loss_spec
from xent_tf.lr_finder import find_learning_rate, region_rates
from xent_tf.models import build_mlp, saturate_output_layer
from xent_tf.runtime import DeviceChoice, configure_runtime
from xent_tf.schedules import learning_rates
from xent_tf.training import (
    CompiledLoop,
    EpochRecord,
    FitResult,
    TensorSplit,
    fit,
    reusable_loop,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reports.

    Attributes:
        run_id: MLflow run id ("-" without tracking).
        experiment_id: MLflow experiment id ("-" without tracking).
        device: where it trained.
        history: one record per epoch.
        test_loss: loss on the test set.
        test_acc: accuracy on the test set.
        epochs_to_target: first epoch whose validation accuracy reached the target, or None.
        train_seconds: training wall time (validation included).
        n_params: trainable parameters of the model.
    """

    run_id: str
    experiment_id: str
    device: DeviceChoice
    history: list[EpochRecord]
    test_loss: float
    test_acc: float
    epochs_to_target: int | None
    train_seconds: float
    n_params: int


def epochs_to_target(history: list[EpochRecord], target: float) -> int | None:
    """The first epoch whose validation accuracy is >= ``target``, or None."""
    return next((r.epoch for r in history if r.val_acc >= target), None)


def git_commit() -> str:
    """The project's git commit (with "-dirty" for uncommitted changes), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _tensor_split(split: Split, spec: LossSpec, n_classes: int) -> TensorSplit:
    return TensorSplit.from_numpy(split.x, spec.encode_labels(split.y, n_classes), split.y)


def _build_optimizer(config: Config) -> keras.optimizers.Optimizer:
    if config.optimizer.name == "adam":
        return keras.optimizers.Adam(learning_rate=config.optimizer.learning_rate)
    return keras.optimizers.SGD(
        learning_rate=config.optimizer.learning_rate, momentum=config.optimizer.momentum
    )


def _format_epoch(record: EpochRecord, epochs: int) -> str:
    return (
        f"epoch {record.epoch:>{len(str(epochs))}}/{epochs}  "
        f"train loss {record.train_loss:.4f} acc {record.train_acc:.4f} | "
        f"val loss {record.val_loss:.4f} acc {record.val_acc:.4f} | "
        f"lr {record.learning_rate:.2e} | {record.seconds:.2f} s"
    )


def run_tags(config: Config, device: DeviceChoice, overrides: list[str]) -> dict[str, str]:
    """Tags that say where and with what a run was made."""
    return {
        "device": device.kind,
        "device.description": device.description,
        "seed": str(config.seed),
        "hydra.overrides": " ".join(overrides) or "(none)",
        "git.commit": git_commit(),
        "version.tensorflow": tf.__version__,
        "version.keras": keras.__version__,
        "version.mlflow": tracking.mlflow_version(),
        "loss": config.loss.name,
        "data": config.data.name,
        # Which machine and process ran the job: on a Ray cluster, where to look (or what to
        # kill) for a run that misbehaves.
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }


@contextmanager
def sigterm_ends_run() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``tracking.Terminated`` (the run ends KILLED).

    Without it SIGTERM kills the process on the spot and its MLflow run stays RUNNING forever.
    Only the main thread can own signal handlers; elsewhere this does nothing. The previous
    handler is restored afterwards, so a sweep worker (joblib, Ray) that survives the job gets
    its own handling back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:  # a second SIGTERM while the run is being closed: let the closing finish
            log.warning("SIGTERM again while the run is closing; closing it first")
            return
        raised = True
        raise tracking.Terminated(f"SIGTERM received by process {os.getpid()}")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        # None means a handler installed from C: the default is the closest we can restore.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def run_experiment(
    config: Config,
    output_dir: Path,
    overrides: list[str] | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    log_file: Path | None = None,
) -> RunSummary:
    """Train and test one configuration, recording it in MLflow.

    The tracking store is checked before anything trains; a failure or interrupt during
    training ends the MLflow run FAILED/KILLED with the metrics logged so far.

    Args:
        config: the validated run configuration.
        output_dir: where local files (plots, model, log) are written.
        overrides: the command-line overrides, recorded as a tag.
        parent_run_id: the sweep's parent MLflow run, if any.
        run_name: MLflow run name; defaults to ``identity.run_identity``'s
            ("<variant> seed=<seed>").
        log_file: the run's log file, uploaded as ``logs/`` when the run ends (also on failure).

    Returns:
        The run's summary.

    Raises:
        tracking.TrackingUnavailableError: the store is unreachable (before training), or it
            stopped answering during the run (the run could not be ended; the sweep's end
            marks it FAILED).
        tracking.RunTerminated: the process got SIGTERM (the run ends KILLED).
        training.NonFiniteLossError: the loss became NaN/inf (the run ends FAILED).
    """
    overrides = overrides or []
    if config.tracking.enabled:
        tracking.check_tracking_uri(config.tracking.uri)
    with sigterm_ends_run():
        try:
            return _run_tracked(config, output_dir, overrides, parent_run_id, run_name, log_file)
        except tracking.Terminated as signal_error:
            # The run is KILLED already; an Exception lets a sweep job fail like any other.
            raise tracking.RunTerminated(str(signal_error)) from signal_error


def _run_tracked(
    config: Config,
    output_dir: Path,
    overrides: list[str],
    parent_run_id: str | None,
    run_name: str | None,
    log_file: Path | None,
) -> RunSummary:
    """The body of ``run_experiment`` once the store answers: open the run, train, record."""
    device = configure_runtime(config.trainer.device, config.trainer.threads, config.seed)
    log.info("training on %s", device.description)
    data = make_dataset(config.data)
    identity = run_identity(config.study, config, overrides)
    recorder_context: AbstractContextManager[tracking.RunRecorder] = (
        tracking.open_run(
            config.tracking.uri,
            config.experiment_name,
            run_name or identity.run_name,
            parent_run_id=parent_run_id,
            tags={**run_tags(config, device, overrides), **identity.tags},
        )
        if config.tracking.enabled
        else nullcontext(tracking.NoTracking())
    )
    with recorder_context as recorder, tf.device(device.name):
        recorder.log_text(
            yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), "config.yaml"
        )
        try:
            summary = _train_and_record(config, data, device, recorder, output_dir)
        except tracking.TrackingUnavailableError:
            raise  # the server is gone: uploading the log would only wait out its retries again
        except BaseException:
            _upload_log(recorder, log_file)
            raise
        _upload_log(recorder, log_file)
        return summary


def _upload_log(recorder: tracking.RunRecorder, log_file: Path | None) -> None:
    """The run's log file as ``logs/``, also when the run failed (errors are only logged)."""
    if log_file is not None and log_file.exists():
        tracking.log_file_quietly(recorder, log_file, "logs")


def _train_and_record(
    config: Config,
    data: Dataset,
    device: DeviceChoice,
    recorder: tracking.RunRecorder,
    output_dir: Path,
) -> RunSummary:
    """The body of ``run_experiment`` inside an open run and device scope."""
    spec = loss_spec(config.loss, data.n_classes)
    model = build_mlp(
        data.n_features,
        config.model.hidden_units,
        spec.output_units,
        spec.output_activation,
        hidden_activation=config.model.activation,
    )
    if config.model.output_init == "saturated":
        saturate_output_layer(model, data.train.y, config.model.saturation_scale, config.seed)
    train = _tensor_split(data.train, spec, data.n_classes)
    val = _tensor_split(data.val, spec, data.n_classes)
    test = _tensor_split(data.test, spec, data.n_classes)
    n_params = int(model.count_params())
    # One batch for the whole config and the parameter count: each batch is a store transaction.
    recorder.log_params(
        {**tracking.flatten(dataclasses.asdict(config)), "model.n_params": str(n_params)}
    )
    # The process's loop for this architecture if it has one (a sweep worker's next job):
    # tracing is a third of a short run. Train and save through loop.model from here on.
    loop = reusable_loop(
        model,
        spec.loss,
        _build_optimizer(config),
        config.trainer.batch_size,
        config.loss.from_logits,
    )
    base_rate = config.optimizer.learning_rate
    if config.lr_find.enabled:
        base_rate = _range_test(config, loop, train, recorder, output_dir)
    rates = learning_rates(
        config.schedule,
        base_rate,
        config.trainer.epochs,
        steps_per_epoch(len(train), config.trainer.batch_size),
    )

    # Where training starts from: the baseline "did it diverge / learn at all" is judged against.
    initial = loop.evaluate(val)
    recorder.log_metrics({"val/initial_loss": initial.loss, "val/initial_acc": initial.accuracy}, 0)

    def on_epoch_end(record: EpochRecord) -> None:
        recorder.log_metrics(record.metrics(), step=record.epoch)
        if config.trainer.verbose:
            log.info(_format_epoch(record, config.trainer.epochs))

    try:
        result: FitResult = fit(
            loop, train, val, rates, config.trainer.epochs, config.seed, on_epoch_end
        )
    except Exception as error:
        history = getattr(getattr(error, "result", None), "history", None)
        if history:
            _save_loss_curve(history, output_dir, recorder, config)
        raise
    on_test = loop.evaluate(test)
    test_loss, test_acc = on_test.loss, on_test.accuracy
    reached = epochs_to_target(result.history, config.trainer.target_val_acc)
    final_metrics = {
        "test/loss": test_loss,
        "test/acc": test_acc,
        "train_seconds": result.train_seconds,
    }
    if reached is not None:
        final_metrics["epochs_to_target"] = float(reached)
    recorder.log_metrics(final_metrics, step=config.trainer.epochs)
    _save_loss_curve(result.history, output_dir, recorder, config)
    record_inputs_and_model(config, data, loop.model, recorder, output_dir)
    return RunSummary(
        run_id=recorder.run_id,
        experiment_id=recorder.experiment_id,
        device=device,
        history=result.history,
        test_loss=test_loss,
        test_acc=test_acc,
        epochs_to_target=reached,
        train_seconds=result.train_seconds,
        n_params=n_params,
    )


def record_inputs_and_model(
    config: Config,
    data: Dataset,
    model: keras.Model,
    recorder: tracking.RunRecorder,
    output_dir: Path,
) -> None:
    """Save the trained model to ``output_dir/model.keras``, then record the run's dataset
    inputs and its logged model (with ``tracking.log_model``).

    Called once the run's metrics are logged: should the store refuse either record (full
    disk, a server that says no), the run still has its metrics and the model file, and
    ends FAILED with the reason.
    """
    keep_model = config.tracking.enabled and config.tracking.log_model
    if keep_model:
        model.save(output_dir / "model.keras")
    recorder.log_datasets(
        {
            "train": tracking.DatasetSplit(data.train.x, data.train.y),
            "val": tracking.DatasetSplit(data.val.x, data.val.y),
            "test": tracking.DatasetSplit(data.test.x, data.test.y),
        },
        config.data.name,
        {"generator": "sklearn.datasets.make_classification", **_data_source(config)},
    )
    if keep_model:
        recorder.log_model(model, data.test.x[:5], step=config.trainer.epochs)


def _data_source(config: Config) -> dict[str, str]:
    """The data config, as the logged datasets' source: how to make the same arrays again."""
    return {f"data.{k}": str(v) for k, v in dataclasses.asdict(config.data).items()}


def _range_test(
    config: Config,
    loop: CompiledLoop,
    train: TensorSplit,
    recorder: tracking.RunRecorder,
    output_dir: Path,
) -> float:
    """Run the range test on the model about to be trained (its state is restored afterwards).

    Returns:
        The rate to train with (``lr_find.use``: suggested, flat or exploding).

    Raises:
        ValueError: the curve gave no suggestion (the message says what to try).
    """
    settings = config.lr_find
    result = find_learning_rate(
        loop,
        train,
        min_lr=settings.min_lr,
        max_lr=settings.max_lr,
        num_steps=settings.num_steps,
        mode=settings.mode,
        beta=settings.beta,
        divergence_factor=settings.divergence_factor,
        method=settings.method,
        seed=config.seed,
    )
    log.info("range test (%.2f s): %s", result.seconds, result.message)
    recorder.log_series(result.step_metrics())
    regions = region_rates(result)
    found = {f"lr_find.{k}_lr": str(v) for k, v in {**result.suggestions(), **regions}.items()}
    recorder.log_params({**found, "lr_find.stop_reason": result.stop_reason or "(none)"})
    marks = {name: rate for name, rate in {**result.suggestions(), **regions}.items() if rate}
    marks.pop("suggested", None)  # the same line as the method it came from
    path = plotting.save_range_test_curve(
        result.lrs,
        result.losses,
        result.smoothed,
        marks,
        output_dir / "plots" / "lr_find.png",
        title=f"range test: {config.loss.name}, {config.optimizer.name}, seed {config.seed}",
    )
    recorder.log_file(path, "plots")
    rate = regions[settings.use]
    if rate is None:
        raise ValueError(f"lr_find: {result.message}")
    recorder.log_params({"lr_find.used_lr": str(rate)})
    log.info("training with the %s rate %.4g", settings.use, rate)
    return rate


def _save_loss_curve(
    history: list[EpochRecord], output_dir: Path, recorder: tracking.RunRecorder, config: Config
) -> None:
    path = plotting.save_loss_curve(
        [r.train_loss for r in history],
        [r.val_loss for r in history],
        output_dir / "plots" / "loss_curve.png",
        title=f"{config.experiment_name}: {config.loss.name}, seed {config.seed}",
    )
    recorder.log_file(path, "plots")


def summary_text(summary: RunSummary, config: Config) -> str:
    """The lines printed when a run ends: device, test numbers, where the run is, the UI."""
    lines = [
        f"trained on {summary.device.description} in {summary.train_seconds:.2f} s "
        f"({len(summary.history)} epochs, {summary.n_params} parameters)",
        f"test loss {summary.test_loss:.4f}  test accuracy {summary.test_acc:.4f}",
    ]
    if config.tracking.enabled:
        address = tracking.ui_address(config.tracking.uri)
        how = "" if address != tracking.ui_address("") else "open the UI with `make ui`, then "
        lines += [
            f"MLflow run {summary.run_id} in experiment '{config.experiment_name}' "
            f"at {config.tracking.uri}",
            how + tracking.run_url(summary.experiment_id, summary.run_id, address),
        ]
    else:
        lines.append("tracking=off: nothing was recorded in MLflow")
    return "\n".join(lines)
