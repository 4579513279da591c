"""A whole run written to a local database store in two transactions: created, then completed.

MLflow's client records a run in many transactions, each loading the run through its ORM
first: ``create_run``, a ``log_batch`` per params batch and per metrics flush, ``log_inputs``
for the dataset inputs, ``set_terminated``. For a run whose numbers are all known when it is
recorded (a replica of a trained batch), that is most of its recording's CPU. ``create_run``
here inserts the run row and its initial tags as MLflow's ``create_run`` does; ``PendingRecords``
holds what the run logs (params, tags, metrics, dataset inputs), checked by MLflow's own
validation functions as it is logged, and ``PendingRecords.write`` writes all of it with the
run's final status and end time in one transaction, into MLflow's own tables (its SQLAlchemy
table objects): the same rows MLflow's calls would have written (``tests/test_sql_runs.py``
reads both back through ``MlflowClient`` and compares them).

Only a store ``buffered_store`` accepts takes this path (``sql_metrics.fast_store``'s, with
the MLflow pieces used here).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import DatasetInput, Metric, Param, RunStatus
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.uri import append_to_uri_path
from sqlalchemy.exc import IntegrityError

from xent_tf.track import sql_metrics

# Tries at writing a run's records: parallel jobs of one sweep log the same data set, and the
# loser of the race to create its row hits the dataset table's unique key; its next try finds
# the row and links to it (as ``artifacts.log_dataset_inputs`` does for MLflow's call).
_WRITE_ATTEMPTS = 3


# MLflow internals used here besides ``sql_metrics``'s (imported only once a store takes this
# path, as ``sql_metrics`` does): its validation of tags and dataset inputs, its random run
# names, and the tables of runs, tags, experiments, datasets and inputs.
_INTERNALS = {
    "mlflow.utils.validation": ("_validate_tag", "_validate_dataset_inputs"),
    "mlflow.utils.name_utils": ("_generate_random_name",),
    "mlflow.store.tracking.dbmodels.models": (
        "SqlExperiment",
        "SqlRun",
        "SqlTag",
        "SqlDataset",
        "SqlInput",
        "SqlInputTag",
    ),
}


def buffered_store(client: Any) -> Any | None:
    """The client's store when a whole run can be written into it here, else None.

    Args:
        client: an MLflow client.

    Returns:
        ``sql_metrics.fast_store``'s store when the installed MLflow also has the pieces used
        here; None otherwise (the run is recorded by MLflow's calls).
    """
    import importlib

    store = sql_metrics.fast_store(client)
    if store is None or not hasattr(store, "ARTIFACTS_FOLDER_NAME"):
        return None
    try:
        modules = {name: importlib.import_module(name) for name in _INTERNALS}
    except ImportError:  # pragma: no cover
        return None
    present = all(hasattr(modules[m], n) for m, names in _INTERNALS.items() for n in names)
    return store if present else None


def now_millis() -> int:
    """The time as MLflow stamps a run's start and end: milliseconds since the epoch."""
    return int(time.time() * 1000)


def create_run(
    store: Any, experiment_id: str, run_name: str, tags: Mapping[str, str], start_time: int
) -> tuple[str, str]:
    """Create a RUNNING run with its tags, as ``MlflowClient.create_run`` does, in one
    transaction.

    Args:
        store: from ``sql_metrics.fast_store``.
        experiment_id: an active experiment of that store.
        run_name: the run's name (its ``mlflow.runName`` tag unless ``tags`` has one).
        tags: its initial tags (``mlflow.user`` is also its user id, "unknown" without).
        start_time: milliseconds since the epoch.

    Returns:
        (the run's id, its artifact URI).

    Raises:
        mlflow.exceptions.MlflowException: no such experiment, or it is not active (as
            ``create_run`` raises); ``run_name`` and an ``mlflow.runName`` tag differ.
    """
    models = sql_metrics.mlflow_models()
    experiments, runs, run_tags = (
        models.SqlExperiment.__table__,
        models.SqlRun.__table__,
        models.SqlTag.__table__,
    )
    initial = dict(tags)
    named = initial.get(MLFLOW_RUN_NAME)
    if named and run_name and named != run_name:
        raise MlflowException(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
            f"different values (run_name='{run_name}', mlflow.runName='{named}').",
            INVALID_PARAMETER_VALUE,
        )
    from mlflow.utils.name_utils import _generate_random_name

    name = run_name or named or _generate_random_name()
    initial.setdefault(MLFLOW_RUN_NAME, name)
    run_id = uuid.uuid4().hex
    with store.ManagedSessionMaker(read_only=False) as session:
        found = session.execute(
            experiments.select()
            .with_only_columns(experiments.c.artifact_location, experiments.c.lifecycle_stage)
            .where(experiments.c.experiment_id == int(experiment_id))
        ).first()
        if found is None:
            raise MlflowException(
                f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST
            )
        location, stage = found
        if stage != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The experiment {experiment_id} must be in the 'active' state. "
                f"Current state is {stage}.",
                INVALID_PARAMETER_VALUE,
            )
        artifact_uri = append_to_uri_path(location, run_id, store.ARTIFACTS_FOLDER_NAME)
        session.execute(
            runs.insert(),
            {
                "run_uuid": run_id,
                "name": name,
                "source_type": "UNKNOWN",
                "source_name": "",
                "entry_point_name": "",
                "user_id": initial.get(MLFLOW_USER, "unknown"),
                "status": RunStatus.to_string(RunStatus.RUNNING),
                "start_time": start_time,
                "end_time": None,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
                "artifact_uri": artifact_uri,
                "experiment_id": int(experiment_id),
            },
        )
        session.execute(
            run_tags.insert(),
            [{"run_uuid": run_id, "key": k, "value": v} for k, v in initial.items()],
        )
    return run_id, artifact_uri


