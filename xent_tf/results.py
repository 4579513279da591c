"""What the notebook API (``xent_tf.api``) returns: a run, a study and a claims ledger as pandas
DataFrames, each with its MLflow link and a Jupyter rendering (``_repr_html_``).

Built from what the rest of the suite already makes (a run's ``train.pipeline.RunSummary``, a
study's ``claims.study_report.StudyReport``, the ledger's ``claims.json`` form), so a notebook
shows the numbers the command line prints and the MLflow records hold. Figures come from
``report.plotting`` (PNG bytes).
"""

from __future__ import annotations

import base64
import functools
import html
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from xent_tf.claims.comparison import Verdict, time_to_target
from xent_tf.metrics import (
    LEARNING_RATE_METRIC,
    OUTPUT_GRAD_NORM_METRIC,
    TEST_ACC_METRIC,
    TEST_LOSS_METRIC,
    TRAIN_ACC_METRIC,
    TRAIN_LOSS_METRIC,
    VAL_ACC_METRIC,
    VAL_LOSS_METRIC,
    VAL_SATURATED_METRIC,
    grad_norm_metric,
)
from xent_tf.track.run_record import RunStatus

if TYPE_CHECKING:
    from xent_tf.claims.study_report import StudyReport
    from xent_tf.train.pipeline import RunSummary as TrainedRun

# Styles for the notebook output, scoped to the API's own blocks (a notebook page is shared).
_CSS = """
div.xent-tf { font-family: system-ui, sans-serif; }
div.xent-tf table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.85em; }
div.xent-tf th, div.xent-tf td { border: 1px solid #ccc; padding: 3px 7px;
  text-align: left !important;  /* Jupyter right-aligns table cells */
  vertical-align: top; }
div.xent-tf th { background: #f3f3f3; }
div.xent-tf td.col-rule, div.xent-tf td.col-says { color: #555; font-size: 0.9em;
  min-width: 24em; }
div.xent-tf td.holds { background: #d9f2d9; font-weight: bold; }
div.xent-tf td.contradicted { background: #f8d0d0; font-weight: bold; }
div.xent-tf td.inconclusive { background: #fff1c1; font-weight: bold; }
div.xent-tf td.unstable { background: #e6dcf5; font-weight: bold; }
div.xent-tf .figures { display: flex; flex-wrap: wrap; gap: 6px; }
div.xent-tf .figures img { width: 49%; min-width: 380px; border: 1px solid #eee; }
"""
_VERDICTS = {str(v) for v in Verdict}


