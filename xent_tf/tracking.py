"""MLflow records of runs. The only module that imports mlflow.

A run is opened with ``open_run`` as a context manager: it ends FINISHED when the block ends,
FAILED when it raises (the error is recorded as a tag and a text artifact), KILLED on Ctrl-C or
SIGTERM (``Terminated``, see ``pipeline.sigterm_ends_run``). Metrics are buffered and sent in
one ``log_batch`` at most every 5 s (MLflow's own async logging costs ~0.7 s at run end waiting
for its queue); the buffer is flushed before the run's status is set, also when it fails, so
nothing logged is lost.

A tracking server that stops answering fails the run's job within seconds
(``TrackingUnavailableError``, naming the server, the run and how many metric values were not
sent): MLflow's HTTP retries are bounded for our client (``bound_http_retries``), and a run that
could not be marked FAILED is marked by the end of its sweep, or of the sweep's re-run, once the
server is back (``fail_orphaned_children``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import sqlite3
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.numpy_dataset import from_numpy
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModel,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.models import Model, ModelSignature
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.types import Schema, TensorSpec
from mlflow.utils.credentials import read_mlflow_creds
from mlflow.utils.file_utils import get_local_path_or_none
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from sqlalchemy import event
from sqlalchemy.engine import Engine

from xent_tf import sql_metrics
from xent_tf.comparison import RunRecord
from xent_tf.resume import CONFIG_HASH_TAG, FinishedJob
from xent_tf.spool import (
    SpoolHeader,
    SpoolWriter,
    find_spools,
    mark_replayed,
    read_spool,
    spooled_file,
)

log = logging.getLogger(__name__)
# Tries at linking a run's dataset inputs (see MlflowRun.log_datasets).
_DATASET_ATTEMPTS = 3


@event.listens_for(Engine, "connect")
def _sqlite_write_ahead_log(connection: object, _record: object) -> None:
    """Open SQLite stores in write-ahead-log mode with NORMAL syncing.

    Each MLflow call is its own transaction; in SQLite's default rollback-journal mode every
    commit syncs the file twice, and a writer blocks readers (parallel sweep jobs, the UI).
    WAL lets readers and the writer proceed together, and NORMAL syncs at checkpoints only
    (still corruption-safe). Measured: MLflow's time per reference run 0.060 -> 0.050 s.
    """
    if not isinstance(connection, sqlite3.Connection):
        return
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as error:  # e.g. a read-only file: keep SQLite's defaults
        log.debug("SQLite store stays in its default journal mode: %s", error)


# MLflow caps a param value at 6000 characters and a batch at 100 params / 1000 metrics.
_MAX_PARAM_LENGTH = 6000
# A run name is VARCHAR(250) in MLflow's SQL schema: PostgreSQL rejects a longer one (a sweep
# job's name is its Hydra overrides, easily longer); SQLite would have kept it.
_MAX_RUN_NAME = 250
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
# Per-epoch metrics are sent at most this often: one SQLite transaction per epoch of a
# 40 ms epoch would cost more than the training. Everything is flushed before a run ends.
_FLUSH_SECONDS = 5.0
_UI_ADDRESS = "http://127.0.0.1:5000"
# MLflow's HTTP client retries a failed request 7 times with backoff factor 2 and a 120 s
# timeout: minutes before a dead server fails a job (meant to ride out a hosted service's rate
# limits). Our server is on the same network: 3 retries at 0, 2, 4 s ride out a restart and
# fail a job ~7 s after the server died. Variables the user has set are left alone.
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
# How long a quick "is the server still there?" probe waits, after a request already failed.
_PROBE_SECONDS = 2.0
# How long a run whose server went away waits for it at its end before leaving its spool.
_SPOOL_WAIT_SECONDS = "20"


class TrackingUnavailableError(RuntimeError):
    """The tracking store cannot be reached or written."""


class TrackingUnauthorizedError(TrackingUnavailableError):
    """The tracking server refuses this client: no or wrong credentials, or no permission to
    write to the experiment (its message says "not authorised" and names the server)."""


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


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def bound_http_retries() -> None:
    """Give MLflow's HTTP client short retries (``HTTP_RETRY_DEFAULTS``) unless the user set them.

    MLflow reads these variables at every request, so this takes effect at once; child
    processes (parallel sweep jobs) inherit them.
    """
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient; for a server, with bounded retries."""
    if _is_http(tracking_uri):
        bound_http_retries()
    return MlflowClient(tracking_uri=tracking_uri)


def _send_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    """``log_batch`` of metrics; into a local database store, ``sql_metrics.log_metrics`` (the
    same rows, one insert instead of one ORM object per value)."""
    store = sql_metrics.fast_store(client)
    if store is None or not sql_metrics.log_metrics(store, run_id, metrics):
        client.log_batch(run_id, metrics=metrics)


def _send_params(client: MlflowClient, run_id: str, params: list[Param]) -> None:
    """``log_batch`` of params in batches of MLflow's maximum size; into a local database
    store, ``sql_metrics.log_params`` (one insert)."""
    store = sql_metrics.fast_store(client)
    if store is not None:
        sql_metrics.log_params(store, run_id, params)
        return
    for start in range(0, len(params), _PARAM_BATCH):
        client.log_batch(run_id, params=params[start : start + _PARAM_BATCH])


