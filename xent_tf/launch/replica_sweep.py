"""The replica launcher's work: a Hydra sweep's jobs grouped into replica batches.

The Hydra launcher plugin (``hydra_plugins.xent_tf_launcher``) receives every job's overrides at
once and hands them here. Each job's config is composed and validated first: an invalid job
fails, named, before anything trains, and the rest go on; a job whose choices do not fit
together (``config.NotApplicableError``: bce on multi-class data, when a study sweeps heads over
data sets) is left out with a warning. Jobs that can share a graph
(``replica_groups.graph_key``) form batches; each batch trains once and then records one MLflow
child run per job as Hydra's ``run_job`` would (``replica_job.run_batch_job``: every job keeps
its output directory, ``.hydra/`` files, log file and callbacks). A batch of one, or a config
the replica trainer cannot stack, runs as a plain job with the task function. Several units of
work are spread over worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from xent_tf.config import Config, to_config
from xent_tf.launch import progress
from xent_tf.launch.callback import PROGRESS_FILE
from xent_tf.launch.compose import shared_composer
from xent_tf.launch.jobs import (
    JobOutcome,
    count_outcomes,
    decide_job,
    decided_job,
    sweep_goes_on,
)
from xent_tf.launch.lost_jobs import record_lost_jobs
from xent_tf.launch.replica_job import run_batch_job
from xent_tf.launch.worker_pool import WorkerDeath, kept_pool, preload_job_modules, run_tasks
from xent_tf.track.resume import FinishedJob, read_finished, training_config_hash
from xent_tf.train.replica_groups import group_jobs, longest_first, spread_batches

if TYPE_CHECKING:  # TensorFlow: imported by the jobs that train, not by the launcher
    from xent_tf.train.replica_batch import TrainedBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkUnit:
    """Jobs run together: a replica batch, or one job on its own.

    Attributes:
        jobs: (job number, overrides) of each job.
        sweep_configs: each job's composed config (composing is the slow part of planning).
        replicated: train them as one replica batch (else: the plain task function).
        name: names the batch in its runs' tags.
        memory_bytes: memory a batch may use (None: what the machine has available).
        configs: each job's validated config, as planning made it (None: make it again).
        gpu_share: the share of a GPU the unit was given (a Ray unit's ``num_gpus``): on a GPU,
            the batch may use that share of its memory when ``memory_bytes`` is None.
    """

    jobs: tuple[tuple[int, tuple[str, ...]], ...]
    sweep_configs: tuple[DictConfig, ...]
    replicated: bool
    name: str
    memory_bytes: int | None = None
    configs: tuple[Config, ...] | None = None
    gpu_share: float = 1.0


def plan_units(
    hydra_context: HydraContext,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    max_replicas: int,
    sweep_name: str,
    finished: Mapping[str, FinishedJob] | None = None,
    memory_mb: int = 0,
    n_workers: int = 1,
) -> tuple[list[WorkUnit], dict[int, JobReturn]]:
    """Validate every job, set aside those already finished, group the rest into work units.

    Args:
        memory_mb: memory each batch may use, MiB (0: what the machine has available).
        n_workers: processes the units will be spread over (a large batch is halved while
            a worker would be idle: ``replica_groups.spread_batches``).
        finished: {config hash: its FINISHED run} of a resumed parent (``resume``): those jobs
            are not run again.

    Returns:
        (the units, largest first, the JobReturns of invalid and skipped jobs by job number).
    """
    composer = shared_composer(hydra_context, config)
    configs: list[Config | None] = []
    sweep_configs: dict[int, DictConfig] = {}
    invalid: dict[int, JobReturn] = {}
    not_applicable: dict[str, list[Sequence[str]]] = {}  # {reason: the jobs left out for it}
    for offset, overrides in enumerate(job_overrides):
        number = initial_job_idx + offset

        def validate(offset: int = offset, overrides: Sequence[str] = overrides) -> Config:
            sweep_configs[offset] = composer.compose(initial_job_idx + offset, overrides)
            return to_config(sweep_configs[offset])

        decision = decide_job(
            validate, lambda typed: (finished or {}).get(training_config_hash(typed))
        )
        configs.append(decision.config if decision.outcome == JobOutcome.TRAINED else None)
        if decision.outcome != JobOutcome.TRAINED:
            invalid[number] = decided_job(overrides, decision)
        if decision.outcome == JobOutcome.NOT_APPLICABLE:
            not_applicable.setdefault(str(decision.error), []).append(overrides)
    for reason, left in not_applicable.items():
        # One line per reason: a study sweeps seeds, so a choice that does not fit the data
        # leaves out as many jobs as it has seeds, all for the same reason.
        others = f" and {len(left) - 1} more like it" if len(left) > 1 else ""
        log.warning("job %s%s left out: %s", " ".join(left[0]), others, reason)
    left_out = count_outcomes(list(invalid.values()), JobOutcome.NOT_APPLICABLE)
    if left_out:
        progress.leave_out(Path(str(config.hydra.sweep.dir)) / PROGRESS_FILE, left_out)
    skipped = count_outcomes(list(invalid.values()), JobOutcome.SKIPPED)
    if skipped:
        log.info(
            "%d jobs skipped: their config already FINISHED under the parent run (or diverged "
            "there: a measured outcome)",
            skipped,
        )
    # group_jobs places only the jobs to train (configs that are not None); it imports no
    # TensorFlow, so a finished study resumed never does.
    typed_configs = {i: c for i, c in enumerate(configs) if c is not None}
    units = []
    # Handed out largest first: the small batches even out the workers' last round.
    batches = longest_first(spread_batches(group_jobs(configs, max_replicas), n_workers))
    for index, members in enumerate(batches, start=1):
        jobs = tuple((initial_job_idx + i, tuple(job_overrides[i])) for i in members)
        units.append(
            WorkUnit(
                jobs,
                tuple(sweep_configs[i] for i in members),
                len(members) > 1,
                f"{sweep_name}#{index}",
                memory_mb * 2**20 if memory_mb > 0 else None,
                tuple(typed_configs[i] for i in members),
            )
        )
    return units, invalid


def spread_units(units: Sequence[WorkUnit], n_workers: int, sweep_name: str) -> list[WorkUnit]:
    """``replica_groups.spread_batches`` on planned units: halve the largest replica batch while
    a worker (a Ray slot) would be idle; units are renamed ``<sweep>#<n>`` in their new order.

    Args:
        units: the units as ``plan_units`` made them.
        n_workers: units that run at once.
        sweep_name: the sweep directory's name (the units' names).

    Returns:
        The units, a halved one's halves in its place.
    """
    starts = [0]
    for unit in units:
        starts.append(starts[-1] + len(unit.jobs))
    # Only replica batches are halved: a job that runs alone stays a unit of one.
    batches = [list(range(starts[i], starts[i + 1])) for i in range(len(units))]
    spread = spread_batches(
        [b for b, u in zip(batches, units, strict=True) if u.replicated], n_workers
    )
    alone = [b for b, u in zip(batches, units, strict=True) if not u.replicated]
    by_start = {b[0]: b for b in [*spread, *alone]}
    result: list[WorkUnit] = []
    for members in (by_start[k] for k in sorted(by_start)):
        owner = next(i for i in range(len(units)) if starts[i] <= members[0] < starts[i + 1])
        unit = units[owner]
        part = slice(members[0] - starts[owner], members[-1] - starts[owner] + 1)
        result.append(
            dataclasses.replace(
                unit,
                jobs=unit.jobs[part],
                sweep_configs=unit.sweep_configs[part],
                replicated=unit.replicated and len(members) > 1,
                name=f"{sweep_name}#{len(result) + 1}",
                configs=unit.configs[part] if unit.configs is not None else None,
            )
        )
    return result


@dataclass(frozen=True)
class _CurrentJob:
    """Where the job being run (``run_batch_job`` or Hydra's ``run_job``) records itself."""

    output_dir: Path
    overrides: list[str]
    parent_run_id: str | None
    log_file: Path

    @classmethod
    def get(cls) -> _CurrentJob:
        from xent_tf.launch.callback import parent_for_sweep

        hydra_config = HydraConfig.get()
        output_dir = Path(hydra_config.runtime.output_dir)
        parent = parent_for_sweep(Path(hydra_config.sweep.dir))
        return cls(
            output_dir,
            list(hydra_config.overrides.task),
            parent.run_id if parent else None,
            output_dir / f"{hydra_config.job.name}.log",
        )


def _record_task(
    batch: TrainedBatch, replica: int, unit_name: str
) -> Callable[[DictConfig], float]:
    """The task function ``run_batch_job`` calls for one replica: record its MLflow run."""

    def record(_: DictConfig) -> float:
        from xent_tf.train.replica_batch import record_outcome

        job = _CurrentJob.get()
        try:
            summary = record_outcome(
                batch,
                replica,
                job.output_dir,
                job.overrides,
                job.parent_run_id,
                None,  # named by identity.run_identity, as run.py's jobs are
                job.log_file,
                unit_name,
            )
        except Exception as error:
            return sweep_goes_on(error)
        return summary.history[-1].val_loss

    return record


def execute_unit(
    unit: WorkUnit,
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> list[JobReturn]:
    """Run one work unit (in this process or a joblib worker) and return its jobs' results."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_configs = unit.sweep_configs

    def run(sweep_config: DictConfig, task: TaskFunction) -> JobReturn:
        # run_job sets the job's HydraConfig itself (a copy of the hydra node each time).
        return run_job(
            hydra_context=hydra_context,
            task_function=task,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    if not unit.replicated:
        return [run(sweep_config, task_function) for sweep_config in sweep_configs]
    from xent_tf.train.replica_batch import train_batch
    from xent_tf.train.replicas import NotReplicableError

    HydraConfig.instance().set_config(sweep_configs[0])
    try:
        configs = unit.configs or tuple(to_config(c) for c in sweep_configs)
        batch = train_batch(list(configs), unit.memory_bytes, unit.gpu_share)
    except NotReplicableError as error:
        log.warning("%s cannot train as replicas (%s): its jobs run one by one", unit.name, error)
        return [run(sweep_config, task_function) for sweep_config in sweep_configs]
    except Exception as error:
        # Nothing of the batch trained (e.g. it does not fit in memory): every job gets a
        # FAILED run with the reason, as a job that fails on its own does, and the sweep goes on.
        log.error("%s failed before training: %s: %s", unit.name, type(error).__name__, error)
        return [
            run_batch_job(hydra_context, _failed_batch_task(error), sweep_config)
            for sweep_config in sweep_configs
        ]
    progress.jobs_trained(Path(str(config.hydra.sweep.dir)) / PROGRESS_FILE, len(sweep_configs))
    return [
        run_batch_job(hydra_context, _record_task(batch, replica, unit.name), sweep_config)
        for replica, sweep_config in enumerate(sweep_configs)
    ]


def _failed_batch_task(error: Exception) -> Callable[[DictConfig], float]:
    """The task function of a job whose batch failed before training: a FAILED run saying why."""

    def fail(task_config: DictConfig) -> float:
        from xent_tf.track import writing
        from xent_tf.train.pipeline import recorded_run
        from xent_tf.train.runtime import DeviceChoice

        job = _CurrentJob.get()
        config = to_config(task_config)
        try:
            with recorded_run(
                config,
                DeviceChoice("-", "none", "nothing trained: the replica batch failed first"),
                job.overrides,
                job.parent_run_id,
                None,
                job.log_file,
            ) as recorder:
                # The report places a failed run in its variant by its params.
                recorder.log_params(writing.flatten(dataclasses.asdict(config)))
                raise error
        except Exception as failure:
            return sweep_goes_on(failure)

    return fail


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    n_jobs: int,
    max_replicas: int,
    memory_mb: int = 0,
) -> list[JobReturn]:
    """Launch a sweep's jobs as replica batches.

    Args:
        hydra_context: Hydra's context (config loader, callbacks).
        task_function: the entry point's task function, for jobs that run on their own.
        config: the sweep's config.
        job_overrides: every job's overrides.
        initial_job_idx: the first job's number.
        n_jobs: worker processes when there are several units (1: all in this process).
        max_replicas: most replicas per batch.
        memory_mb: memory each batch may use, MiB (0: what the machine has available).

    Returns:
        One JobReturn per job, in the order of ``job_overrides``.
    """
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # A process that runs several sweeps keeps its workers (experiments/reproduce.py): they
    # have TensorFlow imported already, so even a one-unit sweep goes to them.
    pool = kept_pool()
    units, returns = plan_units(
        hydra_context,
        config,
        job_overrides,
        initial_job_idx,
        max_replicas,
        sweep_dir.name,
        read_finished(sweep_dir),
        memory_mb,
        pool.n_workers if pool is not None else n_jobs,
    )
    left_out = count_outcomes(list(returns.values()), JobOutcome.NOT_APPLICABLE)
    log.info(
        "%d jobs%s in %d units (%s); sweep output dir: %s",
        len(job_overrides),
        f", {left_out} left out," if left_out else "",
        len(units),
        ", ".join(f"{len(u.jobs)}{' replicas' if u.replicated else ' job'}" for u in units),
        sweep_dir,
    )
    state = Singleton.get_state()
    workers = min(n_jobs, len(units))
    if workers <= 1 and pool is None:
        results = [execute_unit(u, hydra_context, config, task_function, state) for u in units]
    else:
        started_ms = int(time.time() * 1000)

        def lost(index: int, death: WorkerDeath) -> list[JobReturn]:
            unit = units[index]
            jobs = [
                (to_config(c), list(o))
                for c, (_, o) in zip(unit.sweep_configs, unit.jobs, strict=True)
            ]
            return record_lost_jobs(sweep_dir, death, jobs, started_ms)

        tasks = [
            functools.partial(execute_unit, u, hydra_context, config, task_function, state)
            for u in units
        ]
        if pool is not None:
            results = pool.run(tasks, lost)
        else:
            results = run_tasks(tasks, workers, lost, preload_job_modules)
    for unit, unit_returns in zip(units, results, strict=True):
        for (number, _), ret in zip(unit.jobs, unit_returns, strict=True):
            returns[number] = ret
    return [returns[initial_job_idx + i] for i in range(len(job_overrides))]


def launch_one_by_one(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Every job in this process, one after another, as Hydra's basic launcher runs them.

    For an app that is not xent-tf's: its task function runs each job, its return value and
    status are the job's own, and a job that does not compose raises Hydra's error.

    Args:
        hydra_context: Hydra's context (config loader, callbacks).
        task_function: the app's task function.
        config: the sweep's config.
        job_overrides: every job's overrides.
        initial_job_idx: the first job's number.

    Returns:
        One JobReturn per job, in order.
    """
    log.info("Launching %d jobs locally", len(job_overrides))
    returns = []
    for offset, overrides in enumerate(job_overrides):
        number = initial_job_idx + offset
        log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = number
            sweep_config.hydra.job.num = number
        returns.append(
            run_job(
                hydra_context=hydra_context,
                task_function=task_function,
                config=sweep_config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        )
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return returns