@dataclass(frozen=True)
class Figure:
    """A PNG figure that Jupyter shows inline.

    Attributes:
        title: what it shows.
        png: the image file's bytes.
    """

    title: str
    png: bytes

    def _repr_png_(self) -> bytes:
        return self.png

    def save(self, path: Path) -> Path:
        """Write the PNG to ``path`` and return it."""
        path.write_bytes(self.png)
        return path

    def img_tag(self) -> str:
        """The figure as an HTML ``<img>`` with the PNG inlined."""
        data = base64.b64encode(self.png).decode("ascii")
        return f'<img alt="{html.escape(self.title)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, verdict_column: str | None = None) -> str:
    """A DataFrame as an HTML table, verdict cells styled by verdict, links clickable."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            text = _cell_text(value)
            if column == verdict_column and text in _VERDICTS:
                cells.append(f'<td class="{text}">{html.escape(text)}</td>')
            elif column == "url" and text:
                cells.append(f'<td><a href="{html.escape(text)}">MLflow</a></td>')
            else:
                css = re.sub(r"[^a-z0-9]+", "-", str(column).lower())
                cells.append(f'<td class="col-{css}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cell_text(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def _block(body: str) -> str:
    return f'<div class="xent-tf"><style>{_CSS}</style>{body}</div>'


def _link(url: str, text: str) -> str:
    if not url:
        return html.escape(text)
    return f'<a href="{html.escape(url)}" target="_blank">{html.escape(text)}</a>'


# --- a run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """One trained and recorded run.

    Attributes:
        run_id: its MLflow run ("-" with tracking off).
        experiment_name: its MLflow experiment.
        tracking_uri: the store ("" with tracking off).
        url: the run's charts in the MLflow UI ("" with tracking off).
        overrides: the Hydra overrides it ran with.
        device: where it trained.
        n_params: trainable parameters.
        test_loss: loss on the held-out test rows.
        test_acc: accuracy on them.
        epochs_to_target: first epoch whose validation accuracy reached the target, or None.
        train_seconds: training wall time (validation included).
        epochs: one row per epoch: ``epoch``, ``train/loss``, ``train/acc``, ``val/loss``,
            ``val/acc``, ``val/saturated_fraction``, ``lr``, ``grad_norm/<layer>``.
    """

    run_id: str
    experiment_name: str
    tracking_uri: str
    url: str
    overrides: tuple[str, ...]
    device: str
    n_params: int
    test_loss: float
    test_acc: float
    epochs_to_target: int | None
    train_seconds: float
    epochs: pd.DataFrame = field(repr=False)

    @classmethod
    def of(
        cls,
        trained: TrainedRun,
        experiment_name: str,
        tracking_uri: str,
        overrides: Sequence[str],
    ) -> RunSummary:
        """From the pipeline's summary of the run (``tracking_uri`` "" with tracking off)."""
        from xent_tf.track import connection

        url = (
            connection.run_url(
                trained.experiment_id, trained.run_id, connection.ui_address(tracking_uri)
            )
            if tracking_uri
            else ""
        )
        rows = [
            {
                "epoch": r.epoch,
                TRAIN_LOSS_METRIC: r.train_loss,
                TRAIN_ACC_METRIC: r.train_acc,
                VAL_LOSS_METRIC: r.val_loss,
                VAL_ACC_METRIC: r.val_acc,
                VAL_SATURATED_METRIC: r.val_saturated,
                LEARNING_RATE_METRIC: r.learning_rate,
                **{grad_norm_metric(layer): norm for layer, norm in r.grad_norms.items()},
            }
            for r in trained.history
        ]
        return cls(
            run_id=trained.run_id,
            experiment_name=experiment_name,
            tracking_uri=tracking_uri,
            url=url,
            overrides=tuple(overrides),
            device=trained.device.description,
            n_params=trained.n_params,
            test_loss=trained.test_loss,
            test_acc=trained.test_acc,
            epochs_to_target=trained.epochs_to_target,
            train_seconds=trained.train_seconds,
            epochs=pd.DataFrame(rows),
        )

    @functools.cached_property
    def loss_curve(self) -> Figure:
        """Train and validation loss per epoch."""
        from xent_tf.report import plotting

        with tempfile.TemporaryDirectory() as scratch:
            path = plotting.save_loss_curve(
                list(self.epochs[TRAIN_LOSS_METRIC]),
                list(self.epochs[VAL_LOSS_METRIC]),
                Path(scratch) / "loss_curve.png",
                title=f"{self.experiment_name}: loss per epoch",  # the overrides head the block
            )
            return Figure("loss per epoch", path.read_bytes())

    def _repr_html_(self) -> str:
        target = "not reached" if self.epochs_to_target is None else str(self.epochs_to_target)
        facts = pd.DataFrame(
            [
                ("test loss", f"{self.test_loss:.4f}"),
                ("test accuracy", f"{self.test_acc:.4f}"),
                ("epochs", str(len(self.epochs))),
                ("epochs to target", target),
                ("parameters", str(self.n_params)),
                ("trained on", f"{self.device} in {self.train_seconds:.2f} s"),
            ],
            columns=["", "value"],
        )
        where = (
            f"MLflow run {_link(self.url, self.run_id)} in experiment "
            f"<code>{html.escape(self.experiment_name)}</code>"
            if self.url
            else "tracking off: not recorded in MLflow"
        )
        return _block(
            f"<h4>Run {html.escape(' '.join(self.overrides) or '(defaults)')}</h4><p>{where}</p>"
            f"{_table(facts)}<div class='figures'>{self.loss_curve.img_tag()}</div>"
        )


# --- a study --------------------------------------------------------------------------------

# Per-epoch metrics every run logs (step = epoch), besides those a study plots.
EPOCH_METRICS = (
    TRAIN_LOSS_METRIC,
    TRAIN_ACC_METRIC,
    VAL_LOSS_METRIC,
    VAL_ACC_METRIC,
    VAL_SATURATED_METRIC,
    LEARNING_RATE_METRIC,
    OUTPUT_GRAD_NORM_METRIC,
)
# Final values every run logs (its last metric values).
_FINAL_COLUMNS = {
    "final_val_loss": VAL_LOSS_METRIC,
    "final_val_acc": VAL_ACC_METRIC,
    "test_loss": TEST_LOSS_METRIC,
    "test_acc": TEST_ACC_METRIC,
}


