"""Reading studies back: a sweep's parent and its children as run records (reports, ledger).

A study's children are read in bulk: from a local database store by ``sql_reads``' few
statements, else by MLflow's search and one history query per metric for all runs; long series
from their artifacts. Reads a sweep already made can be handed over (``hand_over_reads``) so
the report at its end does not read them again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import (
    Metric,
)
from mlflow.utils.file_utils import get_local_path_or_none

from xent_tf.track import sql_reads
from xent_tf.track.artifacts import SERIES_DIR, metric_name, series_file_name
from xent_tf.track.connection import UI_ADDRESS, mlflow_client
from xent_tf.track.run_record import RunRecord, RunStatus, diverged_epoch_of, no_suggestion_of

log = logging.getLogger(__name__)


STUDY_TAG = "xent.study"


@dataclass(frozen=True)
class StudyRun:
    """A sweep's parent run, as found in the store."""

    run_id: str
    experiment_id: str
    experiment_name: str
    study: str
    status: RunStatus
    start_time: int


def _parent_from_run(client: MlflowClient, run: Any) -> StudyRun:
    experiment = client.get_experiment(run.info.experiment_id)
    return StudyRun(
        run.info.run_id,
        run.info.experiment_id,
        experiment.name,
        run.data.tags.get(STUDY_TAG, ""),
        RunStatus(run.info.status),
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
    client = mlflow_client(tracking_uri)
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
    usable = [p for p in parents if p.info.status == RunStatus.FINISHED or not finished_only]
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
    client = mlflow_client(tracking_uri)
    store = sql_reads.read_store(client)
    if store is not None:  # a local database: a few statements instead of MLflow's ORM
        children = sql_reads.child_runs(store, parent.experiment_id, parent.run_id)
        histories: dict[tuple[str, str], list[float]] | None = sql_reads.metric_histories(
            store, [run.info.run_id for run in children], _logged(history_metrics, children)
        )
    else:
        children = client.search_runs(
            [parent.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
            max_results=10_000,
        )
        histories = _bulk_histories(
            client, [run.info.run_id for run in children], _logged(history_metrics, children)
        )
    return [_record(client, run, history_metrics, histories) for run in children]


def _logged(metrics: Sequence[str], runs: Sequence[Any]) -> list[str]:
    """The ``metrics`` some of ``runs`` logged (as a latest value)."""
    return [m for m in metrics if any(m in run.data.metrics for run in runs)]


# Most run ids in one bulk history query (SQLite's bound-parameter limit is far above this).
_BULK_RUNS = 500


_BULK_POINTS = 5_000_000


def _bulk_histories(
    client: MlflowClient, run_ids: Sequence[str], metrics: Sequence[str]
) -> dict[tuple[str, str], list[float]] | None:
    """Every point of ``metrics`` of every run in ``run_ids``, one query per metric and chunk.

    A database store answers a metric's history for many runs at once (the call MLflow's UI
    uses to chart many runs); a study has hundreds of children, and one query per run and
    metric was most of a report's reading. A store without it (a tracking server) gives None:
    ``_record`` then asks run by run.

    Returns:
        {(run id, metric): its values in step order (``_in_step_order``)}, or None.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None)
    if bulk is None or not run_ids:
        return None
    points: dict[tuple[str, str], list[Metric]] = {}
    for metric in metrics:
        for start in range(0, len(run_ids), _BULK_RUNS):
            found = bulk(run_ids[start : start + _BULK_RUNS], metric, _BULK_POINTS)
            if len(found) >= _BULK_POINTS:
                return None  # possibly cut short: ask run by run instead
            for point in found:
                points.setdefault((point.run_id, metric), []).append(point)
    return {key: _in_step_order(history) for key, history in points.items()}


def _in_step_order(points: Sequence[Metric]) -> list[float]:
    """A history's values ordered by step, then timestamp (a stable sort of MLflow's order:
    points logged at the same step and time stay ordered by value)."""
    return [m.value for m in sorted(points, key=_step)]


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
    histories: Mapping[tuple[str, str], list[float]] | None = None,
) -> RunRecord:
    """A run as a RunRecord, with the full history of each of ``history_metrics`` it logged
    (as metric points, or as a ``series/`` artifact); ``histories``: the values read in bulk
    already, in step order (``_bulk_histories``, ``sql_reads.metric_histories``), else each
    history is asked for."""
    run_id = run.info.run_id

    def values(name: str) -> list[float]:
        if histories is not None:
            return histories.get((run_id, name), [])
        return _in_step_order(client.get_metric_history(run_id, name))

    history = {name: values(name) for name in history_metrics if name in run.data.metrics}
    missing = [name for name in history_metrics if name not in history]
    if missing:
        history.update(
            _series_from_artifacts(client, run.info.run_id, missing, run.info.artifact_uri)
        )
    return RunRecord(
        run_id=run.info.run_id,
        params=dict(run.data.params),
        seed=int(run.data.tags.get("seed", run.data.params.get("seed", -1))),
        status=RunStatus(run.info.status),
        history=history,
        final=dict(run.data.metrics),
        error=run.data.tags.get("error"),
        start_time=int(run.info.start_time or 0),
        tags=dict(run.data.tags),
        diverged_epoch=diverged_epoch_of(run.data.tags),
        no_suggestion=no_suggestion_of(run.data.tags),
    )


def _step(metric: Metric) -> tuple[int, int]:
    return metric.step, metric.timestamp


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
    ui_address: str = UI_ADDRESS,
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
    client = mlflow_client(tracking_uri)
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


def study_parents(tracking_uri: str, experiment_name: str) -> list[StudyRun]:
    """Every sweep parent run of an experiment, newest first, whatever its status.

    Args:
        tracking_uri: the store.
        experiment_name: the study's MLflow experiment.

    Returns:
        The parents ([] when the experiment does not exist or has no sweep).
    """
    client = mlflow_client(tracking_uri)
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
    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = '{RunStatus.FINISHED}'",
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


def latest_tagged_run(tracking_uri: str, experiment_name: str, tag: str, value: str) -> str | None:
    """The newest FINISHED run of an experiment whose tag ``tag`` is ``value`` (e.g. the
    newest claims ledger: ``xent.task`` = ``claims``).

    Args:
        tracking_uri: the store.
        experiment_name: the MLflow experiment to look in.
        tag: the tag's name.
        value: its value.

    Returns:
        The run's id, or None (no such experiment or run).
    """
    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{tag}` = '{value}' and attributes.status = '{RunStatus.FINISHED}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def read_text_artifact(tracking_uri: str, run_id: str, artifact_path: str) -> str:
    """The text of one of a run's artifacts (e.g. a ledger's ``claims.json``).

    Raises:
        ValueError: no such run, or the run has no such artifact.
    """
    client = mlflow_client(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            local = client.download_artifacts(run_id, artifact_path, scratch)
            return Path(local).read_text()
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise ValueError(
            f"run {run_id!r} in {tracking_uri} has no artifact {artifact_path!r}: {error}"
        ) from error
