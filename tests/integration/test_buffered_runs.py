"""Buffered runs (``writing.BufferedRun``) in a PostgreSQL store read back as MLflow's own calls
record them, and processes writing buffered runs into one store at once (SQLite, PostgreSQL),
all logging the same data set, lose nothing and share one dataset record per split; a study's
children read back from PostgreSQL by ``sql_reads`` are what MLflow's calls read."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.services import Postgres
from tests.test_sql_runs import SPLITS, _run, snapshot
from tests.test_tracking_reads import compare_read_paths
from xent_tf.track import writing

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
RUNS = 8


@pytest.mark.parametrize("fail", [None, ValueError("bad epoch")])
def test_a_buffered_run_in_postgresql_reads_back_as_mlflows_calls_record_it(
    postgres: Postgres, fail: ValueError | None
) -> None:
    uri = postgres.create_database(f"buffered_{'failed' if fail else 'finished'}")
    parent, _ = writing.start_parent_run(uri, "e", "sweep", {})
    by_mlflow, buffered = (_run(uri, way, fail, parent) for way in (False, True))
    client = MlflowClient(uri)
    ours = snapshot(client, buffered)
    assert ours == snapshot(client, by_mlflow)
    assert ours["status"] == ("FAILED" if fail else "FINISHED")
    assert len(ours["datasets"]) == (0 if fail else 3)


def test_a_studys_children_read_from_postgresql_by_sql_are_what_mlflows_calls_give(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sql_reads`` on PostgreSQL (its collation orders the run ids, its booleans, its
    floats): the records MLflow's path gives, field by field."""
    compare_read_paths(postgres.create_database("sql_reads"), tmp_path, monkeypatch)


def record_runs(uri: str, start: float, runs: int) -> None:
    """Record ``runs`` buffered runs with the same datasets, from ``start`` (a shared time)."""
    time.sleep(max(0.0, start - time.time()))
    for k in range(runs):
        with writing.open_run(uri, "e", f"r{k}", buffered=True) as recorder:
            recorder.log_params({"k": str(k)})
            recorder.log_metrics({"val/loss": 1.0 / (k + 1)}, step=1)
            recorder.log_datasets(SPLITS, "reference", {"source": "test"})


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_processes_writing_buffered_runs_at_once_lose_nothing(
    store: str, postgres: Postgres, tmp_path: Path
) -> None:
    uri = (
        f"sqlite:///{tmp_path / 'mlflow.db'}"
        if store == "sqlite"
        else postgres.create_database("buffered_parallel")
    )
    writing.start_parent_run(uri, "e", "sweep", {})  # the schema and the experiment
    start = time.time() + 15  # after every process has imported MLflow
    code = "import sys; from tests.integration.test_buffered_runs import record_runs; "
    code += "record_runs(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri, str(start), str(RUNS)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * PROCESSES, outputs
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e")
    assert experiment is not None
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name != "sweep"]
    assert len(runs) == PROCESSES * RUNS
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["k"] for r in runs) == sorted(
        str(k) for k in range(RUNS) for _ in range(PROCESSES)
    )
    assert all(r.data.metrics["val/loss"] == 1.0 / (int(r.data.params["k"]) + 1) for r in runs)
    inputs = [client.get_run(r.info.run_id).inputs.dataset_inputs for r in runs]
    assert [len(i) for i in inputs] == [3] * len(runs)
    digests = {d.dataset.digest for i in inputs for d in i}
    assert len(digests) == 3  # the three splits, every run linked to the same three
