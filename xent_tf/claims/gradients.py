"""C11: accuracy cannot be the loss; a step activation cannot learn. Finite-difference probes
and a real training, so each part could come out either way."""

from __future__ import annotations

from collections.abc import Mapping

from xent_tf.claims import semantics
from xent_tf.claims.comparison import PARTS_RULE, at_least, band
from xent_tf.claims.records import ClaimResult, claim_result, contradicted_in
from xent_tf.claims.registry import rule_float
from xent_tf.claims.studies import ClaimPart

# --- C11: accuracy and step activations --------------------------------------------------

# Stated in the registry (C11's rule parameters).
LOSS_STILL_BELOW = rule_float("C11", "loss_still_below")  # relative drop: "not moving"
LOSS_MOVED_FROM = rule_float("C11", "loss_moved_from")  # from here it clearly moved


FLAT_SHARE = rule_float("C11", "flat_share")  # share of perturbations changing a value: flat
NOT_FLAT_SHARE = rule_float("C11", "not_flat_share")  # from here it depends on the weights


def evaluate_c11(
    gradients: semantics.AccuracyGradients, training: Mapping[str, semantics.TrainingOutcome]
) -> ClaimResult:
    """C11: accuracy is flat in the weights; a step network's loss is flat in its hidden
    weights and (as stated) does not move in training. All by finite differences or training,
    none by counting the None gradients TensorFlow returns."""
    step, sigmoid = training["step"], training["sigmoid"]
    drop = (step.loss_before - step.loss_after) / step.loss_before
    sigmoid_drop = (sigmoid.loss_before - sigmoid.loss_after) / sigmoid.loss_before
    share_changed = gradients.perturbations_changing_accuracy / max(gradients.n_perturbations, 1)
    step_share = step.probes_changing_loss / max(step.n_probes, 1)
    sigmoid_share = sigmoid.probes_changing_loss / max(sigmoid.n_probes, 1)
    parts = [
        ClaimPart(
            "accuracy is flat in the weights almost everywhere (finite differences)",
            band(
                share_changed,
                FLAT_SHARE,
                NOT_FLAT_SHARE,
                f"share of {gradients.n_perturbations} random weight perturbations (relative size "
                f"{gradients.perturbation:g}) that changed the accuracy",
            ),
        ),
        ClaimPart(
            "the cross-entropy, by contrast, has a gradient",
            at_least(
                min(gradients.loss_gradient_max_abs),
                1e-8,
                "smallest per-weight max |d loss / d w| (GradientTape)",
            ),
        ),
        ClaimPart(
            "step net: its loss is flat in the weights before the step (finite differences)",
            band(
                step_share,
                FLAT_SHARE,
                NOT_FLAT_SHARE,
                f"share of {step.n_probes} random hidden-kernel perturbations (relative size "
                f"{step.probe_size:g}) that changed the loss (sigmoid net: {sigmoid_share:.0%})",
            ),
        ),
        ClaimPart(
            "step net: its loss does not move in training",
            band(
                drop,
                LOSS_STILL_BELOW,
                LOSS_MOVED_FROM,
                "relative drop of the step net's training loss",
            ),
        ),
    ]
    measured = (
        f"{gradients.perturbations_changing_accuracy}/{gradients.n_perturbations} weight "
        f"perturbations changed accuracy; step net: {step.probes_changing_loss}/{step.n_probes} "
        f"hidden-kernel perturbations changed its loss (sigmoid net "
        f"{sigmoid.probes_changing_loss}/{sigmoid.n_probes}); in training its loss "
        f"{step.loss_before:.4f} -> {step.loss_after:.4f} ({drop:.1%}), accuracy "
        f"{step.accuracy_before:.3f} -> {step.accuracy_after:.3f}; sigmoid net loss "
        f"{sigmoid.loss_before:.4f} -> {sigmoid.loss_after:.4f} ({sigmoid_drop:.1%})"
    )
    notes = []
    if contradicted_in(parts, "step net: its loss does not move in training"):
        notes.append(
            "Wrong in part: accuracy is flat in the weights, and the step network's loss is "
            "flat in the weights before the step, but the step network still learns: its output "
            "layer sits after the step and gets the ordinary cross-entropy gradient, so it fits "
            f"a linear model on fixed random binary features. Its loss fell by {drop:.1%} "
            f"(accuracy {step.accuracy_before:.3f} -> {step.accuracy_after:.3f}); the same "
            f"network with a sigmoid fell by {sigmoid_drop:.1%}."
        )
    return claim_result(
        "C11",
        parts,
        measured,
        f"flat = at most {FLAT_SHARE:g} of the perturbations change the value (not flat from "
        f"{NOT_FLAT_SHARE:g}); loss 'not moving' = relative drop <= {LOSS_STILL_BELOW:g} (moved "
        f"from {LOSS_MOVED_FROM:g}); " + PARTS_RULE,
        notes,
    )
