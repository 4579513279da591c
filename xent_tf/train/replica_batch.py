"""A replica batch: the runs of several configs that can share one graph, trained together.

Which configs can share a graph is decided by ``replica_groups.graph_key`` (re-exported here);
``replica_groups.group_jobs`` never merges configs that cannot.

``train_batch`` trains one batch with ``replicas.ReplicaTrainer`` and ``record_outcome`` turns
each replica into the MLflow run its config would have had alone: the same params, per-epoch
metrics, range-test records, loss curve, model file and log, plus tags naming the batch.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import random
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from xent_tf.config import Config, ModelConfig
from xent_tf.train.build import (
    build_dataset,
    build_loss,
    build_model,
    build_optimizer,
    schedule_rates,
    tensor_splits,
)
from xent_tf.train.data import Dataset
from xent_tf.train.losses import LossSpec
from xent_tf.train.lr_finder import NoSuggestionError, RangeTestResult, rate_to_train_with
from xent_tf.train.models import saturate_output_layer
from xent_tf.train.pipeline import (
    RunSummary,
    finish_run,
    log_epoch,
    log_initial,
    log_params,
    record_divergence,
    record_no_suggestion,
    record_range_test,
    recorded_run,
    save_loss_curve,
)
from xent_tf.train.placement import gpu_memory_bytes, memory_budget
from xent_tf.train.replica_groups import PER_REPLICA_FIELDS, graph_key, group_jobs, replicable
from xent_tf.train.replicas import (
    OptimizerRule,
    ReplicaFit,
    ReplicaTrainer,
    bytes_per_replica,
    dense_layers,
    replicas_that_fit,
    reusable_trainer,
)
from xent_tf.train.runtime import DeviceChoice, configure_runtime
from xent_tf.train.training import (
    Evaluation,
    NonFiniteLossError,
    probe_split,
    probe_start_epoch,
    steps_per_epoch,
)

log = logging.getLogger(__name__)

__all__ = [
    "BATCH_SIZE_TAG",
    "BATCH_TAG",
    "PER_REPLICA_FIELDS",
    "ModelFiles",
    "ReplicaOutcome",
    "TrainedBatch",
    "check_memory",
    "graph_key",
    "group_jobs",
    "initial_weights",
    "record_outcome",
    "replicable",
    "replicas_initial_weights",
    "train_batch",
]

# Tags that say which batch trained a run.
BATCH_TAG = "xent.replica_batch"
BATCH_SIZE_TAG = "xent.replicas"


@dataclass
class ReplicaOutcome:
    """What one replica of a batch measured, for its MLflow run.

    Attributes:
        config: the replica's config.
        initial: the untrained model on the validation split.
        range_test: the range test's result, when ``lr_find`` is on.
        fit: the training outcome (None when the range test gave no rate: nothing trained).
        test: the trained model on the test split (None when it did not finish training).
        error: why the run fails before training (the range test found no rate), or None.
    """

    config: Config
    initial: Evaluation
    range_test: RangeTestResult | None
    fit: ReplicaFit | None
    test: Evaluation | None
    error: str | None = None


class ModelFiles:
    """Writes ``.keras`` files of one architecture with different weights, Keras saving once.

    A ``.keras`` file is a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``;
    for models of one architecture only the weights' bytes differ, at the same offsets of the
    HDF5 file. Keras saves the template once, with a distinct marker value in every weight, so
    each weight's bytes are found by their content; each model's file is then that file with
    the weights' bytes replaced. Keras's own save cost more than all of a replica's other
    records. When the weights file is not laid out that way (compressed or chunked datasets,
    another Keras), every file is saved by Keras.
    """

    _WEIGHTS_FILE = "model.weights.h5"

    def __init__(self, template: keras.Model, scratch: Path) -> None:
        """Args:
        template: a model of the architecture (its weights are restored after the marker save).
        scratch: a directory for the marker save (the file is removed).
        """
        self._entries: dict[str, bytes] = {}
        self._offsets: list[int] = []
        kept = template.get_weights()
        markers = [
            (np.arange(w.size, dtype=np.float32) + 100_000 * (i + 1)).reshape(w.shape)
            for i, w in enumerate(kept)
        ]
        path = scratch / "architecture.keras"
        try:
            template.set_weights(markers)
            template.save(path)
        finally:
            template.set_weights(kept)
        with zipfile.ZipFile(path) as archive:
            self._entries = {name: archive.read(name) for name in archive.namelist()}
        path.unlink()
        offsets = self._weight_offsets(self._entries.get(self._WEIGHTS_FILE, b""), markers)
        self._offsets = offsets if offsets is not None else []
        self._shapes = [m.shape for m in markers]

    @staticmethod
    def _weight_offsets(h5_bytes: bytes, markers: Sequence[np.ndarray]) -> list[int] | None:
        """Where each weight's float32 bytes start in the weights file (None: not found)."""
        import h5py

        if not h5_bytes:
            return None
        found: dict[int, int] = {}
        with h5py.File(io.BytesIO(h5_bytes), "r") as weights:
            datasets: list[h5py.Dataset] = []
            weights.visititems(
                lambda _, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None
            )
            for dataset in datasets:
                offset = dataset.id.get_offset()
                if offset is None or dataset.dtype != np.dtype("<f4") or dataset.size == 0:
                    return None
                values = dataset[()]
                index = round(float(values.reshape(-1)[0]) / 100_000) - 1
                if not 0 <= index < len(markers) or not np.array_equal(values, markers[index]):
                    return None
                found[index] = offset
        if sorted(found) != list(range(len(markers))):
            return None
        return [found[i] for i in range(len(markers))]

    def save(
        self, model: Callable[[], keras.Model], weights: Sequence[np.ndarray], path: Path
    ) -> None:
        """Write the model of the template's architecture holding ``weights`` to ``path``.

        Args:
            model: gives that model, asked only when the fast path is not available (Keras
                then saves it).
            weights: its weights in ``get_weights()`` order.
            path: the ``.keras`` file to write.
        """
        if not self._offsets or [w.shape for w in weights] != self._shapes:
            model().save(path)
            return
        h5 = bytearray(self._entries[self._WEIGHTS_FILE])
        for offset, weight in zip(self._offsets, weights, strict=True):
            data = np.ascontiguousarray(weight, dtype="<f4").tobytes()
            h5[offset : offset + len(data)] = data
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in self._entries.items():
                archive.writestr(name, bytes(h5) if name == self._WEIGHTS_FILE else content)


