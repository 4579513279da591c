"""A study swept by the replica launcher records what the per-job launcher records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn
from mlflow import MlflowClient
from mlflow.entities import Run

from tests.test_entrypoint import run_cli

STUDY = ["-m", "+experiment=binary_vs_categorical", "+debug=tiny", "seed=0,1"]
METRICS = ("train/loss", "val/loss", "val/acc", "train/acc", "grad_norm/output", "lr")


def _children(uri: str, experiment: str) -> tuple[Run, dict[tuple[str, str], Run]]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if "xent.sweep_dir" in r.data.tags]
    assert len(parents) == 1
    children = {
        (r.data.params["loss.name"] + "/" + r.data.params["data.name"], r.data.params["seed"]): r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    return parents[0], children


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """The same study with the replica launcher and with the basic (per-job) launcher."""
    replicated = tmp_path_factory.mktemp("replicas")
    per_job = tmp_path_factory.mktemp("per_job")
    first = run_cli(*STUDY, cwd=replicated)
    assert first.returncode == 0, first.stderr
    second = run_cli(*STUDY, "hydra/launcher=basic", cwd=per_job)
    assert second.returncode == 0, second.stderr
    return (
        f"sqlite:///{replicated / 'mlflow.db'}",
        f"sqlite:///{per_job / 'mlflow.db'}",
        first.stdout + first.stderr,
    )


def test_every_job_gets_a_complete_child_run_tagged_with_its_batch(
    two_sweeps: tuple[str, str, str],
) -> None:
    replicated_uri, per_job_uri, output = two_sweeps
    assert (
        "12 jobs, 2 left out, in 5 units (2 replicas, 2 replicas, 2 replicas, 2 replicas, "
        "2 replicas)" in output
    )
    # The two bce jobs on the 5-class data are left out with one line.
    assert output.count(" left out: ") == 1
    assert (
        "job data=multiclass loss=bce seed=0 +experiment=binary_vs_categorical +debug=tiny and 1 "
        "more like it left out: loss.name='bce' needs binary data, but data 'multiclass' has 5 "
        "classes" in output
    )
    _, replicated = _children(replicated_uri, "binary_vs_categorical")
    _, per_job = _children(per_job_uri, "binary_vs_categorical")
    assert replicated.keys() == per_job.keys() and len(replicated) == 10
    client = MlflowClient(replicated_uri)
    for key, run in replicated.items():
        other = per_job[key]
        assert run.info.status == other.info.status == "FINISHED"
        assert run.info.run_name == other.info.run_name
        assert run.data.params == other.data.params
        assert run.data.tags["xent.replicas"] == "2"
        assert run.data.tags["xent.replica_batch"].split("#")[1] in {"1", "2", "3", "4", "5"}
        assert "xent.replica_batch" not in other.data.tags
        for name in (*METRICS, "val/initial_loss", "test/loss", "test/acc", "train_seconds"):
            assert name in run.data.metrics, name
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        # Studies keep each model as a plain artifact and leave the per-run PNG to the UI.
        assert {"config.yaml", "logs", "model"} <= artifacts
        assert "plots" not in artifacts


def test_replicated_numbers_match_the_per_job_path(two_sweeps: tuple[str, str, str]) -> None:
    replicated_uri, per_job_uri, _ = two_sweeps
    _, replicated = _children(replicated_uri, "binary_vs_categorical")
    _, per_job = _children(per_job_uri, "binary_vs_categorical")
    a, b = MlflowClient(replicated_uri), MlflowClient(per_job_uri)
    for key, run in replicated.items():
        other = per_job[key]
        for name in METRICS:
            got = [m.value for m in a.get_metric_history(run.info.run_id, name)]
            want = [m.value for m in b.get_metric_history(other.info.run_id, name)]
            assert len(got) == len(want) == 2, name
            # Two epochs: float32 rounding only (the 20-epoch bounds are in test_replicas.py).
            assert got == pytest.approx(want, rel=1e-4, abs=1e-5), (key, name)
        for name in ("test/loss", "test/acc"):
            assert run.data.metrics[name] == pytest.approx(other.data.metrics[name], abs=1e-5)


def test_the_report_gives_the_same_verdicts(two_sweeps: tuple[str, str, str]) -> None:
    replicated_uri, per_job_uri, _ = two_sweeps
    parent_a, _ = _children(replicated_uri, "binary_vs_categorical")
    parent_b, _ = _children(per_job_uri, "binary_vs_categorical")
    verdicts_a = {k: v for k, v in parent_a.data.tags.items() if k.startswith("verdict.")}
    verdicts_b = {k: v for k, v in parent_b.data.tags.items() if k.startswith("verdict.")}
    assert verdicts_a and verdicts_a == verdicts_b


def test_an_invalid_job_is_named_and_the_rest_of_the_sweep_runs(tmp_path: Path) -> None:
    result = run_cli(
        "-m",
        "+debug=tiny",
        "optimizer=sgd",
        "optimizer.learning_rate=0.1,-1",
        "seed=0,1",
        cwd=tmp_path,
    )
    # Exit status 1 since issue 26: a job that did not run is not reported COMPLETED (it was
    # 0, the invalid jobs returning NaN as if they had run).
    assert result.returncode == 1, result.stderr
    assert (
        "2 of the sweep's 4 jobs are invalid and were not run (the other jobs ran and are "
        "recorded):\n"
        "  +debug=tiny optimizer=sgd optimizer.learning_rate=-1 seed=0: "
        "optimizer.learning_rate=-1.0 must be > 0\n"
        "  +debug=tiny optimizer=sgd optimizer.learning_rate=-1 seed=1: "
        "optimizer.learning_rate=-1.0 must be > 0\n"
    ) in result.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, children = _children(uri, "reference")
    assert sorted(children) == [("bce/reference", "0"), ("bce/reference", "1")]
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert all(math.isfinite(run.data.metrics["val/loss"]) for run in children.values())
    # The sweep ended before it failed: its parent FINISHED with its report.
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html"} <= artifacts, artifacts


def test_a_per_job_launchers_invalid_job_fails_in_its_task(tmp_path: Path) -> None:
    """Under the basic, joblib and Ray launchers the job's task decides: FAILED, as the
    replica launcher's decision (the sweeper then names it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from tests.test_studies import compose_config_with_hydra
    from xent_tf.launch.jobs import InvalidJobError
    from xent_tf.tasks import task

    overrides = ["+debug=tiny", "optimizer=sgd", "optimizer.learning_rate=-1", "seed=0"]
    cfg = compose_config_with_hydra([*overrides, "tracking=off"], tmp_path)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(InvalidJobError) as raised:
            task(cfg)
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]
    assert raised.value.overrides == (*overrides, "tracking=off")
    assert raised.value.reason == "optimizer.learning_rate=-1.0 must be > 0"


