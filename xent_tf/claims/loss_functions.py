"""C5-C9: the loss functions themselves, measured in Keras (and, for C7, in PyTorch)."""

from __future__ import annotations

import math

import numpy as np

from xent_tf.claims import semantics
from xent_tf.claims.comparison import (
    PARTS_RULE,
    Finding,
    Verdict,
    at_least,
    at_most,
    close_to,
    one_match,
)
from xent_tf.claims.records import ClaimResult, claim_result
from xent_tf.claims.registry import rule_float
from xent_tf.claims.studies import ClaimPart

# --- C5-C9: the losses themselves --------------------------------------------------------

C5_STATED = rule_float("C5", "stated_loss")
C5_TOLERANCE = rule_float("C5", "stated_tolerance")  # stated to three decimals
GRADIENT_TOLERANCE = rule_float("C6", "gradient_tolerance")  # float32 gradients
EQUAL_LOSS_TOLERANCE = rule_float("C5", "equal_loss_tolerance")  # float32 Keras losses


def evaluate_c5(m: semantics.WorkedExample) -> ClaimResult:
    """C5: each loss against 2.303, and the two losses equal."""
    parts = [
        ClaimPart(
            f"prediction {list(pred)}",
            close_to(loss, C5_STATED, C5_TOLERANCE, "Keras CCE vs 2.303"),
        )
        for pred, loss in zip(m.predictions, m.keras_losses, strict=True)
    ]
    difference = max(m.keras_losses) - min(m.keras_losses)
    parts.append(
        ClaimPart(
            "exactly the same loss",
            at_most(difference, EQUAL_LOSS_TOLERANCE, "largest difference between the losses"),
        )
    )
    measured = (
        "Keras CCE "
        + ", ".join(f"{v:.6f}" for v in m.keras_losses)
        + "; NumPy -ln q[true] "
        + ", ".join(f"{v:.6f}" for v in m.numpy_losses)
    )
    return claim_result(
        "C5",
        parts,
        measured,
        f"each within ±{C5_TOLERANCE:g} of 2.303 and equal to {EQUAL_LOSS_TOLERANCE:g}; "
        + PARTS_RULE,
    )


def evaluate_c6(m: semantics.LogitGradients) -> ClaimResult:
    """C6: Keras's gradient is softmax(z) - y, and it differs between the two predictions."""
    parts = [
        ClaimPart(
            "the gradient is softmax(z) - y",
            at_most(
                m.max_abs_error_vs_numpy,
                GRADIENT_TOLERANCE,
                "largest |Keras gradient - (softmax(z) - y)|",
            ),
        ),
        ClaimPart(
            "the two predictions' gradients differ",
            at_least(
                m.max_abs_gradient_difference,
                GRADIENT_TOLERANCE,
                "largest difference between the two gradients (beyond float32 noise)",
            ),
        ),
    ]
    grads = "; ".join("[" + ", ".join(f"{v:.2f}" for v in row) + "]" for row in m.keras_gradients)
    measured = (
        f"losses {m.losses[0]:.4f} and {m.losses[1]:.4f}, gradients {grads} "
        f"(max difference {m.max_abs_gradient_difference:.3f})"
    )
    return claim_result(
        "C6",
        parts,
        measured,
        f"Keras gradient = softmax(z) - y within {GRADIENT_TOLERANCE:g} and the two gradients "
        f"differ by >= {GRADIENT_TOLERANCE:g}; " + PARTS_RULE,
    )


