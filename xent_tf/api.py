"""The notebook API: train, run a study and judge the claims from Python, with every Hydra
override written as on the command line.

    import xent_tf
    result = xent_tf.study("mse_vs_ce", "data=reference", "optimizer=sgd", seeds=3)
    result          # in Jupyter: the verdict table and the curves with seed bands

``run``, ``study`` and ``ledger`` run what ``experiments/run.py`` runs (``xent_tf.tasks``),
through Hydra's own driver with the same configs and job name: the same output directories,
callbacks, replica batches and MLflow records. ``load_study`` and ``load_ledger`` read what a
store already holds. Every result has pandas DataFrames, its MLflow link, and renders in
Jupyter.
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter, as the command line does (before TensorFlow loads).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from xent_tf import tasks
from xent_tf.claims.studies import STUDIES
from xent_tf.config import Config, NotApplicableError, to_config
from xent_tf.results import EPOCH_METRICS, Figure, Ledger, RunSummary, StudyResult

__all__ = [
    "Figure",
    "Ledger",
    "OverrideError",
    "RunSummary",
    "StudyResult",
    "ledger",
    "load_ledger",
    "load_study",
    "run",
    "study",
]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# experiments/run.py's job name (Hydra names a job after its script): the same log files.
JOB_NAME = "run"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# In a notebook the console shows warnings and the sweep's progress lines (the job log files
# keep every line, as on the command line): the study's tables are the result's own output.
QUIET_CONSOLE = (
    "++hydra.job_logging.handlers.console.level=WARNING",
    "++hydra.hydra_logging.handlers.console.level=WARNING",
)
# The claims ledger's MLflow experiment and the tag its run carries (configs/experiment/claims).
LEDGER_EXPERIMENT = "claims"
_LEDGER_TAG = ("xent.task", "claims")


class OverrideError(ValueError):
    """Overrides that do not make a valid config (the message names them and says why)."""


def run(*overrides: str) -> RunSummary:
    """Train one configuration and record it, as ``python experiments/run.py OVERRIDES`` does.

    Args:
        overrides: Hydra overrides as on the command line, e.g. ``"loss=mse"``,
            ``"trainer.epochs=5"``, ``"+debug=tiny"``, ``"tracking=off"``.

    Returns:
        The run: test numbers, per-epoch DataFrame, loss curve, MLflow link.

    Raises:
        OverrideError: the overrides do not compose or make an invalid config.
    """
    app = _hydra_app()
    try:
        config = to_config_or_explain(_compose(app, list(overrides), RunMode.RUN), overrides)
        if config.task == "claims":
            raise OverrideError(
                f"{list(overrides)} make a claims ledger (task=claims), not a run: use ledger()"
            )
        job = app.run("config", tasks.single_run, [*QUIET_CONSOLE, *overrides, "hydra.mode=RUN"])
    finally:
        GlobalHydra.instance().clear()
    uri = config.tracking.uri if config.tracking.enabled else ""
    return RunSummary.of(job.return_value, config.experiment_name, uri, overrides)


def study(name: str, *overrides: str, seeds: int | Sequence[int] | None = None) -> StudyResult:
    """Run a comparison study and read it back, as ``python experiments/run.py -m
    +experiment=NAME OVERRIDES seed=...`` does: the same sweep (replica batches by default),
    parent and child runs in MLflow, and report.

    Args:
        name: the study, one of ``xent_tf.claims.studies.STUDIES`` (``mse_vs_ce``, ...).
        overrides: Hydra overrides as on the command line (``"data=digits"``,
            ``"+debug=tiny"``, ``"hydra.launcher.n_jobs=1"``, a sweep ``"loss=ce,mse"``).
        seeds: how many seeds (0 .. n-1) or which; None: the study's own (0-9).

    Returns:
        The study: its runs, per-epoch values, verdicts and curves.

    Raises:
        ValueError: an unknown study, seeds given twice, or tracking off (a study is read
            back from its store).
        OverrideError: the overrides do not compose, or the sweep's first job's config is
            invalid.
        RuntimeError: the sweep could not start (e.g. the store does not answer).
    """
    if name not in STUDIES:
        raise ValueError(f"study {name!r} is not one of {sorted(STUDIES)}")
    seed_overrides = _seed_overrides(seeds, overrides)
    wanted = [f"+experiment={name}", *overrides, *seed_overrides]
    app = _hydra_app()
    try:
        sweep = _compose(app, wanted, RunMode.MULTIRUN)
        config = _first_job_config(app, sweep, wanted)
        if config is not None and not config.tracking.enabled:
            raise ValueError(
                "tracking=off: a study is recorded in MLflow and read back from there; "
                "give a store (tracking.uri=sqlite:///PATH.db)"
            )
        sweep_dir = _sweep_dir(wanted, str(sweep.experiment_name))
        try:
            app.multirun(
                "config",
                tasks.task,
                [
                    *QUIET_CONSOLE,
                    *wanted,
                    f"hydra.sweep.dir={sweep_dir}",
                    "hydra.mode=MULTIRUN",
                ],
            )
        except SystemExit as stop:  # the sweep's callback refuses to start (logged above)
            raise RuntimeError(
                f"the {name} study could not start (exit status {stop.code}); see the log above"
            ) from stop
    finally:
        GlobalHydra.instance().clear()
    from xent_tf.launch.callback import parent_for_sweep

    parent = parent_for_sweep(sweep_dir)
    if parent is None:
        raise RuntimeError(f"the sweep in {sweep_dir} recorded no parent run in MLflow")
    return load_study(run_id=parent.run_id, tracking_uri=parent.tracking_uri)


def ledger(*overrides: str, study_overrides: Sequence[str] | None = None) -> Ledger:
    """Build the claims ledger, as ``python experiments/run.py +experiment=claims OVERRIDES``
    does: claims measured on the spot, training claims judged on studies found in the store
    (or run when missing), one MLflow run with claims.md/.html/.json.

    Args:
        overrides: Hydra overrides, e.g. ``"claims.only=[C12]"``, ``"claims.seeds=3"``,
            ``"tracking.uri=sqlite:///PATH.db"``.
        study_overrides: the overrides the studies to judge were run with (e.g. the
            ``"+debug=tiny"`` of a quick study): the ledger looks for (and would run) studies
            made with them; the same as ``claims.study_overrides=[...]``.

    Returns:
        The ledger: one verdict row per claim, its parts, the studies it read.

    Raises:
        OverrideError: the overrides do not compose or make an invalid config.
    """
    from xent_tf.claims.ledger_render import ledger_json

    wanted = ["+experiment=claims", *overrides]
    if study_overrides is not None:
        wanted.append(f"claims.study_overrides={_hydra_list(study_overrides)}")
    app = _hydra_app()
    try:
        to_config_or_explain(_compose(app, wanted, RunMode.RUN), overrides)
        job = app.run("config", tasks.claims_ledger, [*QUIET_CONSOLE, *wanted, "hydra.mode=RUN"])
    finally:
        GlobalHydra.instance().clear()
    return Ledger.of(json.loads(json.dumps(ledger_json(job.return_value))))


def load_study(
    name: str | None = None,
    *,
    run_id: str | None = None,
    tracking_uri: str = DEFAULT_TRACKING_URI,
) -> StudyResult:
    """Read a study already in a store: the newest finished sweep of ``name``, or the sweep
    whose parent run is ``run_id``.

    Args:
        name: the study (its MLflow experiment), one of ``xent_tf.claims.studies.STUDIES``.
        run_id: the sweep's parent run (instead of ``name``; any sweep, a plain one too).
        tracking_uri: the store (``tracking.uri`` of the runs).

    Returns:
        The study: its runs, per-epoch values, verdicts and curves.

    Raises:
        ValueError: neither or an unknown name, an unknown run, no finished sweep.
    """
    from xent_tf.claims.study_report import read_report
    from xent_tf.track import connection

    if name is None and run_id is None:
        raise ValueError("give a study name or run_id=<the sweep's parent run id>")
    if name is not None and name not in STUDIES:
        raise ValueError(f"study {name!r} is not one of {sorted(STUDIES)}")
    connection.check_tracking_uri(tracking_uri)
    report = read_report(tracking_uri, name, run_id, more_metrics=EPOCH_METRICS)
    return StudyResult.of(report, tracking_uri)


def load_ledger(run_id: str | None = None, *, tracking_uri: str = DEFAULT_TRACKING_URI) -> Ledger:
    """Read a claims ledger already in a store: the newest finished one, or run ``run_id``.

    Args:
        run_id: the ledger's MLflow run (None: the newest finished ledger run).
        tracking_uri: the store.

    Returns:
        The ledger, as its ``claims.json`` artifact holds it.

    Raises:
        ValueError: no ledger run in the store, or the run has no ``claims.json``.
    """
    from xent_tf.track import connection, reading

    connection.check_tracking_uri(tracking_uri)
    if run_id is None:
        run_id = reading.latest_tagged_run(tracking_uri, LEDGER_EXPERIMENT, *_LEDGER_TAG)
        if run_id is None:
            raise ValueError(
                f"no finished claims ledger in {tracking_uri} (experiment "
                f"{LEDGER_EXPERIMENT!r}); build one with xent_tf.ledger()"
            )
    return Ledger.of(json.loads(reading.read_text_artifact(tracking_uri, run_id, "claims.json")))


# --- Hydra --------------------------------------------------------------------------------


def _hydra_app() -> Hydra:
    """Hydra, set up as ``experiments/run.py``'s ``@hydra.main`` sets it up (same configs,
    same job name); whatever Hydra the process had set up before is cleared."""
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(
        task_name=JOB_NAME, config_search_path=create_config_search_path(str(CONFIG_DIR))
    )


def _compose(app: Hydra, overrides: list[str], mode: RunMode) -> DictConfig:
    """The config the command line composes from ``overrides`` (``mode``: one run or -m).

    Raises:
        OverrideError: Hydra's reason, naming the overrides.
    """
    try:
        return app.compose_config("config", overrides, run_mode=mode, with_log_configuration=False)
    except Exception as error:
        message = f"the overrides {overrides} do not compose: {error}"
        raise OverrideError(message + _allowed_keys(app, overrides, str(error), mode)) from error


_UNKNOWN_KEY = re.compile(r"Could not override '([\w.]+)'")


def _allowed_keys(app: Hydra, overrides: list[str], message: str, mode: RunMode) -> str:
    """For an override of a key the config does not have (``trainer.epoch=3``): the keys its
    section does have, so the message says what is allowed ("" otherwise)."""
    found = _UNKNOWN_KEY.search(message)
    if found is None:
        return ""
    key = found.group(1)
    section = key.rsplit(".", 1)[0] if "." in key else ""
    others = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        cfg = app.compose_config("config", others, run_mode=mode, with_log_configuration=False)
    except Exception:  # another override is bad too: Hydra's message names the first
        return ""
    node = OmegaConf.select(cfg, section) if section else cfg
    if not isinstance(node, DictConfig):
        return ""
    keys = ", ".join(str(k) for k in node if str(k) != "hydra")
    return f"\n{section or 'the config'} has: {keys}"


def to_config_or_explain(cfg: DictConfig, overrides: Sequence[str]) -> Config:
    """The typed config of a composed one.

    Raises:
        OverrideError: the schema's reason (which field, which values are allowed), naming
            the overrides.
    """
    try:
        return to_config(cfg)
    except Exception as error:
        raise OverrideError(
            f"the overrides {list(overrides)} make an invalid config: {error}"
        ) from error


def _first_job_config(app: Hydra, sweep: DictConfig, overrides: Sequence[str]) -> Config | None:
    """The typed config of the sweep's first job (its sweep values and the overrides), so a
    bad value fails here, named, rather than as every job of the sweep left out.

    Returns:
        The config, or None when the first job's choices do not fit together (the sweep
        leaves such jobs out, e.g. bce on 5-class data).
    """
    params = OmegaConf.select(sweep, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += [str(o) for o in sweep.hydra.overrides.task]
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        first = BasicSweeper.split_arguments(parsed, None)[0][0]
        job = app.config_loader.load_sweep_config(sweep, list(first))
    except Exception as error:
        raise OverrideError(f"the overrides {list(overrides)} do not compose: {error}") from error
    try:
        return to_config(job)
    except NotApplicableError:
        return None
    except Exception as error:
        raise OverrideError(
            f"the overrides {list(overrides)} make an invalid config (first job: "
            f"{' '.join(first)}): {error}"
        ) from error


def _hydra_list(values: Sequence[str]) -> str:
    """A list of strings as one Hydra override value, each quoted (``['+debug=tiny']``)."""
    quoted = ["'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values]
    return f"[{','.join(quoted)}]"


def _seed_overrides(seeds: int | Sequence[int] | None, overrides: Sequence[str]) -> list[str]:
    """``seed=...`` for ``seeds`` (none: the study's own seeds).

    Raises:
        ValueError: seeds given both ways, or not a positive count / non-negative ints.
    """
    if seeds is None:
        return []
    if any(o.lstrip("+").startswith("seed=") for o in overrides):
        raise ValueError("give the seeds once: seeds=... or a seed=... override, not both")
    chosen = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not chosen or any(not isinstance(s, int) or s < 0 for s in chosen):
        raise ValueError(f"seeds={seeds!r}: give a count >= 1 or non-negative ints")
    return [f"seed={','.join(str(s) for s in chosen)}"]


def _sweep_dir(overrides: Sequence[str], experiment_name: str) -> Path:
    """The sweep's directory: the one the overrides give (``hydra.sweep.dir=``), else
    ``multirun/<experiment>/<date_time>`` as the command line names it (a new one: a
    directory holds one sweep)."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")]
    if given:
        return Path(given[-1])
    base = Path("multirun") / experiment_name / time.strftime("%Y-%m-%d_%H-%M-%S")
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    return candidate
