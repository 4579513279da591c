"""One run end to end: data, model, training, test evaluation and its MLflow records."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import keras
import tensorflow as tf
import yaml

from xent_tf.config import Config
from xent_tf.metrics import (
    BATCH_LOSS_METRIC,
    EPOCHS_TO_TARGET_METRIC,
    INITIAL_VAL_ACC_METRIC,
    INITIAL_VAL_LOSS_METRIC,
    PROBE_LOSS_METRIC,
    TEST_ACC_METRIC,
    TEST_LOSS_METRIC,
    TRAIN_SECONDS_METRIC,
)
from xent_tf.report import plotting
from xent_tf.track import artifacts, connection, writing
from xent_tf.track.identity import run_identity
from xent_tf.track.resume import CONFIG_HASH_TAG, training_config_hash
from xent_tf.track.run_record import divergence_tags, no_suggestion_tags
from xent_tf.train.build import RunParts, build_run
from xent_tf.train.data import Dataset, majority_share, prior_loss
from xent_tf.train.losses import resolved_loss_name
from xent_tf.train.lr_finder import (
    NoSuggestionError,
    RangeTestResult,
    find_learning_rate,
    rate_to_train_with,
    region_rates,
)
from xent_tf.train.placement import current_placement
from xent_tf.train.runtime import DeviceChoice, configure_runtime
from xent_tf.train.training import (
    CompiledLoop,
    EpochRecord,
    Evaluation,
    FitResult,
    NonFiniteLossError,
    TensorSplit,
    fit,
    probe_split,
    probe_start_epoch,
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


@functools.cache
def git_commit() -> str:
    """The project's git commit (with "-dirty" for uncommitted changes), or "unknown".

    Asked once per process (two git commands each time were a tenth of a study run's
    recording): the code a process runs is the code it imported when it started.
    """
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
        # What a resumed sweep compares to skip this job's config (not the run's name).
        CONFIG_HASH_TAG: training_config_hash(config),
        "hydra.overrides": " ".join(overrides) or "(none)",
        "git.commit": git_commit(),
        "version.tensorflow": tf.__version__,
        "version.keras": keras.__version__,
        "version.mlflow": connection.mlflow_version(),
        "loss": config.loss.name,
        "data": config.data.name,
        # Which machine and process ran the job: on a Ray cluster, where to look (or what to
        # kill) for a run that misbehaves.
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        # On a Ray cluster: the node and GPUs the unit was given (ray_placement).
        **current_placement(),
    }


@contextmanager
def sigterm_ends_run() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``writing.Terminated`` (the run ends KILLED).

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
        raise writing.Terminated(f"SIGTERM received by process {os.getpid()}")

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
        connection.TrackingUnavailableError: the store is unreachable (before training), or it
            stopped answering during the run (the run could not be ended; the sweep's end
            marks it FAILED).
        writing.RunTerminated: the process got SIGTERM (the run ends KILLED).
        training.NonFiniteLossError: the loss became NaN/inf (the run ends FAILED, tagged
            with where: ``record_divergence``).
    """
    overrides = overrides or []
    if config.tracking.enabled:
        connection.check_tracking_uri(config.tracking.uri)
    with sigterm_ends_run():
        try:
            return _run_tracked(config, output_dir, overrides, parent_run_id, run_name, log_file)
        except writing.Terminated as signal_error:
            # The run is KILLED already; an Exception lets a sweep job fail like any other.
            raise writing.RunTerminated(str(signal_error)) from signal_error


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
    # Data, model and loop first: bad input (a CSV, a user model that does not fit the loss)
    # fails here, before a run is opened in the store.
    with tf.device(device.name):
        parts = build_run(config)
    with (
        recorded_run(
            config, device, overrides, parent_run_id, run_name, log_file, spool_dir=output_dir
        ) as recorder,
        tf.device(device.name),
    ):
        return _train_and_record(config, parts, device, recorder, output_dir)


