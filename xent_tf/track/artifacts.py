"""What a run records besides its numbers: its logged model and its dataset inputs.

Shared by the writing of a run (``writing.MlflowRun``) and the replay of its spool
(``recovery.replay_spool``), with MLflow's limits on a batch and on a run's name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
)
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from xent_tf.track import sql_metrics

log = logging.getLogger(__name__)


# Tries at linking a run's dataset inputs (see MlflowRun.log_datasets).
_DATASET_ATTEMPTS = 3


# MLflow caps a param value at 6000 characters and a batch at 100 params / 1000 metrics.
MAX_PARAM_LENGTH = 6000


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} as MLflow takes params (``writing.flatten``, and
    ``resume.study_definition``'s keys); lists become their string form."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


# A run name is VARCHAR(250) in MLflow's SQL schema: PostgreSQL rejects a longer one (a sweep
# job's name is its Hydra overrides, easily longer); SQLite would have kept it.
_MAX_RUN_NAME = 250


PARAM_BATCH = 100


METRIC_BATCH = 1000


def send_metrics(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    """``log_batch`` of metrics; into a local database store, ``sql_metrics.log_metrics`` (the
    same rows, one insert instead of one ORM object per value)."""
    store = sql_metrics.fast_store(client)
    if store is None or not sql_metrics.log_metrics(store, run_id, metrics):
        client.log_batch(run_id, metrics=metrics)


def send_params(client: MlflowClient, run_id: str, params: list[Param]) -> None:
    """``log_batch`` of params in batches of MLflow's maximum size; into a local database
    store, ``sql_metrics.log_params`` (one insert)."""
    store = sql_metrics.fast_store(client)
    if store is not None:
        sql_metrics.log_params(store, run_id, params)
        return
    for start in range(0, len(params), PARAM_BATCH):
        client.log_batch(run_id, params=params[start : start + PARAM_BATCH])


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


def save_model(
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


def publish_model(
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


def dataset_inputs(
    splits: Mapping[str, DatasetSplit], name: str, source: Mapping[str, str]
) -> list[DatasetInput]:
    """One MLflow dataset input per split (its context), digested from its arrays."""
    return [dataset_input(split, data, name, source) for split, data in splits.items()]


# The fields of an MLflow dataset entity, as kept in a spool record.
_DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def dataset_input_record(dataset_input: DatasetInput) -> dict[str, Any]:
    """A dataset input as JSON: the dataset entity's fields and the input's tags."""
    return {
        "dataset": {f: getattr(dataset_input.dataset, f) for f in _DATASET_FIELDS},
        "tags": {t.key: t.value for t in dataset_input.tags},
    }


def dataset_input_from_record(record: Mapping[str, Any]) -> DatasetInput:
    """The inverse of ``dataset_input_record``."""
    tags = [InputTag(k, v) for k, v in record["tags"].items()]
    return DatasetInput(Dataset(**record["dataset"]), tags)


def log_dataset_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
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


def dataset_input(
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


def fit_run_name(name: str) -> str:
    """``name`` cut to MLflow's 250 characters, ending in a hash of the whole so it stays unique."""
    if len(name) <= _MAX_RUN_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_RUN_NAME - 12]}...{digest}"


# Long per-step series (the batch loss of every step: ~4,000 values a run) are kept as one
# .npy artifact each: as metric points they cost more store time than the rest of the run's
# record together (measured in benchmarks/replicas.py), and the UI does not chart them usefully.
SERIES_DIR = "series"


def series_file_name(metric: str) -> str:
    """The artifact file (under ``series/``) that holds ``metric``'s per-step values."""
    return metric.replace("/", "_") + ".npy"


# What MLflow allows in a metric name (colons are refused on Windows only).
_METRIC_NAME_UNSAFE = re.compile(r"[^/\w.\- :]")


def metric_name(text: str) -> str:
    """``text`` as a valid MLflow metric name: any other character becomes ``:``."""
    return _METRIC_NAME_UNSAFE.sub(":", text)