def server_answers(tracking_uri: str, timeout_seconds: float = _PROBE_SECONDS) -> bool:
    """Whether a tracking server's /health answers now (always True for a local store)."""
    if not _is_http(tracking_uri):
        return True
    try:
        with urllib.request.urlopen(
            tracking_uri.rstrip("/") + "/health", timeout=timeout_seconds
        ) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client would send: MLFLOW_TRACKING_USERNAME / _PASSWORD (or
    ~/.mlflow/credentials) as basic auth, else MLFLOW_TRACKING_TOKEN as a bearer token."""
    creds = read_mlflow_creds()
    if creds.username and creds.password:
        pair = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _who() -> str:
    """Who this client says it is, for messages ("user 'alice'" or "no credentials")."""
    username = read_mlflow_creds().username
    if username:
        return f"user {username!r}"
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the token in MLFLOW_TRACKING_TOKEN"
    return "a client without credentials"


_CREDENTIALS_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account the server's "
    "admin created (README: Accounts on the team server)"
)


def check_credentials(uri: str, timeout_seconds: float = 5.0) -> None:
    """Fail when a tracking server refuses this client's credentials (a server with accounts).

    Args:
        uri: ``http(s)://host:port`` of a server that answers /health.
        timeout_seconds: how long to wait for the answer.

    Raises:
        TrackingUnauthorizedError: HTTP 401 or 403 to an authenticated read.
    """
    request = urllib.request.Request(
        uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1",
        headers=_auth_headers(),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds):
            return
    except urllib.error.HTTPError as error:
        if error.code not in (401, 403):
            return  # not about who we are: the store's own calls report it with its context
        raise TrackingUnauthorizedError(
            f"not authorised by MLflow tracking server {uri}: it refused {_who()} "
            f"(HTTP {error.code}); {_CREDENTIALS_HINT}"
        ) from error
    except (urllib.error.URLError, OSError):
        return  # /health answered a moment ago: a passing hiccup, the run's calls will retry


def _denied(error: BaseException) -> bool:
    """Whether an MLflow error is the server refusing this client (401/403)."""
    code = getattr(error, "error_code", "")
    return code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or (
        "You are not authenticated" in str(error)
    )


@contextmanager
def _authorised(tracking_uri: str, action: str) -> Iterator[None]:
    """Turn the server's refusal of this client into a clear ``TrackingUnauthorizedError``."""
    try:
        yield
    except mlflow.exceptions.MlflowException as error:
        if not _denied(error):
            raise
        raise TrackingUnauthorizedError(
            f"not authorised: MLflow tracking server {tracking_uri} does not let {_who()} "
            f"{action} ({error.error_code}); ask the experiment's owner or the server's admin "
            "for EDIT permission, or log to an experiment of your own"
        ) from error


def check_tracking_uri(uri: str, timeout_seconds: float = 5.0) -> None:
    """Fail fast, before any training, when the tracking store is unusable.

    Args:
        uri: ``sqlite:///path``, ``http(s)://host:port`` or a database URL.
        timeout_seconds: how long to wait for a server's health endpoint.

    Raises:
        TrackingUnavailableError: the server does not answer, or the SQLite file's directory
            does not exist or is not writable.
        TrackingUnauthorizedError: the server has accounts and refuses this client's.
    """
    if _is_http(uri):
        bound_http_retries()
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout_seconds) as response:
                if response.status != 200:
                    raise TrackingUnavailableError(f"{health} answered HTTP {response.status}")
        except (urllib.error.URLError, OSError) as error:
            raise TrackingUnavailableError(
                f"MLflow tracking server {uri} is unreachable ({error}); start one with "
                "`make server`, pass tracking.uri=http://HOST:PORT, or use tracking=sqlite"
            ) from error
        check_credentials(uri, timeout_seconds)
    elif uri.startswith("sqlite:///"):
        directory = Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingUnavailableError(
                f"tracking.uri={uri!r}: directory {directory} does not exist or is not writable"
            )


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"}; lists become their string form."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


def mlflow_version() -> str:
    """The installed MLflow version (for run tags)."""
    return str(mlflow.__version__)


def log_file_quietly(recorder: RunRecorder, path: Path, artifact_dir: str) -> None:
    """Upload a file, logging instead of raising when the store fails (used while failing)."""
    try:
        recorder.log_file(path, artifact_dir)
    except Exception:
        log.exception("could not upload %s to MLflow", path)


def ui_address(tracking_uri: str) -> str:
    """Where the UI for a store is: the server itself, or `make ui` on the local SQLite file."""
    if _is_http(tracking_uri):
        return tracking_uri.rstrip("/")
    return _UI_ADDRESS


def run_url(experiment_id: str, run_id: str, ui_address: str = _UI_ADDRESS) -> str:
    """Direct link to a run's charts in the MLflow UI (the runs table lives at .../runs)."""
    return f"{ui_address}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics"


def experiment_url(experiment_id: str, ui_address: str = _UI_ADDRESS) -> str:
    """Direct link to an experiment's runs table in the MLflow UI."""
    return f"{ui_address}/#/experiments/{experiment_id}/runs"


# What a logged model needs to be loaded elsewhere, pinned to what trained it: given, not
# inferred (MLflow's inference imports the model's code and guesses from what is loaded).
_MODEL_REQUIREMENTS = ("mlflow", "tensorflow", "keras", "numpy")
# The name of a run's logged model (its artifact folder, and ``models:/<model_id>``).
MODEL_NAME = "model"


