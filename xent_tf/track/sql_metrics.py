"""A run's metrics and params written to a database store in one statement per table.

MLflow's ``log_batch`` into a SQLAlchemy store builds one ORM object per value and flushes them
through the session: for the ~200 metric values and ~60 params a run of a study records, that
was most of the run's recording time. ``log_metrics`` and ``log_params`` write the same rows
into the same tables, defined by the installed MLflow's own table objects (``SqlMetric``,
``SqlLatestMetric``, ``SqlParam``), with one multi-row insert, and keep MLflow's rules.
Params: validated (an over-long value cut) by MLflow's own function; a key already logged
with another value is refused. Metrics: validated and sanitised by the store's own functions
(NaN stored as 0 with ``is_nan``, +-inf as +-max float), duplicates dropped, the run must be
active, and each key's latest value is the greatest (step, timestamp, value), merged with what
the run already holds.
Whatever reads the store (client, UI, server) sees what ``log_batch`` would have written
(``tests/test_sql_metrics.py`` compares both).

Only a local database store takes this path (``fast_store``); a tracking server, or an MLflow
whose store lacks the pieces used here, keeps ``log_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from sqlalchemy.exc import IntegrityError

# Where MLflow's SQLAlchemy store lives; it and its table models are imported only once a
# client has created such a store (a process that talks to a server never loads them).
_STORE_MODULE = "mlflow.store.tracking.sqlalchemy_store"
_STORE_PIECES = ("ManagedSessionMaker", "_get_run", "_check_run_is_active", "sanitize_metric_value")


def fast_store(client: MlflowClient) -> Any | None:
    """The client's SQLAlchemy store when ``log_metrics`` can write into it, else None.

    Args:
        client: an MLflow client.

    Returns:
        The store (a local database: SQLite, PostgreSQL, ...), or None (a server, a file
        store, or an MLflow without the store methods and tables used here).
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if type(store).__module__ != _STORE_MODULE or type(store).__name__ != "SqlAlchemyStore":
        return None
    try:  # MLflow internals: without them, callers keep MLflow's own log_batch
        _tables()
    except ImportError:  # pragma: no cover - depends on the installed MLflow
        return None
    return store if all(hasattr(store, name) for name in _STORE_PIECES) else None


def mlflow_models() -> Any:
    """MLflow's table objects (its own SQLAlchemy definitions, ``SqlRun``, ``SqlMetric``, ...),
    imported only once a store takes a path of this package's."""
    from mlflow.store.tracking.dbmodels import models

    return models


def _tables() -> tuple[Any, Any, Any]:
    """MLflow's metric, latest-metric and param tables."""
    models = mlflow_models()
    return models.SqlMetric.__table__, models.SqlLatestMetric.__table__, models.SqlParam.__table__


def _order(row: Any) -> tuple[int, int, float]:
    """MLflow's order of a key's values (the latest is the greatest): step, timestamp, value."""
    return (row["step"], row["timestamp"], row["value"])


def log_metrics(store: Any, run_id: str, metrics: Sequence[Metric]) -> bool:
    """Record ``metrics`` on run ``run_id`` as ``log_batch`` would, in one transaction.

    Args:
        store: from ``fast_store``.
        run_id: an active run of that store.
        metrics: the values (any keys, steps and timestamps).

    Returns:
        True when written; False when nothing was written and ``log_batch`` must do it: the
        run already holds one of these exact values (it sorts repeats out row by row), or a
        value names a logged model (MLflow records those in its model tables too).

    Raises:
        mlflow.exceptions.MlflowException: an invalid metric, or the run is not active (as
            ``log_batch`` raises).
    """
    if not metrics:
        return True
    if any(getattr(m, "model_id", None) or getattr(m, "dataset_name", None) for m in metrics):
        return False
    rows, latest = metric_rows(store, run_id, metrics)
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
            insert_metrics(session, run_id, rows, latest)
    except MlflowException as error:
        if isinstance(error.__cause__, IntegrityError):
            return False
        raise
    return True


def check_metrics(metrics: Sequence[Metric]) -> None:
    """MLflow's own check of metric values.

    Raises:
        mlflow.exceptions.MlflowException: an invalid metric (named by its index).
    """
    from mlflow.utils.validation import _validate_metric

    # Whether a value passes depends on its key (checked once per key) and on the types of its
    # value, timestamp and step: a float with an int timestamp >= 0 and an int step is one
    # MLflow accepts, so only the first value of each key and any value not of that form go
    # through MLflow's check (which raises its own message for a bad one). A range test's
    # series repeat a few keys hundreds of times.
    checked: set[str] = set()
    for index, metric in enumerate(metrics):
        value, timestamp, step = metric.value, metric.timestamp, metric.step
        plain = type(value) is float and type(timestamp) is int and type(step) is int
        if metric.key in checked and plain and timestamp >= 0:
            continue
        _validate_metric(metric.key, value, timestamp, step, path=f"metrics[{index}]")
        checked.add(metric.key)


