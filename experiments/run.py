"""Train one configuration (default: the reference run of CLAIMS.md C16) and record it in MLflow.

python experiments/run.py                                   # the reference run
python experiments/run.py loss=mse optimizer.learning_rate=0.01 trainer.epochs=5
python experiments/run.py -m seed=0,1,2 hydra/launcher=joblib
python experiments/run.py +experiment=claims                # the claims ledger (task: claims)
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from xent_tf.config import NotApplicableError, to_config
from xent_tf.launch.callback import PROGRESS_FILE, finished_job, parent_for_sweep
from xent_tf.launch.progress import leave_out

log = logging.getLogger("xent_tf.run")


def task(cfg: DictConfig) -> float:
    """Validate the config, then train (returns the final validation loss) or, with
    ``task: claims``, build the claims ledger (returns the number of contradicted claims)."""
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    try:
        config = to_config(cfg)
    except NotApplicableError as error:
        if not multirun:
            raise
        # A sweep over heads x data sets asks for bce on 5-class data too: left out, as the
        # replica launcher does (xent_tf.launch.replica_sweep).
        log.warning("job left out: %s", error)
        leave_out(Path(hydra_config.sweep.dir) / PROGRESS_FILE, 1)
        return float("nan")
    # TensorFlow is imported here, not at the top: a sweep's launching process never trains,
    # so it starts ~5 s sooner, and each worker imports TensorFlow once, with its first job.
    if config.task == "claims":
        from xent_tf.claims.comparison import Verdict
        from xent_tf.claims.ledger import run_ledger
        from xent_tf.claims.runner import SubprocessStudyRunner

        ledger, text = run_ledger(
            config,
            Path(hydra_config.runtime.output_dir),
            SubprocessStudyRunner(tuple(config.claims.study_overrides)),
        )
        log.info("\n%s", text)
        return float(sum(r.verdict == Verdict.CONTRADICTED for r in ledger.results))
    from xent_tf.train.pipeline import run_experiment, summary_text

    output_dir = Path(hydra_config.runtime.output_dir)
    parent = parent_for_sweep(Path(hydra_config.sweep.dir)) if multirun else None
    if parent is not None:
        done = finished_job(Path(hydra_config.sweep.dir), config)
        if done is not None:
            log.info("skipped: run %s FINISHED with this config already", done.run_id)
            return done.val_loss
    try:
        summary = run_experiment(
            config,
            output_dir=output_dir,
            overrides=list(hydra_config.overrides.task),
            parent_run_id=parent.run_id if parent else None,
            log_file=output_dir / f"{hydra_config.job.name}.log",
        )
    except Exception as error:
        if not multirun:
            raise
        # Hydra's sweeper aborts the whole sweep on the first failed job. The run is already
        # FAILED in MLflow with its reason, and the study report lists it, so the sweep goes on.
        log.error("job failed, the sweep goes on: %s: %s", type(error).__name__, error)
        return float("nan")
    log.info("\n%s", summary_text(summary, config))
    return summary.history[-1].val_loss


# The entry point. The task function stays importable undecorated: experiments/reproduce.py
# runs it for every study in one process.
main = hydra.main(version_base="1.3", config_path="../configs", config_name="config")(task)

if __name__ == "__main__":
    main()
