"""The claims of CLAIMS.md, each written once: id, title, statement, how it is measured,
how it is judged, and the study that feeds it.

``docs/CLAIMS.md`` is generated from this registry (``render_claims_markdown``); a test keeps
the two identical. Adding a claim = one entry here plus its measurement and rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from xent_tf.claims.protocol import (
    PROTOCOL_CHANGES,
    PROTOCOL_VERSION,
    STATISTICS,
    RuleParam,
    RuleValue,
    param_map,
    rules_hash,
)


@dataclass(frozen=True)
class Claim:
    """One claim of the tutorials.

    Attributes:
        id: "C1" ... "C16".
        title: short name.
        section: the CLAIMS.md section it is listed under.
        statement: what the tutorial says (and what must be measured), as CLAIMS.md states it.
        measured_by: how the ledger measures it.
        judged_by: how the verdict follows from the measurements.
        study: the study (MLflow experiment) whose runs feed it; "" = measured in the ledger run.
        rules: every number its rule uses (thresholds, targets, shares, margins, grids),
            stated before the runs it judges; the shared statistics are
            ``protocol.STATISTICS``. Changing one is a protocol version bump.
    """

    id: str
    title: str
    section: str
    statement: str
    measured_by: str
    judged_by: str
    study: str = ""
    rules: tuple[RuleParam, ...] = ()


# The probe batch C13 and C15 both measure oscillation on, stated once for both.
PROBE_ROWS_RULE = RuleParam(
    "probe_rows",
    64,
    "training rows whose loss is measured after every step (trainer.probe_rows)",
)

INTRO = """\
# The claims this suite reproduces

<!-- Generated from xent_tf/claims/registry.py (render_claims_markdown); edit the registry. -->

The suite exists to turn what a handful of well-read tutorials say about cross-entropy into
measured, repeatable runs. Each claim below has an id (C1…C16). The claims ledger
(`experiment=claims`, see DESIGN.md) evaluates every one of them and gives a verdict:
`holds`, `contradicted` or `inconclusive` (and, judged on two seed sets with
`claims.stability=true`, `unstable` where the sets disagree), together with the numbers behind
it. A part that could not be measured (e.g. PyTorch not installed) is `not measured` and caps
its claim at inconclusive; a contrast that is identical by construction is `not applicable` and
is not counted. Every threshold a rule uses is stated below, before the runs it judges (see
Protocol at the end). A verdict is always computed from what was measured in that run; never
write one down by hand. Some claims are stated below exactly as a tutorial states them, even
where they may be wrong: the ledger's job is to find out, not to agree.

