"""A study's report: tables over seeds, claim verdicts, overlay plots; Markdown, HTML, terminal.

``publish_report`` rebuilds everything from the MLflow store alone, so the same function serves
the end of a sweep and ``experiments/report.py`` later.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xent_tf.claims.studies import (
    ClaimCheck,
    StudyOptions,
    StudySpec,
    Variant,
    final_val_acc,
    final_val_loss,
    get_study,
    group_variants,
    own_target,
    time_to_target_summary,
)
from xent_tf.metrics import (
    GRAD_NORM_PREFIX,
    LEARNING_RATE_METRIC,
    OUTPUT_GRAD_NORM_METRIC,
    TRAIN_LOSS_METRIC,
    VAL_ACC_METRIC,
    VAL_LOSS_METRIC,
)
from xent_tf.report import plotting
from xent_tf.report.html_page import html_page
from xent_tf.track import connection, reading, writing
from xent_tf.track.identity import VARIANT_TAG, short_name
from xent_tf.track.run_record import RunRecord

# Params that differ between runs without defining a variant (or follow from those that do).
_NOT_A_FACTOR = {"seed", "loss.resolved", "data.n_classes", "data.majority_share"}
_DEFAULT_PLOTS = (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC, VAL_ACC_METRIC, OUTPUT_GRAD_NORM_METRIC)


@dataclass(frozen=True)
class StudyReport:
    """Everything a report shows.

    Attributes:
        title: heading.
        study: the study's name ("" for a plain sweep).
        parent: the sweep's parent run.
        variants: runs grouped by variant.
        checks: claim verdicts (empty for a plain sweep).
        options: the rule settings.
        plot_metrics: metrics drawn as overlays.
        panel_by: params that split the overlays into panels.
        target_of: a variant's accuracy target for "epochs to target".
        children: the child runs as read from the store (``publish_report``; a later reader
            of the same finished sweep may use them: ``reading.hand_over_reads``).
    """

    title: str
    study: str
    parent: reading.StudyRun
    variants: list[Variant]
    checks: list[ClaimCheck]
    options: StudyOptions
    plot_metrics: tuple[str, ...]
    panel_by: tuple[str, ...] = ()
    target_of: Callable[[Variant, Sequence[Variant]], float] = own_target
    children: reading.ChildrenRead | None = None


def generic_group_by(records: list[RunRecord]) -> tuple[str, ...]:
    """For a plain sweep: the params whose values differ between runs, except the seed."""
    keys = sorted({k for r in records for k in r.params})
    return tuple(
        k for k in keys if k not in _NOT_A_FACTOR and len({r.params.get(k) for r in records}) > 1
    )


def build_report(
    records: list[RunRecord],
    parent: reading.StudyRun,
    spec: StudySpec | None,
    options: StudyOptions,
) -> StudyReport:
    """Group the runs and apply the study's rules.

    Args:
        records: the sweep's child runs.
        parent: the sweep's parent run.
        spec: the study, or None for a plain sweep (variants = the params that vary).
        options: rule settings.

    Returns:
        The report's content.
    """
    group_by = spec.group_by if spec else generic_group_by(records)
    variants = group_variants(records, group_by)
    checks = spec.evaluate(variants, options) if spec else []
    return StudyReport(
        title=spec.title if spec else f"Sweep of {parent.experiment_name}",
        study=spec.name if spec else "",
        parent=parent,
        variants=variants,
        checks=checks,
        options=options,
        plot_metrics=spec.plot_metrics if spec else _DEFAULT_PLOTS,
        panel_by=spec.panel_by if spec else (),
        target_of=spec.target_of if spec else own_target,
    )


# --- tables ------------------------------------------------------------------------------


def variant_rows(report: StudyReport) -> list[list[str]]:
    """One row per variant: runs, parameters, final val loss/acc, epochs to target."""
    conf = report.options.confidence
    rows = []
    for variant in report.variants:
        done = len(variant.finished)
        runs = f"{done}/{len(variant.runs)}"
        if variant.failed:
            runs += f" ({len(variant.failed)} failed)"
        rows.append(
            [
                variant.label or "(all runs)",
                runs,
                variant.param("model.n_params") or "?",
                variant.interval(final_val_loss, conf).format(),
                variant.interval(final_val_acc, conf).format(),
                time_to_target_summary(variant, report.target_of(variant, report.variants)),
            ]
        )
    return rows


VARIANT_HEADER = [
    "variant",
    "runs",
    "params",
    "final val loss",
    "final val acc",
    "epochs to target (censored)",
]


def failed_rows(report: StudyReport) -> list[list[str]]:
    """Every run that did not finish: variant, seed, status, reason."""
    return [
        [v.label, str(r.seed), r.status, (r.error or "no error recorded").splitlines()[0][:200]]
        for v in report.variants
        for r in v.failed
    ]


def superseded_rows(report: StudyReport) -> list[list[str]]:
    """Every run left out because a later attempt of its variant and seed replaced it."""
    return [
        [v.label, str(r.seed), r.status, r.run_id]
        for v in report.variants
        for r in sorted(v.superseded, key=lambda r: (r.seed, r.start_time))
    ]


SUPERSEDED_HEADER = ["variant", "seed", "status", "run (left out)"]


def claim_rows(report: StudyReport) -> list[list[str]]:
    """One row per claim part: claim, context, verdict, measured, rule."""
    rows = []
    for check in report.checks:
        rows.append([check.claim, "overall", check.verdict.upper(), "", check.combine_rule])
        for part in check.parts:
            rows.append(
                [
                    check.claim,
                    part.context,
                    part.verdict.verdict,
                    part.verdict.measured,
                    part.verdict.rule,
                ]
            )
    return rows


def _notes(report: StudyReport) -> list[str]:
    notes = [
        f"Intervals: mean ± half-width of the {report.options.confidence:.0%} Student-t "
        "interval over seeds (shown; the verdicts come from exact sign-flip tests of the "
        "per-seed differences, docs/CLAIMS.md). Epochs to target: first epoch whose validation "
        "accuracy reaches the target (the runs' trainer.target_val_acc, or the one the study "
        "measures: see its rule); a run that never reaches it is censored at its last epoch "
        "(Kaplan-Meier).",
    ]
    if any(len(v.finished) < 2 for v in report.variants):
        notes.append(
            "Some variants have fewer than two finished runs: no interval can be given for them, "
            "and verdicts that need one are inconclusive."
        )
    if any(v.failed for v in report.variants):
        notes.append(
            "Failed runs are listed below and left out of the means; they are counted in the "
            "'runs' column, never silently dropped."
        )
    superseded = sum(len(v.superseded) for v in report.variants)
    if superseded:
        notes.append(
            f"This sweep was re-run: {superseded} earlier runs of a variant and seed that also "
            "has a later attempt were left out (one run per variant x seed: the latest "
            "finished one, else the latest attempt); they are listed under 'Superseded runs'."
        )
    return notes


def _run_count(report: StudyReport) -> str:
    used = sum(len(v.runs) for v in report.variants)
    superseded = sum(len(v.superseded) for v in report.variants)
    extra = f" ({superseded} more superseded by a re-run)" if superseded else ""
    return f"{used} child runs{extra}"


# --- rendering ---------------------------------------------------------------------------


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Table:
    """One titled table of a report, whatever it is rendered as."""

    title: str
    header: list[str]
    rows: list[list[str]]
    verdict_column: int | None = None  # styled by verdict in HTML


def _tables(report: StudyReport) -> list[_Table]:
    """The report's tables in order: verdicts (if any claim), variants, failed, superseded."""
    tables = []
    if report.checks:
        header = ["claim", "context", "verdict", "measured", "rule"]
        tables.append(_Table("Verdicts", header, claim_rows(report), verdict_column=2))
    tables.append(_Table("Variants", VARIANT_HEADER, variant_rows(report)))
    failed = failed_rows(report)
    if failed:
        tables.append(_Table("Failed runs", ["variant", "seed", "status", "why"], failed))
    superseded = superseded_rows(report)
    if superseded:
        tables.append(_Table("Superseded runs", SUPERSEDED_HEADER, superseded))
    return tables


