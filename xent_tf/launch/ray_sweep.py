"""``hydra/launcher=ray``'s work (one Ray task per job): a killed job is one failed job.

Hydra's Ray launcher runs each job as a Ray task and then ``ray.get``s them all: one task whose
worker process was killed (SIGKILL, the kernel's OOM killer) raises ``WorkerCrashedError`` there
and aborts the sweep, after Ray has re-run the job up to 3 times (its default ``max_retries``
for system failures, each retry a new MLflow run). Here each Ray task runs its job in a
process of its own, supervised by the Ray worker (``worker_pool.SupervisedWorker``, kept for the
worker's next jobs): when that process dies, the task returns how (signal and process), and the
launching process marks the job's run FAILED with "worker died (signal 9, SIGKILL)". A Ray
worker or node lost outright (Ray reports no signal) is a failed job too, named by Ray's error.

Ray's own retries (``hydra.launcher.ray.remote.max_retries``, 0 in
``configs/hydra/launcher/ray.yaml``) then apply only to a lost Ray worker or node: a job killed
on a healthy node is not re-run, as with the other launchers (a resumed sweep re-runs its
FAILED jobs). With retries on, a retried job opens a run of its own; its dead attempt's run
(its process died with the Ray worker) is marked FAILED when the sweep ends
(``writing.fail_orphaned_children``), and the report keeps the retry's finished run, listing
the other as superseded (seen with ``max_retries=1`` and a killed Ray worker: FAILED
"OrphanedRun" + FINISHED, report "1 more superseded by a re-run").
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from xent_tf.launch.compose import builds_on_the_schema
from xent_tf.launch.lost_jobs import record_lost_job
from xent_tf.launch.ray_placement import init_arguments
from xent_tf.launch.worker_pool import SupervisedWorker, WorkerDeath, preload_job_modules

log = logging.getLogger(__name__)

# The process each Ray worker runs its jobs in (started at its first job), by whether it
# imported xent-tf's training modules as it started.
_supervised: dict[bool, SupervisedWorker] = {}


def run_job_supervised(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    preload: bool = False,
) -> JobReturn | WorkerDeath:
    """The Ray task: run one Hydra job (as Hydra's Ray launcher does) in a supervised process.

    Args:
        hydra_context: Hydra's context (its callbacks hand the job its parent run).
        sweep_config: the job's composed config.
        task_function: the entry point's task function.
        singleton_state: Hydra's singletons of the launching process.
        preload: the process imports what xent-tf's jobs need as it starts (only for
            xent-tf's own app: another app's jobs need none of it).

    Returns:
        The job's result, or how its process died.
    """
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    if preload not in _supervised:
        _supervised[preload] = SupervisedWorker(preload_job_modules if preload else None)
    job = functools.partial(_run_job, hydra_context, sweep_config, task_function, singleton_state)
    return _supervised[preload].run(job)


def lost_worker(error: Exception) -> WorkerDeath:
    """A job's death as Ray reported it (a lost worker or node: no process, no signal)."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    cause = f"Ray lost the worker: {type(error).__name__}"
    return WorkerDeath(0, 0, f"{cause}: {first_line}" if first_line else cause)


def _same(config: DictConfig) -> DictConfig:
    """``config`` itself: how ``record_lost_job`` gets a config the launcher already composed."""
    return config


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    ray_settings: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Run a sweep's jobs as Ray tasks, as Hydra's Ray launcher does, a dead job one failure.

    Args:
        hydra_context: Hydra's context.
        task_function: the entry point's task function.
        config: the sweep's config.
        ray_settings: the launcher's ``ray`` settings (``init``: ``ray.init``'s arguments,
            ``remote``: the task's options, e.g. ``max_retries``).
        job_overrides: every job's overrides.
        initial_job_idx: the first job's number.

    Returns:
        One JobReturn per job, in order; a job whose process died returns NaN and has a FAILED
        run saying how.
    """
    import ray
    from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # Hydra's own wording (tests look for it); a dead job is one failed job.
    log.info(
        "Ray Launcher is launching %d jobs, sweep output dir: %s (a job whose process dies "
        "fails alone)",
        len(job_overrides),
        sweep_dir,
    )
    init = OmegaConf.to_container(ray_settings.init, resolve=True) or {}
    assert isinstance(init, dict)
    # Joining a running cluster takes no start-only option (Ray refuses object_store_memory).
    arguments, dropped = init_arguments({str(k): v for k, v in init.items()}, os.environ)
    if dropped:
        log.warning("joining a running Ray cluster: %s ignored", ", ".join(dropped))
    start_ray(OmegaConf.create(arguments))
    options = OmegaConf.to_container(ray_settings.remote, resolve=True) or {}
    assert isinstance(options, dict)
    # As Hydra's Ray launcher: ray.remote refuses an empty set of options (its plugin's
    # default ``remote: {}``).
    if options:
        remote = ray.remote(**{str(k): v for k, v in options.items()})(run_job_supervised)
    else:
        remote = ray.remote(run_job_supervised)
    started_ms = int(time.time() * 1000)
    state = Singleton.get_state()
    preload = builds_on_the_schema(config)
    jobs = []
    for index, overrides in enumerate(job_overrides):
        number = initial_job_idx + index
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            # As Hydra's Ray launcher: a scheduler's job id is only known where the job runs.
            sweep_config.hydra.job.id = f"job_id_for_{number}"
            sweep_config.hydra.job.num = number
        reference = remote.remote(hydra_context, sweep_config, task_function, state, preload)
        jobs.append((reference, sweep_config, list(overrides)))

    # Each job's result as it comes: a dead job's run is marked FAILED at once, not after the
    # jobs submitted before it.
    returns: dict[int, JobReturn] = {}
    pending = {reference: index for index, (reference, _, _) in enumerate(jobs)}
    while pending:
        [reference], _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(reference)
        _, sweep_config, overrides = jobs[index]
        try:
            result = ray.get(reference)
        except ray.exceptions.RayTaskError:
            raise  # the task itself raised (not a lost worker): as Hydra's launcher does
        except ray.exceptions.RayError as error:  # WorkerCrashedError, NodeDiedError, OOM...
            result = lost_worker(error)
        if isinstance(result, WorkerDeath):
            result = record_lost_job(
                sweep_dir, result, functools.partial(_same, sweep_config), overrides, started_ms
            )
        returns[index] = result
    return [returns[index] for index in range(len(jobs))]
