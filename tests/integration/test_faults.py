"""Faults with the real parts: an unreachable server, a server that dies mid-sweep (and the re-run
that completes the study), a job killed with SIGTERM (alone and inside a sweep)."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import compose_config
from tests.integration.cli import CliResult, start_cli
from tests.integration.records import EPOCH_METRICS, read_sweep
from tests.integration.services import (
    TINY,
    TrackingServer,
    free_port,
    stop_group,
    wait_until,
)
from xent_tf.config import to_config
from xent_tf.track import connection
from xent_tf.track.spool import SPOOL_FILE, read_spool

pytestmark = pytest.mark.integration

EPOCH_LINE = re.compile(r"epoch\s+(\d+)/")


def epochs_logged(log: Path) -> int:
    """The last epoch a job's log file reports (0 before training)."""
    if not log.exists():
        return 0
    found = EPOCH_LINE.findall(log.read_text(errors="replace"))
    return int(found[-1]) if found else 0


def fail_if_trained(*args: object, **kwargs: object) -> None:
    raise AssertionError("training started although the tracking server is unreachable")


def check_fails_before_training(uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the pipeline against ``uri``; return its error (training must not start)."""
    from xent_tf.train import pipeline

    monkeypatch.setattr(pipeline, "configure_runtime", fail_if_trained)
    config = to_config(compose_config([*TINY, "tracking=server", f"tracking.uri={uri}"]))
    started = time.monotonic()
    with pytest.raises(connection.TrackingUnavailableError) as error:
        pipeline.run_experiment(config, tmp_path / "out")
    assert time.monotonic() - started < 10
    return str(error.value)


def test_a_sweep_against_an_unreachable_server_stops_before_any_job(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli("-m", "seed=0,1", *TINY, "tracking=server", f"tracking.uri={uri}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"the sweep cannot start: MLflow tracking server {uri} is unreachable" in result.output
    assert "Connection refused" in result.output and "make server" in result.output
    assert "Launching" not in result.output and "training on" not in result.output
    assert result.seconds < 30  # the launching process never imports TensorFlow
    print(f"\n[unreachable] the sweep stopped in {result.seconds:.1f} s, before any job")


# The outage sweep: 2 jobs, one after the other, logging over HTTP; 600 epochs (~3.5 s) leave
# seconds between the kill (at epoch 3) and the job's next request at the end of its training.
OUTAGE_EPOCHS = 600


def outage_sweep(uri: str, sweep_dir: Path) -> list[str]:
    return [
        "-m",
        "seed=0,1",
        *TINY,
        "trainer.verbose=true",  # epoch lines in the job logs: the test waits for them
        f"trainer.epochs={OUTAGE_EPOCHS}",
        "experiment_name=outage",
        "tracking=server",
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        # The run's dataset inputs and its MLflow logged model are spooled and replayed too.
        "tracking.log_model=true",
        "tracking.logged_model=true",
    ]


@pytest.fixture
def outage_server(tmp_path: Path) -> Iterator[TrackingServer]:
    """A `make server` of its own (SQLite store) that the test kills and restarts."""
    server = TrackingServer(f"sqlite:///{tmp_path / 'outage.db'}", tmp_path / "server", workers=1)
    server.start()
    yield server
    server.stop()  # whatever happened in the test


def test_a_server_that_dies_mid_sweep_loses_nothing_and_a_rerun_completes_only_what_is_missing(
    outage_server: TrackingServer,
    tmp_path: Path,
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = outage_server
    sweep_dir = tmp_path / "sweep"
    # A job whose server went away waits this long for it at its end (then leaves its spool).
    monkeypatch.setenv("XENT_SPOOL_WAIT_SECONDS", "3")
    sweep = start_cli(*outage_sweep(server.uri, sweep_dir), cwd=tmp_path)
    try:
        # Job 0 is training and logging to the server; then the server dies (SIGKILL).
        wait_until(lambda: epochs_logged(sweep_dir / "0" / "run.log") >= 3, 180, "job 0 to train")
        stopped = time.monotonic()
        server.kill()
        returncode = sweep.wait(timeout=240)
        outage_seconds = time.monotonic() - stopped
    finally:
        stop_group(sweep)
    output = (tmp_path / "cli-output.log").read_text(errors="replace")

    # Job 0 noticed at its next request, kept training and spooled what it could not send; the
    # server did not come back within its wait, so the job failed saying where its records are.
    # Job 1 started while the server was down and stopped before training.
    job_0 = (sweep_dir / "0" / "run.log").read_text(errors="replace")
    spool = sweep_dir / "0" / SPOOL_FILE
    assert f"MLflow tracking server {server.uri} stopped answering while" in job_0, job_0[-3000:]
    assert f"the run goes on and keeps what it cannot send in {spool}" in job_0
    assert (
        "job failed, the sweep goes on: TrackingUnavailableError: MLflow tracking server "
        f"{server.uri} did not come back within 3 s" in job_0
    ), job_0[-3000:]
    assert epochs_logged(sweep_dir / "0" / "run.log") == OUTAGE_EPOCHS  # it trained to the end
    header, records = read_spool(spool, None)
    assert records[-1].kind == "status" and records[-1].data == {"status": "FINISHED"}
    assert [r.kind for r in records].count("datasets") == 1
    assert [r.kind for r in records].count("model") == 1
    spooled_points = sum(len(r.data["metrics"]) for r in records if r.kind == "metrics")
    job_1 = (sweep_dir / "1" / "run.log").read_text(errors="replace")
    assert (
        "job failed, the sweep goes on: TrackingUnavailableError: MLflow tracking server "
        f"{server.uri} is unreachable" in job_1
    ), job_1[-3000:]
    assert epochs_logged(sweep_dir / "1" / "run.log") == 0
    assert outage_seconds < 60, f"the sweep took {outage_seconds:.0f} s to give up"
    # The sweep's end says the server is gone and what to do; the exit code says it failed.
    assert returncode == 1
    assert f"the sweep ended but MLflow tracking server {server.uri} is unreachable" in output
    assert f"hydra.sweep.dir={sweep_dir}" in output

    # A run started while the server is down stops before training, naming it.
    message = check_fails_before_training(server.uri, tmp_path, monkeypatch)
    assert f"MLflow tracking server {server.uri} is unreachable" in message

    # The server comes back (same port, same store): the run it saw is still RUNNING, with only
    # the epochs sent before it died.
    server.start()
    before = read_sweep(server.uri, "outage")
    assert before.parent.info.status == "RUNNING"
    assert before.statuses == {"RUNNING": 1}
    (stuck,) = before.children
    assert stuck.info.run_id == header.run_id
    points_before = before.total_points
    assert len(before.points[stuck.info.run_id].get("train/loss", [])) < OUTAGE_EPOCHS

    # Re-running the sweep into the same directory sends job 0's spool (its run ends FINISHED
    # with every epoch), skips job 0 (its config FINISHED) and trains only job 1.
    rerun = cli(*outage_sweep(server.uri, sweep_dir), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.output[-5000:]
    assert f"replayed the spool of run {stuck.info.run_id}" in rerun.output
    assert f"{spooled_points} metric points sent (0 were there already), status FINISHED" in (
        rerun.output
    )
    assert "1 configs that already FINISHED there are skipped" in rerun.output
    after = read_sweep(server.uri, "outage")
    assert after.parent.info.run_id == before.parent.info.run_id
    assert after.parent.info.status == "FINISHED"
    assert after.statuses == {"FINISHED": 2}  # nothing lost, nothing re-trained
    assert stuck.info.run_id in {r.info.run_id for r in after.children}
    assert after.incomplete(OUTAGE_EPOCHS) == {}  # every epoch of both runs, exactly once
    assert not spool.exists()
    client = MlflowClient(server.uri)
    for child in after.children:  # job 0's from its spool, job 1's sent as it ran
        run = client.get_run(child.info.run_id)
        assert run.inputs is not None and run.outputs is not None
        inputs = run.inputs.dataset_inputs
        contexts = [{t.key: t.value for t in i.tags}["mlflow.data.context"] for i in inputs]
        assert sorted(contexts) == ["test", "train", "val"], run.info.run_id
        [output] = run.outputs.model_outputs
        assert output.step == OUTAGE_EPOCHS
        model = client.get_logged_model(output.model_id)
        assert (str(model.status), model.source_run_id) == ("READY", run.info.run_id)
    report = (sweep_dir / "report.md").read_text()
    assert "| (all runs) | 2/2 |" in report
    assert "## Superseded runs" not in report
    print(
        f"\n[outage] the sweep gave up {outage_seconds:.1f} s after the server died, "
        f"{points_before} points in the store then, {spooled_points} spooled; re-run "
        f"{rerun.seconds:.1f} s: {len(after.children)} runs ({dict(after.statuses)}), "
        f"{after.total_points} metric points"
    )


def test_sigterm_ends_a_single_run_killed_with_the_epochs_it_trained(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    job = start_cli(
        *TINY,
        "trainer.verbose=true",
        "trainer.epochs=3000",
        f"tracking.uri={store}",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    try:
        wait_until(lambda: epochs_logged(run_dir / "run.log") >= 5, 120, "training to start")
        sent = time.monotonic()
        os.kill(job.pid, signal.SIGTERM)
        returncode = job.wait(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        stop_group(job)
    assert returncode != 0
    trained = epochs_logged(run_dir / "run.log")
    assert 5 <= trained < 3000

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("reference")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == f"Terminated: SIGTERM received by process {job.pid}"
    # Every epoch it finished was flushed before the run ended: nothing lost.
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert sorted(steps) == list(range(1, trained + 1))
    assert run.data.metrics.keys() >= EPOCH_METRICS
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"error.txt", "config.yaml", "logs"} <= files
    assert seconds < 15
    print(f"\n[sigterm run] KILLED after {trained} epochs, exited {seconds:.1f} s after SIGTERM")


def test_sigterm_kills_one_sweep_job_and_the_sweep_goes_on_and_reports_it(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    sweep = start_cli(
        "-m",
        "trainer.epochs=3000,2,3",
        *TINY,
        "trainer.verbose=true",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    client = MlflowClient(store)
    try:
        wait_until(lambda: epochs_logged(sweep_dir / "0" / "run.log") >= 5, 180, "job 0 to train")
        experiment = client.get_experiment_by_name("reference")
        assert experiment is not None
        (running,) = client.search_runs(
            [experiment.experiment_id],
            "attributes.status = 'RUNNING' and params.`trainer.epochs` = '3000'",
        )
        worker = int(running.data.tags["pid"])
        assert worker != sweep.pid  # a joblib worker process, not the launcher
        os.kill(worker, signal.SIGTERM)
        returncode = sweep.wait(timeout=180)
    finally:
        stop_group(sweep)
    # A worker that died would have broken joblib's pool and aborted the sweep.
    assert returncode == 0
    job_log = (sweep_dir / "0" / "run.log").read_text()
    reason = f"SIGTERM received by process {worker}"
    assert f"job failed, the sweep goes on: RunTerminated: {reason}" in job_log

    records = read_sweep(store, "reference")
    assert records.parent.info.status == "FINISHED"
    status = {r.data.params["trainer.epochs"]: r.info.status for r in records.children}
    assert status == {"3000": "KILLED", "2": "FINISHED", "3": "FINISHED"}
    assert len({r.data.tags["pid"] for r in records.children}) == 2  # both workers
    report = (sweep_dir / "report.md").read_text()
    assert "## Failed runs" in report
    assert f"| KILLED | Terminated: {reason} |" in report
    print(f"\n[sigterm sweep] statuses {status}, {records.total_points} metric points")
