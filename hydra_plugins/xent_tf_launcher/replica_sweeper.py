"""The ``replicas`` sweeper: Hydra's basic sweeper, validating a sweep's jobs cheaply.

Before launching, Hydra's sweeper composes every job's config once just to check it composes
(``Sweeper.validate_batch_is_legal``), and the launcher composes each again: a full Hydra
composition per job each time, most of a study's start-up when it has hundreds of jobs that
differ only in ``seed``. This sweeper validates through the replica launcher's composer
(``xent_tf.launch.compose.shared_composer``), which composes once per set of group choices
and keeps each job's composition for the launcher. It sweeps as ``basic`` does (same
``params`` and ``max_batch_size``); a job that does not compose still stops the sweep before
anything runs, with Hydra's own message. A job whose config composes but does not validate
(``jobs.InvalidJobError``: it never ran, its ``JobReturn`` is FAILED) does not stop the sweep as
another failed job would: every batch runs, the sweep's callbacks end it (its parent run's
report), then the sweep fails naming its invalid jobs (``jobs.InvalidJobsError``, exit status 1).

No ``from __future__ import annotations`` here: Hydra loads plugin modules without registering
them in ``sys.modules``, which dataclasses need for string annotations.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence  # noqa: UP035 (see the module docstring)

# Hydra's basic sweeper, extended (it is the default sweeper; Hydra exposes no public class of it:
# pinned by uv.lock).
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class ReplicaSweeperConf:
    """The basic sweeper's settings, with this sweeper's class."""

    _target_: str = "hydra_plugins.xent_tf_launcher.replica_sweeper.ReplicaSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="replicas", node=ReplicaSweeperConf, provider="xent_tf"
)


class ReplicaSweeper(BasicSweeper):
    """Hydra's basic sweeper whose pre-launch check reuses the launcher's compositions."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from xent_tf.launch.compose import shared_composer

        assert self.hydra_context is not None and self.config is not None
        composer = shared_composer(self.hydra_context, self.config)
        for overrides in batch:
            composer.validate(overrides)

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        """Hydra's ``BasicSweeper.sweep``, but invalid jobs stop neither the sweep nor its end.

        Returns:
            Each batch's job returns, as Hydra's basic sweeper returns them.

        Raises:
            InvalidJobsError: after the sweep's ``on_multirun_end`` callbacks, naming the jobs
                whose config does not validate.
        """
        from xent_tf.launch.jobs import invalid_error, sweep_outcome

        assert self.config is not None
        assert self.launcher is not None
        assert self.hydra_context is not None

        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(params_conf)
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        returns: List[Sequence[JobReturn]] = []  # noqa: UP006
        # Save sweep run config in top level sweep working directory (as Hydra's sweeper).
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            tic = time.perf_counter()
            self.validate_batch_is_legal(batch)
            log.debug(
                "validated the configs of %d jobs in %.2f s", len(batch), time.perf_counter() - tic
            )
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for result in results:
                if invalid_error(result) is None:
                    # As Hydra's sweeper: a job that failed otherwise raises here.
                    _ = result.return_value
            initial_job_idx += len(batch)
            returns.append(results)
        failure = sweep_outcome([r for batch in returns for r in batch])
        if failure is not None:
            # Hydra calls on_multirun_end only when the sweep returns: the sweep ends (its
            # parent run is reported) here, once, before it fails.
            self.hydra_context.callbacks.on_multirun_end(
                config=self.config, config_name=self.config.hydra.job.config_name
            )
            raise failure
        return returns
