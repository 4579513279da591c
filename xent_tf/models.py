"""The MLP builder (Keras Functional API)."""

from __future__ import annotations

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


def saturate_output_layer(model: keras.Model, y: np.ndarray, scale: float, seed: int) -> None:
    """Re-initialise the output layer so the model starts confidently wrong (C12).

    The output bias is set to ``scale`` on the least frequent class, so every prediction starts
    saturated on it: confidently wrong for most rows (about half on balanced binary data, about
    four in five on 5-class data). Small random kernel weights (std 1e-3) keep the units from
    being identical and let gradients reach the hidden layers.

    Args:
        model: a model from ``build_mlp``.
        y: integer training labels, to pick the wrong class.
        scale: logit magnitude of the wrong prediction.
        seed: seed of the small kernel noise.
    """
    layer = model.get_layer("output")
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
