"""The claims ledger: a verdict for every claim of CLAIMS.md (C1-C16), with its numbers and rule.

Exact claims are measured on the spot with ``info`` and ``semantics`` (and two small trainings
for C10); the training claims take their verdicts from the latest finished, complete study in
the MLflow store (``report.publish_report``), which the ledger runs itself when there is none.
Every verdict is the output of a rule below applied to measured numbers; the rule's text travels
with the verdict. The ``evaluate_*`` functions take measurements as plain values, so the rules
can be checked on constructed inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from scipy import special

from xent_tf import info, semantics, tracking
from xent_tf.build import (
    build_dataset,
    build_loss,
    build_model,
    build_optimizer,
    schedule_rates,
    tensor_splits,
)
from xent_tf.comparison import (
    CONTRADICTED,
    HOLDS,
    INCONCLUSIVE,
    RunRecord,
    Verdict,
    combine_verdicts,
)
from xent_tf.config import (
    CLAIM_IDS,
    AdamConfig,
    Config,
    ConstantScheduleConfig,
    DataConfig,
    LossConfig,
    MakeClassificationConfig,
    ModelConfig,
)
from xent_tf.ledger_render import PARTS_RULE, render_terminal, write_ledger
from xent_tf.pipeline import run_experiment
from xent_tf.runtime import configure_runtime
from xent_tf.studies import STUDIES, ClaimCheck, ClaimPart, group_variants
from xent_tf.training import CompiledLoop, fit, steps_per_epoch

log = logging.getLogger(__name__)

# The training claims and the study (Hydra experiment = MLflow experiment) each comes from.
STUDY_FOR_CLAIM: dict[str, str] = {
    "C8": "binary_vs_categorical",
    "C12": "mse_vs_ce",
    "C13": "lr_sweep",
    "C14": "lr_range_test",
    "C15": "annealing",
}
REFERENCE_EXPERIMENT = "reference"
_RUN_SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "run.py"

# (short title, what the tutorial says), from CLAIMS.md. Statements, never verdicts.
STATEMENTS: dict[str, tuple[str, str]] = {
    "C1": (
        "Self-information",
        "The information of an event is -ln p: 0.36, 1.61 and 2.30 nats for p = 0.7, 0.2, "
        "0.1; an event with p = 1 carries 0.",
    ),
    "C2": (
        "Entropy",
        "Entropy is the expected self-information; H(0.7, 0.2, 0.1) is about 0.80 nats. "
        '"The entropy of a fair coin toss is 0, so there is almost no uncertainty."',
    ),
    "C3": (
        "KL and cross-entropy",
        "KL(p||q) >= 0, = 0 only when p = q, and KL(p||q) != KL(q||p) in general; "
        "H(p, q) = H(p) + KL(p||q); minimising CE, minimising KL and maximising the mean "
        "log-likelihood pick the same model.",
    ),
    "C4": (
        "Bits",
        "Cross-entropy in base 2 is the mean number of bits to code events from p with a code "
        "built for q; it is the nats value divided by ln 2.",
    ),
    "C5": (
        "Worked example",
        "Label [1,0,0,0,0], prediction [0.1,0.5,0.1,0.1,0.2]: CE = -ln 0.1 = 2.303; "
        "[0.1,0.6,0.1,0.1,0.1] gives exactly the same loss.",
    ),
    "C6": (
        "Same loss, different gradients",
        "The gradient with respect to the logits is softmax(z) - y, so the two C5 predictions "
        "get different gradients.",
    ),
    "C7": (
        "CE on logits = NLL of log-softmax",
        "CE from logits equals the NLL of log_softmax at the true class; class weights, an "
        "ignored class and the none/sum/mean reductions behave as documented; frameworks "
        "differ in how a weighted mean is normalised.",
    ),
    "C8": (
        "Binary CE is the two-class case",
        "sigmoid + BCE equals softmax over [0, z] + CCE to numerical precision; a 1-unit "
        "sigmoid head and a 2-unit softmax head reach the same accuracy within seed noise.",
    ),
    "C9": (
        "Probabilities vs logits",
        "Loss from clipped probabilities caps the loss of a confidently wrong prediction and "
        "flattens its gradient; loss from logits does not.",
    ),
    "C10": (
        "Loss scale",
        '"A cross-entropy close to 0 marks a good model and close to 1 a poor one."',
    ),
    "C11": (
        "Accuracy cannot be the loss",
        "The gradient of accuracy with respect to the weights is zero almost everywhere; a "
        "network with a step activation cannot learn either: its loss does not move.",
    ),
    "C12": (
        "MSE vs cross-entropy",
        "With a sigmoid/softmax output, cross-entropy learns faster than MSE (no sigma'(z) "
        "factor), most of all when the model starts confidently wrong.",
    ),
    "C13": (
        "Learning-rate size",
        "A small rate converges slowly and smoothly; a good one drops fast; a large one drops "
        "fast at first, then oscillates; too large diverges.",
    ),
    "C14": (
        "Learning-rate range test",
        "The range-test loss barely moves, falls fast, then explodes; the rate of the steepest "
        "fall trains better than rates from the flat or exploding parts.",
    ),
    "C15": (
        "Annealing",
        "A large rate decayed during training reaches a low loss quickly and avoids the late "
        "oscillation of a constant large rate.",
    ),
    "C16": (
        "The reference run",
        "make_classification(10000), split 6300/2700/1000; Dense(10,relu)-Dense(10,relu)-"
        "Dense(1,sigmoid), BCE, Adam 1e-3, 20 epochs, batch 32: train and val loss fall "
        "together, and the test set is classified well.",
    ),
}


# --- the rules ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def close_to(measured: float, stated: float, tolerance: float, what: str) -> Verdict:
    """holds if ``|measured - stated| <= tolerance``, contradicted if farther, inconclusive if
    the measurement is not a finite number."""
    rule = f"{what}: holds if |measured - stated| <= {tolerance:g}, else contradicted"
    if not math.isfinite(measured):
        return Verdict(INCONCLUSIVE, rule, f"measured {measured}: not a number")
    gap = abs(measured - stated)
    measured_text = f"measured {measured:.6g}, stated {stated:g}, |diff| {gap:.3g}"
    return Verdict(HOLDS if gap <= tolerance else CONTRADICTED, rule, measured_text)


def at_most(value: float, limit: float, what: str) -> Verdict:
    """holds if ``value <= limit``, contradicted if above, inconclusive if not finite."""
    rule = f"{what}: holds if <= {limit:g}, else contradicted"
    if not math.isfinite(value):
        return Verdict(INCONCLUSIVE, rule, f"measured {value}: not a number")
    return Verdict(HOLDS if value <= limit else CONTRADICTED, rule, f"measured {_fmt(value)}")


def at_least(value: float, limit: float, what: str) -> Verdict:
    """holds if ``value >= limit``, contradicted if below, inconclusive if not finite."""
    rule = f"{what}: holds if >= {limit:g}, else contradicted"
    if not math.isfinite(value):
        return Verdict(INCONCLUSIVE, rule, f"measured {value}: not a number")
    return Verdict(HOLDS if value >= limit else CONTRADICTED, rule, f"measured {_fmt(value)}")


def band(value: float, holds_at_most: float, contradicted_from: float, what: str) -> Verdict:
    """Three-way rule for "this stays small": holds if ``value <= holds_at_most``,
    contradicted if ``value >= contradicted_from``, inconclusive in between or if not finite."""
    if not holds_at_most < contradicted_from:
        raise ValueError(
            f"band needs holds_at_most < contradicted_from; got {holds_at_most} and "
            f"{contradicted_from}"
        )
    rule = (
        f"{what}: holds if <= {holds_at_most:g}, contradicted if >= {contradicted_from:g}, "
        "inconclusive in between"
    )
    if not math.isfinite(value):
        return Verdict(INCONCLUSIVE, rule, f"measured {value}: not a number")
    if value <= holds_at_most:
        verdict = HOLDS
    elif value >= contradicted_from:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return Verdict(verdict, rule, f"measured {_fmt(value)}")


# --- the ledger's records ----------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A link to the MLflow run (or runs table) a verdict came from."""

    label: str
    url: str