@dataclass(frozen=True)
class StudyResult:
    """A study's sweep read back from MLflow: its runs, curves and verdicts.

    Attributes:
        name: the study ("" for a plain sweep).
        title: its report's title.
        parent_run_id: the sweep's parent run.
        experiment_id: its MLflow experiment.
        tracking_uri: the store.
        url: the parent run in the MLflow UI (its report is an artifact there).
        runs: one row per run the report counts: ``run_id``, ``variant``, ``seed``, ``status``,
            the params that define the variant, ``final_val_loss``, ``final_val_acc``,
            ``test_loss``, ``test_acc``, ``target_val_acc`` (the accuracy target the study
            judges its variant by), ``epochs_to_target`` (first epoch at it; NaN: never
            reached, censored), ``url``, ``error``.
        epochs: one row per run and epoch: ``run_id``, ``variant``, ``seed``, ``epoch`` and
            one column per per-epoch metric (``train/loss``, ``val/acc``, ...).
        variants: the report's variant table (mean ± 95% interval over seeds).
        verdicts: one row per claim and part: ``claim``, ``context`` ("overall" for the
            claim's own row), ``verdict``, ``measured``, ``rule``.
        report: the study's report (what ``experiments/report.py`` renders).
    """

    name: str
    title: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    url: str
    runs: pd.DataFrame = field(repr=False)
    epochs: pd.DataFrame = field(repr=False)
    variants: pd.DataFrame = field(repr=False)
    verdicts: pd.DataFrame = field(repr=False)
    report: StudyReport = field(repr=False)

    @classmethod
    def of(cls, report: StudyReport, tracking_uri: str) -> StudyResult:
        """From a study's report (``claims.study_report.read_report``) of the store at
        ``tracking_uri``."""
        from xent_tf.claims.study_report import VARIANT_HEADER, variant_rows
        from xent_tf.track import connection

        parent = report.parent
        address = connection.ui_address(tracking_uri)
        group_by = _group_params(report)
        runs, epochs = [], []
        for variant in report.variants:
            target = report.target_of(variant, report.variants)
            for record in sorted(variant.runs, key=lambda r: r.seed):
                row: dict[str, Any] = {
                    "run_id": record.run_id,
                    "variant": variant.label,
                    "seed": record.seed,
                    "status": str(record.status),  # plain text in the table
                }
                row.update({p: record.params.get(p, "") for p in group_by})
                row.update({c: record.final.get(m, math.nan) for c, m in _FINAL_COLUMNS.items()})
                reached = time_to_target(record, target)
                row["target_val_acc"] = target
                row["epochs_to_target"] = reached.epochs if reached.reached else math.nan
                row["url"] = connection.run_url(parent.experiment_id, record.run_id, address)
                row["error"] = record.error or ""
                runs.append(row)
                epochs += _epoch_rows(record.run_id, variant.label, record.seed, record.history)
        verdicts = [
            row
            for check in report.checks
            for row in (
                ("overall", check.claim, str(check.verdict), "", check.combine_rule),
                *(
                    (p.context, check.claim, p.verdict.verdict, p.verdict.measured, p.verdict.rule)
                    for p in check.parts
                ),
            )
        ]
        return cls(
            name=report.study,
            title=report.title,
            parent_run_id=parent.run_id,
            experiment_id=parent.experiment_id,
            tracking_uri=tracking_uri,
            url=connection.run_url(parent.experiment_id, parent.run_id, address),
            runs=pd.DataFrame(runs),
            epochs=pd.DataFrame(epochs),
            variants=pd.DataFrame(variant_rows(report), columns=VARIANT_HEADER),
            verdicts=pd.DataFrame(
                [(c, ctx, v, m, r) for ctx, c, v, m, r in verdicts],
                columns=["claim", "context", "verdict", "measured", "rule"],
            ),
            report=report,
        )

    @functools.cached_property
    def figures(self) -> dict[str, Figure]:
        """{metric: its overlay}: the report's plots (mean per variant, band = min-max over
        seeds), one per metric the study plots."""
        from xent_tf.claims.study_report import save_plots

        with tempfile.TemporaryDirectory() as scratch:
            paths = save_plots(self.report, Path(scratch))
            return {
                metric: Figure(metric, path.read_bytes())
                for metric, path in zip(_plotted(self.report, paths), paths, strict=True)
            }

    def curves(self, metric: str = VAL_ACC_METRIC) -> Figure:
        """The overlay of one plotted metric (mean per variant, band = min-max over seeds).

        Raises:
            ValueError: the study does not plot ``metric``; the message lists what it plots.
        """
        if metric not in self.figures:
            raise ValueError(
                f"metric={metric!r} is not plotted by this study; plotted: {list(self.figures)}"
            )
        return self.figures[metric]

    def _repr_html_(self) -> str:
        n_runs = len(self.runs)
        finished = int((self.runs["status"] == RunStatus.FINISHED).sum()) if n_runs else 0
        parts = [
            f"<h4>{html.escape(self.title)}: {finished}/{n_runs} runs finished</h4>",
            f"<p>Sweep parent run {_link(self.url, self.parent_run_id)} "
            "(its report and every child run are there).</p>",
        ]
        if len(self.verdicts):
            parts += ["<h5>Verdicts</h5>", _table(self.verdicts, verdict_column="verdict")]
        parts += ["<h5>Variants</h5>", _table(self.variants)]
        figures = "".join(f.img_tag() for f in self.figures.values())
        parts += [
            "<h5>Curves (mean over seeds, band = min-max)</h5>",
            f"<div class='figures'>{figures}</div>",
        ]
        return _block("".join(parts))


