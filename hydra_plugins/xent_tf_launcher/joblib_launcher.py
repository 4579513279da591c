"""``hydra/launcher=joblib`` as Hydra's joblib launcher, but a dead worker fails one job only.

Hydra's plugin hands every job to one ``joblib.Parallel`` call, which a single worker killed by
SIGKILL (the OOM killer) aborts as a whole. This launcher takes the same settings
(``configs/hydra/launcher/joblib.yaml`` selects it in place of the plugin's) and runs each job
through ``xent_tf.launch.joblib_sweep``.
"""

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


class ResilientJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher whose sweep survives a worker's death (one failed job)."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from xent_tf.launch.joblib_sweep import launch

        assert self.config is not None and self.task_function is not None
        assert self.hydra_context is not None
        return launch(
            self.hydra_context,
            self.task_function,
            self.config,
            dict(self.joblib),
            job_overrides,
            initial_job_idx,
        )
