"""A real browser (Debian's headless Chromium) on the MLflow UI and on a study's report.html."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.cli import PG_STUDY_JOBS, UI_STUDY_VARIANTS, FinishedStudy
from tests.integration.services import render
from xent_tf.claims.study_report import publish_report

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("pg_study")]


def visible_text(dom: str) -> str:
    """The text a person sees: no scripts, styles or tags, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_mlflow_ui_lists_every_run_of_the_study(
    pg_study: FinishedStudy, tmp_path: Path
) -> None:
    client = MlflowClient(pg_study.uri)
    experiment = client.get_experiment_by_name(pg_study.experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(runs) == PG_STUDY_JOBS + 1  # the children and their sweep parent
    # Sorted by name, the UI lists child runs flat (by date it folds them under the parent).
    url = (
        f"{pg_study.uri}/#/experiments/{experiment.experiment_id}/runs"
        "?orderByKey=attributes.run_name&orderByAsc=true"
    )
    shot = tmp_path / "mlflow-runs.png"
    dom = render(url, tmp_path / "profile-ui", screenshot=shot, window="1600,1800")

    text = visible_text(dom)
    assert f"{PG_STUDY_JOBS + 1} matching runs" in text
    linked = set(re.findall(r"/runs/([0-9a-f]{32})", dom))
    assert linked == {run.info.run_id for run in runs}
    for run in runs:
        assert run.info.run_name in text, run.info.run_name
    assert shot.stat().st_size > 20_000  # a rendered table, not a blank page
    print(f"\n[browser] {len(linked)} runs listed by the MLflow UI; screenshot {shot}")


def test_the_study_report_opens_from_disk_with_its_verdicts_and_plots(
    pg_study: FinishedStudy, tmp_path: Path
) -> None:
    page = pg_study.sweep_dir / "report.html"
    shot = tmp_path / "report.png"
    dom = render(page.as_uri(), tmp_path / "profile-report", screenshot=shot, window="1300,2400")

    text = visible_text(dom)
    assert "MSE vs cross-entropy" in text
    assert "Verdicts" in text and "C12" in text
    # The page shows exactly the verdicts the store gives: the report rebuilt from MLflow
    # alone (a verdict cell's class is its verdict, spaces as hyphens).
    verdicts = re.findall(r'<td class="([a-z-]+)">', dom)
    rebuilt, _ = publish_report(
        pg_study.uri, tmp_path / "rebuilt", experiment_name=pg_study.experiment_name, upload=False
    )
    expected = [
        str(verdict).replace(" ", "-")
        for check in rebuilt.checks
        for verdict in (check.verdict, *(p.verdict.verdict for p in check.parts))
    ]
    assert verdicts == expected
    # C12c (the mechanism) is judged on the same runs; its control arm (mse_raw) is not in
    # this study, so that part cannot hold.
    assert [c.claim for c in rebuilt.checks] == ["C12", "C12b", "C12c"]
    assert len(verdicts) >= 4  # C12's overall verdict and its part, C12b's and C12c's overall
    assert "loss=ce" in text and "loss=mse" in text and "8/8" in text
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', dom)
    assert {"val_loss", "train_loss"} <= set(images)
    assert shot.stat().st_size > 50_000  # tables and plots, not a blank page
    print(f"\n[browser] report.html: {len(verdicts)} verdict cells, {len(images)} plots; {shot}")


def _link(output: str, label: str) -> str:
    """The UI link the sweep printed after ``label``."""
    found = re.search(re.escape(label) + r" (http://\S+)", output)
    assert found, f"no {label!r} link in the sweep's output"
    return found.group(1)


def test_a_sweep_reads_as_named_runs_with_models_datasets_and_a_summary_row(
    ui_study: FinishedStudy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out_dir = tmp_path_factory.mktemp("browser-artifacts")
    client = MlflowClient(ui_study.uri)
    experiment = client.get_experiment_by_name(ui_study.experiment_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    [parent] = [r for r in runs if "xent.sweep_dir" in r.data.tags]
    children = [r for r in runs if r is not parent]
    names = sorted(r.info.run_name for r in children)
    assert names == [f"{v} seed={s}" for v in UI_STUDY_VARIANTS for s in (0, 1)]

    # The console: one line per job, no epoch lines of the parallel jobs.
    output = ui_study.result.output
    done_lines = re.findall(r"^\[(\d)/4\] (.+? seed=\d)  val loss \d\.\d{4}  ", output, re.M)
    assert sorted(n for _, n in done_lines) == names
    assert sorted(c for c, _ in done_lines) == ["1", "2", "3", "4"]
    assert "epoch 1/3" not in output

    # The runs table, as the link printed at the sweep's end opens it.
    shot = out_dir / "runs-table.png"
    dom = render(
        _link(output, "runs with the summary columns"),
        out_dir / "profile-table",
        screenshot=shot,
        window="2600,900",
    )
    (out_dir / "runs-table.html").write_text(dom)
    text = visible_text(dom)
    assert "Sort: Run Name" in text and "5 matching runs" in text
    for name in names:
        assert name in text, name
    # Models column: a link to each child's logged model.
    models = set(re.findall(r"#/experiments/\d+/models/(m-[0-9a-f]{32})", dom))
    assert models == {m.model_id for r in children for m in r.outputs.model_outputs}
    assert len(models) == 4
    # Dataset column: each child's train split, by name and digest.
    for run in children:
        [train] = [
            i.dataset
            for i in run.inputs.dataset_inputs
            if {t.key: t.value for t in i.tags}["mlflow.data.context"] == "train"
        ]
        assert f"{train.name} ({train.digest}) train" in text
    # The parent's row: its summary columns, with the values the store holds.
    summary = {k: v for k, v in parent.data.metrics.items() if k.startswith("variants/")}
    assert len(summary) == 6  # final val loss and acc means of 2 variants, runs finished/failed
    for key in summary:
        assert key in text, key
    # The parent's row shows the values in the columns' (sorted) order; the UI writes a whole
    # number without its ".0".
    shown = [
        str(int(value)) if value.is_integer() else repr(value)
        for _, value in sorted(summary.items())
    ]
    assert " ".join(shown) in text, shown
    print(f"\n[browser] runs table: {len(models)} models; {shot}")

    # The chart view: the children grouped by variant, each group's mean with a band.
    shot = out_dir / "variant-charts.png"
    dom = render(
        _link(output, "each variant's curves (mean, band over seeds)"),
        out_dir / "profile-chart",
        screenshot=shot,
        window="1800,1400",
    )
    (out_dir / "variant-charts.html").write_text(dom)
    text = visible_text(dom)
    assert "Group by: xent.variant" in text
    groups = sorted(re.findall(r"Group: (.+?) (\d+)\b", text))
    assert groups == [(variant, "2") for variant in UI_STUDY_VARIANTS]
    assert re.search(r"\bval \(\d+\) Add chart", text) and re.search(r"\btrain \(", text)
    assert shot.stat().st_size > 50_000  # charts drawn, not a blank page
    print(f"[browser] grouped charts: {groups}; {shot}")
