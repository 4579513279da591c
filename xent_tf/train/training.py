"""The suite's one training path: a whole epoch per compiled TensorFlow call.

On these tiny models ``model.fit`` spends its time in per-step Python and dispatch, not maths. Here
an epoch is one ``tf.function`` call that loops over the mini-batches in graph mode, so Python
runs once per epoch. It still trains a Keras model with a Keras optimizer and keeps what the
experiments need: the loss of every batch (range test), a learning rate per step (schedules),
per-layer gradient norms, validation after every epoch, a stop at the first non-finite loss, and
determinism under a seed.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from xent_tf.metrics import (
    EPOCH_SECONDS_METRIC,
    LEARNING_RATE_METRIC,
    TRAIN_ACC_METRIC,
    TRAIN_LOSS_METRIC,
    VAL_ACC_METRIC,
    VAL_LOSS_METRIC,
    VAL_SATURATED_METRIC,
    grad_norm_metric,
)
from xent_tf.train.updates import make_apply

# A probability this close to 0 or 1 is "saturated": the sigmoid/softmax slope there is < 1%.
SATURATION_THRESHOLD = 0.99
# Compiled loops kept per process for reuse (``reusable_loop``): a sweep worker or a study
# alternates between a few (model, loss, optimizer) shapes, each a small model plus two traces.
MAX_REUSABLE_LOOPS = 8


@dataclass(frozen=True)
class TensorSplit:
    """One part of a dataset as tensors, ready for the compiled loop.

    Attributes:
        x: features, float32 (n, d).
        targets: labels encoded the way the loss expects them.
        labels: integer class labels (n,), for accuracy.
    """

    x: tf.Tensor
    targets: tf.Tensor
    labels: tf.Tensor

    @classmethod
    def from_numpy(cls, x: np.ndarray, targets: np.ndarray, labels: np.ndarray) -> TensorSplit:
        """Copy NumPy arrays to tensors on the current device scope."""
        return cls(tf.constant(x), tf.constant(targets), tf.constant(labels, dtype=tf.int32))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: sample-weighted mean of the epoch's batch losses (as Keras reports it).
        train_acc: accuracy on the whole training set after the epoch.
        val_loss: validation loss after the epoch.
        val_acc: validation accuracy after the epoch.
        val_saturated: share of validation rows whose top probability is >= 0.99.
        learning_rate: the rate of the epoch's last step.
        grad_norms: per layer, the L2 norm of the full-batch training-loss gradient after the
            epoch (one extra pass; cheaper and less noisy than a norm per mini-batch).
        seconds: wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_saturated: float
    learning_rate: float
    grad_norms: dict[str, float]
    seconds: float

    @classmethod
    def measured(
        cls,
        epoch: int,
        train_loss: float,
        on_train: Evaluation,
        on_val: Evaluation,
        learning_rate: float,
        seconds: float,
    ) -> EpochRecord:
        """An epoch's record from its training loss and the two evaluations that end it.

        Args:
            epoch: 1-based epoch number.
            train_loss: the sample-weighted mean of the epoch's batch losses.
            on_train: the model on the whole training set (accuracy, gradient norms).
            on_val: the model on the validation set (loss, accuracy, saturation).
            learning_rate: the rate of the epoch's last step.
            seconds: the epoch's wall time.

        Returns:
            The record.
        """
        return cls(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=on_train.accuracy,
            val_loss=on_val.loss,
            val_acc=on_val.accuracy,
            val_saturated=on_val.saturated,
            learning_rate=learning_rate,
            grad_norms=on_train.grad_norms,
            seconds=seconds,
        )

    def metrics(self) -> dict[str, float]:
        """The record as MLflow-style metric names (``train/loss``, ``grad_norm/output`` ...)."""
        out = {
            TRAIN_LOSS_METRIC: self.train_loss,
            TRAIN_ACC_METRIC: self.train_acc,
            VAL_LOSS_METRIC: self.val_loss,
            VAL_ACC_METRIC: self.val_acc,
            VAL_SATURATED_METRIC: self.val_saturated,
            LEARNING_RATE_METRIC: self.learning_rate,
            EPOCH_SECONDS_METRIC: self.seconds,
        }
        out.update({grad_norm_metric(layer): norm for layer, norm in self.grad_norms.items()})
        return out


@dataclass
class FitResult:
    """The outcome of ``fit``.

    Attributes:
        history: one record per completed epoch (a diverged epoch is included).
        batch_losses: the loss of every step taken, in order.
        diverged_epoch: the epoch whose loss became NaN/inf, or None.
        train_seconds: wall time of the whole loop, validation included.
        probe_losses: the loss on the fixed probe rows after every step taken (empty when
            training had no probe): the same rows each time, so the curve moves only when the
            weights do.
    """

    history: list[EpochRecord] = field(default_factory=list)
    batch_losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    diverged_epoch: int | None = None
    train_seconds: float = 0.0
    probe_losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def probe_split(train: TensorSplit, rows: int) -> TensorSplit | None:
    """The fixed probe batch: the first ``rows`` training rows (all of them when fewer).

    The training split is already a random sample of the data (the split shuffles), so its
    first rows are too; every run on the data set, whatever its seed, probes the same rows.

    Args:
        train: the training split.
        rows: probe rows; 0 = no probe.

    Returns:
        The probe rows, or None when ``rows`` is 0.
    """
    if rows < 0:
        raise ValueError(f"trainer.probe_rows={rows} must be >= 0 (0 = no probe)")
    if rows == 0:
        return None
    n = min(rows, len(train))
    return TensorSplit(train.x[:n], train.targets[:n], train.labels[:n])


def probe_start_epoch(epochs: int, late_fraction: float) -> int:
    """The first epoch of the last ``late_fraction`` of ``epochs`` (at least the last epoch).

    Args:
        epochs: epochs in the run.
        late_fraction: ``trainer.probe_late_fraction``, in (0, 1].

    Returns:
        An epoch number in 1..epochs: 20 epochs at 0.5 -> 11.
    """
    if not 0 < late_fraction <= 1:
        raise ValueError(f"trainer.probe_late_fraction={late_fraction} must be in (0, 1]")
    return epochs - max(1, math.ceil(late_fraction * epochs - 1e-9)) + 1


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""

    def __init__(self, epoch: int, step: int, result: FitResult) -> None:
        super().__init__(
            f"training loss became NaN/inf at epoch {epoch} (step {step} of that epoch); "
            "training stopped. Try a smaller optimizer.learning_rate or from_logits=true."
        )
        self.epoch = epoch
        self.step = step
        self.result = result  # the history up to and including the diverged epoch

    def __reduce__(self) -> tuple[type, tuple[int, int, FitResult]]:
        # Sweep launchers pickle a job's exception back to the launching process.
        return (type(self), (self.epoch, self.step, self.result))


def batch_weighted_mean(losses: np.ndarray, batch_size: int, seen: int) -> float:
    """The sample-weighted mean of an epoch's batch losses, as Keras reports the epoch's loss.

    Args:
        losses: the loss of each step taken.
        batch_size: rows per step; every step but possibly the last has this many.
        seen: rows the steps saw (the last step's rows are what is left of them).

    Returns:
        sum(loss x rows) / seen.
    """
    weights = np.full(len(losses), float(batch_size))
    weights[-1] = seen - batch_size * (len(losses) - 1)
    return float(np.sum(losses * weights) / seen)


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Number of mini-batches in an epoch, counting a smaller last batch."""
    return -(-n_rows // batch_size)


def _layer_groups(model: keras.Model) -> list[tuple[str, list[int]]]:
    """Group the model's trainable variables by layer: [(layer name, variable indices)]."""
    groups: dict[str, list[int]] = {}
    for index, variable in enumerate(model.trainable_variables):
        groups.setdefault(variable.path.split("/")[0], []).append(index)
    return list(groups.items())


def predictions(outputs: tf.Tensor, from_logits: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Predicted class and top-class probability from outputs (..., units), per row."""
    if outputs.shape[-1] == 1:
        p_one = tf.sigmoid(outputs[..., 0]) if from_logits else outputs[..., 0]
        predicted = tf.cast(p_one > 0.5, tf.int32)
        top_probability = tf.maximum(p_one, 1.0 - p_one)
    else:
        probabilities = tf.nn.softmax(outputs) if from_logits else outputs
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        top_probability = tf.reduce_max(probabilities, axis=-1)
    return predicted, top_probability


@dataclass(frozen=True)
class Evaluation:
    """A model's loss, accuracy, saturation and per-layer gradient norms on one split.

    Attributes:
        loss: mean loss over the split.
        accuracy: share of rows classified right.
        saturated: share of rows whose top probability is >= 0.99.
        grad_norms: per layer, the L2 norm of the gradient of ``loss`` (weights unchanged).
    """

    loss: float
    accuracy: float
    saturated: float
    grad_norms: dict[str, float]


def relaxed_spec(tensor: tf.Tensor) -> tf.TensorSpec:
    """The tensor's spec with the row dimension left open, so any number of rows reuses a trace."""
    return tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)


class CompiledLoop:
    """The compiled train-epoch and evaluate functions for one model, loss and optimizer.

    Build it once per model. Each function is traced once, on first use, with the row dimension
    left open: every epoch, the range test (any step count), validation and test all reuse the
    same two traces, which are most of the cost of a short run.
    """

    def __init__(
        self,
        model: keras.Model,
        loss: keras.losses.Loss,
        optimizer: keras.optimizers.Optimizer,
        batch_size: int,
        from_logits: bool,
    ) -> None:
        """Args:
        model: the Keras model to train.
        loss: a Keras loss whose reduction is the batch mean.
        optimizer: a Keras optimizer created with a float learning rate (set per step here).
        batch_size: rows per step.
        from_logits: whether the model outputs logits (for accuracy and saturation).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if not isinstance(optimizer.learning_rate, keras.Variable):
            raise ValueError(
                "the optimizer's learning_rate is a schedule object; create it with a float "
                "learning rate: this loop sets the rate per step itself "
                "(see xent_tf.train.schedules)"
            )
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.from_logits = from_logits
        self.layer_groups = _layer_groups(model)
        optimizer.build(model.trainable_variables)
        # TensorFlow's fused kernel for the optimizer's update rule when it has one (same maths,
        # a fraction of the graph); else the optimizer's own apply.
        self._apply_gradients, _ = make_apply(optimizer, model.trainable_variables)
        # One trace with the probe and one without (``run_epoch``).
        self._compiled_train_epochs: dict[bool, tf.types.experimental.PolymorphicFunction] = {}
        self._compiled_evaluate: tf.types.experimental.PolymorphicFunction | None = None

    def _train_epoch(
        self,
        x_all: tf.Tensor,
        targets_all: tf.Tensor,
        order: tf.Tensor,
        learning_rates: tf.Tensor,
        probe_x: tf.Tensor | None = None,
        probe_targets: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Run one step per entry of ``learning_rates`` over ``order``'s mini-batches.

        Written as an explicit ``tf.while_loop`` (traced with autograph off): it traces in about
        half the time of the autograph version. Stops after the first step whose loss is not
        finite. With probe rows, each step ends with one forward pass over them (the weights
        just updated).

        Returns:
            (batch losses of the steps taken, number of rows seen, probe losses after each step
            taken: empty without probe rows).
        """
        variables = self.model.trainable_variables
        # One gather per epoch, then contiguous slices: fewer ops per step than a gather per step.
        x_epoch = tf.gather(x_all, order)
        targets_epoch = tf.gather(targets_all, order)
        n_rows = tf.shape(order)[0]
        n_steps = tf.shape(learning_rates)[0]

        def keep_going(step: tf.Tensor, last_loss: tf.Tensor, *_: object) -> tf.Tensor:
            return tf.logical_and(step < n_steps, tf.math.is_finite(last_loss))

        def train_step(
            step: tf.Tensor,
            last_loss: tf.Tensor,
            losses: tf.TensorArray,
            seen: tf.Tensor,
            probes: tf.TensorArray,
        ) -> tuple[tf.Tensor, tf.Tensor, tf.TensorArray, tf.Tensor, tf.TensorArray]:
            start = step * self.batch_size
            stop = tf.minimum(start + self.batch_size, n_rows)
            self.optimizer.learning_rate.assign(learning_rates[step])
            with tf.GradientTape() as tape:
                outputs = self.model(x_epoch[start:stop], training=True)
                batch_loss = self.loss(targets_epoch[start:stop], outputs)
            self._apply_gradients(tape.gradient(batch_loss, variables))
            if probe_x is not None:
                # Reads the variables the update just wrote (automatic control dependencies).
                probe_loss = self.loss(probe_targets, self.model(probe_x, training=False))
                probes = probes.write(step, probe_loss)
            return (
                step + 1,
                batch_loss,
                losses.write(step, batch_loss),
                seen + (stop - start),
                probes,
            )

        probe_steps = n_steps if probe_x is not None else 0
        steps_taken, _, losses, seen, probes = tf.while_loop(
            keep_going,
            train_step,
            (
                tf.constant(0),
                tf.constant(0.0),
                tf.TensorArray(tf.float32, size=n_steps, element_shape=[]),
                tf.constant(0),
                tf.TensorArray(tf.float32, size=probe_steps, element_shape=[]),
            ),
        )
        # After an early stop only the first steps_taken entries were written.
        probe_losses = probes.stack()[:steps_taken] if probe_x is not None else tf.zeros([0])
        return losses.stack()[:steps_taken], seen, probe_losses

    def _evaluate(
        self, x: tf.Tensor, targets: tf.Tensor, labels: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Loss, accuracy, saturated share and per-layer gradient norms of a whole split."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(x, training=False)
            loss = self.loss(targets, outputs)
        gradients = tape.gradient(loss, variables)
        norms = tf.stack(
            [tf.linalg.global_norm([gradients[i] for i in idx]) for _, idx in self.layer_groups]
        )
        predicted, top_probability = predictions(outputs, self.from_logits)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))
        saturated = tf.reduce_mean(tf.cast(top_probability >= SATURATION_THRESHOLD, tf.float32))
        return loss, accuracy, saturated, norms

    def evaluate(self, split: TensorSplit) -> Evaluation:
        """Evaluate the model on a whole split in one compiled call (weights unchanged).

        Args:
            split: the rows to evaluate on.

        Returns:
            Loss, accuracy, saturated share and per-layer norms of the loss's gradient.
        """
        if self._compiled_evaluate is None:
            self._compiled_evaluate = tf.function(
                self._evaluate,
                autograph=False,
                input_signature=[
                    relaxed_spec(split.x),
                    relaxed_spec(split.targets),
                    relaxed_spec(split.labels),
                ],
            )
        loss, accuracy, saturated, norms = self._compiled_evaluate(
            split.x, split.targets, split.labels
        )
        return Evaluation(
            float(loss),
            float(accuracy),
            float(saturated),
            {name: float(n) for (name, _), n in zip(self.layer_groups, norms.numpy(), strict=True)},
        )

    def run_epoch(
        self,
        train: TensorSplit,
        order: np.ndarray,
        learning_rates: np.ndarray,
        probe: TensorSplit | None = None,
    ) -> tuple[np.ndarray, float, np.ndarray]:
        """One epoch: train over ``order`` with one learning rate per step.

        Args:
            train: the training split.
            order: row indices in the order to visit them (a permutation, or any subset).
            learning_rates: one rate per step; its length is the number of steps.
            probe: fixed rows whose loss is measured after every step (``probe_split``).

        Returns:
            (batch losses of the steps taken, their sample-weighted mean, as Keras reports it,
            the probe loss after each step taken: empty without ``probe``).
        """
        with_probe = probe is not None
        compiled = self._compiled_train_epochs.get(with_probe)
        if compiled is None:
            specs = [
                relaxed_spec(train.x),
                relaxed_spec(train.targets),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.float32),
            ]
            if probe is not None:
                specs += [relaxed_spec(probe.x), relaxed_spec(probe.targets)]
            compiled = self._compiled_train_epochs[with_probe] = tf.function(
                self._train_epoch, autograph=False, input_signature=specs
            )
        args = [
            train.x,
            train.targets,
            tf.constant(order, tf.int32),
            tf.constant(learning_rates, tf.float32),
        ]
        if probe is not None:
            args += [probe.x, probe.targets]
        losses_t, seen_t, probes_t = compiled(*args)
        losses = losses_t.numpy()
        return (
            losses,
            batch_weighted_mean(losses, self.batch_size, int(seen_t.numpy())),
            probes_t.numpy(),
        )