@contextmanager
def recorded_run(
    config: Config,
    device: DeviceChoice,
    overrides: list[str],
    parent_run_id: str | None,
    run_name: str | None,
    log_file: Path | None,
    extra_tags: dict[str, str] | None = None,
    spool_dir: Path | None = None,
    buffered: bool = False,
) -> Iterator[writing.RunRecorder]:
    """The run's MLflow record (or none with tracking off), its config.yaml, and its log file
    uploaded at the end, also when the block fails (the run then ends FAILED/KILLED).

    Args:
        config: the run's config.
        device: where it trains (a tag).
        overrides: the command-line overrides (a tag).
        parent_run_id: the sweep's parent run, if any.
        run_name: the MLflow run name; defaults to "<loss>-seed<seed>".
        log_file: uploaded as ``logs/`` when the block ends.
        extra_tags: more tags (e.g. which replica batch trained the run).
        spool_dir: where the run keeps what it cannot send while the server is away (the
            job's output directory; ``writing.open_run``).
        buffered: write the run's records in one transaction when it ends, into a local
            database store (``writing.open_run``'s ``buffered``: for a run whose numbers are
            known when it is recorded).

    Yields:
        The recorder.
    """
    identity = run_identity(config.study, config, overrides)
    recorder_context: AbstractContextManager[writing.RunRecorder] = (
        writing.open_run(
            config.tracking.uri,
            config.experiment_name,
            run_name or identity.run_name,
            parent_run_id=parent_run_id,
            tags={**run_tags(config, device, overrides), **identity.tags, **(extra_tags or {})},
            spool_dir=spool_dir,
            buffered=buffered,
        )
        if config.tracking.enabled
        else nullcontext(writing.NoTracking())
    )
    with recorder_context as recorder:
        recorder.log_text(config_text(config), "config.yaml")
        try:
            yield recorder
        except connection.TrackingUnavailableError:
            raise  # the server is gone: uploading the log would only wait out its retries again
        except BaseException:
            _upload_log(recorder, log_file)
            raise
        _upload_log(recorder, log_file)


# libyaml's emitter when PyYAML was built with it: the same text as PyYAML's own emitter gives
# (tests/test_pipeline.py compares them for every study's config) at a fraction of its CPU,
# which was a large part of recording a replica's run.
_CONFIG_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def config_text(config: Config) -> str:
    """A run's config as the text of its ``config.yaml`` artifact (``yaml.safe_dump``'s).

    Args:
        config: the run's config.

    Returns:
        YAML, its keys in the config's order.
    """
    return yaml.dump(dataclasses.asdict(config), Dumper=_CONFIG_DUMPER, sort_keys=False)


def _upload_log(recorder: writing.RunRecorder, log_file: Path | None) -> None:
    """The run's log file as ``logs/``, also when the run failed (errors are only logged)."""
    if log_file is not None and log_file.exists():
        writing.log_file_quietly(recorder, log_file, "logs")


def _train_and_record(
    config: Config,
    parts: RunParts,
    device: DeviceChoice,
    recorder: writing.RunRecorder,
    output_dir: Path,
) -> RunSummary:
    """The body of ``run_experiment`` inside an open run and device scope."""
    loop, train, val, test = parts.loop, parts.train, parts.val, parts.test
    n_params = int(parts.model.count_params())
    log_params(config, recorder, n_params, parts.data)
    # build_run took the process's loop for this architecture if it had one (a sweep worker's
    # next job): tracing is a third of a short run. Train and save through loop.model.
    base_rate = parts.base_rate
    if config.lr_find.enabled:
        base_rate = _range_test(config, loop, train, recorder, output_dir)
    rates = parts.rates(base_rate)

    # Where training starts from: the baseline "did it diverge / learn at all" is judged against.
    log_initial(recorder, loop.evaluate(val))

    def on_epoch_end(record: EpochRecord) -> None:
        log_epoch(config, recorder, record)

    try:
        result: FitResult = fit(
            loop,
            train,
            val,
            rates,
            config.trainer.epochs,
            config.seed,
            on_epoch_end,
            probe_split(train, config.trainer.probe_rows),
            probe_start_epoch(config.trainer.epochs, config.trainer.probe_late_fraction),
        )
    except Exception as error:
        if isinstance(error, NonFiniteLossError):
            record_divergence(recorder, error.epoch, error.step)
        history = getattr(getattr(error, "result", None), "history", None)
        if history:
            save_loss_curve(history, output_dir, recorder, config)
        raise
    return finish_run(
        config,
        parts.data,
        lambda: loop.model,
        result,
        loop.evaluate(test),
        device,
        recorder,
        output_dir,
        n_params,
    )


def log_params(config: Config, recorder: writing.RunRecorder, n_params: int, data: Dataset) -> None:
    """The whole config as dotted params, plus what follows from it and the data, in one batch
    (one store transaction).

    Besides the config: ``model.n_params``; ``loss.resolved`` (the loss trained with: "ce"
    becomes bce or sparse_cce); ``data.n_classes``; ``data.majority_share``, the validation
    rows' share of their most common class (the accuracy of always guessing it: C12's fixed
    accuracy targets and C13's "stays at the majority share" start from it);
    ``data.prior_loss``, the entropy of the training labels (the loss of predicting the class
    frequencies: C13's "diverged").
    """
    recorder.log_params(
        {
            **writing.flatten(dataclasses.asdict(config)),
            "model.n_params": str(n_params),
            "loss.resolved": resolved_loss_name(config.loss.name, data.n_classes),
            "data.n_classes": str(data.n_classes),
            "data.majority_share": f"{majority_share(data.val.y):.4f}",
            "data.prior_loss": f"{prior_loss(data.train.y):.6f}",
        }
    )


