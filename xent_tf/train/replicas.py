"""K copies of one MLP trained as one batched graph: a study's seeds and rates for the price of one.

Every run of a study is a tiny network whose cost is per-op overhead, not arithmetic. Here the
weights of K models of one architecture are stacked along a leading replica axis
(``kernel: (K, in, out)``), so one batched matmul does the work of K, and one compiled epoch
function trains all of them. Each replica keeps what its own single run has: its initial
weights (copied from the Keras model its config builds), its own shuffle order per epoch (from
its seed), its own learning rate per step (so schedules and rate sweeps share one graph) and its
own optimizer state. Replicas never mix: no op reduces across the replica axis, so one
replica's numbers do not depend on the others' (tests/test_replicas.py checks it bit for bit).

A loss that turns NaN/inf stops that replica only: from the next step on its learning rate is
zero (the step that diverged is applied, as in the single run), and it is reported as diverged
at that epoch. The others go on.

On a CPU-only process the trainer's functions run on TensorFlow's single-threaded executor
(kernels in turn on the calling thread: less overhead per tiny op), and ``fit`` evaluates epoch
e's end on a copy of its weights in a second thread while epoch e + 1 trains, so the full-batch
pass over both splits, which costs as much per replica as one model's own, uses the second core
(given room in TensorFlow's inter-op pool for both threads' calls: ``runtime.inter_op_threads``).

The update rules are Keras's Adam and SGD (momentum, Nesterov) written out element-wise with a
per-replica learning rate; the single-run path uses TensorFlow's fused kernels for the same
formulas, so the two agree to float32 rounding (the tolerance is measured in the tests).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from xent_tf.train.lr_finder import RangeTestResult, analyse_curve, range_test_rates, row_order
from xent_tf.train.training import (
    SATURATION_THRESHOLD,
    EpochRecord,
    Evaluation,
    FitResult,
    TensorSplit,
    batch_weighted_mean,
    predictions,
    relaxed_spec,
    steps_per_epoch,
)
from xent_tf.train.updates import is_plain

# Bytes of a float32.
_FLOAT = 4


class _OwnTracesFilter(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about this module's own
    functions. Each trainer traces its functions once, for its own graph (a batch's replica
    count and shapes); TensorFlow counts the traces of one lambda over all trainers, so a study
    with several batches read as a retracing loop to be fixed. Warnings about other functions
    pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("tf.function retracing" in message and "ReplicaTrainer." in message)


logging.getLogger("tensorflow").addFilter(_OwnTracesFilter())


class NotReplicableError(ValueError):
    """The model or optimizer cannot be stacked into replicas (use the per-run path)."""


@dataclass(frozen=True)
class DenseLayer:
    """One Dense layer of the stacked architecture."""

    name: str
    units: int
    activation: Callable[[tf.Tensor], tf.Tensor]


def dense_layers(model: keras.Model) -> list[DenseLayer]:
    """The model's Dense layers in order, or ``NotReplicableError`` if it is not a Dense chain.

    Args:
        model: a Keras model (e.g. from ``models.build_mlp``).

    Returns:
        One entry per Dense layer, input to output.
    """
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if type(layer) is not keras.layers.Dense or not layer.use_bias:
            raise NotReplicableError(
                f"layer {layer.name!r} ({type(layer).__name__}) cannot be stacked: replicas "
                "support chains of Dense layers with biases (models.build_mlp)"
            )
        if layer.dtype != "float32":
            raise NotReplicableError(f"layer {layer.name!r} is {layer.dtype}, not float32")
        layers.append(DenseLayer(layer.name, int(layer.units), layer.activation))
    if not layers:
        raise NotReplicableError("the model has no Dense layer")
    return layers


@dataclass(frozen=True)
class OptimizerRule:
    """Which update rule the replicas follow, and its settings (the learning rate is per step).

    Attributes:
        kind: "adam" or "sgd".
        beta_1, beta_2, epsilon: Adam's.
        momentum, nesterov: SGD's (momentum 0 is plain gradient descent).
    """

    kind: str
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    momentum: float = 0.0
    nesterov: bool = False

    @classmethod
    def of(cls, optimizer: keras.optimizers.Optimizer) -> OptimizerRule:
        """The rule of a plain Keras Adam or SGD; ``NotReplicableError`` for anything else."""
        if not is_plain(optimizer):
            raise NotReplicableError(
                f"{type(optimizer).__name__} with weight decay, clipping, EMA, accumulation or "
                "loss scaling cannot be replicated"
            )
        if type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad:
            return cls(
                "adam",
                beta_1=float(optimizer.beta_1),
                beta_2=float(optimizer.beta_2),
                epsilon=float(optimizer.epsilon),
            )
        if type(optimizer) is keras.optimizers.SGD:
            return cls("sgd", momentum=float(optimizer.momentum), nesterov=bool(optimizer.nesterov))
        raise NotReplicableError(
            f"optimizer {type(optimizer).__name__} cannot be replicated; plain Adam or SGD can"
        )


def bytes_per_replica(n_train: int, n_eval: int, n_features: int, units: Sequence[int]) -> int:
    """An upper estimate of what one replica adds to a batch's memory.

    Counts the epoch's gathered features and targets, the activations (forward and backward)
    of a full-batch evaluation, and weights with gradients and two optimizer slots.

    Args:
        n_train: training rows (gathered per replica each epoch).
        n_eval: rows of the largest split evaluated at once.
        n_features: input width.
        units: width of every Dense layer, output included.

    Returns:
        Bytes.
    """
    widths = [n_features, *units]
    n_params = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    gathered = n_train * (n_features + units[-1])
    activations = 3 * n_eval * sum(units)  # pre-activation, activation, gradient
    return _FLOAT * (gathered + activations + 5 * n_params)


def replicas_that_fit(per_replica: int, available: int, reserve: float = 0.5) -> int:
    """How many replicas fit in ``available`` bytes, keeping ``reserve`` of it free."""
    return int(available * (1 - reserve) // max(per_replica, 1))


@dataclass
class ReplicaFit:
    """One replica's outcome of ``ReplicaTrainer.fit``.

    Attributes:
        result: history, batch losses, diverged epoch (None when it finished), wall time of the
            whole batch's training.
        diverged_step: the step (within ``result.diverged_epoch``) whose loss was not finite.
    """

    result: FitResult
    diverged_step: int | None = None


@dataclass
class _EpochState:
    """What ``fit`` carries per replica between epochs."""

    history: list[EpochRecord] = field(default_factory=list)
    losses: list[np.ndarray] = field(default_factory=list)
    probes: list[np.ndarray] = field(default_factory=list)
    diverged_epoch: int | None = None
    diverged_step: int | None = None


@dataclass
class _TrainedEpoch:
    """An epoch ``fit`` has trained, waiting for its end's evaluation.

    Attributes:
        number: the epoch, from 1.
        losses: batch losses (steps taken, K).
        probes: probe losses (steps taken, K), or (0, K) without a probe.
        training: (K,) the replicas that trained in it.
        rates: (K, steps) its learning rates.
        train_seconds: its training's wall time.
        ends: (on val, on train) evaluations of the weights it ended with.
    """

    number: int
    losses: np.ndarray
    probes: np.ndarray
    training: np.ndarray
    rates: np.ndarray
    train_seconds: float
    ends: Future[tuple[list[Evaluation], list[Evaluation]]]


def _by_layer(
    template: keras.Model, weights: Sequence[Sequence[np.ndarray]]
) -> list[list[list[np.ndarray]]]:
    """``weights[k]`` (in ``template.get_weights()``'s order) as [[kernel, bias] per layer].

    Raises:
        ValueError: no weights, or weights of another shape than the template's.
    """
    if not weights:
        raise ValueError("weights is empty: a replica batch needs at least one replica")
    layers = dense_layers(template)
    shapes = [tuple(w.shape) for w in template.get_weights()]
    per_replica = []
    for k, replica in enumerate(weights):
        if [tuple(w.shape) for w in replica] != shapes:
            raise ValueError(
                f"replica {k}'s weights have shapes {[tuple(w.shape) for w in replica]}; "
                f"the template's are {shapes}"
            )
        pairs = iter(replica)
        per_replica.append([[next(pairs), next(pairs)] for _ in layers])
    return per_replica


class ReplicaTrainer:
    """Compiled train-epoch and evaluate functions for K stacked copies of one MLP.

    Build it from K freshly initialised Keras models of the same architecture (each from its own
    config and seed); their weights are copied in. Functions are traced once, on first use, with
    the row dimension left open (as ``training.CompiledLoop``).
    """

    def __init__(
        self,
        models: Sequence[keras.Model],
        loss: keras.losses.Loss,
        rule: OptimizerRule,
        batch_size: int,
        from_logits: bool,
    ) -> None:
        """Args:
        models: K initialised models of one Dense-chain architecture.
        loss: the Keras loss every replica trains with (its per-sample ``call`` is used).
        rule: the update rule (Adam or SGD settings).
        batch_size: rows per step.
        from_logits: whether the models output logits (for accuracy and saturation).

        Raises:
            NotReplicableError: the models are not identical Dense chains.
        """
        if not models:
            raise ValueError("models is empty: a replica batch needs at least one model")
        layers = dense_layers(models[0])
        for model in models[1:]:
            other = dense_layers(model)
            if [(la.name, la.units) for la in other] != [(la.name, la.units) for la in layers]:
                raise NotReplicableError("the models' architectures differ; replicas need one")
        self._setup(
            models[0],
            [[m.get_layer(la.name).get_weights() for la in layers] for m in models],
            loss,
            rule,
            batch_size,
            from_logits,
        )

    @classmethod
    def from_weights(
        cls,
        template: keras.Model,
        weights: Sequence[Sequence[np.ndarray]],
        loss: keras.losses.Loss,
        rule: OptimizerRule,
        batch_size: int,
        from_logits: bool,
    ) -> ReplicaTrainer:
        """K replicas of ``template``'s architecture starting from the given weights.

        Building a Keras model per replica only to read its initial weights costs more than
        the batch's first epoch; ``replica_batch.initial_weights`` gives them without one.

        Args:
            template: a model of the architecture (exports clone it).
            weights: per replica, the weights in the order of ``template.get_weights()``.
            loss, rule, batch_size, from_logits: as for the constructor.

        Returns:
            The trainer.

        Raises:
            NotReplicableError: the template is not a Dense chain.
            ValueError: no weights, or weights of another shape than the template's.
        """
        trainer = cls.__new__(cls)
        trainer._setup(template, _by_layer(template, weights), loss, rule, batch_size, from_logits)
        return trainer

    def _setup(
        self,
        template: keras.Model,
        weights: Sequence[Sequence[Sequence[np.ndarray]]],
        loss: keras.losses.Loss,
        rule: OptimizerRule,
        batch_size: int,
        from_logits: bool,
    ) -> None:
        """The state of K replicas of ``template``; ``weights[k][layer]`` is (kernel, bias)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.layers = dense_layers(template)
        self.template = template
        self.n_replicas = len(weights)
        self.loss = loss
        self.rule = rule
        self.batch_size = batch_size
        self.from_logits = from_logits
        # All of a replica's weights in one row of one variable, (K, P): the optimizer then
        # steps once per batch, not once per kernel and bias (most of a step's op count), and
        # the forward pass views the row as each layer's kernel and bias.
        widths = [int(template.inputs[0].shape[-1]), *(la.units for la in self.layers)]
        self._shapes = list(itertools.pairwise(widths))
        self._sizes = [size for a, b in self._shapes for size in (a * b, b)]
        rows = [
            np.concatenate([np.reshape(w, -1) for layer in replica for w in layer])
            for replica in weights
        ]
        self.flat = tf.Variable(np.stack(rows).astype(np.float32))
        self.iterations = tf.Variable(0, dtype=tf.int64)
        # The optimizer's state, shaped like ``flat``: Adam's m and v, SGD's momentum.
        slot_count = {"adam": 2, "sgd": 1 if rule.momentum else 0}[rule.kind]
        self.slots = [tf.Variable(tf.zeros_like(self.flat)) for _ in range(slot_count)]
        # Traced per (uniform rates?, with gradient norms?): see run_epoch and evaluate.
        self._uniform_rates = False
        self._compiled_epochs: dict[
            tuple[bool, bool], tf.types.experimental.PolymorphicFunction
        ] = {}
        self._compiled_evaluates: dict[bool, tf.types.experimental.PolymorphicFunction] = {}
        self._compiled_epoch_end: tf.types.experimental.PolymorphicFunction | None = None
        self._exported: keras.Model | None = None

    def restart(self, template: keras.Model, weights: Sequence[Sequence[np.ndarray]]) -> None:
        """Start again from new weights, as a new trainer of the same graph would: the
        replicas' weights replaced, the optimizer's state and step count zero, the traced
        functions kept (``reusable_trainer``: a worker's next batch skips their tracing).

        Args:
            template: a model of the same architecture (the exports clone it).
            weights: per replica, the weights in the order of ``template.get_weights()``.

        Raises:
            ValueError: another number of replicas, or weights of another shape.
        """
        if len(weights) != self.n_replicas:
            raise ValueError(
                f"{len(weights)} replicas given to a trainer of {self.n_replicas}: its graph "
                "is traced for that many"
            )
        per_replica = _by_layer(template, weights)
        rows = [
            np.concatenate([np.reshape(w, -1) for layer in replica for w in layer])
            for replica in per_replica
        ]
        self.flat.assign(np.stack(rows).astype(np.float32))
        self.iterations.assign(0)
        for slot in self.slots:
            slot.assign(tf.zeros_like(slot))
        self.layers = dense_layers(template)
        self.template = template
        self._exported = None

    # --- the maths -------------------------------------------------------------------------

    def _unpacked(self, flat: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:
        """Views of ``flat`` (K, P): the first layer's kernel with its bias as one more row,
        (K, in + 1, out), then the other layers' kernels (K, in, out) and biases (K, 1, out).

        A layer's row-major kernel is followed by its bias in ``flat``, so kernel and bias
        together are one (in + 1, out) matrix. The first layer's bias rides in its matmul (its
        inputs carry a column of ones, appended once per call): adding a bias broadcast over
        (K, rows, out) costs about as much as the matmul itself. The other layers' inputs would
        need that column appended at every step, which costs more than the add it saves.
        """
        (first_in, first_out), rest = self._shapes[0], self._shapes[1:]
        pieces = tf.split(flat, [(first_in + 1) * first_out, *self._sizes[2:]], axis=1)
        first = tf.reshape(pieces[0], [self.n_replicas, first_in + 1, first_out])
        kernels = [
            tf.reshape(pieces[1 + 2 * i], [self.n_replicas, a, b]) for i, (a, b) in enumerate(rest)
        ]
        biases = [
            tf.reshape(pieces[2 + 2 * i], [self.n_replicas, 1, b]) for i, (_, b) in enumerate(rest)
        ]
        return first, kernels, biases

    def _forward(self, x: tf.Tensor, flat: tf.Tensor | tf.Variable) -> tf.Tensor:
        """Outputs (K, n, out) of the replicas' weights ``flat`` (K, P) for inputs (K, n, d + 1)
        or (n, d + 1) shared by every replica, whose last column is ones (``with_ones``)."""
        h = x if len(x.shape) == 3 else x[None]
        first, kernels, biases = self._unpacked(flat)
        h = self.layers[0].activation(tf.matmul(h, first))
        for layer, kernel, bias in zip(self.layers[1:], kernels, biases, strict=True):
            # Keras activations keep the logits on the output (``_keras_logits``), so the
            # cross-entropies take the same numerically stable path as in the single run.
            h = layer.activation(tf.matmul(h, kernel) + bias)
        return h

    def outputs(self, x: np.ndarray | tf.Tensor) -> np.ndarray:
        """Every replica's outputs (K, n, out) for inputs (n, d), as its Keras model gives them."""
        with _cpu_executor():
            return self._forward(with_ones(tf.convert_to_tensor(x, tf.float32)), self.flat).numpy()

    def _replica_losses(self, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """Mean loss per replica (K,): Keras's per-sample loss, summed over rows / rows."""
        per_sample = self.loss.call(targets, outputs)  # (K, n)
        rows = tf.cast(tf.shape(per_sample)[1], per_sample.dtype)
        return tf.reduce_sum(per_sample, axis=1) / rows

    def _apply(self, gradient: tf.Tensor, rates: tf.Tensor, alive: tf.Tensor) -> None:
        """One step of the update rule on ``flat``, with one learning rate per replica (K,).

        SGD always, and Adam when every replica has the same rate, step through TensorFlow's
        fused kernels, as the single run does (the same per-element formula). Adam with rates
        that differ per replica is written out element-wise. A replica no longer ``alive``
        steps at rate 0 (with one shared Adam rate it keeps stepping: its numbers are no longer
        read, and replicas never mix).
        """
        rule = self.rule
        masked = tf.reshape(rates * tf.cast(alive, rates.dtype), [-1, 1])
        if rule.kind == "sgd":
            self._apply_sgd(gradient, masked)
        elif self._uniform_rates:
            self._apply_adam_fused(gradient, rates[0])
        else:
            self._apply_adam(gradient, masked)
        self.iterations.assign_add(1)

    def _apply_sgd(self, gradient: tf.Tensor, rates: tf.Tensor) -> None:
        """Keras SGD with a rate per replica (K, 1): the kernels take the rate-scaled gradient
        and a rate of 1 (m = momentum * m - lr * g; w += m, or Nesterov's
        w += momentum * m - lr * g)."""
        rule = self.rule
        scaled = gradient * rates
        one = tf.constant(1.0)
        if rule.momentum:
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=self.flat.handle,
                accum=self.slots[0].handle,
                lr=one,
                grad=scaled,
                momentum=tf.constant(rule.momentum),
                use_nesterov=rule.nesterov,
            )
        else:
            tf.raw_ops.ResourceApplyGradientDescent(var=self.flat.handle, alpha=one, delta=scaled)

    def _adam_step(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(beta_1^t, beta_2^t) of this step, t = iterations + 1."""
        step = tf.cast(self.iterations + 1, tf.float32)
        return tf.pow(self.rule.beta_1, step), tf.pow(self.rule.beta_2, step)

    def _apply_adam_fused(self, gradient: tf.Tensor, rate: tf.Tensor) -> None:
        """Keras Adam, one rate for every replica: ``ResourceApplyAdam`` as in the single run."""
        rule = self.rule
        beta_1_power, beta_2_power = self._adam_step()
        tf.raw_ops.ResourceApplyAdam(
            var=self.flat.handle,
            m=self.slots[0].handle,
            v=self.slots[1].handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=rate,
            beta1=tf.constant(rule.beta_1),
            beta2=tf.constant(rule.beta_2),
            epsilon=tf.constant(rule.epsilon),
            grad=gradient,
        )

    def _apply_adam(self, gradient: tf.Tensor, rates: tf.Tensor) -> None:
        """Keras Adam's formula element-wise, with one rate per replica (K, 1)."""
        rule = self.rule
        m, v = self.slots
        beta_1_power, beta_2_power = self._adam_step()
        alpha = rates * tf.sqrt(1.0 - beta_2_power) / (1.0 - beta_1_power)
        m.assign_add((gradient - m) * (1.0 - rule.beta_1))
        v.assign_add((tf.square(gradient) - v) * (1.0 - rule.beta_2))
        self.flat.assign_sub((m * alpha) / (tf.sqrt(v) + rule.epsilon))

    def _train_epoch(
        self,
        x_all: tf.Tensor,
        targets_all: tf.Tensor,
        orders: tf.Tensor,
        rates: tf.Tensor,
        active: tf.Tensor,
        probe_x: tf.Tensor | None = None,
        probe_targets: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One step per column of ``rates`` (K, S) over each replica's own row order (K, m).

        With probe rows (shared by every replica), each step ends with one forward pass of
        every replica over them, as ``training.CompiledLoop`` does for one model.

        Returns:
            (batch losses (steps taken, K), still-active mask (K,), probe losses (steps taken,
            K): empty without probe rows).
        """
        x_epoch = tf.gather(with_ones(x_all), orders)  # (K, m, d + 1), each replica in its order
        targets_epoch = tf.gather(targets_all, orders)
        n_rows = tf.shape(orders)[1]
        n_steps = tf.shape(rates)[1]
        if probe_x is not None and probe_targets is not None:
            probe_inputs = with_ones(probe_x)  # once per epoch, shared by every step
            probe_tiled = tf.broadcast_to(
                probe_targets[None],
                tf.concat([[self.n_replicas], tf.shape(probe_targets)], 0),
            )

        def keep_going(step: tf.Tensor, alive: tf.Tensor, *_: object) -> tf.Tensor:
            return tf.logical_and(step < n_steps, tf.reduce_any(alive))

        def train_step(
            step: tf.Tensor, alive: tf.Tensor, losses: tf.TensorArray, probes: tf.TensorArray
        ) -> tuple[tf.Tensor, tf.Tensor, tf.TensorArray, tf.TensorArray]:
            start = step * self.batch_size
            stop = tf.minimum(start + self.batch_size, n_rows)
            with tf.GradientTape() as tape:
                outputs = self._forward(x_epoch[:, start:stop], self.flat)
                batch_losses = self._replica_losses(targets_epoch[:, start:stop], outputs)
                total = tf.reduce_sum(batch_losses)  # replicas are independent: d/d(each) = 1
            self._apply(tape.gradient(total, self.flat), rates[:, step], alive)
            if probe_x is not None:
                # Reads the weights the update just wrote (automatic control dependencies).
                probe_losses = self._replica_losses(
                    probe_tiled, self._forward(probe_inputs, self.flat)
                )
                probes = probes.write(step, probe_losses)
            alive = tf.logical_and(alive, tf.math.is_finite(batch_losses))
            return step + 1, alive, losses.write(step, batch_losses), probes

        probe_steps = n_steps if probe_x is not None else 0
        steps_taken, alive, losses, probes = tf.while_loop(
            keep_going,
            train_step,
            (
                tf.constant(0),
                active,
                tf.TensorArray(tf.float32, size=n_steps, element_shape=[self.n_replicas]),
                tf.TensorArray(tf.float32, size=probe_steps, element_shape=[self.n_replicas]),
            ),
        )
        probe_losses = (
            probes.stack()[:steps_taken] if probe_x is not None else tf.zeros([0, self.n_replicas])
        )
        return losses.stack()[:steps_taken], alive, probe_losses

    def _evaluate(
        self,
        flat: tf.Tensor,
        x: tf.Tensor,
        targets: tf.Tensor,
        labels: tf.Tensor,
        with_norms: bool,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Per replica of the weights ``flat`` (K, P): loss, accuracy, saturated share (K,) and
        per-layer gradient norms (K, L) (zeros unless ``with_norms``: the backward pass is most
        of an evaluation's cost)."""
        tiled = tf.broadcast_to(targets[None], tf.concat([[self.n_replicas], tf.shape(targets)], 0))
        with tf.GradientTape() as tape:
            tape.watch(flat)
            outputs = self._forward(with_ones(x), flat)
            losses = self._replica_losses(tiled, outputs)
            total = tf.reduce_sum(losses)
        if with_norms:
            gradient = tape.gradient(total, flat)
            per_layer = [a * b + b for a, b in self._shapes]  # kernel and bias, in row order
            norms = tf.stack(
                [
                    tf.sqrt(tf.reduce_sum(tf.square(piece), axis=1))
                    for piece in tf.split(gradient, per_layer, axis=1)
                ],
                axis=1,
            )
        else:
            norms = tf.zeros([self.n_replicas, len(self.layers)])
        predicted, top_probability = predictions(outputs, self.from_logits)
        accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, labels[None]), tf.float32), axis=1)
        saturated = tf.reduce_mean(
            tf.cast(top_probability >= SATURATION_THRESHOLD, tf.float32), axis=1
        )
        return losses, accuracy, saturated, norms

    # --- the Python side -------------------------------------------------------------------

    def evaluate(self, split: TensorSplit, with_norms: bool = True) -> list[Evaluation]:
        """Evaluate every replica on a whole split (weights unchanged).

        Args:
            split: the rows to evaluate on.
            with_norms: compute the per-layer gradient norms (else they are 0).

        Returns:
            One evaluation per replica, as ``CompiledLoop.evaluate`` gives for one model.
        """
        compiled = self._compiled_evaluates.get(with_norms)
        if compiled is None:
            compiled = self._compiled_evaluates[with_norms] = tf.function(
                lambda flat, x, targets, labels: self._evaluate(
                    flat, x, targets, labels, with_norms
                ),
                autograph=False,
                input_signature=[
                    self._weights_spec(),
                    relaxed_spec(split.x),
                    relaxed_spec(split.targets),
                    relaxed_spec(split.labels),
                ],
            )
        with _cpu_executor():
            measured = compiled(self.flat.read_value(), split.x, split.targets, split.labels)
        return self._evaluations(measured)

    def evaluate_epoch(
        self, val: TensorSplit, train: TensorSplit, weights: np.ndarray | None = None
    ) -> tuple[list[Evaluation], list[Evaluation]]:
        """An epoch's end: every replica on the validation split (no gradient norms) and on
        the training split (with them), in one compiled call (one trace, one dispatch).

        Args:
            val, train: the splits.
            weights: (K, P) the replicas' weights to evaluate (``snapshot``), by default the
                current ones. ``fit`` evaluates an epoch's snapshot while the next epoch trains.

        Returns:
            (on val, on train), one evaluation per replica each, as ``evaluate`` gives them.
        """
        if self._compiled_epoch_end is None:
            self._compiled_epoch_end = tf.function(
                lambda flat, xv, tv, lv, xt, tt, lt: (
                    self._evaluate(flat, xv, tv, lv, with_norms=False),
                    self._evaluate(flat, xt, tt, lt, with_norms=True),
                ),
                autograph=False,
                input_signature=[
                    self._weights_spec(),
                    *(relaxed_spec(t) for t in (val.x, val.targets, val.labels)),
                    *(relaxed_spec(t) for t in (train.x, train.targets, train.labels)),
                ],
            )
        flat = self.flat.read_value() if weights is None else tf.constant(weights)
        with _cpu_executor():
            on_val, on_train = self._compiled_epoch_end(
                flat, val.x, val.targets, val.labels, train.x, train.targets, train.labels
            )
        return self._evaluations(on_val), self._evaluations(on_train)

    def snapshot(self) -> np.ndarray:
        """A copy of every replica's weights now, (K, P), for ``evaluate_epoch``."""
        return np.array(self.flat.numpy(), copy=True)

    def _weights_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(self.flat.shape, tf.float32)

    def _evaluations(self, measured: Sequence[tf.Tensor]) -> list[Evaluation]:
        """Per-replica evaluations from ``_evaluate``'s stacked outputs."""
        losses, accuracy, saturated, norms = (t.numpy() for t in measured)
        names = [layer.name for layer in self.layers]
        return [
            Evaluation(
                float(losses[k]),
                float(accuracy[k]),
                float(saturated[k]),
                {name: float(n) for name, n in zip(names, norms[k], strict=True)},
            )
            for k in range(self.n_replicas)
        ]

    def run_epoch(
        self,
        train: TensorSplit,
        orders: np.ndarray,
        rates: np.ndarray,
        active: np.ndarray,
        probe: TensorSplit | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One epoch of every active replica.

        Args:
            train: the training split.
            orders: (K, m) row indices, each replica's order.
            rates: (K, S) learning rate per replica and step; S is the number of steps.
            active: (K,) bool, replicas still training (the others take zero-rate steps).
            probe: fixed rows whose loss every replica measures after every step
                (``training.probe_split``), or None.

        Returns:
            (batch losses (steps taken, K), still-active mask (K,), probe losses (steps taken,
            K): empty without ``probe``).
        """
        uniform = bool(np.all(rates == rates[:1]))
        key = (uniform, probe is not None)
        compiled = self._compiled_epochs.get(key)
        # Traced and run under one executor: which one decides, at trace time, how the loop
        # is built.
        with _cpu_executor():
            if compiled is None:
                # The flag is read while tracing: one trace per value.
                self._uniform_rates = uniform
                specs = [
                    relaxed_spec(train.x),
                    relaxed_spec(train.targets),
                    tf.TensorSpec([self.n_replicas, None], tf.int32),
                    tf.TensorSpec([self.n_replicas, None], tf.float32),
                    tf.TensorSpec([self.n_replicas], tf.bool),
                ]
                if probe is not None:
                    specs += [relaxed_spec(probe.x), relaxed_spec(probe.targets)]
                compiled = self._compiled_epochs[key] = tf.function(
                    self._train_epoch, autograph=False, input_signature=specs
                )
                compiled.get_concrete_function()
            args = [
                train.x,
                train.targets,
                tf.constant(orders, tf.int32),
                tf.constant(rates, tf.float32),
                tf.constant(active, tf.bool),
            ]
            if probe is not None:
                args += [probe.x, probe.targets]
            losses, alive, probes = compiled(*args)
        return losses.numpy(), alive.numpy(), probes.numpy()

    def _state(self) -> list[tf.Variable]:
        return [self.flat, *self.slots, self.iterations]

    def range_test(
        self,
        train: TensorSplit,
        seeds: Sequence[int],
        min_lr: float,
        max_lr: float,
        num_steps: int,
        mode: str = "exponential",
        beta: float = 0.98,
        divergence_factor: float = 4.0,
        method: str = "steepest",
    ) -> list[RangeTestResult]:
        """The learning-rate range test of every replica at once; weights and state restored.

        Each replica sees the rows its single run's ``lr_finder.find_learning_rate`` would
        (per-epoch permutations from its seed, laid end to end) and the same rising rates.

        Returns:
            One result per replica, analysed as ``lr_finder.analyse_curve`` does.
        """
        rates = range_test_rates(min_lr, max_lr, num_steps, mode)
        n_rows = num_steps * self.batch_size
        orders = np.stack([row_order(len(train), n_rows, seed) for seed in seeds])
        started = time.perf_counter()
        snapshot = [np.array(v.numpy(), copy=True) for v in self._state()]
        try:
            losses, _, _ = self.run_epoch(
                train,
                orders,
                np.tile(rates, (self.n_replicas, 1)),
                np.ones(self.n_replicas, bool),
            )
        finally:
            for variable, value in zip(self._state(), snapshot, strict=True):
                variable.assign(value)
        seconds = time.perf_counter() - started
        return [
            analyse_curve(
                rates,
                _until_not_finite(losses[:, k]),
                beta,
                divergence_factor,
                method,
                mode,
                seconds,
            )
            for k in range(self.n_replicas)
        ]

    def fit(
        self,
        train: TensorSplit,
        val: TensorSplit,
        learning_rates: np.ndarray,
        epochs: int,
        seeds: Sequence[int],
        probe: TensorSplit | None = None,
        probe_from_epoch: int = 1,
    ) -> list[ReplicaFit]:
        """Train every replica for ``epochs`` epochs, validating after each one.

        Args:
            train: training split.
            val: validation split.
            learning_rates: (K, epochs * steps_per_epoch) rate of every step of every replica.
            epochs: number of epochs.
            seeds: each replica's shuffle seed (its run's ``seed``).
            probe: fixed rows whose loss every replica measures after every step
                (``training.probe_split``), or None.
            probe_from_epoch: the first epoch measured on ``probe``.

        Returns:
            One outcome per replica: the history and batch losses its single run would record,
            up to and including the epoch where its loss became NaN/inf, if it did.
        """
        n_steps = steps_per_epoch(len(train), self.batch_size)
        expected = (self.n_replicas, epochs * n_steps)
        if learning_rates.shape != expected:
            raise ValueError(
                f"learning_rates has shape {learning_rates.shape}; expected {expected} "
                f"= {self.n_replicas} replicas x epochs {epochs} x {n_steps} steps per epoch"
            )
        if len(seeds) != self.n_replicas:
            raise ValueError(f"{len(seeds)} seeds for {self.n_replicas} replicas")
        generators = [np.random.default_rng(seed) for seed in seeds]
        states = [_EpochState() for _ in range(self.n_replicas)]
        active = np.ones(self.n_replicas, bool)
        started = time.perf_counter()
        # Epoch e's end (a full pass over both splits, with the training gradient) is evaluated
        # on a copy of the weights after epoch e, on a thread of its own, while epoch e + 1
        # trains: the same numbers as evaluating in turn, on the second core.
        with ThreadPoolExecutor(1, thread_name_prefix="replica-epoch-end") as ends:
            previous: _TrainedEpoch | None = None
            for epoch in range(1, epochs + 1):
                epoch_started = time.perf_counter()
                rates = learning_rates[:, (epoch - 1) * n_steps : epoch * n_steps]
                orders = np.stack([rng.permutation(len(train)) for rng in generators])
                training = active.copy()
                probing = probe if epoch >= probe_from_epoch else None
                losses, active, probes = self.run_epoch(train, orders, rates, training, probing)
                trained = _TrainedEpoch(
                    epoch,
                    losses,
                    probes,
                    training,
                    rates,
                    time.perf_counter() - epoch_started,
                    ends.submit(self.evaluate_epoch, val, train, self.snapshot()),
                )
                if previous is not None:
                    self._record(previous, states, len(train))
                previous = trained
                if not active.any():
                    break
            if previous is not None:
                self._record(previous, states, len(train))
        train_seconds = time.perf_counter() - started
        return [
            ReplicaFit(
                FitResult(
                    history=state.history,
                    batch_losses=np.concatenate(state.losses),
                    diverged_epoch=state.diverged_epoch,
                    train_seconds=train_seconds,
                    probe_losses=np.concatenate(state.probes),
                ),
                state.diverged_step,
            )
            for state in states
        ]

    def _record(self, trained: _TrainedEpoch, states: list[_EpochState], n_train: int) -> None:
        """Add a trained epoch to each of its replicas' history, once its end is evaluated."""
        waited = time.perf_counter()
        on_val, on_train = trained.ends.result()
        # The epoch's training and what of its end the next epoch's training did not hide.
        seconds = trained.train_seconds + time.perf_counter() - waited
        for k in np.flatnonzero(trained.training):
            state = states[k]
            taken = _until_not_finite(trained.losses[:, k])
            state.losses.append(taken)
            state.probes.append(trained.probes[: len(taken), k])
            state.history.append(
                EpochRecord.measured(
                    trained.number,
                    batch_weighted_mean(
                        taken, self.batch_size, min(n_train, self.batch_size * len(taken))
                    ),
                    on_train[k],
                    on_val[k],
                    float(trained.rates[k, len(taken) - 1]),
                    seconds,
                )
            )
            if not np.isfinite(taken[-1]):
                state.diverged_epoch, state.diverged_step = trained.number, len(taken)

    def weights(self, replica: int) -> list[np.ndarray]:
        """Replica ``replica``'s weights in the order of its Keras model's ``get_weights()``."""
        row = self.flat[replica].numpy()
        pieces = np.split(row, np.cumsum(self._sizes)[:-1])
        out = []
        for i, (a, b) in enumerate(self._shapes):
            out += [pieces[2 * i].reshape(a, b), pieces[2 * i + 1].reshape(b)]
        return out

    def export(self, replica: int) -> keras.Model:
        """A Keras model of the template's architecture holding replica ``replica``'s weights.

        One clone of the template serves every replica (cloning was a quarter of a replica's
        recording time): use or save the model before exporting the next replica.
        """
        if self._exported is None:
            self._exported = keras.models.clone_model(self.template)
        by_layer = iter(self.weights(replica))
        for layer in self.layers:
            self._exported.get_layer(layer.name).set_weights([next(by_layer), next(by_layer)])
        return self._exported


try:  # TensorFlow's executor choice for function calls: not public API, so optional.
    from tensorflow.python.eager.context import function_executor_type as _function_executor_type
except ImportError:  # pragma: no cover - another TensorFlow layout
    _function_executor_type = None


@functools.cache
def _cpu_only() -> bool:
    return not tf.config.list_logical_devices("GPU")


@contextlib.contextmanager
def _cpu_executor() -> Iterator[None]:
    """Run this thread's TensorFlow function calls on the single-threaded executor when the
    process has no GPU.

    It runs a function's kernels in turn on the calling thread, its loops unlowered; a replica
    epoch of tiny ops trains faster so. Two threads (an epoch training, the previous epoch's
    end evaluated) run side by side only when the inter-op pool has a thread for each
    (``runtime.inter_op_threads``). It cannot run a GPU's asynchronous kernels, so with a GPU
    TensorFlow's default executor stays.
    """
    if _function_executor_type is None or not _cpu_only():
        yield
        return
    with _function_executor_type("SINGLE_THREADED_EXECUTOR"):
        yield


def with_ones(x: tf.Tensor) -> tf.Tensor:
    """``x`` with a column of ones appended on its last axis (a bias row's input)."""
    return tf.concat([x, tf.ones(tf.concat([tf.shape(x)[:-1], [1]], 0), x.dtype)], -1)


def _until_not_finite(losses: np.ndarray) -> np.ndarray:
    """The losses up to and including the first non-finite one (what the single run takes)."""
    bad = np.flatnonzero(~np.isfinite(losses))
    return losses[: bad[0] + 1] if len(bad) else losses


# A worker's trainers by graph (``reusable_trainer``): tracing a batch's functions (an epoch,
# its end, the evaluation, the range test) cost about half of the batches' training time in a
# profile of small studies, and a study's batches, the studies that train one model with one
# loss and rule, and one study on data sets of one shape, share graphs. Bounded, since each
# holds its replicas' weights and traced graphs (a few MB).
_TRAINERS: OrderedDict[tuple[object, ...], ReplicaTrainer] = OrderedDict()
MAX_KEPT_TRAINERS = 16


def trainer_key(
    template: keras.Model,
    n_replicas: int,
    loss: keras.losses.Loss,
    rule: OptimizerRule,
    batch_size: int,
    from_logits: bool,
    device: str,
) -> tuple[object, ...]:
    """What a trainer's traced functions depend on: the architecture (input width, each
    layer's units and activation function), the replica count, the loss (class and
    settings), the update rule, the batch size, the output kind and the device."""
    layers = dense_layers(template)
    return (
        int(template.inputs[0].shape[-1]),
        tuple((la.units, la.activation) for la in layers),
        n_replicas,
        type(loss).__qualname__,
        json.dumps(loss.get_config(), sort_keys=True, default=str),
        rule,
        batch_size,
        from_logits,
        device,
    )


def reusable_trainer(
    template: keras.Model,
    weights: Sequence[Sequence[np.ndarray]],
    loss: keras.losses.Loss,
    rule: OptimizerRule,
    batch_size: int,
    from_logits: bool,
    device: str,
) -> ReplicaTrainer:
    """``ReplicaTrainer.from_weights``, or this process's trainer of the same graph
    (``trainer_key``) restarted from ``weights``: the same numbers, without tracing again.

    Args:
        template, weights, loss, rule, batch_size, from_logits: as for ``from_weights``.
        device: the device the caller builds the trainer under (``tf.device``).

    Returns:
        The trainer, valid until the next call (which may restart it): a worker trains and
        records a batch before it starts the next.
    """
    key = trainer_key(template, len(weights), loss, rule, batch_size, from_logits, device)
    trainer = _TRAINERS.pop(key, None)
    if trainer is None:
        trainer = ReplicaTrainer.from_weights(
            template, weights, loss, rule, batch_size, from_logits
        )
    else:
        trainer.restart(template, weights)
    _TRAINERS[key] = trainer
    while len(_TRAINERS) > MAX_KEPT_TRAINERS:
        _TRAINERS.popitem(last=False)
    return trainer