@dataclass
class TrainedBatch:
    """A trained replica batch: each replica's outcome and the trainer holding its weights."""

    device: DeviceChoice
    data: Dataset
    n_params: int
    trainer: ReplicaTrainer
    outcomes: list[ReplicaOutcome]
    _files: ModelFiles | None = None

    def model(self, replica: int) -> keras.Model:
        """Replica ``replica``'s trained model as a Keras model (one model object serves every
        replica in turn: save it before asking for the next)."""
        return self.trainer.export(replica)

    def save_model(self, replica: int, path: Path) -> None:
        """Write replica ``replica``'s trained model to the ``.keras`` file ``path``."""
        if self._files is None:
            self._files = ModelFiles(self.model(replica), path.parent)
        self._files.save(
            functools.partial(self.model, replica), self.trainer.weights(replica), path
        )


def train_batch(
    configs: Sequence[Config], memory_bytes: int | None = None, gpu_share: float = 1.0
) -> TrainedBatch:
    """Train the configs of one batch as replicas of one graph.

    Args:
        configs: configs with one ``graph_key``.
        memory_bytes: memory the batch may use (None: on a GPU, its memory times
            ``gpu_share``; on a CPU, what the machine has available).
        gpu_share: the share of the GPU this batch was given (a Ray unit's ``num_gpus``).

    Returns:
        Every replica's outcome.

    Raises:
        ValueError: the configs do not share a graph.
        MemoryError: the batch would not fit in ``memory_bytes`` (the message says how many do).
    """
    first = configs[0]
    if any(graph_key(c) != graph_key(first) for c in configs[1:]):
        raise ValueError("a replica batch needs configs that share one graph (graph_key)")
    device = configure_runtime(first.trainer.device, first.trainer.threads, first.seed)
    log.info("training %d replicas in one graph on %s", len(configs), device.description)
    data = build_dataset(first.data)
    spec = build_loss(first.loss, data)
    template = build_model(first.model, data, spec, first.seed)
    # All replicas live on the one device: fail now, saying how many fit, rather than mid-run.
    check_memory(
        len(configs),
        len(data.train),
        max(len(data.train), len(data.val), len(data.test)),
        data.n_features,
        [layer.units for layer in dense_layers(template)],
        memory_bytes if memory_bytes is not None else device_memory(device, gpu_share),
    )
    weights = replicas_initial_weights(template, configs, data, spec)
    n_params = int(template.count_params())
    seeds = [config.seed for config in configs]
    epochs, batch_size = first.trainer.epochs, first.trainer.batch_size
    with tf.device(device.name):
        train, val, test = tensor_splits(data, spec)
        trainer = reusable_trainer(
            template,
            weights,
            spec.loss,
            OptimizerRule.of(build_optimizer(first.optimizer)),
            batch_size,
            first.loss.from_logits,
            device.name,
        )
        range_tests: list[RangeTestResult | None] = [None] * len(configs)
        base_rates: list[float | None] = [c.optimizer.learning_rate for c in configs]
        if first.lr_find.enabled:
            tested = trainer.range_test(train, seeds, **first.lr_find.curve_settings())
            range_tests = list(tested)
            base_rates = [
                rate_to_train_with(result, config.lr_find.use, config.optimizer.learning_rate)
                for config, result in zip(configs, tested, strict=True)
            ]
        n_steps = steps_per_epoch(len(train), batch_size)
        # A replica whose range test found no rate trains at rate 0: it shares the graph, and
        # its run fails with the range test's message, as the single run does.
        rates = np.stack(
            [
                schedule_rates(config.schedule, rate, epochs, n_steps)
                if rate is not None
                else np.zeros(epochs * n_steps, np.float32)
                for config, rate in zip(configs, base_rates, strict=True)
            ]
        )
        initial = trainer.evaluate(val, with_norms=False)
        fits = trainer.fit(
            train,
            val,
            rates,
            epochs,
            seeds,
            probe_split(train, first.trainer.probe_rows),
            probe_start_epoch(epochs, first.trainer.probe_late_fraction),
        )
        on_test = trainer.evaluate(test, with_norms=False)
    outcomes = []
    for k, config in enumerate(configs):
        found = range_tests[k]
        error = None
        if base_rates[k] is None and found is not None:
            error = f"lr_find: {found.message}"
        finished = error is None and fits[k].result.diverged_epoch is None
        outcomes.append(
            ReplicaOutcome(
                config=config,
                initial=initial[k],
                range_test=found,
                fit=fits[k] if error is None else None,
                test=on_test[k] if finished else None,
                error=error,
            )
        )
    return TrainedBatch(device, data, n_params, trainer, outcomes)