def model_requirements() -> list[str]:
    """``["mlflow==3.17.2", "tensorflow==...", ...]``: the installed versions."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in _MODEL_REQUIREMENTS]


def array_digest(*arrays: np.ndarray) -> str:
    """A short content hash of whole arrays (MLflow's own hashes only the first 10,000 values)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:10]


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a run's data, as logged to MLflow.

    Attributes:
        features: the inputs, one row per sample.
        targets: the integer class labels.
    """

    features: np.ndarray
    targets: np.ndarray


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
            lambda: _send_metrics(self.client, self.run_id, batch),
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
            if server_answers(self.tracking_uri):
                if _denied(error):
                    raise TrackingUnauthorizedError(
                        f"not authorised: MLflow tracking server {self.tracking_uri} refused "
                        f"{_who()} while {action} for run {self.run_id} ({error})"
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
            lambda: _send_params(self.client, self.run_id, items),
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
        now = int(time.time() * 1000)
        logged = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._buffer.extend(logged)
        self._latest.update((m.key, m) for m in logged)
        if time.monotonic() - self._last_flush >= _FLUSH_SECONDS:
            self.flush()

    def log_series(self, series: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Log whole per-step series ({name: values}, step = index) at once."""
        now = int(time.time() * 1000)
        self._buffer.extend(
            Metric(name, float(value), now, step)
            for name, values in series.items()
            for step, value in enumerate(values)
        )
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
        inputs = _dataset_inputs(splits, name, source)
        self._deliver(
            "logging the datasets",
            lambda: _log_dataset_inputs(self.client, self.run_id, inputs),
            "datasets",
            lambda: {"inputs": [_dataset_input_record(i) for i in inputs]},
        )

    def _keep_model(self, model: Any, input_example: np.ndarray, step: int) -> dict[str, Any]:
        """Save the model in the spool as an MLflow model directory (its logged model's id is
        written in when the spool is replayed); returns the spool record."""
        assert self.spool is not None
        local, name = self.spool.new_place(MODEL_NAME)
        _save_model(model, input_example, local, self.run_id, None)
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
            _save_model(model, input_example, local, self.run_id, logged)
            _publish_model(
                self.client, self.run_id, logged.model_id, local, step, self._linked_metrics(step)
            )
        return str(logged.model_id)

    def flush(self) -> None:
        """Send every buffered metric now, in batches of MLflow's maximum size.

        A batch leaves the buffer only once the store took it: after a failure, the next flush
        (e.g. when the run is closed, should the server be back) sends it again.
        """
        while self._buffer:
            batch = self._buffer[:_METRIC_BATCH]
            self._deliver_metrics(batch)
            del self._buffer[: len(batch)]
        self._last_flush = time.monotonic()

    def end(self, status: str) -> None:
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
        while time.monotonic() < deadline and not server_answers(self.tracking_uri):
            time.sleep(1.0)
        if server_answers(self.tracking_uri):
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


def _save_model(
    model: Any, input_example: np.ndarray, path: Path, run_id: str, logged: LoggedModel | None
) -> None:
    """Save a Keras model as an MLflow model directory at ``path`` (tensorflow flavour).

    Its signature is the model's input and output shapes (float32, any number of rows), its pip
    requirements the installed versions of ``_MODEL_REQUIREMENTS``.

    Args:
        model: a built ``keras.Model`` with one input and one output.
        input_example: a few input rows, stored with the model.
        path: the directory to create.
        run_id: the run it belongs to.
        logged: its logged model; None: not created yet (a spooled model:
            ``_publish_spooled_model`` writes the id in).
    """
    # The tensorflow flavour: MLflow 3.17's keras flavour writes the input example before
    # it creates the model's directory (FileNotFoundError). Imported only when needed.
    import mlflow.tensorflow

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.input_shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
    )
    description = (
        Model(run_id=run_id)
        if logged is None
        else Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
    )
    mlflow.tensorflow.save_model(
        model,
        str(path),
        mlflow_model=description,
        signature=signature,
        input_example=np.asarray(input_example, dtype=np.float32),
        pip_requirements=model_requirements(),
    )


def _publish_model(
    client: MlflowClient,
    run_id: str,
    model_id: str,
    local: Path,
    step: int,
    linked: Sequence[Metric],
    output_logged: bool = False,
) -> None:
    """Upload a saved model directory as a logged model's files, make it the run's output at
    ``step``, link it to ``linked`` metrics, and mark it READY.

    Args:
        output_logged: the run already names the model as an output (an interrupted replay):
            not logged twice.
    """
    client.log_model_artifacts(model_id, str(local))
    if not output_logged:
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=step)])
    # The same values, timestamps and steps again, now naming the model: the store keeps one
    # copy in the run's history and links it to the model.
    if linked:
        client.log_batch(
            run_id,
            metrics=[
                Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id) for m in linked
            ],
        )
    client.finalize_logged_model(model_id, LoggedModelStatus.READY)


def _dataset_inputs(
    splits: Mapping[str, DatasetSplit], name: str, source: Mapping[str, str]
) -> list[DatasetInput]:
    """One MLflow dataset input per split (its context), digested from its arrays."""
    return [_dataset_input(split, data, name, source) for split, data in splits.items()]


# The fields of an MLflow dataset entity, as kept in a spool record.
_DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def _dataset_input_record(dataset_input: DatasetInput) -> dict[str, Any]:
    """A dataset input as JSON: the dataset entity's fields and the input's tags."""
    return {
        "dataset": {f: getattr(dataset_input.dataset, f) for f in _DATASET_FIELDS},
        "tags": {t.key: t.value for t in dataset_input.tags},
    }


def _dataset_input_from_record(record: Mapping[str, Any]) -> DatasetInput:
    """The inverse of ``_dataset_input_record``."""
    tags = [InputTag(k, v) for k, v in record["tags"].items()]
    return DatasetInput(Dataset(**record["dataset"]), tags)


def _log_dataset_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    """Link dataset inputs to a run (one request; the store links a dataset to a run once, so
    sending the same inputs again adds nothing)."""
    for attempt in range(_DATASET_ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except mlflow.exceptions.MlflowException as error:
            # Parallel jobs of one sweep log the same data set: the store creates a dataset
            # row only when it has none, and the loser of that race hits the unique key. Its
            # next attempt finds the row and links to it.
            duplicate = "unique constraint" in str(error).lower()
            if not duplicate or attempt == _DATASET_ATTEMPTS - 1:
                raise


# The dataset inputs this process built, by the arrays' identity and the name and source: the
# runs of a study (a replica batch's above all) log the same arrays, and building an input
# (hashing the arrays, inferring their schema) cost more than sending it.
_built_dataset_inputs: dict[tuple[object, ...], tuple[DatasetSplit, DatasetInput]] = {}
_MAX_DATASET_INPUTS = 32


def _dataset_input(
    split: str, data: DatasetSplit, name: str, source: Mapping[str, str]
) -> DatasetInput:
    """One split as an MLflow dataset input (its context is the split's name)."""
    key = (split, id(data.features), id(data.targets), name, tuple(sorted(source.items())))
    known = _built_dataset_inputs.get(key)
    # The arrays are kept with the entry, so an id in a key cannot be another array's.
    if (
        known is not None
        and known[0].features is data.features
        and known[0].targets is data.targets
    ):
        return known[1]
    dataset = from_numpy(
        data.features,
        source=CodeDatasetSource(tags=dict(source)),
        targets=data.targets,
        name=name,
        digest=array_digest(data.features, data.targets),
    )
    built = DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, split)])
    if len(_built_dataset_inputs) >= _MAX_DATASET_INPUTS:
        _built_dataset_inputs.clear()
    _built_dataset_inputs[key] = (data, built)
    return built


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


