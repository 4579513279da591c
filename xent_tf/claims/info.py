"""Information theory in NumPy: self-information, entropy, cross-entropy, KL (claims C1-C4).

Every function works on float64 arrays whose last axis is a distribution, so a batch of
distributions of shape ``(..., n)`` gives results of shape ``(...)``; a single distribution
gives a Python ``float``.

Conventions:
    * ``0 * log 0 = 0``: outcomes with p = 0 contribute nothing, whatever q is there.
    * ``q = 0`` where ``p > 0`` makes cross-entropy and KL ``+inf`` (no warning).
    * ``base="e"`` gives nats, ``base=2`` gives bits; bits = nats / ln 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Base: TypeAlias = Literal["e", 2]
FloatArray: TypeAlias = npt.NDArray[np.float64]
ArrayLike: TypeAlias = npt.ArrayLike
# A single distribution gives a float; a batch gives one value per distribution.
FloatOrArray: TypeAlias = float | FloatArray

ALLOWED_BASES: tuple[str, int] = ("e", 2)
# Rows that sum to 1 within this are accepted: float32 softmax outputs are off by ~1e-7.
DEFAULT_ATOL = 1e-6
LN2 = math.log(2.0)


def _log_divisor(base: object) -> float:
    """Returns what a natural log is divided by to express it in ``base``."""
    # bool is an int subclass (True == 1); reject it rather than treat it as a number.
    if not isinstance(base, bool):
        if base == "e":
            return 1.0
        if isinstance(base, int | float) and base == 2:
            return LN2
    raise ValueError(
        f"base must be one of {ALLOWED_BASES} ('e' = nats, 2 = bits); got base={base!r}"
    )


def _to_float_array(x: ArrayLike, name: str) -> FloatArray:
    """Converts to float64 and rejects NaN/inf, naming the argument in the error."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric; got {x!r}") from err
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite; found {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )
    return arr


def _scalar_or_array(x: FloatArray) -> FloatOrArray:
    return float(x) if x.ndim == 0 else x


def validate_distribution(
    p: ArrayLike, *, name: str = "p", atol: float = DEFAULT_ATOL
) -> FloatArray:
    """Checks that the last axis of ``p`` holds probability distributions.

    Args:
        p: Array of shape ``(..., n)``, n >= 1.
        name: Name used in error messages.
        atol: Each row must sum to 1 within this absolute tolerance.

    Returns:
        ``p`` as a float64 array.

    Raises:
        ValueError: If ``p`` is not at least 1-D, is empty along the last axis, has NaN/inf or
            negative entries, or has a row whose sum differs from 1 by more than ``atol``.
    """
    if atol < 0:
        raise ValueError(f"atol must be >= 0; got atol={atol}")
    arr = _to_float_array(p, name)
    if arr.ndim == 0:
        raise ValueError(
            f"{name} must have at least one axis (the last axis is the distribution); "
            f"got a scalar {float(arr)}"
        )
    if arr.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one outcome; got shape {arr.shape}")
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ValueError(
            f"{name} has a negative entry {arr[idx]} at index {idx}; probabilities must be >= 0"
        )
    sums = arr.sum(axis=-1)
    off = np.abs(sums - 1.0) > atol
    if np.any(off):
        idx = tuple(int(i) for i in np.argwhere(np.atleast_1d(off))[0])
        row_sum = float(np.atleast_1d(sums)[idx])
        where = "it" if arr.ndim == 1 else f"row {idx[0] if len(idx) == 1 else idx}"
        raise ValueError(
            f"{name} must sum to 1 along the last axis within atol={atol:g}; "
            f"{where} sums to {row_sum:.10g}"
        )
    return arr


def _check_same_shape(p: FloatArray, q: FloatArray) -> None:
    if p.shape != q.shape:
        raise ValueError(
            f"p and q must have the same shape (last axis = distribution); "
            f"got p.shape={p.shape} and q.shape={q.shape}"
        )


def self_information(p: ArrayLike, base: Base = "e") -> FloatOrArray:
    """Information of an event with probability p: ``-log p`` (C1).

    Args:
        p: Probability or array of probabilities, each in [0, 1] (not a distribution: any shape).
        base: ``"e"`` for nats, ``2`` for bits.

    Returns:
        ``-log_base(p)`` elementwise; 0 for p = 1 and ``+inf`` for p = 0.
    """
    divisor = _log_divisor(base)
    arr = _to_float_array(p, "p")
    if np.any((arr < 0) | (arr > 1)):
        idx = tuple(int(i) for i in np.argwhere((arr < 0) | (arr > 1))[0])
        raise ValueError(f"p must be a probability in [0, 1]; got {arr[idx]}")
    with np.errstate(divide="ignore"):
        info = -np.log(arr) / divisor
    # -log(1) is -0.0; report a plain 0.
    return _scalar_or_array(info + 0.0)


