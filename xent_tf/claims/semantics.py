"""Measurements of what the Keras cross-entropy losses compute (claims C5-C9, C11).

Every function here measures and returns numbers (frozen dataclasses); none of them decides
whether a claim holds - the claims ledger does that from these numbers. The losses are the
Keras ones the suite trains with, gradients come from ``tf.GradientTape``, and every Keras
number is set against an independent float64 NumPy formula.

Two Keras 3 (TensorFlow backend) behaviours these functions expose:
    * Probabilities produced by ``keras.activations.sigmoid``/``softmax`` (or ``keras.ops``)
      carry their logits (``_keras_logits``), and the TF backend's cross-entropy then uses the
      logits even with ``from_logits=False``, so no clipping happens. Only probabilities
      without that history (computed elsewhere) are clipped to [eps, 1 - eps].
    * ``reduction="sum_over_batch_size"`` divides by the number of non-ignored samples, not by
      the sum of their weights; ``"mean_with_sample_weight"`` divides by the sum of weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from keras import ops

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]

# C5: the tutorial's one-hot label and its two predictions with the same true-class probability.
C5_Y_TRUE: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0)
C5_PREDICTIONS: tuple[tuple[float, ...], ...] = (
    (0.1, 0.5, 0.1, 0.1, 0.2),
    (0.1, 0.6, 0.1, 0.1, 0.1),
)
# C9: confidently wrong (-50, -20), wrong but inside the clip range (-10), and right (10).
C9_LOGITS: tuple[float, ...] = (-50.0, -20.0, -10.0, 10.0)

# Keras computes in float32; comparisons with float64 NumPy use this relative tolerance.
KERAS_RTOL = 1e-5

Normalisation: TypeAlias = Literal[
    "sum", "batch_size", "non_ignored_count", "sum_of_weights_non_ignored"
]


# --------------------------------------------------------------------------- NumPy references


def log_softmax(z: npt.ArrayLike) -> FloatArray:
    """Numerically stable float64 log-softmax over the last axis.

    Args:
        z: Logits, shape ``(..., n)``.

    Returns:
        ``z - logsumexp(z)``, same shape.
    """
    arr = np.asarray(z, dtype=np.float64)
    shifted = arr - arr.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z: npt.ArrayLike) -> FloatArray:
    """Float64 softmax over the last axis (``exp(log_softmax(z))``)."""
    return np.exp(log_softmax(z))


def binary_cross_entropy_from_logits(y: npt.ArrayLike, z: npt.ArrayLike) -> FloatArray:
    """Float64 ``-(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))``, stable for any z.

    Args:
        y: Labels in [0, 1].
        z: Logits, same shape as ``y``.

    Returns:
        Per-element loss ``max(z, 0) - z y + log(1 + exp(-|z|))``.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    z_arr = np.asarray(z, dtype=np.float64)
    return np.maximum(z_arr, 0.0) - z_arr * y_arr + np.log1p(np.exp(-np.abs(z_arr)))


def _to_numpy(x: Any) -> FloatArray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


# --------------------------------------------------------------------------- C5, C6


@dataclass(frozen=True)
class WorkedExample:
    """C5: categorical cross-entropy of each prediction against the same one-hot label.

    Attributes:
        keras_losses: ``CategoricalCrossentropy(from_logits=False)`` per prediction.
        numpy_losses: ``-ln q[true class]`` per prediction, float64.
    """

    y_true: tuple[float, ...]
    predictions: tuple[tuple[float, ...], ...]
    keras_losses: tuple[float, ...]
    numpy_losses: tuple[float, ...]


def _check_predictions(
    y_true: Sequence[float], predictions: Sequence[Sequence[float]]
) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(y_true, dtype=np.float64)
    q = np.asarray(predictions, dtype=np.float64)
    if y.ndim != 1 or q.ndim != 2 or q.shape[1] != y.shape[0]:
        raise ValueError(
            f"y_true must be one label of shape (n,) and predictions shape (k, n); "
            f"got {y.shape} and {q.shape}"
        )
    if np.any(q <= 0):
        # C6 takes logits = log q, which needs q > 0.
        raise ValueError(f"predictions must be strictly positive; got min {q.min()}")
    if not np.allclose(q.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError(f"each prediction must sum to 1; got sums {q.sum(axis=1).tolist()}")
    return y, q


def worked_example(
    y_true: Sequence[float] = C5_Y_TRUE,
    predictions: Sequence[Sequence[float]] = C5_PREDICTIONS,
) -> WorkedExample:
    """Computes the C5 losses with Keras (from probabilities) and with NumPy.

    Args:
        y_true: One-hot label, shape ``(n,)``.
        predictions: Predicted distributions, shape ``(k, n)``.

    Returns:
        The per-prediction losses.
    """
    y, q = _check_predictions(y_true, predictions)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=False, reduction="none")
    y_batch = np.broadcast_to(y, q.shape).astype(np.float32)
    keras_losses = _to_numpy(loss_fn(y_batch, q.astype(np.float32)))
    numpy_losses = -(np.log(q) * y).sum(axis=1)
    return WorkedExample(
        y_true=tuple(float(v) for v in y),
        predictions=tuple(tuple(float(v) for v in row) for row in q),
        keras_losses=tuple(float(v) for v in keras_losses),
        numpy_losses=tuple(float(v) for v in numpy_losses),
    )


