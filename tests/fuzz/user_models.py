"""User-model builders for the fuzz campaign, described by their ``model.kwargs``.

``build(input_shape, n_outputs, body=..., last=..., tail=..., defect=..., container=...)`` is
what ``model=keras model._target_=tests.fuzz.user_models.build`` calls. Each layer after the
last weighted one is named ``tail_<i>_<token>`` so that a refusal can be checked for naming it.
Tokens (Hydra-safe words):

- body: ``relu``, ``tanh`` (Dense layers), ``dropout``, ``batchnorm``, ``layernorm``;
- last: ``dense`` (linear), ``dense_<activation>`` (an activation inside the last layer),
  ``einsum`` (a linear EinsumDense), ``add`` (two linear Dense branches added);
- tail: identity-like ``dropout``, ``noise``, ``identity``, ``linear``, ``actreg``,
  ``reshape``, ``flatten``; heads ``act_<name>`` (Activation), ``softmax``, ``relu``,
  ``leakyrelu``, ``elu``, ``lambda``, ``nested_<name>`` (a nested model ending in
  Activation(name)), ``custom`` (a weightless layer of its own applying sigmoid), ``prelu``;
- defect: ``multi`` (two outputs), ``units`` (n_outputs + 1), ``rank`` (a 3-D output),
  ``int`` (an integer output), ``noweights``, ``raises_<type>`` (the builder raises),
  ``notamodel`` (returns a layer), ``innersigmoid`` (a weighted custom layer applying sigmoid
  inside its call: only the output probe can see it);
- container: ``functional``, ``sequential`` (the body and last layer in a Sequential, the tail
  after it), ``nested`` (the whole body and last layer as a nested model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

IDENTITY_TAIL = ("dropout", "noise", "identity", "linear", "actreg", "reshape", "flatten")
HEAD_TAIL = (
    "act_sigmoid",
    "act_softmax",
    "act_relu",
    "act_tanh",
    "act_softplus",
    "softmax",
    "relu",
    "leakyrelu",
    "elu",
    "lambda",
    "nested_sigmoid",
    "nested_softmax",
    "custom",
    "prelu",
)
DEFECTS = ("multi", "units", "rank", "int", "noweights", "notamodel", "innersigmoid")
RAISES = {"runtime": RuntimeError, "key": KeyError, "import": ImportError, "value": ValueError}


@keras.saving.register_keras_serializable(package="fuzz")
class SigmoidHead(keras.layers.Layer):
    """A weightless layer of its own that squashes its input (a head the walk must see)."""

    def call(self, x: Any) -> Any:
        return keras.ops.sigmoid(x)


@keras.saving.register_keras_serializable(package="fuzz")
class DenseSigmoidInside(keras.layers.Layer):
    """A weighted layer with no ``activation`` attribute that applies sigmoid in its call."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros")

    def call(self, x: Any) -> Any:
        return keras.ops.sigmoid(keras.ops.matmul(x, self.kernel) + self.bias)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def _body_layer(token: str, i: int) -> keras.layers.Layer:
    if token in ("relu", "tanh"):
        return keras.layers.Dense(6, activation=token, name=f"body_{i}_{token}")
    if token == "dropout":
        return keras.layers.Dropout(0.1, name=f"body_{i}_dropout")
    if token == "batchnorm":
        return keras.layers.BatchNormalization(name=f"body_{i}_batchnorm")
    if token == "layernorm":
        return keras.layers.LayerNormalization(name=f"body_{i}_layernorm")
    raise KeyError(token)


def _tail_layer(token: str, i: int, units: int) -> keras.layers.Layer:
    name = f"tail_{i}_{token}"
    simple: dict[str, Any] = {
        "dropout": lambda: keras.layers.Dropout(0.1, name=name),
        "noise": lambda: keras.layers.GaussianNoise(0.01, name=name),
        "identity": lambda: keras.layers.Identity(name=name),
        "linear": lambda: keras.layers.Activation("linear", name=name),
        "actreg": lambda: keras.layers.ActivityRegularization(l2=1e-4, name=name),
        "reshape": lambda: keras.layers.Reshape((units,), name=name),
        "flatten": lambda: keras.layers.Flatten(name=name),
        "softmax": lambda: keras.layers.Softmax(name=name),
        "relu": lambda: keras.layers.ReLU(name=name),
        "leakyrelu": lambda: keras.layers.LeakyReLU(name=name),
        "elu": lambda: keras.layers.ELU(name=name),
        "lambda": lambda: keras.layers.Lambda(lambda x: keras.ops.sigmoid(x), name=name),
        "custom": lambda: SigmoidHead(name=name),
        "prelu": lambda: keras.layers.PReLU(name=name),
    }
    if token in simple:
        return simple[token]()
    if token.startswith("act_"):
        return keras.layers.Activation(token.removeprefix("act_"), name=name)
    if token.startswith("nested_"):
        inner_in = keras.Input(shape=(units,))
        inner_out = keras.layers.Activation(token.removeprefix("nested_"), name=f"{name}_act")(
            keras.layers.Identity()(inner_in)
        )
        return keras.Model(inner_in, inner_out, name=name)
    raise KeyError(token)


def build(
    input_shape: tuple[int, ...],
    n_outputs: int,
    body: Sequence[str] = ("relu",),
    last: str = "dense",
    tail: Sequence[str] = (),
    defect: str = "",
    container: str = "functional",
) -> Any:
    """A user model as its kwargs describe it (see the module docstring)."""
    if defect.startswith("raises_"):
        raise RAISES[defect.removeprefix("raises_")]("the user's builder failed on purpose")
    if defect == "notamodel":
        return keras.layers.Dense(n_outputs)
    units = n_outputs + 1 if defect == "units" else n_outputs
    inputs = keras.Input(shape=tuple(input_shape))
    if defect == "noweights":
        logits = keras.layers.Lambda(lambda x: x[:, :units], name="slice")(inputs)
        return keras.Model(inputs, logits)
    layers = [_body_layer(token, i) for i, token in enumerate(body)]
    if defect == "innersigmoid":
        layers.append(DenseSigmoidInside(units, name="dense_sigmoid_inside"))
    elif last == "einsum":
        layers.append(keras.layers.EinsumDense("ab,bc->ac", output_shape=units, name="last"))
    elif last.startswith("dense") and last != "add":
        activation = last.removeprefix("dense").removeprefix("_") or None
        layers.append(keras.layers.Dense(units, activation=activation, name="last"))
    if container == "functional" or last == "add":
        x = inputs
        for layer in layers:
            x = layer(x)
        if last == "add":
            left = keras.layers.Dense(units, name="last_left")(x)
            right = keras.layers.Dense(units, name="last_right")(x)
            x = keras.layers.Add(name="last_add")([left, right])
    elif container == "sequential":
        x = keras.Sequential(layers, name="stack")(inputs)
    else:
        x = inputs
        inner_in = keras.Input(shape=tuple(input_shape))
        y = inner_in
        for layer in layers:
            y = layer(y)
        x = keras.Model(inner_in, y, name="inner")(x)
    for i, token in enumerate(tail):
        x = _tail_layer(token, i, units)(x)
    if defect == "rank":
        x = keras.layers.Reshape((units, 1), name="rank3")(x)
    if defect == "int":
        x = keras.layers.Lambda(lambda t: keras.ops.cast(t, "int32"), name="to_int")(x)
    outputs: Any = [x, keras.layers.Identity(name="second")(x)] if defect == "multi" else x
    return keras.Model(inputs, outputs, name="user_model")
