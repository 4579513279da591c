"""The default SQLite store with parallel jobs writing at once: nothing lost, no "database is
locked"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cli import CliResult
from tests.integration.records import CHILD_ARTIFACTS, EPOCH_METRICS, artifacts, read_sweep
from tests.integration.services import TINY

pytestmark = pytest.mark.integration

JOBS = 6
WORKERS = 3  # processes writing the one file at once: more than the 2 cores, so writes interleave
EPOCHS = 3


def test_six_jobs_in_three_processes_writing_one_sqlite_file_lose_nothing(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = cli(
        "-m",
        f"seed=range({JOBS})",
        *TINY,
        f"trainer.epochs={EPOCHS}",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={WORKERS}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output[-5000:]
    assert "locked" not in result.output.lower()
    assert "job failed" not in result.output

    records = read_sweep(store, "reference")
    assert records.parent.info.status == "FINISHED"
    assert records.statuses == {"FINISHED": JOBS}
    assert sorted(int(r.data.tags["seed"]) for r in records.children) == list(range(JOBS))
    # Runs that were open at the same time, in different processes: concurrent writers.
    spans = sorted((r.info.start_time, r.info.end_time) for r in records.children)
    overlapping = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlapping >= 2
    assert len({r.data.tags["pid"] for r in records.children}) >= 2
    assert records.incomplete(EPOCHS) == {}
    assert records.total_points == sum(
        EPOCHS * len(EPOCH_METRICS) + len(run.data.metrics.keys() - EPOCH_METRICS)
        for run in records.children
    )
    files = artifacts(store, [r.info.run_id for r in records.children])
    assert all(got >= CHILD_ARTIFACTS for got in files.values()), files
    print(
        f"\n[sqlite] {len(records.children)} runs, up to {overlapping} open at once, "
        f"{records.total_points} metric points, sweep {result.seconds:.1f} s"
    )