@dataclass(frozen=True)
class LogitGradients:
    """C6: gradient of categorical cross-entropy with respect to the logits.

    Attributes:
        logits: ``log q`` for each prediction (softmax of it gives q back), shape ``(k, n)``.
        losses: Keras loss per prediction.
        keras_gradients: ``d loss / d logits`` from GradientTape, shape ``(k, n)``.
        numpy_gradients: ``softmax(z) - y`` in float64, shape ``(k, n)``.
        max_abs_error_vs_numpy: Largest ``|keras - numpy|`` entry.
        max_abs_gradient_difference: Largest entry of ``|grad_i - grad_0|`` over predictions i.
        max_abs_loss_difference: Largest ``|loss_i - loss_0|`` over predictions i.
    """

    logits: FloatArray
    losses: tuple[float, ...]
    keras_gradients: FloatArray
    numpy_gradients: FloatArray
    max_abs_error_vs_numpy: float
    max_abs_gradient_difference: float
    max_abs_loss_difference: float


def logit_gradients(
    y_true: Sequence[float] = C5_Y_TRUE,
    predictions: Sequence[Sequence[float]] = C5_PREDICTIONS,
) -> LogitGradients:
    """Differentiates ``CategoricalCrossentropy(from_logits=True)`` at ``z = log q``.

    Args:
        y_true: One-hot label, shape ``(n,)``.
        predictions: Predicted distributions (all entries > 0), shape ``(k, n)``.

    Returns:
        Keras and NumPy gradients and how much they differ between predictions.
    """
    y, q = _check_predictions(y_true, predictions)
    z = np.log(q)
    # Summing per-sample losses makes each row's gradient that sample's own (not divided by k).
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")
    y_batch = tf.constant(np.broadcast_to(y, q.shape), dtype=tf.float32)
    z_var = tf.Variable(z.astype(np.float32))
    with tf.GradientTape() as tape:
        per_sample = loss_fn(y_batch, z_var)
        total = tf.reduce_sum(per_sample)
    keras_grad = _to_numpy(tape.gradient(total, z_var))
    numpy_grad = softmax(z) - y
    losses = _to_numpy(per_sample)
    return LogitGradients(
        logits=z,
        losses=tuple(float(v) for v in losses),
        keras_gradients=keras_grad,
        numpy_gradients=numpy_grad,
        max_abs_error_vs_numpy=float(np.max(np.abs(keras_grad - numpy_grad))),
        max_abs_gradient_difference=float(np.max(np.abs(keras_grad - keras_grad[0]))),
        max_abs_loss_difference=float(np.max(np.abs(losses - losses[0]))),
    )


# --------------------------------------------------------------------------- C7


def _random_logits(
    n_samples: int, n_classes: int, seed: int, scale: float
) -> tuple[FloatArray, IntArray]:
    if n_samples < 1 or n_classes < 2:
        raise ValueError(
            f"need n_samples >= 1 and n_classes >= 2; got n_samples={n_samples}, "
            f"n_classes={n_classes}"
        )
    rng = np.random.default_rng(seed)
    # Round to float32 first so Keras and NumPy see exactly the same logits.
    z = (scale * rng.standard_normal((n_samples, n_classes))).astype(np.float32)
    y = rng.integers(0, n_classes, size=n_samples)
    return z.astype(np.float64), y.astype(np.int64)


@dataclass(frozen=True)
class LogSoftmaxAgreement:
    """C7: Keras cross-entropy from logits against ``-log_softmax(z)[y]`` in NumPy.

    Attributes:
        max_abs_diff_categorical: ``CategoricalCrossentropy(from_logits=True)`` on one-hot y.
        max_abs_diff_sparse: ``SparseCategoricalCrossentropy(from_logits=True)`` on indices.
        max_abs_diff_keras_log_softmax: ``-keras.ops.log_softmax(z)[y]`` (same float32 maths).
        max_abs_nll: Largest NumPy NLL, for scale.
    """

    n_samples: int
    n_classes: int
    max_abs_diff_categorical: float
    max_abs_diff_sparse: float
    max_abs_diff_keras_log_softmax: float
    max_abs_nll: float


