"""A sweep's child runs read from a local database store in a few statements.

MLflow's ``search_runs`` into a SQLAlchemy store loads every run through its ORM with all its
params, tags and latest metrics, and ``get_metric_history_bulk`` builds one ORM object per
metric point: for a study's hundreds of children and their tens of thousands of points, that
was most of a report's reading. ``child_runs`` reads the same rows from MLflow's own tables
(its SQLAlchemy table objects) with one statement per table and builds the ``Run`` entities
MLflow's client gives (its run order, deleted runs left out, NaN where ``is_nan``);
``metric_histories`` reads the wanted metrics' points of all of them, in MLflow's order
(``tests/test_tracking_reads.py`` compares both paths record by record).

Only a store ``read_store`` accepts (``sql_metrics.fast_store``'s: a local database) takes this
path; a tracking server keeps MLflow's calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from mlflow.utils.search_utils import SearchUtils

from xent_tf.track import sql_metrics

# Most run ids in one statement (SQLite's bound-parameter limit is far above this).
_CHUNK_RUNS = 500


def read_store(client: Any) -> Any | None:
    """The client's store when a sweep's children can be read from it here, else None.

    Args:
        client: an MLflow client.

    Returns:
        ``sql_metrics.fast_store``'s store (a local database) when the installed MLflow has
        the tables read here; None otherwise (the children are read by MLflow's calls).
    """
    store = sql_metrics.fast_store(client)
    if store is None:
        return None
    try:
        models = sql_metrics.mlflow_models()
    except ImportError:  # pragma: no cover - depends on the installed MLflow
        return None
    tables = ("SqlRun", "SqlTag", "SqlParam", "SqlLatestMetric", "SqlMetric")
    present = all(hasattr(models, name) for name in tables) and hasattr(store, "_get_dialect")
    return store if present else None


def _chunks(run_ids: Sequence[str]) -> list[Sequence[str]]:
    return [run_ids[start : start + _CHUNK_RUNS] for start in range(0, len(run_ids), _CHUNK_RUNS)]


def child_runs(store: Any, experiment_id: str, parent_run_id: str) -> list[Run]:
    """The active child runs of a parent, as ``MlflowClient.search_runs`` gives them for
    ``tags.`mlflow.parentRunId` = '<parent>'`` in the experiment.

    Args:
        store: from ``read_store``.
        experiment_id: the parent's experiment.
        parent_run_id: the parent run.

    Returns:
        The runs (info, params, tags, latest metrics; no dataset inputs or model outputs),
        newest start first, then by run id, as MLflow orders them; deleted runs left out.
    """
    models = sql_metrics.mlflow_models()
    runs, run_tags = models.SqlRun.__table__, models.SqlTag.__table__
    params, latest = models.SqlParam.__table__, models.SqlLatestMetric.__table__
    parent_tag = run_tags.alias("parent_tag")
    # MLflow's own "=" of a search filter (case-sensitive also where the database is not).
    equals = SearchUtils.get_sql_comparison_func("=", store._get_dialect())
    with store.ManagedSessionMaker() as session:
        rows = session.execute(
            runs.select()
            .with_only_columns(
                runs.c.run_uuid,
                runs.c.name,
                runs.c.experiment_id,
                runs.c.user_id,
                runs.c.status,
                runs.c.start_time,
                runs.c.end_time,
                runs.c.lifecycle_stage,
                runs.c.artifact_uri,
            )
            .join(
                parent_tag,
                (parent_tag.c.run_uuid == runs.c.run_uuid)
                & equals(parent_tag.c.key, MLFLOW_PARENT_RUN_ID)
                & equals(parent_tag.c.value, parent_run_id),
            )
            .where(
                runs.c.experiment_id == int(experiment_id),
                runs.c.lifecycle_stage == LifecycleStage.ACTIVE,
            )
            .order_by(runs.c.start_time.desc(), runs.c.run_uuid)
        ).all()
        run_ids = [row.run_uuid for row in rows]
        found_params: dict[str, list[Param]] = {run_id: [] for run_id in run_ids}
        found_tags: dict[str, list[RunTag]] = {run_id: [] for run_id in run_ids}
        found_metrics: dict[str, list[Metric]] = {run_id: [] for run_id in run_ids}
        for chunk in _chunks(run_ids):
            for run_id, key, value in session.execute(
                params.select()
                .with_only_columns(params.c.run_uuid, params.c.key, params.c.value)
                .where(params.c.run_uuid.in_(chunk))
            ):
                found_params[run_id].append(Param(key, value))
            for run_id, key, value in session.execute(
                run_tags.select()
                .with_only_columns(run_tags.c.run_uuid, run_tags.c.key, run_tags.c.value)
                .where(run_tags.c.run_uuid.in_(chunk))
            ):
                found_tags[run_id].append(RunTag(key, value))
            for run_id, key, value, timestamp, step, is_nan in session.execute(
                latest.select()
                .with_only_columns(
                    latest.c.run_uuid,
                    latest.c.key,
                    latest.c.value,
                    latest.c.timestamp,
                    latest.c.step,
                    latest.c.is_nan,
                )
                .where(latest.c.run_uuid.in_(chunk))
            ):
                found_metrics[run_id].append(
                    Metric(key, float("nan") if is_nan else value, timestamp, step)
                )
    children = []
    for row in rows:
        tags = found_tags[row.run_uuid]
        name = row.name or next((t.value for t in tags if t.key == MLFLOW_RUN_NAME), None)
        info = RunInfo(
            run_id=row.run_uuid,
            run_name=name,
            experiment_id=str(row.experiment_id),
            user_id=row.user_id,
            status=row.status,
            start_time=row.start_time,
            end_time=row.end_time,
            lifecycle_stage=row.lifecycle_stage,
            artifact_uri=row.artifact_uri,
        )
        data = RunData(found_metrics[row.run_uuid], found_params[row.run_uuid], tags)
        children.append(Run(info, data))
    return children


def metric_histories(
    store: Any, run_ids: Sequence[str], metrics: Sequence[str]
) -> dict[tuple[str, str], list[float]]:
    """Every point of ``metrics`` of every run in ``run_ids``, one statement per chunk of runs.

    Args:
        store: from ``read_store``.
        run_ids: the runs.
        metrics: the metric names.

    Returns:
        {(run id, metric): its values} for the histories that exist, NaN where stored as NaN,
        ordered by step, then timestamp, then value: ``get_metric_history_bulk``'s points
        (by run, timestamp, step, value) sorted by (step, timestamp), as ``reading`` sorts them.
    """
    if not run_ids or not metrics:
        return {}
    table = sql_metrics.mlflow_models().SqlMetric.__table__
    nan = float("nan")
    histories: dict[tuple[str, str], list[float]] = {}
    with store.ManagedSessionMaker() as session:
        for chunk in _chunks(run_ids):
            points = session.execute(
                table.select()
                .with_only_columns(table.c.run_uuid, table.c.key, table.c.value, table.c.is_nan)
                .where(table.c.run_uuid.in_(chunk), table.c.key.in_(sorted(set(metrics))))
                .order_by(
                    table.c.run_uuid, table.c.key, table.c.step, table.c.timestamp, table.c.value
                )
            )
            for run_id, key, value, is_nan in points:
                history = histories.get((run_id, key))
                if history is None:
                    history = histories[(run_id, key)] = []
                history.append(nan if is_nan else value)
    return histories