def fit_run_name(name: str) -> str:
    """``name`` cut to MLflow's 250 characters, ending in a hash of the whole so it stays unique."""
    if len(name) <= _MAX_RUN_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_RUN_NAME - 12]}...{digest}"


# Experiment ids this process looked up or created, by (tracking URI, name): a study's runs
# would otherwise ask the store for the same id once per run.
_experiment_ids: dict[tuple[str, str], str] = {}


def _experiment_id(client: MlflowClient, tracking_uri: str, name: str, refresh: bool) -> str:
    """``get_or_create_experiment``, asked once per process and store (``refresh``: ask again)."""
    key = (tracking_uri, name)
    if refresh or key not in _experiment_ids:
        _experiment_ids[key] = get_or_create_experiment(client, name)
    return _experiment_ids[key]


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of the experiment called ``name``, created when missing (race-tolerant)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def start_parent_run(
    tracking_uri: str, experiment_name: str, run_name: str, tags: Mapping[str, str]
) -> tuple[str, str]:
    """Create a sweep's parent run (left RUNNING until ``end_run``).

    Returns:
        (run id, experiment id).
    """
    client = _client(tracking_uri)
    with _authorised(tracking_uri, f"create a run in experiment {experiment_name!r}"):
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
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return False
    with _authorised(tracking_uri, f"reopen run {run_id}"):
        client.update_run(run_id, status="RUNNING")
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
    client = _client(tracking_uri)
    stuck = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"
        ),
        max_results=10_000,
    )
    for run in stuck:
        client.set_tag(run.info.run_id, "error", ORPHAN_ERROR)
        client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in stuck]


def end_run(tracking_uri: str, run_id: str, status: str, only_if_running: bool = False) -> None:
    """Set a run's final status ("FINISHED", "FAILED", "KILLED").

    Args:
        tracking_uri: the store.
        run_id: the run.
        status: its final status.
        only_if_running: leave a run that already ended as it is.
    """
    client = _client(tracking_uri)
    if only_if_running and client.get_run(run_id).info.status != "RUNNING":
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

    Yields:
        The open run. On an exception the run ends FAILED with the error as the tag
        ``error`` and the traceback as ``error.txt``; on KeyboardInterrupt or SIGTERM
        (``Terminated``) it ends KILLED. When the tracking server itself stopped answering,
        the run cannot be ended: the error says so, and the sweep's end marks it later.

    Raises:
        TrackingUnavailableError: the server stopped answering (the original error otherwise).
    """
    client = _client(tracking_uri)
    initial_tags = dict(tags or {})
    if parent_run_id:
        initial_tags["mlflow.parentRunId"] = parent_run_id
    with _authorised(tracking_uri, f"create a run in experiment {experiment_name!r}"):
        experiment_id = _experiment_id(client, tracking_uri, experiment_name, refresh=False)
        try:
            run = client.create_run(
                experiment_id, run_name=fit_run_name(run_name), tags=initial_tags
            )
        except mlflow.exceptions.MlflowException:
            # The experiment this process knew was deleted (or the store replaced) since.
            experiment_id = _experiment_id(client, tracking_uri, experiment_name, refresh=True)
            run = client.create_run(
                experiment_id, run_name=fit_run_name(run_name), tags=initial_tags
            )
    recorder = MlflowRun(
        client, run.info.run_id, experiment_id, tracking_uri, artifact_uri=run.info.artifact_uri
    )
    if spool_dir is not None:
        recorder.spool = SpoolWriter(
            spool_dir,
            SpoolHeader(run.info.run_id, experiment_id, tracking_uri, parent_run_id or ""),
        )
    try:
        yield recorder
        recorder.flush()
    except BaseException as error:
        _close_after_error(recorder, error)
        raise
    recorder.end(RunStatus.to_string(RunStatus.FINISHED))


def _status_for(error: BaseException) -> str:
    """KILLED for an interrupt or termination, FAILED for anything else."""
    killed = isinstance(error, KeyboardInterrupt | SystemExit | Terminated | RunTerminated)
    return RunStatus.to_string(RunStatus.KILLED if killed else RunStatus.FAILED)


def _close_after_error(recorder: MlflowRun, error: BaseException) -> None:
    """Record why a run stopped and end it FAILED/KILLED, never masking the original error."""
    status = _status_for(error)
    if isinstance(error, TrackingUnavailableError) and not server_answers(recorder.tracking_uri):
        # Every further request would wait out its retries only to fail the same way.
        log.error(
            "MLflow run %s could not be marked %s: %s is unreachable; it stays RUNNING there "
            "until the sweep's end (or a re-run of the sweep) marks it FAILED",
            recorder.run_id,
            status,
            recorder.tracking_uri,
        )
        return
    _record_error(recorder, error, error.__traceback__)
    try:
        recorder.end(status)
    except Exception:
        log.exception("could not mark MLflow run %s %s", recorder.run_id, status)


def _record_error(recorder: MlflowRun, error: BaseException, trace: TracebackType | None) -> None:
    """Keep the reason a run stopped, without masking the original error."""
    message = f"{type(error).__name__}: {error}"
    try:
        recorder.flush()
        recorder.set_tags({"error": message[:5000]})
        recorder.log_text("".join(traceback.format_exception(error)), "error.txt")
    except Exception:  # the store itself may be what failed
        log.exception("could not record the error in MLflow run %s", recorder.run_id)


# --- reading studies back ------------------------------------------------------------------

STUDY_TAG = "xent.study"


@dataclass(frozen=True)
class StudyRun:
    """A sweep's parent run, as found in the store."""

    run_id: str
    experiment_id: str
    experiment_name: str
    study: str
    status: str
    start_time: int


