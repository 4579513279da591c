"""A replica batch's job, run by ``run_batch_job``, is the job Hydra's ``run_job`` runs."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, run_job
from omegaconf import DictConfig, OmegaConf, open_dict

from xent_tf.config import Config
from xent_tf.launch.replica_job import run_batch_job

OVERRIDES = ["+experiment=lr_sweep", "optimizer.learning_rate=0.1", "seed=3"]


class _Seen:
    """A callback and a task that note what they were given."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.events.append(f"start {config.seed} {HydraConfig.get().job.num}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.events.append(f"end {config.seed} {job_return.status.name}")

    def task(self, fail: bool) -> Callable[[DictConfig], float]:
        def run(task_config: DictConfig) -> float:
            hydra = HydraConfig.get()
            logging.getLogger("xent_tf.test").info("job %s records", hydra.job.num)
            # What a task reads of its job: the ${hydra:...} resolver, its output dir, its config.
            resolved = OmegaConf.create(
                {"n": "${hydra:job.num}", "o": "${hydra:job.override_dirname}"}
            )
            self.events.append(
                f"task {OmegaConf.get_type(task_config)} {sorted(task_config)[:3]} "
                f"{'hydra' in task_config} {resolved.n} "
                f"{resolved.o} {Path(hydra.runtime.output_dir).name}"
            )
            if fail:
                raise ValueError("the task failed")
            return 0.25

        return run