class _Launcher:
    """Returns what it is told for each job; counts its batches."""

    def __init__(self, returns: dict[str, JobReturn]) -> None:
        self.returns = returns
        self.batches: list[list[str]] = []

    def launch(self, batch: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append([" ".join(job) for job in batch])
        return [self.returns[" ".join(job)] for job in batch]


def _sweep(tmp_path: Path, returns: dict[str, JobReturn], max_batch_size: int) -> tuple:  # type: ignore[type-arg]
    """Runs the replicas sweeper over ``a=1,2,3`` with a stand-in launcher and callbacks."""
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext
    from omegaconf import OmegaConf

    from hydra_plugins.xent_tf_launcher.replica_sweeper import ReplicaSweeper

    events: list[str] = []

    class Ends:
        def on_multirun_end(self, config: object, config_name: str) -> None:
            events.append(f"on_multirun_end {config_name}")

    callbacks = Callbacks()
    callbacks.callbacks = [Ends()]
    sweeper = ReplicaSweeper(max_batch_size=max_batch_size, params=None)
    launcher = _Launcher(returns)
    sweeper.launcher = launcher  # type: ignore[assignment]
    sweeper.config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(tmp_path)}, "job": {"config_name": "config"}}}
    )
    sweeper.hydra_context = HydraContext(config_loader=None, callbacks=callbacks)  # type: ignore[arg-type]
    sweeper.validate_batch_is_legal = lambda batch: None  # type: ignore[method-assign]
    return sweeper, launcher, events


