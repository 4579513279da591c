"""Writing a run: ``open_run``, its metrics, params, tags, artifacts, dataset inputs and model.

A run is opened with ``open_run`` as a context manager: it ends FINISHED when the block ends,
FAILED when it raises (the error is recorded as a tag and a text artifact), KILLED on Ctrl-C or
SIGTERM (``Terminated``, see ``pipeline.sigterm_ends_run``). Metrics are buffered and sent in
one ``log_batch`` at most every 5 s (MLflow's own async logging costs ~0.7 s at run end waiting
for its queue); the buffer is flushed before the run's status is set, also when it fails, so
nothing logged is lost. ``open_run(buffered=True)`` into a local database store gives a
``BufferedRun`` instead, which writes everything it logged with its final status in one
transaction at its end (a replica of a trained batch, whose numbers are all known by then).

A tracking server that stops answering fails the run's job within seconds
(``TrackingUnavailableError``, naming the server, the run and how many metric values were not
sent): MLflow's HTTP retries are bounded for our client (``bound_http_retries``), and a run that
could not be marked FAILED is marked by the end of its sweep, or of the sweep's re-run, once the
server is back (``fail_orphaned_children``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import (
    Metric,
    Param,
    RunTag,
)
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from sqlalchemy.exc import SQLAlchemyError

from xent_tf.track import connection, disk_reserve, sql_runs
from xent_tf.track.artifacts import (
    METRIC_BATCH,
    MODEL_NAME,
    SERIES_DIR,
    DatasetSplit,
    dataset_input_record,
    dataset_inputs,
    fit_run_name,
    log_dataset_inputs,
    metric_name,
    publish_model,
    save_model,
    send_metrics,
    send_params,
    series_file_name,
)
from xent_tf.track.artifacts import flatten as flatten  # a run's params (writing.flatten)
from xent_tf.track.connection import (
    TrackingUnauthorizedError,
    TrackingUnavailableError,
    authorised,
    cached_experiment_id,
    denied,
    get_or_create_experiment,
    mlflow_client,
    who,
)
from xent_tf.track.recovery import replay_spool
from xent_tf.track.run_record import RunStatus
from xent_tf.track.spool import (
    SpoolHeader,
    SpoolWriter,
)

log = logging.getLogger(__name__)


# Per-epoch metrics are sent at most this often: one SQLite transaction per epoch of a
# 40 ms epoch would cost more than the training. Everything is flushed before a run ends.
_FLUSH_SECONDS = 5.0


# How long a run whose server went away waits for it at its end before leaving its spool.
_SPOOL_WAIT_SECONDS = "20"


class RunTerminated(Exception):
    """The process got SIGTERM while a run was open; the run ended KILLED.

    An ``Exception`` so that a sweep job that was terminated fails like any other job and the
    rest of the sweep goes on (``pipeline.run_experiment`` raises it in place of
    ``Terminated``).
    """


class Terminated(BaseException):
    """Raised by the SIGTERM handler wherever training is: the run ends KILLED.

    A ``BaseException`` so that no ``except Exception`` on the way catches or converts it
    (TensorFlow turns an exception raised while it binds a function's inputs into a TypeError).
    """


def log_file_quietly(recorder: RunRecorder, path: Path, artifact_dir: str) -> None:
    """Upload a file, logging instead of raising when the store fails (used while failing)."""
    try:
        recorder.log_file(path, artifact_dir)
    except Exception:
        log.exception("could not upload %s to MLflow", path)


class RunRecorder(Protocol):
    """What the pipeline logs through; ``MlflowRun`` and ``NoTracking`` both provide it."""

    run_id: str
    experiment_id: str

    def log_params(self, params: Mapping[str, str]) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_series(self, series: Mapping[str, Sequence[float] | np.ndarray]) -> None: ...
    def log_file(self, path: Path, artifact_dir: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_model(self, model: Any, input_example: np.ndarray, step: int) -> str: ...
    def log_datasets(
        self, splits: Mapping[str, DatasetSplit], name: str, source: Mapping[str, str]
    ) -> None: ...


def step_metrics(metrics: Mapping[str, float], step: int) -> list[Metric]:
    """One step's metrics as MLflow's, stamped now.

    Args:
        metrics: {name: value}.
        step: their step.

    Returns:
        The metrics.
    """
    now = sql_runs.now_millis()
    return [Metric(k, float(v), now, step) for k, v in metrics.items()]


def series_metrics(series: Mapping[str, Sequence[float] | np.ndarray]) -> list[Metric]:
    """Whole per-step series ({name: values}, step = index) as MLflow's metrics, stamped now.

    Args:
        series: {name: its values, one per step}.

    Returns:
        The metrics, series by series in step order.
    """
    now = sql_runs.now_millis()
    return [
        Metric(name, float(value), now, step)
        for name, values in series.items()
        for step, value in enumerate(values)
    ]


@dataclass
class MlflowRun:
    """An open MLflow run (use ``open_run``)."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    tracking_uri: str
    _buffer: list[Metric] = field(default_factory=list)
    _last_flush: float = field(default_factory=time.monotonic)
    # The last value logged of each metric (a logged model is linked to the final ones).
    _latest: dict[str, Metric] = field(default_factory=dict)
    # Where records go once the server stopped answering (None: the run fails instead).
    spool: SpoolWriter | None = None
    _spooling: bool = False
    # The run's artifact location, known from its creation ("": ask the store). MLflow's
    # client reads the whole run back to find it before a run's first artifact.
    artifact_uri: str = ""
    _artifact_repo: ArtifactRepository | None = None

    def _upload(self, path: Path, artifact_dir: str | None) -> None:
        """Upload a file into the run's artifacts (``artifact_dir``: a folder of them)."""
        if not self.artifact_uri:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_dir)
            return
        if self._artifact_repo is None:
            self._artifact_repo = get_artifact_repository(
                self.artifact_uri, tracking_uri=self.tracking_uri
            )
        self._artifact_repo.log_artifact(str(path), artifact_dir)

    def _upload_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` (a path within the run's)."""
        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            path.write_text(text, encoding="utf-8")
            self._upload(path, folder or None)

    def _deliver(
        self,
        action: str,
        send: Callable[[], object],
        kind: str,
        data: Callable[[], dict[str, Any]],
    ) -> None:
        """Send a record; once the server stopped answering, spool it instead."""
        if not self._spooling:
            try:
                with self._store(action):
                    send()
                return
            except TrackingUnauthorizedError:
                raise
            except TrackingUnavailableError as error:
                if self.spool is None:
                    raise
                self._start_spooling(error)
        assert self.spool is not None
        self.spool.append(kind, data())

    def _deliver_metrics(self, batch: list[Metric]) -> None:
        self._deliver(
            "sending metrics",
            lambda: send_metrics(self.client, self.run_id, batch),
            "metrics",
            lambda: {"metrics": [[m.key, m.value, m.timestamp, m.step] for m in batch]},
        )

    def _start_spooling(self, error: TrackingUnavailableError) -> None:
        assert self.spool is not None
        self._spooling = True
        log.warning(
            "%s; the run goes on and keeps what it cannot send in %s", error, self.spool.path
        )

    @contextmanager
    def _store(self, action: str) -> Iterator[None]:
        """Turn a failed request to a server that no longer answers into a clear error."""
        try:
            yield
        except Exception as error:
            if connection.server_answers(self.tracking_uri):
                if denied(error):
                    raise TrackingUnauthorizedError(
                        f"not authorised: MLflow tracking server {self.tracking_uri} refused "
                        f"{who()} while {action} for run {self.run_id} ({error})"
                    ) from error
                raise  # the server is up: a real error (bad value, full disk...), as it is
            unsent = len(self._buffer)
            lost = f"; {unsent} metric values were not sent" if unsent else ""
            raise TrackingUnavailableError(
                f"MLflow tracking server {self.tracking_uri} stopped answering while {action} "
                f"for run {self.run_id}{lost} ({str(error)[:300]})"
            ) from error

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params in batches of MLflow's maximum size."""
        items = [Param(k, v) for k, v in params.items()]

        self._deliver(
            "logging params",
            lambda: send_params(self.client, self.run_id, items),
            "params",
            lambda: {"params": dict(params)},
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags in one batch."""
        texts = {k: str(v) for k, v in tags.items()}
        self._deliver(
            "setting tags",
            lambda: self.client.log_batch(
                self.run_id, tags=[RunTag(k, v) for k, v in texts.items()]
            ),
            "tags",
            lambda: {"tags": texts},
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer one step's metrics; send the buffer when ``_FLUSH_SECONDS`` have passed."""
        logged = step_metrics(metrics, step)
        self._buffer.extend(logged)
        self._latest.update((m.key, m) for m in logged)
        if time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self.flush()

    def log_series(self, series: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Log whole per-step series ({name: values}, step = index) at once."""
        self._buffer.extend(series_metrics(series))
        self.flush()

    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        """Upload a local file as an artifact under ``artifact_dir``."""
        spool = self.spool
        self._deliver(
            f"uploading {path.name}",
            lambda: self._upload(path, artifact_dir),
            "artifact",
            lambda: {"file": spool.keep_file(path) if spool else "", "artifact_dir": artifact_dir},
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file``."""
        self._deliver(
            f"uploading {artifact_file}",
            lambda: self._upload_text(text, artifact_file),
            "text",
            lambda: {"text": text, "artifact_file": artifact_file},
        )

    def log_model(self, model: Any, input_example: np.ndarray, step: int) -> str:
        """``_send_model``; while the server is away, the model is saved in the spool instead
        (its id, "" returned then, is given when the spool is replayed)."""
        self.flush()  # the final metrics first: the model links to them
        sent: list[str] = []
        self._deliver(
            "logging the model",
            lambda: sent.append(self._send_model(model, input_example, step)),
            "model",
            lambda: self._keep_model(model, input_example, step),
        )
        return sent[0] if sent else ""

    def log_datasets(
        self, splits: Mapping[str, DatasetSplit], name: str, source: Mapping[str, str]
    ) -> None:
        """Record the run's data splits as MLflow dataset inputs (spooled while the server is
        away).

        Args:
            splits: {split name ("train", "val", "test"): its arrays}; the split is the
                input's context.
            name: the dataset's name (e.g. the data config's name).
            source: how the data was made ({"generator": ..., "n_samples": ...}), stored as
                the dataset's source.
        """
        inputs = dataset_inputs(splits, name, source)
        self._deliver(
            "logging the datasets",
            lambda: log_dataset_inputs(self.client, self.run_id, inputs),
            "datasets",
            lambda: {"inputs": [dataset_input_record(i) for i in inputs]},
        )

    def _keep_model(self, model: Any, input_example: np.ndarray, step: int) -> dict[str, Any]:
        """Save the model in the spool as an MLflow model directory (its logged model's id is
        written in when the spool is replayed); returns the spool record."""
        assert self.spool is not None
        local, name = self.spool.new_place(MODEL_NAME)
        save_model(model, input_example, local, self.run_id, None)
        linked = [[m.key, m.value, m.timestamp, m.step] for m in self._linked_metrics(step)]
        return {"file": name, "step": step, "linked": linked}

    def _linked_metrics(self, step: int) -> list[Metric]:
        """The last value of each metric if logged at ``step``: what a logged model links to."""
        return [m for m in self._latest.values() if m.step == step]

    def _send_model(self, model: Any, input_example: np.ndarray, step: int) -> str:
        """Log a trained Keras model as an MLflow logged model of this run.

        Saved with the tensorflow flavour; its signature is the model's input and output
        shapes (float32, any number of rows), its pip requirements the installed versions of
        ``_MODEL_REQUIREMENTS``; the run's metrics at ``step`` (its final ones) are linked to
        it, so the model's page shows them. Assembled from the client's logged-model calls
        rather than ``mlflow.tensorflow.log_model``, which also reloads the model to validate
        the input example and re-reads every metric's history: 0.29 -> ~0.1 s per run.

        Args:
            model: a built ``keras.Model`` with one input and one output.
            input_example: a few input rows, stored with the model.
            step: the step whose metrics the model is linked to (the last epoch).

        Returns:
            The logged model's id (load it with ``mlflow.pyfunc.load_model("models:/<id>")``).
        """
        with tempfile.TemporaryDirectory() as scratch:
            logged = self.client.create_logged_model(
                self.experiment_id, name=MODEL_NAME, source_run_id=self.run_id
            )
            local = Path(scratch) / MODEL_NAME
            save_model(model, input_example, local, self.run_id, logged)
            publish_model(
                self.client, self.run_id, logged.model_id, local, step, self._linked_metrics(step)
            )
        return str(logged.model_id)

    def flush(self) -> None:
        """Send every buffered metric now, in batches of MLflow's maximum size.

        A batch leaves the buffer only once the store took it: after a failure, the next flush
        (e.g. when the run is closed, should the server be back) sends it again.
        """
        while self._buffer:
            batch = self._buffer[:METRIC_BATCH]
            self._deliver_metrics(batch)
            del self._buffer[: len(batch)]
        self._last_flush = time.monotonic()

    def end(self, status: RunStatus) -> None:
        """Set the run's final status; a spooling run waits for the server, then replays.

        Raises:
            TrackingUnavailableError: the server did not come back within
                ``XENT_SPOOL_WAIT_SECONDS``; everything, the status included, is in the spool.
        """
        self._deliver(
            f"marking it {status}",
            lambda: self.client.set_terminated(self.run_id, status=status),
            "status",
            lambda: {"status": status},
        )
        if not self._spooling:
            return
        assert self.spool is not None
        wait = float(os.environ.get("XENT_SPOOL_WAIT_SECONDS", _SPOOL_WAIT_SECONDS))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not connection.server_answers(self.tracking_uri):
            time.sleep(1.0)
        if connection.server_answers(self.tracking_uri):
            replayed = replay_spool(self.spool.path, None)
            log.info("the tracking server is back: run %s replayed %s", self.run_id, replayed)
            self._spooling = False
            return
        raise TrackingUnavailableError(
            f"MLflow tracking server {self.tracking_uri} did not come back within {wait:.0f} s "
            f"for run {self.run_id}: its {self.spool.records} undelivered records (final "
            f"status {status}) are kept in {self.spool.path}; once the server is back, a "
            "re-run of the sweep or `python experiments/report.py --sync DIR` sends them"
        )


@dataclass
class BufferedRun(MlflowRun):
    """An open run in a local database store that writes its records when it ends.

    Params, tags, metrics and dataset inputs are checked as they are logged (a bad value
    raises there, as MLflow would) and kept in memory; ``end`` writes them with the run's final
    status in one transaction (``sql_runs.PendingRecords``), also when the run failed, so a
    FAILED run keeps its partial metrics and its ``error`` tag. A write that failed keeps them
    for the next try (``_close_after_error`` frees the disk reserve and ends it again).
    Artifacts (config.yaml, series, the log, model files) are uploaded at once, as
    ``MlflowRun`` uploads them. Made by ``open_run(buffered=True)`` when the store is one
    ``sql_runs.buffered_store`` accepts; a run that logs an MLflow logged model writes what it
    holds first (the model links to the run's metrics) and the model through MLflow's calls.
    """

    store: Any = None
    pending: sql_runs.PendingRecords = field(default_factory=sql_runs.PendingRecords)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Keep params for the run's end (a key kept with another value is refused now)."""
        self.pending.add_params(self.run_id, [Param(k, v) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Keep tags for the run's end."""
        self.pending.add_tags({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Keep one step's metrics for the run's end."""
        logged = step_metrics(metrics, step)
        self.pending.add_metrics(logged)
        self._latest.update((m.key, m) for m in logged)

    def log_series(self, series: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Keep whole per-step series ({name: values}, step = index) for the run's end."""
        self.pending.add_metrics(series_metrics(series))

    def log_datasets(
        self, splits: Mapping[str, DatasetSplit], name: str, source: Mapping[str, str]
    ) -> None:
        """Keep the run's data splits as MLflow dataset inputs for its end (``MlflowRun``'s
        arguments)."""
        self.pending.add_inputs(dataset_inputs(splits, name, source))

    def log_model(self, model: Any, input_example: np.ndarray, step: int) -> str:
        """Write what the run holds (the model links to its metrics), then log the model as
        ``MlflowRun`` does."""
        with self._store("writing its records"):
            self.pending.write(self.store, self.run_id, None, None)
        return super().log_model(model, input_example, step)

    def flush(self) -> None:
        """Nothing: the records are written when the run ends."""

    def end(self, status: RunStatus) -> None:
        """Write the run's records with its final status and end time, in one transaction.

        A failed run whose records do not fit on a full disk (its reserve freed already, see
        ``_close_after_error``) still ends FAILED/KILLED with its params and tags, the
        ``error`` tag saying what could not be written: a run is never left RUNNING for want
        of room for its metrics.
        """
        with self._store(f"marking it {status}"):
            try:
                self.pending.write(self.store, self.run_id, str(status), sql_runs.now_millis())
            except Exception as error:
                if status == RunStatus.FINISHED or not disk_reserve.is_out_of_room(error):
                    raise
                lost = self.pending.drop_bulk()
                log.error("run %s: no room for its records on a full disk: %s", self.run_id, lost)
                reason = self.pending.tags.get("error", "")
                self.pending.add_tags({"error": f"{reason} ({lost})" if reason else lost})
                self.pending.write(self.store, self.run_id, str(status), sql_runs.now_millis())


@dataclass
class NoTracking:
    """Stands in for ``MlflowRun`` with ``tracking=off``: records nothing."""

    run_id: str = "-"
    experiment_id: str = "-"

    def log_params(self, params: Mapping[str, str]) -> None:
        """Record nothing."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Record nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record nothing."""

    def log_series(self, series: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Record nothing."""

    def log_file(self, path: Path, artifact_dir: str | None = None) -> None:
        """Record nothing."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Record nothing."""

    def log_model(self, model: Any, input_example: np.ndarray, step: int) -> str:
        """Record nothing; returns "-"."""
        return "-"

    def log_datasets(
        self, splits: Mapping[str, DatasetSplit], name: str, source: Mapping[str, str]
    ) -> None:
        """Record nothing."""


def start_parent_run(
    tracking_uri: str, experiment_name: str, run_name: str, tags: Mapping[str, str]
) -> tuple[str, str]:
    """Create a sweep's parent run (left RUNNING until ``end_run``).

    Returns:
        (run id, experiment id).
    """
    client = mlflow_client(tracking_uri)
    with authorised(tracking_uri, f"create a run in experiment {experiment_name!r}"):
        experiment_id = get_or_create_experiment(client, experiment_name)
        run = client.create_run(experiment_id, run_name=fit_run_name(run_name), tags=dict(tags))
    return run.info.run_id, experiment_id


def reopen_run(tracking_uri: str, run_id: str, experiment_id: str) -> bool:
    """Set an ended run back to RUNNING (a sweep re-run into the same sweep directory).

    Args:
        tracking_uri: the store.
        run_id: the run.
        experiment_id: the experiment it must belong to.

    Returns:
        False when the store has no such run in that experiment (nothing changed).
    """
    client = mlflow_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return False
    with authorised(tracking_uri, f"reopen run {run_id}"):
        client.update_run(run_id, status=RunStatus.RUNNING)
    return True


ORPHAN_ERROR = (
    "OrphanedRun: the job ended without recording its status (was the tracking server "
    "unreachable when it ended?); marked FAILED at the end of the sweep"
)


def fail_orphaned_children(tracking_uri: str, parent_run_id: str, experiment_id: str) -> list[str]:
    """Mark FAILED every child of a sweep still RUNNING after all its jobs returned.

    A job whose tracking server stopped answering could not end its own run; left alone it
    would show as RUNNING forever.

    Returns:
        The ids of the runs marked.
    """
    client = mlflow_client(tracking_uri)
    stuck = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            f"and attributes.status = '{RunStatus.RUNNING}'"
        ),
        max_results=10_000,
    )
    for run in stuck:
        client.set_tag(run.info.run_id, "error", ORPHAN_ERROR)
        client.set_terminated(run.info.run_id, status=RunStatus.FAILED)
    return [run.info.run_id for run in stuck]


def end_run(
    tracking_uri: str, run_id: str, status: RunStatus, only_if_running: bool = False
) -> None:
    """Set a run's final status (FINISHED, FAILED or KILLED).

    Args:
        tracking_uri: the store.
        run_id: the run.
        status: its final status.
        only_if_running: leave a run that already ended as it is.
    """
    client = mlflow_client(tracking_uri)
    if only_if_running and client.get_run(run_id).info.status != RunStatus.RUNNING:
        return
    client.set_terminated(run_id, status=status)


@contextmanager
def open_run(
    tracking_uri: str,
    experiment_name: str,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    spool_dir: Path | None = None,
    buffered: bool = False,
) -> Iterator[MlflowRun]:
    """Create an MLflow run and end it with the right status, whatever happens inside.

    Args:
        tracking_uri: where to record.
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's display name.
        parent_run_id: make this run a child of that one (a sweep's parent run).
        tags: initial tags.
        spool_dir: where to keep what the run cannot send if the server stops answering
            (``spool.SPOOL_FILE``; the run goes on and replays it at its end, or leaves it for
            ``replay_spool``). None: the run fails when the server stops answering.
        buffered: in a local database store (``sql_runs.buffered_store``), keep the run's
            params, tags, metrics and dataset inputs in memory and write them with its final
            status in one transaction (``BufferedRun``): for a run whose numbers are all known
            when it is recorded (a trained replica). Its records are not visible while it
            runs. Any other store records as without it (the spool applies there).

    Yields:
        The open run. On an exception the run ends FAILED with the error as the tag
        ``error`` and the traceback as ``error.txt``; on KeyboardInterrupt or SIGTERM
        (``Terminated``) it ends KILLED. When the tracking server itself stopped answering,
        the run cannot be ended: the error says so, and the sweep's end marks it later.

    Raises:
        TrackingUnavailableError: the store cannot create the run (a locked, full or damaged
            SQLite file: the message names the store and why), or the server stopped answering
            (the original error otherwise).
    """
    initial_tags = dict(tags or {})
    if parent_run_id:
        initial_tags["mlflow.parentRunId"] = parent_run_id
    with (
        _store_refusal(tracking_uri, experiment_name),
        authorised(tracking_uri, f"create a run in experiment {experiment_name!r}"),
    ):
        disk_reserve.keep_reserve(tracking_uri)  # room to end the run should its disk fill
        client = mlflow_client(tracking_uri)  # opening a damaged or full SQLite store fails here
        store = sql_runs.buffered_store(client) if buffered else None
        experiment_id = cached_experiment_id(client, tracking_uri, experiment_name, refresh=False)
        try:
            run_id, artifact_uri = _create_run(
                client, store, experiment_id, fit_run_name(run_name), initial_tags
            )
        except mlflow.exceptions.MlflowException:
            # The experiment this process knew was deleted (or the store replaced) since.
            experiment_id = cached_experiment_id(
                client, tracking_uri, experiment_name, refresh=True
            )
            run_id, artifact_uri = _create_run(
                client, store, experiment_id, fit_run_name(run_name), initial_tags
            )
    recorder = (
        MlflowRun(client, run_id, experiment_id, tracking_uri, artifact_uri=artifact_uri)
        if store is None
        else BufferedRun(
            client, run_id, experiment_id, tracking_uri, artifact_uri=artifact_uri, store=store
        )
    )
    if spool_dir is not None and store is None:
        recorder.spool = SpoolWriter(
            spool_dir, SpoolHeader(run_id, experiment_id, tracking_uri, parent_run_id or "")
        )
    try:
        yield recorder
        recorder.flush()
        if store is not None:
            # A buffered run's records are written here: should the store refuse them (a full
            # disk), the run ends FAILED with them and the reason, like a failure in the block.
            recorder.end(RunStatus.FINISHED)
    except BaseException as error:
        _close_after_error(recorder, error)
        raise
    if store is None:
        recorder.end(RunStatus.FINISHED)


def _create_run(
    client: MlflowClient,
    store: Any | None,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
) -> tuple[str, str]:
    """Create a RUNNING run: by MLflow's client, or into ``store`` (a ``BufferedRun``'s, from
    ``sql_runs.buffered_store``) with ``sql_runs.create_run``.

    Returns:
        (the run's id, its artifact URI).
    """
    if store is not None:
        return sql_runs.create_run(store, experiment_id, run_name, tags, sql_runs.now_millis())
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    return run.info.run_id, run.info.artifact_uri


@contextmanager
def _store_refusal(tracking_uri: str, experiment_name: str) -> Iterator[None]:
    """A store that cannot create the run (a locked, full or damaged SQLite file, a database
    that says no) fails as ``TrackingUnavailableError`` naming the store and why."""
    try:
        yield
    except TrackingUnavailableError:
        raise
    except disk_reserve.NoRoomForRunError as error:
        raise TrackingUnavailableError(
            f"tracking.uri={tracking_uri!r}: the store cannot create a run in experiment "
            f"{experiment_name!r}: {error.strerror}"
        ) from error
    except (mlflow.exceptions.MlflowException, SQLAlchemyError, sqlite3.Error, OSError) as error:
        reason = str(error).split("\n", 1)[0].split(" [SQL:", 1)[0]
        database = connection.sqlite_file(tracking_uri)
        if database is not None and "disk" in reason:
            directory = database.resolve().parent
            with contextlib.suppress(OSError):
                reason += f" ({shutil.disk_usage(directory).free} bytes free on its disk)"
        raise TrackingUnavailableError(
            f"tracking.uri={tracking_uri!r}: the store cannot create a run in experiment "
            f"{experiment_name!r}: {reason}"
        ) from error


def _status_for(error: BaseException) -> RunStatus:
    """KILLED for an interrupt or termination, FAILED for anything else."""
    killed = isinstance(error, KeyboardInterrupt | SystemExit | Terminated | RunTerminated)
    return RunStatus.KILLED if killed else RunStatus.FAILED


def _close_after_error(recorder: MlflowRun, error: BaseException) -> None:
    """Record why a run stopped and end it FAILED/KILLED, never masking the original error."""
    status = _status_for(error)
    if isinstance(error, TrackingUnavailableError) and not connection.server_answers(
        recorder.tracking_uri
    ):
        # Every further request would wait out its retries only to fail the same way.
        log.error(
            "MLflow run %s could not be marked %s: %s is unreachable; it stays RUNNING there "
            "until the sweep's end (or a re-run of the sweep) marks it FAILED",
            recorder.run_id,
            status,
            recorder.tracking_uri,
        )
        return
    if disk_reserve.is_out_of_room(error):
        disk_reserve.release_reserve(recorder.tracking_uri)
    _record_error(recorder, error, error.__traceback__)
    try:
        recorder.end(status)
    except Exception as end_error:
        # The disk may have filled only now (a store error that did not say so, or another
        # process's writes): free the reserve, if still there, and try once more.
        if not disk_reserve.release_reserve(recorder.tracking_uri):
            log.exception("could not mark MLflow run %s %s", recorder.run_id, status)
            return
        try:
            recorder.end(status)
        except Exception:
            log.exception(
                "could not mark MLflow run %s %s (first: %s)", recorder.run_id, status, end_error
            )


def _record_error(recorder: MlflowRun, error: BaseException, trace: TracebackType | None) -> None:
    """Keep the reason a run stopped, without masking the original error."""
    message = f"{type(error).__name__}: {error}"
    try:
        recorder.flush()
        recorder.set_tags({"error": message[:5000]})
        recorder.log_text("".join(traceback.format_exception(error)), "error.txt")
    except Exception:  # the store itself may be what failed
        log.exception("could not record the error in MLflow run %s", recorder.run_id)


def log_series_artifact(
    recorder: RunRecorder, metric: str, values: np.ndarray, directory: Path
) -> None:
    """Save a per-step series as ``<directory>/series/<metric>.npy`` and log it under ``series/``.

    Args:
        recorder: the run's record.
        metric: the series' name (e.g. ``train/batch_loss``).
        values: one value per step.
        directory: the run's local output directory.
    """
    path = directory / SERIES_DIR / series_file_name(metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(values, dtype=np.float32))
    recorder.log_file(path, SERIES_DIR)


def log_files(tracking_uri: str, run_id: str, files: Mapping[Path, str | None]) -> None:
    """Upload {local file: artifact dir} to an existing run (e.g. a sweep's parent)."""
    client = mlflow_client(tracking_uri)
    for path, artifact_dir in files.items():
        client.log_artifact(run_id, str(path), artifact_path=artifact_dir)


def log_run_summary(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], note: str
) -> None:
    """Log summary metrics (step 0) and the run's description (``mlflow.note.content``, which
    the run page's Overview renders as Markdown) on an existing run, in one request."""
    client = mlflow_client(tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(metric_name(k), float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag("mlflow.note.content", fit_note(note))],
    )


_NOTE_CUT = "\n\n*(Cut here to fit MLflow's {limit:,}-character limit: the whole report is in "


_NOTE_CUT += "this run's Artifacts, report.html and report.md.)*\n"


def fit_note(note: str, limit: int = MAX_TAG_VAL_LENGTH) -> str:
    """A run description that fits MLflow's tag limit: cut at a line end, saying so (MLflow
    itself would cut it mid-row, with a warning).

    Args:
        note: Markdown text.
        limit: most characters kept.

    Returns:
        ``note``, or its first lines and a line saying where the rest is.
    """
    if len(note) <= limit:
        return note
    tail = _NOTE_CUT.format(limit=limit)
    head = note[: limit - len(tail)]
    return head[: head.rfind("\n") + 1].rstrip("\n") + tail


def set_run_tags(tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on an existing run."""
    client = mlflow_client(tracking_uri)
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
