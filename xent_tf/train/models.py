"""Model builders: the MLP (Keras Functional API) and any user model given by a dotted path."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np


def build_mlp(
    n_features: int,
    hidden_units: list[int] | tuple[int, ...],
    output_units: int,
    output_activation: str,
    hidden_activation: str = "relu",
    name: str = "mlp",
) -> keras.Model:
    """Dense hidden layers, then one Dense output layer named ``output``.

    Keras's default initialisation: glorot-uniform kernels, zero biases. Seed Keras first
    (``keras.utils.set_random_seed``) for reproducible weights.

    Args:
        n_features: input width.
        hidden_units: width of each hidden layer, in order.
        output_units: width of the output layer.
        output_activation: activation of the output layer ("sigmoid", "softmax", "linear").
        hidden_activation: activation of the hidden layers.
        name: model name.

    Returns:
        A Keras model; hidden layers are named ``hidden_1``, ``hidden_2`` ...
    """
    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation=hidden_activation, name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(output_units, activation=output_activation, name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def saturate_output_layer(
    model: keras.Model,
    y: np.ndarray,
    scale: float,
    seed: int,
    layer: keras.layers.Layer | None = None,
) -> None:
    """Re-initialise the output layer so the model starts confidently wrong (C12).

    The output bias is set to ``scale`` on the least frequent class, so every prediction starts
    saturated on it: confidently wrong for most rows (about half on balanced binary data, about
    four in five on 5-class data). Small random kernel weights (std 1e-3) keep the units from
    being identical and let gradients reach the hidden layers.

    Args:
        model: a model from ``build_mlp`` (its layer ``output`` is re-initialised).
        y: integer training labels, to pick the wrong class.
        scale: logit magnitude of the wrong prediction.
        seed: seed of the small kernel noise.
        layer: the layer to re-initialise instead (a user model's logits layer,
            ``logits_layer``).
    """
    layer = layer if layer is not None else model.get_layer("output")
    kernel, bias = layer.get_weights()
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0.0, 1e-3, size=kernel.shape).astype(kernel.dtype)
    counts = np.bincount(y, minlength=max(2, kernel.shape[1]))
    if kernel.shape[1] == 1:
        wrong_label = int(np.argmin(counts[:2]))
        bias = np.array([scale if wrong_label == 1 else -scale], dtype=bias.dtype)
    else:
        bias = np.zeros_like(bias)
        bias[int(np.argmin(counts))] = scale
    layer.set_weights([kernel, bias])


class ModelBuildError(ValueError):
    """A user model (``model=keras``) cannot be built or does not fit the loss."""


def resolve_builder(target: str) -> Callable[..., Any]:
    """Import the callable a dotted path names (``package.module.function``).

    Args:
        target: the dotted path (``model._target_``).

    Returns:
        The callable.

    Raises:
        ModelBuildError: the module cannot be imported, has no such attribute, or the attribute
            is not callable.
    """
    module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelBuildError(
            f"model._target_={target!r}: cannot import module {module_name!r} ({error}); give "
            "'package.module.function' importable from the launch directory or PYTHONPATH"
        ) from error
    if not hasattr(module, attribute):
        public = sorted(name for name in vars(module) if not name.startswith("_"))
        raise ModelBuildError(
            f"model._target_={target!r}: module {module_name!r} has no attribute "
            f"{attribute!r}; it has {public}"
        )
    builder = getattr(module, attribute)
    if not callable(builder):
        raise ModelBuildError(
            f"model._target_={target!r} is a {type(builder).__name__}, not a callable; give a "
            "function (or class) taking (input_shape, n_outputs, **kwargs) and returning a "
            "keras.Model"
        )
    return builder


def build_user_model(
    target: str,
    kwargs: Mapping[str, Any],
    input_shape: tuple[int, ...],
    output_units: int,
    output_activation: str,
) -> tuple[keras.Model, keras.layers.Layer | None]:
    """Build a user model and put the loss's output activation on its logits.

    The builder is called as ``builder(input_shape, output_units, **kwargs)`` and must return a
    ``keras.Model`` whose output is ``(batch, output_units)`` logits. The returned model is that
    model followed by ``Activation(output_activation)`` (named ``output_activation``; "linear"
    when the loss takes logits), so bce vs cce heads and the saturated init work on any model.

    Args:
        target: dotted path of the builder (``model._target_``).
        kwargs: keyword arguments of the builder (``model.kwargs``).
        input_shape: shape of one row of features.
        output_units: logits the loss needs (1 for bce, n_classes for cce).
        output_activation: "sigmoid", "softmax" or "linear".

    Returns:
        The model to train, and the Dense-like layer that produces the logits (for the saturated
        init), or None when the last weighted layer is not Dense-like.

    Raises:
        ModelBuildError: the builder cannot be imported or called, returns something that is not
            a Keras model, its output does not have ``output_units`` units, or its last layer
            applies an activation.
    """
    builder = resolve_builder(target)
    try:
        inner = builder(tuple(input_shape), output_units, **dict(kwargs))
    except (TypeError, ValueError) as error:
        raise ModelBuildError(
            f"model._target_={target!r} failed when called as "
            f"{target}({tuple(input_shape)}, {output_units}, **{dict(kwargs)}): {error}"
        ) from error
    if not isinstance(inner, keras.Model):
        raise ModelBuildError(
            f"model._target_={target!r} returned a {type(inner).__name__}, not a keras.Model"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    try:
        logits = inner(inputs)
    except Exception as error:
        raise ModelBuildError(
            f"model._target_={target!r}: its model cannot take inputs of shape "
            f"{tuple(input_shape)}: {error}"
        ) from error
    shape = tuple(logits.shape)
    if shape != (None, output_units):
        raise ModelBuildError(
            f"model._target_={target!r} outputs shape {shape}; the loss needs (None, "
            f"{output_units}): 1 unit for bce (and mse on binary data), n_classes for cce, "
            "sparse_cce and mse on multi-class data"
        )
    outputs = keras.layers.Activation(output_activation, name="output_activation")(logits)
    return keras.Model(inputs, outputs, name=inner.name), logits_layer(inner, target)


def logits_layer(model: keras.Model, target: str = "model") -> keras.layers.Layer | None:
    """The last layer with a (inputs, units) kernel and a (units,) bias: where logits are made.

    Args:
        model: the user's model.
        target: its dotted path, for messages.

    Returns:
        The layer, or None when the model's last weighted layer is not Dense-like.

    Raises:
        ModelBuildError: that layer applies an activation (the model must return logits).
    """
    weighted = [layer for layer in _leaf_layers(model) if layer.weights]
    if not weighted:
        return None
    layer = weighted[-1]
    weights = layer.get_weights()
    if not (len(weights) == 2 and weights[0].ndim == 2 and weights[1].ndim == 1):
        return None
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", "linear")
    if name != "linear":
        raise ModelBuildError(
            f"model._target_={target!r}: its last layer {layer.name!r} applies {name!r}; "
            "return logits (activation=None): the loss adds its own head"
        )
    return layer


def _leaf_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers of a model in order, nested models expanded."""
    inner = getattr(layer, "layers", None)
    if inner is None:
        return [layer]
    return [leaf for child in inner for leaf in _leaf_layers(child)]
