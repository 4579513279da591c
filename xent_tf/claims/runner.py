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

from omegaconf import OmegaConf, open_dict

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


@dataclasses.dataclass(frozen=True)
class StudyDefinition:
    """What a stored sweep must be to count as a study for the ledger.

    Attributes:
        sweep: the study's definition (``track.resume.study_definition`` of the command line
            that runs it): a sweep parent that recorded another one is another study, as
            ``+resume`` judges it. Empty: unknown (only the runs' params are checked).
        params: the defining params (``DEFINING_PARAMS``) as its runs log them (every run is
            checked against them; a parent made before definitions were recorded is judged by
            them alone).
        datasets: the data sets its runs cover, sorted and comma-separated.
    """

    sweep: Mapping[str, str]
    params: Mapping[str, str]
    datasets: str


class StudyRunner(Protocol):
    """Runs a study's sweep and says what the study is."""

    def run(
        self, study: str, seeds: Sequence[int], tracking_uri: str, dataset: str | None = None
    ) -> None:
        """Runs ``study`` with ``seeds`` into the store at ``tracking_uri`` (on ``dataset``:
        ``data=<dataset>``; None: the study's own data)."""
        ...

    def definition(self, study: str, dataset: str | None = None) -> StudyDefinition:
        """What a stored sweep must be to be the study the runner runs (``define_study``)."""
        ...


def available_datasets() -> tuple[str, ...]:
    """The data sets a study can be run on by name: ``configs/data/*.yaml`` but ``csv`` (whose
    file and label column are yours to give)."""
    return tuple(sorted(p.stem for p in (_CONFIG_DIR / "data").glob("*.yaml") if p.stem != "csv"))


def check_datasets(names: Sequence[str]) -> None:
    """Refuses a data set name that is not a config of ``configs/data``.

    Raises:
        ValueError: naming the unknown names and the known ones.
    """
    known = available_datasets()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"claims.datasets={list(names)} names unknown data set(s) {unknown}; known: "
            f"{', '.join(known)} (a data set is a file configs/data/<name>.yaml)"
        )


def study_command(
    study: str, overrides: Sequence[str] = (), dataset: str | None = None
) -> list[str]:
    """The overrides a study's sweep runs with (``SubprocessStudyRunner``, without its seeds
    and store, which do not change what the study is)."""
    return [f"+experiment={study}", *([f"data={dataset}"] if dataset else []), *overrides]


def define_study(
    study: str, overrides: Sequence[str] = (), dataset: str | None = None
) -> StudyDefinition:
    """Composes the study's command line (``study_command``) and says what its sweep is.

    Args:
        study: the study (experiment config) name.
        overrides: extra Hydra overrides (tests: a tiny study's definition).
        dataset: the data set the study is run on (None: its own).

    Returns:
        Its study definition as its sweep's parent records it, its defining params as its
        runs log them, and the data sets its runs cover.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from xent_tf.track import writing  # MLflow: not imported by a launcher checking names
    from xent_tf.track.resume import study_definition

    wanted = study_command(study, overrides, dataset)
    if GlobalHydra.instance().is_initialized():  # inside experiments/run.py
        cfg = compose(config_name="config", overrides=wanted, return_hydra_config=True)
    else:
        with initialize_config_dir(version_base="1.3", config_dir=str(_CONFIG_DIR)):
            cfg = compose(config_name="config", overrides=wanted, return_hydra_config=True)
    swept = OmegaConf.select(cfg, "hydra.sweeper.params.data", default=None)
    datasets = [dataset] if dataset else str(swept).split(",") if swept else [str(cfg.data.name)]
    with open_dict(cfg):
        del cfg["hydra"]
    base = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(base, dict)
    flat = writing.flatten(dataclasses.asdict(to_config(cfg)))
    return StudyDefinition(
        sweep=study_definition({str(k): v for k, v in base.items()}, wanted),
        params={name: flat[name] for name in DEFINING_PARAMS if name in flat},
        datasets=",".join(sorted(d.strip() for d in datasets)),
    )


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

    def run(
        self, study: str, seeds: Sequence[int], tracking_uri: str, dataset: str | None = None
    ) -> None:
        """Runs the sweep; raises RuntimeError when it exits with an error."""
        command = [
            sys.executable,
            str(_RUN_SCRIPT),
            "-m",
            *study_command(study, self.overrides, dataset),
            f"seed={','.join(str(s) for s in seeds)}",
            f"tracking.uri={tracking_uri}",
        ]
        where = f" on {dataset}" if dataset else ""
        log.info(
            "running the %s study%s, seeds %s: %s", study, where, list(seeds), " ".join(command)
        )
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` exited with status {completed.returncode}")

    def definition(self, study: str, dataset: str | None = None) -> StudyDefinition:
        return define_study(study, self.overrides, dataset)