def metric_rows(
    store: Any, run_id: str, metrics: Sequence[Metric], validate: bool = True
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The metrics table's rows for ``metrics``, and each key's latest row.

    Validated and sanitised by MLflow's own functions (NaN stored as 0 with ``is_nan``, +-inf
    as +-max float); exact repeats dropped.

    Args:
        store: from ``fast_store``.
        run_id: the run they belong to.
        metrics: the values.
        validate: check them first (``check_metrics``); False: they were checked already.

    Returns:
        (the rows, {key: its greatest (step, timestamp, value) row}).

    Raises:
        mlflow.exceptions.MlflowException: an invalid metric (named by its index).
    """
    if validate:
        check_metrics(metrics)
    rows: dict[tuple[str, int, int, float, bool], dict[str, Any]] = {}
    for metric in metrics:
        is_nan, value = store.sanitize_metric_value(metric.value)
        identity = (metric.key, int(metric.timestamp), int(metric.step), value, is_nan)
        rows.setdefault(
            identity,
            {
                "run_uuid": run_id,
                "key": metric.key,
                "value": value,
                "timestamp": int(metric.timestamp),
                "step": int(metric.step),
                "is_nan": is_nan,
            },
        )
    latest: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        held = latest.get(row["key"])
        if held is None or _order(row) > _order(held):
            latest[row["key"]] = row
    return list(rows.values()), latest


def insert_metrics(
    session: Any,
    run_id: str,
    rows: list[dict[str, Any]],
    latest: dict[str, dict[str, Any]],
) -> None:
    """Insert the rows and merge each key's latest value, in the session's transaction.

    Args:
        session: an open write session of the store (its transaction).
        run_id: the run (checked active by the caller).
        rows, latest: from ``metric_rows``.

    Raises:
        sqlalchemy.exc.IntegrityError: the run already holds one of these exact values.
    """
    if not rows:
        return
    metric_table, latest_table, _ = _tables()
    session.execute(metric_table.insert(), rows)
    held_rows = session.execute(
        latest_table.select().where(
            latest_table.c.run_uuid == run_id, latest_table.c.key.in_(sorted(latest))
        )
    ).mappings()
    held_latest = {row["key"]: row for row in held_rows}
    inserts = [row for key, row in latest.items() if key not in held_latest]
    if inserts:
        session.execute(latest_table.insert(), inserts)
    for key, held in held_latest.items():
        row = latest[key]
        if _order(row) > _order(held):
            session.execute(
                latest_table.update()
                .where(latest_table.c.run_uuid == run_id, latest_table.c.key == key)
                .values(
                    value=row["value"],
                    timestamp=row["timestamp"],
                    step=row["step"],
                    is_nan=row["is_nan"],
                )
            )


def log_params(store: Any, run_id: str, params: Sequence[Param]) -> None:
    """Record ``params`` on run ``run_id`` as ``log_batch`` would, in one transaction.

    Args:
        store: from ``fast_store``.
        run_id: an active run of that store.
        params: keys and values (a key the run holds already must have the same value).

    Raises:
        mlflow.exceptions.MlflowException: an invalid param, a key already logged with another
            value (nothing is written), or the run is not active.
    """
    if not params:
        return
    wanted = checked_params(params)
    with store.ManagedSessionMaker(read_only=False) as session:
        store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
        insert_params(session, run_id, wanted)


def checked_params(params: Sequence[Param]) -> dict[str, str]:
    """{key: value} of ``params`` after MLflow's own check, which also cuts an over-long value
    to the length the store keeps.

    Raises:
        mlflow.exceptions.MlflowException: an invalid param (named by its index).
    """
    from mlflow.utils.validation import _validate_param

    checked = [_validate_param(p.key, p.value, path=f"params[{i}]") for i, p in enumerate(params)]
    return {param.key: param.value for param in checked}


def changed_params_error(run_id: str, changed: list[dict[str, str]]) -> MlflowException:
    """MLflow's refusal of a param logged again with another value."""
    return MlflowException(
        f"Changing param values is not allowed. Params were already logged='{changed}' "
        f"for run ID='{run_id}'.",
        INVALID_PARAMETER_VALUE,
    )


def insert_params(session: Any, run_id: str, wanted: dict[str, str]) -> None:
    """Insert the params the run does not hold yet, in the session's transaction.

    Args:
        session: an open write session of the store (its transaction).
        run_id: the run (checked active by the caller).
        wanted: from ``checked_params``.

    Raises:
        mlflow.exceptions.MlflowException: a key the run holds with another value (nothing
            of these is written).
    """
    if not wanted:
        return
    _, _, table = _tables()
    held = dict(
        session.execute(
            table.select()
            .with_only_columns(table.c.key, table.c.value)
            .where(table.c.run_uuid == run_id, table.c.key.in_(sorted(wanted)))
        ).all()
    )
    changed = [
        {"key": k, "old_value": held[k], "new_value": v}
        for k, v in wanted.items()
        if k in held and held[k] != v
    ]
    if changed:
        raise changed_params_error(run_id, changed)
    new = [{"run_uuid": run_id, "key": k, "value": v} for k, v in wanted.items() if k not in held]
    if new:
        session.execute(table.insert(), new)
