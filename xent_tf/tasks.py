"""The Hydra task functions: what a job of ``experiments/run.py`` does, and what the notebook
API (``xent_tf.api``) runs through Hydra's own driver.

``task`` is the command line's task (a single run, a sweep job, or the claims ledger);
``single_run`` and ``claims_ledger`` are its two halves for one job, returning what they made
(the API shows it) instead of the number Hydra's sweeper optimises. TensorFlow and MLflow are
imported inside the functions: a sweep's launching process never trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from xent_tf.config import Config, to_config
from xent_tf.launch.callback import PROGRESS_FILE, finished_job, parent_for_sweep
from xent_tf.launch.jobs import JobOutcome, decide_job, invalid_job, sweep_goes_on
from xent_tf.launch.progress import leave_out
from xent_tf.track.resume import FinishedJob

if TYPE_CHECKING:
    from xent_tf.claims.records import Ledger
    from xent_tf.train.pipeline import RunSummary

# The command line's logger name (its lines say where they come from as they always did).
log = logging.getLogger("xent_tf.run")


def task(cfg: DictConfig) -> float:
    """Validate the config, then train (returns the final validation loss) or, with
    ``task: claims``, build the claims ledger (returns the number of contradicted claims).

    In a sweep, a job whose choices do not fit together is left out and a job that fails is
    logged (its run is FAILED in MLflow): both return NaN so the sweep goes on. A job whose
    config does not validate raises ``jobs.InvalidJobError`` (its job is FAILED).
    """
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    sweep_dir = Path(hydra_config.sweep.dir)
    parent = parent_for_sweep(sweep_dir) if multirun else None

    def finished_run(config: Config) -> FinishedJob | None:
        if parent is None or config.task == "claims":
            return None
        return finished_job(sweep_dir, config)

    # The same decision as every launcher's (xent_tf.launch.jobs).
    decision = decide_job(lambda: to_config(cfg), finished_run)
    if decision.outcome == JobOutcome.NOT_APPLICABLE and multirun:
        # A sweep over heads x data sets asks for bce on 5-class data too: left out.
        log.warning("job left out: %s", decision.error)
        leave_out(sweep_dir / PROGRESS_FILE, 1)
        return decision.value
    if decision.outcome == JobOutcome.INVALID and multirun and decision.error is not None:
        # FAILED, as every launcher reports it: the replicas sweeper runs the rest of the sweep
        # and then names the invalid jobs (jobs.sweep_outcome).
        raise invalid_job(list(hydra_config.overrides.task), decision.error) from decision.error
    if decision.error is not None:  # invalid, or not applicable outside a sweep
        raise decision.error
    if decision.outcome == JobOutcome.SKIPPED:
        assert decision.finished is not None
        log.info(
            "skipped: run %s FINISHED with this config already (or diverged with it)",
            decision.finished.run_id,
        )
        return decision.value
    config = decision.config
    assert config is not None
    if config.task == "claims":
        from xent_tf.claims.comparison import Verdict

        ledger = _claims_ledger(config)
        return float(sum(r.verdict == Verdict.CONTRADICTED for r in ledger.results))
    try:
        summary = _train(config, parent.run_id if parent else None)
    except Exception as error:
        if not multirun:
            raise
        return sweep_goes_on(error)
    return summary.history[-1].val_loss


def single_run(cfg: DictConfig) -> RunSummary:
    """One run (not a sweep job), as ``task`` trains it: its summary.

    Raises:
        ValueError: the config is a claims ledger's, or invalid (Hydra's/the schema's message).
    """
    config = to_config(cfg)
    if config.task == "claims":
        raise ValueError("task=claims builds the claims ledger, not a run: use the ledger")
    return _train(config, None)


def claims_ledger(cfg: DictConfig) -> Ledger:
    """The claims ledger (``task: claims``), as ``task`` builds it: the ledger itself.

    Raises:
        ValueError: the config is not a claims ledger's (``+experiment=claims``).
    """
    config = to_config(cfg)
    if config.task != "claims":
        raise ValueError(
            f"task={config.task!r}: the claims ledger needs task=claims (+experiment=claims)"
        )
    return _claims_ledger(config)


def _train(config: Config, parent_run_id: str | None) -> RunSummary:
    """Train and record the job's config in its Hydra output directory; logs its summary."""
    # TensorFlow is imported here, not at the top: a sweep's launching process never trains,
    # so it starts ~5 s sooner, and each worker imports TensorFlow once, with its first job.
    from xent_tf.train.pipeline import run_experiment, summary_text

    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    summary = run_experiment(
        config,
        output_dir=output_dir,
        overrides=list(hydra_config.overrides.task),
        parent_run_id=parent_run_id,
        log_file=output_dir / f"{hydra_config.job.name}.log",
    )
    log.info("\n%s", summary_text(summary, config))
    return summary


def _claims_ledger(config: Config) -> Ledger:
    """Build the ledger in the job's output directory (missing studies run as subprocesses)."""
    from xent_tf.claims.ledger import run_ledger
    from xent_tf.claims.runner import SubprocessStudyRunner

    ledger, text = run_ledger(
        config,
        Path(HydraConfig.get().runtime.output_dir),
        SubprocessStudyRunner(tuple(config.claims.study_overrides)),
    )
    log.info("\n%s", text)
    return ledger