@dataclass
class PendingRecords:
    """What a run logged and the store does not hold yet, checked as MLflow checks it.

    Each ``add_`` raises what MLflow's own call would raise for a bad value, when the value is
    logged, so a run fails where it logged it; ``write`` then cannot fail on a value.
    """

    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    inputs: list[DatasetInput] = field(default_factory=list)

    def add_params(self, run_id: str, params: Sequence[Param]) -> None:
        """Keep params (an over-long value cut as MLflow cuts it).

        Raises:
            mlflow.exceptions.MlflowException: an invalid param, or one kept already with
                another value (nothing of ``params`` is kept).
        """
        wanted = sql_metrics.checked_params(params)
        changed = [
            {"key": k, "old_value": self.params[k], "new_value": v}
            for k, v in wanted.items()
            if k in self.params and self.params[k] != v
        ]
        if changed:
            raise sql_metrics.changed_params_error(run_id, changed)
        self.params.update(wanted)

    def add_tags(self, tags: Mapping[str, str]) -> None:
        """Keep tags (a key set again takes the last value; an over-long value is cut).

        Raises:
            mlflow.exceptions.MlflowException: an invalid tag key.
        """
        from mlflow.utils.validation import _validate_tag

        for index, (key, value) in enumerate(tags.items()):
            checked = _validate_tag(key, value, path=f"tags[{index}]")
            self.tags[checked.key] = checked.value

    def add_metrics(self, metrics: Sequence[Metric]) -> None:
        """Keep metric values.

        Raises:
            mlflow.exceptions.MlflowException: an invalid metric (none of ``metrics`` kept).
        """
        sql_metrics.check_metrics(metrics)
        self.metrics.extend(metrics)

    def add_inputs(self, inputs: Sequence[DatasetInput]) -> None:
        """Keep dataset inputs.

        Raises:
            mlflow.exceptions.MlflowException: an invalid dataset or input tag.
        """
        from mlflow.utils.validation import _validate_dataset_inputs

        _validate_dataset_inputs(list(inputs))
        self.inputs.extend(inputs)

    def drop_bulk(self) -> str:
        """Forget the metric values and dataset inputs (what takes room), keeping params and
        tags: what a run that cannot write them all still records.

        Returns:
            What was dropped, e.g. "212 metric values and 3 dataset inputs were not written:
            no room".
        """
        lost = (
            f"{len(self.metrics)} metric values and {len(self.inputs)} dataset inputs were not "
            "written: no room on the store's disk"
        )
        self.metrics, self.inputs = [], []
        return lost

    def write(self, store: Any, run_id: str, status: str | None, end_time: int | None) -> None:
        """Write everything kept, and the run's final status if given, in one transaction;
        forget it only once the store took it (a failed write can be tried again).

        Args:
            store: from ``sql_metrics.fast_store``.
            run_id: an active run of that store.
            status: its final status (FINISHED, FAILED, KILLED), or None: it stays RUNNING.
            end_time: milliseconds since the epoch (with a status).

        Raises:
            mlflow.exceptions.MlflowException: the run is missing or not active, or the store
                failed (a full disk, a locked database past its timeout...): nothing written.
        """
        rows, latest = sql_metrics.metric_rows(store, run_id, self.metrics, validate=False)
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with store.ManagedSessionMaker(read_only=False) as session:
                    self._write(session, run_id, status, end_time, rows, latest)
                break
            except MlflowException as error:
                race = isinstance(error.__cause__, IntegrityError) and self.inputs
                if not race or attempt == _WRITE_ATTEMPTS - 1:
                    raise
        self.params, self.tags, self.metrics, self.inputs = {}, {}, [], []

    def _write(
        self,
        session: Any,
        run_id: str,
        status: str | None,
        end_time: int | None,
        rows: list[dict[str, Any]],
        latest: dict[str, dict[str, Any]],
    ) -> None:
        """The transaction of ``write``."""
        runs = sql_metrics.mlflow_models().SqlRun.__table__
        # The run's row first: a write as the transaction's first statement takes SQLite's
        # write lock before the reads below, so no other writer commits between them.
        values: dict[str, Any] = {"lifecycle_stage": LifecycleStage.ACTIVE}
        if status is not None:
            values |= {"status": status, "end_time": end_time}
        if MLFLOW_RUN_NAME in self.tags:
            values["name"] = self.tags[MLFLOW_RUN_NAME]
        changed = session.execute(
            runs.update()
            .where(runs.c.run_uuid == run_id, runs.c.lifecycle_stage == LifecycleStage.ACTIVE)
            .values(**values)
        )
        if changed.rowcount != 1:
            _refuse_inactive(session, run_id)
        sql_metrics.insert_params(session, run_id, self.params)
        sql_metrics.insert_metrics(session, run_id, rows, latest)
        _upsert_tags(session, run_id, self.tags)
        _insert_inputs(session, run_id, self.inputs)


