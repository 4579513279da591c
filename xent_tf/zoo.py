"""Worked examples of user models for ``model=keras``: builders taking (input_shape, n_outputs).

A builder returns a ``keras.Model`` whose output is ``n_outputs`` logits (no final activation);
``xent_tf.train.build`` adds the head the loss needs (sigmoid or softmax) and trains it with the
same compiled loop, range test and tracking as the MLP. ``configs/model/keras.yaml`` selects
``small_convnet`` for ``data=digits``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras


def small_convnet(
    input_shape: tuple[int, ...],
    n_outputs: int,
    image_shape: Sequence[int] = (8, 8),
    filters: int = 8,
    hidden_units: int = 32,
) -> keras.Model:
    """A small convolutional net for flat rows that are images (``data=digits``: 8x8 pixels).

    Reshape to ``image_shape`` x 1 channel -> Conv2D(filters, 3x3, relu, same padding) ->
    MaxPool 2x2 -> Dense(hidden_units, relu) -> Dense(n_outputs) logits.

    Args:
        input_shape: shape of one row of features, e.g. (64,).
        n_outputs: logits to return (1 for bce, n_classes for cce).
        image_shape: height and width the features are laid out in (row-major).
        filters: convolution filters.
        hidden_units: width of the Dense layer before the logits.

    Returns:
        The model (logits out).

    Raises:
        ValueError: the rows do not hold height x width features.
    """
    height, width = (int(d) for d in image_shape)
    n_features = math.prod(input_shape)
    if n_features != height * width:
        raise ValueError(
            f"small_convnet needs rows of {height}x{width} = {height * width} features "
            f"(image_shape={[height, width]}), got input_shape={tuple(input_shape)}; use "
            "data=digits or set model.kwargs.image_shape"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Reshape((height, width, 1), name="image")(inputs)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    logits = keras.layers.Dense(n_outputs, name="logits")(x)
    return keras.Model(inputs, logits, name="small_convnet")
