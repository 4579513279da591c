"""Loss name -> Keras loss, the output head it needs, and the label encoding it expects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from xent_tf.config import LossConfig, NotApplicableError


@dataclass(frozen=True)
class LossSpec:
    """Everything that follows from choosing a loss for a given number of classes.

    Attributes:
        loss: the Keras loss object (mean over the batch).
        output_units: width of the output layer.
        output_activation: "sigmoid", "softmax" or "linear" (when the loss takes logits).
        probability_activation: what turns the output into probabilities ("sigmoid"/"softmax").
        label_encoding: "binary" (float 0/1 column), "one_hot" or "sparse" (integer class).
    """

    loss: keras.losses.Loss
    output_units: int
    output_activation: str
    probability_activation: str
    label_encoding: str

    def encode_labels(self, y: np.ndarray, n_classes: int) -> np.ndarray:
        """Encode integer class labels the way this loss expects them.

        Args:
            y: integer labels, shape (n,).
            n_classes: number of classes.

        Returns:
            float32 (n, 1) for "binary", float32 (n, n_classes) for "one_hot", int32 (n,) for
            "sparse".
        """
        if self.label_encoding == "binary":
            return y.astype(np.float32).reshape(-1, 1)
        if self.label_encoding == "one_hot":
            return np.eye(n_classes, dtype=np.float32)[y]
        return y.astype(np.int32)


def _cross_entropy(
    keras_class: type[keras.losses.Loss], smooths: bool
) -> Callable[[LossConfig], keras.losses.Loss]:
    def build(config: LossConfig) -> keras.losses.Loss:
        if smooths:
            return keras_class(
                from_logits=config.from_logits, label_smoothing=config.label_smoothing
            )
        return keras_class(from_logits=config.from_logits)

    return build


# loss name -> (Keras loss builder, label encoding with several output units). One output unit
# always takes "binary" labels. Keyed by config.LOSSES but "ce", which resolves to one of them
# (``resolved_loss_name``; tests/test_config.py checks they agree).
LOSS_BUILDERS: dict[str, tuple[Callable[[LossConfig], keras.losses.Loss], str]] = {
    "bce": (_cross_entropy(keras.losses.BinaryCrossentropy, smooths=True), "binary"),
    "cce": (_cross_entropy(keras.losses.CategoricalCrossentropy, smooths=True), "one_hot"),
    "sparse_cce": (
        _cross_entropy(keras.losses.SparseCategoricalCrossentropy, smooths=False),
        "sparse",
    ),
    "mse": (lambda config: keras.losses.MeanSquaredError(), "one_hot"),
    # The square loss on the raw outputs (a linear head, one-hot targets; Hui & Belkin, ICLR
    # 2021): no sigmoid/softmax, so no sigma'(z) factor in its gradient (C12's control arm).
    "mse_raw": (lambda config: keras.losses.MeanSquaredError(), "one_hot"),
}


def resolved_loss_name(name: str, n_classes: int) -> str:
    """The loss a config name trains with: "ce" is bce on binary data, sparse_cce otherwise.

    Args:
        name: ``loss.name``.
        n_classes: classes in the data.

    Returns:
        A key of ``LOSS_BUILDERS``.
    """
    if name == "ce":
        return "bce" if n_classes == 2 else "sparse_cce"
    return name


# Losses that use one output unit on binary data (bce always; mse and mse_raw like the bce they
# are compared with); the others use n_classes units.
_ONE_UNIT_ON_BINARY = ("bce", "mse", "mse_raw")
# Losses on the raw outputs: a linear head whatever from_logits says (the square loss compares
# the outputs themselves with the 0/1 targets; a class is predicted by output > 0.5 on one unit,
# by the largest output on several).
_RAW_OUTPUT = ("mse_raw",)


def loss_spec(config: LossConfig, n_classes: int) -> LossSpec:
    """Build the loss and describe the head and labels it needs.

    ``bce`` uses one sigmoid unit and needs binary data; ``cce``/``sparse_cce`` use ``n_classes``
    softmax units (two on binary data); ``ce`` is bce on binary data and sparse_cce otherwise;
    ``mse`` uses the same heads as the cross-entropy it is compared with: one sigmoid unit on
    binary data, a softmax over one-hot labels otherwise; ``mse_raw`` the same units with no
    activation (the square loss on the raw outputs, 0/1 or one-hot targets).

    Args:
        config: loss name and options.
        n_classes: number of classes in the data.

    Returns:
        The loss with its head and label encoding.

    Raises:
        ValueError: ``bce`` on data that is not binary, or an unknown loss name.
    """
    name = resolved_loss_name(config.name, n_classes)
    if name not in LOSS_BUILDERS:
        raise ValueError(f"loss.name={config.name!r} is not one of {[*LOSS_BUILDERS, 'ce']}")
    if name == "bce" and n_classes != 2:
        raise NotApplicableError(
            f"loss.name='bce' needs binary data, got n_classes={n_classes}; use ce, cce or "
            "sparse_cce"
        )
    build, encoding = LOSS_BUILDERS[name]
    one_unit = name in _ONE_UNIT_ON_BINARY and n_classes == 2
    probability_activation = "sigmoid" if one_unit else "softmax"
    return LossSpec(
        loss=build(config),
        output_units=1 if one_unit else n_classes,
        output_activation=(
            "linear" if config.from_logits or name in _RAW_OUTPUT else probability_activation
        ),
        probability_activation=probability_activation,
        label_encoding="binary" if one_unit else encoding,
    )