@dataclass(frozen=True)
class ClaimResult:
    """One row of the ledger.

    Attributes:
        claim: "C1" ... "C16".
        title: short name of the claim.
        says: what the tutorial says.
        measured: the key numbers, in one line.
        verdict: holds / contradicted / inconclusive (the output of ``rule``).
        rule: how the verdict follows from the parts' verdicts or numbers.
        parts: each measured comparison with its own rule and verdict.
        source: where the numbers come from ("" = computed in the ledger run itself).
        links: MLflow runs the numbers come from, besides the ledger run.
        notes: plain-language explanations, e.g. why a claim is wrong as stated.
        measured_here: some of the numbers were measured in the ledger run itself.
    """

    claim: str
    title: str
    says: str
    measured: str
    verdict: str
    rule: str
    parts: tuple[ClaimPart, ...] = ()
    source: str = ""
    links: tuple[Link, ...] = ()
    notes: tuple[str, ...] = ()
    measured_here: bool = True


def _result(
    claim: str,
    parts: Sequence[ClaimPart],
    measured: str,
    rule: str = PARTS_RULE,
    notes: Sequence[str] = (),
    source: str = "",
    links: tuple[Link, ...] = (),
    measured_here: bool = True,
) -> ClaimResult:
    """A claim's row whose verdict combines its parts' verdicts (see ``PARTS_RULE``)."""
    title, says = STATEMENTS[claim]
    return ClaimResult(
        claim=claim,
        title=title,
        says=says,
        measured=measured,
        verdict=combine_verdicts([p.verdict.verdict for p in parts]),
        rule=rule,
        parts=tuple(parts),
        source=source,
        links=links,
        notes=tuple(notes),
        measured_here=measured_here,
    )


def _contradicted(parts: Sequence[ClaimPart], *contexts: str) -> bool:
    return any(p.verdict.verdict == CONTRADICTED for p in parts if p.context in contexts)


# --- C1, C2: self-information and entropy ------------------------------------------------

C1_STATED: dict[float, float] = {0.7: 0.36, 0.2: 1.61, 0.1: 2.30, 1.0: 0.0}
ROUNDING_TOLERANCE = 0.005  # the tutorials give two decimals: half a unit of the last digit


def measure_c1() -> dict[float, float]:
    """-ln p for each probability of C1, in nats."""
    return {p: float(info.self_information(p)) for p in C1_STATED}


def evaluate_c1(values: Mapping[float, float]) -> ClaimResult:
    """C1: each -ln p against the stated value, within the stated rounding."""
    parts = [
        ClaimPart(
            f"p = {p:g}",
            close_to(values[p], stated, ROUNDING_TOLERANCE, f"-ln {p:g} in nats vs {stated:.2f}"),
        )
        for p, stated in C1_STATED.items()
    ]
    measured = ", ".join(f"-ln {p:g} = {values[p]:.4f}" for p in C1_STATED)
    rule = f"every value within ±{ROUNDING_TOLERANCE:g} of the stated one (its rounding)"
    return _result("C1", parts, measured, f"holds if {rule}, else contradicted")


@dataclass(frozen=True)
class EntropyNumbers:
    """C2's measurements.

    Attributes:
        example_nats: H(0.7, 0.2, 0.1) in nats.
        fair_coin_bits / fair_coin_nats: H(0.5, 0.5).
        certain_coin_bits: H(1, 0).
        max_binary_bits: the largest H(p, 1 - p) over a grid of p.
        argmax_binary_p: the p where it is reached.
        expected_information_gap: max |H(p) - sum p_i (-ln p_i)| over random distributions.
    """

    example_nats: float
    fair_coin_bits: float
    fair_coin_nats: float
    certain_coin_bits: float
    max_binary_bits: float
    argmax_binary_p: float
    expected_information_gap: float


def measure_c2(n_random: int = 1000, seed: int = 0) -> EntropyNumbers:
    """Measures the entropies of C2 (and the definition on random distributions)."""
    grid = np.linspace(0.0, 1.0, 1001)
    binary = np.asarray(info.entropy(np.stack([grid, 1 - grid], axis=1), base=2))
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(5), size=n_random)
    expected_info = (p * np.asarray(info.self_information(p))).sum(axis=1)
    return EntropyNumbers(
        example_nats=float(info.entropy([0.7, 0.2, 0.1])),
        fair_coin_bits=float(info.entropy([0.5, 0.5], base=2)),
        fair_coin_nats=float(info.entropy([0.5, 0.5])),
        certain_coin_bits=float(info.entropy([1.0, 0.0], base=2)),
        max_binary_bits=float(binary.max()),
        argmax_binary_p=float(grid[int(np.argmax(binary))]),
        expected_information_gap=float(np.max(np.abs(np.asarray(info.entropy(p)) - expected_info))),
    )


def evaluate_c2(m: EntropyNumbers) -> ClaimResult:
    """C2: the example's entropy, the definition, and the fair-coin statement."""
    fair = "a fair coin's entropy is 0"
    parts = [
        ClaimPart(
            "H(0.7, 0.2, 0.1) is about 0.80 nats",
            close_to(m.example_nats, 0.80, ROUNDING_TOLERANCE, "entropy in nats vs 0.80"),
        ),
        ClaimPart(
            "entropy is the expected self-information",
            at_most(
                m.expected_information_gap,
                1e-12,
                "max |H(p) - sum p_i (-ln p_i)| over random 5-outcome distributions",
            ),
        ),
        ClaimPart(
            fair,
            close_to(m.fair_coin_bits, 0.0, ROUNDING_TOLERANCE, "H(0.5, 0.5) in bits vs 0"),
        ),
    ]
    notes = []
    if _contradicted(parts, fair):
        notes.append(
            f"Wrong as stated: a fair coin has H = {m.fair_coin_bits:.3f} bit = "
            f"{m.fair_coin_nats:.3f} nats, the largest entropy any two-outcome distribution can "
            f"have (max over p of H(p, 1-p) = {m.max_binary_bits:.3f} bit, at p = "
            f"{m.argmax_binary_p:g}): it is the most uncertain coin, not an almost certain one. "
            f"Entropy 0 belongs to a certain outcome: H(1, 0) = {m.certain_coin_bits:g} bit."
        )
    measured = (
        f"H(0.7,0.2,0.1) = {m.example_nats:.4f} nats; fair coin H = {m.fair_coin_bits:.4f} bit "
        f"= {m.fair_coin_nats:.4f} nats (the two-outcome maximum); H(1,0) = "
        f"{m.certain_coin_bits:g}"
    )
    return _result(
        "C2",
        parts,
        measured,
        f"numbers within ±{ROUNDING_TOLERANCE:g} of the stated ones, definition to 1e-12; "
        + PARTS_RULE,
        notes,
    )


# --- C3, C4: KL, cross-entropy, bits -----------------------------------------------------


@dataclass(frozen=True)
class KlNumbers:
    """C3's measurements over random pairs of 5-outcome distributions and one model family.

    Attributes:
        n_pairs: random (p, q) pairs.
        min_kl: smallest KL(p||q), computed independently with scipy's rel_entr.
        max_kl_vs_scipy: largest |info.kl_divergence - scipy| (the two implementations agree).
        max_kl_self: largest KL(p||p).
        min_kl_distinct: smallest KL(p||q) with p != q.
        max_asymmetry: largest |KL(p||q) - KL(q||p)|.
        max_identity_error: largest |H(p, q) - H(p) - KL(p||q)|.
        n_candidates: size of the model family (q_t proportional to p_true ** t).
        argmin_ce / argmin_kl / argmin_nll: index of each objective's minimum over the family.
        max_gap_error: largest |(CE - KL) - H(p)| over the family (H(p) is a constant offset).
    """

    n_pairs: int
    min_kl: float
    max_kl_vs_scipy: float
    max_kl_self: float
    min_kl_distinct: float
    max_asymmetry: float
    max_identity_error: float
    n_candidates: int
    argmin_ce: int
    argmin_kl: int
    argmin_nll: int
    max_gap_error: float