def _parent_from_run(client: MlflowClient, run: Any) -> StudyRun:
    experiment = client.get_experiment(run.info.experiment_id)
    return StudyRun(
        run.info.run_id,
        run.info.experiment_id,
        experiment.name,
        run.data.tags.get(STUDY_TAG, ""),
        run.info.status,
        int(run.info.start_time or 0),
    )


def find_study_parent(
    tracking_uri: str,
    experiment_name: str | None = None,
    parent_run_id: str | None = None,
    finished_only: bool = True,
) -> StudyRun:
    """The parent run of a study: the given id, or the latest sweep of an experiment.

    Args:
        tracking_uri: the store.
        experiment_name: take the newest sweep parent of this experiment.
        parent_run_id: take exactly this run.
        finished_only: with ``experiment_name``, skip parents that did not end FINISHED.

    Returns:
        The parent run.

    Raises:
        ValueError: unknown experiment or run, or no finished sweep in it; the message lists
            what exists.
    """
    client = _client(tracking_uri)
    if parent_run_id:
        try:
            return _parent_from_run(client, client.get_run(parent_run_id))
        except mlflow.exceptions.MlflowException as error:
            raise ValueError(f"no run {parent_run_id!r} in {tracking_uri}") from error
    if not experiment_name:
        raise ValueError("give an experiment name or a parent run id")
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(
            f"no experiment {experiment_name!r} in {tracking_uri}; experiments there: {names}"
        )
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`xent.sweep_dir` != ''",
        order_by=["attributes.start_time DESC"],
    )
    usable = [p for p in parents if p.info.status == "FINISHED" or not finished_only]
    if not usable:
        states = [f"{p.info.run_id[:8]} {p.info.status}" for p in parents]
        raise ValueError(
            f"experiment {experiment_name!r} has no finished sweep (parent runs: "
            f"{states or 'none'}); run one with `python experiments/run.py -m "
            f"+experiment={experiment_name}`"
        )
    return _parent_from_run(client, usable[0])


@dataclass(frozen=True)
class ChildrenRead:
    """A sweep parent's child runs as ``fetch_children`` read them.

    Attributes:
        tracking_uri: the store.
        parent_run_id: the sweep's parent run.
        history_metrics: the metrics whose histories were read.
        records: one per child run.
    """

    tracking_uri: str
    parent_run_id: str
    history_metrics: tuple[str, ...]
    records: tuple[RunRecord, ...]


# Reads of finished sweeps handed to this process (``hand_over_reads``), by (store, parent).
_handed_reads: dict[tuple[str, str], ChildrenRead] = {}


def hand_over_reads(reads: Sequence[ChildrenRead]) -> None:
    """Let this process's next ``fetch_children`` of each read's parent use the read instead
    of the store, once: ``experiments/reproduce.py`` hands the ledger what its studies' reports
    read of the same finished sweeps (the store holds nothing newer: the ledger runs after
    them), so the ledger does not read every study's runs a second time.

    Args:
        reads: the reads, e.g. ``StudyReport.children`` of each study's report.
    """
    _handed_reads.update(((r.tracking_uri, r.parent_run_id), r) for r in reads)


def _handed_read(
    tracking_uri: str, parent: StudyRun, history_metrics: Sequence[str]
) -> list[RunRecord] | None:
    """The handed-over read of ``parent``, with the histories of ``history_metrics`` only (as
    reading them would give), if one covers them; used once."""
    read = _handed_reads.pop((tracking_uri, parent.run_id), None)
    if read is None or not set(history_metrics) <= set(read.history_metrics):
        return None
    return [
        dataclasses.replace(
            record, history={m: record.history[m] for m in history_metrics if m in record.history}
        )
        for record in read.records
    ]


def fetch_children(
    tracking_uri: str, parent: StudyRun, history_metrics: Sequence[str]
) -> list[RunRecord]:
    """Every child run of a sweep parent, with the per-epoch history of ``history_metrics``.

    Args:
        tracking_uri: the store.
        parent: the sweep's parent run.
        history_metrics: metrics whose full per-epoch history to fetch (others: last value).

    Returns:
        One record per child run, whatever its status.
    """
    handed = _handed_read(tracking_uri, parent, history_metrics)
    if handed is not None:
        return handed
    client = _client(tracking_uri)
    children = client.search_runs(
        [parent.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
        max_results=10_000,
    )
    histories = _bulk_histories(
        client,
        [run.info.run_id for run in children],
        [m for m in history_metrics if any(m in run.data.metrics for run in children)],
    )
    return [_record(client, run, history_metrics, histories) for run in children]


# Most run ids in one bulk history query (SQLite's bound-parameter limit is far above this).
_BULK_RUNS = 500
_BULK_POINTS = 5_000_000


def _bulk_histories(
    client: MlflowClient, run_ids: Sequence[str], metrics: Sequence[str]
) -> dict[tuple[str, str], list[Metric]] | None:
    """Every point of ``metrics`` of every run in ``run_ids``, one query per metric and chunk.

    A database store answers a metric's history for many runs at once (the call MLflow's UI
    uses to chart many runs); a study has hundreds of children, and one query per run and
    metric was most of a report's reading. A store without it (a tracking server) gives None:
    ``_record`` then asks run by run.

    Returns:
        {(run id, metric): its points, in MLflow's order}, or None.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None)
    if bulk is None or not run_ids:
        return None
    histories: dict[tuple[str, str], list[Metric]] = {}
    for metric in metrics:
        for start in range(0, len(run_ids), _BULK_RUNS):
            points = bulk(run_ids[start : start + _BULK_RUNS], metric, _BULK_POINTS)
            if len(points) >= _BULK_POINTS:
                return None  # possibly cut short: ask run by run instead
            for point in points:
                histories.setdefault((point.run_id, metric), []).append(point)
    return histories


# Long per-step series (the batch loss of every step: ~4,000 values a run) are kept as one
# .npy artifact each: as metric points they cost more store time than the rest of the run's
# record together (measured in benchmarks/replicas.py), and the UI does not chart them usefully.
SERIES_DIR = "series"


def series_file_name(metric: str) -> str:
    """The artifact file (under ``series/``) that holds ``metric``'s per-step values."""
    return metric.replace("/", "_") + ".npy"


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


def _series_from_artifacts(
    client: MlflowClient, run_id: str, wanted: Sequence[str], artifact_uri: str = ""
) -> dict[str, list[float]]:
    """The per-step series among ``wanted`` that the run logged with ``log_series_artifact``.

    Args:
        client: the store's client.
        run_id: the run.
        wanted: the series' metric names.
        artifact_uri: the run's artifact location; on this machine's disk (a local store), the
            files are read where they are: MLflow's list-and-download copies each through a
            temporary directory, which costs more than the rest of a report's reading.

    Returns:
        {metric name: its values} of the series the run has.
    """
    files = {series_file_name(name): name for name in wanted}
    found: dict[str, list[float]] = {}
    local_root = get_local_path_or_none(artifact_uri) if artifact_uri else None
    if local_root is not None and Path(local_root).is_dir():
        for file_name, name in files.items():
            path = Path(local_root) / SERIES_DIR / file_name
            if path.is_file():
                found[name] = np.load(path).astype(float).tolist()
        return found
    stored = [a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, SERIES_DIR)]
    for file_name in stored:
        if file_name in files:
            with tempfile.TemporaryDirectory() as scratch:
                local = client.download_artifacts(run_id, f"{SERIES_DIR}/{file_name}", scratch)
                found[files[file_name]] = [float(v) for v in np.load(local)]
    return found