Logs are natural (nats) unless a claim says bits.
"""


CLAIMS: dict[str, Claim] = {
    claim.id: claim
    for claim in (
        Claim(
            "C1",
            "Self-information",
            "Information theory (exact numbers, no training)",
            (
                "The information of an event with probability p is -log p. For p = 0.7, 0.2, 0.1 "
                "it is 0.36, 1.61 and 2.30 nats. An event with p = 1 carries 0."
            ),
            ("info.self_information at p = 0.7, 0.2, 0.1 and 1."),
            ("Each value within half a unit of its last stated digit."),
            rules=(
                RuleParam(
                    "rounding_tolerance",
                    0.005,
                    "half a unit of the last stated digit (the tutorials give two decimals)",
                ),
            ),
        ),
        Claim(
            "C2",
            "Entropy",
            "Information theory (exact numbers, no training)",
            (
                "Entropy is the expected self-information. For the distribution (0.7, 0.2, 0.1) "
                'above it is about 0.80 nats. One tutorial says: "the entropy of a fair coin toss'
                ' is 0, so there is almost no uncertainty". (Measure it, in bits and nats.)'
            ),
            (
                "info.entropy of the example, of a fair and a certain coin (bits and nats), and "
                "the definition on random distributions."
            ),
            (
                "Stated numbers within their rounding; the fair-coin statement against the "
                "measured entropy."
            ),
            rules=(
                RuleParam(
                    "rounding_tolerance",
                    0.005,
                    "half a unit of the last stated digit (the tutorials give two decimals)",
                ),
            ),
        ),
        Claim(
            "C3",
            "KL and cross-entropy",
            "Information theory (exact numbers, no training)",
            (
                "KL(p‖q) ≥ 0, equal to 0 only when p = q, and in general KL(p‖q) ≠ KL(q‖p). H(p, "
                "q) = H(p) + KL(p‖q). Because H(p) does not depend on the model, minimising "
                "cross-entropy, minimising KL, and maximising the (mean) log-likelihood of the "
                "training labels pick the same model (show it: the three objectives, evaluated "
                "over a family of predicted distributions, have the same argmin)."
            ),
            (
                "KL over random Dirichlet pairs (checked against scipy); three softmax-regression"
                " models fitted on real data by minimising CE, maximising the likelihood and "
                "minimising KL to the empirical label distribution (and a Brier-score fit as a "
                "control that the comparison can tell models apart)."
            ),
            (
                "Identities to 1e-9/1e-12; the three fitted models' predicted probabilities agree"
                " within 1e-3."
            ),
        ),
        Claim(
            "C4",
            "Bits",
            "Information theory (exact numbers, no training)",
            (
                "Cross-entropy measured with log base 2 is the mean number of bits needed to code"
                " events drawn from p with a code built for q; it is the nats value divided by ln"
                " 2."
            ),
            (
                "A prefix code built for a dyadic q encodes 100,000 events from p; bits per event "
                "are counted. On a non-dyadic pair, Shannon's code (lengths ceil(-log2 q_i)) "
                "built for q: its exact mean length under p, and a sample encoded with it."
            ),
            (
                "Dyadic: code lengths within 4 standard errors of H_2(p, q) and H_2(p). "
                "Non-dyadic: H_2(p, q) <= mean length < H_2(p, q) + 1 exactly (Shannon's bound; "
                "a Huffman code for q can fall below H_2(p, q) under p != q, so the bound is "
                "checked on Shannon's lengths). Conversion to 1e-12."
            ),
            rules=(
                RuleParam(
                    "sampling_sigmas",
                    4.0,
                    "a sampled mean code length this many standard errors from its entropy is "
                    "not sampling noise",
                ),
                RuleParam("conversion_tolerance", 1e-12, "largest |H_2 - H_e / ln 2|"),
                RuleParam(
                    "non_dyadic_p",
                    (0.4, 0.3, 0.2, 0.1),
                    "source distribution of the non-dyadic (Shannon code) part",
                ),
                RuleParam(
                    "non_dyadic_q",
                    (0.1, 0.2, 0.3, 0.4),
                    "distribution the non-dyadic part's Shannon code is built for",
                ),
            ),
        ),
        Claim(
            "C5",
            "Worked example",
            "The loss functions themselves",
            (
                "True label one-hot [1, 0, 0, 0, 0], prediction [0.1, 0.5, 0.1, 0.1, 0.2]: the "
                "cross-entropy is -ln 0.1 ≈ 2.303. The prediction [0.1, 0.6, 0.1, 0.1, 0.1] gives"
                " exactly the same loss, because only the probability of the true class enters."
            ),
            ("Keras CategoricalCrossentropy on the two predictions."),
            ("Each loss within 0.0005 of 2.303; the two equal to 1e-6."),
            rules=(
                RuleParam("stated_loss", 2.303, "the loss the tutorial states"),
                RuleParam("stated_tolerance", 0.0005, "stated to three decimals"),
                RuleParam(
                    "equal_loss_tolerance", 1e-6, "the two float32 Keras losses count as equal"
                ),
            ),
        ),
        Claim(
            "C6",
            "Same loss, different gradients",
            "The loss functions themselves",
            (
                "Nevertheless, with softmax outputs the gradient of the loss with respect to the "
                "logits is softmax(z) - y, so it depends on every class's probability: the two "
                "predictions in C5 produce different gradients (when they come from logits)."
            ),
            ("Keras gradients of CE w.r.t. the logits, against softmax(z) - y."),
            ("Gradient = softmax(z) - y within 1e-6; the two gradients differ by more than 1e-6."),
            rules=(
                RuleParam(
                    "gradient_tolerance",
                    1e-6,
                    "float32 Keras gradient vs softmax(z) - y; and the least difference between "
                    "the two predictions' gradients that counts as different",
                ),
            ),
        ),
        Claim(
            "C7",
            "Cross-entropy on logits = NLL of log-softmax",
            "The loss functions themselves",
            (
                "Categorical cross-entropy computed from logits equals the negative log-"
                "likelihood of log_softmax(logits) at the true class. The usual options behave as"
                " documented for the well-known frameworks: per-class weights, an ignored class "
                "index, and the reductions none / sum / mean. Note where frameworks differ (for "
                "example how a weighted mean is normalised: by the batch size or by the sum of "
                "the weights) and measure it, running each framework itself (Keras and PyTorch), "
                "never a re-implementation of one."
            ),
            (
                "Keras (Sparse)CategoricalCrossentropy and PyTorch F.cross_entropy / "
                "F.nll_loss(F.log_softmax) on the same logits, labels, class weights and ignored "
                "class, per reduction and with label smoothing."
            ),
            (
                "Relative tolerance 1e-5 between frameworks and formulas; PyTorch parts count "
                "only when torch ran."
            ),
            rules=(
                RuleParam(
                    "relative_tolerance",
                    1e-5,
                    "largest relative difference between frameworks and formulas (float32)",
                ),
            ),
        ),
        Claim(
            "C8",
            "Binary CE is the two-class case",
            "The loss functions themselves",
            (
                "sigmoid(z) with binary cross-entropy equals softmax over the logits [0, z] with "
                "categorical cross-entropy, to numerical precision. Training a one-unit sigmoid "
                "head with binary CE and a two-unit softmax head with (sparse) categorical CE on "
                "the same binary data reaches the same accuracy within seed noise (the two-unit "
                "head has more parameters; report both counts)."
            ),
            (
                "Exact: sigmoid+BCE vs softmax([0, z])+CCE in float32/64. Training: the "
                "binary_vs_categorical study."
            ),
            (
                "Exact parts to 8 machine epsilons; accuracies equivalent within 0.01 (two "
                "one-sided sign-flip tests of the paired differences); cce vs sparse_cce (the "
                "same head and loss, identical by construction) is not applicable: shown, not "
                "counted, and a multi-class data set, which has only that pair, is not "
                "applicable."
            ),
            study="binary_vs_categorical",
            rules=(
                RuleParam(
                    "equivalence_margin",
                    0.01,
                    "final val accuracy points within which the two heads count as the same",
                ),
                RuleParam("exact_epsilons", 8.0, "machine epsilons the exact parts may differ by"),
                RuleParam(
                    "not_applicable_pairs",
                    ("cce vs sparse_cce",),
                    "contrasts identical by construction (same head, same loss): shown, not "
                    "counted",
                ),
            ),
        ),
        Claim(
            "C9",
            "Probabilities vs logits",
            "The loss functions themselves",
            (
                "Computing the loss from probabilities that have been clipped (as frameworks do "
                "to avoid log 0) caps the loss of a confidently wrong prediction and flattens its"
                " gradient; computing it from logits does not. Measure the loss and gradient of "
                "both at a few extreme logits."
            ),
            ("Loss and gradient through clipped probabilities and from logits at extreme logits."),
            (
                "Clipped loss capped at -ln(eps) with a flat gradient; logits loss exact with a "
                "gradient near -1."
            ),
        ),
        Claim(
            "C10",
            "Loss scale",
            "The loss functions themselves",
            (
                'One tutorial says a cross-entropy "close to 0 marks a good model and close to 1 '
                'a poor one". The tutorial means the loss a practitioner reads: the mean over a '
                "data set. Judge it on mean losses of real runs, binary and 5-class (chance level"
                " is ln K: 0.693 for two classes, 1.609 for five; what accuracy does a model have"
                " when its mean loss is near 1?). The largest per-sample loss (cross-entropy is "
                "not bounded by 1) is supporting detail, not the test."
            ),
            (
                "Two real trainings (binary and 5-class, the reference MLP): mean test loss of "
                "the untrained and trained model, and the accuracy where the validation loss "
                "passes 1."
            ),
            (
                "A chance-level model's mean loss within 1 ± 0.1; a model at mean loss 1 has "
                "near-chance accuracy; training lowers the mean loss."
            ),
            rules=(
                RuleParam("poor_model_tolerance", 0.1, 'how close to 1 "close to 1" is'),
                RuleParam(
                    "near_chance",
                    0.1,
                    "a model at mean loss 1 is poor if its accuracy is at most this far above "
                    "chance",
                ),
                RuleParam(
                    "clearly_above_chance", 0.25, "... and clearly not poor from this far above"
                ),
            ),
        ),
        Claim(
            "C11",
            "Accuracy cannot be the loss",
            "Training behaviour (needs runs over several seeds)",
            (
                "The gradient of accuracy with respect to the weights is zero almost everywhere, "
                "so it gives gradient descent nothing to follow; a network whose activation is a "
                "step function cannot learn either, for the same reason. (Show the gradients, and"
                " show the step-activation model's loss not moving.)"
            ),
            (
                "Finite-difference probes of accuracy and of a step network's loss w.r.t. the "
                "weights; a step network trained full batch."
            ),
            (
                "Share of small weight perturbations that change accuracy / the step network's "
                "loss (<= 10% holds, >= 50% contradicted); the step network's relative loss drop."
            ),
            rules=(
                RuleParam(
                    "flat_share",
                    0.1,
                    "at most this share of tiny perturbations changing a value: flat",
                ),
                RuleParam(
                    "not_flat_share", 0.5, "from this share the value depends on the weights"
                ),
                RuleParam(
                    "loss_still_below", 0.01, 'a relative loss drop up to this is "not moving"'
                ),
                RuleParam("loss_moved_from", 0.05, "from this relative drop the loss moved"),
            ),
        ),
        Claim(
            "C12",
            "MSE vs cross-entropy",
            "Training behaviour (needs runs over several seeds)",
            (
                "With a sigmoid (or softmax) output, the MSE gradient carries the factor "
                "sigma'(z), which vanishes when the output saturates; the cross-entropy gradient "
                "is (a - y)·x without it. So cross-entropy learns faster than MSE, most of all "
                "when the model starts confidently wrong. (Measure the learning curves, epochs "
                "to reach a target validation accuracy fixed before any run, and the gradient "
                "norm of the last layer per epoch; from the standard initialisation and from a "
                "deliberately saturated one. Judge speed with a measure that needs no target "
                "taken from the runs being judged, such as the area under the "
                "validation-accuracy curve. The argument is made for plain gradient descent; "
                "other optimizers are separate, named contexts. A run that never reaches the "
                "target is censored, not a run that took epochs + 1. The argument names its "
                "mechanism, the sigma'(z) factor: test it too — the last-layer gradient ratio, "
                "and square loss on the raw outputs, without the sigmoid/softmax, for which the "
                "argument predicts no saturated-start stall.)"
            ),
            (
                "The mse_vs_ce study (loss ce, mse and mse_raw = square loss on the raw outputs, "
                "x standard/saturated output init x SGD/Adam): per run the area under the "
                "validation-accuracy curve (mean val acc over epochs 1..E), epochs to the fixed "
                "targets (censored when never reached), and the last layer's full-batch gradient "
                "norm per epoch."
            ),
            (
                "C12: per plain-SGD context (data set x init), the paired per-seed difference of "
                "the accuracy areas, ce - mse, > 0 (Adam contexts shown, not counted); times to "
                "the fixed targets reported, not judged. C12b: the area gap grows from the "
                "standard to the saturated init. C12c (mechanism): from the saturated init the "
                "last layer's gradient norm, mse over ce, over the first epochs is << 1; and the "
                "control mse_raw slows down less from the saturated init than mse does, and by "
                "no more than the stated margin."
            ),
            study="mse_vs_ce",
            rules=(
                RuleParam(
                    "primary_endpoint",
                    "mean val acc over epochs 1..E",
                    "the area under the validation-accuracy curve (a run that stopped early "
                    "counts the majority share for its missing epochs); judged on the paired "
                    "per-seed difference ce - mse",
                ),
                RuleParam(
                    "counted_optimizers",
                    ("sgd",),
                    "plain gradient descent, the claim's setting; other optimizers are shown "
                    "as named contexts, not counted",
                ),
                RuleParam(
                    "target_share",
                    0.5,
                    "secondary (reported, not judged): target val acc = majority share + this "
                    "x (1 - majority share)",
                ),
                RuleParam(
                    "target_share_sensitivity",
                    (0.25, 0.75),
                    "the same target with these shares, reported as sensitivity",
                ),
                RuleParam(
                    "mechanism_epochs",
                    3,
                    "epochs 1..this whose last-layer gradient norms form the mechanism's ratio "
                    "(mean norm of mse over mean norm of ce, per seed; judged in log10)",
                ),
                RuleParam(
                    "mechanism_ratio_holds",
                    0.1,
                    "the ratio is << 1 when the per-seed log ratios lie below log10 of this "
                    "(one-sided sign-flip test at alpha / 2)",
                ),
                RuleParam(
                    "mechanism_ratio_contradicted",
                    0.5,
                    "the ratio is not << 1 when the per-seed log ratios lie above log10 of "
                    "this (the same test)",
                ),
                RuleParam(
                    "control_loss",
                    "mse_raw",
                    "the control arm: square loss on the raw outputs (linear head, 0/1 or "
                    "one-hot targets; Hui & Belkin, ICLR 2021)",
                ),
                RuleParam(
                    "control_slowdown_margin",
                    0.05,
                    "the control's saturated-start slowdown (accuracy area, standard - "
                    "saturated init) counts as none when the per-seed slowdowns lie below "
                    "this (one-sided sign-flip test at alpha / 2)",
                ),
            ),
        ),
        Claim(
            "C13",
            "Learning rate size",
            "Training behaviour (needs runs over several seeds)",
            (
                "A small learning rate converges slowly with a smooth loss curve; a good one "
                "drops fast; a large one drops fast at first but oscillates, and too large "
                'diverges. The tutorial\'s "oscillation" is the swing of the training loss curve '
                "step by step — measured so that mini-batch sampling noise cannot pass for it "
                '(e.g. on the same rows at every step); "good" must be shown to be good '
                "(measured), not assumed from where a rate sits in a list, and the rates span the "
                "range from too small to too large by a rule stated in advance."
            ),
            (
                "The lr_sweep study: plain SGD at every rate of a fixed log-spaced grid, each run "
                "with its seed's range test recorded; per run the final validation loss, the "
                "loss after epoch 1, its outcome (diverged: non-finite loss, or a final training "
                "loss at or above the class-prior loss at a val accuracy at the majority share; "
                "collapsed: val accuracy at the majority share with a lower loss) and the "
                "oscillation of the probe loss (the loss on 64 fixed training rows after every "
                "step of the second half of training)."
            ),
            (
                "Roles measured on the first half of the seeds (good = lowest mean final val "
                "loss; too large = the rates from the first one where at least half the runs "
                "diverged), the claim judged on the other half: per seed, rank correlations "
                "with the rate (of the final val loss over the rates up to the good one, of the "
                "epoch-1 val loss below the too-large rates, of the oscillation and of "
                "divergence over all rates; a failed run oscillates without bound), each "
                "tested over the seeds; the next rate above the good one oscillates more than "
                "it (sign test); the too-large rates diverge (share rule)."
            ),
            study="lr_sweep",
            rules=(
                RuleParam(
                    "rate_grid",
                    (1e-4, 4.64e-4, 2.15e-3, 1e-2, 4.64e-2, 0.215, 1.0, 4.64, 21.5, 100.0),
                    "SGD rates, 10 log-spaced (x 10^(2/3)) over the upper six decades of the "
                    "range test's window (min_lr 1e-6 to max_lr 100), from its flat start to "
                    "where it explodes; every data set",
                ),
                PROBE_ROWS_RULE,
                RuleParam(
                    "late_fraction",
                    0.5,
                    "the share of the last epochs the probe loss is measured in, and its "
                    "oscillation over (trainer.probe_late_fraction)",
                ),
                RuleParam(
                    "collapse_margin",
                    0.01,
                    "a final val accuracy at most this above the majority share has stayed "
                    "there (a failure, never smooth)",
                ),
                RuleParam(
                    "too_large_share",
                    0.5,
                    "a rate is too large (on the seeds that pick the roles) from the first grid "
                    "rate where at least this share of the runs diverged",
                ),
                RuleParam(
                    "min_trend_rates",
                    3,
                    "fewest rates a rank correlation is computed over (else inconclusive)",
                ),
                RuleParam(
                    "role_split",
                    "first half of the sorted seeds picks, second half judges",
                    "good and too large are measured, then judged on other seeds",
                ),
                RuleParam(
                    "seeds",
                    "2 x claims.seeds",
                    "the lr_sweep study's seeds (20 by default): claims.seeds pick the roles, "
                    "claims.seeds others are judged (the exact tests need >= 6 judged seeds)",
                ),
            ),
        ),
        Claim(
            "C14",
            "Learning-rate range test",
            "Training behaviour (needs runs over several seeds)",
            (
                "Start from a very small learning rate and raise it after every mini-batch "
                "(exponentially or linearly) while recording the loss. The loss first barely "
                "moves, then falls fast, then explodes. The best learning rate lies where the "
                "loss falls fastest (the steepest negative slope), and training with it works "
                "better than with rates from the flat or exploding parts of the curve. (Test "
                '"best" against a grid of rates trained to the end: how far is each suggestion '
                "from the grid's best?)"
            ),
            (
                "The lr_sweep study (C13's grid, plus one arm per suggestion rule): each seed's "
                "range test (1e-6 to 100 over 300 steps, stopped when the smoothed loss exceeds "
                "4 x its best), the final validation loss of every grid rate trained to the "
                "end, and of training with each rule's suggested rate (steepest, valley, "
                "minimum / 10). A run that diverged by C13's rule has an unbounded loss."
            ),
            (
                "Curve shape in >= 80% of seeds (explodes = the range test's own stop rule "
                "fired); per seed, regret = final val loss of training with the steepest rate - "
                "the grid's best (the best grid rate by mean loss, interpolated in log-rate by "
                "a parabola through it and its neighbours): within noise (<= the seed SD of the "
                "loss at the best grid rate) in >= 80% of seeds; the steepest rate's trained "
                "loss below the flat and the exploding rates' (their losses interpolated on the "
                "grid; paired sign-flip test, a sign test when a run failed). Each rule's "
                "regret is reported, and which rule does best."
            ),
            study="lr_sweep",
            rules=(
                RuleParam(
                    "grid",
                    "C13's rate_grid",
                    "the rates trained to the end (the lr_sweep study)",
                ),
                RuleParam(
                    "skip_fraction",
                    0.1,
                    "the range-test curve's first steps left out of its shape (moving average "
                    "of too few batches)",
                ),
                RuleParam(
                    "flat_span",
                    0.25,
                    "the curve is flat if it stays within flat_tolerance of its start up to "
                    "this share of the steps",
                ),
                RuleParam("flat_tolerance", 0.1, "relative change that still counts as flat"),
                RuleParam(
                    "fall_depth",
                    0.8,
                    "the curve falls if its minimum is below this share of its start",
                ),
                RuleParam(
                    "explosion",
                    "the range test's stop rule fired",
                    "smoothed loss > divergence_factor x its best, or a non-finite loss "
                    "(lr_find.stop_reason)",
                ),
                RuleParam(
                    "noise",
                    "seed SD of the final val loss at the grid's best rate",
                    "a regret at most this is within noise",
                ),
                RuleParam(
                    "grid_best",
                    "parabola in log-rate through the best grid rate and its neighbours",
                    "its minimum when convex with the vertex between them, else the grid "
                    "point's loss",
                ),
                RuleParam(
                    "suggestions",
                    ("steepest", "valley", "minimum"),
                    "suggestion rules whose regret is reported (the claim judges steepest)",
                ),
            ),
        ),
        Claim(
            "C15",
            "Annealing",
            "Training behaviour (needs runs over several seeds)",
            (
                "Starting with a large learning rate and decaying it during training reaches a "
                "low loss quickly and avoids the late oscillation of a constant large rate. "
                '("Quickly" is measured too, not only the final loss.)'
            ),
            (
                "The annealing study: per run the final validation loss, the area under the "
                "validation-loss curve (mean over epochs 1..E: low and early), and the "
                "oscillation of the probe loss (64 fixed training rows, every step of the second "
                "half of training); each schedule against the constant large rate."
            ),
            (
                "Per schedule, paired per seed against the constant rate: lower final val loss, "
                "lower loss area, less late oscillation. Paired sign-flip test of the "
                "differences; "
                "when a run failed (diverged, or stayed at the majority share: an unbounded "
                "loss and oscillation), a sign test instead."
            ),
            study="annealing",
            rules=(
                PROBE_ROWS_RULE,
                RuleParam(
                    "late_fraction",
                    0.5,
                    "the share of the last epochs called late: the probe loss is measured in "
                    "them (trainer.probe_late_fraction)",
                ),
                RuleParam(
                    "collapse_margin",
                    0.01,
                    "a final val accuracy at most this above the majority share is a failure",
                ),
                RuleParam(
                    "quickly",
                    "mean val loss over epochs 1..E",
                    "the area under the validation-loss curve",
                ),
            ),
        ),
        Claim(
            "C16",
            "The reference run",
            "The reference experiment",
            (
                "`make_classification(n_samples=10000, n_informative=10, random_state=2022)`; the"
                " first 9,000 rows are split 70/30 into train (6,300) and validation (2,700), the"
                " last 1,000 rows are the test set. Model: Dense(10, relu) → Dense(10, relu) → "
                "Dense(1, sigmoid); binary cross-entropy; Adam with learning rate 0.001; 20 "
                "epochs; batch size 32; accuracy as the metric. Training and validation loss fall"
                " together over the 20 epochs, and the model classifies the test set well (report"
                " the test accuracy and loss)."
            ),
            (
                "The reference run (latest finished one in the store with the reference config, "
                "or one run by the ledger)."
            ),
            (
                "Split exact; both losses fall; final gap <= 0.05 (>= 0.15 contradicted); test "
                "accuracy >= 0.9."
            ),
            study="reference",
            rules=(
                RuleParam("split", (6300.0, 2700.0, 1000.0), "train, validation, test rows"),
                RuleParam("min_test_acc", 0.9, '"classifies the test set well"'),
                RuleParam("gap_holds", 0.05, 'final |val - train| loss: "together"'),
                RuleParam("gap_contradicted", 0.15, "... clearly apart from this gap"),
            ),
        ),
    )
}


# Parts of a claim that a study judges separately, with their own verdict.
SUB_CLAIMS: dict[str, str] = {
    "C12b": "C12's second half: the advantage of cross-entropy is largest when the model starts "
    "confidently wrong (saturated output).",
    "C12c": "C12's mechanism: from a saturated start the sigma'(z) factor makes the last layer's "
    "MSE gradient << its cross-entropy gradient, and the square loss on the raw outputs (no "
    "sigma') does not stall there.",
}


def statement_of(claim_id: str) -> str:
    """The statement of a claim or of a sub-claim (``SUB_CLAIMS``)."""
    if claim_id in SUB_CLAIMS:
        return SUB_CLAIMS[claim_id]
    return get_claim(claim_id).statement


def get_claim(claim_id: str) -> Claim:
    """The claim called ``claim_id``; a ValueError lists the known ones."""
    if claim_id not in CLAIMS:
        raise ValueError(f"claim {claim_id!r} is not one of {', '.join(CLAIMS)}")
    return CLAIMS[claim_id]


def rule_value(claim_id: str, name: str) -> RuleValue:
    """A claim's stated rule parameter (``Claim.rules``).

    Raises:
        ValueError: no such claim, or the claim states no parameter ``name`` (the message
            lists the ones it states).
    """
    stated = param_map(get_claim(claim_id).rules)
    if name not in stated:
        raise ValueError(
            f"{claim_id} states no rule parameter {name!r}; it states {sorted(stated)}"
        )
    return stated[name]


def rule_float(claim_id: str, name: str) -> float:
    """``rule_value`` of a single number, as a float (a ValueError if it is a grid or text)."""
    value = rule_value(claim_id, name)
    if isinstance(value, (tuple, str)):
        raise ValueError(f"{claim_id}'s rule parameter {name!r} is {value!r}, not one number")
    return float(value)


def rule_floats(claim_id: str, name: str) -> tuple[float, ...]:
    """``rule_value`` of a grid, as floats (a ValueError if it is not a grid of numbers)."""
    value = rule_value(claim_id, name)
    if not isinstance(value, tuple) or any(isinstance(v, str) for v in value):
        raise ValueError(f"{claim_id}'s rule parameter {name!r} is {value!r}, not a grid")
    return tuple(float(v) for v in value)


def protocol_hash() -> str:
    """``protocol.rules_hash`` of every claim's rule parameters (the ledger prints it)."""
    return rules_hash({claim.id: claim.rules for claim in CLAIMS.values()})