def measure_c3(n_pairs: int = 2000, n_labels: int = 1000, seed: int = 0) -> KlNumbers:
    """Measures C3 on random Dirichlet pairs, and the three objectives over a model family.

    The family is q_t proportional to (0.7, 0.2, 0.1) ** t (a temperature sweep); labels are
    drawn from (0.7, 0.2, 0.1) and p is their empirical distribution, the distribution the
    mean log-likelihood of those labels is a cross-entropy against.
    """
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(5), size=n_pairs)
    q = rng.dirichlet(np.ones(5), size=n_pairs)
    kl_pq = np.asarray(info.kl_divergence(p, q))
    kl_qp = np.asarray(info.kl_divergence(q, p))
    reference = special.rel_entr(p, q).sum(axis=1)
    identity = np.asarray(info.cross_entropy(p, q)) - np.asarray(info.entropy(p)) - kl_pq
    p_true = np.array([0.7, 0.2, 0.1])
    labels = rng.choice(3, size=n_labels, p=p_true)
    temperatures = np.linspace(0.25, 3.0, 111)
    family = p_true[None, :] ** temperatures[:, None]
    family /= family.sum(axis=1, keepdims=True)
    objectives = info.compare_objectives(info.empirical_distribution(labels, 3), family, labels)
    gap = objectives.cross_entropy - objectives.kl_divergence - objectives.entropy_p
    return KlNumbers(
        n_pairs=n_pairs,
        min_kl=float(reference.min()),
        max_kl_vs_scipy=float(np.max(np.abs(kl_pq - reference))),
        max_kl_self=float(np.max(np.asarray(info.kl_divergence(p, p)))),
        min_kl_distinct=float(kl_pq.min()),
        max_asymmetry=float(np.max(np.abs(kl_pq - kl_qp))),
        max_identity_error=float(np.max(np.abs(identity))),
        n_candidates=len(temperatures),
        argmin_ce=objectives.argmin_cross_entropy,
        argmin_kl=objectives.argmin_kl_divergence,
        argmin_nll=objectives.argmin_mean_nll,
        max_gap_error=float(np.max(np.abs(gap))),
    )


def evaluate_c3(m: KlNumbers) -> ClaimResult:
    """C3: non-negativity, zero only at p = q, asymmetry, the identity, the shared argmin."""
    argmins = {m.argmin_ce, m.argmin_kl, m.argmin_nll}
    parts = [
        ClaimPart(
            "KL(p||q) >= 0",
            at_least(m.min_kl, -1e-12, f"smallest KL over {m.n_pairs} random pairs (scipy)"),
        ),
        ClaimPart(
            "KL(p||p) = 0",
            at_most(m.max_kl_self, 1e-12, f"largest KL(p||p) over {m.n_pairs} random p"),
        ),
        ClaimPart(
            "KL(p||q) > 0 when p != q",
            at_least(m.min_kl_distinct, 1e-12, "smallest KL over the random pairs with p != q"),
        ),
        ClaimPart(
            "KL(p||q) != KL(q||p) in general",
            at_least(m.max_asymmetry, 1e-6, "largest |KL(p||q) - KL(q||p)| over the pairs"),
        ),
        ClaimPart(
            "H(p, q) = H(p) + KL(p||q)",
            at_most(m.max_identity_error, 1e-9, "largest |H(p,q) - H(p) - KL(p||q)|"),
        ),
        ClaimPart(
            "CE, KL and mean NLL have the same argmin",
            at_most(
                float(len(argmins) - 1),
                0,
                f"number of different argmins - 1 over a family of {m.n_candidates} models "
                f"(argmins: CE #{m.argmin_ce}, KL #{m.argmin_kl}, NLL #{m.argmin_nll})",
            ),
        ),
    ]
    measured = (
        f"min KL {m.min_kl:.3g}, max KL(p||p) {m.max_kl_self:.3g}, max |KL(p||q)-KL(q||p)| "
        f"{m.max_asymmetry:.3g}, identity error {m.max_identity_error:.2g} ({m.n_pairs} random "
        f"pairs); argmin CE/KL/NLL = #{m.argmin_ce}/#{m.argmin_kl}/#{m.argmin_nll} of "
        f"{m.n_candidates}, CE - KL - H(p) within {m.max_gap_error:.2g}"
    )
    return _result(
        "C3", parts, measured, "identities to 1e-9/1e-12, one shared argmin; " + PARTS_RULE
    )


def prefix_code(q: Sequence[float]) -> tuple[str, ...]:
    """A canonical prefix code with word lengths -log2 q_i (q must be dyadic: powers of 1/2).

    Args:
        q: the distribution the code is built for.

    Returns:
        One code word per outcome.

    Raises:
        ValueError: q is not a distribution of powers of 1/2.
    """
    q_arr = info.validate_distribution(q, name="q")
    lengths = -np.log2(q_arr)
    if np.any(np.abs(lengths - np.round(lengths)) > 1e-12):
        raise ValueError(f"q={list(q_arr)} is not dyadic; every q_i must be a power of 1/2")
    order = np.argsort(lengths, kind="stable")
    words: list[str] = [""] * len(q_arr)
    code, previous = 0, 0
    for index in order:
        length = round(float(lengths[index]))
        code <<= length - previous
        words[int(index)] = format(code, f"0{length}b")
        code, previous = code + 1, length
    return tuple(words)


def _decode(bits: str, words: Sequence[str]) -> list[int]:
    lookup = {word: index for index, word in enumerate(words)}
    out, current = [], ""
    for bit in bits:
        current += bit
        if current in lookup:
            out.append(lookup[current])
            current = ""
    return out


@dataclass(frozen=True)
class BitsNumbers:
    """C4's measurements.

    Attributes:
        max_conversion_error: largest |H_2(p, q) - H_e(p, q) / ln 2| over random pairs.
        p / q: the source distribution and the one the code is built for.
        code_for_q: the prefix code built for q.
        n_events: events drawn from p and encoded.
        cross_entropy_bits: H_2(p, q).
        bits_per_event: measured length of the encoded sample / number of events.
        standard_error: of bits_per_event (std of one word's length / sqrt(n)).
        entropy_bits / bits_per_event_own_code: the same with the code built for p.
        own_standard_error: standard error of bits_per_event_own_code.
        decoding_errors: events the decoder got wrong (0 for a prefix code).
    """

    max_conversion_error: float
    p: tuple[float, ...]
    q: tuple[float, ...]
    code_for_q: tuple[str, ...]
    n_events: int
    cross_entropy_bits: float
    bits_per_event: float
    standard_error: float
    entropy_bits: float
    bits_per_event_own_code: float
    own_standard_error: float
    decoding_errors: int


def measure_c4(
    p: Sequence[float] = (0.5, 0.25, 0.125, 0.125),
    q: Sequence[float] = (0.125, 0.125, 0.25, 0.5),
    n_events: int = 100_000,
    seed: int = 0,
) -> BitsNumbers:
    """Encodes a sample from p with a code built for q (and one built for p), counting bits."""
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.ones(5), size=1000)
    b = rng.dirichlet(np.ones(5), size=1000)
    conversion = np.asarray(info.cross_entropy(a, b, base=2)) - np.asarray(
        info.cross_entropy(a, b)
    ) / math.log(2)
    sample = rng.choice(len(p), size=n_events, p=np.asarray(p))

    def encode(words: Sequence[str]) -> tuple[float, float, str]:
        lengths = np.array([len(words[x]) for x in sample], dtype=np.float64)
        bits = "".join(words[x] for x in sample)
        return len(bits) / n_events, float(lengths.std(ddof=1) / math.sqrt(n_events)), bits

    code_q = prefix_code(q)
    per_event, se, bits = encode(code_q)
    own_per_event, own_se, _ = encode(prefix_code(p))
    decoded = np.asarray(_decode(bits, code_q))
    errors = n_events if decoded.shape != sample.shape else int(np.sum(decoded != sample))
    return BitsNumbers(
        max_conversion_error=float(np.max(np.abs(conversion))),
        p=tuple(float(v) for v in p),
        q=tuple(float(v) for v in q),
        code_for_q=code_q,
        n_events=n_events,
        cross_entropy_bits=float(info.cross_entropy(p, q, base=2)),
        bits_per_event=per_event,
        standard_error=se,
        entropy_bits=float(info.entropy(p, base=2)),
        bits_per_event_own_code=own_per_event,
        own_standard_error=own_se,
        decoding_errors=errors,
    )


SAMPLING_SIGMAS = 4.0  # a sample mean this many standard errors away is not sampling noise