_reusable_loops: OrderedDict[str, CompiledLoop] = OrderedDict()


def _loop_key(
    model: keras.Model,
    loss: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    batch_size: int,
    from_logits: bool,
) -> str:
    """What a compiled loop's traces depend on: architecture, loss, optimizer kind, batch, device.

    Names Keras numbers per process ("functional_3") and the learning rate (set per step) are
    left out; everything else of the three configs is in.
    """
    model_config = {k: v for k, v in model.get_config().items() if k != "name"}
    optimizer_config = {
        k: v for k, v in optimizer.get_config().items() if k not in ("name", "learning_rate")
    }
    parts = [
        model_config,
        type(loss).__qualname__,
        loss.get_config(),
        type(optimizer).__qualname__,
        optimizer_config,
        batch_size,
        from_logits,
        [variable.value.device for variable in model.trainable_variables],
    ]
    return json.dumps(parts, sort_keys=True, default=str)


def reusable_loop(
    model: keras.Model,
    loss: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    batch_size: int,
    from_logits: bool,
) -> CompiledLoop:
    """A compiled loop that trains ``model``'s weights with ``optimizer``'s fresh state.

    Tracing a new loop is ~0.25-0.45 s here, a third of a reference run's training. When this
    process already built a loop for the same architecture, loss, optimizer kind and batch size
    (the next job in a sweep worker, the next seed of a study), that loop is returned instead,
    with ``model``'s weights and ``optimizer``'s initial state copied into its own variables:
    the same numbers as a fresh loop (tests/test_training.py), without the tracing.

    Train and save through the returned ``loop.model``; ``model`` itself is left as it was.

    Args:
        model: the freshly built (and initialised) model.
        loss: a Keras loss whose reduction is the batch mean.
        optimizer: a fresh Keras optimizer with a float learning rate.
        batch_size: rows per step.
        from_logits: whether the model outputs logits.

    Returns:
        The loop to train with.
    """
    key = _loop_key(model, loss, optimizer, batch_size, from_logits)
    loop = _reusable_loops.get(key)
    if loop is None:
        loop = CompiledLoop(model, loss, optimizer, batch_size, from_logits)
        _reusable_loops[key] = loop
        while len(_reusable_loops) > MAX_REUSABLE_LOOPS:
            _reusable_loops.popitem(last=False)
        return loop
    _reusable_loops.move_to_end(key)
    optimizer.build(model.trainable_variables)  # its initial slots, iterations and rate
    for target, source in zip(loop.model.weights, model.weights, strict=True):
        target.assign(source)
    for target, source in zip(loop.optimizer.variables, optimizer.variables, strict=True):
        target.assign(source)
    return loop