def logits_vs_log_softmax(
    n_samples: int = 256, n_classes: int = 5, seed: int = 0, scale: float = 3.0
) -> LogSoftmaxAgreement:
    """Compares per-sample Keras CE from logits with the NLL of log-softmax at the true class.

    Args:
        n_samples: Number of random logit vectors.
        n_classes: Number of classes.
        seed: Seed of the NumPy generator drawing logits ``~ N(0, scale^2)`` and labels.
        scale: Standard deviation of the logits.

    Returns:
        Largest absolute differences per Keras path.
    """
    z, y = _random_logits(n_samples, n_classes, seed, scale)
    nll = -log_softmax(z)[np.arange(n_samples), y]
    z32 = z.astype(np.float32)
    one_hot = np.eye(n_classes, dtype=np.float32)[y]
    cce = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="none")
    scce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    keras_ls = _to_numpy(keras.ops.log_softmax(z32, axis=-1))
    return LogSoftmaxAgreement(
        n_samples=n_samples,
        n_classes=n_classes,
        max_abs_diff_categorical=float(np.max(np.abs(_to_numpy(cce(one_hot, z32)) - nll))),
        max_abs_diff_sparse=float(np.max(np.abs(_to_numpy(scce(y, z32)) - nll))),
        max_abs_diff_keras_log_softmax=float(
            np.max(np.abs(-keras_ls[np.arange(n_samples), y] - nll))
        ),
        max_abs_nll=float(np.max(nll)),
    )


@dataclass(frozen=True)
class WeightedReduction:
    """C7: how Keras reduces weighted, partly ignored sparse cross-entropy, next to PyTorch.

    Attributes:
        class_weight: Per-class weights; each sample gets ``sample_weight = class_weight[y]``.
        ignore_class: Label whose samples Keras (``ignore_class``) and PyTorch
            (``ignore_index``) leave out.
        n_ignored: Number of samples carrying that label.
        max_abs_diff_none: Keras ``reduction="none"`` vs NumPy ``w[y] * nll * not_ignored``.
        keras_values: Keras value per reduction (``"sum"``, ``"sum_over_batch_size"`` and, when the
            installed Keras has it, ``"mean_with_sample_weight"``).
        candidates: ``sum_n w[y_n] nll_n`` over non-ignored samples divided by: 1 (``"sum"``),
            N (``"batch_size"``), the number of non-ignored samples (``"non_ignored_count"``),
            or the sum of their weights (``"sum_of_weights_non_ignored"``, PyTorch's mean).
        matched: Per Keras reduction, the candidate normalisations it equals within rtol.
        logits / labels: the batch itself (float32 logits, int labels), so another framework
            can be run on exactly the same tensors (``torch_reference``).
        keras_per_sample: Keras's ``reduction="none"`` losses (0 where ignored).
        keras_label_smoothing: Keras's unweighted mean CE per label-smoothing value.
    """

    n_samples: int
    n_classes: int
    class_weight: tuple[float, ...]
    ignore_class: int | None
    n_ignored: int
    max_abs_diff_none: float
    keras_values: Mapping[str, float]
    candidates: Mapping[Normalisation, float]
    matched: Mapping[str, tuple[Normalisation, ...]]
    logits: FloatArray
    labels: npt.NDArray[np.int64]
    keras_per_sample: FloatArray
    keras_label_smoothing: Mapping[float, float]


LABEL_SMOOTHING = (0.0, 0.1)  # C7: unweighted mean CE with and without label smoothing


@dataclass(frozen=True)
class TorchValues:
    """C7: what PyTorch itself computes on a ``WeightedReduction``'s batch.

    Attributes:
        version: ``torch.__version__``.
        per_sample: ``F.cross_entropy(..., weight, ignore_index, reduction="none")``.
        reductions: ``F.cross_entropy`` with weight and ignore_index, per reduction
            ("none" summed, "sum", "mean").
        nll_of_log_softmax: ``F.nll_loss(F.log_softmax(z), y, weight, ignore_index)`` per
            reduction ("sum", "mean").
        label_smoothing: unweighted mean ``F.cross_entropy(z, y, label_smoothing=eps)``.
    """

    version: str
    per_sample: FloatArray
    reductions: Mapping[str, float]
    nll_of_log_softmax: Mapping[str, float]
    label_smoothing: Mapping[float, float]