def evaluate_c4(m: BitsNumbers) -> ClaimResult:
    """C4: the unit conversion, and measured code lengths against H_2(p, q) and H_2(p)."""
    parts = [
        ClaimPart(
            "bits = nats / ln 2",
            at_most(m.max_conversion_error, 1e-12, "largest |H_2(p,q) - H_e(p,q)/ln 2|"),
        ),
        ClaimPart(
            "a code built for q spends H_2(p, q) bits per event from p",
            close_to(
                m.bits_per_event,
                m.cross_entropy_bits,
                SAMPLING_SIGMAS * m.standard_error,
                f"measured bits per event ({m.n_events} events) vs H_2(p,q), tolerance "
                f"{SAMPLING_SIGMAS:g} standard errors",
            ),
        ),
        ClaimPart(
            "a code built for p spends H_2(p) (KL = the extra bits)",
            close_to(
                m.bits_per_event_own_code,
                m.entropy_bits,
                SAMPLING_SIGMAS * m.own_standard_error,
                f"bits per event vs H_2(p), tolerance {SAMPLING_SIGMAS:g} standard errors",
            ),
        ),
        ClaimPart(
            "the code is decodable",
            at_most(float(m.decoding_errors), 0, "events decoded wrongly"),
        ),
    ]
    measured = (
        f"code {list(m.code_for_q)} built for q={list(m.q)} on {m.n_events} events from "
        f"p={list(m.p)}: {m.bits_per_event:.4f} bits/event vs H_2(p,q) = "
        f"{m.cross_entropy_bits:.4f}; own code {m.bits_per_event_own_code:.4f} vs H_2(p) = "
        f"{m.entropy_bits:.4f}; nats/ln 2 error {m.max_conversion_error:.2g}"
    )
    return _result(
        "C4",
        parts,
        measured,
        f"code lengths within {SAMPLING_SIGMAS:g} standard errors, conversion to 1e-12; "
        + PARTS_RULE,
    )


# --- C5-C9: the losses themselves --------------------------------------------------------

C5_STATED = 2.303
C5_TOLERANCE = 0.0005  # stated to three decimals
EQUAL_LOSS_TOLERANCE = 1e-6  # float32 Keras losses


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
    return _result(
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
            at_most(m.max_abs_error_vs_numpy, 1e-6, "largest |Keras gradient - (softmax(z) - y)|"),
        ),
        ClaimPart(
            "the two predictions' gradients differ",
            at_least(
                m.max_abs_gradient_difference,
                1e-6,
                "largest difference between the two gradients (beyond float32 noise)",
            ),
        ),
    ]
    grads = "; ".join("[" + ", ".join(f"{v:.2f}" for v in row) + "]" for row in m.keras_gradients)
    measured = (
        f"losses {m.losses[0]:.4f} and {m.losses[1]:.4f}, gradients {grads} "
        f"(max difference {m.max_abs_gradient_difference:.3f})"
    )
    return _result(
        "C6",
        parts,
        measured,
        "Keras gradient = softmax(z) - y within 1e-6 and the two gradients differ by >= 1e-6; "
        + PARTS_RULE,
    )


NORMALISERS: dict[str, str] = {
    "sum": "1 (a plain sum)",
    "batch_size": "the batch size",
    "non_ignored_count": "the number of non-ignored samples",
    "sum_of_weights_non_ignored": "the sum of the non-ignored samples' weights",
}


def evaluate_c7(
    agreement: semantics.LogSoftmaxAgreement, reduction: semantics.WeightedReduction
) -> ClaimResult:
    """C7: CE from logits vs NLL of log-softmax; weights, ignored class, reductions."""
    rtol = semantics.KERAS_RTOL
    scale = max(agreement.max_abs_nll, 1.0)
    total = max(reduction.candidates["sum"], 1.0)
    keras_sum = reduction.keras_values["sum"]
    keras_mean = reduction.keras_values["sum_over_batch_size"]
    torch_mean = reduction.pytorch_values["mean"]
    mean_matches = reduction.matched.get("sum_over_batch_size", ())
    parts = [
        ClaimPart(
            "categorical CE from logits = -log_softmax(z)[y]",
            at_most(
                agreement.max_abs_diff_categorical / scale,
                rtol,
                f"largest relative difference over {agreement.n_samples} random samples",
            ),
        ),
        ClaimPart(
            "sparse CE from logits = -log_softmax(z)[y]",
            at_most(agreement.max_abs_diff_sparse / scale, rtol, "largest relative difference"),
        ),
        ClaimPart(
            "class weights + ignored class, reduction none",
            at_most(
                reduction.max_abs_diff_none / total,
                rtol,
                "largest relative |Keras - w[y] nll (0 where ignored)|",
            ),
        ),
        ClaimPart(
            "reduction sum",
            at_most(
                abs(keras_sum - reduction.candidates["sum"]) / total,
                rtol,
                "relative |Keras sum - sum of weighted losses|",
            ),
        ),
        ClaimPart(
            "reduction mean (sum_over_batch_size) has one identifiable normaliser",
            one_match(mean_matches, sorted(reduction.candidates)),
        ),
        ClaimPart(
            "frameworks differ on the weighted mean",
            at_least(
                abs(keras_mean - torch_mean) / abs(torch_mean),
                1e-3,
                "relative |Keras mean - PyTorch mean| on the same weighted, masked batch",
            ),
        ),
    ]
    if "mean_with_sample_weight" in reduction.keras_values:
        parts.append(
            ClaimPart(
                "Keras mean_with_sample_weight = PyTorch's mean",
                at_most(
                    abs(reduction.keras_values["mean_with_sample_weight"] - torch_mean)
                    / abs(torch_mean),
                    rtol,
                    "relative difference",
                ),
            )
        )
    normaliser = " or ".join(NORMALISERS[m] for m in mean_matches) or "none of the candidates"
    measured = (
        f"from logits = NLL of log-softmax to {agreement.max_abs_diff_categorical:.2g}; "
        f"weighted ({reduction.n_ignored}/{reduction.n_samples} ignored): Keras mean "
        f"{keras_mean:.4f} divides by {normaliser}, PyTorch mean {torch_mean:.4f} by the sum "
        f"of the weights (ratio {keras_mean / torch_mean:.2f})"
    )
    notes = [
        "Where the frameworks differ: Keras's default reduction (sum_over_batch_size) divides "
        f"the weighted sum by {normaliser} ({keras_mean:.4f}); PyTorch's "
        f"mean divides by the sum of the non-ignored weights ({torch_mean:.4f}). The PyTorch "
        "values come from its documented formula written in NumPy (torch is not installed)."
    ]
    return _result("C7", parts, measured, f"relative tolerance {rtol:g}; " + PARTS_RULE, notes)


def one_match(matches: Sequence[str], candidates: Sequence[str]) -> Verdict:
    """holds if a value equals exactly one candidate, contradicted if none, inconclusive if
    several (the measurement cannot tell them apart)."""
    rule = f"equals exactly one of {list(candidates)} -> holds; none -> contradicted; several -> "
    rule += "inconclusive"
    measured = f"equals {list(matches)}" if matches else "equals none of them"
    if len(matches) == 1:
        return Verdict(HOLDS, rule, measured)
    return Verdict(CONTRADICTED if not matches else INCONCLUSIVE, rule, measured)


def _precision_limit(dtype: str, max_loss: float) -> float:
    """What "to numerical precision" allows: 8 machine epsilons of the largest loss."""
    return 8 * float(np.finfo(np.dtype(dtype)).eps) * max(1.0, max_loss)


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
                f"largest difference over {m.n_samples} random logits (limit 8 eps x the "
                f"largest loss {m.max_loss:.3g})",
            ),
        )
        for m in (float32, float64)
    ]


def evaluate_c9(effect: semantics.ClippingEffect) -> ClaimResult:
    """C9: at logits whose true probability is below epsilon, clipping caps and flattens."""
    clipped = [pt for pt in effect.points if pt.exact_loss > effect.loss_cap]
    if not clipped:
        verdict = Verdict(
            INCONCLUSIVE,
            "needs a logit whose exact loss exceeds the clip cap -ln(eps)",
            f"no probed logit beyond the cap {effect.loss_cap:.3f}",
        )
        return _result("C9", [ClaimPart("confidently wrong logits", verdict)], verdict.measured)
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
    return _result(
        "C9",
        parts,
        points,
        "where the exact loss exceeds -ln(eps): clipped loss = -ln(eps) within 1e-4 with |grad| "
        "<= 1e-6, logits loss exact within 1e-5 (relative) with |grad| >= 0.5; " + PARTS_RULE,
        notes,
    )