def render_markdown(report: StudyReport, plots: list[Path]) -> str:
    """The report as Markdown, plots referenced relative to the report."""
    parts = [
        f"# {report.title}",
        f"Experiment `{report.parent.experiment_name}`, sweep parent run "
        f"`{report.parent.run_id}`, {_run_count(report)}.",
    ]
    for table in _tables(report):
        parts += [f"## {table.title}", _markdown_table(table.header, table.rows)]
    parts += ["## Notes", "\n".join(f"- {n}" for n in _notes(report))]
    if plots:
        parts += ["## Plots", "\n\n".join(f"![{p.stem}](plots/{p.name})" for p in plots)]
    return "\n\n".join(parts) + "\n"


def _html_table(table: _Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for index, text in enumerate(row):
            if index == table.verdict_column:  # shown and styled in lower case
                text = text.lower()
                css = text.replace(" ", "-")  # "not applicable" -> not-applicable
                cells.append(f'<td class="{css}">{html.escape(text)}</td>')
            else:
                cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def parent_note(report: StudyReport) -> str:
    """The sweep parent run's description (Markdown, shown on its Overview): the report's
    tables, without plots."""
    parts = [f"**{report.title}**: {_run_count(report)}."]
    for table in _tables(report):
        parts += [f"#### {table.title}", _markdown_table(table.header, table.rows)]
    parts.append("Plots and notes: `report.html` in this run's Artifacts.")
    return "\n\n".join(parts) + "\n"


def parent_summary_metrics(report: StudyReport, variant_ids: Mapping[str, str]) -> dict[str, float]:
    """What the sweep parent's row in the runs table shows.

    Args:
        report: the study's report.
        variant_ids: {child run id: its variant id} (the ``xent.variant`` tag); a variant
            whose runs lack it is named by its label.

    Returns:
        ``variants/<variant>/final_val_loss_mean`` and ``.../final_val_acc_mean`` (mean over
        the finished seeds; left out when none finished), ``variants/all/runs_finished`` and
        ``variants/all/runs_failed``. Named so that the UI's chart view, which draws every metric of
        every run it lists, puts these after the children's curves (sections are sorted).
    """
    metrics: dict[str, float] = {
        "variants/all/runs_finished": float(sum(len(v.finished) for v in report.variants)),
        "variants/all/runs_failed": float(sum(len(v.failed) for v in report.variants)),
    }
    names = [
        next(
            (variant_ids[r.run_id] for r in variant.runs if r.run_id in variant_ids),
            variant.label or "all runs",
        )
        for variant in report.variants
    ]
    if len(set(names)) < len(names):  # runs tagged without their overrides: labels differ
        names = [variant.label or "all runs" for variant in report.variants]
    for variant, name in zip(report.variants, map(metric_segment, names), strict=True):
        for metric, value in (("final_val_loss", final_val_loss), ("final_val_acc", final_val_acc)):
            values = list(variant.per_seed(value).values())
            if values:
                metrics[f"variants/{name}/{metric}_mean"] = sum(values) / len(values)
    return metrics


def metric_segment(name: str) -> str:
    """A variant's name as one segment of an MLflow metric name, which allows only letters,
    digits, ``_ - . : /`` and spaces: ``data=reference loss=bce`` -> ``data:reference loss:bce``
    (a ``/`` would start a new segment: it becomes ``_``, as any other character)."""
    return re.sub(r"[^\w.\- :]", "_", name.replace("=", ":"))


def render_html(report: StudyReport, plots: list[Path]) -> str:
    """A self-contained HTML page (plots embedded as base64) that the MLflow UI shows inline."""
    sections = [
        f"<h1>{html.escape(report.title)}</h1>",
        f"<p>Experiment <code>{html.escape(report.parent.experiment_name)}</code>, sweep parent "
        f"run <code>{report.parent.run_id}</code>, {html.escape(_run_count(report))}.</p>",
    ]
    for table in _tables(report):
        sections += [f"<h2>{html.escape(table.title)}</h2>", _html_table(table)]
    sections += ["<h2>Notes</h2><ul>"]
    sections += [f"<li>{html.escape(n)}</li>" for n in _notes(report)]
    sections += ["</ul><h2>Plots</h2>"]
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        sections.append(f'<img alt="{html.escape(plot.stem)}" src="data:image/png;base64,{data}">')
    return html_page(report.title, "\n".join(sections))


def render_terminal(report: StudyReport) -> str:
    """Plain-text tables for the end of a sweep."""

    def table(header: list[str], rows: list[list[str]]) -> str:
        widths = [
            min(60, max(len(str(x)) for x in [h, *(r[i] for r in rows)]))
            for i, h in enumerate(header)
        ]
        line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
        out = [line, "-" * len(line)]
        out += [
            "  ".join(str(c)[:w].ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        ]
        return "\n".join(out)

    parts = [f"== {report.title} ({report.parent.experiment_name}) =="]
    parts.append(table(VARIANT_HEADER, variant_rows(report)))
    failed = failed_rows(report)
    if failed:
        parts += ["failed runs:", table(["variant", "seed", "status", "why"], failed)]
    superseded = superseded_rows(report)
    if superseded:
        parts += ["superseded runs (left out):", table(SUPERSEDED_HEADER, superseded)]
    if report.checks:
        parts.append(
            table(["claim", "context", "verdict", "measured"], [r[:4] for r in claim_rows(report)])
        )
    parts += _notes(report)
    return "\n\n".join(parts)


# --- end to end --------------------------------------------------------------------------


def save_plots(report: StudyReport, out_dir: Path) -> list[Path]:
    """One overlay per plotted metric: mean per variant with a min-max band over seeds."""
    plots = []
    for metric in report.plot_metrics:
        panels: dict[str, dict[str, list[list[float]]]] = {}
        for variant in report.variants:
            panel, line = _panel_and_line(variant, report.panel_by)
            panels.setdefault(panel, {})[line] = [
                list(r.history[metric]) for r in variant.runs if r.history.get(metric)
            ]
        values = [x for lines in panels.values() for ss in lines.values() for s in ss for x in s]
        if not values:
            continue
        log_y = metric.endswith("loss") or metric.startswith(
            (GRAD_NORM_PREFIX, LEARNING_RATE_METRIC)
        )
        log_y = log_y and all(math.isfinite(x) and x > 0 for x in values)
        plots.append(
            plotting.save_band_overlay(
                panels,
                metric,
                out_dir / "plots" / f"{metric.replace('/', '_')}.png",
                title=f"{report.title}: {metric} (mean over seeds, band = min-max)",
                log_y=log_y,
            )
        )
    return plots


def _panel_and_line(variant: Variant, panel_by: tuple[str, ...]) -> tuple[str, str]:
    """Split a variant's label into its panel title and its line label."""
    parts = variant.label.split(" ") if variant.label else ["(all runs)"]
    keys = {short_name(name) for name in panel_by}
    panel = " ".join(p for p in parts if p.split("=")[0] in keys) or "all variants"
    line = " ".join(p for p in parts if p.split("=")[0] not in keys) or variant.label or "runs"
    return panel, line


def read_report(
    tracking_uri: str,
    experiment_name: str | None = None,
    parent_run_id: str | None = None,
    options: StudyOptions | None = None,
    more_metrics: Sequence[str] = (),
) -> StudyReport:
    """A study's report read from MLflow alone (nothing written or uploaded).

    Args:
        tracking_uri: the store.
        experiment_name: use the latest finished sweep of this experiment...
        parent_run_id: ...or exactly this parent run.
        options: rule settings.
        more_metrics: per-epoch metrics to read in full besides those the study plots and
            judges (e.g. ``train/acc`` for a notebook's tables).

    Returns:
        The report, with the child runs it read (``children``).

    Raises:
        ValueError: unknown experiment/run, or a sweep without child runs.
    """
    options = options or StudyOptions()
    parent = reading.find_study_parent(tracking_uri, experiment_name, parent_run_id)
    spec = get_study(parent.study) if parent.study else None
    plotted = spec.plot_metrics if spec else _DEFAULT_PLOTS
    extra = spec.extra_metrics if spec else ()
    metrics = tuple(
        dict.fromkeys((*plotted, *extra, VAL_ACC_METRIC, VAL_LOSS_METRIC, *more_metrics))
    )
    records = reading.fetch_children(tracking_uri, parent, metrics)
    if not records:
        raise ValueError(
            f"sweep parent run {parent.run_id} of experiment {parent.experiment_name!r} has no "
            "child runs to report on"
        )
    return dataclasses.replace(
        build_report(records, parent, spec, options),
        children=reading.ChildrenRead(tracking_uri, parent.run_id, metrics, tuple(records)),
    )


def publish_report(
    tracking_uri: str,
    out_dir: Path,
    experiment_name: str | None = None,
    parent_run_id: str | None = None,
    options: StudyOptions | None = None,
    upload: bool = True,
) -> tuple[StudyReport, str]:
    """Rebuild a study's report from MLflow alone and attach it to the sweep's parent run.

    Args:
        tracking_uri: the store.
        out_dir: where report.md, report.html and plots/ are written.
        experiment_name: use the latest finished sweep of this experiment...
        parent_run_id: ...or exactly this parent run.
        options: rule settings.
        upload: log the files as artifacts of the parent run.

    Returns:
        The report and its terminal text.

    Raises:
        ValueError: unknown experiment/run, or no finished runs to report on.
    """
    report = read_report(tracking_uri, experiment_name, parent_run_id, options)
    records = report.children.records if report.children else ()
    parent = report.parent
    plots = save_plots(report, out_dir)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(report, plots))
    page = out_dir / "report.html"
    page.write_text(render_html(report, plots))
    if upload:
        files: dict[Path, str | None] = {markdown: None, page: None}
        files.update({p: "plots" for p in plots})
        writing.log_files(tracking_uri, parent.run_id, files)
        writing.set_run_tags(
            tracking_uri,
            parent.run_id,
            {f"verdict.{c.claim}": c.verdict for c in report.checks},
        )
        variant_ids = {r.run_id: r.tags[VARIANT_TAG] for r in records if VARIANT_TAG in r.tags}
        summary = parent_summary_metrics(report, variant_ids)
        writing.log_run_summary(tracking_uri, parent.run_id, summary, parent_note(report))
        views = reading.share_sweep_views(
            tracking_uri, parent, VARIANT_TAG, sorted(summary), connection.ui_address(tracking_uri)
        )
        return report, render_terminal(report) + (
            f"\n\nIn the MLflow UI: runs with the summary columns {views.table}\n"
            f"each variant's curves (mean, band over seeds) {views.chart}"
        )
    return report, render_terminal(report)