def torch_reference(batch: WeightedReduction) -> TorchValues | str:
    """Runs PyTorch's own cross-entropy functions on the batch Keras was measured on.

    Args:
        batch: the measured batch (its logits, labels, class weights and ignored class).

    Returns:
        PyTorch's values, or why they could not be measured (torch not installed: the
        ``reference`` extra, ``make install-reference``).
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as error:
        return f"not measured (PyTorch not installed: {error}; make install-reference)"
    z = torch.tensor(batch.logits, dtype=torch.float64)
    y = torch.tensor(batch.labels, dtype=torch.int64)
    w = torch.tensor(batch.class_weight, dtype=torch.float64)
    ignore = -100 if batch.ignore_class is None else batch.ignore_class

    def ce(reduction: str) -> Any:
        return F.cross_entropy(z, y, weight=w, ignore_index=ignore, reduction=reduction)

    def nll(reduction: str) -> float:
        log_q = F.log_softmax(z, dim=1)
        return float(F.nll_loss(log_q, y, weight=w, ignore_index=ignore, reduction=reduction))

    per_sample = ce("none").numpy()
    return TorchValues(
        version=str(torch.__version__),
        per_sample=np.asarray(per_sample, dtype=np.float64),
        reductions={
            "none": float(per_sample.sum()),
            "sum": float(ce("sum")),
            "mean": float(ce("mean")),
        },
        nll_of_log_softmax={r: nll(r) for r in ("sum", "mean")},
        label_smoothing={
            eps: float(F.cross_entropy(z, y, label_smoothing=eps)) for eps in LABEL_SMOOTHING
        },
    )


def _keras_reductions() -> tuple[str, ...]:
    """Reductions the installed Keras accepts ("mean_with_sample_weight" is recent)."""
    names = ["sum", "sum_over_batch_size"]
    try:
        keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
        names.append("mean_with_sample_weight")
    except ValueError:
        pass
    return tuple(names)


def weighted_reduction_semantics(
    n_samples: int = 64,
    n_classes: int = 5,
    ignore_class: int | None = 0,
    class_weight: Sequence[float] | None = None,
    seed: int = 0,
    rtol: float = KERAS_RTOL,
) -> WeightedReduction:
    """Measures which normalisation each Keras reduction uses for a weighted, masked mean.

    Args:
        n_samples: Batch size N.
        n_classes: Number of classes.
        ignore_class: Class index to ignore, or None for no ignored class.
        class_weight: Per-class weights; random in [0.2, 5] (seeded) if None. Non-uniform
            weights and some ignored samples are what make the candidates distinguishable.
        seed: Seed of the NumPy generator for logits, labels and weights.
        rtol: Relative tolerance for calling a Keras value equal to a candidate.

    Returns:
        The Keras values, the candidate normalisations, PyTorch's, and which ones matched.
    """
    z, y = _random_logits(n_samples, n_classes, seed, scale=2.0)
    if ignore_class is not None and not 0 <= ignore_class < n_classes:
        raise ValueError(
            f"ignore_class must be in [0, {n_classes - 1}] or None; got {ignore_class}"
        )
    rng = np.random.default_rng(seed + 1)
    if class_weight is None:
        w = rng.uniform(0.2, 5.0, size=n_classes)
    else:
        w = np.asarray(class_weight, dtype=np.float64)
        if w.shape != (n_classes,) or np.any(w < 0):
            raise ValueError(
                f"class_weight must be {n_classes} non-negative numbers; got {list(w)}"
            )
    # Keras weights are float32; use the rounded weights in NumPy too.
    w = w.astype(np.float32).astype(np.float64)
    valid = np.ones(n_samples, dtype=bool) if ignore_class is None else y != ignore_class
    sample_weight = w[y]
    nll = -log_softmax(z)[np.arange(n_samples), y]
    weighted = np.where(valid, sample_weight * nll, 0.0)
    total = float(weighted.sum())
    candidates: dict[Normalisation, float] = {
        "sum": total,
        "batch_size": total / n_samples,
        "non_ignored_count": total / max(int(valid.sum()), 1),
        "sum_of_weights_non_ignored": total / float(sample_weight[valid].sum()),
    }

    def loss(reduction: str) -> Any:
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore_class, reduction=reduction
        )(y, z.astype(np.float32), sample_weight=sample_weight.astype(np.float32))

    per_sample = _to_numpy(loss("none"))
    keras_values = {name: float(_to_numpy(loss(name))) for name in _keras_reductions()}
    matched = {
        name: tuple(
            cand
            for cand, ref in candidates.items()
            if math.isclose(value, ref, rel_tol=rtol, abs_tol=1e-12)
        )
        for name, value in keras_values.items()
    }
    smoothing = {}
    for eps in LABEL_SMOOTHING:
        value = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=eps)(
            np.eye(n_classes, dtype=np.float32)[y], z.astype(np.float32)
        )
        smoothing[eps] = float(_to_numpy(value))
    return WeightedReduction(
        n_samples=n_samples,
        n_classes=n_classes,
        class_weight=tuple(float(v) for v in w),
        ignore_class=ignore_class,
        n_ignored=int((~valid).sum()),
        max_abs_diff_none=float(np.max(np.abs(per_sample - weighted))),
        keras_values=keras_values,
        candidates=candidates,
        matched=matched,
        logits=z.astype(np.float32).astype(np.float64),
        labels=np.asarray(y, dtype=np.int64),
        keras_per_sample=np.asarray(per_sample, dtype=np.float64),
        keras_label_smoothing=smoothing,
    )


# --------------------------------------------------------------------------- C8


@dataclass(frozen=True)
class BinaryAsTwoClass:
    """C8: sigmoid + binary CE against softmax over ``[0, z]`` + categorical CE.

    Attributes:
        dtype: Dtype Keras computed in.
        max_abs_diff_from_logits: BCE(from_logits) on z vs CCE(from_logits) on ``[0, z]``.
        max_abs_diff_from_probabilities: BCE on sigmoid(z) vs CCE on softmax([0, z]), both
            given as plain probabilities (so both are clipped to [eps, 1 - eps]).
        max_abs_error_vs_numpy: Keras BCE from logits vs the float64 NumPy formula.
        max_loss: Largest per-sample loss, for scale.
    """

    n_samples: int
    dtype: str
    max_abs_diff_from_logits: float
    max_abs_diff_from_probabilities: float
    max_abs_error_vs_numpy: float
    max_loss: float


def binary_as_two_class(
    n_samples: int = 1000,
    seed: int = 0,
    scale: float = 4.0,
    dtype: Literal["float32", "float64"] = "float32",
) -> BinaryAsTwoClass:
    """Compares the binary and two-class formulations over random logits and labels.

    Args:
        n_samples: Number of (z, y) pairs.
        seed: Seed of the NumPy generator; ``z ~ N(0, scale^2)``, ``y ~ Bernoulli(0.5)``.
        scale: Standard deviation of the logits.
        dtype: Dtype of the Keras losses (the suite trains in float32).

    Returns:
        Largest absolute differences between the formulations.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}")
    rng = np.random.default_rng(seed)
    z = (scale * rng.standard_normal(n_samples)).astype(dtype)
    y = rng.integers(0, 2, size=n_samples)
    y_col = y[:, None].astype(dtype)
    z_col = z[:, None]
    two_logits = np.concatenate([np.zeros_like(z_col), z_col], axis=1)
    one_hot = np.eye(2, dtype=dtype)[y]

    def bce(from_logits: bool) -> Any:
        return keras.losses.BinaryCrossentropy(
            from_logits=from_logits, reduction="none", dtype=dtype
        )

    def cce(from_logits: bool) -> Any:
        return keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, reduction="none", dtype=dtype
        )

    bce_logits = _to_numpy(bce(True)(y_col, z_col))
    cce_logits = _to_numpy(cce(True)(one_hot, two_logits))
    # NumPy arrays carry no cached logits, so these really go through the clipped path.
    p = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    bce_probs = _to_numpy(bce(False)(y_col, p[:, None].astype(dtype)))
    cce_probs = _to_numpy(cce(False)(one_hot, softmax(two_logits).astype(dtype)))
    reference = binary_cross_entropy_from_logits(y, z)
    return BinaryAsTwoClass(
        n_samples=n_samples,
        dtype=dtype,
        max_abs_diff_from_logits=float(np.max(np.abs(bce_logits - cce_logits))),
        max_abs_diff_from_probabilities=float(np.max(np.abs(bce_probs - cce_probs))),
        max_abs_error_vs_numpy=float(np.max(np.abs(bce_logits - reference))),
        max_loss=float(np.max(reference)),
    )