# --- C10: loss scale ---------------------------------------------------------------------


@dataclass(frozen=True)
class LossScale:
    """Per-sample cross-entropy of an untrained and a trained model on one dataset's test rows.

    Attributes:
        data: the dataset's name.
        n_classes: number of classes.
        chance_loss: ln K, the loss of the uniform prediction.
        untrained_mean / untrained_max: mean and largest per-sample loss before training.
        trained_mean / trained_max: the same after training.
        trained_accuracy: test accuracy after training.
        n_rows: test rows scored.
        epochs: training epochs.
    """

    data: str
    n_classes: int
    chance_loss: float
    untrained_mean: float
    untrained_max: float
    trained_mean: float
    trained_max: float
    trained_accuracy: float
    n_rows: int
    epochs: int


def measure_loss_scale(
    data: DataConfig,
    model_config: ModelConfig,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
) -> LossScale:
    """Trains the run's model with the compiled loop (Adam, BCE or sparse CCE) on ``data``.

    Args:
        data: the dataset (binary -> one sigmoid unit + BCE; more classes -> softmax + CCE).
        model_config: the model (``config.model``), built by ``xent_tf.build``.
        epochs: training epochs.
        batch_size: rows per step.
        learning_rate: Adam's rate.
        seed: weights and shuffling.

    Returns:
        Per-sample test losses before and after training, summarised.
    """
    keras.utils.set_random_seed(seed)
    dataset = build_dataset(data)
    binary = dataset.n_classes == 2
    spec = build_loss(LossConfig(name="bce" if binary else "sparse_cce"), dataset)
    model = build_model(model_config, dataset, spec, seed)
    train, val, test = tensor_splits(dataset, spec)
    per_sample = (
        keras.losses.BinaryCrossentropy(reduction="none")
        if binary
        else keras.losses.SparseCategoricalCrossentropy(reduction="none")
    )

    def test_losses() -> tuple[np.ndarray, float]:
        """Per-sample test losses and test accuracy of the model as it is now."""
        outputs = model(test.x, training=False)
        # Keras sigmoid/softmax outputs carry their logits, so these are exact (not clipped).
        losses = np.asarray(
            keras.ops.convert_to_numpy(per_sample(test.targets, outputs)), dtype=np.float64
        )
        probabilities = np.asarray(keras.ops.convert_to_numpy(outputs))
        predicted = (
            (probabilities[:, 0] > 0.5).astype(np.int64) if binary else probabilities.argmax(axis=1)
        )
        return losses, float(np.mean(predicted == dataset.test.y))

    before, _ = test_losses()
    loop = CompiledLoop(
        model,
        spec.loss,
        build_optimizer(AdamConfig(learning_rate=learning_rate)),
        batch_size,
        False,
    )
    rates = schedule_rates(
        ConstantScheduleConfig(), learning_rate, epochs, steps_per_epoch(len(train), batch_size)
    )
    fit(loop, train, val, rates, epochs, seed)
    after, accuracy = test_losses()
    return LossScale(
        data=data.name,
        n_classes=dataset.n_classes,
        chance_loss=math.log(dataset.n_classes),
        untrained_mean=float(before.mean()),
        untrained_max=float(before.max()),
        trained_mean=float(after.mean()),
        trained_max=float(after.max()),
        trained_accuracy=accuracy,
        n_rows=len(test),
        epochs=epochs,
    )


POOR_MODEL_TOLERANCE = 0.1  # how close to 1 "close to 1" is


def evaluate_c10(scales: Sequence[LossScale]) -> ClaimResult:
    """C10: is cross-entropy bounded by 1, and does a poor (chance-level) model score about 1?"""
    parts: list[ClaimPart] = []
    for s in scales:
        for state, largest in (("untrained", s.untrained_max), ("trained", s.trained_max)):
            parts.append(
                ClaimPart(
                    f"{s.data} ({s.n_classes} classes), {state}: the loss stays within [0, 1]",
                    at_most(largest, 1.0, f"largest per-sample test loss ({s.n_rows} rows)"),
                )
            )
        parts.append(
            ClaimPart(
                f"{s.data}: a poor (untrained, chance-level) model scores close to 1",
                close_to(s.untrained_mean, 1.0, POOR_MODEL_TOLERANCE, "its mean test loss vs 1"),
            )
        )
        parts.append(
            ClaimPart(
                f"{s.data}: the trained model scores closer to 0 than the untrained one",
                at_least(
                    s.untrained_mean - s.trained_mean,
                    0.0,
                    f"untrained - trained mean test loss (trained accuracy "
                    f"{s.trained_accuracy:.3f})",
                ),
            )
        )
    measured = "; ".join(
        f"{s.data}: largest per-sample loss untrained {s.untrained_max:.2f}, trained "
        f"{s.trained_max:.2f}; mean untrained {s.untrained_mean:.3f} (chance ln {s.n_classes} "
        f"= {s.chance_loss:.3f}), trained {s.trained_mean:.3f} (acc {s.trained_accuracy:.3f})"
        for s in scales
    )
    notes = []
    bounded = [p for p in parts if "within [0, 1]" in p.context]
    if any(p.verdict.verdict == CONTRADICTED for p in bounded):
        worst = max(max(s.trained_max, s.untrained_max) for s in scales)
        notes.append(
            "Wrong as stated: cross-entropy is not bounded by 1. A sample's loss is -ln of the "
            "probability given to its true class, which grows without limit as that probability "
            f"falls: the largest per-sample loss measured here is {worst:.2f}, and a trained "
            "model's confidently wrong samples score far above 1 while its mean is small."
        )
    poor = [p for p in parts if "close to 1" in p.context]
    if any(p.verdict.verdict == CONTRADICTED for p in poor):
        chance = ", ".join(
            f"ln {s.n_classes} = {s.chance_loss:.3f} ({s.data}: untrained mean "
            f"{s.untrained_mean:.3f})"
            for s in scales
        )
        notes.append(
            "There is no fixed 'poor' value: a chance-level model scores about ln K for K "
            f"classes ({chance}), so 1 is neither a ceiling nor the mark of a poor model. Compare "
            "a loss with ln K, or with the loss of predicting the class frequencies."
        )
    return _result(
        "C10",
        parts,
        measured,
        f"contradicted if any per-sample loss exceeds 1 or a chance-level model's mean loss is "
        f"not within 1 ± {POOR_MODEL_TOLERANCE:g}; " + PARTS_RULE,
        notes,
    )


# --- C11: accuracy and step activations --------------------------------------------------

LOSS_STILL_BELOW = 0.01  # a relative loss drop up to 1% counts as "not moving"
LOSS_MOVED_FROM = 0.05  # from 5% it clearly moved


