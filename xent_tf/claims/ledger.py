"""The claims ledger: measures and judges every claim of the registry, writes the ledger.

``run_ledger`` is the entry point's (``experiments/run.py``) call: it passes the study runner.
With ``claims.stability`` every training claim is judged on two disjoint seed sets and is
"unstable" where they disagree.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xent_tf.claims import gradients, information, loss_functions, loss_scale, reference, semantics
from xent_tf.claims.comparison import Verdict, combine_verdicts
from xent_tf.claims.from_studies import evaluate_study_claim, find_study
from xent_tf.claims.ledger_render import render_terminal, write_ledger
from xent_tf.claims.protocol import PROTOCOL_VERSION
from xent_tf.claims.records import (
    ClaimResult,
    DatasetVerdict,
    EarlyMeasurements,
    Ledger,
    StabilityRow,
    StudyEvidence,
    seed_range,
)
from xent_tf.claims.registry import CLAIMS, protocol_hash
from xent_tf.claims.runner import (
    StudyDefinition,
    StudyRunner,
    SubprocessStudyRunner,
    check_datasets,
    define_study,
)
from xent_tf.claims.studies import STUDIES, ClaimPart, adjusted_parts
from xent_tf.config import Config, MakeClassificationConfig, MlpConfig
from xent_tf.track import connection, writing
from xent_tf.track.resume import training_config_hash
from xent_tf.track.run_record import RunRecord
from xent_tf.train.runtime import configure_runtime

log = logging.getLogger(__name__)


def seed_sets(seeds: int, stability: bool) -> tuple[tuple[int, ...], ...]:
    """The seed sets the training claims are judged on: 0..seeds-1 (and seeds..2*seeds-1)."""
    first = tuple(range(seeds))
    return (first, tuple(range(seeds, 2 * seeds))) if stability else (first,)


def study_seed_sets(study: str, sets: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """The seed sets a study is judged on: ``sets`` each ``seed_factor`` times as long
    (``StudySpec.seed_factor``; lr_sweep: 0..2n-1, and 2n..4n-1 for the second set)."""
    factor = STUDIES[study].seed_factor if study in STUDIES else 1
    n = len(sets[0]) * factor
    return tuple(tuple(range(i * n, (i + 1) * n)) for i in range(len(sets)))


def _c3(config: Config) -> ClaimResult:
    fits = information.fit_objectives(_multiclass_preset())
    return information.evaluate_c3(information.measure_kl(), fits)


def _c7(config: Config) -> ClaimResult:
    batch = semantics.weighted_reduction_semantics()
    return loss_functions.evaluate_c7(
        semantics.logits_vs_log_softmax(), batch, semantics.torch_reference(batch)
    )


def _c10(config: Config) -> ClaimResult:
    hidden = config.model.hidden_units if isinstance(config.model, MlpConfig) else [10, 10]
    scales = [
        loss_scale.measure_loss_scale(
            data,
            hidden,
            config.trainer.epochs,
            config.trainer.batch_size,
            config.optimizer.learning_rate,
            config.seed,
        )
        for data in (config.data, _multiclass_preset())
    ]
    return loss_scale.evaluate_c10(scales)


def _c11(config: Config) -> ClaimResult:
    x, y = semantics.small_classification()
    model = semantics.build_tiny_mlp(x.shape[1])
    return gradients.evaluate_c11(
        semantics.accuracy_gradients(model, x, y), semantics.step_activation_training()
    )


# The claims measured in the ledger run itself: claim id -> its measurement and rule. (The
# training claims come from their registry entry's study; adding a claim = a registry entry
# plus, for an exact claim, one line here.)
EXACT_CLAIMS: dict[str, Callable[[Config], ClaimResult]] = {
    "C1": lambda config: information.evaluate_c1(information.measure_c1()),
    "C2": lambda config: information.evaluate_c2(information.measure_c2()),
    "C3": _c3,
    "C4": lambda config: information.evaluate_c4(information.measure_c4()),
    "C5": lambda config: loss_functions.evaluate_c5(semantics.worked_example()),
    "C6": lambda config: loss_functions.evaluate_c6(semantics.logit_gradients()),
    "C7": _c7,
    "C9": lambda config: loss_functions.evaluate_c9(semantics.clipping_effect()),
    "C10": _c10,
    "C11": _c11,
}


def _measure_exact(claim: str, config: Config) -> ClaimResult:
    """A claim measured in the ledger run itself."""
    if claim not in EXACT_CLAIMS:
        raise ValueError(
            f"claim {claim!r} is not measured in the ledger run; those are "
            f"{', '.join(EXACT_CLAIMS)}"
        )
    return EXACT_CLAIMS[claim](config)


def measure_exact_early(config: Config) -> EarlyMeasurements:
    """The ledger's on-the-spot claims (those of ``config.claims.only``), measured now.

    Args:
        config: the ledger's config.

    Returns:
        Their results.
    """
    configure_runtime(config.trainer.device, config.trainer.threads, config.seed)
    results = {c: _measure_exact(c, config) for c in _wanted(config) if not CLAIMS[c].study}
    return EarlyMeasurements(training_config_hash(config), results)


def prepare_reads_early(config: Config, reference_dir: Path) -> EarlyMeasurements:
    """What the ledger reads from the store, made ready: (tracking on) a finished reference
    run, left in the store where the ledger finds it, and the study definitions it looks for.

    Args:
        config: the ledger's config.
        reference_dir: where a reference run made here writes its local files.

    Returns:
        The definitions.
    """
    configure_runtime(config.trainer.device, config.trainer.threads, config.seed)
    wanted = _wanted(config)
    reads_reference = any(CLAIMS[c].study == reference.REFERENCE_EXPERIMENT for c in wanted)
    if reads_reference and config.tracking.enabled and not config.claims.rerun:
        reference.find_or_run_reference(config, reference_dir, rerun=False)
    studies = {CLAIMS[c].study for c in wanted} - {"", reference.REFERENCE_EXPERIMENT}
    overrides = config.claims.study_overrides
    datasets: tuple[str | None, ...] = tuple(config.claims.datasets) or (None,)
    definitions = {
        definition_key(study, dataset): define_study(study, overrides, dataset)
        for study in sorted(studies)
        for dataset in datasets
    }
    return EarlyMeasurements(training_config_hash(config), {}, definitions)


def definition_key(study: str, dataset: str | None) -> str:
    """Where ``EarlyMeasurements.definitions`` keeps a study's definition on a data set
    ("lr_sweep" on its own data, "lr_sweep@wine" on wine)."""
    return study if dataset is None else f"{study}@{dataset}"


_early: EarlyMeasurements | None = None


def hand_over_early(measurements: EarlyMeasurements | None) -> None:
    """Give this process's next ``run_ledger`` what ``measure_exact_early`` and
    ``prepare_reads_early`` measured (combined; used once)."""
    global _early
    _early = measurements


def _take_early(config: Config) -> EarlyMeasurements:
    """The handed-over early measurements, if made with this config (used once); else none."""
    global _early
    early, _early = _early, None
    nothing = EarlyMeasurements("", {})
    if early is None:
        return nothing
    if early.config_hash != training_config_hash(config):
        log.warning("claims measured ahead were measured with another config: measuring again")
        return nothing
    log.info("claims measured ahead of the ledger, same config: %s", ", ".join(early.results))
    return early


def _wanted(config: Config) -> list[str]:
    """The claims ``config.claims.only`` asks for (all when empty), in registry order."""
    return [c for c in CLAIMS if not config.claims.only or c in config.claims.only]


def _exact_parts(claim: str) -> list[ClaimPart]:
    """Parts of a training claim measured on the spot (C8's exact half)."""
    if claim != "C8":
        return []
    return loss_functions.c8_exact_parts(
        semantics.binary_as_two_class(dtype="float32"),
        semantics.binary_as_two_class(dtype="float64"),
    )


def _combine_seed_sets(
    results: Sequence[ClaimResult], sets: Sequence[Sequence[int]]
) -> ClaimResult:
    """One row from a claim judged on two seed sets: both sets' parts, and their verdicts'
    agreement (UNSTABLE when they differ)."""
    first, second = results
    row = StabilityRow(
        first.claim, (tuple(sets[0]), tuple(sets[1])), (first.verdict, second.verdict)
    )
    labels = [f"seeds {seed_range(s)}" for s in sets]
    parts = tuple(
        dataclasses.replace(p, context=f"[{label}] {p.context}")
        for label, result in zip(labels, results, strict=True)
        for p in result.parts
    )
    return dataclasses.replace(
        first,
        verdict=row.verdict,
        measured=" || ".join(
            f"{label}: {r.verdict} — {r.measured}" for label, r in zip(labels, results, strict=True)
        ),
        rule="judged on two disjoint seed sets: their common verdict, or unstable when they "
        f"differ; on each set: {first.rule}",
        parts=parts,
        source=" || ".join(r.source for r in results),
        links=first.links + second.links,
        notes=first.notes + second.notes,
    )


# (study, data set or None for the study's own, seeds) -> what the ledger found for it.
StudyKey = tuple[str, str | None, tuple[int, ...]]


def evaluate_claims(
    config: Config, out_dir: Path, runner: StudyRunner | None
) -> tuple[list[ClaimResult], list[StudyEvidence], list[StabilityRow]]:
    """Measures and judges the claims in ``config.claims.only`` (all when empty).

    Args:
        config: the ledger's config; its training sections are the reference configuration
            (C10 and C16), ``claims`` says which claims, how many seeds, on which data sets,
            and how studies are found or run.
        out_dir: where any new reference run writes local files.
        runner: runs a missing study and gives a study's definition; None = never run one
            (those claims become inconclusive; definitions are composed from configs/).

    Returns:
        The claim rows (claim order), the studies used, and (stability mode) each training
        claim's verdicts on the two seed sets (per data set with ``claims.datasets``).

    Raises:
        ValueError: ``claims.datasets`` names a data set that has no config.
    """
    settings = config.claims
    check_datasets(settings.datasets)
    wanted = _wanted(config)
    early = _take_early(config)
    sets = seed_sets(settings.seeds, settings.stability)
    datasets: tuple[str | None, ...] = tuple(settings.datasets) or (None,)
    # The claims measured on the spot need no study: one thread measures them, one after
    # another as before, while this one reads (or runs) the studies; reading the store and the
    # TensorFlow/PyTorch arithmetic both leave the interpreter free much of the time. Each
    # measurement draws from its own seeded generators, so its numbers do not depend on what
    # runs beside it; the thread is done before anything else here trains (C16).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="exact-claims") as executor:
        exact = {
            c: executor.submit(_measure_exact, c, config)
            for c in wanted
            if not CLAIMS[c].study and c not in early.results
        }
        # Definitions composed ahead are those of a runner with the config's study overrides.
        same = isinstance(runner, SubprocessStudyRunner) and list(runner.overrides) == list(
            config.claims.study_overrides
        )
        definitions = early.definitions if same else {}
        studies = _gather_studies(config, wanted, sets, datasets, runner, definitions)
        measured = {claim: future.result() for claim, future in exact.items()}
    measured.update((c, early.results[c]) for c in wanted if c in early.results)
    results: list[ClaimResult] = []
    stability: list[StabilityRow] = []
    for claim in wanted:
        log.info("evaluating %s", claim)
        if claim in measured:
            results.append(measured[claim])
            continue
        results.append(_evaluate(claim, config, out_dir, studies, sets, datasets, stability))
    return results, list(studies.values()), stability


def _gather_studies(
    config: Config,
    wanted: Sequence[str],
    claim_sets: Sequence[tuple[int, ...]],
    datasets: Sequence[str | None],
    runner: StudyRunner | None,
    definitions: Mapping[str, StudyDefinition],
) -> dict[StudyKey, StudyEvidence]:
    """Find (or run) every study the wanted claims read, per data set and seed set (the
    claims' ``claim_sets``, each as long as the study needs: ``study_seed_sets``;
    ``definitions``: study definitions composed ahead, by ``definition_key``)."""
    settings = config.claims
    studies: dict[StudyKey, StudyEvidence] = {}
    # Each sweep read once: every lookup passes over the other data sets' newer sweeps.
    reads: dict[str, list[RunRecord]] = {}
    for claim in wanted:
        study = CLAIMS[claim].study
        if not study or study == reference.REFERENCE_EXPERIMENT:
            continue
        sets = study_seed_sets(study, claim_sets)
        for dataset in datasets:
            if (study, dataset, sets[0]) in studies:
                continue
            if not config.tracking.enabled:
                for seeds in sets:
                    studies[(study, dataset, seeds)] = StudyEvidence(
                        study, problem="tracking is off: no store to read", dataset=dataset or ""
                    )
                continue
            definition: StudyDefinition
            if definition_key(study, dataset) in definitions:
                definition = definitions[definition_key(study, dataset)]
            elif runner is not None:
                definition = runner.definition(study, dataset)
            else:
                definition = define_study(study, dataset=dataset)
            for seeds in sets:
                studies[(study, dataset, seeds)] = find_study(
                    study,
                    config.tracking.uri,
                    seeds,
                    definition,
                    settings.rerun,
                    runner if settings.run_missing else None,
                    dataset,
                    reads,
                )
    return studies


def _evaluate(
    claim: str,
    config: Config,
    out_dir: Path,
    studies: Mapping[StudyKey, StudyEvidence],
    sets: Sequence[tuple[int, ...]],
    datasets: Sequence[str | None],
    stability: list[StabilityRow],
) -> ClaimResult:
    study = CLAIMS[claim].study
    if study == reference.REFERENCE_EXPERIMENT:
        return reference.evaluate_c16(
            reference.find_or_run_reference(config, out_dir / "reference", config.claims.rerun)
        )
    exact = _exact_parts(claim)
    sets = study_seed_sets(study, sets)
    if datasets == (None,):
        return _on_seed_sets(
            claim, [studies[(study, None, s)] for s in sets], sets, exact, "", stability
        )
    evidence = {(str(d), s): studies[(study, d, s)] for d in datasets for s in sets}
    names = [str(d) for d in datasets]
    if len(sets) == 1:
        return combine_datasets(
            claim, {d: evaluate_study_claim(claim, evidence[(d, sets[0])]) for d in names}, exact
        )
    return _datasets_on_seed_sets(claim, evidence, sets, names, exact, stability)


def _datasets_on_seed_sets(
    claim: str,
    evidence: Mapping[tuple[str, tuple[int, ...]], StudyEvidence],
    sets: Sequence[tuple[int, ...]],
    datasets: Sequence[str],
    exact: Sequence[ClaimPart],
    stability: list[StabilityRow],
) -> ClaimResult:
    """A training claim on several data sets and two seed sets.

    Each seed set is judged over every data set first (``combine_datasets``: Holm's
    correction over the data sets' parts of that seed set); on each data set the two sets'
    common verdict, or unstable, is the data set's verdict; the row combines those (and the
    exact parts) by ``DATASETS_RULE``.
    """
    rows = [
        combine_datasets(
            claim, {d: evaluate_study_claim(claim, evidence[(d, s)]) for d in datasets}
        )
        for s in sets
    ]
    labels = [f"seeds {seed_range(s)}" for s in sets]
    per_dataset = []
    for dataset in datasets:
        verdicts = tuple(row.on(dataset) or Verdict.INCONCLUSIVE for row in rows)
        stable = StabilityRow(claim, (sets[0], sets[1]), (verdicts[0], verdicts[1]), dataset)
        stability.append(stable)
        measured = " || ".join(
            f"{label}: {d.verdict} — {d.measured}"
            for label, row in zip(labels, rows, strict=True)
            for d in row.per_dataset
            if d.dataset == dataset
        )
        # The sweep the data set's verdict rests on (make evidence: both seed sets in one).
        link = next(
            (d.link for row in rows for d in row.per_dataset if d.dataset == dataset and d.link),
            None,
        )
        per_dataset.append(DatasetVerdict(dataset, stable.verdict, measured, link))
    both = _combine_seed_sets(rows, sets)
    row = dataclasses.replace(
        both,
        verdict=combine_verdicts(
            [p.verdict.verdict for p in exact] + [d.verdict for d in per_dataset]
        ),
        rule=f"{DATASETS_RULE}{'; the exact parts count too' if exact else ''}; on each data "
        "set: the two seed sets' common verdict, or unstable; on each seed set: " + rows[0].rule,
        parts=(*exact, *both.parts),
        per_dataset=tuple(per_dataset),
        measured_here=bool(exact),
    )
    return dataclasses.replace(row, measured=f"holds on {row.holds_on} data sets. {both.measured}")


def _on_seed_sets(
    claim: str,
    evidence: Sequence[StudyEvidence],
    sets: Sequence[tuple[int, ...]],
    exact: Sequence[ClaimPart],
    dataset: str,
    stability: list[StabilityRow],
) -> ClaimResult:
    """A training claim judged on each seed set's study (and combined, with two sets)."""
    per_set = [evaluate_study_claim(claim, e, exact) for e in evidence]
    if len(per_set) == 1:
        return per_set[0]
    stability.append(
        StabilityRow(claim, (sets[0], sets[1]), (per_set[0].verdict, per_set[1].verdict), dataset)
    )
    return _combine_seed_sets(per_set, sets)


# How a training claim's verdicts on several data sets make its row's verdict: the rule the
# parts of one claim follow (comparison.combine_findings), one level up, Holm's correction
# running over the statistical parts of every data set at once.
DATASETS_RULE = (
    "over the data sets: holds if it holds on every one it applies to, contradicted if "
    "contradicted on any (Holm's correction over every data set's statistical parts), else "
    "inconclusive"
)


def combine_datasets(
    claim: str, per_dataset: Mapping[str, ClaimResult], exact: Sequence[ClaimPart] = ()
) -> ClaimResult:
    """One row from a training claim judged on several data sets (``claims.datasets``).

    Args:
        claim: the claim id.
        per_dataset: {data set: the claim's row judged on that data set's studies alone}.
        exact: parts measured on the spot (C8's exact half), counted once.

    Returns:
        The row: the verdict by ``DATASETS_RULE`` (exact parts counted too), each data set's
        verdict in ``per_dataset`` (after the same correction, so a data set is contradicted
        only when the row's family says so), every part prefixed with its data set.
    """
    first = next(iter(per_dataset.values()))
    # One family: the exact parts and every data set's parts; each data set's own verdict is
    # then recombined from its corrected parts.
    flat = [("", p) for p in exact] + [
        (d, p) for d, r in per_dataset.items() for p in r.parts if p.counted
    ]
    adjusted = adjusted_parts([p for _, p in flat])
    by_dataset: dict[str, list[ClaimPart]] = {}
    for (dataset, _), part in zip(flat, adjusted, strict=True):
        by_dataset.setdefault(dataset, []).append(part)
    per_dataset = {
        d: r
        if _unchanged(r, by_dataset.get(d, []))
        else dataclasses.replace(
            r,
            verdict=combine_verdicts([p.verdict.verdict for p in by_dataset[d]]),
            parts=_replace_counted(r.parts, by_dataset[d]),
        )
        for d, r in per_dataset.items()
    }
    verdicts = [p.verdict.verdict for p in by_dataset.get("", [])] + [
        r.verdict for r in per_dataset.values()
    ]
    row = dataclasses.replace(
        first,
        verdict=combine_verdicts(verdicts) if verdicts else Verdict.NOT_APPLICABLE,
        measured=" || ".join(f"{d}: {r.verdict} — {r.measured}" for d, r in per_dataset.items()),
        rule=f"{DATASETS_RULE}{'; the exact parts count too' if exact else ''}; on each: "
        + first.rule,
        parts=(
            *exact,
            *(
                dataclasses.replace(p, context=f"[{d}] {p.context}")
                for d, r in per_dataset.items()
                for p in r.parts
            ),
        ),
        source=" || ".join(r.source for r in per_dataset.values()),
        links=tuple(link for r in per_dataset.values() for link in r.links),
        notes=tuple(f"[{d}] {n}" for d, r in per_dataset.items() for n in r.notes),
        per_dataset=tuple(
            DatasetVerdict(d, r.verdict, r.measured, r.links[0] if r.links else None)
            for d, r in per_dataset.items()
        ),
        measured_here=bool(exact),
    )
    held = row.holds_on
    return dataclasses.replace(row, measured=f"holds on {held} data sets. {row.measured}")


def _unchanged(result: ClaimResult, adjusted: Sequence[ClaimPart]) -> bool:
    """Whether the row-wide correction left a data set's counted parts as they were."""
    counted = [p for p in result.parts if p.counted]
    return [p.verdict for p in counted] == [p.verdict for p in adjusted]


def _replace_counted(
    parts: Sequence[ClaimPart], adjusted: Sequence[ClaimPart]
) -> tuple[ClaimPart, ...]:
    """``parts`` with the counted ones replaced, in order, by ``adjusted``."""
    replacements = iter(adjusted)
    return tuple(next(replacements) if p.counted else p for p in parts)


def protocol_params() -> dict[str, str]:
    """The protocol version and rules hash, as the ledger's MLflow run records them (params,
    and tags ``xent.protocol_version`` / ``xent.rules_hash``)."""
    return {"protocol.protocol_version": PROTOCOL_VERSION, "protocol.rules_hash": protocol_hash()}


def dataset_tags(results: Sequence[ClaimResult]) -> dict[str, str]:
    """The per-data-set table as the ledger run's tags: ``holds_on.C12`` ("2 of 8") and
    ``verdict.C12.<data set>`` for every training claim judged per data set."""
    tags = {}
    for r in results:
        if r.per_dataset:
            tags[f"holds_on.{r.claim}"] = r.holds_on
            tags.update({f"verdict.{r.claim}.{d.dataset}": str(d.verdict) for d in r.per_dataset})
    return tags


def _verdict_counts(results: Sequence[ClaimResult]) -> dict[str, int]:
    return {
        f"claims/{v.value.replace(' ', '_')}": sum(r.verdict == v for r in results) for v in Verdict
    }


def run_ledger(config: Config, output_dir: Path, runner: StudyRunner | None) -> tuple[Ledger, str]:
    """Evaluates the claims, writes claims.md/.html/.json and records them in MLflow.

    Args:
        config: the composed config with ``task: claims`` (its training sections are the
            reference configuration).
        output_dir: where the files are written.
        runner: runs a missing study (the entry point passes a ``SubprocessStudyRunner`` with
            ``claims.study_overrides``);
            None = use only what the store has.

    Returns:
        The ledger and its terminal text.
    """
    started = time.perf_counter()
    check_datasets(config.claims.datasets)  # before anything runs or is recorded
    output_dir.mkdir(parents=True, exist_ok=True)
    # Seeds, op determinism and the device for the in-process measurements (C10, C11).
    device = configure_runtime(config.trainer.device, config.trainer.threads, config.seed)
    log.info("claims ledger: measuring on %s", device.description)
    if config.tracking.enabled:
        connection.check_tracking_uri(config.tracking.uri)
        with writing.open_run(
            config.tracking.uri,
            config.experiment_name,
            "claims-ledger",
            tags={"xent.task": "claims"},
        ) as recorder:
            recorder.log_params(writing.flatten({"claims": dataclasses.asdict(config.claims)}))
            # The rules the verdicts follow: two ledger runs with the same hash used the same.
            recorder.log_params(protocol_params())
            recorder.set_tags(
                {f"xent.{k.removeprefix('protocol.')}": v for k, v in protocol_params().items()}
            )
            results, studies, stability = evaluate_claims(config, output_dir, runner)
            ledger = Ledger(
                tuple(results),
                tuple(studies),
                config.claims.seeds,
                config.tracking.uri,
                recorder.run_id,
                recorder.experiment_id,
                time.perf_counter() - started,
                tuple(stability),
                tuple(config.claims.datasets),
            )
            for path in write_ledger(ledger, output_dir):
                recorder.log_file(path)
            recorder.set_tags({f"verdict.{r.claim}": str(r.verdict) for r in results})
            recorder.set_tags(dataset_tags(results))
            recorder.log_metrics(_verdict_counts(results), step=0)
    else:
        results, studies, stability = evaluate_claims(config, output_dir, runner)
        ledger = Ledger(
            tuple(results),
            tuple(studies),
            config.claims.seeds,
            seconds=time.perf_counter() - started,
            stability=tuple(stability),
            datasets=tuple(config.claims.datasets),
        )
        write_ledger(ledger, output_dir)
    return ledger, render_terminal(ledger, output_dir)


def _multiclass_preset() -> MakeClassificationConfig:
    """The 5-class preset of ``configs/data/multiclass.yaml``: C16's generator with 5 classes."""
    return MakeClassificationConfig(name="multiclass", n_classes=5)
