"""``hydra/launcher=ray`` as Hydra's Ray launcher, but a killed job fails that job only.

Hydra's plugin ``ray.get``s every job's task at once, so one task whose worker was killed
(SIGKILL, the OOM killer) raises there and aborts the sweep. This launcher takes the same
settings (``configs/hydra/launcher/ray.yaml`` selects it in place of the plugin's) and runs
each job through ``xent_tf.launch.ray_sweep``.
"""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher


class ResilientRayLauncher(RayLauncher):
    """Hydra's Ray launcher whose sweep survives a job's killed process (one failed job)."""

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