def entropy(p: ArrayLike, base: Base = "e", *, atol: float = DEFAULT_ATOL) -> FloatOrArray:
    """Shannon entropy ``H(p) = -sum_i p_i log p_i``, the expected self-information (C2).

    Args:
        p: Distribution(s), shape ``(..., n)``; ``0 * log 0`` is taken as 0.
        base: ``"e"`` for nats, ``2`` for bits.
        atol: Tolerance for rows summing to 1.

    Returns:
        Entropy per distribution, shape ``(...)`` (float for a single distribution).
    """
    divisor = _log_divisor(base)
    arr = validate_distribution(p, name="p", atol=atol)
    # log(1) = 0 stands in where p = 0, so those terms are exactly 0.
    terms = arr * np.log(np.where(arr > 0, arr, 1.0))
    return _scalar_or_array(-terms.sum(axis=-1) / divisor + 0.0)


def cross_entropy(
    p: ArrayLike, q: ArrayLike, base: Base = "e", *, atol: float = DEFAULT_ATOL
) -> FloatOrArray:
    """Cross-entropy ``H(p, q) = -sum_i p_i log q_i`` (C3, C4).

    In bits this is the mean code length for events drawn from p with a code built for q.

    Args:
        p: True distribution(s), shape ``(..., n)``.
        q: Predicted distribution(s), same shape as ``p``.
        base: ``"e"`` for nats, ``2`` for bits.
        atol: Tolerance for rows summing to 1.

    Returns:
        Cross-entropy per row, shape ``(...)``; ``+inf`` where some q_i = 0 with p_i > 0.
    """
    divisor = _log_divisor(base)
    p_arr = validate_distribution(p, name="p", atol=atol)
    q_arr = validate_distribution(q, name="q", atol=atol)
    _check_same_shape(p_arr, q_arr)
    # p_i = 0 terms are 0 even when q_i = 0: the 0 * -inf = nan there is discarded by where.
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_arr > 0, p_arr * np.log(q_arr), 0.0)
    return _scalar_or_array(-terms.sum(axis=-1) / divisor + 0.0)


def kl_divergence(
    p: ArrayLike, q: ArrayLike, base: Base = "e", *, atol: float = DEFAULT_ATOL
) -> FloatOrArray:
    """Kullback-Leibler divergence ``KL(p || q) = sum_i p_i log(p_i / q_i)`` (C3).

    Args:
        p: Reference distribution(s), shape ``(..., n)``.
        q: Approximating distribution(s), same shape as ``p``.
        base: ``"e"`` for nats, ``2`` for bits.
        atol: Tolerance for rows summing to 1.

    Returns:
        KL per row, shape ``(...)``; >= 0, ``+inf`` where some q_i = 0 with p_i > 0.
    """
    divisor = _log_divisor(base)
    p_arr = validate_distribution(p, name="p", atol=atol)
    q_arr = validate_distribution(q, name="q", atol=atol)
    _check_same_shape(p_arr, q_arr)
    positive = p_arr > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(np.where(positive, p_arr, 1.0)) - np.log(q_arr)
        terms = np.where(positive, p_arr * log_ratio, 0.0)
    kl = terms.sum(axis=-1)
    # Rounding can give -1e-17 for p == q; KL is non-negative by Gibbs' inequality.
    return _scalar_or_array(np.maximum(kl, 0.0) / divisor)


def nats_to_bits(x: ArrayLike) -> FloatOrArray:
    """Converts an information quantity from nats to bits (divides by ln 2, C4)."""
    return _scalar_or_array(np.asarray(x, dtype=np.float64) / LN2)


def bits_to_nats(x: ArrayLike) -> FloatOrArray:
    """Converts an information quantity from bits to nats (multiplies by ln 2)."""
    return _scalar_or_array(np.asarray(x, dtype=np.float64) * LN2)


def _validate_labels(labels: ArrayLike, n_classes: int) -> npt.NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices; got dtype {arr.dtype}")
    if np.any((arr < 0) | (arr >= n_classes)):
        bad = int(arr[(arr < 0) | (arr >= n_classes)][0])
        raise ValueError(f"labels must be in [0, {n_classes - 1}]; got {bad}")
    return arr.astype(np.int64)


