"""A sweep as the MLflow UI shows it: readable child names, variant tags, summary metrics and
the verdict table on the parent; and the console's one line per finished job."""

from __future__ import annotations

import io
import json
import logging
import statistics
import time
from pathlib import Path

from mlflow import MlflowClient
from rich.console import Console

from tests.conftest import compose_config
from tests.test_studies import TINY_STUDY, compose_config_with_hydra
from xent_tf.config import to_config
from xent_tf.launch import progress
from xent_tf.launch.callback import MlflowSweepCallback, count_sweep_jobs, parent_for_sweep
from xent_tf.train.pipeline import run_experiment

# Two of the study's variants, by the overrides its sweep gives their jobs.
VARIANTS = {
    "reference bce": ["data=reference", "loss=bce"],
    "multiclass sparse_cce": ["data=multiclass", "loss=sparse_cce"],
}


def test_the_parent_row_carries_each_variants_means_and_the_verdict_table(
    tracking_uri: str, tmp_path: Path
) -> None:
    base = ["+experiment=binary_vs_categorical", *TINY_STUDY, f"tracking.uri={tracking_uri}"]
    sweep_dir = tmp_path / "sweep"
    hydra_cfg = compose_config_with_hydra(base, sweep_dir)
    callback = MlflowSweepCallback()
    callback.on_multirun_start(hydra_cfg)
    parent = parent_for_sweep(sweep_dir)
    assert parent is not None
    for variant in VARIANTS.values():
        for seed in (0, 1):
            overrides = [*base, *variant, f"seed={seed}"]
            config = to_config(compose_config(overrides))
            run_experiment(config, sweep_dir / "job", overrides, parent_run_id=parent.run_id)
    callback.on_multirun_end(hydra_cfg)

    client = MlflowClient(tracking_uri)
    children = client.search_runs(
        [parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == [
        "multiclass sparse_cce seed=0",
        "multiclass sparse_cce seed=1",
        "reference bce seed=0",
        "reference bce seed=1",
    ]
    # The means on the parent, against the children's own final values.
    metrics = client.get_run(parent.run_id).data.metrics
    for variant in VARIANTS:
        mine = [c for c in children if c.data.tags["xent.variant"] == variant]
        assert len(mine) == 2
        for name in ("val_acc", "val_loss"):
            expected = statistics.mean(c.data.metrics[name.replace("_", "/")] for c in mine)
            assert metrics[f"variants/{variant}/final_{name}_mean"] == expected
    assert metrics["variants/all/runs_finished"] == 4.0
    assert metrics["variants/all/runs_failed"] == 0.0
    note = client.get_run(parent.run_id).data.tags["mlflow.note.content"]
    assert note.startswith("**Binary vs categorical cross-entropy**: 4 child runs.")
    assert "#### Verdicts" in note and "| C8 | overall | INCONCLUSIVE |" in note
    assert "| data=multiclass loss=sparse_cce | 2/2 | 375 |" in note


def test_progress_lines_count_jobs_and_estimate_the_time_left() -> None:
    assert (
        progress.progress_line(37, 80, "sat_mse seed=3", "val loss 0.5170", 1.14, 37.0)
        == "[37/80] sat_mse seed=3  val loss 0.5170  1.1 s  ETA 43 s"
    )
    assert progress.progress_line(80, 80, "a seed=0", "val loss 0.1000", 1.0, 205.0) == (
        "[80/80] a seed=0  val loss 0.1000  1.0 s  all done in 3 min 25 s"
    )
    assert progress.progress_line(3, None, "a seed=0", "x", 2.0, 9.0) == "[3] a seed=0  x  2.0 s"
    assert progress.result_text(float("nan")) == "FAILED (see the job's log)"
    assert (
        progress.result_text(None, "OSError: disk full\ntraceback") == "FAILED: OSError: disk full"
    )
    assert progress.format_duration(3725) == "1 h 02 min"


def test_the_eta_of_a_replica_sweep_counts_the_jobs_trained_not_only_those_recorded(
    tmp_path: Path,
) -> None:
    # 160 jobs in batches of 20: 10 s in, the first batch has trained and its first job is
    # recorded. Counting 1 job done in 10 s the ETA would be 26 min 30 s; 20 jobs' training
    # in 10 s leaves 140 jobs, 70 s.
    assert progress.progress_line(1, 160, "a seed=0", "x", 0.1, 10.0, trained=20) == (
        "[1/160] a seed=0  x  0.1 s  ETA 1 min 10 s"
    )
    assert progress.progress_line(1, 160, "a seed=0", "x", 0.1, 10.0) == (
        "[1/160] a seed=0  x  0.1 s  ETA 26 min 30 s"
    )
    # Through the shared count file, as the launcher's workers report it.
    out = io.StringIO()
    state = tmp_path / "progress.json"
    counter = progress.SweepProgress(
        160, started=time.time() - 10.0, state_file=state, console=Console(file=out, width=200)
    )
    counter.reset()
    progress.jobs_trained(state, 20)
    line = counter.job_done("a seed=0", "val loss 0.5000", 0.1)
    assert line.startswith("[1/160] a seed=0  val loss 0.5000  0.1 s  ETA 1 min 1")
    assert json.loads(state.read_text()) == {"done": 1, "left_out": 0, "trained": 20}
    # A count file that is not one is left alone, and the line still comes.
    state.write_text("[1, 2]")
    progress.jobs_trained(state, 20)
    assert state.read_text() == "[1, 2]"
    assert "] b seed=0  x  0.1 s" in counter.job_done("b seed=0", "x", 0.1)


def test_jobs_in_several_processes_share_one_count(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    state = tmp_path / "progress.json"
    # Two copies, as two worker processes each get one: the count is the file's.
    first = progress.SweepProgress(3, started=1.0, state_file=state, console=console)
    first.reset()
    second = progress.SweepProgress(3, started=1.0, state_file=state, console=console)
    first.job_done("a seed=0", "val loss 0.5000", 1.0)
    second.job_done("a seed=1", "val loss 0.4000", 1.0)
    first.job_done("b seed=0", "FAILED: OSError: disk full", 1.0)
    lines = out.getvalue().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[1/3", "[2/3", "[3/3"]
    assert lines[2].startswith("[3/3] b seed=0  FAILED: OSError: disk full  1.0 s  all done in")


def test_the_callback_counts_the_sweeps_jobs(tmp_path: Path) -> None:
    cfg = compose_config_with_hydra(["+experiment=binary_vs_categorical"], tmp_path)
    # 2 data sets x 3 losses x 10 seeds in the experiment's sweep params; the launcher leaves
    # out the 10 jobs of bce on 5-class data and takes them off the count (progress.leave_out)
    assert count_sweep_jobs(cfg) == 60
    # The sweeper is known by its class (Hydra's basic sweeper or a subclass), not its name.
    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    for target, count in ((basic, 60), ("elsewhere.NotBasicSweeper", None)):
        cfg.hydra.sweeper._target_ = target
        assert count_sweep_jobs(cfg) == count, target
    cfg.hydra.sweeper._target_ = "hydra_plugins.xent_tf_launcher.replica_launcher.ReplicaLauncher"
    assert count_sweep_jobs(cfg) is None


def test_a_quiet_console_keeps_info_lines_for_the_log_file_only(tmp_path: Path) -> None:
    terminal = io.StringIO()
    root = logging.getLogger()
    console, log_file = logging.StreamHandler(terminal), logging.FileHandler(tmp_path / "job.log")
    root.addHandler(console)
    root.addHandler(log_file)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        progress.quiet_console()
        logging.getLogger("xent_tf.train.pipeline").info("epoch 1/2 ...")
        logging.getLogger("xent_tf.run").error("job failed")
        progress.restore_console()
        logging.getLogger("xent_tf.launch.callback").info("the report")
    finally:
        root.removeHandler(console)
        root.removeHandler(log_file)
        log_file.close()
        root.setLevel(level)
    assert terminal.getvalue().splitlines() == ["job failed", "the report"]
    assert (tmp_path / "job.log").read_text().splitlines() == [
        "epoch 1/2 ...",
        "job failed",
        "the report",
    ]
