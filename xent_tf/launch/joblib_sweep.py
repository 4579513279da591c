"""The ``joblib`` launcher's work: each job in a worker process, a dead worker one failed job.

As Hydra's joblib launcher (its settings, its ``execute_job``), but the jobs go through
``worker_pool.run_tasks`` rather than one ``joblib.Parallel`` call: a worker killed by SIGKILL
(the OOM killer) fails the job it held (its run FAILED with "worker died (signal 9, SIGKILL)"),
a new worker takes its place and the other jobs finish.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from xent_tf.launch.compose import SweepComposer, builds_on_the_schema
from xent_tf.launch.lost_jobs import record_lost_job
from xent_tf.launch.worker_pool import WorkerDeath, preload_job_modules, run_tasks

log = logging.getLogger(__name__)


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    joblib_settings: dict[str, Any],
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Run a sweep's jobs in worker processes, as Hydra's joblib launcher does.

    Args:
        hydra_context: Hydra's context.
        task_function: the entry point's task function.
        config: the sweep's config.
        joblib_settings: the launcher's settings (``n_jobs`` is used: the workers).
        job_overrides: every job's overrides.
        initial_job_idx: the first job's number.

    Returns:
        One JobReturn per job, in order; a job whose worker died returns NaN.
    """
    # Hydra's joblib launcher's own job runner, so a job runs as under that launcher; the
    # plugin exports no public one (pinned by uv.lock).
    from hydra_plugins.hydra_joblib_launcher._core import execute_job
    from joblib import effective_n_jobs

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    workers = effective_n_jobs(joblib_settings.get("n_jobs", -1))
    log.info(
        "Joblib launcher (%d worker processes; a dead worker fails one job) is launching %d jobs",
        workers,
        len(job_overrides),
    )
    # Hydra's own wording: benchmarks/bench.py times the launch from this line.
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for index, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + index, " ".join(filter_overrides(overrides)))
    state = Singleton.get_state()
    started_ms = int(time.time() * 1000)

    def lost(index: int, death: WorkerDeath) -> JobReturn:
        overrides = list(job_overrides[index])
        composer = SweepComposer(hydra_context, config)
        return record_lost_job(
            sweep_dir,
            death,
            lambda: composer.compose(initial_job_idx + index, overrides),
            overrides,
            started_ms,
        )

    tasks = [
        functools.partial(
            execute_job,
            initial_job_idx + index,
            overrides,
            hydra_context,
            config,
            task_function,
            state,
        )
        for index, overrides in enumerate(job_overrides)
    ]
    # A worker imports what xent-tf's jobs need as it starts; another app's jobs need none of it.
    preload = preload_job_modules if builds_on_the_schema(config) else None
    return run_tasks(tasks, max(1, workers), lost, preload)