def empirical_distribution(labels: ArrayLike, n_classes: int) -> FloatArray:
    """Relative frequency of each class among integer labels.

    Args:
        labels: 1-D integer class indices in ``[0, n_classes)``.
        n_classes: Number of classes.

    Returns:
        Distribution of shape ``(n_classes,)``.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1; got {n_classes}")
    arr = _validate_labels(labels, n_classes)
    counts = np.bincount(arr, minlength=n_classes).astype(np.float64)
    return counts / counts.sum()


def mean_negative_log_likelihood(
    labels: ArrayLike, q: ArrayLike, base: Base = "e", *, atol: float = DEFAULT_ATOL
) -> FloatOrArray:
    """Mean of ``-log q[label]`` over labels, for one or a batch of predicted distributions.

    Args:
        labels: 1-D integer class indices, all scored by every distribution in ``q``.
        q: Predicted distribution(s), shape ``(..., n)``.
        base: ``"e"`` for nats, ``2`` for bits.
        atol: Tolerance for rows summing to 1.

    Returns:
        Mean NLL per distribution in ``q``, shape ``(...)``.
    """
    divisor = _log_divisor(base)
    q_arr = validate_distribution(q, name="q", atol=atol)
    arr = _validate_labels(labels, q_arr.shape[-1])
    with np.errstate(divide="ignore"):
        log_q = np.log(q_arr[..., arr])
    return _scalar_or_array(-log_q.mean(axis=-1) / divisor + 0.0)


@dataclass(frozen=True)
class ObjectiveComparison:
    """Three objectives evaluated over the same family of predicted distributions (C3).

    Attributes:
        cross_entropy: ``H(p, q_k)`` for each candidate k.
        kl_divergence: ``KL(p || q_k)`` for each candidate k.
        mean_nll: Mean ``-log q_k[label]`` over the labels, for each candidate k.
        entropy_p: ``H(p)``, the constant gap between cross-entropy and KL.
        argmin_cross_entropy: Index of the candidate with the smallest cross-entropy.
        argmin_kl_divergence: Index of the candidate with the smallest KL.
        argmin_mean_nll: Index of the candidate with the smallest mean NLL.
    """

    cross_entropy: FloatArray
    kl_divergence: FloatArray
    mean_nll: FloatArray
    entropy_p: float
    argmin_cross_entropy: int
    argmin_kl_divergence: int
    argmin_mean_nll: int


def compare_objectives(
    p: ArrayLike,
    candidates: ArrayLike,
    labels: ArrayLike,
    base: Base = "e",
    *,
    atol: float = DEFAULT_ATOL,
) -> ObjectiveComparison:
    """Evaluates cross-entropy, KL and mean NLL of labels over candidate predictions (C3).

    The mean NLL of labels equals the cross-entropy against their empirical distribution, so
    with ``p = empirical_distribution(labels)`` all three argmins coincide exactly; with p the
    distribution the labels were sampled from they coincide once the sample is large enough.

    Args:
        p: Reference distribution, shape ``(n,)``.
        candidates: Family of predicted distributions, shape ``(k, n)``.
        labels: 1-D integer labels (e.g. sampled from p), scored by every candidate.
        base: ``"e"`` for nats, ``2`` for bits.
        atol: Tolerance for rows summing to 1.

    Returns:
        The three objective curves, H(p) and the index of each curve's minimum.
    """
    p_arr = validate_distribution(p, name="p", atol=atol)
    q_arr = validate_distribution(candidates, name="candidates", atol=atol)
    if p_arr.ndim != 1:
        raise ValueError(f"p must be a single distribution (1-D); got shape {p_arr.shape}")
    if q_arr.ndim != 2 or q_arr.shape[-1] != p_arr.shape[0]:
        raise ValueError(
            f"candidates must have shape (k, {p_arr.shape[0]}) to match p; got {q_arr.shape}"
        )
    p_rows = np.broadcast_to(p_arr, q_arr.shape)
    ce = np.asarray(cross_entropy(p_rows, q_arr, base, atol=atol), dtype=np.float64)
    kl = np.asarray(kl_divergence(p_rows, q_arr, base, atol=atol), dtype=np.float64)
    nll = np.asarray(mean_negative_log_likelihood(labels, q_arr, base, atol=atol))
    return ObjectiveComparison(
        cross_entropy=ce,
        kl_divergence=kl,
        mean_nll=nll.astype(np.float64),
        entropy_p=float(entropy(p_arr, base, atol=atol)),
        argmin_cross_entropy=int(np.argmin(ce)),
        argmin_kl_divergence=int(np.argmin(kl)),
        argmin_mean_nll=int(np.argmin(nll)),
    )
