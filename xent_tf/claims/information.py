"""C1-C4: self-information, entropy, KL and cross-entropy, bits. Exact numbers, and (C3) three
models fitted on real data by three objectives."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from xent_tf.claims import info
from xent_tf.claims.comparison import PARTS_RULE, Finding, Verdict, at_least, at_most, close_to
from xent_tf.claims.records import ClaimResult, claim_result, contradicted_in
from xent_tf.claims.registry import rule_float, rule_floats
from xent_tf.claims.studies import ClaimPart
from xent_tf.config import DataConfig
from xent_tf.train.data import make_dataset

# --- C1, C2: self-information and entropy ------------------------------------------------

C1_STATED: dict[float, float] = {0.7: 0.36, 0.2: 1.61, 0.1: 2.30, 1.0: 0.0}
ROUNDING_TOLERANCE = rule_float("C1", "rounding_tolerance")  # C2 states the same


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
    return claim_result("C1", parts, measured, f"holds if {rule}, else contradicted")


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
    if contradicted_in(parts, fair):
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
    return claim_result(
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
    """C3's identities over random pairs of 5-outcome distributions.

    Attributes:
        n_pairs: random (p, q) pairs.
        min_kl: smallest KL(p||q), computed independently with scipy's rel_entr.
        max_kl_vs_scipy: largest |info.kl_divergence - scipy| (the two implementations agree).
        max_kl_self: largest KL(p||p).
        min_kl_distinct: smallest KL(p||q) with p != q.
        max_asymmetry: largest |KL(p||q) - KL(q||p)|.
        max_identity_error: largest |H(p, q) - H(p) - KL(p||q)|.
    """

    n_pairs: int
    min_kl: float
    max_kl_vs_scipy: float
    max_kl_self: float
    min_kl_distinct: float
    max_asymmetry: float
    max_identity_error: float


def measure_kl(n_pairs: int = 2000, seed: int = 0) -> KlNumbers:
    """Measures C3's identities on random Dirichlet pairs."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(5), size=n_pairs)
    q = rng.dirichlet(np.ones(5), size=n_pairs)
    kl_pq = np.asarray(info.kl_divergence(p, q))
    kl_qp = np.asarray(info.kl_divergence(q, p))
    reference = special.rel_entr(p, q).sum(axis=1)
    identity = np.asarray(info.cross_entropy(p, q)) - np.asarray(info.entropy(p)) - kl_pq
    return KlNumbers(
        n_pairs=n_pairs,
        min_kl=float(reference.min()),
        max_kl_vs_scipy=float(np.max(np.abs(kl_pq - reference))),
        max_kl_self=float(np.max(np.asarray(info.kl_divergence(p, p)))),
        min_kl_distinct=float(kl_pq.min()),
        max_asymmetry=float(np.max(np.abs(kl_pq - kl_qp))),
        max_identity_error=float(np.max(np.abs(identity))),
    )


@dataclass(frozen=True)
class FittedObjectives:
    """C3's fits: one softmax-regression model per objective, on the same real data.

    The inputs are two features of the 5-class data binned into a grid, so many rows share an
    input and the empirical label distribution p(y|cell) is not one-hot; the model (logits
    linear in the cell's mean features) cannot represent every p(y|cell), so each objective's
    optimum is a genuine compromise.

    Attributes:
        n_rows / n_cells / n_classes: the data.
        probabilities: objective -> the fitted model's predicted distribution per cell.
        objective_at_fit: objective -> its value at its own optimum.
        conditional_entropy: H(p(y|cell)) averaged over rows (what CE - KL should equal).
    """

    n_rows: int
    n_cells: int
    n_classes: int
    probabilities: Mapping[str, np.ndarray]
    objective_at_fit: Mapping[str, float]
    conditional_entropy: float

    def max_difference(self, a: str, b: str) -> float:
        """Largest |q_a - q_b| over cells and classes."""
        return float(np.max(np.abs(self.probabilities[a] - self.probabilities[b])))


OBJECTIVES = ("cross_entropy", "likelihood", "kl", "brier")