def test_the_sweeper_runs_every_batch_ends_the_sweep_then_names_its_invalid_jobs(
    tmp_path: Path,
) -> None:
    from hydra.core.utils import JobStatus

    from xent_tf.launch.jobs import (
        InvalidJobError,
        InvalidJobsError,
        JobDecision,
        JobOutcome,
        decided_job,
    )

    ran = JobReturn(overrides=["a=1"], status=JobStatus.COMPLETED, _return_value=0.5)
    invalid = decided_job(["a=2"], JobDecision(JobOutcome.INVALID, error=ValueError("a=2 < 3")))
    from_task = JobReturn(
        overrides=["a=3"],
        status=JobStatus.FAILED,
        _return_value=InvalidJobError(["a=3"], "a=3 is odd"),
    )
    jobs = {"a=1": ran, "a=2": invalid, "a=3": from_task}
    sweeper, launcher, events = _sweep(tmp_path, jobs, max_batch_size=1)
    with pytest.raises(InvalidJobsError) as raised:
        sweeper.sweep(["a=1,2,3"])
    # Every batch ran, the sweep's callbacks ended it once, then it failed naming both.
    assert launcher.batches == [["a=1"], ["a=2"], ["a=3"]]
    assert events == ["on_multirun_end config"]
    assert str(raised.value).endswith("\n  a=2: a=2 < 3\n  a=3: a=3 is odd")
    # Without invalid jobs Hydra ends the sweep (the sweeper returns every batch's returns).
    sweeper, launcher, events = _sweep(tmp_path, {"a=1": ran}, max_batch_size=1)
    assert sweeper.sweep(["a=1"]) == [[ran]] and events == []
    # Another failed job stops the sweep after its batch, as under Hydra's basic sweeper.
    crashed = JobReturn(overrides=["a=2"], status=JobStatus.FAILED, _return_value=OSError("x"))
    sweeper, launcher, events = _sweep(tmp_path, {**jobs, "a=2": crashed}, max_batch_size=1)
    with pytest.raises(OSError, match="x"):
        sweeper.sweep(["a=1,2,3"])
    assert launcher.batches == [["a=1"], ["a=2"]] and events == []


def test_a_copied_composition_is_the_config_hydra_composes() -> None:
    """SweepComposer composes once per set of group choices and keys set, and copies the
    composition for other values of those keys (seeds, rates): the config Hydra composes."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.types import HydraContext
    from omegaconf import OmegaConf, open_dict

    from tests.conftest import CONFIG_DIR
    from xent_tf.launch.compose import SweepComposer

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        master = compose(
            config_name="config", overrides=["+experiment=lr_sweep"], return_hydra_config=True
        )
        loader = GlobalHydra.instance().config_loader()
        composer = SweepComposer(HydraContext(config_loader=loader, callbacks=Callbacks()), master)
        calls = []
        original = loader.load_sweep_config

        def counting(master_config, sweep_overrides):  # type: ignore[no-untyped-def]
            calls.append(list(sweep_overrides))
            return original(master_config, sweep_overrides)

        loader.load_sweep_config = counting  # type: ignore[method-assign]
        jobs = [
            ["optimizer.learning_rate=0.1", "seed=0"],
            ["optimizer.learning_rate=0.1", "seed=3"],
            ["optimizer.learning_rate=3e-4", "seed=7"],  # another rate: a copy too
            ["optimizer.learning_rate=2", "seed=1", "model.output_init=saturated"],  # int rate
            ["optimizer.learning_rate=0.5", "seed=1", "model.output_init=standard"],
            ["schedule=cosine", "optimizer.learning_rate=0.1", "seed=0"],  # a group: composed
            ["schedule=cosine", "optimizer.learning_rate=0.01", "seed=4"],
            ["seed=5"],  # sets fewer keys: composed (the rate stays the experiment's)
        ]
        for number, overrides in enumerate(jobs):
            ours = composer.compose(number, overrides)
            theirs = original(master, overrides)
            with open_dict(theirs):
                theirs.hydra.job.id = f"{theirs.hydra.job.name}_{number}"
                theirs.hydra.job.num = number
            assert OmegaConf.to_container(ours) == OmegaConf.to_container(theirs), overrides
            assert OmegaConf.get_type(ours) is OmegaConf.get_type(theirs)
            assert ours.hydra.job.override_dirname == ",".join(sorted(overrides))
        assert isinstance(composer.compose(9, jobs[3]).optimizer.learning_rate, float)
        # Composed by Hydra: the first of each set of choices and keys set (1, 4, 6, 8).
        assert calls == [jobs[0], jobs[3], jobs[5], jobs[7]]
        # A value its field does not take fails with Hydra's own error, as composing it would.
        with pytest.raises(
            ConfigCompositionException, match=r"override optimizer\.learning_rate=fast"
        ):
            composer.validate(["optimizer.learning_rate=fast", "seed=2"])


def test_a_batch_that_does_not_fit_fails_its_runs_saying_how_many_fit(tmp_path: Path) -> None:
    # A tiny replica needs 0.074 MiB (210 training rows); with 1 MiB for a batch, half kept
    # free, 6 fit: the 10-seed batch is refused before training, each job's run FAILED.
    result = run_cli(
        "-m", "+debug=tiny", "seed=range(10)", "hydra.launcher.memory_mb=1", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "failed before training: MemoryError: a replica batch of 10 runs needs about" in out
    _, children = _children(f"sqlite:///{tmp_path / 'mlflow.db'}", "reference")
    assert len(children) == 10
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children.values():
        assert run.info.status == "FAILED"
        assert "at most 6 replicas fit; set hydra.launcher.max_replicas=6" in run.data.tags["error"]
        assert "logs" in {a.path for a in client.list_artifacts(run.info.run_id)}
