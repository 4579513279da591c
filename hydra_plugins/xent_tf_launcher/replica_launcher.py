"""The ``replicas`` launcher: a sweep's jobs that can share a graph train as one replica batch.

Hydra finds launchers only in the ``hydra_plugins`` package, and loads this module without
registering it in ``sys.modules`` (so no ``from __future__ import annotations`` here: dataclasses
need their module). The work is in
``xent_tf.launch.replica_sweep``. Select it with ``hydra/launcher=replicas`` (the default of
``configs/config.yaml`` and of every study). ``hydra.launcher.backend=ray`` runs the same units
as Ray tasks on a Ray cluster (``xent_tf.launch.ray_units``, docs/RAY.md).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035 (see the module docstring)

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

BACKENDS = ("local", "ray")


@dataclass
class RaySettingsConf:
    """How the ``ray`` backend reaches Ray (the keys of ``hydra/launcher=ray``)."""

    # ray.init's arguments. address: null starts a local Ray instance; "auto" or host:port joins
    # a running cluster (then the options only a new instance takes, num_cpus,
    # object_store_memory..., are dropped with a warning: Ray refuses them there).
    init: Dict[str, Any] = field(default_factory=lambda: {"address": None})  # noqa: UP006
    # Each unit's task options. max_retries 0: a unit lost with its node or Ray worker leaves
    # FAILED runs that name the node (+resume=matching trains them again); with retries on, a
    # retried unit skips the jobs that FINISHED meanwhile (never two FINISHED runs).
    remote: Dict[str, Any] = field(default_factory=lambda: {"max_retries": 0})  # noqa: UP006


@dataclass
class ReplicaLauncherConf:
    """Settings of the replica launcher."""

    _target_: str = "hydra_plugins.xent_tf_launcher.replica_launcher.ReplicaLauncher"
    # Worker processes when a sweep has several batches (or jobs that run alone); 1 = train
    # everything in the launching process.
    n_jobs: int = 2
    # Most replicas in one batch: a larger group of jobs is cut into several batches.
    max_replicas: int = 64
    # Memory a batch may use, MiB: a batch that needs more fails before training, saying how
    # many replicas fit. 0 = on a GPU, its memory (times gpus_per_unit on Ray); else what the
    # machine (on Ray: the unit's node) has available.
    memory_mb: int = 0
    # Where units run: "local" (this machine's worker processes, n_jobs of them) or "ray" (each
    # unit one Ray task on a Ray cluster, which decides how many run at once).
    backend: str = "local"
    # ray backend: CPUs each unit asks for (a replica batch trains on one thread).
    cpus_per_unit: float = 1.0
    # ray backend: GPUs a unit asks for when trainer.device wants one and the cluster has one
    # (a share, e.g. 0.25, puts four units on one card).
    gpus_per_unit: float = 1.0
    ray: Optional[RaySettingsConf] = field(default_factory=RaySettingsConf)  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/launcher", name="replicas", node=ReplicaLauncherConf, provider="xent_tf"
)


class ReplicaLauncher(Launcher):
    """Groups a sweep's jobs into replica batches (``xent_tf.launch.replica_sweep``)."""

    def __init__(
        self,
        n_jobs: int = 2,
        max_replicas: int = 64,
        memory_mb: int = 0,
        backend: str = "local",
        cpus_per_unit: float = 1.0,
        gpus_per_unit: float = 1.0,
        ray: Optional[DictConfig] = None,  # noqa: UP045
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"hydra.launcher.backend={backend!r} is not one of {list(BACKENDS)}")
        if not cpus_per_unit > 0:
            raise ValueError(f"hydra.launcher.cpus_per_unit={cpus_per_unit} must be > 0")
        self.backend = backend
        self.cpus_per_unit = float(cpus_per_unit)
        self.gpus_per_unit = float(gpus_per_unit)
        self.ray = ray if ray is not None else OmegaConf.structured(RaySettingsConf)
        if n_jobs < 1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs} must be >= 1")
        if max_replicas < 1:
            raise ValueError(f"hydra.launcher.max_replicas={max_replicas} must be >= 1")
        self.n_jobs = n_jobs
        self.max_replicas = max_replicas
        if memory_mb < 0:
            raise ValueError(f"hydra.launcher.memory_mb={memory_mb} must be >= 0 (0: available)")
        self.memory_mb = memory_mb
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        from xent_tf.launch.compose import builds_on_the_schema

        if not builds_on_the_schema(self.config):
            # Another app than xent-tf's (any Hydra app can select this launcher): its jobs run
            # one by one in this process, as under Hydra's basic launcher.
            from xent_tf.launch.replica_sweep import launch_one_by_one

            return launch_one_by_one(
                self.hydra_context, self.task_function, self.config, job_overrides, initial_job_idx
            )
        if self.backend == "ray":
            from xent_tf.launch.ray_units import launch as launch_on_ray

            return launch_on_ray(
                self.hydra_context,
                self.task_function,
                self.config,
                job_overrides,
                initial_job_idx,
                self.max_replicas,
                self.memory_mb,
                self.cpus_per_unit,
                self.gpus_per_unit,
                self.ray,
            )
        from xent_tf.launch.replica_sweep import launch

        return launch(
            self.hydra_context,
            self.task_function,
            self.config,
            job_overrides,
            initial_job_idx,
            self.n_jobs,
            self.max_replicas,
            self.memory_mb,
        )