def log_initial(recorder: writing.RunRecorder, initial: Evaluation) -> None:
    """The untrained model's validation numbers (step 0): the baseline "diverged" is judged
    against."""
    recorder.log_metrics(
        {INITIAL_VAL_LOSS_METRIC: initial.loss, INITIAL_VAL_ACC_METRIC: initial.accuracy}, 0
    )


def record_divergence(recorder: writing.RunRecorder, epoch: int, step: int) -> None:
    """Mark the run as one whose training loss became NaN/inf (``run_record.divergence_tags``).

    The rules count such a run as a measured outcome (diverged), not a crash: they read these
    tags, never the error's text.

    Args:
        recorder: the run's MLflow record.
        epoch: the epoch the loss became NaN/inf in (from 1).
        step: the step within that epoch (from 1).
    """
    recorder.set_tags(divergence_tags(epoch, step))


def record_no_suggestion(recorder: writing.RunRecorder) -> None:
    """Mark the run as one whose range test gave no rate to train with
    (``run_record.no_suggestion_tags``): like a divergence, a measured outcome the rules and
    the ledger's check of a stored sweep read from this tag, never from the error's text.

    Args:
        recorder: the run's MLflow record.
    """
    recorder.set_tags(no_suggestion_tags())


def finish_run(
    config: Config,
    data: Dataset,
    model: Callable[[], keras.Model],
    result: FitResult,
    on_test: Evaluation,
    device: DeviceChoice,
    recorder: writing.RunRecorder,
    output_dir: Path,
    n_params: int,
    save_model: Callable[[Path], None] | None = None,
) -> RunSummary:
    """Record a trained run's test numbers, loss curve and model, and summarise it.

    Args:
        config: the run's config.
        data: the run's data set (recorded as its dataset inputs).
        model: gives the trained model (saved and logged when tracking logs models), asked
            only when a record needs it: a replica batch makes each replica's on demand.
        result: what training measured.
        on_test: the trained model on the test split.
        device: where it trained.
        recorder: the run's MLflow record.
        output_dir: where local files go.
        n_params: trainable parameters.
        save_model: writes the model's ``.keras`` file (default ``model.save``; a replica
            batch writes its replicas' files faster).

    Returns:
        The run's summary.
    """
    # The loss of every step (C13/C15 measure how it swings around its trend).
    writing.log_series_artifact(recorder, BATCH_LOSS_METRIC, result.batch_losses, output_dir)
    if result.probe_losses.size:
        # The loss on the fixed probe rows after every step (trainer.probe_rows).
        writing.log_series_artifact(recorder, PROBE_LOSS_METRIC, result.probe_losses, output_dir)
    reached = epochs_to_target(result.history, config.trainer.target_val_acc)
    final_metrics = {
        TEST_LOSS_METRIC: on_test.loss,
        TEST_ACC_METRIC: on_test.accuracy,
        TRAIN_SECONDS_METRIC: result.train_seconds,
    }
    if reached is not None:
        final_metrics[EPOCHS_TO_TARGET_METRIC] = float(reached)
    recorder.log_metrics(final_metrics, step=config.trainer.epochs)
    save_loss_curve(result.history, output_dir, recorder, config)
    record_inputs_and_model(config, data, model, recorder, output_dir, save_model)
    return RunSummary(
        run_id=recorder.run_id,
        experiment_id=recorder.experiment_id,
        device=device,
        history=result.history,
        test_loss=on_test.loss,
        test_acc=on_test.accuracy,
        epochs_to_target=reached,
        train_seconds=result.train_seconds,
        n_params=n_params,
    )


