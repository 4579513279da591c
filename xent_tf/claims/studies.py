"""The comparison studies: which runs form a variant, and how each claim is judged from them.

A study is a Hydra sweep (``configs/experiment/<name>.yaml``); its child runs are grouped into
variants by the config keys in ``group_by``; the study's ``evaluate`` applies the rules of
``comparison`` to those groups and returns one ``ClaimCheck`` per claim it tests.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from xent_tf.claims.comparison import (
    Finding,
    Interval,
    RunOutcome,
    TimeToTarget,
    Verdict,
    combine_findings,
    difference_verdict,
    equivalence_verdict,
    family_adjusted,
    final_value,
    first_to_target,
    kaplan_meier_median,
    mean_interval,
    paired_difference,
    probe_oscillation,
    run_outcome,
    share_rule,
    sign_test,
    time_to_target,
)
from xent_tf.claims.protocol import statistic
from xent_tf.claims.registry import rule_float, rule_floats, rule_value, statement_of
from xent_tf.metrics import (
    FIRST_HIDDEN_GRAD_NORM_METRIC,
    LEARNING_RATE_METRIC,
    LR_FIND_SMOOTHED_METRIC,
    OUTPUT_GRAD_NORM_METRIC,
    PROBE_LOSS_METRIC,
    TRAIN_LOSS_METRIC,
    VAL_ACC_METRIC,
    VAL_LOSS_METRIC,
)
from xent_tf.track.identity import STUDY_VARIANT_KEYS, short_name
from xent_tf.track.run_record import RunRecord


@dataclass(frozen=True)
class Variant:
    """The runs of one variant (all seeds) of a study.

    Attributes:
        key: the values of the study's ``group_by`` params, in order.
        label: "loss=mse optimizer=sgd ...", for tables and legends.
        runs: one run per seed, finished or not (see ``latest_per_seed``).
        superseded: runs of a seed that a later attempt replaced (a re-run sweep); left out of
            every number, listed by the report.
    """

    key: tuple[str, ...]
    label: str
    runs: tuple[RunRecord, ...]
    superseded: tuple[RunRecord, ...] = ()

    @property
    def finished(self) -> list[RunRecord]:
        return [r for r in self.runs if r.finished]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.finished]

    def param(self, name: str) -> str:
        """A param all runs of the variant share (the first run's value)."""
        return str(self.runs[0].params.get(name, ""))

    def per_seed(self, value: Callable[[RunRecord], float]) -> dict[int, float]:
        """{seed: value(run)} over the finished runs with a finite value."""
        out = {r.seed: value(r) for r in self.finished}
        return {s: v for s, v in out.items() if math.isfinite(v)}

    def interval(self, value: Callable[[RunRecord], float], confidence: float) -> Interval:
        return mean_interval(self.per_seed(value).values(), confidence)


@dataclass(frozen=True)
class ClaimPart:
    """One measured comparison inside a claim check (one context, one rule).

    Attributes:
        context: what is compared, where.
        verdict: the rule's finding.
        counted: False for a part shown but not judged (a separate context such as C12's
            Adam runs, a summary row): it neither makes nor breaks the claim and is not in
            the family Holm's correction runs over.
    """

    context: str
    verdict: Finding
    counted: bool = True


@dataclass(frozen=True)
class ClaimCheck:
    """A claim, its overall verdict, and the parts it was combined from."""

    claim: str
    statement: str
    verdict: Verdict
    combine_rule: str
    parts: list[ClaimPart] = field(default_factory=list)


@dataclass(frozen=True)
class StudyOptions:
    """Knobs of the rules, shown next to the verdicts."""

    # 1 - alpha of the protocol: the interval shown is the one the verdicts are read from
    confidence: float = field(default_factory=lambda: 1 - statistic("alpha"))
    # accuracy points that count as "the same" (C8; stated in the registry)
    equivalence_margin: float = field(
        default_factory=lambda: rule_float("C8", "equivalence_margin")
    )


def own_target(variant: Variant, variants: Sequence[Variant]) -> float:
    """The accuracy target the variant's runs were given (``trainer.target_val_acc``)."""
    return float(variant.param("trainer.target_val_acc") or 0.9)


@dataclass(frozen=True)
class StudySpec:
    """A comparison study."""

    name: str
    title: str
    claims: tuple[str, ...]
    group_by: tuple[str, ...]
    plot_metrics: tuple[str, ...]
    evaluate: Callable[[list[Variant], StudyOptions], list[ClaimCheck]]
    extra_metrics: tuple[str, ...] = ()  # fetched with full history for the rules, not plotted
    panel_by: tuple[str, ...] = ()  # group_by keys that split the plots into panels
    # The accuracy target of a variant's "epochs to target" (the report's table): the runs'
    # own trainer.target_val_acc unless the study measures one (C12).
    target_of: Callable[[Variant, Sequence[Variant]], float] = own_target
    # Params the rules read that older versions did not log: a stored sweep without them is
    # not used by the ledger (it runs the study again).
    needs_params: tuple[str, ...] = ()
    # The study is judged on this many times claims.seeds seeds (lr_sweep: C13 measures its
    # roles on one half and is judged on the other, each half claims.seeds seeds: C13's
    # role_split in the registry).
    seed_factor: int = 1


# --- helpers shared by the rules ---------------------------------------------------------


def latest_per_seed(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """One run per seed: the latest FINISHED one, else the latest attempt (so a failure shows).

    A sweep re-run into the same sweep directory (after an interrupt) runs every job again
    under the same parent; averaging both attempts would count a seed twice.

    Args:
        runs: the runs of one variant.

    Returns:
        (the kept runs, sorted by seed; the superseded ones).
    """
    by_seed: dict[int, list[RunRecord]] = {}
    for run in runs:
        by_seed.setdefault(run.seed, []).append(run)
    kept, superseded = [], []
    for seed in sorted(by_seed):
        attempts = sorted(by_seed[seed], key=lambda r: (r.start_time, r.run_id))
        finished = [r for r in attempts if r.finished]
        best = finished[-1] if finished else attempts[-1]
        kept.append(best)
        superseded += [r for r in attempts if r is not best]
    return kept, superseded


def group_variants(records: Sequence[RunRecord], group_by: Sequence[str]) -> list[Variant]:
    """Group runs by the values of ``group_by`` params (first-seen order), one run per seed."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        key = tuple(str(record.params.get(name, "")) for name in group_by)
        groups.setdefault(key, []).append(record)
    variants = []
    for key, runs in groups.items():
        kept, superseded = latest_per_seed(runs)
        variants.append(
            Variant(
                key,
                " ".join(
                    f"{short_name(name)}={value}" for name, value in zip(group_by, key, strict=True)
                ),
                tuple(kept),
                tuple(superseded),
            )
        )
    return variants


def final_val_loss(record: RunRecord) -> float:
    return final_value(record, VAL_LOSS_METRIC)


def final_val_acc(record: RunRecord) -> float:
    return final_value(record, VAL_ACC_METRIC)


def first_epoch_val_loss(record: RunRecord) -> float:
    values = record.history.get(VAL_LOSS_METRIC, [])
    return float(values[0]) if values else math.nan


def _find(variants: Sequence[Variant], **params: str | tuple[str, ...]) -> list[Variant]:
    """Variants whose params match: a value, or any of a tuple of values."""

    def matches(variant: Variant) -> bool:
        for name, wanted in params.items():
            value = variant.param(name.replace("__", "."))
            if value not in (wanted if isinstance(wanted, tuple) else (wanted,)):
                return False
        return True

    return [v for v in variants if matches(v)]


def _greater_part(
    context: str,
    larger: Variant,
    smaller: Variant,
    value: Callable[[RunRecord], float],
    what: str,
    confidence: float,
) -> ClaimPart:
    """A claim part expecting ``value`` to be larger for ``larger`` than for ``smaller``.

    The verdict is ``difference_verdict`` on the paired (same seed) difference larger - smaller;
    when no seed has the value on both sides the part is inconclusive and says why the value
    could not be measured.
    """
    diff = paired_difference(larger.per_seed(value), smaller.per_seed(value), confidence)
    finding = difference_verdict(diff, expect_positive=True, what=what)
    if diff.n == 0:
        why = "no seed has a finite value for both variants"
        finding = Finding(Verdict.INCONCLUSIVE, finding.rule, f"not measurable: {why}")
    return ClaimPart(context, finding)


# What each claim says, as the reports print it next to its verdict.
_EVERY_PART = "holds if every part holds, contradicted if any part is contradicted"


def _claim_check(
    claim: str,
    combine_rule: str,
    parts: list[ClaimPart],
    counted: Sequence[ClaimPart] | None = None,
) -> ClaimCheck:
    """A claim's check, its verdict combined from ``counted`` (default: all of ``parts``); the
    others are marked not counted. Holm's correction runs over the counted parts."""
    if counted is not None:
        keep = {id(p) for p in counted}
        parts = [p if id(p) in keep else dataclasses.replace(p, counted=False) for p in parts]
    parts = adjusted_parts(parts)
    verdict = combine_findings([p.verdict for p in parts if p.counted])
    return ClaimCheck(claim, statement_of(claim), verdict, combine_rule, parts)


def adjusted_parts(parts: Sequence[ClaimPart]) -> list[ClaimPart]:
    """``parts`` with the counted ones' findings after Holm's correction over all of them
    (``comparison.family_adjusted``); the uncounted ones unchanged."""
    counted = [p for p in parts if p.counted]
    adjusted = iter(family_adjusted([p.verdict for p in counted]))
    out = []
    for part in parts:
        finding = next(adjusted) if part.counted else part.verdict
        out.append(part if finding is part.verdict else dataclasses.replace(part, verdict=finding))
    return out


def _missing(context: str, what: str) -> ClaimPart:
    return ClaimPart(
        context, Finding(Verdict.INCONCLUSIVE, "needs both variants", f"{what} not in this study")
    )


# --- C8: binary vs categorical -----------------------------------------------------------

# The head pairs C8 compares on one data set: on binary data the sigmoid unit against both
# two-unit softmax heads, and the two softmax losses against each other; on multi-class data
# only cce vs sparse_cce (bce does not apply).
_BINARY_PAIRS = (
    ("bce", "cce", "sigmoid+bce vs 2-unit softmax+cce"),
    ("bce", "sparse_cce", "sigmoid+bce vs 2-unit softmax+sparse_cce"),
    ("cce", "sparse_cce", "cce vs sparse_cce (same head)"),
)
_MULTICLASS_PAIRS = (("cce", "sparse_cce", "cce vs sparse_cce (same head)"),)


def _identical_by_construction(a_loss: str, b_loss: str) -> bool:
    """A pair the registry names as identical by construction (C8's ``not_applicable_pairs``):
    the same head trained on the same loss, only the label encoding differs."""
    pairs = rule_value("C8", "not_applicable_pairs")
    return isinstance(pairs, tuple) and f"{a_loss} vs {b_loss}" in pairs


def _data_sets(variants: Sequence[Variant]) -> list[str]:
    """The data sets of a study's variants, in first-seen order."""
    return list(dict.fromkeys(v.param("data.name") for v in variants))


def _class_count(variants: Sequence[Variant], data: str) -> str:
    """ "2 classes" from the runs' ``data.n_classes`` param ("? classes" when not logged)."""
    counts = {v.param("data.n_classes") for v in _find(variants, data__name=data)} - {""}
    return f"{'/'.join(sorted(counts)) or '?'} classes"


def _evaluate_binary_vs_categorical(
    variants: list[Variant], options: StudyOptions
) -> list[ClaimCheck]:
    parts: list[ClaimPart] = []
    for data in _data_sets(variants):
        has_bce = bool(_find(variants, data__name=data, loss__name="bce"))
        for a_loss, b_loss, heads in _BINARY_PAIRS if has_bce else _MULTICLASS_PAIRS:
            context = f"{data} data ({_class_count(variants, data)}): {heads}"
            a = _find(variants, data__name=data, loss__name=a_loss)
            b = _find(variants, data__name=data, loss__name=b_loss)
            if not a or not b:
                parts.append(_missing(context, f"{a_loss} or {b_loss} on {data}"))
                continue
            diff = paired_difference(
                a[0].per_seed(final_val_acc), b[0].per_seed(final_val_acc), options.confidence
            )
            verdict = equivalence_verdict(
                diff, options.equivalence_margin, "final val accuracy, a - b"
            )
            if _identical_by_construction(a_loss, b_loss):
                verdict = Finding(
                    Verdict.NOT_APPLICABLE,
                    "identical by construction (same head, same loss; only the label encoding "
                    "differs): shown as a check of the set-up, not counted",
                    verdict.measured,
                )
            counts = f"parameters {a[0].param('model.n_params')} vs {b[0].param('model.n_params')}"
            parts.append(
                ClaimPart(
                    context, dataclasses.replace(verdict, measured=f"{verdict.measured}; {counts}")
                )
            )
    return [
        _claim_check(
            "C8",
            "holds if every pair holds, contradicted if any pair is contradicted (Holm); a pair "
            "identical by construction is not applicable",
            parts,
        )
    ]


# --- C12: MSE vs cross-entropy -----------------------------------------------------------

# Every number of C12's rules is stated in the registry (``Claim.rules``), before the runs.
_CE_LOSSES = ("ce", "bce", "cce", "sparse_cce")
TARGET_SHARE = rule_float("C12", "target_share")
TARGET_SENSITIVITY = rule_floats("C12", "target_share_sensitivity")
MECHANISM_EPOCHS = int(rule_float("C12", "mechanism_epochs"))
RATIO_HOLDS = rule_float("C12", "mechanism_ratio_holds")
RATIO_CONTRADICTED = rule_float("C12", "mechanism_ratio_contradicted")
CONTROL_LOSS = str(rule_value("C12", "control_loss"))
CONTROL_MARGIN = rule_float("C12", "control_slowdown_margin")
_COUNTED = rule_value("C12", "counted_optimizers")
_COUNTED_OPTIMIZERS = _COUNTED if isinstance(_COUNTED, tuple) else (str(_COUNTED),)


def fixed_target(majority: float, share: float = TARGET_SHARE) -> float:
    """C12's accuracy target, fixed before any run: ``share`` of the way from the majority
    share to perfect accuracy.

    Args:
        majority: the share of the most common class (the accuracy of always guessing it).
        share: how far up from it (the registry's ``target_share``).

    Returns:
        majority + share x (1 - majority), rounded to 4 decimals; nan when ``majority`` is not
        a number.
    """
    if not math.isfinite(majority):
        return math.nan
    return round(majority + share * (1.0 - majority), 4)


def _majority(record: RunRecord) -> float:
    return float(record.params.get("data.majority_share", "nan") or "nan")


def accuracy_area(record: RunRecord) -> float:
    """The area under the run's validation-accuracy curve: the mean val acc over epochs
    1..E (E = ``trainer.epochs``). A run that stopped early (its loss went NaN/inf) counts the
    majority share, what a constant guess scores, for the epochs it did not reach.

    Returns:
        The area in [0, 1]; nan without val accuracies or a stated epoch count.
    """
    values = [float(v) for v in record.history.get(VAL_ACC_METRIC, [])]
    epochs = int(record.params.get("trainer.epochs", "0") or 0) or len(values)
    if not values or epochs < 1:
        return math.nan
    missing = max(0, epochs - len(values))
    if missing and not math.isfinite(_majority(record)):
        return math.nan
    return (sum(values[:epochs]) + missing * _majority(record)) / epochs


def early_output_grad_norm(record: RunRecord) -> float:
    """The mean full-batch gradient norm of the last layer over epochs 1..MECHANISM_EPOCHS."""
    values = list(record.history.get(OUTPUT_GRAD_NORM_METRIC, []))[:MECHANISM_EPOCHS]
    finite = [float(v) for v in values if math.isfinite(v)]
    if len(finite) < MECHANISM_EPOCHS:
        return math.nan
    return sum(finite) / len(finite)


def _first_hidden_grad_norm(record: RunRecord) -> float:
    """The first hidden layer's full-batch gradient norm after epoch 1 (0: its units are dead)."""
    values = list(record.history.get(FIRST_HIDDEN_GRAD_NORM_METRIC, []))
    return float(values[0]) if values else math.nan


def _mse_vs_ce_target(variant: Variant, variants: Sequence[Variant]) -> float:
    """The report's "epochs to target": the fixed target on the variant's data."""
    return fixed_target(_majority(variant.runs[0])) if variant.runs else math.nan


def _times(variant: Variant, target: float) -> dict[int, TimeToTarget]:
    return {r.seed: time_to_target(r, target) for r in variant.finished}


def time_to_target_summary(variant: Variant, target: float) -> str:
    """ "reached 4/5 (target 0.9), KM median 3": how many runs reached it, and when."""
    if not math.isfinite(target):
        return "no target"
    times = list(_times(variant, target).values())
    median = kaplan_meier_median(times)
    when = f"KM median {median:g}" if math.isfinite(median) else "KM median not reached"
    return f"reached {sum(t.reached for t in times)}/{len(times)} (target {target:g}), {when}"


def _describe_times(label: str, times: dict[int, TimeToTarget]) -> str:
    reached = sum(t.reached for t in times.values())
    median = kaplan_meier_median(list(times.values()))
    median_text = f"{median:g}" if median == median else "not reached"
    return f"{label} {reached}/{len(times)} (KM median {median_text})"


def _targets_report(ce: Variant, mse: Variant) -> str:
    """The secondary endpoint, reported and not judged: per fixed target, how many runs of
    each loss reached it, their Kaplan-Meier median epoch, and who got there first per seed."""
    majority = _majority(ce.runs[0]) if ce.runs else math.nan
    shares = sorted({TARGET_SHARE, *TARGET_SENSITIVITY})
    texts = []
    for share in shares:
        target = fixed_target(majority, share)
        if not math.isfinite(target):
            texts.append(f"share {share:g}: no target (data.majority_share not logged)")
            continue
        ce_times, mse_times = _times(ce, target), _times(mse, target)
        paired = sorted(set(ce_times) & set(mse_times))
        outcomes = [first_to_target(ce_times[s], mse_times[s]) for s in paired]
        role = "" if share == TARGET_SHARE else ", sensitivity"
        texts.append(
            f"target {target:g} (share {share:g}{role}): "
            f"{_describe_times('ce', ce_times)}, {_describe_times('mse', mse_times)}; ce first "
            f"in {outcomes.count(1)}, mse first in {outcomes.count(-1)}, "
            f"{outcomes.count(0)} ties"
        )
    return "times to target (reported, not judged): " + "; ".join(texts)


def _log10_ratio_part(
    context: str,
    numerator: Variant,
    denominator: Variant,
    confidence: float,
    counted: bool = True,
) -> ClaimPart:
    """C12c's mechanism: per seed log10(early last-layer grad norm, numerator / denominator);
    holds when the interval of its mean lies below log10(RATIO_HOLDS), contradicted when it
    lies above log10(RATIO_CONTRADICTED), else inconclusive."""
    top, bottom = (
        numerator.per_seed(early_output_grad_norm),
        denominator.per_seed(early_output_grad_norm),
    )
    logs = {
        s: math.log10(top[s] / bottom[s])
        for s in set(top) & set(bottom)
        if top[s] > 0 and bottom[s] > 0
    }
    below = difference_verdict(
        mean_interval([v - math.log10(RATIO_HOLDS) for v in logs.values()], confidence),
        expect_positive=False,
        what="",
    )
    above = difference_verdict(
        mean_interval([v - math.log10(RATIO_CONTRADICTED) for v in logs.values()], confidence),
        expect_positive=True,
        what="",
    )
    interval = mean_interval(logs.values(), confidence)
    rule = (
        f"per seed log10(mean last-layer gradient norm over epochs 1..{MECHANISM_EPOCHS}, mse / "
        f"ce): holds if the {confidence:.0%} interval of the mean lies below log10("
        f"{RATIO_HOLDS:g}), contradicted if it lies above log10({RATIO_CONTRADICTED:g}), else "
        "inconclusive"
    )
    if interval.has_interval:
        measured = (
            f"log10 ratio {interval.format(3)}: ratio {10**interval.mean:.3g} "
            f"[{10**interval.low:.3g}, {10**interval.high:.3g}]"
        )
    else:
        measured = f"log10 ratio {interval.format(3)} (needs >= 2 seeds with both norms)"
    if below.verdict == Verdict.HOLDS:
        verdict = Verdict.HOLDS
    elif above.verdict == Verdict.HOLDS:
        verdict = Verdict.CONTRADICTED
    else:
        verdict = Verdict.INCONCLUSIVE
    # One-sided p-values for Holm: below log10(RATIO_HOLDS) for, above the other bound against.
    return ClaimPart(
        context, Finding(verdict, rule, measured, below.p_holds, above.p_holds), counted=counted
    )


def _slowdown(variant_standard: Variant, variant_saturated: Variant) -> dict[int, float]:
    """Per seed, the accuracy area lost by starting saturated: standard - saturated."""
    standard = variant_standard.per_seed(accuracy_area)
    saturated = variant_saturated.per_seed(accuracy_area)
    return {s: standard[s] - saturated[s] for s in set(standard) & set(saturated)}


def _evaluate_mse_vs_ce(variants: list[Variant], options: StudyOptions) -> list[ClaimCheck]:
    """C12 per (data, optimizer, init) context: the paired per-seed difference of the areas
    under the validation-accuracy curves, ce - mse (``accuracy_area``: no target taken from
    the runs); plain SGD is the claim's setting, other optimizers are shown and not counted.
    Times to the fixed targets are reported beside it. C12b: per seed, the area gap grows
    from the standard to the saturated init. C12c, the mechanism: from the saturated init
    the last layer's early gradient norm, mse over ce, is << 1; and the control loss
    (``CONTROL_LOSS``, no sigmoid/softmax) loses less area to the saturated start than mse,
    and at most ``CONTROL_MARGIN``."""
    speed_parts: list[ClaimPart] = []
    counted: list[ClaimPart] = []
    saturation_parts: list[ClaimPart] = []
    mechanism_parts: list[ClaimPart] = []
    conf = options.confidence
    contexts = sorted(
        {(v.param("data.name"), v.param("optimizer.name")) for v in variants}, reverse=True
    )
    for data, optimizer in contexts:
        is_counted = optimizer in _COUNTED_OPTIMIZERS
        found: dict[tuple[str, str], Variant] = {}
        for init in ("standard", "saturated"):
            common = {"data__name": data, "optimizer__name": optimizer, "model__output_init": init}
            for label, losses in (("ce", _CE_LOSSES), ("mse", ("mse",)), ("raw", (CONTROL_LOSS,))):
                match = _find(variants, loss__name=losses, **common)
                if match:
                    found[(label, init)] = match[0]
            context = f"{data} data, {optimizer}, {init} init"
            if not is_counted:
                context += f" ({optimizer}: a separate context, not counted)"
            ce, mse = found.get(("ce", init)), found.get(("mse", init))
            if ce is None or mse is None:
                part = _missing(context, "mse or cross-entropy")
            else:
                judged = _greater_part(
                    context, ce, mse, accuracy_area, "area under the val-acc curve, ce - mse", conf
                )
                part = ClaimPart(
                    context,
                    dataclasses.replace(
                        judged.verdict,
                        measured=f"{judged.verdict.measured}; {_targets_report(ce, mse)}",
                    ),
                    counted=is_counted,
                )
            speed_parts.append(part)
            if is_counted:
                counted.append(part)
        if not is_counted:
            continue
        gaps = {}
        for init in ("standard", "saturated"):
            ce, mse = found.get(("ce", init)), found.get(("mse", init))
            if ce is not None and mse is not None:
                a, b = ce.per_seed(accuracy_area), mse.per_seed(accuracy_area)
                gaps[init] = {s: a[s] - b[s] for s in set(a) & set(b)}
        if len(gaps) == 2:
            diff = paired_difference(gaps["saturated"], gaps["standard"], conf)
            saturation_parts.append(
                ClaimPart(
                    f"{data} data, {optimizer}",
                    difference_verdict(
                        diff,
                        expect_positive=True,
                        what="per seed, (ce - mse accuracy area) from the saturated init minus "
                        "the same from the standard init",
                    ),
                )
            )
        else:
            saturation_parts.append(
                _missing(f"{data} data, {optimizer}", "ce and mse from both inits")
            )
        ce_sat, mse_sat = found.get(("ce", "saturated")), found.get(("mse", "saturated"))
        if ce_sat is not None and mse_sat is not None:
            mechanism_parts.append(
                _log10_ratio_part(
                    f"{data} data, {optimizer}, saturated init: last-layer gradient norm, mse / "
                    "ce, is << 1",
                    mse_sat,
                    ce_sat,
                    conf,
                )
            )
        else:
            mechanism_parts.append(
                _missing(f"{data} data, {optimizer}: gradient ratio", "ce and mse saturated")
            )
        ce_std, mse_std = found.get(("ce", "standard")), found.get(("mse", "standard"))
        if ce_std is not None and mse_std is not None:
            shown = _log10_ratio_part(
                f"{data} data, {optimizer}, standard init: the same ratio (shown, not counted)",
                mse_std,
                ce_std,
                conf,
                counted=False,
            )
            mechanism_parts.append(shown)
        raw_std, raw_sat = found.get(("raw", "standard")), found.get(("raw", "saturated"))
        control = f"{data} data, {optimizer}: control {CONTROL_LOSS} (no sigma')"
        if raw_std is None or raw_sat is None or mse_std is None or mse_sat is None:
            mechanism_parts.append(_missing(control, f"{CONTROL_LOSS} and mse from both inits"))
            continue
        mse_slow, raw_slow = _slowdown(mse_std, mse_sat), _slowdown(raw_std, raw_sat)
        mechanism_parts.append(
            ClaimPart(
                f"{control} loses less to the saturated start than mse",
                difference_verdict(
                    paired_difference(mse_slow, raw_slow, conf),
                    expect_positive=True,
                    what=f"per seed, slowdown of mse - slowdown of {CONTROL_LOSS} (slowdown = "
                    "accuracy area from the standard init - from the saturated init)",
                ),
            )
        )
        margin = difference_verdict(
            mean_interval([v - CONTROL_MARGIN for v in raw_slow.values()], conf),
            expect_positive=False,
            what=f"per seed, slowdown of {CONTROL_LOSS} - {CONTROL_MARGIN:g}",
        )
        slow = mean_interval(raw_slow.values(), conf)
        # Why a run stalls shows in its first hidden layer: a sigma' stall keeps it learning
        # slowly, dead ReLUs (a huge first step) leave it no gradient at all.
        hidden = {
            label: mean_interval(v.per_seed(_first_hidden_grad_norm).values(), conf).format(4)
            for label, v in (("saturated", raw_sat), ("standard", raw_std))
        }
        mechanism_parts.append(
            ClaimPart(
                f"{control} does not stall from the saturated start",
                dataclasses.replace(
                    margin,
                    measured=f"slowdown {slow.format(4)}; slowdown of mse "
                    f"{mean_interval(mse_slow.values(), conf).format(4)}; {CONTROL_LOSS}'s first "
                    f"hidden layer's gradient norm after epoch 1: {hidden['saturated']} from the "
                    f"saturated init, {hidden['standard']} from the standard init",
                ),
            )
        )
    return [
        _claim_check(
            "C12",
            "holds if it holds in every plain-SGD context, contradicted if contradicted in any; "
            "other optimizers are shown by name but not counted",
            speed_parts,
            counted=counted,
        ),
        _claim_check(
            "C12b",
            "holds if the gap grows with saturation in every SGD context",
            saturation_parts,
        ),
        _claim_check(
            "C12c",
            "holds if the gradient ratio is << 1 and the control holds in every SGD context",
            mechanism_parts,
        ),
    ]


# --- rules shared by C13-C15: failures, oscillation, rank trends -------------------------


def _loss_or_inf(record: RunRecord) -> float:
    """The final val loss; infinite for a run whose loss went NaN/inf (nan for a crash)."""
    if record.diverged:
        return math.inf
    if not record.finished:
        return math.nan
    value = final_val_loss(record)
    return value if math.isfinite(value) else math.inf


def _epoch_one_loss_or_inf(record: RunRecord) -> float:
    """The val loss after epoch 1; infinite when the run diverged before it was finite."""
    value = first_epoch_val_loss(record)
    if math.isfinite(value):
        return value
    return math.inf if record.diverged else math.nan


def val_loss_area(record: RunRecord) -> float:
    """The area under the validation-loss curve: the mean val loss over epochs 1..E (low and
    early both count: C15's "quickly"); infinite for a run that went NaN/inf."""
    if record.diverged:
        return math.inf
    values = [float(v) for v in record.history.get(VAL_LOSS_METRIC, [])]
    if not record.finished or not values:
        return math.nan
    area = sum(values) / len(values)
    return area if math.isfinite(area) else math.inf


def _oscillation_or_inf(record: RunRecord, collapse_margin: float) -> float:
    """The oscillation of the probe loss the run recorded (``comparison.probe_oscillation``
    over all of it: the studies record it in the late epochs only, ``trainer.
    probe_late_fraction``); a failed run (diverged, or stuck at the majority share) is never
    smooth: infinite."""
    if not record.finished and not record.diverged:
        return math.nan
    if run_outcome(record, collapse_margin).failed:
        return math.inf
    return probe_oscillation(record.history.get(PROBE_LOSS_METRIC, []), 1.0)


def rank_correlation(xs: Sequence[float], ys: Sequence[float], min_points: int) -> float:
    """Spearman's rank correlation of ``ys`` with ``xs`` (ties share their mean rank; an
    infinite value ranks above every finite one).

    Args:
        xs, ys: paired values; pairs with a nan are left out.
        min_points: fewest pairs to compute it from.

    Returns:
        The correlation in [-1, 1]; nan with fewer pairs or a constant side.
    """
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < min_points:
        return math.nan
    from scipy.stats import rankdata  # see comparison.mean_interval: slow to import

    rx = rankdata([p[0] for p in pairs])
    ry = rankdata([p[1] for p in pairs])
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _mean_part(
    context: str, values: Sequence[float], expect_positive: bool, what: str, confidence: float
) -> ClaimPart:
    """A part judging the mean of per-seed values against 0 (the sign the claim expects)."""
    finding = difference_verdict(mean_interval(values, confidence), expect_positive, what)
    return ClaimPart(context, finding)


def _share_part(context: str, successes: int, n: int, what: str) -> ClaimPart:
    """A part judging the share ``successes`` / ``n`` with the share rule."""
    return ClaimPart(context, share_rule(successes, n, what))


def _lower_part(
    context: str,
    lower: dict[int, float],
    higher: dict[int, float],
    what: str,
    confidence: float,
) -> ClaimPart:
    """A part expecting ``lower[seed] < higher[seed]``: the paired interval of higher - lower,
    or, when a value is infinite (a failed run), a sign test over the seeds (ties left out)."""
    seeds = sorted(set(lower) & set(higher))
    if any(math.isinf(lower[s]) or math.isinf(higher[s]) for s in seeds):
        wins = sum(lower[s] < higher[s] for s in seeds)
        losses = sum(lower[s] > higher[s] for s in seeds)
        failed = sum(math.isinf(lower[s]) or math.isinf(higher[s]) for s in seeds)
        finding = sign_test(wins, losses, f"{what} (a failed run counts as unbounded)")
        measured = f"{finding.measured}; {failed} of {len(seeds)} pairs with a failed run"
        return ClaimPart(context, dataclasses.replace(finding, measured=measured))
    diff = paired_difference(higher, lower, confidence)
    return ClaimPart(context, difference_verdict(diff, expect_positive=True, what=what))


# --- C13: learning-rate size -------------------------------------------------------------

RATE_GRID = rule_floats("C13", "rate_grid")
PROBE_ROWS = int(rule_float("C13", "probe_rows"))
COLLAPSE_MARGIN = rule_float("C13", "collapse_margin")
TOO_LARGE_SHARE = rule_float("C13", "too_large_share")
MIN_TREND_RATES = int(rule_float("C13", "min_trend_rates"))


def _rate(variant: Variant) -> float:
    return float(variant.param("optimizer.learning_rate") or "nan")


def split_seeds(variants: Sequence[Variant]) -> tuple[set[int], set[int]]:
    """The study's seeds in two halves: the first picks the roles, the second is judged."""
    seeds = sorted({r.seed for v in variants for r in v.runs})
    half = len(seeds) // 2
    return set(seeds[:half]), set(seeds[half:])


def _by_seed(
    variant: Variant, seeds: set[int], value: Callable[[RunRecord], float]
) -> dict[int, float]:
    """{seed: value(run)} over every run of the variant on ``seeds`` (failed ones too)."""
    out = {r.seed: value(r) for r in variant.runs if r.seed in seeds}
    return {s: v for s, v in out.items() if not math.isnan(v)}


def _per_seed_trend(
    by_rate: Sequence[Variant],
    seeds: set[int],
    value: Callable[[RunRecord], float],
) -> list[float]:
    """Per seed, the rank correlation of ``value`` with the rate over ``by_rate``."""
    tables = [(_rate(v), _by_seed(v, seeds, value)) for v in by_rate]
    out = []
    for seed in sorted(seeds):
        xs = [rate for rate, table in tables if seed in table]
        ys = [table[seed] for _, table in tables if seed in table]
        rho = rank_correlation(xs, ys, MIN_TREND_RATES)
        if math.isfinite(rho):
            out.append(rho)
    return out


def _trend_part(
    context: str,
    by_rate: Sequence[Variant],
    seeds: set[int],
    value: Callable[[RunRecord], float],
    expect_positive: bool,
    what: str,
    confidence: float,
) -> ClaimPart:
    """A trend with the rate: per seed Spearman's correlation of ``value`` with the rate over
    ``by_rate``, its mean over the seeds judged against 0."""
    if len(by_rate) < MIN_TREND_RATES:
        return ClaimPart(
            context,
            Finding(
                Verdict.INCONCLUSIVE,
                f"needs >= {MIN_TREND_RATES} rates",
                f"{len(by_rate)} rate(s): " + ", ".join(f"{_rate(v):g}" for v in by_rate),
            ),
        )
    rhos = _per_seed_trend(by_rate, seeds, value)
    rates = ", ".join(f"{_rate(v):g}" for v in by_rate)
    part = _mean_part(
        context,
        rhos,
        expect_positive,
        f"per seed, Spearman correlation of {what} with the rate over {rates}",
        confidence,
    )
    if not rhos:
        measured = "no seed has a rank correlation (a constant value, or too few rates measured)"
        return ClaimPart(context, Finding(Verdict.INCONCLUSIVE, part.verdict.rule, measured))
    return part


def _evaluate_lr_sweep(variants: list[Variant], options: StudyOptions) -> list[ClaimCheck]:
    """C13 over the rate grid. On the first half of the seeds the roles are measured: good =
    the rate with the lowest mean final val loss (a run that went NaN/inf counts infinite),
    too large = every rate from the first one where at least ``TOO_LARGE_SHARE`` of the runs
    diverged (``comparison.run_outcome``). On the other half the claim is judged as trends
    with the rate (per seed Spearman correlations, their mean over the seeds): the final val
    loss falls with the rate up to the good one (small rates converge slowly), the epoch-1
    val loss falls with the rate below the too-large ones (larger rates drop faster at
    first), the late oscillation of the probe loss and divergence rise with the rate; the next
    rate above the good one oscillates more than it; the too-large rates diverge."""
    by_rate = sorted(variants, key=_rate)
    choose, judge = split_seeds(by_rate)
    if len(by_rate) < MIN_TREND_RATES or not choose or not judge:
        missing = _missing(
            "study",
            f"{MIN_TREND_RATES} learning rates and >= 2 seeds (found {len(by_rate)} rates)",
        )
        return [
            _claim_check("C13", f"needs {MIN_TREND_RATES} rates and two seed halves", [missing])
        ]
    conf = options.confidence

    def diverged(record: RunRecord) -> float:
        outcome = run_outcome(record, COLLAPSE_MARGIN)
        return 1.0 if outcome is RunOutcome.DIVERGED else 0.0

    def oscillation(record: RunRecord) -> float:
        return _oscillation_or_inf(record, COLLAPSE_MARGIN)

    def mean(values: Sequence[float]) -> float:
        return float(sum(values) / len(values)) if values else math.nan

    scores = {_rate(v): mean(list(_by_seed(v, choose, _loss_or_inf).values())) for v in by_rate}
    shares = {_rate(v): mean(list(_by_seed(v, choose, diverged).values())) for v in by_rate}
    good_index = min(range(len(by_rate)), key=lambda i: (scores[_rate(by_rate[i])], i))
    too_large_index = next(
        (i for i, v in enumerate(by_rate) if shares[_rate(v)] >= TOO_LARGE_SHARE), None
    )
    good = by_rate[good_index]
    roles = (
        f"roles on seeds {sorted(choose)}: good {_rate(good):g} (mean final val loss per rate: "
        + ", ".join(f"{r:g}: {v:.3g}" for r, v in scores.items())
        + "); too large from "
        + (f"{_rate(by_rate[too_large_index]):g}" if too_large_index is not None else "(none)")
        + " (diverged share per rate: "
        + ", ".join(f"{r:g}: {v:.0%}" for r, v in shares.items())
        + f"); judged on seeds {sorted(judge)}"
    )
    below_too_large = by_rate[: too_large_index if too_large_index is not None else len(by_rate)]
    parts = [
        _trend_part(
            "small rates converge slowly: up to the good rate, the final val loss falls as the "
            "rate grows",
            by_rate[: good_index + 1],
            judge,
            _loss_or_inf,
            False,
            "the final val loss",
            conf,
        ),
        _trend_part(
            "larger rates drop faster at first: below the too-large rates, the val loss after "
            "epoch 1 falls as the rate grows",
            below_too_large,
            judge,
            _epoch_one_loss_or_inf,
            False,
            "the val loss after epoch 1",
            conf,
        ),
        _trend_part(
            "small rates are smooth, large ones oscillate: the late oscillation of the probe "
            "loss grows with the rate",
            by_rate,
            judge,
            oscillation,
            True,
            "the late probe-loss oscillation (a failed run: unbounded)",
            conf,
        ),
        _trend_part(
            "too large diverges: divergence grows with the rate",
            by_rate,
            judge,
            diverged,
            True,
            "divergence (1 diverged, 0 not)",
            conf,
        ),
    ]
    large_index = good_index + 1
    context = "a large rate (the next above the good one) oscillates more than the good one"
    if large_index >= len(below_too_large):
        parts.append(
            ClaimPart(
                context,
                Finding(
                    Verdict.INCONCLUSIVE,
                    "needs a grid rate above the good one and below the too-large ones",
                    roles,
                ),
            )
        )
    else:
        large = by_rate[large_index]
        parts.append(
            _lower_part(
                f"{context} ({_rate(large):g} vs {_rate(good):g})",
                _by_seed(good, judge, oscillation),
                _by_seed(large, judge, oscillation),
                "late probe-loss oscillation, large - good",
                conf,
            )
        )
    context = "the too-large rates diverge"
    if too_large_index is None:
        parts.append(
            ClaimPart(
                context,
                Finding(
                    Verdict.INCONCLUSIVE,
                    "needs a rate that diverged in at least "
                    f"{TOO_LARGE_SHARE:.0%} of the role-picking runs",
                    roles,
                ),
            )
        )
    else:
        outcomes = [
            value
            for v in by_rate[too_large_index:]
            for value in _by_seed(v, judge, diverged).values()
        ]
        parts.append(
            _share_part(
                f"{context} (from {_rate(by_rate[too_large_index]):g})",
                int(sum(outcomes)),
                len(outcomes),
                "share of their runs that diverged (NaN/inf loss, or a final training loss at or "
                "above the class-prior loss at the majority share's accuracy)",
            )
        )
    return [_claim_check("C13", f"{_EVERY_PART}; {roles}", parts)]


def _grid_variants(variants: Sequence[Variant]) -> list[Variant]:
    """The grid's variants: trained with their own rate (``lr_find.use=given``)."""
    return [v for v in variants if v.param("lr_find.use") in ("given", "")]


def _evaluate_rate_grid(variants: list[Variant], options: StudyOptions) -> list[ClaimCheck]:
    """The lr_sweep study's checks: C13 on the grid, C14 on the grid and suggestion arms."""
    return [
        *_evaluate_lr_sweep(_grid_variants(variants), options),
        *_evaluate_range_grid(variants, options),
    ]


# --- C15: annealing ----------------------------------------------------------------------

C15_COLLAPSE_MARGIN = rule_float("C15", "collapse_margin")


def _evaluate_annealing(variants: list[Variant], options: StudyOptions) -> list[ClaimCheck]:
    """C15: per decaying schedule, paired per seed with the constant large rate: a lower
    final val loss, a lower val-loss area (low quickly), less late probe-loss oscillation."""
    constant = _find(variants, schedule__name="constant")
    # By name: the variants come in the store's order of runs, which differs between runs.
    decaying = sorted(
        (v for v in variants if v.param("schedule.name") != "constant"),
        key=lambda v: v.param("schedule.name"),
    )
    if not constant or not decaying:
        missing = _missing("study", "constant or decaying schedule")
        rule = "needs the constant schedule and at least one decaying one"
        return [_claim_check("C15", rule, [missing])]
    base = constant[0]
    seeds = {r.seed for v in variants for r in v.runs}
    conf = options.confidence

    def oscillation(record: RunRecord) -> float:
        return _oscillation_or_inf(record, C15_COLLAPSE_MARGIN)

    parts: list[ClaimPart] = []
    for variant in decaying:
        name = variant.param("schedule.name")
        for context, value, what in (
            ("reaches a lower final val loss", _loss_or_inf, "final val loss"),
            (
                "reaches a low loss quickly: a lower area under the val-loss curve",
                val_loss_area,
                "mean val loss over the epochs",
            ),
            ("oscillates less late", oscillation, "late probe-loss oscillation"),
        ):
            parts.append(
                _lower_part(
                    f"{name} {context} than constant",
                    _by_seed(variant, seeds, value),
                    _by_seed(base, seeds, value),
                    f"{what}, constant - {name}",
                    conf,
                )
            )
    return [
        _claim_check(
            "C15",
            "holds if every schedule beats the constant rate on all three counts, contradicted "
            "if any comparison goes significantly the other way",
            parts,
        )
    ]


# --- C14: the learning-rate range test, judged on C13's grid -------------------------------

SKIP_FRACTION = rule_float("C14", "skip_fraction")
FLAT_SPAN = rule_float("C14", "flat_span")
FLAT_TOLERANCE = rule_float("C14", "flat_tolerance")
FALL_DEPTH = rule_float("C14", "fall_depth")
SUGGESTIONS = tuple(str(v) for v in rule_value("C14", "suggestions"))  # type: ignore[union-attr]


def _curve_shape(run: RunRecord) -> tuple[bool, bool, bool]:
    """(flat start, a fall, an explosion) of a run's smoothed range-test curve.

    The first ``SKIP_FRACTION`` of the steps are left out, as the range test itself does: the
    moving average of a handful of batches is mostly noise. From there (the "start"): flat: up
    to ``FLAT_SPAN`` of the steps the smoothed loss stays within ``FLAT_TOLERANCE`` of the start;
    fall: its minimum is below ``FALL_DEPTH`` x the start; explosion: the range test's own stop
    rule fired (smoothed loss > divergence_factor x its best, or a non-finite loss: the run's
    ``lr_find.stop_reason``).
    """
    curve = list(run.history.get(LR_FIND_SMOOTHED_METRIC, []))
    if len(curve) < 10:
        return (False, False, False)
    skipped = int(len(curve) * SKIP_FRACTION)
    span = max(2, int(len(curve) * FLAT_SPAN) - skipped)
    curve = curve[skipped:]
    start = curve[0]
    head = curve[:span]
    flat = max(abs(v - start) for v in head) < FLAT_TOLERANCE * abs(start)
    fall = min(curve) < FALL_DEPTH * start
    stop = str(run.params.get("lr_find.stop_reason", "(none)"))
    explosion = stop not in ("", "(none)") or any(not math.isfinite(v) for v in curve)
    return (flat, fall, explosion)


def loss_at_rate(rate: float, grid: Sequence[float], losses: Sequence[float]) -> float:
    """A seed's final val loss at ``rate``, interpolated in log-rate between grid rates.

    A rate outside the grid takes the loss of the grid's nearest end; between a finite and an
    infinite loss (a run that went NaN/inf) the loss is infinite except at the finite rate.

    Args:
        rate: the rate (a range test's suggestion).
        grid: increasing grid rates.
        losses: the seed's final val loss at each grid rate (inf: diverged; nan: missing).

    Returns:
        The loss; nan for a missing rate or neighbour.
    """
    if not (math.isfinite(rate) and rate > 0) or not grid:
        return math.nan
    x = min(max(math.log(rate), math.log(grid[0])), math.log(grid[-1]))
    logs = [math.log(g) for g in grid]
    for i in range(len(grid)):
        if math.isclose(x, logs[i], rel_tol=0, abs_tol=1e-12):
            return float(losses[i])
    i = max(j for j in range(len(grid) - 1) if logs[j] <= x)
    a, b = float(losses[i]), float(losses[i + 1])
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if math.isinf(a) or math.isinf(b):
        return math.inf
    t = (x - logs[i]) / (logs[i + 1] - logs[i])
    return a + t * (b - a)


def _loss_or_inf_if_diverged(record: RunRecord) -> float:
    """The final val loss; unbounded for a run that diverged by C13's rule
    (``comparison.run_outcome``): an exploding rate's loss of 1e5 is not a number to average."""
    if run_outcome(record, COLLAPSE_MARGIN) is RunOutcome.DIVERGED:
        return math.inf
    return _loss_or_inf(record)


def _suggested(record: RunRecord, name: str) -> float:
    """A range-test rate the run logged (``lr_find.<name>_lr``); nan when there was none."""
    try:
        return float(record.params.get(f"lr_find.{name}_lr", "nan"))
    except ValueError:  # "None": the curve gave no such rate
        return math.nan


def grid_best_loss(rates: Sequence[float], losses: Sequence[float], best: int) -> float:
    """A seed's loss at the grid's best rate, interpolated in log-rate: the minimum of the
    parabola through the best grid rate and its two neighbours when it is convex with its
    vertex between them, else the loss at the best grid rate itself.

    Args:
        rates: increasing grid rates.
        losses: the seed's final val loss at each (inf: diverged).
        best: index of the grid's best rate (lowest mean loss over the seeds).

    Returns:
        The interpolated best loss (never above the grid point's own).
    """
    at_best = float(losses[best])
    if best == 0 or best == len(rates) - 1:
        return at_best
    xs = [math.log(r) for r in rates[best - 1 : best + 2]]
    ys = [float(v) for v in losses[best - 1 : best + 2]]
    if not all(math.isfinite(y) for y in ys):
        return at_best
    a, b, c = np.polyfit(xs, ys, 2)
    if a <= 0:
        return at_best
    vertex = -b / (2 * a)
    if not xs[0] <= vertex <= xs[2]:
        return at_best
    return min(at_best, float(a * vertex**2 + b * vertex + c))


def _evaluate_range_grid(variants: list[Variant], options: StudyOptions) -> list[ClaimCheck]:
    """C14 on C13's grid and the suggestion arms: the shape of each seed's range-test curve;
    per seed the regret of each suggestion rule (the final val loss of training with its rate
    - the grid's best, ``grid_best_loss``) against the seed noise (the seed SD of the loss at
    the best grid rate); the steepest rule's trained loss against the flat and exploding
    parts' rates (their losses interpolated on the grid, ``loss_at_rate``)."""
    by_rate = sorted(_grid_variants(variants), key=_rate)
    arms = {v.param("lr_find.use"): v for v in variants if v.param("lr_find.use") in SUGGESTIONS}
    grid = [_rate(v) for v in by_rate]
    runs = [r for v in variants for r in v.runs]
    seeds = sorted({r.seed for r in runs})
    parts: list[ClaimPart] = []
    # Every job of a seed ran the same range test (same initial weights and rows).
    curves: dict[int, RunRecord] = {}
    for run in runs:
        if run.history.get(LR_FIND_SMOOTHED_METRIC) and run.seed not in curves:
            curves[run.seed] = run
    shapes = {seed: _curve_shape(run) for seed, run in curves.items()}
    shape_context = "the curve is flat, then falls fast, then explodes"
    if shapes:
        counts = [sum(shape[i] for shape in shapes.values()) for i in range(3)]
        every = sum(all(shape) for shape in shapes.values())
        finding = _share_part("", every, len(shapes), "").verdict
        parts.append(
            ClaimPart(
                shape_context,
                dataclasses.replace(
                    finding,
                    rule=f"the share of seeds whose curve shows all three (after the first "
                    f"{SKIP_FRACTION:.0%} of steps: flat up to {FLAT_SPAN:.0%} of the steps "
                    f"within {FLAT_TOLERANCE:.0%} of the start; fall: minimum below "
                    f"{FALL_DEPTH:g} x the start; explodes: the range test's stop rule fired)"
                    + finding.rule,
                    measured=f"{finding.measured}; flat {counts[0]}, fall {counts[1]}, "
                    f"explosion {counts[2]}, all three {every} of {len(shapes)} seeds",
                ),
            )
        )
    else:
        parts.append(_missing(shape_context, "range tests"))
    steepest_context = "the steepest rate is within seed noise of the grid's best"
    if len(grid) < MIN_TREND_RATES or "steepest" not in arms:
        parts.append(
            _missing(steepest_context, f"a grid of >= {MIN_TREND_RATES} rates and the steepest arm")
        )
        return [_claim_check("C14", _EVERY_PART, parts)]
    tables = [_by_seed(v, set(seeds), _loss_or_inf_if_diverged) for v in by_rate]

    def losses_of(seed: int) -> list[float]:
        return [table.get(seed, math.nan) for table in tables]

    means = [
        float(np.mean(list(t.values()))) if t and len(t) == len(seeds) else math.inf for t in tables
    ]
    best_index = int(np.argmin(means))
    best = {s: grid_best_loss(grid, losses_of(s), best_index) for s in seeds}
    best = {s: v for s, v in best.items() if math.isfinite(v)}
    at_best = [
        tables[best_index][s] for s in seeds if math.isfinite(tables[best_index].get(s, math.nan))
    ]
    noise = float(np.std(at_best, ddof=1)) if len(at_best) >= 2 else math.nan

    def regrets(name: str) -> dict[int, float]:
        trained = _by_seed(arms[name], set(best), _loss_or_inf_if_diverged)
        return {s: trained[s] - best[s] for s in trained}

    steepest = regrets("steepest")
    context = f"{steepest_context} (rate {grid[best_index]:g}, interpolated in log-rate)"
    if math.isfinite(noise) and steepest:
        parts.append(
            _share_part(
                context,
                sum(v <= noise for v in steepest.values()),
                len(steepest),
                "share of seeds whose regret (final val loss of training with the steepest "
                "rate - the grid's best) is <= the seed noise "
                f"{noise:.4g} (SD of the loss at the best grid rate)",
            )
        )
    else:
        parts.append(_missing(context, "final val losses on >= 2 seeds at the best rate"))
    trained_steepest = _by_seed(arms["steepest"], set(seeds), _loss_or_inf_if_diverged)
    for other in ("flat", "exploding"):
        at_other = {}
        for seed, run in curves.items():
            at_other[seed] = loss_at_rate(_suggested(run, other), grid, losses_of(seed))
        at_other = {s: v for s, v in at_other.items() if not math.isnan(v)}
        parts.append(
            _lower_part(
                f"training with the steepest rate beats the {other} part's rate",
                trained_steepest,
                at_other,
                f"final val loss, {other} (interpolated on the grid) - steepest (trained)",
                options.confidence,
            )
        )
    rows = []
    for name in SUGGESTIONS:
        if name not in arms:
            rows.append((math.nan, f"{name}: not trained"))
            continue
        values = regrets(name)
        finite = [v for v in values.values() if math.isfinite(v)]
        rates = [float(r.params.get("lr_find.used_lr", "nan") or "nan") for r in arms[name].runs]
        rates = [r for r in rates if math.isfinite(r)]
        within = sum(v <= noise for v in values.values()) if math.isfinite(noise) else 0
        median = float(np.median(list(values.values()))) if values else math.nan
        rows.append(
            (
                median,
                f"{name}: median regret {median:.4g}"
                + (f", mean {np.mean(finite):.4g}" if finite else "")
                + f", within noise {within}/{len(values)}, diverged "
                f"{sum(math.isinf(v) for v in values.values())}, median rate "
                + (f"{np.median(rates):.3g}" if rates else "n/a"),
            )
        )
    ranked = sorted((r for r in rows if math.isfinite(r[0])), key=lambda r: r[0])
    lowest = ranked[0][1].split(":")[0] if ranked else "none"
    parts.append(
        ClaimPart(
            "regret of each suggestion rule (shown, not counted)",
            Finding(
                Verdict.INCONCLUSIVE,
                "reported: per seed, the final val loss of training with the rule's rate - "
                "the grid's best (interpolated in log-rate)",
                f"grid best {grid[best_index]:g} (mean final val loss {means[best_index]:.4g}, "
                f"seed SD {noise:.4g}); "
                + "; ".join(text for _, text in rows)
                + f"; lowest median regret: {lowest}",
            ),
            counted=False,
        )
    )
    return [_claim_check("C14", _EVERY_PART, parts)]


STUDIES: dict[str, StudySpec] = {
    spec.name: spec
    for spec in (
        StudySpec(
            "binary_vs_categorical",
            "Binary vs categorical cross-entropy",
            ("C8",),
            STUDY_VARIANT_KEYS["binary_vs_categorical"],
            (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC, VAL_ACC_METRIC, OUTPUT_GRAD_NORM_METRIC),
            _evaluate_binary_vs_categorical,
            panel_by=("data.name",),
        ),
        StudySpec(
            "mse_vs_ce",
            "MSE vs cross-entropy",
            ("C12",),
            STUDY_VARIANT_KEYS["mse_vs_ce"],
            (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC, VAL_ACC_METRIC, OUTPUT_GRAD_NORM_METRIC),
            _evaluate_mse_vs_ce,
            extra_metrics=(FIRST_HIDDEN_GRAD_NORM_METRIC,),
            panel_by=("data.name", "optimizer.name"),
            target_of=_mse_vs_ce_target,
            needs_params=("data.majority_share", "trainer.epochs"),
        ),
        StudySpec(
            "lr_sweep",
            "Learning-rate size and the range test, on a rate grid",
            ("C13", "C14"),
            STUDY_VARIANT_KEYS["lr_sweep"],
            (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC, VAL_ACC_METRIC, OUTPUT_GRAD_NORM_METRIC),
            _evaluate_rate_grid,
            extra_metrics=(PROBE_LOSS_METRIC, LR_FIND_SMOOTHED_METRIC),
            needs_params=("data.prior_loss", "data.majority_share", "lr_find.steepest_lr"),
            seed_factor=2,
        ),
        StudySpec(
            # Training with the rate each seed's range test suggests (or a flat / exploding
            # part's): a study of its own, no longer a claim's evidence (C14 is judged on
            # lr_sweep's grid, where every rate is trained to the end).
            "lr_range_test",
            "Learning-rate range test: training with its rates",
            (),
            STUDY_VARIANT_KEYS["lr_range_test"],
            (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC, VAL_ACC_METRIC, LEARNING_RATE_METRIC),
            lambda variants, options: [],
            extra_metrics=(LR_FIND_SMOOTHED_METRIC,),
        ),
        StudySpec(
            "annealing",
            "Learning-rate annealing",
            ("C15",),
            STUDY_VARIANT_KEYS["annealing"],
            (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC, VAL_ACC_METRIC, LEARNING_RATE_METRIC),
            _evaluate_annealing,
            extra_metrics=(PROBE_LOSS_METRIC,),
            needs_params=("data.prior_loss", "data.majority_share"),
        ),
    )
}


def get_study(name: str) -> StudySpec:
    """The study called ``name``; a ValueError lists the known ones."""
    if name not in STUDIES:
        raise ValueError(f"study={name!r} is not one of {sorted(STUDIES)}")
    return STUDIES[name]
