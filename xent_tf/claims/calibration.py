"""Null calibration: how often a study's rules call a claim holds or contradicted when the
arms they compare are the same runs, randomly relabelled.

Within each seed (and each context: the study's other grouping params), the runs are shuffled
and the compared param (e.g. ``loss.name``) is assigned to them at random. The arms are then
exchangeable: whatever the runs are (constructed, or real ones from the store), no arm is
better than another, so every "holds" and every "contradicted" of a directional rule is a
false alarm, and the share of them must stay at or below the protocol's alpha / 2 per
direction (``protocol.STATISTICS``). ``NULL_DESIGNS`` says, per training claim, which runs
are shuffled, which params name an arm, and which verdicts are false alarms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from xent_tf.claims.comparison import Verdict, clopper_pearson
from xent_tf.claims.studies import STUDIES, StudyOptions, StudySpec, group_variants
from xent_tf.track.run_record import RunRecord, RunStatus


@dataclass(frozen=True)
class NullRates:
    """How often one claim's rules concluded on relabelled arms.

    Attributes:
        claim: the claim (or sub-claim) id.
        draws: relabellings judged.
        holds: draws the claim held on.
        contradicted: draws it was contradicted on.
    """

    claim: str
    draws: int
    holds: int
    contradicted: int

    @property
    def holds_rate(self) -> float:
        return self.holds / self.draws if self.draws else float("nan")

    @property
    def contradicted_rate(self) -> float:
        return self.contradicted / self.draws if self.draws else float("nan")

    def describe(self, confidence: float | None = None) -> str:
        """ "C15: holds 0/400 (0.0%), contradicted 3/400 (0.8%)", with each rate's exact
        (Clopper-Pearson) ``confidence`` interval when one is asked for."""

        def rate(count: int) -> str:
            text = f"{count}/{self.draws} ({count / self.draws:.2%}"
            if confidence is not None:
                low, high = clopper_pearson(count, self.draws, confidence)
                text += f"; {confidence:.0%} CI {low:.2%}-{high:.2%}"
            return text + ")"

        if not self.draws:
            return f"{self.claim}: no draws"
        return f"{self.claim}: holds {rate(self.holds)}, contradicted {rate(self.contradicted)}"


def relabel(
    records: Sequence[RunRecord],
    key: str,
    labels: Sequence[str],
    context: Sequence[str],
    rng: np.random.Generator,
) -> list[RunRecord]:
    """The runs with ``key`` assigned at random within each (seed, context).

    Args:
        records: the pool; each (seed, context) group needs at least ``len(labels)`` runs.
        key: the param the study compares (its arms).
        labels: the values to give it, one run each per group (extra runs are left out).
        context: the other params the study groups by (kept as they are).
        rng: the random source.

    Returns:
        The relabelled runs (new run ids, so no two share one).

    Raises:
        ValueError: a group has fewer runs than labels.
    """
    groups: dict[tuple[int, tuple[str, ...]], list[RunRecord]] = {}
    for record in records:
        where = tuple(str(record.params.get(name, "")) for name in context)
        groups.setdefault((record.seed, where), []).append(record)
    out = []
    for (seed, where), runs in sorted(groups.items()):
        if len(runs) < len(labels):
            raise ValueError(
                f"seed {seed} {dict(zip(context, where, strict=True))} has {len(runs)} runs; "
                f"relabelling {key} needs one per label {list(labels)}"
            )
        chosen = rng.permutation(len(runs))[: len(labels)]
        for label, index in zip(labels, chosen, strict=True):
            run = runs[int(index)]
            out.append(
                dataclasses.replace(
                    run, run_id=f"{run.run_id}->{label}", params={**run.params, key: label}
                )
            )
    return out


def permute_arms(
    records: Sequence[RunRecord],
    arm_keys: Sequence[str],
    context: Sequence[str],
    rng: np.random.Generator,
) -> list[RunRecord]:
    """The runs with their arms shuffled within each (seed, context): every run takes the arm
    (the values of ``arm_keys``) of a run drawn without replacement from its own group.

    Unlike ``relabel`` no label set is given: each group keeps the arms it has (a multi-class
    data set without C8's sigmoid arm, a seed whose run crashed), so real stored sweeps can
    be fed as they are.

    Args:
        records: the pool (one run per arm and seed, e.g. ``group_variants``' kept runs).
        arm_keys: the params that name an arm (shuffled together).
        context: the params the arms are compared within (kept as they are).
        rng: the random source.

    Returns:
        The relabelled runs (new run ids, so no two share one).
    """
    groups: dict[tuple[int, tuple[str, ...]], list[RunRecord]] = {}
    for record in records:
        where = tuple(str(record.params.get(name, "")) for name in context)
        groups.setdefault((record.seed, where), []).append(record)
    out = []
    for _, runs in sorted(groups.items()):
        order = rng.permutation(len(runs))
        for run, source in zip(runs, order, strict=True):
            arm = {name: runs[int(source)].params.get(name, "") for name in arm_keys}
            label = "/".join(str(v) for v in arm.values())
            out.append(
                dataclasses.replace(
                    run, run_id=f"{run.run_id}->{label}", params={**run.params, **arm}
                )
            )
    return out


Shuffle = Callable[[np.random.Generator], list[RunRecord]]


def null_rates(
    spec: StudySpec, shuffle: Shuffle, draws: int, seed: int = 0
) -> dict[str, NullRates]:
    """How often each claim ``spec`` checks holds / is contradicted on relabelled arms.

    Args:
        spec: the study whose rules are calibrated.
        shuffle: one relabelled draw of the pool (``relabel`` or ``permute_arms`` bound to it).
        draws: relabellings.
        seed: seeds the relabelling.

    Returns:
        {claim id: its rates}.
    """
    rng = np.random.default_rng(seed)
    counts: dict[str, list[int]] = {}
    for _ in range(draws):
        for check in spec.evaluate(group_variants(shuffle(rng), spec.group_by), StudyOptions()):
            tally = counts.setdefault(check.claim, [0, 0])
            tally[0] += check.verdict == Verdict.HOLDS
            tally[1] += check.verdict == Verdict.CONTRADICTED
    return {claim: NullRates(claim, draws, h, c) for claim, (h, c) in counts.items()}


@dataclass(frozen=True)
class NullDesign:
    """How one training claim is calibrated on a study's stored runs.

    Attributes:
        claim: the claim (or sub-claim) id.
        study: the study whose runs and rules are used.
        arm_keys: the params that name an arm; shuffled together within each seed and context.
        runs: which of the study's runs take part (empty: all): (param, value).
        false_alarms: the verdicts that are false alarms when the arms are exchangeable.
        why: why the relabelling is a fair null for the claim.
    """

    claim: str
    study: str
    arm_keys: tuple[str, ...]
    runs: tuple[str, str] | None
    false_alarms: tuple[Verdict, ...]
    why: str


_BOTH = (Verdict.HOLDS, Verdict.CONTRADICTED)

NULL_DESIGNS: dict[str, NullDesign] = {
    design.claim: design
    for design in (
        NullDesign(
            "C8",
            "binary_vs_categorical",
            ("loss.name",),
            None,
            (Verdict.CONTRADICTED,),
            "the heads' runs shuffled within a seed and data set: the arms are the same, so "
            "they are equivalent and only 'contradicted' (a real difference) is a false alarm",
        ),
        NullDesign(
            "C12",
            "mse_vs_ce",
            ("loss.name",),
            None,
            _BOTH,
            "ce, mse and mse_raw runs shuffled within a seed, data set, optimizer and init: "
            "neither loss is faster",
        ),
        NullDesign(
            "C12b",
            "mse_vs_ce",
            ("loss.name",),
            None,
            _BOTH,
            "as C12: the ce - mse gap is the same from both inits",
        ),
        NullDesign(
            "C12c",
            "mse_vs_ce",
            ("loss.name",),
            None,
            (Verdict.HOLDS,),
            "as C12: the gradient ratio of exchangeable arms is ~1, so 'contradicted' (not << 1) "
            "is the right answer and only 'holds' is a false alarm",
        ),
        NullDesign(
            "C13",
            "lr_sweep",
            ("optimizer.learning_rate",),
            ("lr_find.use", "given"),
            _BOTH,
            "the grid's runs shuffled among the grid rates within a seed: nothing depends on "
            "the rate (the suggestion arms do not train at a grid rate and are left out)",
        ),
        NullDesign(
            "C14",
            "lr_sweep",
            ("lr_find.use", "optimizer.learning_rate"),
            None,
            _BOTH,
            "every run of a seed (the 10 grid rates and the 3 suggestion arms) shuffled among "
            "those 13 arms: the rate a run trained at does not matter, so the steepest "
            "suggestion is neither better than the flat and exploding parts' rates nor worse "
            "than the grid's best; each seed keeps its own range test (the curve-shape part "
            "is a share rule on the curves, the same in every draw)",
        ),
        NullDesign(
            "C15",
            "annealing",
            ("schedule.name",),
            None,
            _BOTH,
            "the schedules' runs shuffled within a seed: no schedule beats the constant rate",
        ),
    )
}


@dataclass(frozen=True)
class StoredPool:
    """The runs of one stored sweep a null design shuffles.

    Attributes:
        records: one run per arm and seed (the latest attempt; failed runs kept: the rules
            read them as failures).
        source: which sweep, how many runs, which seeds.
    """

    records: tuple[RunRecord, ...]
    source: str


def stored_pool(tracking_uri: str, design: NullDesign) -> StoredPool:
    """The newest finished sweep of the design's study in the store, its runs as the rules
    see them (``group_variants``' kept runs), restricted to the design's runs.

    Raises:
        ValueError: the store has no finished sweep of the study.
    """
    from xent_tf.track import reading  # only here: the rules above need no store

    spec = STUDIES[design.study]
    parents = [
        p
        for p in reading.study_parents(tracking_uri, design.study)
        if p.status == RunStatus.FINISHED
    ]
    if not parents:
        raise ValueError(f"no finished sweep of {design.study!r} in {tracking_uri}")
    records = reading.fetch_children(
        tracking_uri, parents[0], (*spec.plot_metrics, *spec.extra_metrics)
    )
    kept = [r for v in group_variants(records, spec.group_by) for r in v.runs]
    if design.runs is not None:
        param, value = design.runs
        kept = [r for r in kept if str(r.params.get(param, "")) == value]
    seeds = sorted({r.seed for r in kept})
    failed = sum(not r.finished for r in kept)
    source = (
        f"{design.study} sweep {parents[0].run_id[:8]}: {len(kept)} runs ({failed} not "
        f"finished), seeds {seeds}"
    )
    return StoredPool(tuple(kept), source)


def design_null_rates(
    design: NullDesign, records: Sequence[RunRecord], draws: int, seed: int = 0
) -> dict[str, NullRates]:
    """The rates of every claim calibrated the same way as ``design`` (same study, arms and
    runs: C12, C12b and C12c share their draws) on ``records`` shuffled by ``permute_arms``.

    Args:
        design: a claim's null design.
        records: the pool (``stored_pool``, or constructed runs).
        draws: relabellings.
        seed: seeds the relabelling.

    Returns:
        {claim id: its rates} for those claims.
    """
    spec = STUDIES[design.study]
    context = [name for name in spec.group_by if name not in design.arm_keys]
    rates = null_rates(
        spec, lambda rng: permute_arms(records, design.arm_keys, context, rng), draws, seed
    )
    shared = [d.claim for d in NULL_DESIGNS.values() if same_shuffle(d, design)]
    return {claim: rates[claim] for claim in shared if claim in rates}


def same_shuffle(a: NullDesign, b: NullDesign) -> bool:
    """Whether two designs shuffle the same runs the same way (one set of draws serves both)."""
    return (a.study, a.arm_keys, a.runs) == (b.study, b.arm_keys, b.runs)


def is_false_alarm_rate_above(rates: NullRates, design: NullDesign, level: float) -> bool:
    """Whether a false-alarm direction's exact (Clopper-Pearson) two-sided 95% interval lies
    entirely above ``level``: more false alarms than the stated rate, beyond binomial noise."""
    counts = {Verdict.HOLDS: rates.holds, Verdict.CONTRADICTED: rates.contradicted}
    return any(
        clopper_pearson(counts[v], rates.draws, 0.95)[0] > level for v in design.false_alarms
    )
