"""Scale-out without services: re-run sweeps (one run per variant x seed), the parent handed to
jobs on other machines, SIGTERM, bounded HTTP retries, a server that stops answering."""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from omegaconf import OmegaConf

from xent_tf.claims.studies import StudyOptions, get_study, group_variants, latest_per_seed
from xent_tf.claims.study_report import build_report, render_markdown
from xent_tf.launch import callback as callback_module
from xent_tf.launch.callback import MlflowSweepCallback, ParentRun, parent_for_sweep
from xent_tf.track import artifacts, connection, writing
from xent_tf.track.reading import StudyRun
from xent_tf.track.run_record import RunRecord
from xent_tf.train.pipeline import sigterm_ends_run


def record(seed: int, status: str, start: int, loss: str = "bce", acc: float = 0.9) -> RunRecord:
    return RunRecord(
        run_id=f"{loss}-{seed}-{start}",
        params={"data.name": "reference", "loss.name": loss, "trainer.target_val_acc": "0.9"},
        seed=seed,
        status=status,
        history={"val/acc": [acc], "val/loss": [0.3]},
        final={"val/acc": acc, "val/loss": 0.3},
        error=None if status == "FINISHED" else f"{status.title()}Error: attempt at {start}",
        start_time=start,
    )


def test_one_run_per_seed_the_latest_finished_else_the_latest_attempt() -> None:
    runs = [
        record(0, "FINISHED", 2),
        record(0, "FAILED", 1),
        record(0, "FINISHED", 3),  # the re-run's: kept
        record(1, "KILLED", 1),
        record(1, "FAILED", 2),  # no finished attempt: the latest one, so the failure shows
        record(2, "FINISHED", 1),
        record(2, "KILLED", 5),  # a later attempt that did not finish supersedes nothing
    ]
    kept, superseded = latest_per_seed(runs)
    assert [(r.seed, r.status, r.start_time) for r in kept] == [
        (0, "FINISHED", 3),
        (1, "FAILED", 2),
        (2, "FINISHED", 1),
    ]
    assert sorted((r.seed, r.start_time) for r in superseded) == [(0, 1), (0, 2), (1, 1), (2, 5)]


def test_a_rerun_study_report_counts_each_seed_once_and_lists_what_it_left_out() -> None:
    runs = [
        record(0, "KILLED", 1),
        record(0, "FINISHED", 10, acc=0.90),
        record(1, "FINISHED", 2, acc=0.10),  # an earlier finished run: superseded, not averaged
        record(1, "FINISHED", 11, acc=0.92),
        record(0, "FINISHED", 3, loss="cce", acc=0.91),
        record(1, "FINISHED", 4, loss="cce", acc=0.93),
    ]
    spec = get_study("binary_vs_categorical")
    variants = group_variants(runs, spec.group_by)
    assert [(v.label, len(v.runs), len(v.superseded)) for v in variants] == [
        ("data=reference loss=bce", 2, 2),
        ("data=reference loss=cce", 2, 0),
    ]
    assert variants[0].per_seed(lambda r: r.final["val/acc"]) == {0: 0.90, 1: 0.92}

    parent = StudyRun("parent-1", "1", "binary_vs_categorical", spec.name, "FINISHED", 0)
    markdown = render_markdown(build_report(runs, parent, spec, StudyOptions()), [])
    assert "4 child runs (2 more superseded by a re-run)" in markdown
    assert "| data=reference loss=bce | 2/2 |" in markdown
    assert "## Superseded runs" in markdown
    assert "| data=reference loss=bce | 0 | KILLED | bce-0-1 |" in markdown
    assert "| data=reference loss=bce | 1 | FINISHED | bce-1-2 |" in markdown
    assert "This sweep was re-run: 2 earlier runs" in markdown
    assert "## Failed runs" not in markdown  # the killed attempt was re-run and finished


