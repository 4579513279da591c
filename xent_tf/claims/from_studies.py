"""The training claims (C8's training half, C12-C15) from studies in the MLflow store.

A stored sweep is used only when it is finished and complete, its runs' config matches the
study's definition (the definition its parent recorded, as ``+resume`` compares it:
``track.resume.study_definition``; and every run's ``runner.DEFINING_PARAMS``: a ``+debug=tiny``
sweep is refused) and it has the required seeds; every sweep passed over is named with the
reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, datetime

from xent_tf.claims.comparison import PARTS_RULE, Finding, Verdict, combine_verdicts
from xent_tf.claims.records import ClaimResult, Link, StudyEvidence
from xent_tf.claims.registry import CLAIMS
from xent_tf.claims.runner import StudyDefinition, StudyRunner
from xent_tf.claims.studies import (
    STUDIES,
    ClaimCheck,
    ClaimPart,
    StudyOptions,
    adjusted_parts,
    group_variants,
)
from xent_tf.track import connection, reading, recovery
from xent_tf.track.resume import definition_differences
from xent_tf.track.run_record import RunRecord, RunStatus

log = logging.getLogger(__name__)


def study_definition_hash(study: str, definition: StudyDefinition) -> str:
    """A short hash of a study and its definition (the same definition gives the same hash)."""
    text = json.dumps(
        {"study": study, "sweep": dict(definition.sweep), "params": dict(definition.params)},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def covers_datasets(records: Sequence[RunRecord], definition: StudyDefinition) -> bool:
    """Whether a sweep's runs are on exactly the data sets of the study's definition (any,
    when the definition does not name them)."""
    return not definition.datasets or definition.datasets == _datasets_of(records)


def _datasets_of(records: Sequence[RunRecord]) -> str:
    """The data sets a sweep's runs are on, as a definition names them ("multiclass,reference")."""
    return ",".join(sorted({str(r.params.get("data.name")) for r in records}))


def study_problem(
    parent: reading.StudyRun,
    study: str,
    records: Sequence[RunRecord],
    definition: StudyDefinition,
    required_seeds: Sequence[int],
    recorded: Mapping[str, str] | None = None,
) -> str:
    """Why a sweep in the store cannot be used for ``study`` ("" when it can).

    A child run whose loss went NaN/inf (a diverging learning rate) or whose range test gave
    no rate to train with (a curve without the falling part its rule reads) is a measured
    outcome, not a failure (both known by their tags); a parent that recorded another study
    definition than ``definition.sweep`` (the test ``+resume`` applies), any other child the
    study's report would use that did not finish, a variant missing seeds the others have, a
    run whose defining params differ from the study's, or a required seed missing makes the
    sweep unusable.

    Args:
        parent: the sweep's parent run.
        study: the study the ledger needs.
        records: the sweep's child runs (params, statuses and errors suffice).
        definition: what the study is (``runner.define_study``).
        required_seeds: seeds every variant must have.
        recorded: the study definition the sweep's parent recorded (None: none, a parent
            made before definitions were recorded; judged by its runs).

    Returns:
        The reason, or "".
    """
    if parent.status != RunStatus.FINISHED:
        if parent.status == RunStatus.RUNNING:
            return "parent run still RUNNING (in progress, or its sweep died without ending it)"
        return f"parent run ended {parent.status}"
    if parent.study != study:
        return f"the sweep is tagged study {parent.study!r}, not {study!r}"
    if not records:
        return "no child runs"
    if not covers_datasets(records, definition):
        found = _datasets_of(records)
        return f"its runs are on data set(s) {found}, the study's are {definition.datasets}"
    if recorded is not None and definition.sweep:
        differences = definition_differences(recorded, definition.sweep)
        if differences:
            shown = "; ".join(differences[:5]) + ("; ..." if len(differences) > 5 else "")
            return f"another study definition (recorded -> the study's): {shown}"
    for record in records:
        differing = {
            name: record.params.get(name, "(not logged)")
            for name, value in definition.params.items()
            if record.params.get(name) != value
        }
        if differing:
            shown = ", ".join(
                f"{name}={got} (study: {definition.params[name]})"
                for name, got in differing.items()
            )
            return f"config differs from the study's definition: {shown}"
    # Judge the runs the study's report uses (a re-run's later attempt replaces an earlier one).
    variants = group_variants(records, STUDIES[study].group_by)
    used = [r for v in variants for r in v.runs]
    needed = STUDIES[study].needs_params
    lacking_params = [p for p in needed if any(p not in r.params for r in used)]
    if lacking_params:
        return f"its runs do not log {lacking_params}, which the rules need (an older version)"
    broken = [r for r in used if not (r.finished or r.diverged or r.no_suggestion)]
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
    absent = sorted(set(required_seeds) - every)
    if absent:
        return f"lacks required seeds {absent} (has {sorted(every)})"
    return ""