def fit_objectives(data: DataConfig, bins: int = 6) -> FittedObjectives:
    """Fits the same model by minimising CE, maximising the likelihood, minimising KL to the
    empirical label distribution, and (a control) minimising the Brier score.

    Args:
        data: a dataset with more than two classes (its training rows are used).
        bins: quantile bins per feature (``bins**2`` cells).

    Returns:
        The fitted distributions and the objectives at their optima.
    """
    rows = make_dataset(data).train
    x, y = rows.x, rows.y.astype(np.int64)
    n_classes = int(y.max()) + 1
    # The two features whose class means are spread most (the informative ones).
    means = np.stack([x[y == k].mean(axis=0) for k in range(n_classes)])
    features = np.argsort(means.var(axis=0) / x.var(axis=0))[-2:]
    binned = [
        np.searchsorted(np.quantile(x[:, f], np.linspace(0, 1, bins + 1)[1:-1]), x[:, f])
        for f in features
    ]
    cell_of_row = np.unique(binned[0] * bins + binned[1], return_inverse=True)[1]
    n_cells = int(cell_of_row.max()) + 1
    counts = np.bincount(cell_of_row, minlength=n_cells).astype(np.float64)
    joint = np.zeros((n_cells, n_classes))
    np.add.at(joint, (cell_of_row, y), 1.0)
    p_cell = joint / counts[:, None]  # empirical p(y | cell)
    weight = counts / counts.sum()
    z = (x[:, features] - x[:, features].mean(axis=0)) / x[:, features].std(axis=0)
    centres = np.stack([np.bincount(cell_of_row, z[:, j]) / counts for j in range(2)], axis=1)
    one_hot = np.eye(n_classes)[y]

    def model(theta: np.ndarray) -> np.ndarray:
        w, b = theta[: 2 * n_classes].reshape(2, n_classes), theta[2 * n_classes :]
        return np.asarray(special.softmax(centres @ w + b, axis=1))

    # Each objective is computed its own way: over cells against p(y|cell), per row, or via KL.
    objectives = {
        "cross_entropy": lambda q: -float(np.sum(weight[:, None] * p_cell * np.log(q))),
        "likelihood": lambda q: -float(np.mean(np.log(q[cell_of_row, y]))),
        "kl": lambda q: float(np.sum(weight[:, None] * special.rel_entr(p_cell, q))),
        "brier": lambda q: float(np.mean(np.sum((one_hot - q[cell_of_row]) ** 2, axis=1))),
    }
    probabilities, at_fit = {}, {}
    for name in OBJECTIVES:
        objective = objectives[name]
        fit = optimize.minimize(
            lambda theta, f=objective: f(model(theta)),
            np.zeros(3 * n_classes),
            method="BFGS",
            options={"gtol": 1e-9, "maxiter": 2000},
        )
        probabilities[name] = model(fit.x)
        at_fit[name] = float(fit.fun)
    entropy = float(-np.sum(weight[:, None] * special.xlogy(p_cell, p_cell)))
    return FittedObjectives(len(y), n_cells, n_classes, probabilities, at_fit, entropy)


AGREEMENT = 1e-3  # predicted probabilities of two fits: the optimiser's tolerance, not a model