def initial_weights(
    template: keras.Model, model_config: ModelConfig, data: Dataset, seed: int
) -> list[np.ndarray]:
    """The initial weights ``build.build_model`` gives an MLP config, without building a model.

    ``build_model`` seeds Keras (``keras.utils.set_random_seed``) and builds the MLP: each Dense
    layer creates its kernel and bias initialisers in turn (a random one draws its seed from
    Python's generator then) and calls them once with its weight shapes. Here the same
    initialisers are created in the same order after seeding Python's generator alike and
    called with the same shapes, then the saturated init is applied as ``build_model`` applies
    it. Building a Keras model costs several times as much; ``replicas_initial_weights`` checks
    the two agree.

    Args:
        template: a model of the config's architecture (``build_model`` of a config of the
            batch); its weights are left as they were.
        model_config: the replica's model settings (``output_init``, ``saturation_scale``).
        data: the data set (training labels for the saturated init).
        seed: the replica's seed.

    Returns:
        The weights in the order of ``template.get_weights()``.
    """
    # Keras initialisers draw their seeds from Python's generator; seeding only that one, not
    # TensorFlow's global seed as ``keras.utils.set_random_seed`` also does, keeps TensorFlow's
    # eager kernel cache, which setting the global seed clears (every op after it re-creates
    # its kernel). ``replicas_initial_weights`` checks the result against ``build_model``.
    random.seed(seed)
    layers = [template.get_layer(layer.name) for layer in dense_layers(template)]
    initialisers = [
        (
            type(layer.kernel_initializer).from_config(layer.kernel_initializer.get_config()),
            type(layer.bias_initializer).from_config(layer.bias_initializer.get_config()),
        )
        for layer in layers
    ]
    weights = []
    for layer, (kernel_init, bias_init) in zip(layers, initialisers, strict=True):
        weights += [
            np.asarray(kernel_init(tuple(layer.kernel.shape), layer.kernel.dtype)),
            np.asarray(bias_init(tuple(layer.bias.shape), layer.bias.dtype)),
        ]
    if model_config.output_init == "saturated":
        kept = template.get_weights()
        template.set_weights(weights)
        saturate_output_layer(
            template, data.train.y, model_config.saturation_scale, seed, layer=layers[-1]
        )
        weights = template.get_weights()
        template.set_weights(kept)
    return weights


def replicas_initial_weights(
    template: keras.Model, configs: Sequence[Config], data: Dataset, spec: LossSpec
) -> list[list[np.ndarray]]:
    """Every replica's initial weights, as ``build.build_model`` gives each config's model.

    ``template`` was built by ``build_model`` from ``configs[0]``: its weights are compared with
    ``initial_weights`` for that config, and should they differ (a Keras whose layers draw
    their seeds otherwise), every replica's model is built instead.

    Returns:
        Per replica, the weights in the order of ``template.get_weights()``.
    """
    first = configs[0]
    if all(
        np.array_equal(a, b)
        for a, b in zip(
            initial_weights(template, first.model, data, first.seed),
            template.get_weights(),
            strict=True,
        )
    ):
        return [template.get_weights()] + [
            initial_weights(template, config.model, data, config.seed) for config in configs[1:]
        ]
    log.warning("initial weights differ from build_model's here: building every replica's model")
    return [build_model(c.model, data, spec, c.seed).get_weights() for c in configs]