def study_checks(
    study: str, records: Sequence[RunRecord], seeds: Sequence[int]
) -> tuple[ClaimCheck, ...]:
    """The study's claim checks over the runs of ``seeds`` only."""
    wanted = set(seeds)
    spec = STUDIES[study]
    chosen = [r for r in records if r.seed in wanted]
    return tuple(spec.evaluate(group_variants(chosen, spec.group_by), StudyOptions()))


def _history_metrics(study: str) -> tuple[str, ...]:
    """The metrics whose per-epoch (or per-step) history the study's checks read."""
    spec = STUDIES[study]
    return (*spec.plot_metrics, *spec.extra_metrics)


def _evidence(
    study: str,
    parent: reading.StudyRun,
    records: Sequence[RunRecord],
    tracking_uri: str,
    definition: StudyDefinition,
    seeds: Sequence[int],
    ran_now: bool,
    skipped: list[str],
    dataset: str | None,
) -> StudyEvidence:
    used = [r for r in records if r.seed in set(seeds)]
    return StudyEvidence(
        study=study,
        checks=study_checks(study, records, seeds),
        parent=parent,
        n_seeds=len({r.seed for r in used}),
        n_runs=len(used),
        ran_now=ran_now,
        skipped=tuple(skipped),
        tracking_uri=tracking_uri,
        seeds=tuple(sorted({r.seed for r in used})),
        config_hash=study_definition_hash(study, definition),
        date=datetime.fromtimestamp(parent.start_time / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M"),
        dataset=dataset or "",
    )


def find_study(
    study: str,
    tracking_uri: str,
    seeds: Sequence[int],
    definition: StudyDefinition,
    rerun: bool,
    runner: StudyRunner | None,
    dataset: str | None = None,
    reads: MutableMapping[str, list[RunRecord]] | None = None,
) -> StudyEvidence:
    """The newest usable sweep of ``study`` in the store, run first when there is none.

    Args:
        study: the study's name.
        tracking_uri: the store.
        seeds: the seeds the verdict uses (a sweep must have them all; others are left out).
        definition: what the study is (a sweep must be it: ``study_problem``).
        rerun: run it even when a usable sweep exists.
        runner: how to run a study; None = never run one (the claim becomes inconclusive).
        dataset: the data set the study must be on (None: the study's own).
        reads: {parent run id: its children} already read by this ledger, filled as sweeps are
            read: with several data sets and seed sets, every lookup passes over the newer
            sweeps of the other data sets, and each sweep is read from the store once.

    Returns:
        The study's checks and where they come from, or the reason there are none.
    """
    skipped: list[str] = []
    known = reading.study_parents(tracking_uri, study)
    if not rerun:
        for parent in known:
            # With the histories the checks read: the sweep found is read once.
            records = _children(tracking_uri, parent, study, reads)
            if records and not covers_datasets(records, definition):
                continue  # the study on another data set (claims.datasets): not worth a note
            recorded = _recorded_definition(tracking_uri, parent, definition)
            problem = study_problem(parent, study, records, definition, seeds, recorded)
            if problem:
                skipped.append(f"sweep {parent.run_id[:8]} not used: {problem}")
                continue
            return _evidence(
                study, parent, records, tracking_uri, definition, seeds, False, skipped, dataset
            )
    if runner is None:
        reason = "none usable in the store, and running studies is switched off"
        return StudyEvidence(study, skipped=tuple(skipped), problem=reason, dataset=dataset or "")
    if reads is not None:
        reads.clear()  # running a study may change the store: read afresh
    try:
        runner.run(study, seeds, tracking_uri, dataset)
    except Exception as error:
        log.exception("running the %s study failed", study)
        return StudyEvidence(
            study,
            skipped=tuple(skipped),
            problem=f"running it failed: {error}",
            dataset=dataset or "",
        )
    old_ids = {parent.run_id for parent in known}
    new = [p for p in reading.study_parents(tracking_uri, study) if p.run_id not in old_ids]
    if not new:
        return StudyEvidence(
            study,
            skipped=tuple(skipped),
            problem="running it left no new sweep in the store",
            dataset=dataset or "",
        )
    records = reading.fetch_children(tracking_uri, new[0], _history_metrics(study))
    recorded = _recorded_definition(tracking_uri, new[0], definition)
    problem = study_problem(new[0], study, records, definition, seeds, recorded)
    if problem:
        skipped.append(f"sweep {new[0].run_id[:8]} (just run) not used: {problem}")
        return StudyEvidence(
            study,
            skipped=tuple(skipped),
            problem=f"the new sweep: {problem}",
            dataset=dataset or "",
        )
    return _evidence(
        study, new[0], records, tracking_uri, definition, seeds, True, skipped, dataset
    )


def _recorded_definition(
    tracking_uri: str, parent: reading.StudyRun, definition: StudyDefinition
) -> dict[str, str] | None:
    """The study definition ``parent`` recorded (None: none, or none to compare it with)."""
    if not definition.sweep:
        return None
    return recovery.recorded_study_definition(tracking_uri, parent.run_id)


def _children(
    tracking_uri: str,
    parent: reading.StudyRun,
    study: str,
    reads: MutableMapping[str, list[RunRecord]] | None,
) -> list[RunRecord]:
    """A sweep's children with the histories ``study``'s checks read, from ``reads`` when this
    ledger read them before."""
    if reads is None:
        return reading.fetch_children(tracking_uri, parent, _history_metrics(study))
    if parent.run_id not in reads:
        reads[parent.run_id] = reading.fetch_children(tracking_uri, parent, _history_metrics(study))
    return reads[parent.run_id]


def _checks_for(claim: str, checks: Sequence[ClaimCheck]) -> list[ClaimCheck]:
    """The study checks of a ledger claim: "C12" takes C12 and C12b, never C1 taking C12."""
    return [
        c for c in checks if c.claim == claim or (c.claim[:-1] == claim and c.claim[-1].isalpha())
    ]


def evaluate_study_claim(
    claim: str, evidence: StudyEvidence, exact_parts: Sequence[ClaimPart] = ()
) -> ClaimResult:
    """A training claim's row from its study's checks (and, for C8, the exact parts).

    The verdict combines every counted part of the checks (each check's rules say which
    count, e.g. C12 shows Adam contexts without counting them) with any exact parts, Holm's
    correction running over all their statistical parts at once; a missing study is a part
    that caps the claim at inconclusive.
    """
    checks = _checks_for(claim, evidence.checks)
    parts = list(exact_parts)
    links: tuple[Link, ...] = ()
    if evidence.parent is not None:
        address = connection.ui_address(evidence.tracking_uri)
        parent = evidence.parent
        name = f"{evidence.study} on {evidence.dataset}" if evidence.dataset else evidence.study
        links = (
            Link(
                f"{name} sweep {parent.run_id[:8]}",
                connection.run_url(parent.experiment_id, parent.run_id, address),
            ),
            Link(f"{name} runs", connection.experiment_url(parent.experiment_id, address)),
        )
    if not checks:
        reason = evidence.problem or f"the study reported no {claim} check"
        parts.append(
            ClaimPart(
                f"study {evidence.study}",
                Finding(Verdict.INCONCLUSIVE, "needs a finished, complete study", reason),
            )
        )
    for check in checks:
        # A summary row: its verdict is its parts', which are counted themselves.
        parts.append(
            ClaimPart(
                f"[{check.claim} overall] {check.statement}",
                Finding(check.verdict, check.combine_rule, f"{len(check.parts)} parts below"),
                counted=False,
            )
        )
        parts += [
            dataclasses.replace(p, context=f"[{check.claim}] {p.context}") for p in check.parts
        ]
    parts = adjusted_parts(parts)
    counts = {v: sum(p.verdict.verdict == v for p in parts if p.counted) for v in Verdict}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    check_text = "; ".join(f"{c.claim} {c.verdict}" for c in checks)
    measured = f"{evidence.describe()}: {check_text or 'no checks'} (parts: {summary})"
    rule = "combines the study's checks"
    if exact_parts:
        rule += " and the exact parts"
    rule += f" ({checks[0].combine_rule if checks else 'none available'}); " + PARTS_RULE
    entry = CLAIMS[claim]
    source = evidence.describe()
    if exact_parts:
        source = f"exact parts: this ledger run; study: {source}"
    return ClaimResult(
        claim=claim,
        title=entry.title,
        says=entry.statement,
        measured=measured,
        verdict=combine_verdicts([p.verdict.verdict for p in parts if p.counted]),
        rule=rule,
        parts=tuple(parts),
        source=source,
        links=links,
        notes=tuple(evidence.skipped),
        measured_here=bool(exact_parts),
    )