# --------------------------------------------------------------------------- C9


@dataclass(frozen=True)
class ClippingPoint:
    """C9: binary CE and ``d loss / d z`` at one logit, three ways.

    Attributes:
        logit: z.
        label: y.
        exact_loss: Float64 ``softplus(-z)`` (for y = 1), the value no clipping would give.
        loss_clipped / grad_clipped: From plain probabilities ``sigmoid(z)`` with
            ``from_logits=False`` (Keras clips them to [eps, 1 - eps]).
        loss_keras_sigmoid / grad_keras_sigmoid: From ``keras.activations.sigmoid(z)`` with
            ``from_logits=False``, as a model with a sigmoid output layer feeds the loss.
        loss_logits / grad_logits: ``from_logits=True`` on z.
    """

    logit: float
    label: float
    exact_loss: float
    loss_clipped: float
    grad_clipped: float
    loss_keras_sigmoid: float
    grad_keras_sigmoid: float
    loss_logits: float
    grad_logits: float


@dataclass(frozen=True)
class ClippingEffect:
    """C9: all points plus the cap that clipping implies.

    Attributes:
        epsilon: ``keras.config.epsilon()``, the clip margin.
        loss_cap: ``-ln(epsilon)``, the largest loss clipped probabilities can give.
    """

    epsilon: float
    loss_cap: float
    points: tuple[ClippingPoint, ...]