def _record(
    client: MlflowClient,
    run: Any,
    history_metrics: Sequence[str],
    histories: Mapping[tuple[str, str], list[Metric]] | None = None,
) -> RunRecord:
    """A run as a RunRecord, with the full history of each of ``history_metrics`` it logged
    (as metric points, or as a ``series/`` artifact); ``histories``: the points fetched in
    bulk already (``_bulk_histories``), else each history is asked for."""
    run_id = run.info.run_id

    def points(name: str) -> list[Metric]:
        if histories is not None:
            return histories.get((run_id, name), [])
        return client.get_metric_history(run_id, name)

    history = {
        name: [m.value for m in sorted(points(name), key=_step)]
        for name in history_metrics
        if name in run.data.metrics
    }
    missing = [name for name in history_metrics if name not in history]
    if missing:
        history.update(
            _series_from_artifacts(client, run.info.run_id, missing, run.info.artifact_uri)
        )
    return RunRecord(
        run_id=run.info.run_id,
        params=dict(run.data.params),
        seed=int(run.data.tags.get("seed", run.data.params.get("seed", -1))),
        status=run.info.status,
        history=history,
        final=dict(run.data.metrics),
        error=run.data.tags.get("error"),
        start_time=int(run.info.start_time or 0),
        tags=dict(run.data.tags),
    )


def _step(metric: Metric) -> tuple[int, int]:
    return metric.step, metric.timestamp


def log_files(tracking_uri: str, run_id: str, files: Mapping[Path, str | None]) -> None:
    """Upload {local file: artifact dir} to an existing run (e.g. a sweep's parent)."""
    client = _client(tracking_uri)
    for path, artifact_dir in files.items():
        client.log_artifact(run_id, str(path), artifact_path=artifact_dir)


# What MLflow allows in a metric name (colons are refused on Windows only).
_METRIC_NAME_UNSAFE = re.compile(r"[^/\w.\- :]")


def metric_name(text: str) -> str:
    """``text`` as a valid MLflow metric name: any other character becomes ``:``."""
    return _METRIC_NAME_UNSAFE.sub(":", text)


def log_run_summary(
    tracking_uri: str, run_id: str, metrics: Mapping[str, float], note: str
) -> None:
    """Log summary metrics (step 0) and the run's description (``mlflow.note.content``, which
    the run page's Overview renders as Markdown) on an existing run, in one request."""
    client = _client(tracking_uri)
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


# The MLflow UI's "Share" button stores a view of the runs page as this experiment tag; the
# page opens it from ``?viewStateShareKey=<key>`` (MLflow 3.17's web app reads plain JSON).
_SHARED_VIEW_TAG = "mlflow.sharedViewState."


@dataclass(frozen=True)
class SharedViews:
    """Links to two stored views of a sweep in the MLflow UI.

    Attributes:
        table: the runs table, sorted by name, with the parent's summary metrics as columns.
        chart: the children's charts grouped by variant: each variant's mean with a min-max
            band over its seeds (what the report's plots draw).
    """

    table: str
    chart: str


def share_sweep_views(
    tracking_uri: str,
    parent: StudyRun,
    group_tag: str,
    columns: Sequence[str],
    ui_address: str = _UI_ADDRESS,
) -> SharedViews:
    """Store two views of a sweep's runs as the UI's "Share" button does; return their links.

    Args:
        tracking_uri: the store.
        parent: the sweep's parent run.
        group_tag: the tag the chart view groups the children by (``xent.variant``).
        columns: metric names shown as columns of the table view (the parent's summary).
        ui_address: where the UI is.

    Returns:
        ``<ui>/#/experiments/<id>/runs?compareRunsMode=...&viewStateShareKey=<key>`` links.
    """
    children_grouped = {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": group_tag}],
        },
        "useGroupedValuesInCharts": True,
    }
    table = {
        "orderByKey": "tags.`mlflow.runName`",
        "orderByAsc": True,
        # The UI's default columns (models, datasets), then the summary.
        "selectedColumns": [
            "attributes.`Models`",
            "attributes.`Dataset`",
            *(f"metrics.`{metric_name(c)}`" for c in columns),
        ],
    }
    client = _client(tracking_uri)
    links = {}
    for view, state, mode in (("chart", children_grouped, "CHART"), ("table", table, "TABLE")):
        key = f"xent-{view}-{parent.run_id}"
        client.set_experiment_tag(
            parent.experiment_id, f"{_SHARED_VIEW_TAG}{key}", json.dumps(state)
        )
        links[view] = (
            f"{ui_address}/#/experiments/{parent.experiment_id}/runs"
            f"?compareRunsMode={mode}&viewStateShareKey={key}"
        )
    return SharedViews(table=links["table"], chart=links["chart"])