@pytest.fixture
def job_configs(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """Makes the same sweep job's composed config (job 7, or another number, of a multirun
    under tmp_path)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from tests.conftest import CONFIG_DIR

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        master = compose(
            config_name="config",
            overrides=[*OVERRIDES, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            return_hydra_config=True,
        )
        with open_dict(master):
            master.hydra.mode = RunMode.MULTIRUN
        loader = GlobalHydra.instance().config_loader()

        def make(number: int = 7) -> DictConfig:
            config = loader.load_sweep_config(master, list(OVERRIDES))
            with open_dict(config):
                config.hydra.job.id = f"{config.hydra.job.name}_{number}"
                config.hydra.job.num = number
            return config

        try:
            yield make
        finally:
            HydraConfig.instance().cfg = None
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)


def _run_both(
    make: Callable[..., DictConfig], fail: bool, number: int = 7
) -> tuple[tuple[JobReturn, dict[str, bytes], list[str]], ...]:
    """The job run by Hydra's run_job, then (its files moved away) by run_batch_job."""
    from hydra._internal.callbacks import Callbacks
    from hydra.types import HydraContext

    outcomes = []
    for runner in ("hydra", "ours"):
        seen = _Seen()
        callbacks = Callbacks()
        callbacks.callbacks = [seen]
        context = HydraContext(config_loader=None, callbacks=callbacks)  # type: ignore[arg-type]
        config = make(number)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        before = HydraConfig.instance().cfg
        if runner == "hydra":
            ret = run_job(
                hydra_context=context,
                task_function=seen.task(fail),
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        else:
            ret = run_batch_job(context, seen.task(fail), config)
        assert HydraConfig.instance().cfg is before  # put back as it was
        assert config.hydra.job.num == number  # the job's own config keeps its hydra node
        for handler in logging.getLogger().handlers:
            handler.flush()
        files = {
            str(path.relative_to(sweep_dir)): path.read_bytes()
            for path in sorted(sweep_dir.rglob("*"))
            if path.is_file()
        }
        shutil.rmtree(sweep_dir)
        outcomes.append((ret, files, seen.events))
    return tuple(outcomes)


def test_a_batch_job_writes_what_hydra_writes_and_returns_what_it_returns(
    job_configs: Callable[..., DictConfig],
) -> None:
    (theirs, their_files, their_events), (ours, our_files, our_events) = _run_both(
        job_configs, fail=False
    )
    # The same files, byte for byte: .hydra/config.yaml, hydra.yaml, overrides.yaml, the log.
    assert sorted(our_files) == ["7/.hydra/config.yaml", "7/.hydra/hydra.yaml",
                                 "7/.hydra/overrides.yaml", "7/app.log"]  # fmt: skip
    for name in ("7/.hydra/config.yaml", "7/.hydra/hydra.yaml", "7/.hydra/overrides.yaml"):
        assert our_files[name] == their_files[name], name
    assert b"job 7 records" in our_files["7/app.log"]
    assert our_files["7/app.log"].count(b"\n") == their_files["7/app.log"].count(b"\n") == 1
    assert b"seed: 3" in our_files["7/.hydra/config.yaml"]
    assert b"hydra:\n  run:\n" in our_files["7/.hydra/hydra.yaml"]
    # The callbacks and the task saw the same job: its number through HydraConfig and the
    # ${hydra:...} resolver, its output directory, a config without its hydra node.
    assert our_events == their_events
    assert our_events[1] == (
        "task <class 'xent_tf.config.Config'> ['claims', 'data', 'experiment_name'] False 7 "
        "+experiment=lr_sweep,optimizer.learning_rate=0.1,seed=3 7"
    )
    assert our_events[2] == "end 3 COMPLETED"
    assert ours.status == theirs.status == JobStatus.COMPLETED
    assert ours.return_value == theirs.return_value == 0.25
    assert ours.overrides == theirs.overrides == OVERRIDES
    assert ours.working_dir == theirs.working_dir
    assert ours.task_name == theirs.task_name == "app"
    assert OmegaConf.to_container(ours.cfg) == OmegaConf.to_container(theirs.cfg)
    assert OmegaConf.get_type(ours.cfg) is OmegaConf.get_type(theirs.cfg) is Config
    assert ours.hydra_cfg is None and theirs.hydra_cfg is not None
    # The next job of the sweep: its files reuse the YAML of the entries it shares with job 7.
    (_, their_files, _), (_, our_files, _) = _run_both(job_configs, fail=False, number=8)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert our_files[f"8/.hydra/{name}"] == their_files[f"8/.hydra/{name}"], name
    assert b"    num: 8\n" in our_files["8/.hydra/hydra.yaml"]


def test_a_failing_batch_job_is_failed_as_hydra_fails_it(
    job_configs: Callable[..., DictConfig],
) -> None:
    (theirs, _, their_events), (ours, _, our_events) = _run_both(job_configs, fail=True)
    assert ours.status == theirs.status == JobStatus.FAILED
    assert isinstance(ours._return_value, ValueError)
    assert str(ours._return_value) == "the task failed"
    assert our_events == their_events and our_events[-1] == "end 3 FAILED"


def test_the_hydra_files_yaml_is_omegaconfs_to_the_byte_for_awkward_values() -> None:
    """Entries are rendered in place and reused across jobs: long lines that PyYAML wraps by
    column, strings that read as booleans or numbers, NaN, empty and nested containers."""
    from xent_tf.launch.replica_job import _mapping_yaml

    words = " ".join(f"word{i}" for i in range(40))  # wrapped at PyYAML's 80 columns
    for job in range(3):  # the second and third jobs reuse the first one's shared entries
        config = OmegaConf.create(
            {
                "seed": job,
                "note": f"job {job}: {words}",
                "flags": {"a": "yes", "b": "1.5", "c": "null", "d": None, "e": float("nan")},
                "hydra": {
                    "help": {"template": f"{words}\n\n{words}", "app_name": "x"},
                    "job": {"id": f"run_{job}", "num": job, "override_dirname": words},
                    "empty": {},
                    "runs": [[1, 2], {"k": words}, []],
                    "deep": {"deeper": {"deepest": {"text": words, "n": job}}},
                },
            }
        )
        task = OmegaConf.to_container(config, enum_to_str=True)
        assert isinstance(task, dict)
        hydra = task.pop("hydra")
        assert _mapping_yaml(task, ()) == OmegaConf.to_yaml(OmegaConf.masked_copy(
            config, [str(k) for k in config if k != "hydra"]))  # fmt: skip
        assert "hydra:\n" + _mapping_yaml(hydra, ("hydra",)) == OmegaConf.to_yaml(
            OmegaConf.masked_copy(config, "hydra")
        )
