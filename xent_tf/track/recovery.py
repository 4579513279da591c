"""Recovery: resuming a sweep, failing the runs of a dead worker, replaying a run's spool.

``finished_children`` lists the jobs a resumed sweep skips; ``fail_runs_of_process`` and
``record_failed_run`` end FAILED the runs a killed worker could not end; ``replay_spool`` sends
what a run kept locally while its server was away.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import (
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
)
from mlflow.models import Model

from xent_tf.metrics import VAL_LOSS_METRIC
from xent_tf.track.artifacts import (
    METRIC_BATCH,
    MODEL_NAME,
    PARAM_BATCH,
    dataset_input_from_record,
    fit_run_name,
    log_dataset_inputs,
    publish_model,
)
from xent_tf.track.connection import mlflow_client
from xent_tf.track.resume import CONFIG_HASH_TAG, FinishedJob
from xent_tf.track.run_record import RunStatus, diverged_epoch_of, no_suggestion_of
from xent_tf.track.spool import (
    SpoolHeader,
    find_spools,
    mark_replayed,
    read_spool,
    spooled_file,
)

log = logging.getLogger(__name__)


_DEFINITION_FILE = "study_definition.json"


def finished_children(
    tracking_uri: str, parent_run_id: str, experiment_id: str
) -> dict[str, FinishedJob]:
    """{config hash: the newest child run that measured its config} of a sweep parent.

    A run measured its config when it FINISHED, and also when it ended FAILED on a measured
    outcome: its loss diverged, or its range test gave no rate (the tags of ``run_record``).
    Seeded, such a job would diverge again: a resumed sweep skips it like a finished one, and
    its run stays the variant's record for that seed. A crash, a kill or a lost worker is no
    outcome: those jobs run again.

    Args:
        tracking_uri: the store.
        parent_run_id: the sweep's parent run.
        experiment_id: its experiment.

    Returns:
        One entry per config hash recorded (``resume.CONFIG_HASH_TAG``) on such a child; runs
        from before the tag existed are not matched (their jobs run again).
    """
    client = mlflow_client(tracking_uri)
    children = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    finished = {}
    for run in children:  # oldest first: a newer run of the same config wins
        key = run.data.tags.get(CONFIG_HASH_TAG)
        if key and _measured(run.info.status, run.data.tags):
            loss = run.data.metrics.get(VAL_LOSS_METRIC, float("nan"))
            finished[key] = FinishedJob(run.info.run_id, float(loss))
    return finished


def _measured(status: str, tags: Mapping[str, str]) -> bool:
    """FINISHED, or FAILED on a measured outcome (diverged, no rate from the range test)."""
    if status == RunStatus.FINISHED:
        return True
    if status != RunStatus.FAILED:
        return False
    try:
        return diverged_epoch_of(tags) is not None or no_suggestion_of(tags)
    except ValueError:  # a damaged tag: no measured outcome to trust, the job runs again
        return False


def record_study_definition(tracking_uri: str, run_id: str, definition: Mapping[str, str]) -> None:
    """Keep a sweep's study definition on its parent run (``study_definition.json``)."""
    mlflow_client(tracking_uri).log_text(
        run_id, json.dumps(dict(definition), indent=1, sort_keys=True), _DEFINITION_FILE
    )


def recorded_study_definition(tracking_uri: str, run_id: str) -> dict[str, str] | None:
    """The study definition kept on a sweep parent run, or None when it has none."""
    client = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(run_id, _DEFINITION_FILE, folder)
        except Exception as error:  # no such artifact: a parent from before definitions
            log.debug("parent run %s has no study definition: %s", run_id, error)
            return None
        return {str(k): str(v) for k, v in json.loads(Path(path).read_text()).items()}


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
    client = mlflow_client(tracking_uri)
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
        if run.info.status == RunStatus.RUNNING:
            client.set_tag(run.info.run_id, "error", error)
            client.set_terminated(run.info.run_id, status=RunStatus.FAILED)
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
    client = mlflow_client(tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=fit_run_name(run_name),
        tags={**tags, "mlflow.parentRunId": parent_run_id, "error": error},
    )
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), PARAM_BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + PARAM_BATCH])
    client.set_terminated(run.info.run_id, status=RunStatus.FAILED)
    return str(run.info.run_id)


@dataclass(frozen=True)
class Replayed:
    """What replaying one spool sent.

    Attributes:
        run_id: the run.
        records: records in the spool.
        points_sent: metric points sent.
        points_present: metric points the store had already (an earlier, interrupted replay).
        status: the final status it set (None when the spool had none).
    """

    run_id: str
    records: int
    points_sent: int
    points_present: int
    status: RunStatus | None


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
    client = mlflow_client(header.tracking_uri)
    points: dict[str, list[Metric]] = {}
    models: list[dict[str, Any]] = []
    status: RunStatus | None = None
    for record in records:
        if record.kind == "params":
            items = [Param(k, v) for k, v in record.data["params"].items()]
            for start in range(0, len(items), PARAM_BATCH):
                client.log_batch(header.run_id, params=items[start : start + PARAM_BATCH])
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
            inputs = [dataset_input_from_record(i) for i in record.data["inputs"]]
            log_dataset_inputs(client, header.run_id, inputs)
        elif record.kind == "model":
            models.append(record.data)  # after the metric points: it links to some of them
        else:
            status = RunStatus(record.data["status"])
    sent = present = 0
    for key, metrics in points.items():
        have = {
            (m.step, m.timestamp, _same_float(m.value))
            for m in client.get_metric_history(header.run_id, key)
        }
        missing = [m for m in metrics if (m.step, m.timestamp, _same_float(m.value)) not in have]
        present += len(metrics) - len(missing)
        for start in range(0, len(missing), METRIC_BATCH):
            client.log_batch(header.run_id, metrics=missing[start : start + METRIC_BATCH])
        sent += len(missing)
    for model in models:
        _publish_spooled_model(client, header, spooled_file(path, model["file"]), model)
    if status is not None:
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
    publish_model(
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
