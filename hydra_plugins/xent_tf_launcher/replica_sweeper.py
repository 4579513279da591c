"""The ``replicas`` sweeper: Hydra's basic sweeper, validating a sweep's jobs cheaply.

Before launching, Hydra's sweeper composes every job's config once just to check it composes
(``Sweeper.validate_batch_is_legal``), and the launcher composes each again: a full Hydra
composition per job each time, most of a study's start-up when it has hundreds of jobs that
differ only in ``seed``. This sweeper validates through the replica launcher's composer
(``xent_tf.launch.compose.shared_composer``), which composes once per seed-less override
set and keeps each job's composition for the launcher. It sweeps exactly as ``basic`` does (same
``params`` and ``max_batch_size``); a job that does not compose still stops the sweep before
anything runs, with Hydra's own message.

No ``from __future__ import annotations`` here: Hydra loads plugin modules without registering
them in ``sys.modules``, which dataclasses need for string annotations.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence  # noqa: UP035 (see the module docstring)

# Hydra's basic sweeper, extended (it is the default sweeper; Hydra exposes no public class of it:
# pinned by uv.lock).
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


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
