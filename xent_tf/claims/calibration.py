"""Null calibration: how often a study's rules call a claim holds or contradicted when the
arms they compare are the same runs, randomly relabelled.

Within each seed (and each context: the study's other grouping params), the runs are shuffled
and the compared param (e.g. ``loss.name``) is assigned to them at random. The arms are then
exchangeable: whatever the runs are (constructed, or real ones from the store), no arm is
better than another, so every "holds" and every "contradicted" of a directional rule is a
false alarm, and the share of them must stay at or below the protocol's alpha / 2 per
direction (``protocol.STATISTICS``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xent_tf.claims.comparison import Verdict
from xent_tf.claims.studies import StudyOptions, StudySpec, group_variants
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

    def describe(self) -> str:
        """ "C15: holds 0/400 (0.0%), contradicted 3/400 (0.8%)"."""
        return (
            f"{self.claim}: holds {self.holds}/{self.draws} ({self.holds_rate:.1%}), "
            f"contradicted {self.contradicted}/{self.draws} ({self.contradicted_rate:.1%})"
        )


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


def null_rates(
    spec: StudySpec,
    records: Sequence[RunRecord],
    key: str,
    labels: Sequence[str],
    draws: int,
    seed: int = 0,
) -> dict[str, NullRates]:
    """How often each claim ``spec`` checks holds / is contradicted on relabelled arms.

    Args:
        spec: the study whose rules are calibrated.
        records: the pool of runs (see ``relabel``).
        key: the compared param (one of ``spec.group_by``).
        labels: its values.
        draws: relabellings.
        seed: seeds the relabelling.

    Returns:
        {claim id: its rates}.
    """
    if key not in spec.group_by:
        raise ValueError(f"{key!r} is not one of {spec.name}'s group_by {list(spec.group_by)}")
    context = [name for name in spec.group_by if name != key]
    rng = np.random.default_rng(seed)
    counts: dict[str, list[int]] = {}
    for _ in range(draws):
        relabelled = relabel(records, key, labels, context, rng)
        for check in spec.evaluate(group_variants(relabelled, spec.group_by), StudyOptions()):
            tally = counts.setdefault(check.claim, [0, 0])
            tally[0] += check.verdict == Verdict.HOLDS
            tally[1] += check.verdict == Verdict.CONTRADICTED
    return {claim: NullRates(claim, draws, h, c) for claim, (h, c) in counts.items()}


# The param each study compares (its arms): what a null calibration relabels.
ARMS: dict[str, str] = {
    "binary_vs_categorical": "loss.name",
    "mse_vs_ce": "loss.name",
    "lr_sweep": "optimizer.learning_rate",
    "annealing": "schedule.name",
}
# The runs whose arms are relabelled, where a study has runs of another kind: lr_sweep's grid
# (its suggestion arms train at the range test's rates, not at an arm's value).
ARM_RUNS: dict[str, tuple[str, str]] = {"lr_sweep": ("lr_find.use", "given")}


def stored_null_rates(
    tracking_uri: str, study: str, draws: int, seed: int = 0
) -> tuple[dict[str, NullRates], str]:
    """``null_rates`` on the newest finished sweep of ``study`` in the store: its own runs,
    relabelled among the values its arms have.

    Args:
        tracking_uri: the store.
        study: the study (MLflow experiment).
        draws: relabellings.
        seed: seeds the relabelling.

    Returns:
        The rates, and which sweep they come from.

    Raises:
        ValueError: the store has no finished sweep of ``study``.
    """
    from xent_tf.claims.studies import STUDIES
    from xent_tf.track import reading  # only here: the rules above need no store

    spec = STUDIES[study]
    parents = [
        p for p in reading.study_parents(tracking_uri, study) if p.status == RunStatus.FINISHED
    ]
    if not parents:
        raise ValueError(f"no finished sweep of {study!r} in {tracking_uri}")
    records = reading.fetch_children(
        tracking_uri, parents[0], (*spec.plot_metrics, *spec.extra_metrics)
    )
    finished = [r for r in records if r.finished]
    if study in ARM_RUNS:
        param, value = ARM_RUNS[study]
        finished = [r for r in finished if str(r.params.get(param, "")) == value]
    key = ARMS[study]
    labels = sorted({str(r.params.get(key, "")) for r in finished})
    rates = null_rates(spec, finished, key, labels, draws, seed)
    seeds = sorted({r.seed for r in finished})
    source = (
        f"sweep {parents[0].run_id[:8]}: {len(finished)} finished runs, seeds {seeds}, "
        f"{key} relabelled among {labels}"
    )
    return rates, source