def protocol_line() -> str:
    """ "protocol 2, rules hash 1a2b3c4d5e6f": what every ledger prints."""
    return f"protocol {PROTOCOL_VERSION}, rules hash {protocol_hash()}"


def render_claims_markdown() -> str:
    """docs/CLAIMS.md: the introduction, then every claim under its section."""
    lines = [INTRO.rstrip("\n")]
    section = ""
    for claim in CLAIMS.values():
        if claim.section != section:
            section = claim.section
            lines += ["", f"## {section}"]
        lines.append(f"- **{claim.id} {claim.title}.** {claim.statement}")
        lines.append(f"  *Measured:* {claim.measured_by}")
        lines.append(f"  *Judged:* {claim.judged_by}")
        if claim.rules:
            stated = "; ".join(param.describe() for param in claim.rules)
            lines.append(f"  *Rule parameters:* {stated}.")
    return "\n".join([*lines, "", *_protocol_markdown()]) + "\n"


def _protocol_markdown() -> list[str]:
    """The protocol section of docs/CLAIMS.md: version, hash, shared statistics, changes."""
    lines = [
        "## Protocol",
        "",
        f"Protocol version {PROTOCOL_VERSION}; the ledger prints it with the hash of every rule "
        f"parameter above and below ({protocol_hash()}). Changing a rule is a new version with "
        "a dated line below.",
        "",
        "Statistics every claim shares:",
        *(f"- {param.describe()}" for param in STATISTICS),
        "",
        "Error rates. A part judged by an interval or a test has two one-sided p-values: "
        "against the claim's side (small: contradicted) and for it (small: holds). A claim is "
        "*contradicted* only if Holm's step-down procedure over the p-values against it of all "
        "its statistical parts, on every data set it is judged on, rejects one at alpha / 2: "
        "the chance of calling a true claim contradicted is at most alpha / 2 (family-wise, "
        "strong control). A claim *holds* only if every part holds at alpha / 2 on its own: an "
        "intersection-union test, whose chance of holding when any part is false is at most "
        "alpha / 2 without a correction (a correction would only cost power). A part computed "
        "exactly (no sampling) counts as measured. A part that is not measured caps its claim "
        "at inconclusive; a part that is not applicable is shown and not counted. A paired "
        "comparison is judged by the exact sign-flip test of its per-seed differences "
        "(paired_test): exact when the arms are exchangeable, so relabelled runs cannot make it "
        "exceed alpha / 2 per direction (measured: experiments/null_calibration.py on stored "
        "runs, tests/test_null_calibration.py); the Student-t interval is shown beside it. It "
        "cannot give p < 1 / 2^n: 6 seeds are the fewest that can conclude, and more when "
        "Holm's correction divides alpha / 2 over m parts.",
        "",
        "Changes:",
        *(
            f"- {change.version} ({change.date}): {line}"
            for change in PROTOCOL_CHANGES
            for line in change.why
        ),
    ]
    return lines
