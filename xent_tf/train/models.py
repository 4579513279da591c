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
    ``keras.Model`` whose output is ``(batch, output_units)`` float logits. The returned model
    is that model followed by ``Activation(output_activation)`` (named ``output_activation``;
    "linear" when the loss takes logits), so bce vs cce heads and the saturated init work on
    any model.

    Args:
        target: dotted path of the builder (``model._target_``).
        kwargs: keyword arguments of the builder (``model.kwargs``).
        input_shape: shape of one row of features.
        output_units: logits the loss needs (1 for bce, n_classes for cce).
        output_activation: "sigmoid", "softmax" or "linear".

    Returns:
        The model to train, and the Dense-like layer that produces the logits (for the saturated
        init), or None when the logits are not made by one such layer.

    Raises:
        ModelBuildError: the builder cannot be imported or raises, returns something that is not
            a Keras model, a model without trainable weights, with more than one output, an
            output that is not ``(None, output_units)`` floats, or one that does not return
            logits (``check_returns_logits``: an activation in or after the last weighted layer,
            or outputs that look like probabilities).
    """
    builder = resolve_builder(target)
    call = f"{target}({tuple(input_shape)}, {output_units}, **{dict(kwargs)})"
    try:
        inner = builder(tuple(input_shape), output_units, **dict(kwargs))
    except Exception as error:  # the user's code: any error is a build failure, named
        raise ModelBuildError(
            f"model._target_={target!r} failed when called as {call}: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(inner, keras.Model):
        raise ModelBuildError(
            f"model._target_={target!r} returned a {type(inner).__name__}, not a keras.Model"
        )
    if not inner.trainable_weights:
        raise ModelBuildError(
            f"model._target_={target!r}: its model {inner.name!r} has no trainable weights; "
            "there is nothing to train (end it with a Dense layer making the logits)"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    try:
        logits = inner(inputs)
    except Exception as error:
        raise ModelBuildError(
            f"model._target_={target!r}: its model cannot take inputs of shape "
            f"{tuple(input_shape)}: {error}"
        ) from error
    if isinstance(logits, list | tuple | dict):
        raise ModelBuildError(
            f"model._target_={target!r}: its model {inner.name!r} returns {len(logits)} outputs; "
            f"return one tensor of (None, {output_units}) logits"
        )
    shape = tuple(logits.shape)
    if shape != (None, output_units):
        raise ModelBuildError(
            f"model._target_={target!r} outputs shape {shape}; the loss needs (None, "
            f"{output_units}): 1 unit for bce (and mse on binary data), n_classes for cce, "
            "sparse_cce and mse on multi-class data"
        )
    dtype = str(logits.dtype)
    if not dtype.startswith(("float", "bfloat")):
        raise ModelBuildError(
            f"model._target_={target!r}: its model outputs {dtype} values; logits must be "
            "floats (remove the cast at its end)"
        )
    producers = check_returns_logits(inner, target)
    if not producers or not all(_is_keras_layer(layer) for layer in producers):
        # The walk could not see how the logits are made (a layer of one's own, a subclassed
        # model): look at what the model returns. Where Keras's own layers make them, the walk
        # is conclusive, and the probe's heuristic would only add false alarms.
        _probe_outputs(inner, input_shape, target)
    outputs = keras.layers.Activation(output_activation, name="output_activation")(logits)
    dense_like = [layer for layer in producers if _is_dense_like(layer)]
    layer = dense_like[0] if len(producers) == 1 and dense_like else None
    return keras.Model(inputs, outputs, name=inner.name), layer


# Layers that hand the logits on unchanged at inference (noise and dropout act only while
# training) or only rearrange them: allowed between the last weighted layer and the output.
_IDENTITY_LIKE: tuple[type, ...] = tuple(
    getattr(keras.layers, name)
    for name in (
        "Dropout",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
        "Flatten",
        "Reshape",
    )
    if hasattr(keras.layers, name)
)
# Weightless layers that combine their inputs linearly: each input must be logits in turn.
_LINEAR_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Average,
    keras.layers.Concatenate,
)
# Weighted layers that squash (PReLU starts as a ReLU): never where logits are made.
_SQUASHING_WEIGHTED = (keras.layers.PReLU,)


def _activation_name(layer: keras.layers.Layer) -> str:
    """The name of a layer's ``activation`` ("linear" when it has none)."""
    activation = getattr(layer, "activation", None)
    return str(getattr(activation, "__name__", "linear"))


def _is_keras_layer(layer: keras.layers.Layer) -> bool:
    """A layer class of Keras's own (its ``call`` is known), not one a user wrote."""
    return type(layer).__module__.split(".")[0] == "keras" and not isinstance(layer, keras.Model)


def _is_dense_like(layer: keras.layers.Layer) -> bool:
    """A (inputs, units) kernel and a (units,) bias: the saturated init can set its bias."""
    weights = layer.get_weights()
    return len(weights) == 2 and weights[0].ndim == 2 and weights[1].ndim == 1