def _loss_and_grad(fn: Any, z: float) -> tuple[float, float]:
    z_var = tf.Variable([[z]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = fn(z_var)
    grad = tape.gradient(loss, z_var)
    return float(_to_numpy(loss)), float(_to_numpy(grad).reshape(-1)[0])


def clipping_effect(logits: Sequence[float] = C9_LOGITS, label: float = 1.0) -> ClippingEffect:
    """Measures BCE loss and gradient w.r.t. the logit from probabilities and from logits.

    Args:
        logits: Logits z to probe.
        label: Binary label y (0 or 1) for every point.

    Returns:
        Loss and gradient per logit for the clipped, Keras-sigmoid and logit paths.
    """
    if label not in (0.0, 1.0):
        raise ValueError(f"label must be 0 or 1; got {label}")
    y = tf.constant([[label]], dtype=tf.float32)
    from_probs = keras.losses.BinaryCrossentropy(from_logits=False)
    from_logits = keras.losses.BinaryCrossentropy(from_logits=True)

    def clipped(z: Any) -> Any:
        # tf.math.sigmoid sets no cached logits, and tf.identity hides the Sigmoid op that the
        # TF backend would otherwise trace back to the logits inside a tf.function.
        return from_probs(y, tf.identity(tf.math.sigmoid(z)))

    def keras_sigmoid(z: Any) -> Any:
        return from_probs(y, keras.activations.sigmoid(z))

    def logit_path(z: Any) -> Any:
        return from_logits(y, z)

    points = []
    for z in logits:
        loss_c, grad_c = _loss_and_grad(clipped, float(z))
        loss_k, grad_k = _loss_and_grad(keras_sigmoid, float(z))
        loss_l, grad_l = _loss_and_grad(logit_path, float(z))
        exact = float(binary_cross_entropy_from_logits(label, z))
        points.append(
            ClippingPoint(
                logit=float(z),
                label=float(label),
                exact_loss=exact,
                loss_clipped=loss_c,
                grad_clipped=grad_c,
                loss_keras_sigmoid=loss_k,
                grad_keras_sigmoid=grad_k,
                loss_logits=loss_l,
                grad_logits=grad_l,
            )
        )
    epsilon = float(keras.config.epsilon())
    return ClippingEffect(epsilon=epsilon, loss_cap=-math.log(epsilon), points=tuple(points))


# --------------------------------------------------------------------------- C11


def small_classification(
    n_samples: int = 300, n_features: int = 8, seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Standardised binary ``make_classification`` data for the C11 probes.

    Args:
        n_samples: Number of rows.
        n_features: Number of features (half of them informative).
        seed: ``random_state`` of make_classification.

    Returns:
        ``x`` of shape ``(n_samples, n_features)`` and ``y`` of shape ``(n_samples, 1)``, float32.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_redundant=0,
        random_state=seed,
    )
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype(np.float32), y.reshape(-1, 1).astype(np.float32)


@keras.saving.register_keras_serializable(package="xent_tf")
class StepActivation(keras.layers.Layer):
    """Heaviside step ``1[x > 0]``.

    The comparison has no gradient in TensorFlow, so GradientTape returns None for every
    weight before this layer: nothing can flow back through a step.
    """

    def call(self, inputs: Any) -> Any:
        return ops.cast(ops.greater(inputs, 0.0), inputs.dtype)


def build_tiny_mlp(
    n_features: int,
    hidden_units: int = 16,
    activation: Literal["step", "sigmoid", "relu"] = "sigmoid",
    n_outputs: int = 1,
    seed: int = 0,
) -> keras.Model:
    """Input -> Dense(hidden) -> activation -> Dense(n_outputs, sigmoid or softmax).

    Args:
        n_features: Input width.
        hidden_units: Width of the hidden layer.
        activation: Hidden activation; ``"step"`` uses ``StepActivation``.
        n_outputs: 1 for a sigmoid head, >= 2 for a softmax head.
        seed: Seed of the Glorot initialisers, so two activations start from the same weights.

    Returns:
        An uncompiled Functional model.
    """
    if activation not in ("step", "sigmoid", "relu"):
        raise ValueError(f"activation must be 'step', 'sigmoid' or 'relu'; got {activation!r}")
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1; got {n_outputs}")
    inputs = keras.Input(shape=(n_features,), name="x")
    h = keras.layers.Dense(
        hidden_units,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name="hidden",
    )(inputs)
    h = (
        StepActivation(name="step")(h)
        if activation == "step"
        else keras.layers.Activation(activation, name=activation)(h)
    )
    outputs = keras.layers.Dense(
        n_outputs,
        activation="sigmoid" if n_outputs == 1 else "softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
        name="head",
    )(h)
    return keras.Model(inputs, outputs, name=f"tiny_mlp_{activation}")


def _accuracy(model: keras.Model, x: Any, y: Any) -> Any:
    """Thresholded (1 output) or argmax (several outputs) accuracy as a tensor."""
    pred = model(x, training=False)
    if pred.shape[-1] == 1:
        hit = ops.equal(ops.cast(ops.greater(pred, 0.5), "float32"), y)
    else:
        hit = ops.equal(ops.argmax(pred, axis=-1), ops.cast(ops.reshape(y, (-1,)), "int64"))
    return ops.mean(ops.cast(hit, "float32"))


def _sign_accuracy(model: keras.Model, x: Any, y: Any) -> Any:
    """Accuracy through sign(), whose gradient TF defines as 0 (not None). 1 output only."""
    pred = model(x, training=False)
    predicted = 0.5 * (ops.sign(pred - 0.5) + 1.0)
    # |predicted - y| is 0 for a hit and 1 for a miss.
    return 1.0 - ops.mean(ops.abs(predicted - y))


@dataclass(frozen=True)
class AccuracyGradients:
    """C11: gradients of accuracy vs of the loss, per trainable weight.

    Attributes:
        weight_names: Trainable weight paths.
        accuracy_gradient_is_none: True where GradientTape returned None for accuracy.
        sign_accuracy_gradient_max_abs: Max |grad| of the sign-based accuracy (one-output
            models; empty otherwise) - the gradient exists and is zero.
        loss_gradient_max_abs: Max |grad| of the cross-entropy, for contrast.
        perturbations_changing_accuracy: Of ``n_perturbations`` random weight perturbations of
            relative size ``perturbation``, how many changed the accuracy at all.
    """

    accuracy: float
    loss: float
    weight_names: tuple[str, ...]
    accuracy_gradient_is_none: tuple[bool, ...]
    sign_accuracy_gradient_max_abs: tuple[float, ...]
    loss_gradient_max_abs: tuple[float, ...]
    n_perturbations: int
    perturbation: float
    perturbations_changing_accuracy: int


def accuracy_gradients(
    model: keras.Model,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    n_perturbations: int = 20,
    perturbation: float = 1e-4,
    seed: int = 0,
) -> AccuracyGradients:
    """Differentiates accuracy and cross-entropy of ``model`` with respect to its weights.

    Args:
        model: Sigmoid (1 output) or softmax (>= 2 outputs) classifier.
        x: Inputs.
        y: Integer labels, shape ``(N, 1)``.
        n_perturbations: Number of random weight perturbations for the finite-difference probe.
        perturbation: Relative size of each perturbation (times the weight's std, or 1).
        seed: Seed of the perturbations.

    Returns:
        Per-weight gradient summaries and the finite-difference count.
    """
    x_t = tf.constant(np.asarray(x, dtype=np.float32))
    y_t = tf.constant(np.asarray(y, dtype=np.float32).reshape(-1, 1))
    weights = list(model.trainable_weights)
    binary = model.outputs[0].shape[-1] == 1
    loss_fn = (
        keras.losses.BinaryCrossentropy()
        if binary
        else keras.losses.SparseCategoricalCrossentropy()
    )
    with tf.GradientTape(persistent=True) as tape:
        acc = _accuracy(model, x_t, y_t)
        sign_acc = _sign_accuracy(model, x_t, y_t) if binary else None
        loss = loss_fn(y_t, model(x_t, training=False))
    acc_grads = tape.gradient(acc, weights)
    loss_grads = tape.gradient(loss, weights)
    sign_grads = tape.gradient(sign_acc, weights) if sign_acc is not None else []
    del tape

    def max_abs(g: Any) -> float:
        return float("nan") if g is None else float(np.max(np.abs(_to_numpy(g))))

    base_acc = float(_to_numpy(acc))
    rng = np.random.default_rng(seed)
    originals = [w.numpy() for w in weights]
    changed = 0
    try:
        for _ in range(n_perturbations):
            for w, orig in zip(weights, originals, strict=True):
                size = perturbation * (float(orig.std()) or 1.0)
                w.assign(orig + size * rng.standard_normal(orig.shape).astype(orig.dtype))
            changed += int(float(_to_numpy(_accuracy(model, x_t, y_t))) != base_acc)
    finally:
        for w, orig in zip(weights, originals, strict=True):
            w.assign(orig)
    return AccuracyGradients(
        accuracy=base_acc,
        loss=float(_to_numpy(loss)),
        weight_names=tuple(w.path for w in weights),
        accuracy_gradient_is_none=tuple(g is None for g in acc_grads),
        sign_accuracy_gradient_max_abs=tuple(max_abs(g) for g in sign_grads),
        loss_gradient_max_abs=tuple(max_abs(g) for g in loss_grads),
        n_perturbations=n_perturbations,
        perturbation=perturbation,
        perturbations_changing_accuracy=changed,
    )


@dataclass(frozen=True)
class TrainingOutcome:
    """C11: one tiny MLP before and after full-batch gradient descent.

    Attributes:
        hidden_gradient_is_none: True if GradientTape gave no gradient for the hidden kernel.
        hidden_kernel_change: Max |change| of the hidden kernel over training.
        head_kernel_change: Max |change| of the output kernel (it still learns after a step).
        n_probes: random perturbations of the hidden kernel (before training).
        probes_changing_loss: how many of them changed the training loss at all (finite
            differences: a step network's loss is flat in its hidden kernel almost everywhere,
            a sigmoid network's is not).
        probe_size: relative size of each perturbation (times the kernel's std).
    """

    activation: str
    loss_before: float
    loss_after: float
    accuracy_before: float
    accuracy_after: float
    hidden_gradient_is_none: bool
    hidden_kernel_change: float
    head_kernel_change: float
    n_probes: int
    probes_changing_loss: int
    probe_size: float


def probes_changing_loss(
    model: keras.Model, x: Any, y: Any, n_probes: int, probe_size: float, seed: int
) -> int:
    """How many random perturbations of the hidden kernel change the training loss at all.

    A finite-difference measurement of whether the loss depends on the hidden weights: it
    does not rely on GradientTape (which returns None through a step), so it could come out
    either way. The kernel is restored afterwards.
    """
    loss_fn = keras.losses.BinaryCrossentropy()
    kernel = model.get_layer("hidden").kernel
    original = kernel.numpy().copy()
    base = float(_to_numpy(loss_fn(y, model(x, training=False))))
    rng = np.random.default_rng(seed)
    size = probe_size * (float(original.std()) or 1.0)
    changed = 0
    try:
        for _ in range(n_probes):
            kernel.assign(
                original + size * rng.standard_normal(original.shape).astype(original.dtype)
            )
            changed += int(float(_to_numpy(loss_fn(y, model(x, training=False)))) != base)
    finally:
        kernel.assign(original)
    return changed


def _train_full_batch(
    model: keras.Model, x: Any, y: Any, n_steps: int, learning_rate: float
) -> tuple[float, float, bool]:
    """Runs n_steps of full-batch SGD; returns (loss before, loss after, hidden grad is None)."""
    loss_fn = keras.losses.BinaryCrossentropy()
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    weights = list(model.trainable_weights)
    optimizer.build(weights)
    hidden_kernel = model.get_layer("hidden").kernel
    with tf.GradientTape() as tape:
        probe_loss = loss_fn(y, model(x, training=True))
    hidden_none = tape.gradient(probe_loss, hidden_kernel) is None

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, weights)
        # Keras would drop None gradients with a warning; make "no gradient" an explicit zero.
        grads = [tf.zeros_like(w) if g is None else g for g, w in zip(grads, weights, strict=True)]
        optimizer.apply_gradients(zip(grads, weights, strict=True))
        return loss

    for _ in range(n_steps):
        step()
    loss_after = float(_to_numpy(loss_fn(y, model(x, training=False))))
    return float(_to_numpy(probe_loss)), loss_after, hidden_none


def step_activation_training(
    n_steps: int = 300,
    learning_rate: float = 0.5,
    n_samples: int = 300,
    n_features: int = 8,
    hidden_units: int = 16,
    seed: int = 0,
    n_probes: int = 20,
    probe_size: float = 1e-4,
) -> dict[str, TrainingOutcome]:
    """Trains the same tiny MLP with a step and with a sigmoid hidden activation (C11).

    Both models start from identical weights (same initialiser seeds) and see the same data.

    Args:
        n_steps: Full-batch SGD steps.
        learning_rate: SGD learning rate.
        n_samples: Rows of make_classification data.
        n_features: Input features.
        hidden_units: Hidden width.
        seed: Seed of the data and of the initialisers.
        n_probes: finite-difference probes of the loss in the hidden kernel, before training.
        probe_size: their relative size.

    Returns:
        ``{"step": ..., "sigmoid": ...}`` outcomes.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0; got {n_steps}")
    x_np, y_np = small_classification(n_samples, n_features, seed)
    x = tf.constant(x_np)
    y = tf.constant(y_np)
    outcomes: dict[str, TrainingOutcome] = {}
    for activation in ("step", "sigmoid"):
        model = build_tiny_mlp(n_features, hidden_units, activation, seed=seed)
        hidden0 = model.get_layer("hidden").kernel.numpy().copy()
        head0 = model.get_layer("head").kernel.numpy().copy()
        acc_before = float(_to_numpy(_accuracy(model, x, y)))
        changed = probes_changing_loss(model, x, y, n_probes, probe_size, seed)
        loss_before, loss_after, hidden_none = _train_full_batch(
            model, x, y, n_steps, learning_rate
        )
        outcomes[activation] = TrainingOutcome(
            activation=activation,
            loss_before=loss_before,
            loss_after=loss_after,
            accuracy_before=acc_before,
            accuracy_after=float(_to_numpy(_accuracy(model, x, y))),
            hidden_gradient_is_none=hidden_none,
            hidden_kernel_change=float(
                np.max(np.abs(model.get_layer("hidden").kernel.numpy() - hidden0))
            ),
            head_kernel_change=float(
                np.max(np.abs(model.get_layer("head").kernel.numpy() - head0))
            ),
            n_probes=n_probes,
            probes_changing_loss=changed,
            probe_size=probe_size,
        )
    return outcomes
