"""`python experiments/run.py` as a user runs it: one run, a joblib sweep, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_single_run_prints_device_results_and_where_the_run_is(tmp_path: Path) -> None:
    result = run_cli("+debug=tiny", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "epoch 2/2" in out
    assert "trained on CPU" in out and "test accuracy" in out
    assert "MLflow run" in out and "make ui" in out and "/model-metrics" in out
    # the default store is ./mlflow.db in the launch directory
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reference")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_joblib_sweep_records_every_job_under_one_parent_and_survives_a_failed_job(
    tmp_path: Path,
) -> None:
    result = run_cli(
        "-m",
        "+debug=tiny",
        "optimizer=sgd",
        "loss=bce,mse",
        "seed=0,1",
        "optimizer.learning_rate=0.1,1e30",  # 1e30 diverges: a failed job, not a failed sweep
        "hydra/launcher=joblib",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reference")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "xent.sweep_dir" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 8
    statuses = {
        (
            r.data.tags["loss"],
            r.data.tags["seed"],
            r.data.params["optimizer.learning_rate"],
        ): r.info.status
        for r in children
    }
    assert statuses == {
        (loss, seed, lr): "FINISHED" if lr == "0.1" else "FAILED"
        for loss in ("bce", "mse")
        for seed in ("0", "1")
        for lr in ("0.1", "1e+30")
    }
    assert {r.data.params["trainer.threads"] for r in children} == {"1"}
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"report.md", "report.html", "plots"} <= artifacts
    out = result.stdout + result.stderr
    assert "job failed, the sweep goes on: NonFiniteLossError" in out
    assert "(2 failed)" in out


def test_bad_input_fails_before_training_and_leaves_no_run(tmp_path: Path) -> None:
    result = run_cli("+debug=tiny", "trainer.epochs=0", cwd=tmp_path)
    assert result.returncode != 0
    assert "trainer.epochs=0 must be >= 1" in result.stderr
    assert "epoch 1/" not in result.stdout + result.stderr
    db = tmp_path / "mlflow.db"
    if db.exists():  # nothing may be left RUNNING (or recorded at all)
        client = MlflowClient(f"sqlite:///{db}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_reproduce_refuses_an_unknown_study_naming_the_known_ones(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "reproduce.py"), "--studies", "lr_sweep,nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown studies ['nope']; the studies are ['binary_vs_categorical', 'mse_vs_ce', " in (
        result.stderr
    )
    assert not (tmp_path / "multirun").exists()  # nothing ran


def test_reproduce_gives_each_study_its_own_directory_under_a_shared_sweep_dir() -> None:
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from reproduce import study_overrides
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    assert study_overrides("lr_sweep", ["hydra.sweep.dir=/out", "seed=0,1", "tracking.uri=x"]) == [
        "hydra.sweep.dir=/out/lr_sweep",
        "seed=0,1",
        "tracking.uri=x",
    ]
    assert study_overrides("annealing", ["seed=0"]) == ["seed=0"]


def test_reproduce_tells_the_ledger_which_overrides_shaped_the_studies() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from reproduce import ledger_overrides
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    every_step = ["+debug=tiny", "tracking.uri=sqlite:////s.db", "claims.only=[C2]", "x.y=a'b"]
    got = ledger_overrides(every_step)
    assert got[:-1] == every_step  # the ledger's own overrides, unchanged
    # The studies' ones (not the store, the claims' or Hydra's), as a list Hydra reads back.
    parsed = OverridesParser.create().parse_overrides([got[-1]])[0]
    assert parsed.key_or_group == "claims.study_overrides"
    assert parsed.value() == ["+debug=tiny", "x.y=a'b"]
    mine = ["claims.study_overrides=[]", "+debug=tiny"]
    assert ledger_overrides(mine) == mine  # the user's own choice is kept
