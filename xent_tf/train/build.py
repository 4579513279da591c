"""The one build path: a Config becomes the parts of a run.

``build_run`` gives everything a single run trains with (data, loss spec, model, optimizer,
splits as tensors, the compiled loop, the schedule's rates); the pieces are also separate typed
functions (``build_dataset``, ``build_loss``, ``build_model``, ``build_optimizer``,
``tensor_splits``, ``schedule_rates``) for callers that assemble runs their own way (the ledger's
measurements, the bench, a replica trainer). Everything that can be wrong with the input (data
that does not fit the loss, a user model that cannot be built) fails here, before a run opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

import keras
import numpy as np

from xent_tf.config import (
    AdamConfig,
    Config,
    DataConfig,
    KerasModelConfig,
    LossConfig,
    MlpConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    SgdConfig,
)
from xent_tf.train.data import Dataset, Split, make_dataset
from xent_tf.train.losses import LossSpec, loss_spec
from xent_tf.train.models import ModelBuildError, build_mlp, build_user_model, saturate_output_layer
from xent_tf.train.schedules import learning_rates
from xent_tf.train.training import CompiledLoop, TensorSplit, reusable_loop, steps_per_epoch


@dataclass(frozen=True)
class RunParts:
    """What one run trains with.

    Attributes:
        data: the data set (NumPy parts, name, digest).
        spec: the loss, its output head and label encoding.
        model: the freshly built, initialised model. Train and save through ``loop.model``: a
            reused loop keeps its own copy of the weights.
        optimizer: the fresh optimizer handed to the loop.
        train: training rows as tensors, labels encoded for the loss.
        val: validation rows.
        test: test rows.
        loop: the compiled loop (reused from this process's cache for the MLP).
        schedule: the learning-rate schedule.
        base_rate: the optimizer's learning rate (the range test may pick another).
        epochs: training epochs.
        steps_per_epoch: mini-batches per epoch.
    """

    data: Dataset
    spec: LossSpec
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    loop: CompiledLoop
    schedule: ScheduleConfig
    base_rate: float
    epochs: int
    steps_per_epoch: int

    def rates(self, base_rate: float | None = None) -> np.ndarray:
        """The rate of every step of the run, from ``base_rate`` (default: the optimizer's)."""
        return schedule_rates(
            self.schedule,
            self.base_rate if base_rate is None else base_rate,
            self.epochs,
            self.steps_per_epoch,
        )


def build_dataset(data_config: DataConfig) -> Dataset:
    """Load or generate the data set, split and scaled (``xent_tf.train.data.make_dataset``)."""
    return make_dataset(data_config)


def build_loss(loss_config: LossConfig, data: Dataset) -> LossSpec:
    """The loss for this data set: its head and label encoding.

    Raises:
        ValueError: the loss does not fit the data (bce on data with more than 2 classes); the
            message names the data set and its class count.
    """
    try:
        return loss_spec(loss_config, data.n_classes)
    except ValueError as error:
        raise ValueError(
            f"data.name={data.name!r} has {data.n_classes} classes: {error}"
        ) from error


def build_model(model_config: ModelConfig, data: Dataset, spec: LossSpec, seed: int) -> keras.Model:
    """Build and initialise the model, as a single run does.

    Seeds Keras (``keras.utils.set_random_seed(seed)``, as ``runtime.configure_runtime`` does
    before a run) right before building, so the weights depend on ``seed`` only; then applies
    the saturated init (``model.output_init=saturated``) to the layer that makes the logits.

    Args:
        model_config: the model kind and its settings.
        data: the data set (input shape; training labels for the saturated init).
        spec: the loss's head (output units and activation).
        seed: the run's seed.

    Returns:
        The model.

    Raises:
        models.ModelBuildError: a user model cannot be built, does not fit the loss, or has no
            Dense-like logits layer for the saturated init.
    """
    keras.utils.set_random_seed(seed)
    model, output_layer = _build_architecture(model_config, data, spec)
    if model_config.output_init == "saturated":
        if output_layer is None:
            raise ModelBuildError(
                f"model.output_init='saturated' needs a Dense-like last layer (kernel and bias) "
                f"making the logits; {model.name!r} has none: use model.output_init=standard"
            )
        saturate_output_layer(
            model, data.train.y, model_config.saturation_scale, seed, layer=output_layer
        )
    return model


@singledispatch
def _build_architecture(
    model_config: ModelConfig, data: Dataset, spec: LossSpec
) -> tuple[keras.Model, keras.layers.Layer | None]:
    """One builder per model kind, registered below: the model and its logits layer."""
    raise ValueError(f"model.name={model_config.name!r} has no builder in xent_tf.train.build")


@_build_architecture.register
def _mlp(
    model_config: MlpConfig, data: Dataset, spec: LossSpec
) -> tuple[keras.Model, keras.layers.Layer | None]:
    try:
        keras.activations.get(model_config.activation)
    except ValueError as error:
        raise ValueError(
            f"model.activation={model_config.activation!r} is not a Keras activation "
            "(e.g. relu, tanh, sigmoid, elu, gelu, linear)"
        ) from error
    model = build_mlp(
        data.n_features,
        model_config.hidden_units,
        spec.output_units,
        spec.output_activation,
        hidden_activation=model_config.activation,
    )
    return model, model.get_layer("output")


@_build_architecture.register
def _user_model(
    model_config: KerasModelConfig, data: Dataset, spec: LossSpec
) -> tuple[keras.Model, keras.layers.Layer | None]:
    return build_user_model(
        model_config._target_,
        model_config.kwargs,
        data.input_shape,
        spec.output_units,
        spec.output_activation,
    )


@singledispatch
def build_optimizer(optimizer_config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """A fresh Keras optimizer with a float learning rate; one builder per kind (below)."""
    raise ValueError(
        f"optimizer.name={optimizer_config.name!r} has no builder in xent_tf.train.build"
    )


@build_optimizer.register
def _adam(optimizer_config: AdamConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(learning_rate=optimizer_config.learning_rate)


@build_optimizer.register
def _sgd(optimizer_config: SgdConfig) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate=optimizer_config.learning_rate, momentum=optimizer_config.momentum
    )


def schedule_rates(
    schedule_config: ScheduleConfig, base_rate: float, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """The learning rate of every step (``xent_tf.train.schedules.learning_rates``)."""
    return learning_rates(schedule_config, base_rate, epochs, steps_per_epoch)


def tensor_split(split: Split, spec: LossSpec, n_classes: int) -> TensorSplit:
    """One part as tensors on the current device scope, labels encoded for the loss."""
    return TensorSplit.from_numpy(split.x, spec.encode_labels(split.y, n_classes), split.y)


def tensor_splits(data: Dataset, spec: LossSpec) -> tuple[TensorSplit, TensorSplit, TensorSplit]:
    """Train, validation and test parts as tensors."""
    return (
        tensor_split(data.train, spec, data.n_classes),
        tensor_split(data.val, spec, data.n_classes),
        tensor_split(data.test, spec, data.n_classes),
    )


def build_run(config: Config, reuse_loop: bool = True) -> RunParts:
    """Every part of one run, built from its config (call inside the run's ``tf.device``).

    Args:
        config: the validated run configuration.
        reuse_loop: take the process's compiled loop for this MLP architecture when it has one
            (``training.reusable_loop``); False always traces a fresh loop. User models
            (``model=keras``) always get a fresh loop: their architecture cannot be keyed
            reliably (a subclassed model's config need not describe it).

    Returns:
        The run's parts.

    Raises:
        ValueError: the data cannot be loaded or does not fit the loss, or the model cannot be
            built (``models.ModelBuildError``); nothing has trained.
    """
    data = build_dataset(config.data)
    spec = build_loss(config.loss, data)
    model = build_model(config.model, data, spec, config.seed)
    train, val, test = tensor_splits(data, spec)
    optimizer = build_optimizer(config.optimizer)
    batch_size = config.trainer.batch_size
    from_logits = config.loss.from_logits
    loop = (
        reusable_loop(model, spec.loss, optimizer, batch_size, from_logits)
        if reuse_loop and isinstance(config.model, MlpConfig)
        else CompiledLoop(model, spec.loss, optimizer, batch_size, from_logits)
    )
    return RunParts(
        data=data,
        spec=spec,
        model=model,
        optimizer=optimizer,
        train=train,
        val=val,
        test=test,
        loop=loop,
        schedule=config.schedule,
        base_rate=config.optimizer.learning_rate,
        epochs=config.trainer.epochs,
        steps_per_epoch=steps_per_epoch(len(train), batch_size),
    )