def fit(
    loop: CompiledLoop,
    train: TensorSplit,
    val: TensorSplit,
    learning_rates: np.ndarray,
    epochs: int,
    seed: int,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    probe: TensorSplit | None = None,
    probe_from_epoch: int = 1,
) -> FitResult:
    """Train for ``epochs`` epochs, validating after each one.

    Args:
        loop: the compiled functions for the model, loss and optimizer.
        train: training split.
        val: validation split.
        learning_rates: the rate of every step, shape (epochs * steps_per_epoch,).
        epochs: number of epochs.
        seed: seed of the per-epoch shuffles.
        on_epoch_end: called with each epoch's record as soon as it exists (also for the epoch
            that diverged, before the error is raised).
        probe: fixed rows whose loss is measured after every step (``probe_split``; C13/C15's
            oscillation), or None.
        probe_from_epoch: the first epoch measured on ``probe`` (``probe_start_epoch``): the
            claims read only the late curve, and the extra forward pass is the probe's cost.

    Returns:
        The history and the loss of every step.

    Raises:
        NonFiniteLossError: the loss became NaN/inf; training stopped at that step.
    """
    n_steps = steps_per_epoch(len(train), loop.batch_size)
    if learning_rates.shape != (epochs * n_steps,):
        raise ValueError(
            f"learning_rates has shape {learning_rates.shape}; expected ({epochs * n_steps},) "
            f"= epochs {epochs} x {n_steps} steps per epoch"
        )
    rng = np.random.default_rng(seed)
    result = FitResult()
    all_losses: list[np.ndarray] = []
    all_probes: list[np.ndarray] = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        rates = learning_rates[(epoch - 1) * n_steps : epoch * n_steps]
        losses, train_loss, probes = loop.run_epoch(
            train, rng.permutation(len(train)), rates, probe if epoch >= probe_from_epoch else None
        )
        on_val = loop.evaluate(val)
        on_train = loop.evaluate(train)
        record = EpochRecord.measured(
            epoch,
            train_loss,
            on_train,
            on_val,
            float(rates[len(losses) - 1]),
            time.perf_counter() - epoch_started,
        )
        result.history.append(record)
        all_losses.append(losses)
        all_probes.append(probes)
        if on_epoch_end is not None:
            on_epoch_end(record)
        if not np.isfinite(losses[-1]):
            result.diverged_epoch = epoch
            break
    result.batch_losses = np.concatenate(all_losses)
    result.probe_losses = np.concatenate(all_probes)
    result.train_seconds = time.perf_counter() - started
    if result.diverged_epoch is not None:
        raise NonFiniteLossError(result.diverged_epoch, len(all_losses[-1]), result)
    return result