def sweep_config(uri: str, sweep_dir: Path):  # type: ignore[no-untyped-def]
    """The composed config (with its hydra node) a sweep's callback sees."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["+debug=tiny", f"tracking.uri={uri}"],
            return_hydra_config=True,
        )
    OmegaConf.update(cfg, "hydra.sweep.dir", str(sweep_dir), force_add=True)
    return cfg


def fake_child(uri: str, parent: ParentRun, seed: int, status: str | None) -> str:
    """A child run as a job leaves it (``status`` None: left RUNNING, its job lost the server)."""
    client = MlflowClient(uri)
    run = client.create_run(
        parent.experiment_id, tags={"mlflow.parentRunId": parent.run_id, "seed": str(seed)}
    )
    client.log_param(run.info.run_id, "seed", str(seed))
    client.log_metric(run.info.run_id, "val/loss", 0.5, step=1)
    client.log_metric(run.info.run_id, "val/acc", 0.8, step=1)
    if status is not None:
        client.set_terminated(run.info.run_id, status)
    return str(run.info.run_id)


def test_rerunning_a_sweep_dir_reuses_its_parent_and_fails_runs_left_running(
    tracking_uri: str, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    cfg = sweep_config(tracking_uri, sweep_dir)
    first = MlflowSweepCallback()
    first.on_multirun_start(cfg)
    atexit.unregister(first._end_if_still_running)  # this "sweep" was interrupted
    parent = parent_for_sweep(sweep_dir)
    assert parent is not None
    fake_child(tracking_uri, parent, 0, "FINISHED")
    stuck = fake_child(tracking_uri, parent, 1, None)
    # Interrupted: the parent ends KILLED (what the callback's exit handler does).
    writing.end_run(tracking_uri, parent.run_id, "KILLED")

    second = MlflowSweepCallback()
    second.on_multirun_start(cfg)
    assert second.parent == parent
    client = MlflowClient(tracking_uri)
    assert client.get_run(parent.run_id).info.status == "RUNNING"
    fake_child(tracking_uri, parent, 1, "FINISHED")
    second.on_multirun_end(cfg)

    assert client.get_run(parent.run_id).info.status == "FINISHED"
    orphan = client.get_run(stuck)
    assert orphan.info.status == "FAILED"
    assert orphan.data.tags["error"] == writing.ORPHAN_ERROR
    report = (sweep_dir / "report.md").read_text()
    assert "2 child runs (1 more superseded by a re-run)" in report
    assert f"| 1 | FAILED | {stuck} |" in report
    experiment = client.get_experiment_by_name("reference")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 4  # one parent, 3 children


def test_a_job_on_another_machine_gets_its_parent_from_the_pickled_callback(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callback_module, "_job_parent", None)
    driver_dir = tmp_path / "driver" / "sweep"
    callback = MlflowSweepCallback()
    callback.on_multirun_start(sweep_config(tracking_uri, driver_dir))
    atexit.unregister(callback._end_if_still_running)
    parent = callback.parent
    assert parent is not None
    # Ray and joblib pickle Hydra's context, callbacks included, for every job.
    shipped = pickle.loads(pickle.dumps(callback))
    # On the other machine the sweep dir (relative in the config) resolves elsewhere, with no
    # mlflow_parent.json in it.
    node_dir = tmp_path / "node" / "sweep"
    assert parent_for_sweep(node_dir) is None
    shipped.on_job_start(config=sweep_config(tracking_uri, node_dir), task_function=None)
    assert parent_for_sweep(node_dir) == parent
    assert parent_for_sweep(tmp_path / "another" / "sweep") is None
    # A later job of a sweep without tracking gets nothing stale.
    MlflowSweepCallback().on_job_start(config=sweep_config(tracking_uri, node_dir))
    assert parent_for_sweep(node_dir) is None


def test_a_sweep_whose_server_is_gone_at_the_end_exits_failing_and_says_how_to_finish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = MlflowSweepCallback()
    callback.parent = ParentRun("abc123", "1", "http://127.0.0.1:9")  # nothing listens
    callback.sweep_dir = tmp_path
    with pytest.raises(SystemExit) as stop:
        callback.on_multirun_end(OmegaConf.create({}))
    assert stop.value.code == 1
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in caplog.text
    assert "parent run abc123" in caplog.text and f"hydra.sweep.dir={tmp_path}" in caplog.text


def test_sigterm_raises_in_the_main_thread_only_and_the_old_handler_comes_back() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    expected = f"SIGTERM received by process {os.getpid()}"
    with pytest.raises(writing.Terminated, match=expected), sigterm_ends_run():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted by the handler
    assert signal.getsignal(signal.SIGTERM) is previous

    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(enter_in_thread()))
    worker.start()
    worker.join()
    assert seen == [previous]  # a thread cannot own signal handlers: nothing was installed


def enter_in_thread() -> object:
    with sigterm_ends_run():
        return signal.getsignal(signal.SIGTERM)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (writing.Terminated("SIGTERM received by process 1"), "KILLED"),
        (KeyboardInterrupt(), "KILLED"),
        (RuntimeError("disk on fire"), "FAILED"),
    ],
)
def test_open_run_ends_killed_on_sigterm_and_failed_on_errors(
    tracking_uri: str, error: BaseException, status: str
) -> None:
    with pytest.raises(type(error)), writing.open_run(tracking_uri, "faults", "r") as run:
        run.log_metrics({"val/loss": 1.0}, step=1)
        raise error
    finished = MlflowClient(tracking_uri).get_run(run.run_id)
    assert finished.info.status == status
    assert finished.data.tags["error"].startswith(type(error).__name__)
    assert finished.data.metrics == {"val/loss": 1.0}  # flushed before it ended


def test_http_retries_are_bounded_unless_the_user_chose_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in connection.HTTP_RETRY_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    connection.bound_http_retries()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"  # the user's choice stays


class DeadClient:
    """An MlflowClient whose server has gone: every request fails."""

    def log_batch(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("Connection refused")


def test_a_server_that_stopped_answering_is_named_with_what_was_not_sent() -> None:
    run = writing.MlflowRun(DeadClient(), "run1", "1", "http://127.0.0.1:9")  # type: ignore[arg-type]
    run._buffer = [Metric("val/loss", 0.5, 0, step) for step in range(1, 1501)]
    with pytest.raises(connection.TrackingUnavailableError) as error:
        run.flush()
    assert str(error.value).startswith(
        "MLflow tracking server http://127.0.0.1:9 stopped answering while sending metrics for "
        "run run1; 1500 metric values were not sent"
    )
    assert len(run._buffer) == 1500  # kept: a later flush sends them if the server is back


def test_long_run_names_fit_mlflows_column_and_stay_distinct() -> None:
    assert artifacts.fit_run_name("bce-seed0") == "bce-seed0"
    names = [",".join(["tracking.uri=http://127.0.0.1:5001"] * 8) + f",seed={s}" for s in (1, 2)]
    fitted = [artifacts.fit_run_name(name) for name in names]
    assert all(len(name) <= 250 for name in fitted)
    assert fitted[0] != fitted[1]


def test_a_sqlite_store_is_written_in_write_ahead_log_mode(tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "wal.db"
    with writing.open_run(f"sqlite:///{database}", "wal", "run") as run:
        run.log_metrics({"m": 1.0}, step=0)
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    runs = MlflowClient(f"sqlite:///{database}").search_runs([run.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics == {"m": 1.0}
