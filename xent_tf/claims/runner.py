"""How the ledger gets a study it needs: run the study's Hydra sweep, and read the study's
definition (its composed config) to check that a stored sweep is that study.

The entry point (``experiments/run.py``) passes a runner to ``run_ledger``; the ledger itself
never decides how a study is launched (per-job sweeps, a vectorised launcher, ...).
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from xent_tf import tracking
from xent_tf.config import to_config

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent.parent.parent
_RUN_SCRIPT = _ROOT / "experiments" / "run.py"
_CONFIG_DIR = _ROOT / "configs"

# The logged params that define a study's setting and that no study varies: a sweep whose
# runs differ from the study's composed config in any of them (a +debug=tiny run, fewer
# epochs, a smaller model) is not that study.
DEFINING_PARAMS = (
    "data.n_samples",
    "data.n_test",
    "data.n_features",
    "data.n_informative",
    "data.random_state",
    "data.val_fraction",
    "model.hidden_units",
    "model.activation",
    "trainer.epochs",
    "trainer.batch_size",
)


class StudyRunner(Protocol):
    """Runs a study's sweep and says what the study is."""

    def run(self, study: str, seeds: Sequence[int], tracking_uri: str) -> None:
        """Runs ``study`` with ``seeds`` into the store at ``tracking_uri``."""
        ...

    def definition(self, study: str) -> Mapping[str, str]:
        """The study's defining params (``DEFINING_PARAMS``) as its runs log them."""
        ...


def study_definition(study: str, overrides: Sequence[str] = ()) -> dict[str, str]:
    """Composes ``+experiment=<study>`` (plus ``overrides``) and returns its defining params.

    Args:
        study: the study (experiment config) name.
        overrides: extra Hydra overrides (tests: a tiny study's definition).

    Returns:
        {param: value as logged} for each of ``DEFINING_PARAMS``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    wanted = [f"+experiment={study}", *overrides]
    if GlobalHydra.instance().is_initialized():  # inside experiments/run.py
        cfg = compose(config_name="config", overrides=wanted)
    else:
        with initialize_config_dir(version_base="1.3", config_dir=str(_CONFIG_DIR)):
            cfg = compose(config_name="config", overrides=wanted)
    flat = tracking.flatten(dataclasses.asdict(to_config(cfg)))
    return {name: flat[name] for name in DEFINING_PARAMS if name in flat}


@dataclasses.dataclass(frozen=True)
class SubprocessStudyRunner:
    """Runs ``experiments/run.py -m +experiment=<study> seed=...`` as a subprocess.

    Whatever Hydra launcher the study's config selects runs the jobs.

    Attributes:
        overrides: extra Hydra overrides for every study (tests: ``+debug=tiny``); a study run
            with overrides that change its definition is then refused by the provenance check
            unless ``definition`` is given the same overrides.
    """

    overrides: tuple[str, ...] = ()

    def run(self, study: str, seeds: Sequence[int], tracking_uri: str) -> None:
        """Runs the sweep; raises RuntimeError when it exits with an error."""
        command = [
            sys.executable,
            str(_RUN_SCRIPT),
            "-m",
            f"+experiment={study}",
            f"seed={','.join(str(s) for s in seeds)}",
            f"tracking.uri={tracking_uri}",
            *self.overrides,
        ]
        log.info("running the %s study with seeds %s: %s", study, list(seeds), " ".join(command))
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` exited with status {completed.returncode}")

    def definition(self, study: str) -> Mapping[str, str]:
        return study_definition(study, self.overrides)
