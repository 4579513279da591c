"""The Ray backend's decisions, without Ray or a GPU: ray.init's arguments, what each unit asks
for, how many run at once, a batch's memory on a GPU, how a lost unit is named, which process
a unit runs in."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from hydra_plugins.xent_tf_launcher.replica_launcher import ReplicaLauncher
from xent_tf.config import Config
from xent_tf.launch import ray_units
from xent_tf.launch.callback import ParentRun
from xent_tf.launch.jobs import DecidedJob, JobOutcome
from xent_tf.launch.ray_placement import (
    LOCAL_OBJECT_STORE_BYTES,
    UnitResources,
    concurrent_units,
    init_arguments,
    joins_existing_cluster,
    unit_resources,
)
from xent_tf.launch.replica_sweep import WorkUnit, spread_units
from xent_tf.track.resume import FinishedJob, training_config_hash
from xent_tf.train.placement import (
    GPUS_TAG,
    NODE_TAG,
    current_placement,
    memory_budget,
    parse_gpu_memory,
    placement_tags,
    record_placement,
)

GIB = 2**30


def test_a_new_local_instance_gets_the_small_object_store_unless_one_is_set() -> None:
    assert init_arguments({"address": None, "num_cpus": 2}, {}) == (
        {"address": None, "num_cpus": 2, "object_store_memory": LOCAL_OBJECT_STORE_BYTES},
        [],
    )
    assert init_arguments({"object_store_memory": 10}, {})[0] == {"object_store_memory": 10}
    assert init_arguments({"address": "local"}, {"RAY_ADDRESS": "10.0.0.1:6379"})[0] == {
        "address": "local",
        "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
    }


def test_joining_a_running_cluster_drops_every_option_ray_refuses_there() -> None:
    # The bug of issue 31: object_store_memory was always added, and Ray refused it.
    settings = {
        "address": "127.0.0.1:6379",
        "num_cpus": 2,
        "num_gpus": 0,
        "object_store_memory": 10,
        "resources": {"x": 1},
        "include_dashboard": False,
        "runtime_env": {"working_dir": "."},
    }
    arguments, dropped = init_arguments(settings, {})
    assert arguments == {
        "address": "127.0.0.1:6379",
        "include_dashboard": False,
        "runtime_env": {"working_dir": "."},
    }
    assert dropped == ["num_cpus", "num_gpus", "object_store_memory", "resources"]
    # RAY_ADDRESS makes ray.init join a cluster even without an address setting.
    assert init_arguments({"address": None}, {"RAY_ADDRESS": "auto"}) == ({"address": None}, [])
    assert joins_existing_cluster("auto", {}) and not joins_existing_cluster(None, {})


def test_a_unit_asks_for_a_gpu_only_when_its_device_wants_one_and_the_cluster_has_one() -> None:
    assert unit_resources("cpu", 4, 1, 1) == UnitResources(1, 0)
    assert unit_resources("cpu", 0, 2, 1) == UnitResources(2, 0)
    assert unit_resources("auto", 0, 1, 1) == UnitResources(1, 0)
    assert unit_resources("auto", 2, 1, 1) == UnitResources(1, 1)
    assert unit_resources("gpu", 2, 1, 0.25) == UnitResources(1, 0.25)
    assert unit_resources("gpu", 8, 1, 2) == UnitResources(1, 2)
    assert UnitResources(1, 0.5).options() == {"num_cpus": 1, "num_gpus": 0.5}


def test_bad_device_requests_fail_naming_the_value_and_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"trainer.device='gpu' but the Ray cluster has no GPU"):
        unit_resources("gpu", 0, 1, 1)
    with pytest.raises(ValueError, match=r"trainer.device='tpu' is not one of"):
        unit_resources("tpu", 1, 1, 1)
    with pytest.raises(ValueError, match=r"gpus_per_unit=1.5 must be a share of one GPU"):
        unit_resources("gpu", 4, 1, 1.5)
    with pytest.raises(ValueError, match=r"cpus_per_unit=0 must be > 0"):
        unit_resources("cpu", 0, 0, 1)


def test_units_at_once_follow_the_scarcer_resource() -> None:
    assert concurrent_units(3, 0, [UnitResources(1, 0)] * 5) == 3
    assert concurrent_units(16, 2, [UnitResources(1, 1)]) == 2
    assert concurrent_units(16, 2, [UnitResources(1, 0.25)]) == 8
    assert concurrent_units(16, 2, [UnitResources(4, 0.25)]) == 4
    assert concurrent_units(0.5, 0, [UnitResources(1, 0)]) == 1  # never below one
    assert concurrent_units(8, 0, []) == 1


def test_a_batch_on_a_gpu_may_use_its_share_of_the_gpus_memory() -> None:
    assert memory_budget(0, "cpu", 16 * GIB, 1, 3 * GIB) == 3 * GIB
    assert memory_budget(0, "gpu", 16 * GIB, 1, 3 * GIB) == 16 * GIB
    assert memory_budget(0, "gpu", 16 * GIB, 0.25, 3 * GIB) == 4 * GIB
    assert memory_budget(0, "gpu", 16 * GIB, 2, 3 * GIB) == 16 * GIB  # one device per batch
    assert memory_budget(0, "gpu", None, 1, 3 * GIB) == 3 * GIB  # not known: the machine's
    assert memory_budget(512, "gpu", 16 * GIB, 1, 3 * GIB) == 512 * 2**20  # the setting wins
    assert parse_gpu_memory("16384\n16384\n") == 16 * GIB
    assert parse_gpu_memory("") is None and parse_gpu_memory("[N/A]") is None


def test_runs_carry_the_placement_their_process_was_given() -> None:
    tags = placement_tags("abc123", [0, 2])
    assert tags == {NODE_TAG: "abc123", GPUS_TAG: "0,2"}
    assert placement_tags("abc123", []) == {NODE_TAG: "abc123", GPUS_TAG: ""}
    record_placement(tags)
    try:
        assert current_placement() == tags
    finally:
        record_placement({})
    assert current_placement() == {}


def _unit(first: int, size: int, replicated: bool = True) -> WorkUnit:
    jobs = tuple((first + i, (f"seed={first + i}",)) for i in range(size))
    configs = tuple(OmegaConf.create({"seed": first + i}) for i in range(size))
    return WorkUnit(jobs, configs, replicated, f"s#{first}")


def test_units_are_halved_for_idle_slots_and_keep_their_jobs_in_order() -> None:
    units = [_unit(0, 16), _unit(16, 1, replicated=False), _unit(17, 6)]
    spread = spread_units(units, 4, "sweep")
    assert [[n for n, _ in u.jobs] for u in spread] == [
        list(range(0, 8)),
        list(range(8, 16)),
        [16],
        list(range(17, 23)),
    ]
    assert [u.name for u in spread] == ["sweep#1", "sweep#2", "sweep#3", "sweep#4"]
    assert [u.replicated for u in spread] == [True, True, False, True]
    assert [int(c.seed) for c in spread[1].sweep_configs] == list(range(8, 16))
    # One slot: nothing to halve.
    assert [len(u.jobs) for u in spread_units(units, 1, "sweep")] == [16, 1, 6]


def test_a_lost_unit_names_its_node_and_whether_the_node_is_gone() -> None:
    error = RuntimeError("The node with node id abc has been marked dead\nmore")
    gone = ray_units.lost_unit(
        error, "abc", [{"NodeID": "abc", "Alive": False, "NodeManagerAddress": "127.0.0.1"}]
    )
    assert gone.description == (
        "worker died (Ray lost node abc at 127.0.0.1: RuntimeError: The node with node id abc "
        "has been marked dead)"
    )
    alive = ray_units.lost_unit(
        error, "abc", [{"NodeID": "abc", "Alive": True, "NodeManagerAddress": "10.0.0.2"}]
    )
    assert alive.description.startswith("worker died (Ray lost the worker on node abc (10.0.0.2)")
    # Ray says the node died before its GCS lists it as dead: the node is named as lost.
    said = ray_units.lost_unit(
        error,
        "abc",
        [{"NodeID": "abc", "Alive": True, "NodeManagerAddress": "10.0.0.2"}],
        node_died=True,
    )
    assert said.description.startswith("worker died (Ray lost node abc at 10.0.0.2: ")
    unknown = ray_units.lost_unit(RuntimeError(""), None, [])
    assert unknown.description == "worker died (Ray lost the unit's worker: RuntimeError)"


class _FakeWorker:
    started: ClassVar[list[_FakeWorker]] = []

    def __init__(self, initializer: object) -> None:
        self.closed = False
        _FakeWorker.started.append(self)

    def close(self) -> None:
        self.closed = True


def test_a_units_process_is_replaced_when_ray_gives_its_worker_other_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_units, "SupervisedWorker", _FakeWorker)
    monkeypatch.setattr(ray_units, "_supervised", None)
    monkeypatch.setattr(ray_units, "_supervised_devices", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    _FakeWorker.started = []
    first = ray_units.supervised_worker("0")
    assert ray_units.supervised_worker("0") is first  # same GPUs: TensorFlow imported once
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # what its process is started with
    second = ray_units.supervised_worker("1")
    assert second is not first and first.closed  # type: ignore[attr-defined]
    third = ray_units.supervised_worker("")  # a unit without a GPU next: it sees none
    assert third is not second and len(_FakeWorker.started) == 3
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_the_launcher_refuses_an_unknown_backend() -> None:
    with pytest.raises(ValueError, match=r"hydra.launcher.backend='slurm' is not one of"):
        ReplicaLauncher(backend="slurm")
    assert ReplicaLauncher(backend="ray").ray.remote.max_retries == 0


def test_a_retried_unit_trains_only_the_jobs_not_finished_meanwhile(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    from xent_tf.track import recovery

    configs = tuple(make_config(f"seed={seed}") for seed in range(3))
    unit = WorkUnit(
        tuple((seed, (f"seed={seed}",)) for seed in range(3)),
        tuple(OmegaConf.create({"seed": seed}) for seed in range(3)),
        True,
        "sweep#1",
        configs=configs,
    )
    parent = ParentRun("parent", "1", "http://127.0.0.1:5001")
    asked: list[tuple[str, str, str]] = []

    def finished(uri: str, run_id: str, experiment_id: str) -> dict[str, FinishedJob]:
        asked.append((uri, run_id, experiment_id))
        return {training_config_hash(configs[1]): FinishedJob("run-1", 0.25)}

    ran: list[WorkUnit] = []

    def execute(unit: WorkUnit, *_: object) -> list[JobReturn]:
        ran.append(unit)
        return [
            JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=0.5)
            for _, o in unit.jobs
        ]

    monkeypatch.setattr(recovery, "finished_children", finished)
    monkeypatch.setattr(ray_units, "execute_unit", execute)
    tags = placement_tags("node-a", [])
    returns = ray_units._run_unit(unit, tags, None, None, None, {}, parent)  # type: ignore[arg-type]
    record_placement({})
    assert asked == [("http://127.0.0.1:5001", "parent", "1")]
    # Seed 1 FINISHED in the lost attempt: not trained again; seeds 0 and 2 train as one batch.
    [rest] = ran
    assert [n for n, _ in rest.jobs] == [0, 2] and rest.replicated
    assert rest.configs == (configs[0], configs[2])
    assert [r.return_value for r in returns] == [0.5, 0.25, 0.5]
    assert isinstance(returns[1], DecidedJob) and returns[1].outcome == JobOutcome.SKIPPED
    # Without retries nothing is asked: every job of the unit trains.
    ran.clear()
    ray_units._run_unit(unit, tags, None, None, None, {}, None)  # type: ignore[arg-type]
    record_placement({})
    assert [n for n, _ in ran[0].jobs] == [0, 1, 2] and len(asked) == 1
