"""The fused optimizer steps compute what the Keras optimizers' own ``apply`` computes."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from xent_tf.train.updates import make_apply

SHAPES = [(5, 3), (3,), (3, 1), (1,)]


def _variables(seed: int) -> list[keras.Variable]:
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]


def _gradients(rng: np.random.Generator) -> list[tf.Tensor]:
    return [tf.constant(rng.normal(size=shape).astype(np.float32)) for shape in SHAPES]


OPTIMIZERS: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "adam": lambda: keras.optimizers.Adam(0.05),
    "adam_custom_betas": lambda: keras.optimizers.Adam(0.05, beta_1=0.5, beta_2=0.9, epsilon=1e-3),
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
}
RATES = (0.05, 0.01, 0.2, 0.001, 0.03)  # a new rate every step, as the schedules do


def _float64_steps(
    optimizer: keras.optimizers.Optimizer,
    weights: list[np.ndarray],
    gradients: list[list[np.ndarray]],
) -> list[np.ndarray]:
    """The optimizer's documented update rule in float64 NumPy, one step per entry of RATES."""
    w = [x.astype(np.float64) for x in weights]
    first = [np.zeros_like(x) for x in w]  # Adam's m, SGD's momentum
    second = [np.zeros_like(x) for x in w]  # Adam's v
    for t, (rate, grads) in enumerate(zip(RATES, gradients, strict=True), start=1):
        for i, g in enumerate(grads):
            if isinstance(optimizer, keras.optimizers.Adam):
                b1, b2 = optimizer.beta_1, optimizer.beta_2
                first[i] += (g - first[i]) * (1 - b1)
                second[i] += (g.astype(np.float64) ** 2 - second[i]) * (1 - b2)
                alpha = rate * np.sqrt(1 - b2**t) / (1 - b1**t)
                w[i] -= alpha * first[i] / (np.sqrt(second[i]) + optimizer.epsilon)
            elif optimizer.momentum:
                first[i] = optimizer.momentum * first[i] - rate * g
                w[i] += optimizer.momentum * first[i] - rate * g if optimizer.nesterov else first[i]
            else:
                w[i] -= rate * g
    return w


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_fused_step_computes_the_keras_update_rule(name: str, compiled: bool) -> None:
    fused_vars, keras_vars = _variables(0), _variables(0)
    fused_opt, keras_opt = OPTIMIZERS[name](), OPTIMIZERS[name]()
    fused_opt.build(fused_vars)
    keras_opt.build(keras_vars)
    apply, fused = make_apply(fused_opt, fused_vars)
    assert fused
    step = tf.function(apply, autograph=False) if compiled else apply
    rng = np.random.default_rng(1)
    all_gradients = []
    for rate in RATES:
        gradients = _gradients(rng)
        all_gradients.append([g.numpy() for g in gradients])
        fused_opt.learning_rate.assign(rate)
        keras_opt.learning_rate.assign(rate)
        step(gradients)
        keras_opt.apply(gradients, keras_vars)
    expected = _float64_steps(fused_opt, [v.numpy() for v in _variables(0)], all_gradients)
    for got, keras_got, want in zip(fused_vars, keras_vars, expected, strict=True):
        # Both are float32 chains of the same formula; the fused kernel rounds less (Keras's op
        # chain is ~2e-6 off the float64 value after 5 Adam steps, the kernel ~4e-7).
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
        np.testing.assert_allclose(keras_got.numpy(), want, rtol=0, atol=5e-6)
    # Slots and step counter too: a range test restores them, the next step depends on them.
    assert int(fused_opt.iterations.numpy()) == int(keras_opt.iterations.numpy()) == len(RATES)
    for got, want in zip(fused_opt.variables, keras_opt.variables, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.AdamW(0.05),
        lambda: keras.optimizers.Adam(0.05, amsgrad=True),
        lambda: keras.optimizers.Adam(0.05, clipnorm=1.0),
        lambda: keras.optimizers.SGD(0.1, weight_decay=0.01),
        lambda: keras.optimizers.RMSprop(0.01),
    ],
    ids=["adamw", "amsgrad", "clipnorm", "sgd_weight_decay", "rmsprop"],
)
def test_anything_else_falls_back_to_the_optimizers_own_apply(
    make: Callable[[], keras.optimizers.Optimizer],
) -> None:
    ours, reference = _variables(2), _variables(2)
    optimizer, reference_opt = make(), make()
    optimizer.build(ours)
    reference_opt.build(reference)
    apply, fused = make_apply(optimizer, ours)
    assert not fused
    gradients = _gradients(np.random.default_rng(3))
    apply(gradients)
    reference_opt.apply(gradients, reference)
    for got, want in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
