"""What the Keras cross-entropy losses compute (claims C5-C9, C11), against NumPy formulas."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import require_torch
from xent_tf.claims import semantics

# Keras computes in float32; NumPy references are float64.
RTOL = 1e-5
LN_10 = math.log(10.0)


def random_logits(seed: int, n: int = 128, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = (3.0 * rng.standard_normal((n, c))).astype(np.float32)
    return z, rng.integers(0, c, size=n)


# --------------------------------------------------------------------------- C5, C6


def test_worked_example_losses_equal_minus_ln_point_one() -> None:
    result = semantics.worked_example()
    assert result.keras_losses == pytest.approx((2.302585, 2.302585), rel=1e-6)
    assert result.numpy_losses == pytest.approx((LN_10, LN_10), rel=1e-12)


def test_same_loss_different_logit_gradients() -> None:
    result = semantics.logit_gradients()
    # softmax(log q) = q, so the gradient is q - y.
    np.testing.assert_allclose(
        result.numpy_gradients,
        [[-0.9, 0.5, 0.1, 0.1, 0.2], [-0.9, 0.6, 0.1, 0.1, 0.1]],
        atol=1e-12,
    )
    np.testing.assert_allclose(result.keras_gradients, result.numpy_gradients, atol=1e-6)
    assert result.max_abs_error_vs_numpy < 1e-6
    assert result.max_abs_loss_difference < 1e-6
    assert result.max_abs_gradient_difference == pytest.approx(0.1, abs=1e-6)


def test_predictions_are_validated() -> None:
    with pytest.raises(ValueError, match="strictly positive"):
        semantics.logit_gradients(predictions=[[1.0, 0.0, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        semantics.worked_example(predictions=[[0.5, 0.5]])
    with pytest.raises(ValueError, match="sum to 1"):
        semantics.worked_example(predictions=[[0.5, 0.5, 0.5, 0.1, 0.1]])


# --------------------------------------------------------------------------- C7


def test_cross_entropy_from_logits_is_nll_of_log_softmax() -> None:
    result = semantics.logits_vs_log_softmax(n_samples=512, seed=1)
    assert result.max_abs_nll > 5  # logits spread enough that some predictions are bad
    assert result.max_abs_diff_categorical < RTOL * result.max_abs_nll
    assert result.max_abs_diff_sparse < RTOL * result.max_abs_nll
    assert result.max_abs_diff_keras_log_softmax < RTOL * result.max_abs_nll


@pytest.mark.parametrize("reduction", ["none", "sum", "sum_over_batch_size"])
def test_categorical_reductions_with_sample_weight(reduction: str) -> None:
    z, y = random_logits(seed=2)
    w = np.random.default_rng(3).uniform(0.1, 3.0, size=len(y)).astype(np.float32)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=reduction)
    got = keras.ops.convert_to_numpy(loss(np.eye(5, dtype=np.float32)[y], z, sample_weight=w))
    weighted = w * -semantics.log_softmax(z)[np.arange(len(y)), y]
    expected = {
        "none": weighted,
        "sum": weighted.sum(),
        # Without a mask, sum_over_batch_size divides by N, not by the sum of the weights.
        "sum_over_batch_size": weighted.sum() / len(y),
    }[reduction]
    np.testing.assert_allclose(got, expected, rtol=RTOL)


def _torch(result: semantics.WeightedReduction) -> semantics.TorchValues:
    require_torch()
    values = semantics.torch_reference(result)
    assert not isinstance(values, str), values
    return values


def test_weighted_ignored_mean_keras_vs_pytorch() -> None:
    result = semantics.weighted_reduction_semantics(n_samples=64, ignore_class=0, seed=0)
    assert result.n_ignored == 14
    assert result.max_abs_diff_none < RTOL * max(result.keras_values["sum"], 1.0)
    assert result.matched["sum"] == ("sum",)
    # Keras' default mean divides by the number of non-ignored samples, ignoring weights ...
    assert result.matched["sum_over_batch_size"] == ("non_ignored_count",)
    assert result.keras_values["sum_over_batch_size"] == pytest.approx(10.9143006, rel=RTOL)
    # ... PyTorch itself by the sum of their weights: here they differ by a factor ~3.6.
    torch_values = _torch(result)
    assert torch_values.reductions["mean"] == pytest.approx(
        result.candidates["sum_of_weights_non_ignored"], rel=1e-12
    )
    assert torch_values.reductions["mean"] == pytest.approx(3.0558353, rel=1e-6)
    assert torch_values.reductions["sum"] == pytest.approx(result.keras_values["sum"], rel=RTOL)
    np.testing.assert_allclose(
        torch_values.per_sample, result.keras_per_sample, rtol=RTOL, atol=1e-6
    )
    assert torch_values.per_sample[result.labels == 0].tolist() == [0.0] * 14
    for reduction in ("sum", "mean"):  # F.cross_entropy is F.nll_loss of F.log_softmax
        assert torch_values.nll_of_log_softmax[reduction] == pytest.approx(
            torch_values.reductions[reduction], rel=1e-12
        )
    # Newer Keras 3 (3.15 here) also offers PyTorch's convention as a reduction.
    if "mean_with_sample_weight" in result.keras_values:
        assert result.matched["mean_with_sample_weight"] == ("sum_of_weights_non_ignored",)


def test_unweighted_ignored_mean_agrees_across_frameworks() -> None:
    result = semantics.weighted_reduction_semantics(class_weight=[1.0] * 5, seed=0)
    assert result.keras_values["sum_over_batch_size"] == pytest.approx(
        _torch(result).reductions["mean"], rel=RTOL
    )
    assert result.keras_values["sum_over_batch_size"] > result.candidates["batch_size"] * 1.2


def test_label_smoothing_agrees_across_frameworks() -> None:
    result = semantics.weighted_reduction_semantics(seed=0)
    torch_values = _torch(result)
    for eps in semantics.LABEL_SMOOTHING:
        assert result.keras_label_smoothing[eps] == pytest.approx(
            torch_values.label_smoothing[eps], rel=RTOL
        )
    # smoothing changes the loss, so agreement at 0.1 is not agreement by default
    assert result.keras_label_smoothing[0.1] != pytest.approx(result.keras_label_smoothing[0.0])


def test_without_torch_nothing_is_labelled_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    result = semantics.weighted_reduction_semantics(seed=0)
    reason = semantics.torch_reference(result)
    assert isinstance(reason, str) and reason.startswith("not measured (PyTorch not installed")


def test_ignore_class_is_validated() -> None:
    with pytest.raises(ValueError, match="ignore_class"):
        semantics.weighted_reduction_semantics(n_classes=5, ignore_class=7)


# --------------------------------------------------------------------------- C8


def test_binary_ce_is_two_class_softmax_ce() -> None:
    f32 = semantics.binary_as_two_class(n_samples=1000, seed=0)
    assert f32.max_loss > 10
    assert f32.max_abs_diff_from_logits < 1e-6
    assert f32.max_abs_error_vs_numpy < 1e-6
    f64 = semantics.binary_as_two_class(n_samples=1000, seed=0, dtype="float64")
    assert f64.max_abs_diff_from_logits < 1e-12
    assert f64.max_abs_diff_from_probabilities < 1e-9


def test_sigmoid_is_softmax_over_zero_and_z() -> None:
    z = np.linspace(-30, 30, 61)
    two = semantics.softmax(np.stack([np.zeros_like(z), z], axis=1))
    np.testing.assert_allclose(two[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-12)


# --------------------------------------------------------------------------- C9


@pytest.fixture(scope="module")
def clipping() -> semantics.ClippingEffect:
    return semantics.clipping_effect((-50.0, -20.0, -10.0, 10.0))


def test_clipping_caps_loss_and_kills_gradient(clipping: semantics.ClippingEffect) -> None:
    assert clipping.epsilon == pytest.approx(1e-7)
    assert clipping.loss_cap == pytest.approx(16.118096, abs=1e-6)
    for point in clipping.points[:2]:  # z = -50, -20: sigmoid(z) < eps, so clipped
        assert point.loss_clipped == pytest.approx(clipping.loss_cap, rel=1e-6)
        assert point.grad_clipped == 0.0
        assert point.loss_logits == pytest.approx(-point.logit, rel=1e-6)
        assert point.grad_logits == pytest.approx(-1.0, abs=1e-6)


def test_inside_clip_range_all_paths_agree(clipping: semantics.ClippingEffect) -> None:
    for point in clipping.points[2:]:  # z = -10, 10
        for loss in (point.loss_clipped, point.loss_keras_sigmoid, point.loss_logits):
            assert loss == pytest.approx(point.exact_loss, rel=1e-3)
    z_minus_10 = clipping.points[2]
    assert z_minus_10.loss_logits == pytest.approx(10.0000454, rel=RTOL)
    assert z_minus_10.grad_logits == pytest.approx(-0.9999546, rel=RTOL)


def test_keras_sigmoid_output_is_scored_from_its_logits(
    clipping: semantics.ClippingEffect,
) -> None:
    # Keras 3 + TF: sigmoid outputs carry their logits and from_logits=False uses them.
    for point in clipping.points:
        assert point.loss_keras_sigmoid == pytest.approx(point.loss_logits, rel=RTOL)
        assert point.grad_keras_sigmoid == pytest.approx(point.grad_logits, rel=RTOL, abs=1e-9)


def test_clipping_label_is_validated() -> None:
    with pytest.raises(ValueError, match=r"label must be 0 or 1; got 0\.5"):
        semantics.clipping_effect(label=0.5)


# --------------------------------------------------------------------------- C11


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_accuracy_has_no_gradient(n_outputs: int) -> None:
    x, y = semantics.small_classification(n_samples=200, seed=0)
    model = semantics.build_tiny_mlp(x.shape[1], n_outputs=n_outputs, seed=0)
    result = semantics.accuracy_gradients(model, x, y, n_perturbations=10)
    assert result.weight_names == ("hidden/kernel", "hidden/bias", "head/kernel", "head/bias")
    assert all(result.accuracy_gradient_is_none)
    assert all(g > 0 for g in result.loss_gradient_max_abs)
    assert result.perturbations_changing_accuracy == 0
    if n_outputs == 1:
        assert result.sign_accuracy_gradient_max_abs == (0.0, 0.0, 0.0, 0.0)
    # The probe restores the weights it perturbed.
    assert semantics.accuracy_gradients(model, x, y, n_perturbations=0).loss == result.loss


def test_step_activation_passes_no_gradient() -> None:
    x = tf.Variable([[-1.0, 0.5, 2.0]])
    with tf.GradientTape() as tape:
        out = semantics.StepActivation()(x)
    np.testing.assert_array_equal(out.numpy(), [[0.0, 1.0, 1.0]])
    assert tape.gradient(out, x) is None


def test_step_mlp_hidden_layer_never_moves() -> None:
    outcomes = semantics.step_activation_training(n_steps=200, seed=0)
    step, sigmoid = outcomes["step"], outcomes["sigmoid"]
    assert step.hidden_gradient_is_none
    assert step.hidden_kernel_change == 0.0
    assert step.head_kernel_change > 0  # the output layer after the step still learns
    assert not sigmoid.hidden_gradient_is_none
    assert sigmoid.hidden_kernel_change > 0.1
    assert sigmoid.loss_after < sigmoid.loss_before - 0.2
    assert sigmoid.loss_after < step.loss_after
    # Finite differences, independent of GradientTape: tiny changes of the hidden kernel never
    # change the step net's loss, and always change the sigmoid net's.
    assert (step.n_probes, step.probes_changing_loss) == (20, 0)
    assert sigmoid.probes_changing_loss == 20
    # Large enough changes do flip step units, so the probe can see a step net's loss move.
    x, y = semantics.small_classification()
    model = semantics.build_tiny_mlp(x.shape[1], activation="step")
    assert semantics.probes_changing_loss(model, x, y, n_probes=5, probe_size=0.5, seed=0) == 5


def test_build_tiny_mlp_validates() -> None:
    with pytest.raises(ValueError, match=r"activation must be .* got 'tanh'"):
        semantics.build_tiny_mlp(4, activation="tanh")  # type: ignore[arg-type]
    model = semantics.build_tiny_mlp(4, hidden_units=3, activation="step")
    assert model.count_params() == 4 * 3 + 3 + 3 + 1
