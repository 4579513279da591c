"""Heads, parameter counts and label encodings per loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from xent_tf.config import LossConfig
from xent_tf.train.losses import loss_spec, resolved_loss_name
from xent_tf.train.models import build_mlp, saturate_output_layer


@pytest.mark.parametrize(
    ("loss", "n_classes", "units", "activation", "n_params"),
    [
        # 20*10+10 + 10*10+10 = 320 hidden, then the head
        ("bce", 2, 1, "sigmoid", 331),  # the reference model of C16
        ("cce", 2, 2, "softmax", 342),
        ("sparse_cce", 2, 2, "softmax", 342),
        ("mse", 2, 1, "sigmoid", 331),
        ("cce", 5, 5, "softmax", 375),
        ("sparse_cce", 5, 5, "softmax", 375),
        ("mse", 5, 5, "softmax", 375),
        ("mse_raw", 2, 1, "linear", 331),  # the square loss on the raw output (C12's control)
        ("mse_raw", 5, 5, "linear", 375),
        ("ce", 2, 1, "sigmoid", 331),  # ce is bce on binary data
        ("ce", 5, 5, "softmax", 375),  # and sparse_cce otherwise
    ],
)
def test_head_and_parameter_count(
    loss: str, n_classes: int, units: int, activation: str, n_params: int
) -> None:
    spec = loss_spec(LossConfig(name=loss), n_classes)
    assert (spec.output_units, spec.output_activation) == (units, activation)
    model = build_mlp(20, [10, 10], spec.output_units, spec.output_activation)
    assert model.count_params() == n_params
    assert [layer.name for layer in model.layers[1:]] == ["hidden_1", "hidden_2", "output"]


def test_from_logits_uses_a_linear_head() -> None:
    spec = loss_spec(LossConfig(name="cce", from_logits=True), 5)
    assert (spec.output_activation, spec.probability_activation) == ("linear", "softmax")


def test_label_encodings() -> None:
    y = np.array([0, 2, 1], dtype=np.int32)
    one_hot = loss_spec(LossConfig(name="cce"), 3).encode_labels(y, 3)
    np.testing.assert_array_equal(one_hot, np.eye(3, dtype=np.float32)[[0, 2, 1]])
    sparse = loss_spec(LossConfig(name="sparse_cce"), 3).encode_labels(y, 3)
    np.testing.assert_array_equal(sparse, y)
    binary = loss_spec(LossConfig(name="bce"), 2).encode_labels(np.array([0, 1]), 2)
    assert binary.shape == (2, 1) and binary.dtype == np.float32


def test_ce_is_bce_on_binary_data_and_sparse_cce_otherwise() -> None:
    binary, multi = loss_spec(LossConfig(name="ce"), 2), loss_spec(LossConfig(name="ce"), 5)
    assert isinstance(binary.loss, keras.losses.BinaryCrossentropy)
    assert (binary.label_encoding, binary.output_units) == ("binary", 1)
    assert isinstance(multi.loss, keras.losses.SparseCategoricalCrossentropy)
    assert (multi.label_encoding, multi.output_units) == ("sparse", 5)
    assert resolved_loss_name("ce", 2) == "bce" and resolved_loss_name("ce", 3) == "sparse_cce"
    assert resolved_loss_name("mse", 2) == "mse"


def test_bce_refuses_multiclass_data() -> None:
    with pytest.raises(ValueError, match="needs binary data, got n_classes=5"):
        loss_spec(LossConfig(name="bce"), 5)


def test_keras_bce_matches_the_numpy_formula() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, size=(64, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=(64, 1)).astype(np.float32)
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    got = float(loss_spec(LossConfig(name="bce"), 2).loss(y, p))
    assert got == pytest.approx(expected, rel=1e-5)


def test_saturated_init_starts_confidently_on_the_rarest_class() -> None:
    keras.utils.set_random_seed(0)
    model = build_mlp(4, [3], 5, "softmax")
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4], dtype=np.int32)  # class 4 is rarest
    saturate_output_layer(model, y, scale=10.0, seed=0)
    probabilities = np.asarray(model(np.random.default_rng(0).normal(size=(8, 4))))
    assert np.all(np.argmax(probabilities, axis=1) == 4)
    assert np.all(probabilities[:, 4] > 0.99)