def evaluate_c11(
    gradients: semantics.AccuracyGradients, training: Mapping[str, semantics.TrainingOutcome]
) -> ClaimResult:
    """C11: accuracy's gradient, and what a step-activation network's training does."""
    nonzero_accuracy_gradients = sum(not none for none in gradients.accuracy_gradient_is_none)
    nonzero_accuracy_gradients += sum(g > 0 for g in gradients.sign_accuracy_gradient_max_abs)
    step, sigmoid = training["step"], training["sigmoid"]
    drop = (step.loss_before - step.loss_after) / step.loss_before
    sigmoid_drop = (sigmoid.loss_before - sigmoid.loss_after) / sigmoid.loss_before
    share_changed = gradients.perturbations_changing_accuracy / max(gradients.n_perturbations, 1)
    parts = [
        ClaimPart(
            "the gradient of accuracy w.r.t. the weights is zero",
            at_most(
                float(nonzero_accuracy_gradients),
                0,
                f"weights (of {len(gradients.weight_names)}) with a nonzero accuracy gradient "
                "(GradientTape; None = no gradient at all)",
            ),
        ),
        ClaimPart(
            "... almost everywhere (finite differences)",
            band(
                share_changed,
                0.1,
                0.5,
                f"share of {gradients.n_perturbations} random weight perturbations (relative size "
                f"{gradients.perturbation:g}) that changed the accuracy",
            ),
        ),
        ClaimPart(
            "the cross-entropy gradient, by contrast, is not zero",
            at_least(
                min(gradients.loss_gradient_max_abs),
                1e-8,
                "smallest per-weight max |d loss / d w|",
            ),
        ),
        ClaimPart(
            "step net: no gradient reaches the weights before the step",
            at_most(
                step.hidden_kernel_change,
                0.0,
                "largest change of the hidden kernel over training",
            ),
        ),
        ClaimPart(
            "step net: its loss does not move",
            band(
                drop,
                LOSS_STILL_BELOW,
                LOSS_MOVED_FROM,
                "relative drop of the step net's training loss",
            ),
        ),
    ]
    measured = (
        f"accuracy gradient: None for {sum(gradients.accuracy_gradient_is_none)}/"
        f"{len(gradients.weight_names)} weights, {gradients.perturbations_changing_accuracy}/"
        f"{gradients.n_perturbations} perturbations changed accuracy; step net: hidden kernel "
        f"change {step.hidden_kernel_change:g}, loss {step.loss_before:.4f} -> "
        f"{step.loss_after:.4f} ({drop:.1%}), accuracy {step.accuracy_before:.3f} -> "
        f"{step.accuracy_after:.3f}; sigmoid net loss {sigmoid.loss_before:.4f} -> "
        f"{sigmoid.loss_after:.4f} ({sigmoid_drop:.1%})"
    )
    notes = []
    if _contradicted(parts, "step net: its loss does not move"):
        notes.append(
            "Wrong in part: accuracy really gives no gradient, and no gradient flows back "
            "through a step (the hidden kernel is unchanged), but the step network still "
            "learns: its output layer sits after the step and gets the ordinary cross-entropy "
            f"gradient, so it fits a linear model on fixed random binary features. Its loss fell "
            f"by {drop:.1%} (accuracy {step.accuracy_before:.3f} -> {step.accuracy_after:.3f});"
            f" the same network with a sigmoid fell by {sigmoid_drop:.1%}."
        )
    return _result(
        "C11",
        parts,
        measured,
        f"loss 'not moving' = relative drop <= {LOSS_STILL_BELOW:g} (moved from "
        f"{LOSS_MOVED_FROM:g}); " + PARTS_RULE,
        notes,
    )


# --- C12-C15 (and C8's training half): studies in the MLflow store -----------------------


@dataclass(frozen=True)
class StudyEvidence:
    """What the ledger found (or ran) for one study.

    Attributes:
        study: the study's name (= its MLflow experiment).
        checks: the study's claim checks; empty when no usable study exists.
        parent: the sweep parent run the checks come from.
        n_seeds: distinct seeds among its child runs.
        n_runs: child runs.
        ran_now: the ledger ran this study itself.
        skipped: sweeps in the store that were not used, and why.
        problem: why there are no checks (empty when there are).
        tracking_uri: the store (for links into its UI).
    """

    study: str
    checks: tuple[ClaimCheck, ...] = ()
    parent: tracking.StudyRun | None = None
    n_seeds: int = 0
    n_runs: int = 0
    ran_now: bool = False
    skipped: tuple[str, ...] = ()
    problem: str = ""
    tracking_uri: str = ""

    def describe(self) -> str:
        """One line: which sweep, how many seeds and runs, and whether the ledger ran it."""
        if self.parent is None:
            return f"{self.study}: no usable study ({self.problem})"
        how = "run by this ledger" if self.ran_now else "latest finished study in the store"
        return (
            f"{self.study}: sweep {self.parent.run_id[:8]} ({how}; {self.n_seeds} seeds, "
            f"{self.n_runs} runs)"
        )


# (study, n_seeds, tracking_uri) -> runs the study's sweep into that store.
StudyRunner = Callable[[str, int, str], None]


def subprocess_study_runner(study: str, n_seeds: int, tracking_uri: str) -> None:
    """Runs ``experiments/run.py -m +experiment=<study> seed=0,...`` as a subprocess.

    Args:
        study: the study (experiment config) name.
        n_seeds: seeds 0 .. n_seeds - 1.
        tracking_uri: the store the ledger reads (relative SQLite paths: same working directory).

    Raises:
        RuntimeError: the sweep exited with an error.
    """
    command = [
        sys.executable,
        str(_RUN_SCRIPT),
        "-m",
        f"+experiment={study}",
        f"seed={','.join(str(s) for s in range(n_seeds))}",
        f"tracking.uri={tracking_uri}",
    ]
    log.info("running the %s study with %d seeds: %s", study, n_seeds, " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited with status {completed.returncode}")


def study_problem(parent: tracking.StudyRun, study: str, records: Sequence[RunRecord]) -> str:
    """Why a sweep in the store cannot be used for ``study`` ("" when it can).

    A child run whose loss went NaN/inf is a measured outcome (a diverging learning rate), not
    a failure; any other child the study's report would use that did not finish, or a variant
    missing seeds the others have, makes the study incomplete.

    Args:
        parent: the sweep's parent run.
        study: the study the ledger needs.
        records: the sweep's child runs (statuses and errors suffice).

    Returns:
        The reason, or "".
    """
    if parent.status != "FINISHED":
        if parent.status == "RUNNING":
            return "parent run still RUNNING (in progress, or its sweep died without ending it)"
        return f"parent run ended {parent.status}"
    if parent.study != study:
        return f"the sweep is tagged study {parent.study!r}, not {study!r}"
    if not records:
        return "no child runs"
    # Judge the runs the study's report uses (a re-run's later attempt replaces an earlier one).
    variants = group_variants(records, STUDIES[study].group_by)
    used = [r for v in variants for r in v.runs]
    broken = [r for r in used if not r.finished and not r.diverged]
    if broken:
        first = (broken[0].error or "no error recorded").splitlines()[0][:160]
        statuses = sorted({r.status for r in broken})
        return f"{len(broken)} of {len(used)} child runs {'/'.join(statuses)} (first: {first})"
    seeds = {v.label: {r.seed for r in v.runs} for v in variants}
    every = set().union(*seeds.values())
    lacking = {label: sorted(every - s) for label, s in seeds.items() if s != every}
    if lacking:
        label, missing = next(iter(lacking.items()))
        return f"incomplete: variant '{label}' lacks seeds {missing} ({len(lacking)} variants)"
    return ""


def _use_study(
    parent: tracking.StudyRun, records: Sequence[RunRecord], tracking_uri: str, out_dir: Path
) -> tuple[ClaimCheck, ...]:
    from xent_tf.report import publish_report  # matplotlib only when a study is reported

    report, _ = publish_report(tracking_uri, out_dir, parent_run_id=parent.run_id, upload=False)
    return tuple(report.checks)


def find_study(
    study: str,
    tracking_uri: str,
    out_dir: Path,
    seeds: int,
    rerun: bool,
    runner: StudyRunner | None,
) -> StudyEvidence:
    """The newest finished, complete sweep of ``study`` in the store, run first when needed.

    Args:
        study: the study's name.
        tracking_uri: the store.
        out_dir: where the study's rebuilt report is written.
        seeds: seeds to run the study with when the ledger runs it.
        rerun: run it even when a usable sweep exists.
        runner: how to run a study; None = never run one (the claim becomes inconclusive).

    Returns:
        The study's checks and where they come from, or the reason there are none.
    """
    skipped: list[str] = []
    known = tracking.study_parents(tracking_uri, study)
    if not rerun:
        for parent in known:
            records = tracking.fetch_children(tracking_uri, parent, ())
            problem = study_problem(parent, study, records)
            if problem:
                skipped.append(f"sweep {parent.run_id[:8]} not used: {problem}")
                continue
            return _evidence(study, parent, records, tracking_uri, out_dir, False, skipped)
    if runner is None:
        reason = "none finished and complete in the store, and running studies is switched off"
        return StudyEvidence(study, skipped=tuple(skipped), problem=reason)
    try:
        runner(study, seeds, tracking_uri)
    except Exception as error:
        log.exception("running the %s study failed", study)
        return StudyEvidence(study, skipped=tuple(skipped), problem=f"running it failed: {error}")
    old_ids = {parent.run_id for parent in known}
    new = [p for p in tracking.study_parents(tracking_uri, study) if p.run_id not in old_ids]
    if not new:
        return StudyEvidence(
            study, skipped=tuple(skipped), problem="running it left no new sweep in the store"
        )
    records = tracking.fetch_children(tracking_uri, new[0], ())
    problem = study_problem(new[0], study, records)
    if problem:
        skipped.append(f"sweep {new[0].run_id[:8]} (just run) not used: {problem}")
        return StudyEvidence(study, skipped=tuple(skipped), problem=f"the new sweep: {problem}")
    return _evidence(study, new[0], records, tracking_uri, out_dir, True, skipped)