NORMALISERS: dict[str, str] = {
    "sum": "1 (a plain sum)",
    "batch_size": "the batch size",
    "non_ignored_count": "the number of non-ignored samples",
    "sum_of_weights_non_ignored": "the sum of the non-ignored samples' weights",
}


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def evaluate_c7(
    agreement: semantics.LogSoftmaxAgreement,
    reduction: semantics.WeightedReduction,
    torch_values: semantics.TorchValues | str,
) -> ClaimResult:
    """C7: CE from logits vs NLL of log-softmax; weights, ignored class, reductions; Keras
    against PyTorch itself on the same tensors.

    Args:
        agreement: Keras CE from logits against NumPy -log_softmax.
        reduction: Keras's reductions of a weighted batch with an ignored class.
        torch_values: PyTorch's values on that batch, or why torch could not be run (then the
            cross-framework parts are "not measured", which caps C7 at inconclusive).
    """
    rtol = rule_float("C7", "relative_tolerance")
    scale = max(agreement.max_abs_nll, 1.0)
    total = max(reduction.candidates["sum"], 1.0)
    keras_sum = reduction.keras_values["sum"]
    keras_mean = reduction.keras_values["sum_over_batch_size"]
    mean_matches = reduction.matched.get("sum_over_batch_size", ())
    parts = [
        ClaimPart(
            "Keras: categorical CE from logits = -log_softmax(z)[y]",
            at_most(
                agreement.max_abs_diff_categorical / scale,
                rtol,
                f"largest relative difference over {agreement.n_samples} random samples",
            ),
        ),
        ClaimPart(
            "Keras: sparse CE from logits = -log_softmax(z)[y]",
            at_most(agreement.max_abs_diff_sparse / scale, rtol, "largest relative difference"),
        ),
        ClaimPart(
            "Keras: class weights + ignored class, reduction none",
            at_most(
                reduction.max_abs_diff_none / total,
                rtol,
                "largest relative |Keras - w[y] nll (0 where ignored)|",
            ),
        ),
        ClaimPart(
            "Keras: reduction sum",
            at_most(
                abs(keras_sum - reduction.candidates["sum"]) / total,
                rtol,
                "relative |Keras sum - sum of weighted losses|",
            ),
        ),
        ClaimPart(
            "Keras: reduction mean (sum_over_batch_size) has one identifiable normaliser",
            one_match(mean_matches, sorted(reduction.candidates)),
        ),
    ]
    normaliser = " or ".join(NORMALISERS[m] for m in mean_matches) or "none of the candidates"
    measured = (
        f"Keras from logits = NLL of log-softmax to {agreement.max_abs_diff_categorical:.2g}; "
        f"weighted ({reduction.n_ignored}/{reduction.n_samples} ignored): Keras mean "
        f"{keras_mean:.4f} divides by {normaliser}"
    )
    if isinstance(torch_values, str):
        cross = [
            "PyTorch: F.cross_entropy = F.nll_loss(F.log_softmax), weighted, ignored class",
            "PyTorch vs Keras: reduction none and sum agree",
            "frameworks differ on the weighted mean",
            "label smoothing: Keras = PyTorch",
        ]
        parts += [
            ClaimPart(c, Finding(Verdict.NOT_MEASURED, "needs PyTorch itself", torch_values))
            for c in cross
        ]
        notes = [
            f"The cross-framework parts were {torch_values}: C7 is inconclusive until they "
            "are measured. Nothing computed by this project stands in for PyTorch."
        ]
        return claim_result(
            "C7",
            parts,
            measured + f"; PyTorch {torch_values}",
            f"relative tolerance {rtol:g}; " + PARTS_RULE,
            notes,
        )
    t = torch_values
    torch_mean = t.reductions["mean"]
    per_sample_gap = float(np.max(np.abs(t.per_sample - reduction.keras_per_sample))) / total
    parts += [
        ClaimPart(
            "PyTorch: F.cross_entropy = F.nll_loss(F.log_softmax), weighted, ignored class",
            at_most(
                max(_relative(t.nll_of_log_softmax[r], t.reductions[r]) for r in ("sum", "mean")),
                rtol,
                "largest relative difference over the sum and mean reductions",
            ),
        ),
        ClaimPart(
            "PyTorch vs Keras: reduction none and sum agree",
            at_most(
                max(_relative(t.reductions["sum"], keras_sum), per_sample_gap),
                rtol,
                f"larger of: relative |PyTorch sum - Keras sum| (PyTorch {t.reductions['sum']:.4f}"
                f", Keras {keras_sum:.4f}) and the largest per-sample |PyTorch - Keras| (none) "
                "relative to the sum",
            ),
        ),
        ClaimPart(
            "frameworks differ on the weighted mean",
            at_least(
                _relative(keras_mean, torch_mean),
                1e-3,
                f"relative |Keras mean {keras_mean:.4f} - PyTorch mean {torch_mean:.4f}| on the "
                "same weighted, masked batch",
            ),
        ),
        ClaimPart(
            "label smoothing: Keras = PyTorch",
            at_most(
                max(
                    _relative(reduction.keras_label_smoothing[eps], t.label_smoothing[eps])
                    for eps in semantics.LABEL_SMOOTHING
                ),
                rtol,
                "largest relative difference, unweighted mean CE with label_smoothing in "
                f"{list(semantics.LABEL_SMOOTHING)}",
            ),
        ),
    ]
    if "mean_with_sample_weight" in reduction.keras_values:
        parts.append(
            ClaimPart(
                "Keras mean_with_sample_weight = PyTorch's mean",
                at_most(
                    _relative(reduction.keras_values["mean_with_sample_weight"], torch_mean),
                    rtol,
                    "relative difference",
                ),
            )
        )
    torch_match = [
        m for m, v in reduction.candidates.items() if math.isclose(v, torch_mean, rel_tol=rtol)
    ]
    torch_normaliser = " or ".join(NORMALISERS[m] for m in torch_match) or "none of the candidates"
    measured += (
        f"; PyTorch {t.version} mean {torch_mean:.4f} divides by {torch_normaliser} (ratio "
        f"{keras_mean / torch_mean:.2f})"
    )
    notes = [
        "Where the frameworks differ: Keras's default reduction (sum_over_batch_size) divides "
        f"the weighted sum by {normaliser} ({keras_mean:.4f}); PyTorch {t.version}'s "
        f"F.cross_entropy(reduction='mean') divides by {torch_normaliser} ({torch_mean:.4f}), "
        "both measured on the same logits, labels, weights and ignored class."
    ]
    return claim_result("C7", parts, measured, f"relative tolerance {rtol:g}; " + PARTS_RULE, notes)


