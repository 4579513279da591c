"""A sweep worker killed by SIGKILL (as the OOM killer does) is one failed job, not a dead sweep:
its run ends FAILED with "worker died (signal 9, SIGKILL)", a new worker takes the remaining jobs,
the report lists it. For the joblib launcher, the replica launcher's workers and Ray tasks (whose
jobs run as on another node: in Ray's copy of an empty directory, logging to the shared server)."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.cli import start_cli
from tests.integration.records import CHILD_ARTIFACTS, PARENT_ARTIFACTS, artifacts, read_sweep
from tests.integration.services import TINY, TrackingServer, need, stop_group, wait_until
from tests.integration.test_faults import epochs_logged

pytestmark = pytest.mark.integration

EXPERIMENT = "ray_worker_death"  # on the session's shared server


@pytest.mark.parametrize(
    ("launcher", "long_job_log"),
    [
        # 3 jobs, 2 workers: job 0 trains long and is killed; jobs 1 and 2 finish.
        ("joblib", Path("0") / "run.log"),
        # The replica launcher: 3 units (the epoch counts differ: a batch each), 2 workers; the
        # long unit's worker is killed.
        ("replicas", None),
    ],
)
def test_a_sigkilled_worker_fails_its_job_and_the_sweep_finishes(
    tmp_path: Path, launcher: str, long_job_log: Path | None
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    sweep = start_cli(
        "-m",
        "trainer.epochs=3000,2,3",
        *TINY,
        "trainer.verbose=true",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra/launcher={launcher}",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    client = MlflowClient(store)
    try:
        if long_job_log is not None:
            wait_until(lambda: epochs_logged(sweep_dir / long_job_log) >= 5, 180, "job 0 to train")
            experiment = client.get_experiment_by_name("reference")
            assert experiment is not None
            (running,) = client.search_runs(
                [experiment.experiment_id],
                "attributes.status = 'RUNNING' and params.`trainer.epochs` = '3000'",
            )
            worker = int(running.data.tags["pid"])
        else:
            # A replica batch opens its runs only after training: kill the worker that holds
            # the long unit once the two short ones are recorded.
            def short_ones_done() -> bool:
                experiment = client.get_experiment_by_name("reference")
                if experiment is None:
                    return False
                done = client.search_runs(
                    [experiment.experiment_id], "attributes.status = 'FINISHED'"
                )
                return len([r for r in done if "mlflow.parentRunId" in r.data.tags]) == 2

            wait_until(short_ones_done, 240, "the short jobs to finish")
            worker = _busy_worker(sweep.pid)
        assert worker != sweep.pid
        os.kill(worker, signal.SIGKILL)
        returncode = sweep.wait(timeout=180)
    finally:
        stop_group(sweep)
    assert returncode == 0

    records = read_sweep(store, "reference")
    assert records.parent.info.status == "FINISHED"
    status = {r.data.params["trainer.epochs"]: r.info.status for r in records.children}
    assert status == {"3000": "FAILED", "2": "FINISHED", "3": "FINISHED"}
    (dead,) = [r for r in records.children if r.info.status == "FAILED"]
    reason = f"worker died (signal 9, SIGKILL) in process {worker}"
    assert dead.data.tags["error"] == f"WorkerDied: {reason}; the rest of the sweep went on"
    report = (sweep_dir / "report.md").read_text()
    assert "## Failed runs" in report and reason in report
    print(f"\n[sigkill {launcher}] statuses {status}, {records.total_points} metric points")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _busy_worker(launcher_pid: int) -> int:
    """The launcher's child process that is using the CPU now (the worker still training; the
    other worker is idle, waiting for a task)."""
    children = [
        int(pid)
        for pid in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    ]
    before = {pid: _cpu_ticks(pid) for pid in children}
    time.sleep(2)
    used = {pid: _cpu_ticks(pid) - ticks for pid, ticks in before.items()}
    busiest = max(used, key=lambda pid: used[pid])
    assert sorted(used.values())[-2:-1] in ([], [0], [1]), f"CPU ticks per child: {used}"
    return busiest


@pytest.mark.xdist_group("ray")
def test_a_killed_ray_job_fails_alone_and_the_sweep_finishes(
    pg_server: TrackingServer, tmp_path: Path
) -> None:
    """hydra/launcher=ray, 4 jobs on 2 CPUs: the two long jobs are killed, one in its job
    process (SIGKILL, as the OOM killer does: the signal is known), one with its Ray worker
    (Ray reports WorkerCrashedError, without a signal); neither is retried, the short two finish.

    As on a cluster, the jobs run in Ray's copy of an empty directory (they cannot see the
    driver's sweep dir nor the parent-run file in it) and log to the shared server over HTTP:
    each finds its parent and every run is recorded in full."""
    need(
        importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None,
        "hydra-ray-launcher not installed (pip install -e '.[scale]')",
    )
    store = pg_server.uri
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    sweep_dir = tmp_path / "sweep"
    client = MlflowClient(store)
    sweep = start_cli(
        "-m",
        "trainer.epochs=3000,3001,2,3",
        *TINY,
        f"experiment_name={EXPERIMENT}",
        "tracking.plots=true",  # the finished runs' records are checked in full
        "tracking=server",
        f"tracking.uri={store}",
        "hydra.sweep.dir=sweep",  # relative: each side resolves it in its own directory
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        f"+hydra.launcher.ray.init.runtime_env.working_dir={node_dir}",
        cwd=tmp_path,
    )
    running: dict[str, int] = {}

    def long_jobs_training() -> bool:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return False
        runs = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        running.update(
            (r.data.params["trainer.epochs"], int(r.data.tags["pid"]))
            for r in runs
            if "pid" in r.data.tags and "trainer.epochs" in r.data.params
        )
        return {"3000", "3001"} <= set(running)

    try:
        wait_until(long_jobs_training, 180, "both long jobs to train")
        job_process = running["3000"]
        ray_worker = _parent_of(running["3001"])  # the Ray worker that supervises job 3001
        assert ray_worker not in (sweep.pid, 1)
        os.kill(job_process, signal.SIGKILL)
        os.kill(ray_worker, signal.SIGKILL)
        returncode = sweep.wait(timeout=180)
    finally:
        stop_group(sweep)
    output = (tmp_path / "cli-output.log").read_text(errors="replace")
    assert returncode == 0, output[-5000:]
    assert "Ray Launcher is launching 4 jobs" in output
    assert "(run_job_supervised pid=" in output  # log lines came back from Ray workers
    # The jobs wrote their outputs in the workers' copy, not next to the parent-run file.
    assert (sweep_dir / "mlflow_parent.json").exists()
    assert not any(path.name.isdigit() for path in sweep_dir.iterdir())

    records = read_sweep(store, EXPERIMENT)
    assert records.parent.info.status == "FINISHED"
    status = {r.data.params["trainer.epochs"]: r.info.status for r in records.children}
    # One run per job: a killed job is not re-run (max_retries: 0, configs/hydra/launcher/ray.yaml).
    assert len(records.children) == 4
    assert status == {"3000": "FAILED", "3001": "FAILED", "2": "FINISHED", "3": "FINISHED"}
    errors = {r.data.params["trainer.epochs"]: r.data.tags.get("error") for r in records.children}
    killed = f"worker died (signal 9, SIGKILL) in process {job_process}"
    assert errors["3000"] == f"WorkerDied: {killed}; the rest of the sweep went on"
    lost = "worker died (Ray lost the worker: WorkerCrashedError: The worker died unexpectedly"
    assert str(errors["3001"]).startswith(f"WorkerDied: {lost}")
    for run in records.children:  # every epoch of the finished jobs, once
        if run.info.status == "FINISHED":
            epochs = int(run.data.params["trainer.epochs"])
            assert records.points[run.info.run_id]["val/loss"] == list(range(1, epochs + 1))
    finished = [r.info.run_id for r in records.children if r.info.status == "FINISHED"]
    files = artifacts(store, finished)
    assert all(got >= CHILD_ARTIFACTS for got in files.values()), files
    parent_files = artifacts(store, [records.parent.info.run_id])
    assert parent_files[records.parent.info.run_id] >= PARENT_ARTIFACTS
    report = (sweep_dir / "report.md").read_text()
    assert "## Failed runs" in report and killed in report and "Ray lost the worker" in report
    print(f"\n[sigkill ray] statuses {status}, {records.total_points} metric points")


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
