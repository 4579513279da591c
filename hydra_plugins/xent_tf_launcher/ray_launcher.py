"""``hydra/launcher=ray`` as Hydra's Ray launcher, but a killed job fails that job only.

Hydra's plugin ``ray.get``s every job's task at once, so one task whose worker was killed
(SIGKILL, the OOM killer) raises there and aborts the sweep. This launcher takes the same
settings (``configs/hydra/launcher/ray.yaml`` selects it in place of the plugin's) and runs
each job through ``xent_tf.launch.ray_sweep``.

Without the scale extra (Ray and Hydra's Ray launcher are not installed) the module still
imports, so Hydra's scan of every plugin does not warn on each run of a user who never asked
for Ray; selecting the launcher then says what to install.
"""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _RayLauncher

    _MISSING = ""
except ImportError as error:  # the scale extra is not installed
    from hydra.plugins.launcher import Launcher as _RayLauncher  # type: ignore[assignment,unused-ignore]

    _MISSING = str(error)


class ResilientRayLauncher(_RayLauncher):
    """Hydra's Ray launcher whose sweep survives a job's killed process (one failed job)."""

    def __init__(self, **params: Any) -> None:
        if _MISSING:
            raise ImportError(
                f"hydra/launcher=ray needs Ray and Hydra's Ray launcher ({_MISSING}): "
                "make install-scale"
            )
        super().__init__(**params)

    # Defined here too so that the class is concrete without the scale extra (Hydra registers
    # only concrete launchers, and then names what is missing when this one is selected).
    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from xent_tf.launch.ray_sweep import launch

        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        return launch(
            self.hydra_context,
            self.task_function,
            self.config,
            self.ray_cfg,
            job_overrides,
            initial_job_idx,
        )