def record_inputs_and_model(
    config: Config,
    data: Dataset,
    model: Callable[[], keras.Model],
    recorder: writing.RunRecorder,
    output_dir: Path,
    save_model: Callable[[Path], None] | None = None,
) -> None:
    """Save the trained model (``model()``) to ``output_dir/model.keras`` (with
    ``save_model``, default the model's ``save``), then record the run's dataset inputs and
    the model (with ``tracking.log_model``: a logged model, or with
    ``tracking.logged_model=false`` the file as a run artifact).

    Called once the run's metrics are logged: should the store refuse either record (full
    disk, a server that says no), the run still has its metrics and the model file, and
    ends FAILED with the reason.
    """
    keep_model = config.tracking.enabled and config.tracking.log_model
    if keep_model:
        (save_model or model().save)(output_dir / "model.keras")
    recorder.log_datasets(
        {
            "train": artifacts.DatasetSplit(data.train.x, data.train.y),
            "val": artifacts.DatasetSplit(data.val.x, data.val.y),
            "test": artifacts.DatasetSplit(data.test.x, data.test.y),
        },
        config.data.name,
        {"source": type(config.data).__name__, **_data_source(config)},
    )
    if keep_model and config.tracking.logged_model:
        recorder.log_model(model(), data.test.x[:5], step=config.trainer.epochs)
    elif keep_model:
        recorder.log_file(output_dir / "model.keras", "model")


def _data_source(config: Config) -> dict[str, str]:
    """The data config, as the logged datasets' source: how to make the same arrays again."""
    return {f"data.{k}": str(v) for k, v in dataclasses.asdict(config.data).items()}


def _range_test(
    config: Config,
    loop: CompiledLoop,
    train: TensorSplit,
    recorder: writing.RunRecorder,
    output_dir: Path,
) -> float:
    """Run the range test on the model about to be trained (its state is restored afterwards).

    Returns:
        The rate to train with (``lr_find.use``: suggested, flat, exploding or given).

    Raises:
        NoSuggestionError: the curve gave no suggestion (the message says what to try; the
            run is tagged: ``record_no_suggestion``).
    """
    result = find_learning_rate(loop, train, seed=config.seed, **config.lr_find.curve_settings())
    return record_range_test(config, result, recorder, output_dir)


def record_range_test(
    config: Config, result: RangeTestResult, recorder: writing.RunRecorder, output_dir: Path
) -> float:
    """Record a range test's curve, suggestions and plot; pick the rate to train with.

    Args:
        config: the run's config (``lr_find.use`` says which rate).
        result: the range test's outcome.
        recorder: the run's MLflow record.
        output_dir: where the plot goes.

    Returns:
        The rate to train with.

    Raises:
        NoSuggestionError: the curve gave no rate for ``lr_find.use`` (the message says what
            to try; the run is tagged first: ``record_no_suggestion``).
    """
    settings = config.lr_find
    log.info("range test (%.2f s): %s", result.seconds, result.message)
    recorder.log_series(result.step_metrics())
    regions = region_rates(result)
    rate = rate_to_train_with(result, settings.use, config.optimizer.learning_rate)
    found = {f"lr_find.{k}_lr": str(v) for k, v in {**result.suggestions(), **regions}.items()}
    used = {"lr_find.used_lr": str(rate)} if rate is not None else {}
    recorder.log_params({**found, "lr_find.stop_reason": result.stop_reason or "(none)", **used})
    # Like the loss curve, the PNG is drawn only with tracking.plots: a study's children leave
    # it out (drawing it was most of a range-test replica's recording); the curve is in every
    # run's lr_find/lr, lr_find/loss and lr_find/loss_smoothed metrics, which the UI charts.
    if config.tracking.plots:
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
    if rate is None:
        record_no_suggestion(recorder)
        raise NoSuggestionError(f"lr_find: {result.message}")
    log.info("training with the %s rate %.4g", settings.use, rate)
    return rate


def log_epoch(config: Config, recorder: writing.RunRecorder, record: EpochRecord) -> None:
    """One epoch's metrics, and its line in the log when ``trainer.verbose``."""
    recorder.log_metrics(record.metrics(), step=record.epoch)
    if config.trainer.verbose:
        log.info(_format_epoch(record, config.trainer.epochs))


def save_loss_curve(
    history: list[EpochRecord], output_dir: Path, recorder: writing.RunRecorder, config: Config
) -> None:
    """The run's train/val loss curve as ``plots/loss_curve.png`` (unless ``tracking.plots``
    is off)."""
    if not config.tracking.plots:
        return
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
        address = connection.ui_address(config.tracking.uri)
        how = "" if address != connection.ui_address("") else "open the UI with `make ui`, then "
        lines += [
            f"MLflow run {summary.run_id} in experiment '{config.experiment_name}' "
            f"at {config.tracking.uri}",
            how + connection.run_url(summary.experiment_id, summary.run_id, address),
        ]
    else:
        lines.append("tracking=off: nothing was recorded in MLflow")
    return "\n".join(lines)