def _refuse_inactive(session: Any, run_id: str) -> None:
    """Raise what MLflow raises for a run that is missing or not active."""
    runs = sql_metrics.mlflow_models().SqlRun.__table__
    stage = session.execute(
        runs.select().with_only_columns(runs.c.lifecycle_stage).where(runs.c.run_uuid == run_id)
    ).scalar()
    if stage is None:
        raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
    raise MlflowException(
        f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
        INVALID_PARAMETER_VALUE,
    )


def _upsert_tags(session: Any, run_id: str, tags: Mapping[str, str]) -> None:
    """Set tags: a key the run holds gets the new value, as MLflow's ``set_tag`` does."""
    if not tags:
        return
    table = sql_metrics.mlflow_models().SqlTag.__table__
    held = set(
        session.execute(
            table.select()
            .with_only_columns(table.c.key)
            .where(table.c.run_uuid == run_id, table.c.key.in_(sorted(tags)))
        ).scalars()
    )
    new = [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items() if k not in held]
    if new:
        session.execute(table.insert(), new)
    for key in held:
        session.execute(
            table.update()
            .where(table.c.run_uuid == run_id, table.c.key == key)
            .values(value=tags[key])
        )


def _insert_inputs(session: Any, run_id: str, inputs: Sequence[DatasetInput]) -> None:
    """Link dataset inputs to the run as MLflow's ``log_inputs`` does: a dataset (name,
    digest) is created in the run's experiment once and shared by its runs; a run links to a
    dataset once, with the first input's tags."""
    if not inputs:
        return
    models = sql_metrics.mlflow_models()
    runs, datasets = models.SqlRun.__table__, models.SqlDataset.__table__
    links, link_tags = models.SqlInput.__table__, models.SqlInputTag.__table__
    unique: dict[tuple[str, str], DatasetInput] = {}
    for dataset_input in inputs:
        unique.setdefault((dataset_input.dataset.name, dataset_input.dataset.digest), dataset_input)
    experiment_id = session.execute(
        runs.select().with_only_columns(runs.c.experiment_id).where(runs.c.run_uuid == run_id)
    ).scalar_one()
    known = {
        (name, digest): dataset_id
        for name, digest, dataset_id in session.execute(
            datasets.select()
            .with_only_columns(datasets.c.name, datasets.c.digest, datasets.c.dataset_uuid)
            .where(
                datasets.c.experiment_id == experiment_id,
                datasets.c.name.in_(sorted({name for name, _ in unique})),
                datasets.c.digest.in_(sorted({digest for _, digest in unique})),
            )
        ).all()
    }
    new_datasets = []
    for key, dataset_input in unique.items():
        if key in known:
            continue
        known[key] = uuid.uuid4().hex
        dataset = dataset_input.dataset
        new_datasets.append(
            {
                "dataset_uuid": known[key],
                "experiment_id": experiment_id,
                "name": dataset.name,
                "digest": dataset.digest,
                "dataset_source_type": dataset.source_type,
                "dataset_source": dataset.source,
                "dataset_schema": dataset.schema,
                "dataset_profile": dataset.profile,
            }
        )
    if new_datasets:
        session.execute(datasets.insert(), new_datasets)
    linked = set(
        session.execute(
            links.select()
            .with_only_columns(links.c.source_id)
            .where(
                links.c.source_type == "DATASET",
                links.c.source_id.in_(sorted(known[key] for key in unique)),
                links.c.destination_type == "RUN",
                links.c.destination_id == run_id,
            )
        ).scalars()
    )
    new_links, new_tags = [], []
    for key, dataset_input in unique.items():
        if known[key] in linked:
            continue
        link_id = uuid.uuid4().hex
        new_links.append(
            {
                "input_uuid": link_id,
                "source_type": "DATASET",
                "source_id": known[key],
                "destination_type": "RUN",
                "destination_id": run_id,
                "step": 0,
            }
        )
        new_tags += [
            {"input_uuid": link_id, "name": tag.key, "value": tag.value}
            for tag in dataset_input.tags
        ]
    if new_links:
        session.execute(links.insert(), new_links)
    if new_tags:
        session.execute(link_tags.insert(), new_tags)
