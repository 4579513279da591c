"""The ``replicas`` launcher: a sweep's jobs that can share a graph train as one replica batch.

Hydra finds launchers only in the ``hydra_plugins`` package, and loads this module without
registering it in ``sys.modules`` (so no ``from __future__ import annotations`` here: dataclasses
need their module). The work is in
``xent_tf.launch.replica_sweep``. Select it with ``hydra/launcher=replicas`` (the default of
``configs/config.yaml`` and of every study).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


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
    # many replicas fit. 0 = what the machine has available; on a GPU, give its memory here.
    memory_mb: int = 0


ConfigStore.instance().store(
    group="hydra/launcher", name="replicas", node=ReplicaLauncherConf, provider="xent_tf"
)


class ReplicaLauncher(Launcher):
    """Groups a sweep's jobs into replica batches (``xent_tf.launch.replica_sweep``)."""

    def __init__(self, n_jobs: int = 2, max_replicas: int = 64, memory_mb: int = 0) -> None:
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
        from xent_tf.launch.replica_sweep import launch

        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
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
