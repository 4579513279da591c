"""Optimizer steps as TensorFlow's fused training kernels, for the Keras optimizers the suite uses.

Keras 3 builds every update out of element-wise ops (about 15 per variable for Adam), routed
through ``tf.distribute``'s merge call. On the suite's tiny models those ops, not the maths, are
the cost of a step: tracing them took 0.35 s of a 1.4 s run, and they are most of the graph
nodes executed per step. TensorFlow ships one kernel per update rule that computes exactly the
same formula (``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``,
``ResourceApplyGradientDescent``), reading and writing the Keras optimizer's own slot variables.

``make_apply`` returns such a fused step when the optimizer is a plain Keras Adam or SGD (no
weight decay, clipping, EMA, gradient accumulation, loss scaling or AMSGrad), and the
optimizer's own ``apply`` for anything else, so behaviour never silently changes: the fused step
is checked against ``optimizer.apply`` in ``tests/test_updates.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

ApplyFn = Callable[[Sequence[tf.Tensor]], None]


def is_plain(optimizer: keras.optimizers.Optimizer) -> bool:
    """True when the optimizer has none of the extras a fused kernel does not do."""
    return (
        not optimizer.weight_decay
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and optimizer.global_clipnorm is None
        and not optimizer.use_ema
        and not optimizer.gradient_accumulation_steps
        and optimizer.loss_scale_factor is None
    )


def _handle(variable: keras.Variable) -> tf.Tensor:
    """The resource handle of a Keras variable's TensorFlow variable."""
    return variable.value.handle


def _adam(optimizer: keras.optimizers.Adam, variables: Sequence[keras.Variable]) -> ApplyFn:
    """Keras Adam's step: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), t = iterations + 1."""
    slots = [
        (
            variable,
            optimizer._momentums[optimizer._get_variable_index(variable)],
            optimizer._velocities[optimizer._get_variable_index(variable)],
        )
        for variable in variables
    ]

    def apply(gradients: Sequence[tf.Tensor]) -> None:
        step = tf.cast(optimizer.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.constant(optimizer.beta_1, tf.float32), step)
        beta_2_power = tf.pow(tf.constant(optimizer.beta_2, tf.float32), step)
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        for (weights, m, v), gradient in zip(slots, gradients, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=_handle(weights),
                m=_handle(m),
                v=_handle(v),
                beta1_power=beta_1_power,
                beta2_power=beta_2_power,
                lr=learning_rate,
                beta1=tf.constant(optimizer.beta_1, tf.float32),
                beta2=tf.constant(optimizer.beta_2, tf.float32),
                epsilon=tf.constant(optimizer.epsilon, tf.float32),
                grad=gradient,
            )
        optimizer.iterations.assign_add(1)

    return apply


def _sgd(optimizer: keras.optimizers.SGD, variables: Sequence[keras.Variable]) -> ApplyFn:
    """Keras SGD's step: w -= lr * g, or with momentum m = momentum * m - lr * g and
    w += m (Nesterov: w += momentum * m - lr * g)."""
    momentums = (
        [optimizer.momentums[optimizer._get_variable_index(v)] for v in variables]
        if optimizer.momentum != 0
        else []
    )

    def apply(gradients: Sequence[tf.Tensor]) -> None:
        learning_rate = tf.cast(optimizer.learning_rate, tf.float32)
        if momentums:
            momentum = tf.constant(optimizer.momentum, tf.float32)
            for weights, accumulator, gradient in zip(variables, momentums, gradients, strict=True):
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=_handle(weights),
                    accum=_handle(accumulator),
                    lr=learning_rate,
                    grad=gradient,
                    momentum=momentum,
                    use_nesterov=optimizer.nesterov,
                )
        else:
            for weights, gradient in zip(variables, gradients, strict=True):
                tf.raw_ops.ResourceApplyGradientDescent(
                    var=_handle(weights), alpha=learning_rate, delta=gradient
                )
        optimizer.iterations.assign_add(1)

    return apply


def make_apply(
    optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable]
) -> tuple[ApplyFn, bool]:
    """The function that applies one step of ``optimizer`` to ``variables``.

    Args:
        optimizer: a built Keras optimizer (``optimizer.build(variables)`` already called).
        variables: the model's trainable variables, in the order gradients will come in.

    Returns:
        (apply(gradients), whether it is a fused kernel). Not fused: ``optimizer.apply``.
    """
    float32 = all(variable.dtype == "float32" for variable in variables)
    # Exact types: a subclass (AdamW is an Adam) may change the update rule.
    if float32 and is_plain(optimizer):
        if type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad:
            return _adam(optimizer, variables), True
        if type(optimizer) is keras.optimizers.SGD:
            return _sgd(optimizer, variables), True

    def apply(gradients: Sequence[tf.Tensor]) -> None:
        optimizer.apply(list(gradients), list(variables))

    return apply, False