def _evidence(
    study: str,
    parent: tracking.StudyRun,
    records: Sequence[RunRecord],
    tracking_uri: str,
    out_dir: Path,
    ran_now: bool,
    skipped: list[str],
) -> StudyEvidence:
    return StudyEvidence(
        study=study,
        checks=_use_study(parent, records, tracking_uri, out_dir / study),
        parent=parent,
        n_seeds=len({r.seed for r in records}),
        n_runs=len(records),
        ran_now=ran_now,
        skipped=tuple(skipped),
        tracking_uri=tracking_uri,
    )


def _checks_for(claim: str, checks: Sequence[ClaimCheck]) -> list[ClaimCheck]:
    """The study checks of a ledger claim: "C12" takes C12 and C12b, never C1 taking C12."""
    return [
        c for c in checks if c.claim == claim or (c.claim[:-1] == claim and c.claim[-1].isalpha())
    ]


def evaluate_study_claim(
    claim: str, evidence: StudyEvidence, exact_parts: Sequence[ClaimPart] = ()
) -> ClaimResult:
    """A training claim's row from its study's checks (and, for C8, the exact parts).

    The verdict combines the checks' own verdicts (each already applies its study's rules,
    e.g. C12 shows Adam contexts without counting them) with any exact parts.
    """
    checks = _checks_for(claim, evidence.checks)
    parts = list(exact_parts)
    verdicts = [p.verdict.verdict for p in exact_parts]
    links: tuple[Link, ...] = ()
    if evidence.parent is not None:
        address = tracking.ui_address(evidence.tracking_uri)
        parent = evidence.parent
        links = (
            Link(
                f"{evidence.study} sweep {parent.run_id[:8]}",
                tracking.run_url(parent.experiment_id, parent.run_id, address),
            ),
            Link(f"{evidence.study} runs", tracking.experiment_url(parent.experiment_id, address)),
        )
    if not checks:
        reason = evidence.problem or f"the study reported no {claim} check"
        parts.append(
            ClaimPart(
                f"study {evidence.study}",
                Verdict(INCONCLUSIVE, "needs a finished, complete study", reason),
            )
        )
        verdicts.append(INCONCLUSIVE)
    for check in checks:
        verdicts.append(check.verdict)
        parts.append(
            ClaimPart(
                f"[{check.claim} overall] {check.statement}",
                Verdict(check.verdict, check.combine_rule, f"{len(check.parts)} parts below"),
            )
        )
        parts += [ClaimPart(f"[{check.claim}] {p.context}", p.verdict) for p in check.parts]
    counts = {
        v: sum(p.verdict.verdict == v for p in parts if "overall]" not in p.context)
        for v in (HOLDS, CONTRADICTED, INCONCLUSIVE)
    }
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    check_text = "; ".join(f"{c.claim} {c.verdict}" for c in checks)
    measured = f"{evidence.describe()}: {check_text or 'no checks'} (parts: {summary})"
    rule = "combines the study's checks"
    if exact_parts:
        rule += " and the exact parts"
    rule += f" ({checks[0].combine_rule if checks else 'none available'}); " + PARTS_RULE
    title, says = STATEMENTS[claim]
    source = evidence.describe()
    if exact_parts:
        source = f"exact parts: this ledger run; study: {source}"
    return ClaimResult(
        claim=claim,
        title=title,
        says=says,
        measured=measured,
        verdict=combine_verdicts(verdicts),
        rule=rule,
        parts=tuple(parts),
        source=source,
        links=links,
        notes=tuple(evidence.skipped),
        measured_here=bool(exact_parts),
    )


# --- C16: the reference run ---------------------------------------------------------------

REFERENCE_SPLIT = (6300, 2700, 1000)
REFERENCE_MIN_TEST_ACC = 0.9  # "classifies the test set well"
REFERENCE_GAP_HOLDS = 0.05  # final |val - train| loss: "together"
REFERENCE_GAP_CONTRADICTED = 0.15  # ... clearly apart (over- or underfitting)


@dataclass(frozen=True)
class ReferenceOutcome:
    """The reference run's numbers.

    Attributes:
        split: rows in train, validation and test.
        train_loss / val_loss: per epoch.
        test_loss / test_acc: after training.
        run_id / experiment_id: the MLflow run ("-" when not recorded).
        source: "latest finished run in the store" or "run by this ledger".
        tracking_uri: the store (for links into its UI).
    """

    split: tuple[int, int, int]
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    test_loss: float
    test_acc: float
    run_id: str
    experiment_id: str
    source: str
    tracking_uri: str = ""


def reference_params(config: Config) -> dict[str, str]:
    """The logged params a stored run must have to count as this reference configuration."""
    keep = ("data.", "model.", "loss.", "optimizer.", "schedule.")
    exact = ("trainer.epochs", "trainer.batch_size", "lr_find.enabled")
    flat = tracking.flatten(dataclasses.asdict(config))
    return {k: v for k, v in flat.items() if k.startswith(keep) or k in exact}


def find_or_run_reference(config: Config, out_dir: Path, rerun: bool) -> ReferenceOutcome:
    """The latest finished reference run in the store, or one run now (recorded in MLflow).

    Args:
        config: the reference configuration (the ledger's own training sections).
        out_dir: where a new run writes its local files.
        rerun: run it even when the store has one.

    Returns:
        The run's numbers.
    """
    dataset = build_dataset(config.data)
    split = (len(dataset.train), len(dataset.val), len(dataset.test))
    reference = dataclasses.replace(
        config, experiment_name=REFERENCE_EXPERIMENT, task="train", study=""
    )
    if config.tracking.enabled and not rerun:
        found = tracking.latest_finished_run(
            config.tracking.uri,
            REFERENCE_EXPERIMENT,
            reference_params(reference),
            ("train/loss", "val/loss"),
        )
        if found is not None:
            record, experiment_id = found
            return ReferenceOutcome(
                split=split,
                train_loss=tuple(record.history.get("train/loss", ())),
                val_loss=tuple(record.history.get("val/loss", ())),
                test_loss=float(record.final.get("test/loss", math.nan)),
                test_acc=float(record.final.get("test/acc", math.nan)),
                run_id=record.run_id,
                experiment_id=experiment_id,
                source="latest finished reference run in the store",
                tracking_uri=config.tracking.uri,
            )
    log.info("no finished reference run in the store: running it now")
    summary = run_experiment(reference, out_dir, run_name="reference-for-claims")
    return ReferenceOutcome(
        split=split,
        train_loss=tuple(r.train_loss for r in summary.history),
        val_loss=tuple(r.val_loss for r in summary.history),
        test_loss=summary.test_loss,
        test_acc=summary.test_acc,
        run_id=summary.run_id,
        experiment_id=summary.experiment_id,
        source="reference run made by this ledger",
        tracking_uri=config.tracking.uri,
    )