def _group_params(report: StudyReport) -> tuple[str, ...]:
    """The params that define the report's variants (the study's ``group_by``)."""
    from xent_tf.claims.studies import get_study
    from xent_tf.claims.study_report import generic_group_by

    if report.study:
        return get_study(report.study).group_by
    return generic_group_by([r for v in report.variants for r in v.runs])


def _plotted(report: StudyReport, paths: Sequence[Path]) -> list[str]:
    """The metric of each plot ``save_plots`` wrote (it skips metrics without values)."""
    by_file = {m.replace("/", "_"): m for m in report.plot_metrics}
    return [by_file[p.stem] for p in paths]


def _epoch_rows(
    run_id: str, variant: str, seed: int, history: Mapping[str, Sequence[float]]
) -> list[dict[str, Any]]:
    """One row per epoch of a run: its per-epoch metrics (step = epoch, from 1)."""
    n_epochs = len(history.get(VAL_LOSS_METRIC, ()))
    per_epoch = {m: v for m, v in history.items() if len(v) == n_epochs}  # not per-step series
    return [
        {
            "run_id": run_id,
            "variant": variant,
            "seed": seed,
            "epoch": epoch + 1,
            **{m: float(v[epoch]) for m, v in per_epoch.items()},
        }
        for epoch in range(n_epochs)
    ]


# --- the claims ledger ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """The claims ledger: a verdict per claim, with what it rests on.

    Attributes:
        run_id: the ledger's MLflow run ("-" with tracking off).
        tracking_uri: the store.
        url: the ledger run in the MLflow UI (its claims.html is an artifact there).
        verdicts: one row per claim: ``claim``, ``title``, ``verdict``, ``measured``, ``rule``,
            ``says`` (what the tutorial says), ``source``, ``links`` (MLflow runs).
        parts: one row per measured part: ``claim``, ``context``, ``verdict``, ``measured``,
            ``rule``.
        studies: one row per study the training claims read: ``study``, ``dataset``,
            ``parent_run_id``, ``seeds``, ``n_runs``, ``ran_now``, ``problem``.
    """

    run_id: str
    tracking_uri: str
    url: str
    verdicts: pd.DataFrame = field(repr=False)
    parts: pd.DataFrame = field(repr=False)
    studies: pd.DataFrame = field(repr=False)

    @classmethod
    def of(cls, ledger: Mapping[str, Any]) -> Ledger:
        """From the ledger's JSON form (``ledger_render.ledger_json``, its ``claims.json``)."""
        claims = ledger["claims"]
        verdicts = pd.DataFrame(
            [
                {
                    "claim": c["claim"],
                    "title": c["title"],
                    "verdict": c["verdict"],
                    "measured": c["measured"],
                    "rule": c["rule"],
                    "says": c["says"],
                    "source": c["source"],
                    "links": " ".join(link["url"] for link in c["links"]),
                }
                for c in claims
            ],
            columns=["claim", "title", "verdict", "measured", "rule", "says", "source", "links"],
        )
        parts = pd.DataFrame(
            [{"claim": c["claim"], **p} for c in claims for p in c["parts"]],
            columns=["claim", "context", "verdict", "measured", "rule"],
        )
        columns = ["study", "dataset", "parent_run_id", "seeds", "n_runs", "ran_now", "problem"]
        studies = pd.DataFrame(
            [{k: s[k] for k in columns} for s in ledger["studies"]], columns=columns
        )
        run = ledger["ledger_run"]
        return cls(run["run_id"], ledger["tracking_uri"], run["url"], verdicts, parts, studies)

    def _repr_html_(self) -> str:
        counts = self.verdicts["verdict"].value_counts()
        line = ", ".join(f"{n} {v}" for v, n in counts.items())
        where = f"ledger run {_link(self.url, self.run_id)}" if self.url else "not recorded"
        shown = self.verdicts[["claim", "title", "verdict", "measured", "rule"]]
        return _block(
            f"<h4>Claims ledger: {html.escape(line)}</h4><p>{where}</p>"
            f"{_table(shown, verdict_column='verdict')}"
        )