def check_returns_logits(model: keras.Model, target: str = "model") -> list[keras.layers.Layer]:
    """Walk the model's graph back from its output to the weighted layers that make the logits.

    Between those layers and the output only identity-like layers (dropout, noise, identity,
    a linear Activation, reshapes) and linear merges (Add, Subtract, Average, Concatenate) may
    stand; the weighted layers themselves must not apply an activation. Nested models are
    walked into. A model without a graph (subclassed) is taken as it is: ``_probe_outputs``
    still looks at what it returns.

    Args:
        model: the user's model.
        target: its dotted path, for messages.

    Returns:
        The weighted layers whose outputs reach the model's output (for the saturated init).

    Raises:
        ModelBuildError: a layer after the last weighted layer changes the logits (an
            Activation other than linear, Softmax, ReLU, a Lambda, a layer of one's own, a nested
            model ending in one), or the last weighted layer applies an activation; the message
            names the layer.
    """
    producers: list[keras.layers.Layer] = []
    outputs = getattr(model, "outputs", None) or []
    for tensor in outputs:
        _walk_to_logits(tensor, target, model.name, producers)
    return producers


def _walk_to_logits(
    tensor: Any, target: str, path: str, producers: list[keras.layers.Layer]
) -> None:
    """``check_returns_logits`` from one tensor back (``path``: the nested models so far)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return
    layer, node_index, tensor_index = history
    where = f"{path}/{layer.name}"
    if isinstance(layer, keras.layers.InputLayer):
        return
    if isinstance(layer, keras.Model):
        inner_outputs = getattr(layer, "outputs", None)
        if inner_outputs:
            _walk_to_logits(inner_outputs[tensor_index], target, where, producers)
        else:  # a subclassed model: no graph to walk
            producers.append(layer)
        return
    activation = _activation_name(layer)
    if layer.weights and not isinstance(layer, _SQUASHING_WEIGHTED):
        if activation != "linear":
            raise ModelBuildError(
                f"model._target_={target!r}: its last weighted layer {where!r} applies "
                f"{activation!r}; return logits (activation=None): the loss adds its own head"
            )
        producers.append(layer)
        return
    identity = isinstance(layer, _IDENTITY_LIKE) or (
        isinstance(layer, keras.layers.Activation) and activation == "linear"
    )
    if not identity and not isinstance(layer, _LINEAR_MERGES):
        what = f" ({activation!r})" if isinstance(layer, keras.layers.Activation) else ""
        raise ModelBuildError(
            f"model._target_={target!r}: layer {where!r} ({type(layer).__name__}{what}) comes "
            "after the last weighted layer and changes the logits; the loss adds its own head "
            "(sigmoid or softmax), so it would be applied on top of this one. Return the logits:"
            " drop the layer or put it before the last Dense layer"
        )
    node = layer._inbound_nodes[node_index]
    for parent in node.input_tensors:
        _walk_to_logits(parent, target, path, producers)


# Rows of random inputs the output probe feeds the model, and their scale (features are
# standardised, so a few units reach well past where a linear layer's outputs change sign).
_PROBE_ROWS = 256
_PROBE_SCALE = 4.0


def _probe_outputs(model: keras.Model, input_shape: tuple[int, ...], target: str) -> None:
    """Refuse a model whose outputs look like probabilities on random inputs.

    The graph walk cannot see inside a layer's own ``call`` (a custom layer that applies a
    sigmoid to its matmul); logits of random inputs take both signs, probabilities stay in
    [0, 1]. A constant output (all-zero weights) says nothing and is let through.

    Raises:
        ModelBuildError: every output lies in [0, 1] and they are not all equal.
    """
    rows = np.random.default_rng(0).normal(0.0, _PROBE_SCALE, (_PROBE_ROWS, *input_shape))
    try:
        values = np.asarray(model(rows.astype(np.float32), training=False), dtype=np.float64)
    except Exception as error:
        raise ModelBuildError(
            f"model._target_={target!r}: its model fails on a batch of {_PROBE_ROWS} rows of "
            f"shape {tuple(input_shape)}: {error}"
        ) from error
    if values.min() >= 0.0 and values.max() <= 1.0 and values.max() > values.min():
        raise ModelBuildError(
            f"model._target_={target!r}: its outputs look like probabilities, not logits: "
            f"on {_PROBE_ROWS} random rows every output is in [0, 1] (from {values.min():.3g} "
            f"to {values.max():.3g}); return the logits (no sigmoid or softmax at the end): the "
            "loss adds its own head"
        )


def logits_layer(model: keras.Model, target: str = "model") -> keras.layers.Layer | None:
    """The Dense-like layer that makes the model's logits (``check_returns_logits``).

    Args:
        model: the user's model.
        target: its dotted path, for messages.

    Returns:
        The layer, or None when the logits are not made by a single Dense-like layer.

    Raises:
        ModelBuildError: the model does not return logits (the message names the layer).
    """
    producers = check_returns_logits(model, target)
    if len(producers) == 1 and _is_dense_like(producers[0]):
        return producers[0]
    return None