def set_run_tags(tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags on an existing run."""
    client = _client(tracking_uri)
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


# --- reading back for the claims ledger ----------------------------------------------------


def study_parents(tracking_uri: str, experiment_name: str) -> list[StudyRun]:
    """Every sweep parent run of an experiment, newest first, whatever its status.

    Args:
        tracking_uri: the store.
        experiment_name: the study's MLflow experiment.

    Returns:
        The parents ([] when the experiment does not exist or has no sweep).
    """
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`xent.sweep_dir` != ''",
        order_by=["attributes.start_time DESC"],
    )
    return [_parent_from_run(client, run) for run in parents]


def latest_finished_run(
    tracking_uri: str,
    experiment_name: str,
    params: Mapping[str, str],
    history_metrics: Sequence[str],
) -> tuple[RunRecord, str] | None:
    """The newest FINISHED single run (not a sweep parent) whose params include ``params``.

    Args:
        tracking_uri: the store.
        experiment_name: the MLflow experiment to look in.
        params: {dotted config key: logged value} the run must have (e.g. the reference config).
        history_metrics: metrics whose full per-epoch history to fetch.

    Returns:
        (the run's record, its experiment id), or None when no run matches.
    """
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    for run in runs:
        if "xent.sweep_dir" in run.data.tags:
            continue
        if all(run.data.params.get(key) == value for key, value in params.items()):
            record = _record(client, run, history_metrics)
            return record, str(experiment.experiment_id)
    return None


# --- resuming a sweep ----------------------------------------------------------------------

# The final validation loss of a run: the last value of this metric (a job's return value).
VAL_LOSS_METRIC = "val/loss"
_DEFINITION_FILE = "study_definition.json"


def finished_children(
    tracking_uri: str, parent_run_id: str, experiment_id: str
) -> dict[str, FinishedJob]:
    """{config hash: the newest FINISHED child run with it} of a sweep parent.

    Args:
        tracking_uri: the store.
        parent_run_id: the sweep's parent run.
        experiment_id: its experiment.

    Returns:
        One entry per config hash recorded (``resume.CONFIG_HASH_TAG``) on a FINISHED child;
        runs from before the tag existed are not matched (their jobs run again).
    """
    client = _client(tracking_uri)
    children = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    finished = {}
    for run in children:  # oldest first: a newer run of the same config wins
        key = run.data.tags.get(CONFIG_HASH_TAG)
        if key:
            loss = run.data.metrics.get(VAL_LOSS_METRIC, float("nan"))
            finished[key] = FinishedJob(run.info.run_id, float(loss))
    return finished


def record_study_definition(tracking_uri: str, run_id: str, definition: Mapping[str, str]) -> None:
    """Keep a sweep's study definition on its parent run (``study_definition.json``)."""
    _client(tracking_uri).log_text(
        run_id, json.dumps(dict(definition), indent=1, sort_keys=True), _DEFINITION_FILE
    )


def recorded_study_definition(tracking_uri: str, run_id: str) -> dict[str, str] | None:
    """The study definition kept on a sweep parent run, or None when it has none."""
    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, _DEFINITION_FILE, folder)
        except Exception as error:  # no such artifact: a parent from before definitions
            log.debug("parent run %s has no study definition: %s", run_id, error)
            return None
        return {str(k): str(v) for k, v in json.loads(Path(path).read_text()).items()}


# --- jobs whose worker process died ----------------------------------------------------------


def fail_runs_of_process(
    tracking_uri: str,
    parent_run_id: str,
    experiment_id: str,
    pid: int,
    error: str,
    since_ms: int,
    config_hashes: Collection[str] | None = None,
) -> dict[str, str]:
    """Mark the child runs a dead worker process left RUNNING FAILED, with ``error``.

    Args:
        tracking_uri: the store.
        parent_run_id: the sweep's parent run.
        experiment_id: its experiment.
        pid: the dead worker's process id (the runs' ``pid`` tag); 0: not known (a lost Ray
            worker), then the runs are found by ``config_hashes`` alone.
        error: the ``error`` tag of the runs marked.
        since_ms: only runs started at or after this time (ms since the epoch): a pid can be
            reused by a worker of an earlier sweep.
        config_hashes: only runs of these configs (``resume.CONFIG_HASH_TAG``); None: any.

    Returns:
        {config hash: run id} of every child that process started since then, whatever its
        status (a job absent here never opened a run).
    """
    client = _client(tracking_uri)
    by_process = f" and tags.pid = '{pid}'" if pid else ""
    runs = [
        run
        for run in client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_run_id}'{by_process} "
                f"and attributes.start_time >= {since_ms}"
            ),
            max_results=10_000,
        )
        if config_hashes is None or run.data.tags.get(CONFIG_HASH_TAG) in config_hashes
    ]
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", error)
            client.set_terminated(run.info.run_id, status="FAILED")
    return {run.data.tags.get(CONFIG_HASH_TAG, ""): run.info.run_id for run in runs}


def record_failed_run(
    tracking_uri: str,
    experiment_id: str,
    run_name: str,
    parent_run_id: str,
    params: Mapping[str, str],
    tags: Mapping[str, str],
    error: str,
) -> str:
    """A FAILED child run for a job that never opened its own (its worker died first).

    Args:
        tracking_uri: the store.
        experiment_id: the sweep's experiment.
        run_name: the job's run name.
        parent_run_id: the sweep's parent run.
        params: the job's config as dotted params (the report groups runs by them).
        tags: the job's identity tags.
        error: why it failed (the ``error`` tag).

    Returns:
        The new run's id.
    """
    client = _client(tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=fit_run_name(run_name),
        tags={**tags, "mlflow.parentRunId": parent_run_id, "error": error},
    )
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), _PARAM_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + _PARAM_BATCH])
    client.set_terminated(run.info.run_id, status="FAILED")
    return str(run.info.run_id)


