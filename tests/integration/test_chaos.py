"""Chaos: a tiny study whose worker is SIGKILLed and whose tracking server is killed and restarted
mid-sweep, then resumed. End state: one FINISHED run per variant x seed, every epoch of every one
exactly once, and the same report tables as an undisturbed run of the same seeds."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.cli import CliResult, start_cli
from tests.integration.records import read_sweep, report_tables
from tests.integration.services import TINY, TrackingServer, stop_group, wait_until
from tests.integration.test_faults import epochs_logged

pytestmark = pytest.mark.integration

EPOCHS = 300
STUDY = [
    "-m",
    "+experiment=mse_vs_ce",
    "data=reference",
    "loss=ce,mse",
    "optimizer=sgd",
    "model.output_init=standard",
    "seed=0,1",
    *TINY,
    "trainer.verbose=true",  # epoch lines in the job logs: the test waits for them
    f"trainer.epochs={EPOCHS}",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
]


@pytest.fixture
def chaos_server(tmp_path: Path) -> Iterator[TrackingServer]:
    server = TrackingServer(f"sqlite:///{tmp_path / 'chaos.db'}", tmp_path / "server", workers=1)
    server.start()
    yield server
    server.stop()


def test_a_study_survives_a_killed_worker_and_a_server_restart_then_resumes_complete(
    chaos_server: TrackingServer,
    tmp_path: Path,
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = chaos_server
    sweep_dir = tmp_path / "sweep"
    # A job that lost the server waits for it at its end (the restart takes tens of seconds).
    monkeypatch.setenv("XENT_SPOOL_WAIT_SECONDS", "180")
    arguments = [*STUDY, "tracking=server", f"tracking.uri={server.uri}"]
    sweep = start_cli(*arguments, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    client = MlflowClient(server.uri)
    try:
        wait_until(lambda: epochs_logged(sweep_dir / "0" / "run.log") >= 3, 240, "job 0 to train")
        experiment = client.get_experiment_by_name("mse_vs_ce")
        assert experiment is not None
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        job_0 = [r for r in running if r.data.tags.get("seed") == "0" and "pid" in r.data.tags]
        worker = int(job_0[0].data.tags["pid"])
        os.kill(worker, signal.SIGKILL)  # fault 1: a worker dies (as the OOM killer does)
        server.kill()  # fault 2: the tracking server crashes...
        time.sleep(2)
        server.start()  # ...and comes back
        returncode = sweep.wait(timeout=400)
    finally:
        stop_group(sweep)
    output = (tmp_path / "cli-output.log").read_text(errors="replace")
    during = read_sweep(server.uri, "mse_vs_ce")
    points_during = during.total_points
    statuses_during = dict(during.statuses)

    # Resume: the same sweep again into its directory.
    resumed = cli(*arguments, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.output[-5000:]
    after = read_sweep(server.uri, "mse_vs_ce")
    finished = [r for r in after.children if r.info.status == "FINISHED"]
    identities = sorted((r.data.params["loss.name"], r.data.tags["seed"]) for r in finished)
    losses = sorted({loss for loss, _ in identities})
    assert len(losses) == 2  # the two variants
    assert identities == [(loss, seed) for loss in losses for seed in ("0", "1")]
    assert after.incomplete(EPOCHS) == {}  # every epoch of every finished run, exactly once
    assert "RUNNING" not in after.statuses
    (killed,) = [r for r in after.children if r.info.run_id == job_0[0].info.run_id]
    assert killed.info.status == "FAILED"

    # The same study, undisturbed, in a store of its own: the same findings.
    calm_dir = tmp_path / "calm"
    calm_dir.mkdir()
    calm = cli(*STUDY, f"tracking.uri=sqlite:///{calm_dir / 'mlflow.db'}", cwd=calm_dir)
    assert calm.returncode == 0, calm.output[-5000:]
    calm_report = next(calm_dir.glob("multirun/**/report.md"))
    assert report_tables(sweep_dir / "report.md") == report_tables(calm_report)
    print(
        f"\n[chaos] first attempt exit {returncode}, runs {statuses_during}, {points_during} "
        f"points; resumed {resumed.seconds:.0f} s: runs {dict(after.statuses)}, "
        f"{after.total_points} points; worker died: "
        f"{'worker died (signal 9, SIGKILL)' in output}"
    )