def evaluate_c3(m: KlNumbers, fits: FittedObjectives) -> ClaimResult:
    """C3: non-negativity, zero only at p = q, asymmetry, the identity, and the three fits."""
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
            "minimising CE and maximising the likelihood find the same model",
            at_most(
                fits.max_difference("cross_entropy", "likelihood"),
                AGREEMENT,
                f"largest |q_CE - q_likelihood| over {fits.n_cells} cells x {fits.n_classes} "
                "classes of the two fitted models",
            ),
        ),
        ClaimPart(
            "minimising CE and minimising KL find the same model",
            at_most(
                fits.max_difference("cross_entropy", "kl"),
                AGREEMENT,
                "largest |q_CE - q_KL| of the two fitted models",
            ),
        ),
        ClaimPart(
            "at the optimum CE - KL = H(p) (the constant that makes them agree)",
            close_to(
                fits.objective_at_fit["cross_entropy"] - fits.objective_at_fit["kl"],
                fits.conditional_entropy,
                1e-6,
                "CE - KL at the fits vs the mean entropy of p(y|cell)",
            ),
        ),
    ]
    control = fits.max_difference("cross_entropy", "brier")
    measured = (
        f"min KL {m.min_kl:.3g}, max KL(p||p) {m.max_kl_self:.3g}, max |KL(p||q)-KL(q||p)| "
        f"{m.max_asymmetry:.3g}, identity error {m.max_identity_error:.2g} ({m.n_pairs} random "
        f"pairs); fitted on {fits.n_rows} rows ({fits.n_cells} cells, {fits.n_classes} classes): "
        f"max |q_CE - q_NLL| {fits.max_difference('cross_entropy', 'likelihood'):.2g}, "
        f"|q_CE - q_KL| {fits.max_difference('cross_entropy', 'kl'):.2g}; control: a Brier fit "
        f"differs by {control:.2g}"
    )
    notes = [
        f"The comparison can tell models apart: the same model fitted by the Brier score (a "
        f"different objective) predicts probabilities up to {control:.3f} away from the CE fit, "
        f"while CE, likelihood and KL agree to "
        f"{max(fits.max_difference('cross_entropy', o) for o in ('likelihood', 'kl')):.1g}."
    ]
    return claim_result(
        "C3",
        parts,
        measured,
        f"identities to 1e-9/1e-12, fitted probabilities within {AGREEMENT:g}; " + PARTS_RULE,
        notes,
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
    return canonical_code([round(float(v)) for v in lengths])


def canonical_code(lengths: Sequence[int]) -> tuple[str, ...]:
    """The canonical prefix code with the given word lengths (shortest words first).

    Args:
        lengths: one word length per outcome, each >= 1 (or all 0 for a single outcome).

    Returns:
        One code word per outcome.

    Raises:
        ValueError: the lengths break Kraft's inequality (sum 2^-l > 1): no prefix code has
            them.
    """
    kraft = sum(2.0**-length for length in lengths)
    if kraft > 1 + 1e-12:
        raise ValueError(f"word lengths {list(lengths)} break Kraft's inequality (sum {kraft:g})")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    words: list[str] = [""] * len(lengths)
    code, previous = 0, 0
    for index in order:
        length = int(lengths[index])
        code <<= length - previous
        words[index] = format(code, f"0{length}b") if length else ""
        code, previous = code + 1, length
    return tuple(words)


def shannon_lengths(q: Sequence[float]) -> tuple[int, ...]:
    """Shannon's code lengths for q: ceil(-log2 q_i), so -log2 q_i <= l_i < -log2 q_i + 1.

    Averaged under any p this gives H_2(p, q) <= mean length < H_2(p, q) + 1: the bound C4
    checks on a non-dyadic q. (A Huffman code built for q is shorter on average under q, but
    under another p its mean length can fall below H_2(p, q): q = (0.49, 0.49, 0.02) gets
    Huffman lengths (1, 2, 2), and p = (0, 0, 1) then spends 2 bits < H_2(p, q) = 5.64; so the
    bound is Shannon's.)
    """
    q_arr = info.validate_distribution(q, name="q")
    # 1e-12: -log2 of a power of 1/2 computed in floats must not round up a whole bit
    return tuple(math.ceil(-math.log2(float(v)) - 1e-12) for v in q_arr)


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
        shannon: the non-dyadic part (a Shannon code built for a non-dyadic q).
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
    shannon: ShannonBits | None = None


@dataclass(frozen=True)
class ShannonBits:
    """C4 on a non-dyadic pair: a Shannon code built for q, its exact mean length under p.

    Attributes:
        p / q: the distributions (``non_dyadic_p`` / ``non_dyadic_q`` in the registry).
        lengths: the code's word lengths, ceil(-log2 q_i).
        code: the code words.
        mean_length: sum_i p_i l_i, exact (no sampling).
        cross_entropy_bits: H_2(p, q).
        bits_per_event / standard_error: the same code on a sample from p, measured.
        decoding_errors: events of that sample decoded wrongly.
    """

    p: tuple[float, ...]
    q: tuple[float, ...]
    lengths: tuple[int, ...]
    code: tuple[str, ...]
    mean_length: float
    cross_entropy_bits: float
    bits_per_event: float
    standard_error: float
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
    shannon = measure_shannon(
        rule_floats("C4", "non_dyadic_p"), rule_floats("C4", "non_dyadic_q"), n_events, rng
    )
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
        shannon=shannon,
    )