def record_outcome(
    batch: TrainedBatch,
    replica: int,
    output_dir: Path,
    overrides: list[str],
    parent_run_id: str | None,
    run_name: str | None,
    log_file: Path | None,
    batch_name: str,
    *,
    buffered: bool = True,
) -> RunSummary:
    """Record one replica as the MLflow run its config would have had alone.

    Args:
        batch: the trained batch.
        replica: which replica.
        output_dir: the job's output directory (plots, model).
        overrides: the job's command-line overrides (a tag).
        parent_run_id: the sweep's parent run.
        run_name: the MLflow run name.
        log_file: the job's log, uploaded as ``logs/``.
        batch_name: names the batch in the run's tags.
        buffered: into a local database store, write the run's params, tags, metrics,
            dataset inputs and final status in one transaction at its end
            (``writing.BufferedRun``: everything it records is known by then); False: one
            store call per record, as a run that trains records (kept for comparisons).

    Returns:
        The run's summary.

    Raises:
        NonFiniteLossError: the replica's loss became NaN/inf (its run ends FAILED, tagged
            with where: ``pipeline.record_divergence``).
        NoSuggestionError: its range test found no rate to train with (its run ends FAILED,
            tagged: ``pipeline.record_no_suggestion``).
    """
    outcome = batch.outcomes[replica]
    config = outcome.config
    tags = {BATCH_TAG: batch_name, BATCH_SIZE_TAG: str(len(batch.outcomes))}
    with recorded_run(
        config,
        batch.device,
        overrides,
        parent_run_id,
        run_name,
        log_file,
        tags,
        output_dir,
        buffered=buffered,
    ) as recorder:
        log_params(config, recorder, batch.n_params, batch.data)
        if outcome.range_test is not None:
            record_range_test(config, outcome.range_test, recorder, output_dir)
        if outcome.error is not None:
            # record_range_test raised already for the same missing rate; kept as a guard.
            record_no_suggestion(recorder)
            raise NoSuggestionError(outcome.error)
        assert outcome.fit is not None
        log_initial(recorder, outcome.initial)
        result = outcome.fit.result
        for record in result.history:
            log_epoch(config, recorder, record)
        if result.diverged_epoch is not None:
            step = outcome.fit.diverged_step or 0
            record_divergence(recorder, result.diverged_epoch, step)
            save_loss_curve(result.history, output_dir, recorder, config)
            raise NonFiniteLossError(result.diverged_epoch, step, result)
        assert outcome.test is not None
        return finish_run(
            config,
            batch.data,
            functools.partial(batch.model, replica),
            result,
            outcome.test,
            batch.device,
            recorder,
            output_dir,
            batch.n_params,
            save_model=lambda path: batch.save_model(replica, path),
        )


def check_memory(
    n_replicas: int,
    n_train: int,
    n_eval: int,
    n_features: int,
    units: Sequence[int],
    available_bytes: int,
) -> None:
    """Fail before training when a batch would not fit in memory, saying how many fit.

    Args:
        n_replicas: replicas in the batch.
        n_train: training rows.
        n_eval: rows of the largest split evaluated at once.
        n_features: input width.
        units: width of every Dense layer, output included.
        available_bytes: memory the batch may use.

    Raises:
        MemoryError: the batch needs more than half of ``available_bytes``.
    """
    per_replica = bytes_per_replica(n_train, n_eval, n_features, units)
    fit = replicas_that_fit(per_replica, available_bytes)
    if n_replicas > fit:
        raise MemoryError(
            f"a replica batch of {n_replicas} runs needs about "
            f"{n_replicas * per_replica / 2**20:.0f} MiB ({per_replica / 2**20:.2f} MiB per "
            f"replica) but {available_bytes / 2**20:.0f} MiB are available: at most {fit} "
            f"replicas fit; set hydra.launcher.max_replicas={max(fit, 1)}"
        )


def device_memory(device: DeviceChoice, gpu_share: float = 1.0) -> int:
    """Bytes a batch may use on ``device`` when no budget is given: on a GPU its memory (times
    the share of it the batch was given), else the machine's available memory."""
    gpu_bytes = gpu_memory_bytes() if device.kind == "gpu" else None
    if device.kind == "gpu" and gpu_bytes is None:
        log.warning(
            "the GPU's memory is unknown (no nvidia-smi): the batch is checked against "
            "the machine's memory; set hydra.launcher.memory_mb to the card's"
        )
    return memory_budget(0, device.kind, gpu_bytes, gpu_share, available_memory())


def available_memory() -> int:
    """Bytes of memory available to new allocations (Linux's MemAvailable, else physical)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