def evaluate_c16(outcome: ReferenceOutcome) -> ClaimResult:
    """C16: the split, both losses falling together, and the test accuracy."""
    mismatch = sum(abs(a - b) for a, b in zip(outcome.split, REFERENCE_SPLIT, strict=True))
    falls = math.nan
    gap = math.nan
    if outcome.train_loss and outcome.val_loss:
        falls = min(
            outcome.train_loss[0] - outcome.train_loss[-1],
            outcome.val_loss[0] - outcome.val_loss[-1],
        )
        gap = abs(outcome.val_loss[-1] - outcome.train_loss[-1])
    parts = [
        ClaimPart(
            f"split {REFERENCE_SPLIT[0]}/{REFERENCE_SPLIT[1]}/{REFERENCE_SPLIT[2]}",
            at_most(float(mismatch), 0, f"rows off the stated split (measured {outcome.split})"),
        ),
        ClaimPart(
            "train and val loss both fall",
            at_least(falls, 1e-9, "smaller of (epoch-1 loss - last-epoch loss) over train and val"),
        ),
        ClaimPart(
            "... together",
            band(
                gap,
                REFERENCE_GAP_HOLDS,
                REFERENCE_GAP_CONTRADICTED,
                "|val loss - train loss| at the last epoch",
            ),
        ),
        ClaimPart(
            "the test set is classified well",
            at_least(outcome.test_acc, REFERENCE_MIN_TEST_ACC, "test accuracy"),
        ),
    ]
    epochs = len(outcome.train_loss)
    measured = (
        f"split {outcome.split}; over {epochs} epochs train loss "
        f"{outcome.train_loss[0] if epochs else math.nan:.4f} -> "
        f"{outcome.train_loss[-1] if epochs else math.nan:.4f}, val loss "
        f"{outcome.val_loss[0] if outcome.val_loss else math.nan:.4f} -> "
        f"{outcome.val_loss[-1] if outcome.val_loss else math.nan:.4f}; test loss "
        f"{outcome.test_loss:.4f}, test accuracy {outcome.test_acc:.4f}"
    )
    links: tuple[Link, ...] = ()
    if outcome.run_id != "-":
        links = (
            Link(
                f"reference run {outcome.run_id[:8]}",
                tracking.run_url(
                    outcome.experiment_id, outcome.run_id, tracking.ui_address(outcome.tracking_uri)
                ),
            ),
        )
    return _result(
        "C16",
        parts,
        measured,
        f"'well' = test accuracy >= {REFERENCE_MIN_TEST_ACC:g}; 'together' = final gap <= "
        f"{REFERENCE_GAP_HOLDS:g}; " + PARTS_RULE,
        source=f"{outcome.source} ({outcome.run_id[:8]})",
        links=links,
        measured_here=False,
    )


# --- the ledger --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """Every evaluated claim, the studies used, and where the ledger itself is recorded.

    Attributes:
        results: one row per claim, in claim order.
        studies: what was found or run for each needed study.
        seeds: seeds the ledger runs a missing study with.
        tracking_uri: the store ("" with tracking off).
        run_id / experiment_id: the ledger's own MLflow run ("-" with tracking off).
        seconds: wall time.
    """

    results: tuple[ClaimResult, ...]
    studies: tuple[StudyEvidence, ...] = ()
    seeds: int = 3
    tracking_uri: str = ""
    run_id: str = "-"
    experiment_id: str = "-"
    seconds: float = 0.0

    @property
    def run_url(self) -> str:
        """The ledger run in the MLflow UI ("" with tracking off)."""
        if self.run_id == "-":
            return ""
        return tracking.run_url(
            self.experiment_id, self.run_id, tracking.ui_address(self.tracking_uri)
        )

    def links(self, result: ClaimResult) -> tuple[Link, ...]:
        """A result's links, with the ledger run itself when numbers were measured in it."""
        if not result.measured_here or not self.run_url:
            return result.links
        return (*result.links, Link(f"claims run {self.run_id[:8]}", self.run_url))


def evaluate_claims(
    config: Config, out_dir: Path, runner: StudyRunner | None
) -> tuple[list[ClaimResult], list[StudyEvidence]]:
    """Measures and judges the claims in ``config.claims.only`` (all when empty).

    Args:
        config: the ledger's config; its training sections are the reference configuration
            (C10 and C16), ``claims`` says which claims and how studies are run.
        out_dir: where study reports and any new reference run write local files.
        runner: runs a missing study; None = never (those claims become inconclusive).

    Returns:
        The claim rows (claim order) and the studies used.
    """
    wanted = [c for c in CLAIM_IDS if not config.claims.only or c in config.claims.only]
    studies: dict[str, StudyEvidence] = {}
    for claim in wanted:
        study = STUDY_FOR_CLAIM.get(claim)
        if study is None or study in studies:
            continue
        if not config.tracking.enabled:
            studies[study] = StudyEvidence(study, problem="tracking is off: no store to read")
            continue
        studies[study] = find_study(
            study,
            config.tracking.uri,
            out_dir / "studies",
            config.claims.seeds,
            config.claims.rerun,
            runner if config.claims.run_missing else None,
        )
    results = []
    for claim in wanted:
        log.info("evaluating %s", claim)
        results.append(_evaluate(claim, config, out_dir, studies))
    return results, list(studies.values())


def _evaluate(
    claim: str, config: Config, out_dir: Path, studies: Mapping[str, StudyEvidence]
) -> ClaimResult:
    if claim == "C1":
        return evaluate_c1(measure_c1())
    if claim == "C2":
        return evaluate_c2(measure_c2())
    if claim == "C3":
        return evaluate_c3(measure_c3())
    if claim == "C4":
        return evaluate_c4(measure_c4())
    if claim == "C5":
        return evaluate_c5(semantics.worked_example())
    if claim == "C6":
        return evaluate_c6(semantics.logit_gradients())
    if claim == "C7":
        return evaluate_c7(
            semantics.logits_vs_log_softmax(), semantics.weighted_reduction_semantics()
        )
    if claim == "C8":
        exact = c8_exact_parts(
            semantics.binary_as_two_class(dtype="float32"),
            semantics.binary_as_two_class(dtype="float64"),
        )
        return evaluate_study_claim("C8", studies["binary_vs_categorical"], exact)
    if claim == "C9":
        return evaluate_c9(semantics.clipping_effect())
    if claim == "C10":
        return evaluate_c10(
            [
                measure_loss_scale(
                    data,
                    config.model,
                    config.trainer.epochs,
                    config.trainer.batch_size,
                    config.optimizer.learning_rate,
                    config.seed,
                )
                # The run's data and, for make_classification, its 5-class twin.
                for data in (
                    (config.data, dataclasses.replace(config.data, name="multiclass", n_classes=5))
                    if isinstance(config.data, MakeClassificationConfig)
                    else (config.data,)
                )
            ]
        )
    if claim == "C11":
        x, y = semantics.small_classification()
        model = semantics.build_tiny_mlp(x.shape[1])
        return evaluate_c11(
            semantics.accuracy_gradients(model, x, y), semantics.step_activation_training()
        )
    if claim in STUDY_FOR_CLAIM:
        return evaluate_study_claim(claim, studies[STUDY_FOR_CLAIM[claim]])
    if claim == "C16":
        return evaluate_c16(
            find_or_run_reference(config, out_dir / "reference", config.claims.rerun)
        )
    raise ValueError(f"claim {claim!r} is not one of {', '.join(CLAIM_IDS)}")


def run_ledger(
    config: Config, output_dir: Path, runner: StudyRunner | None = subprocess_study_runner
) -> tuple[Ledger, str]:
    """Evaluates the claims, writes claims.md/.html/.json and records them in MLflow.

    Args:
        config: the composed config with ``task: claims`` (its training sections are the
            reference configuration).
        output_dir: where the files are written.
        runner: runs a missing study (default: a Hydra sweep in a subprocess).

    Returns:
        The ledger and its terminal text.
    """
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    # Seeds, op determinism and the device for the in-process measurements (C10, C11).
    device = configure_runtime(config.trainer.device, config.trainer.threads, config.seed)
    log.info("claims ledger: measuring on %s", device.description)
    if config.tracking.enabled:
        tracking.check_tracking_uri(config.tracking.uri)
        with tracking.open_run(
            config.tracking.uri,
            config.experiment_name,
            "claims-ledger",
            tags={"xent.task": "claims"},
        ) as recorder:
            recorder.log_params(tracking.flatten({"claims": dataclasses.asdict(config.claims)}))
            results, studies = evaluate_claims(config, output_dir, runner)
            ledger = Ledger(
                tuple(results),
                tuple(studies),
                config.claims.seeds,
                config.tracking.uri,
                recorder.run_id,
                recorder.experiment_id,
                time.perf_counter() - started,
            )
            files = write_ledger(ledger, output_dir)
            for path in files:
                recorder.log_file(path)
            recorder.set_tags({f"verdict.{r.claim}": r.verdict for r in results})
            recorder.log_metrics(
                {
                    f"claims/{v}": sum(r.verdict == v for r in results)
                    for v in (HOLDS, CONTRADICTED, INCONCLUSIVE)
                },
                step=0,
            )
    else:
        results, studies = evaluate_claims(config, output_dir, runner)
        ledger = Ledger(
            tuple(results),
            tuple(studies),
            config.claims.seeds,
            seconds=time.perf_counter() - started,
        )
        write_ledger(ledger, output_dir)
    return ledger, render_terminal(ledger, output_dir)
