"""The notebook API (xent_tf.api): a tiny study, a run and a ledger through Hydra's driver, their
DataFrames checked against what MLflow holds, their Jupyter rendering, and bad input."""

from __future__ import annotations

import base64
import math
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

import xent_tf
from xent_tf import api

TINY_STUDY = ("+debug=tiny", "data=reference", "optimizer=sgd", "hydra.launcher.n_jobs=1")
RUN_COLUMNS = [
    "run_id",
    "variant",
    "seed",
    "status",
    "data.name",
    "loss.name",
    "optimizer.name",
    "model.output_init",
    "final_val_loss",
    "final_val_acc",
    "test_loss",
    "test_acc",
    "target_val_acc",
    "epochs_to_target",
    "url",
    "error",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


@pytest.fixture(scope="module")
def tiny_study(store: Path, uri: str) -> api.StudyResult:
    """mse_vs_ce on the reference data with plain SGD: 2 losses x 2 inits x seeds 0, 1."""
    return xent_tf.study(
        "mse_vs_ce",
        *TINY_STUDY,
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={store / 'sweep'}",
        seeds=2,
    )


def test_study_runs_table_is_what_mlflow_holds(tiny_study: api.StudyResult, uri: str) -> None:
    runs = tiny_study.runs
    assert list(runs.columns) == RUN_COLUMNS
    assert len(runs) == 12 and set(runs["status"]) == {"FINISHED"}
    assert sorted(zip(runs["loss.name"], runs["model.output_init"], runs["seed"], strict=True)) == [
        (loss, init, seed)
        for loss in ("ce", "mse", "mse_raw")
        for init in ("saturated", "standard")
        for seed in (0, 1)
    ]
    client = mlflow.MlflowClient(uri)
    for row in runs.itertuples(index=False):
        history = [m.value for m in client.get_metric_history(row.run_id, "val/loss")]
        assert len(history) == 2  # +debug=tiny: 2 epochs
        assert row.final_val_loss == history[-1]
        assert row.test_acc == client.get_run(row.run_id).data.metrics["test/acc"]
        epochs = tiny_study.epochs[tiny_study.epochs["run_id"] == row.run_id]
        assert list(epochs["epoch"]) == [1, 2]
        assert list(epochs["val/loss"]) == history
        # Epochs to the study's measured target, from the per-epoch accuracies.
        reached = epochs.loc[epochs["val/acc"] >= row.target_val_acc, "epoch"]
        expected = float(reached.iloc[0]) if len(reached) else math.nan
        assert row.epochs_to_target == expected or (
            math.isnan(expected) and math.isnan(row.epochs_to_target)
        )
        assert row.url == (
            f"http://127.0.0.1:5000/#/experiments/{tiny_study.experiment_id}/runs/"
            f"{row.run_id}/model-metrics"
        )
    assert set(tiny_study.epochs.columns) >= {"train/loss", "val/acc", "grad_norm/output", "lr"}
    # mse_vs_ce's plain SGD rate, logged as float32: 12 runs x 2 epochs.
    assert tiny_study.epochs["lr"].tolist() == pytest.approx([0.1] * 24, rel=1e-7)


def test_study_verdicts_are_the_reports(tiny_study: api.StudyResult, uri: str) -> None:
    verdicts = tiny_study.verdicts
    assert list(verdicts.columns) == ["claim", "context", "verdict", "measured", "rule"]
    overall = verdicts[verdicts["context"] == "overall"].set_index("claim")["verdict"]
    assert list(overall.index) == ["C12", "C12b", "C12c"]
    # The sweep's report tagged its parent run with the same verdicts.
    tags = mlflow.MlflowClient(uri).get_run(tiny_study.parent_run_id).data.tags
    assert overall.to_dict() == {c: tags[f"verdict.{c}"] for c in ("C12", "C12b", "C12c")}
    parts = verdicts[verdicts["context"] != "overall"]
    mechanism = parts[parts["claim"] == "C12c"]
    assert len(mechanism) == 4  # the gradient ratio (both inits) and the mse_raw control's two
    assert mechanism["context"].iloc[0] == (
        "reference data, sgd, saturated init: last-layer gradient norm, mse / ce, is << 1"
    )
    parts = parts[parts["claim"] != "C12c"]
    assert list(parts["context"]) == [
        "reference data, sgd, standard init",
        "reference data, sgd, saturated init",
        "reference data, sgd",
    ]


def test_study_renders_verdicts_and_curves(tiny_study: api.StudyResult) -> None:
    page = tiny_study._repr_html_()
    assert tiny_study.url in page and tiny_study.parent_run_id in page
    for verdict, count in tiny_study.verdicts["verdict"].value_counts().items():
        assert page.count(f'<td class="{verdict}">{verdict}</td>') == count
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # train/loss, val/loss, val/acc, grad_norm/output
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert list(tiny_study.figures) == ["train/loss", "val/loss", "val/acc", "grad_norm/output"]
    assert tiny_study.curves("val/acc")._repr_png_() == tiny_study.figures["val/acc"].png
    with pytest.raises(ValueError, match=r"metric='lr' is not plotted.*'val/acc'"):
        tiny_study.curves("lr")


def test_load_study_reads_the_same_sweep(tiny_study: api.StudyResult, uri: str) -> None:
    again = xent_tf.load_study("mse_vs_ce", tracking_uri=uri)
    assert again.parent_run_id == tiny_study.parent_run_id
    pd.testing.assert_frame_equal(again.runs, tiny_study.runs)
    pd.testing.assert_frame_equal(again.verdicts, tiny_study.verdicts)
    by_id = xent_tf.load_study(run_id=tiny_study.parent_run_id, tracking_uri=uri)
    pd.testing.assert_frame_equal(by_id.epochs, tiny_study.epochs)


def test_run_summary_is_the_recorded_run(store: Path, uri: str) -> None:
    summary = xent_tf.run(
        "+debug=tiny", "loss=mse", f"tracking.uri={uri}", f"hydra.run.dir={store / 'run'}"
    )
    recorded = mlflow.MlflowClient(uri).get_run(summary.run_id).data
    assert summary.test_loss == pytest.approx(recorded.metrics["test/loss"], rel=1e-6)
    assert recorded.tags["hydra.overrides"] == f"+debug=tiny loss=mse tracking.uri={uri}"
    assert summary.n_params == 331  # 20 -> 10 -> 10 -> 1
    assert list(summary.epochs["epoch"]) == [1, 2]
    history = mlflow.MlflowClient(uri).get_metric_history(summary.run_id, "val/acc")
    assert list(summary.epochs["val/acc"]) == pytest.approx([m.value for m in history])
    page = summary._repr_html_()
    assert summary.url in page and page.count("data:image/png;base64,") == 1


def test_ledger_and_load_ledger(store: Path, uri: str) -> None:
    built = xent_tf.ledger("claims.only=[C1]", f"tracking.uri={uri}", f"hydra.run.dir={store}/c")
    assert list(built.verdicts["claim"]) == ["C1"]
    assert list(built.verdicts["verdict"]) == ["holds"]  # C1: exact values, as stated
    assert f"{built.run_id}" in built.url and '<td class="holds">holds</td>' in built._repr_html_()
    read = xent_tf.load_ledger(tracking_uri=uri)
    assert read.run_id == built.run_id
    pd.testing.assert_frame_equal(read.verdicts, built.verdicts)
    pd.testing.assert_frame_equal(read.parts, built.parts)


def test_bad_input_names_the_value_and_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"study 'mse_vs_cee' is not one of .*'mse_vs_ce'"):
        xent_tf.study("mse_vs_cee")
    with pytest.raises(
        api.OverrideError, match=r"(?s)'trainer\.epoch'.*trainer has: epochs, batch_size"
    ):
        xent_tf.run("trainer.epoch=3")
    with pytest.raises(
        api.OverrideError, match=r"(?s)data/no_such_data.*Available options.*reference"
    ):
        xent_tf.study("mse_vs_ce", "data=no_such_data", seeds=1)
    with pytest.raises(api.OverrideError, match=r"optimizer\.momentum"):
        xent_tf.run("optimizer.momentum=0.9", "tracking=off")
    with pytest.raises(ValueError, match=re.escape("seeds=... or a seed=... override, not both")):
        xent_tf.study("mse_vs_ce", "seed=1", seeds=2)
    with pytest.raises(ValueError, match=r"seeds=0: give a count >= 1"):
        xent_tf.study("mse_vs_ce", seeds=0)
    with pytest.raises(ValueError, match="tracking=off: a study is recorded in MLflow"):
        xent_tf.study("mse_vs_ce", "tracking=off", seeds=1)
    with pytest.raises(api.OverrideError, match="not a run: use ledger"):
        xent_tf.run("+experiment=claims", "tracking=off")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ValueError, match="give a study name or run_id"):
        xent_tf.load_study(tracking_uri=empty)
    with pytest.raises(ValueError, match=r"no experiment 'mse_vs_ce' in .*empty\.db"):
        xent_tf.load_study("mse_vs_ce", tracking_uri=empty)
    with pytest.raises(ValueError, match=r"no finished claims ledger in .*empty\.db"):
        xent_tf.load_ledger(tracking_uri=empty)


def test_importing_the_package_loads_no_framework() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, xent_tf; print(sorted(m for m in ('tensorflow', 'mlflow', "
            "'matplotlib', 'pandas', 'hydra') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
    assert xent_tf.study is api.study and xent_tf.StudyResult is api.StudyResult
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = xent_tf.nothing  # type: ignore[attr-defined]