# --- replaying spools ------------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    """What replaying one spool sent.

    Attributes:
        run_id: the run.
        records: records in the spool.
        points_sent: metric points sent.
        points_present: metric points the store had already (an earlier, interrupted replay).
        status: the final status it set ("" when the spool had none).
    """

    run_id: str
    records: int
    points_sent: int
    points_present: int
    status: str


def replay_spool(path: Path, parent_run_id: str | None) -> Replayed:
    """Send a spool's records to its run, then rename it (``spool.REPLAYED_FILE``).

    Idempotent: a metric point the run already has (same key, step, timestamp and value) is not
    sent again; params and tags are sent with the same values; artifacts overwrite themselves;
    the store links a dataset to a run once; a logged model is created once (a READY one is
    not sent again, a PENDING one, from an interrupted attempt, is completed). The final status
    is set last.

    Args:
        path: the spool file.
        parent_run_id: the sweep parent its run must belong to (None: any).

    Returns:
        What was sent.

    Raises:
        SpoolError: the file is damaged or belongs to another sweep (nothing was sent).
    """
    header, records = read_spool(path, parent_run_id)
    client = _client(header.tracking_uri)
    points: dict[str, list[Metric]] = {}
    models: list[dict[str, Any]] = []
    status = ""
    for record in records:
        if record.kind == "params":
            items = [Param(k, v) for k, v in record.data["params"].items()]
            for start in range(0, len(items), _PARAM_BATCH):
                client.log_batch(header.run_id, params=items[start : start + _PARAM_BATCH])
        elif record.kind == "tags":
            tags = [RunTag(k, v) for k, v in record.data["tags"].items()]
            client.log_batch(header.run_id, tags=tags)
        elif record.kind == "metrics":
            for key, value, timestamp, step in record.data["metrics"]:
                points.setdefault(key, []).append(
                    Metric(key, float(value), int(timestamp), int(step))
                )
        elif record.kind == "artifact":
            client.log_artifact(
                header.run_id,
                str(spooled_file(path, record.data["file"])),
                artifact_path=record.data["artifact_dir"],
            )
        elif record.kind == "text":
            client.log_text(header.run_id, record.data["text"], record.data["artifact_file"])
        elif record.kind == "datasets":
            inputs = [_dataset_input_from_record(i) for i in record.data["inputs"]]
            _log_dataset_inputs(client, header.run_id, inputs)
        elif record.kind == "model":
            models.append(record.data)  # after the metric points: it links to some of them
        else:
            status = str(record.data["status"])
    sent = present = 0
    for key, metrics in points.items():
        have = {
            (m.step, m.timestamp, _same_float(m.value))
            for m in client.get_metric_history(header.run_id, key)
        }
        missing = [m for m in metrics if (m.step, m.timestamp, _same_float(m.value)) not in have]
        present += len(metrics) - len(missing)
        for start in range(0, len(missing), _METRIC_BATCH):
            client.log_batch(header.run_id, metrics=missing[start : start + _METRIC_BATCH])
        sent += len(missing)
    for model in models:
        _publish_spooled_model(client, header, spooled_file(path, model["file"]), model)
    if status:
        client.set_terminated(header.run_id, status=status)
    mark_replayed(path)
    return Replayed(header.run_id, len(records), sent, present, status)


def _publish_spooled_model(
    client: MlflowClient, header: SpoolHeader, local: Path, record: Mapping[str, Any]
) -> None:
    """Log a model the run kept in its spool as the run's logged model, once.

    A READY model of the run is already there (an earlier replay): nothing is sent. A PENDING
    one (the run, or a replay, stopped while sending it) is completed rather than doubled.

    Args:
        client: the store's client.
        header: the spool's run.
        local: the kept MLflow model directory (its ids are written in here).
        record: the spool record (``step``, ``linked`` metrics as [key, value, timestamp, step]).
    """
    existing = [
        m
        for m in client.search_logged_models(
            [header.experiment_id], filter_string=f"source_run_id = '{header.run_id}'"
        )
        if m.name == MODEL_NAME
    ]
    if any(m.status == LoggedModelStatus.READY for m in existing):
        return
    logged = (
        existing[0]
        if existing
        else client.create_logged_model(
            header.experiment_id, name=MODEL_NAME, source_run_id=header.run_id
        )
    )
    description = Model.load(str(local))
    description.model_id = logged.model_id
    description.model_uuid = logged.model_id
    description.artifact_path = logged.artifact_location
    description.save(str(local / "MLmodel"))
    run_outputs = client.get_run(header.run_id).outputs
    outputs = {o.model_id for o in run_outputs.model_outputs} if run_outputs else set()
    linked = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in record["linked"]]
    _publish_model(
        client,
        header.run_id,
        logged.model_id,
        local,
        int(record["step"]),
        linked,
        output_logged=logged.model_id in outputs,
    )


def _same_float(value: float) -> str:
    """A metric value as compared on replay (NaN equal to NaN)."""
    return repr(float(value))


def replay_spools(directory: Path, parent_run_id: str | None) -> list[Replayed]:
    """Replay every spool under a sweep's (or a job's) directory; check them all first.

    Args:
        directory: where to look (``spool.find_spools``).
        parent_run_id: the sweep parent every spool's run must belong to (None: any).

    Returns:
        What each spool sent.

    Raises:
        SpoolError: one of them is damaged or another sweep's: none was sent.
    """
    spools = find_spools(directory)
    for path in spools:
        read_spool(path, parent_run_id)
    return [replay_spool(path, parent_run_id) for path in spools]
