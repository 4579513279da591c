"""`make evidence` on two tiny data sets (one study, 2 seeds per seed set), then again: a line per
unit, the ledger's per-data-set table linked to each unit's sweep, and the second run trains
nothing (every unit resumes its finished sweep)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.services import ROOT, TINY

pytestmark = pytest.mark.integration

DATASETS = ("reference", "moons")  # +debug=tiny shrinks generated sets only
JOBS = 20  # annealing: 5 schedules x seeds 0-3 (two seed sets of 2)


def _make_evidence(store: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    arguments = [*TINY, f"tracking.uri={store}", "'claims.only=[C15]'", "claims.seeds=2"]
    return subprocess.run(
        [
            "make",
            "-f",
            str(ROOT / "Makefile"),
            "evidence",
            f"VENV={sys.prefix}",
            "-o",
            f"{sys.prefix}/.installed",
            "-o",
            f"{sys.prefix}/.installed-reference",
            f"DATASETS={' '.join(DATASETS)}",
            "STUDIES=annealing",
            f"ARGS={' '.join(arguments)}",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_make_evidence_judges_each_data_set_and_resumes_without_training(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _make_evidence(store, tmp_path)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    lines = [line for line in first.stdout.splitlines() if re.match(r"\[\d+/2\] ", line)]
    assert [line.split(":")[0] for line in lines] == [
        "[1/2] annealing on reference",
        "[2/2] annealing on moons",
    ]
    assert all(f": {JOBS} jobs trained in " in line for line in lines), lines
    assert "ETA" in lines[0] and lines[1].endswith("all units done")
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("annealing")
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], "tags.`xent.sweep_dir` != ''")
    assert len(parents) == 2  # one sweep per data set, both seed sets in it
    (claims_json,) = tmp_path.glob("outputs/claims/*/claims.json")
    ledger = json.loads(claims_json.read_text())
    assert ledger["datasets"] == list(DATASETS)
    (c15,) = ledger["claims"]
    assert set(c15["per_dataset"]) == set(DATASETS)
    # each data set's verdict links to the parent run of annealing on it
    by_dataset = {s["dataset"]: s for s in ledger["studies"]}
    for dataset in DATASETS:
        parent = by_dataset[dataset]["parent_run_id"]
        assert f"data={dataset}" in client.get_run(parent).data.tags["hydra.overrides"]
        assert c15["per_dataset_sweeps"][dataset].endswith(f"/runs/{parent}/model-metrics")
    assert ledger["stability"] and {row["dataset"] for row in ledger["stability"]} == set(DATASETS)
    assert "== Claims per data set (2 data sets) ==" in first.stdout
    runs_before = len(client.search_runs([experiment.experiment_id]))

    again = _make_evidence(store, tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert f"0 jobs trained ({JOBS} finished earlier)" in again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == runs_before
