"""A sweep's jobs composed as Hydra's launchers compose them, once per set of config-group choices.

Every launcher of the project (replicas, joblib, ray) and the replica sweeper's pre-launch
check compose jobs through ``SweepComposer``; ``shared_composer`` lets the sweeper and the
launcher of one sweep share it, so each job is composed once.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Sequence

# Hydra's own naming of a job's override_dirname; Hydra has no public function for it (pinned by
# uv.lock; tests/test_replica_sweep.py compares a copied composition with Hydra's own).
from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from xent_tf.config import Config

log = logging.getLogger(__name__)


class SweepComposer:
    """Composes each job's config as Hydra's launchers do, composing once per set of choices.

    A Hydra composition takes a good part of a second, and a study has hundreds of jobs that
    differ from one another only in values: ``seed=N``, ``optimizer.learning_rate=X``. Jobs
    whose overrides choose the same config groups and set the same keys get a copy of the
    first one's composition with each set value put in as Hydra puts it
    (``OmegaConf.update(..., merge=True)``: the typed config converts and validates it), and
    the task overrides and ``hydra.job.override_dirname`` (computed by Hydra's own function)
    set to their own: the same config Hydra would compose (tests/test_replica_sweep.py
    compares them). An override that chooses a group, adds (``+``), deletes (``~``), or sets a
    list or a dict is composed by Hydra.
    """

    def __init__(self, hydra_context: HydraContext, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self._composed: dict[tuple[str, ...], DictConfig] = {}  # by choices and keys set
        self._jobs: dict[tuple[str, ...], DictConfig] = {}  # by a job's whole overrides
        self._handed_out: set[tuple[str, ...]] = set()
        self._groups: frozenset[str] | None = None

    def validate(self, overrides: Sequence[str]) -> None:
        """Compose the job's config now (Hydra's error if it does not), keeping it for
        ``compose``; nothing is copied."""
        if tuple(overrides) not in self._jobs:
            self._jobs[tuple(overrides)] = self._compose(overrides)

    def compose(self, number: int, overrides: Sequence[str]) -> DictConfig:
        """The job's composed config, with its Hydra job id and number set."""
        key = tuple(overrides)
        known = self._jobs.get(key)
        if known is None:
            known = self._jobs[key] = self._compose(overrides)
        # A job's own composition is handed out as it is the first time (a deep copy of a
        # study config is a good part of its start-up); a template other jobs are copied
        # from, or a job asked for again, is copied.
        if key in self._handed_out or any(known is t for t in self._composed.values()):
            sweep_config = _copied(known)
        else:
            sweep_config = known
            self._handed_out.add(key)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{number}"
            sweep_config.hydra.job.num = number
        return sweep_config

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        """Compose (or copy and adjust) the job's config, without its job id and number."""
        values = [o for o in overrides if self._sets_a_value(o)]
        key = tuple(_parsed_override(o).key_or_group if o in values else o for o in overrides)
        template = self._composed.get(key)
        if template is None:
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            self._composed[key] = sweep_config
            return sweep_config
        sweep_config = _copied(template)
        try:
            with read_write(sweep_config), open_dict(sweep_config):
                for text in values:
                    override = _parsed_override(text)
                    OmegaConf.update(
                        sweep_config, override.key_or_group, override.value(), merge=True
                    )
        except OmegaConfBaseException:
            # A value its field does not take: Hydra composes the job, and raises its own error.
            return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with read_write(sweep_config), open_dict(sweep_config):
            sweep_config.hydra.overrides.task = list(overrides)
            naming = sweep_config.hydra.job.config.override_dirname
            sweep_config.hydra.job.override_dirname = get_overrides_dirname(
                overrides=[_parsed_override(o) for o in overrides],
                kv_sep=naming.kv_sep,
                item_sep=naming.item_sep,
                exclude_keys=list(naming.exclude_keys),
            )
        return sweep_config

    def _sets_a_value(self, text: str) -> bool:
        """Whether the override only sets a config value to a scalar (``seed=3``,
        ``optimizer.learning_rate=0.1``), which a copied composition can take as Hydra does;
        not a group choice, an addition or deletion, a list or dict, a key in ``hydra``."""
        override = _parsed_override(text)
        if override.type != OverrideType.CHANGE or override.package is not None:
            return False
        if override.is_sweep_override() or "/" in override.key_or_group:
            return False
        key = override.key_or_group
        if key in self._group_names() or key.split(".")[0] == "hydra":
            return False
        return isinstance(override.value(), str | int | float | bool)

    def _group_names(self) -> frozenset[str]:
        """The primary config's top-level config groups (``loss``, ``data``, ...)."""
        if self._groups is None:
            self._groups = frozenset(self.hydra_context.config_loader.list_groups(""))
        return self._groups


def _copied(sweep_config: DictConfig) -> DictConfig:
    """A detached copy of a composed config: a pickle round trip, as a worker receives it
    anyway, costs less than half of ``copy.deepcopy`` on a study's config."""
    copied = pickle.loads(pickle.dumps(sweep_config, protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(copied, DictConfig)
    return copied


@functools.cache
def _override_parser() -> OverridesParser:
    return OverridesParser.create()


@functools.cache
def _parsed_override(text: str) -> Override:
    """One command-line override parsed by Hydra's grammar, once per text: parsing takes
    milliseconds, and a study's hundreds of jobs repeat the same few overrides."""
    return _override_parser().parse_override(text)


_shared: SweepComposer | None = None


def shared_composer(hydra_context: HydraContext, config: DictConfig) -> SweepComposer:
    """The composer of this process's sweep (one per sweep config), shared by the sweeper's
    pre-launch check and the launcher, so each job is composed once; a process that runs
    several sweeps (experiments/reproduce.py) gets a new one for each."""
    global _shared
    if _shared is None or _shared.config is not config:
        _shared = SweepComposer(hydra_context, config)
    return _shared


def builds_on_the_schema(config: DictConfig) -> bool:
    """Whether the sweep's app is xent-tf's: its primary config is built on ``config_schema``.

    The launcher is installed in Hydra's shared ``hydra_plugins`` namespace, so any Hydra app
    can select it; only xent-tf's jobs can be validated, grouped and trained as replicas.
    """
    return OmegaConf.get_type(config) is Config