def _precision_limit(dtype: str, max_loss: float) -> float:
    """What "to numerical precision" allows: C8's ``exact_epsilons`` (8) machine epsilons of
    the largest loss."""
    epsilons = rule_float("C8", "exact_epsilons")
    return epsilons * float(np.finfo(np.dtype(dtype)).eps) * max(1.0, max_loss)


def c8_exact_parts(
    float32: semantics.BinaryAsTwoClass, float64: semantics.BinaryAsTwoClass
) -> list[ClaimPart]:
    """C8's exact half: sigmoid + BCE against softmax over [0, z] + CCE, in both dtypes."""
    return [
        ClaimPart(
            f"sigmoid+BCE = softmax([0, z])+CCE from logits, {m.dtype}",
            at_most(
                m.max_abs_diff_from_logits,
                _precision_limit(m.dtype, m.max_loss),
                f"largest difference over {m.n_samples} random logits (limit "
                f"{rule_float('C8', 'exact_epsilons'):g} eps x the "
                f"largest loss {m.max_loss:.3g})",
            ),
        )
        for m in (float32, float64)
    ]


def evaluate_c9(effect: semantics.ClippingEffect) -> ClaimResult:
    """C9: at logits whose true probability is below epsilon, clipping caps and flattens."""
    clipped = [pt for pt in effect.points if pt.exact_loss > effect.loss_cap]
    if not clipped:
        verdict = Finding(
            Verdict.INCONCLUSIVE,
            "needs a logit whose exact loss exceeds the clip cap -ln(eps)",
            f"no probed logit beyond the cap {effect.loss_cap:.3f}",
        )
        return claim_result(
            "C9", [ClaimPart("confidently wrong logits", verdict)], verdict.measured
        )
    parts = [
        ClaimPart(
            "clipped probabilities cap the loss at -ln(eps)",
            at_most(
                max(abs(pt.loss_clipped - effect.loss_cap) for pt in clipped),
                1e-4,
                f"largest |clipped loss - {effect.loss_cap:.4f}| at logits "
                f"{[pt.logit for pt in clipped]}",
            ),
        ),
        ClaimPart(
            "clipped probabilities flatten the gradient",
            at_most(
                max(abs(pt.grad_clipped) for pt in clipped),
                1e-6,
                "largest |d loss / d z| through the clipped probabilities",
            ),
        ),
        ClaimPart(
            "from logits the loss is not capped",
            at_most(
                max(abs(pt.loss_logits - pt.exact_loss) / pt.exact_loss for pt in clipped),
                1e-5,
                "largest relative |loss from logits - exact softplus(-z)|",
            ),
        ),
        ClaimPart(
            "from logits the gradient stays",
            at_least(
                min(abs(pt.grad_logits) for pt in clipped),
                0.5,
                "smallest |d loss / d z| from logits (exact: sigmoid(z) - 1, about -1)",
            ),
        ),
    ]
    points = "; ".join(
        f"z={pt.logit:g}: clipped {pt.loss_clipped:.2f} (grad {pt.grad_clipped:.2g}), logits "
        f"{pt.loss_logits:.2f} (grad {pt.grad_logits:.2g})"
        for pt in effect.points
    )
    keras_path = max(abs(pt.loss_keras_sigmoid - pt.loss_logits) for pt in clipped)
    notes = [
        f"eps = {effect.epsilon:g}, cap -ln(eps) = {effect.loss_cap:.3f}. In Keras 3 on "
        "TensorFlow, probabilities made by a Keras sigmoid/softmax layer carry their logits and "
        "the loss uses them even with from_logits=False (largest difference from the logits "
        f"path here: {keras_path:.2g}), so the suite's sigmoid-output models are not capped; "
        "only probabilities computed elsewhere are."
    ]
    return claim_result(
        "C9",
        parts,
        points,
        "where the exact loss exceeds -ln(eps): clipped loss = -ln(eps) within 1e-4 with |grad| "
        "<= 1e-6, logits loss exact within 1e-5 (relative) with |grad| >= 0.5; " + PARTS_RULE,
        notes,
    )