def measure_shannon(
    p: Sequence[float], q: Sequence[float], n_events: int, rng: np.random.Generator
) -> ShannonBits:
    """A Shannon code built for q: its exact mean length under p, and a sample encoded."""
    p_arr = info.validate_distribution(p, name="p")
    lengths = shannon_lengths(q)
    code = canonical_code(lengths)
    sample = rng.choice(len(p_arr), size=n_events, p=p_arr)
    per_word = np.array([len(code[x]) for x in sample], dtype=np.float64)
    bits = "".join(code[x] for x in sample)
    decoded = np.asarray(_decode(bits, code))
    errors = n_events if decoded.shape != sample.shape else int(np.sum(decoded != sample))
    return ShannonBits(
        p=tuple(float(v) for v in p_arr),
        q=tuple(float(v) for v in q),
        lengths=lengths,
        code=code,
        mean_length=float(np.dot(p_arr, lengths)),
        cross_entropy_bits=float(info.cross_entropy(p_arr, q, base=2)),
        bits_per_event=len(bits) / n_events,
        standard_error=float(per_word.std(ddof=1) / math.sqrt(n_events)),
        decoding_errors=errors,
    )


SAMPLING_SIGMAS = rule_float("C4", "sampling_sigmas")  # this many standard errors: not noise


def _shannon_parts(s: ShannonBits) -> list[ClaimPart]:
    """C4 on a non-dyadic q: the exact bound, and the code measured on a sample."""
    h = s.cross_entropy_bits
    within = h <= s.mean_length < h + 1
    bound = Finding(
        Verdict.HOLDS if within else Verdict.CONTRADICTED,
        "exact: holds if H_2(p, q) <= sum_i p_i ceil(-log2 q_i) < H_2(p, q) + 1, else contradicted",
        f"lengths {list(s.lengths)} for q={list(s.q)}: mean length under p={list(s.p)} "
        f"{s.mean_length:.6g} bits, H_2(p, q) = {h:.6g}",
    )
    return [
        ClaimPart("non-dyadic q: a Shannon code spends H_2(p, q) to H_2(p, q) + 1 bits", bound),
        ClaimPart(
            "non-dyadic q: the code on a sample spends its mean length",
            close_to(
                s.bits_per_event,
                s.mean_length,
                SAMPLING_SIGMAS * s.standard_error,
                f"measured bits per event vs the exact mean length, tolerance "
                f"{SAMPLING_SIGMAS:g} standard errors",
            ),
        ),
        ClaimPart(
            "non-dyadic q: the code is decodable",
            at_most(float(s.decoding_errors), 0, "events decoded wrongly"),
        ),
    ]


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
    if m.shannon is None:
        parts.append(
            ClaimPart(
                "non-dyadic q: a Shannon code spends H_2(p, q) to H_2(p, q) + 1 bits",
                Finding(Verdict.NOT_MEASURED, "needs the non-dyadic measurement", "not measured"),
            )
        )
    else:
        parts += _shannon_parts(m.shannon)
    measured = (
        f"code {list(m.code_for_q)} built for q={list(m.q)} on {m.n_events} events from "
        f"p={list(m.p)}: {m.bits_per_event:.4f} bits/event vs H_2(p,q) = "
        f"{m.cross_entropy_bits:.4f}; own code {m.bits_per_event_own_code:.4f} vs H_2(p) = "
        f"{m.entropy_bits:.4f}; nats/ln 2 error {m.max_conversion_error:.2g}"
    )
    if m.shannon is not None:
        measured += (
            f"; non-dyadic q={list(m.shannon.q)}: Shannon code {list(m.shannon.code)} spends "
            f"{m.shannon.mean_length:.4f} bits/event from p={list(m.shannon.p)} (exact; "
            f"H_2(p,q) = {m.shannon.cross_entropy_bits:.4f}, bound < "
            f"{m.shannon.cross_entropy_bits + 1:.4f})"
        )
    return claim_result(
        "C4",
        parts,
        measured,
        f"code lengths within {SAMPLING_SIGMAS:g} standard errors, conversion to 1e-12; "
        + PARTS_RULE,
    )
