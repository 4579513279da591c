"""``hydra.launcher.backend=ray``: a study's replica batches as Ray tasks, on any number of nodes.

The jobs are planned exactly as on one machine (``replica_sweep.plan_units``: composed once per
set of group choices, invalid ones named, finished ones skipped, the rest grouped into replica
batches and spread over the units the cluster runs at once), and each unit is one Ray task that
asks for its resources (``launch.ray_placement.unit_resources``: CPUs, and a GPU only when
``trainer.device`` wants one and the cluster has one). On its node the task runs the unit in a
process its Ray worker supervises (``worker_pool.SupervisedWorker``, kept for the worker's next
units, replaced when Ray gives the worker other GPUs), which trains the batch and records each
replica as the MLflow run its config would have had alone, tagged with the node and GPUs
(``train.placement.NODE_TAG``/``GPUS_TAG``).

A unit lost with its node (or its Ray worker) costs only its jobs: each one that had not
FINISHED gets a FAILED run naming the node (``launch.lost_jobs.record_worker_death``, matched
by config hash), the other units go on, and ``+resume=matching`` trains only those jobs. Ray's
retries stay off (``max_retries: 0``); with them on, a retried unit first drops the jobs that
FINISHED under the sweep's parent meanwhile, so no job ever has two FINISHED runs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from xent_tf.config import to_config
from xent_tf.launch.callback import ParentRun, parent_for_sweep
from xent_tf.launch.jobs import JobOutcome, decided_job
from xent_tf.launch.lost_jobs import record_lost_jobs
from xent_tf.launch.ray_placement import (
    UnitResources,
    concurrent_units,
    init_arguments,
    unit_resources,
)
from xent_tf.launch.replica_sweep import WorkUnit, execute_unit, plan_units, spread_units
from xent_tf.launch.worker_pool import SupervisedWorker, WorkerDeath, preload_job_modules
from xent_tf.track.resume import read_finished, training_config_hash

log = logging.getLogger(__name__)

# How often the launcher asks where units have started while it waits for them.
_PLACES_POLL_SECONDS = 2.0

# The process each Ray worker runs its units in, and the GPUs it was started with.
_supervised: SupervisedWorker | None = None
_supervised_devices: str | None = None


class UnitPlaces:
    """A Ray actor on the launching node: which node each unit started on.

    A task lost with its node cannot say where it was; the launcher asks this actor, so a lost
    unit's runs name the node. It lives on the launcher's own node (never on a worker node that
    may go away) and asks for no CPU.
    """

    def __init__(self) -> None:
        self._nodes: dict[int, str] = {}

    def started(self, unit: int, node_id: str) -> None:
        """Unit ``unit`` is running on node ``node_id``."""
        self._nodes[unit] = node_id

    def where(self, unit: int) -> str | None:
        """The node unit ``unit`` last started on (None: it never started)."""
        return self._nodes.get(unit)

    def started_units(self) -> dict[int, str]:
        """{unit: node} of every unit that has started."""
        return dict(self._nodes)


def supervised_worker(devices: str) -> SupervisedWorker:
    """This Ray worker's supervised process for a unit that may see the GPUs ``devices``.

    A process's CUDA devices are fixed when it starts (TensorFlow reads
    ``CUDA_VISIBLE_DEVICES`` once): a process started for other GPUs, or for none, would train
    on the wrong card, so it is replaced (the new one started with ``devices`` visible);
    otherwise it is kept (TensorFlow imported once).

    Args:
        devices: the CUDA device ids the unit was given, comma-separated ("": none).

    Returns:
        The process to run the unit in.
    """
    global _supervised, _supervised_devices
    if _supervised is None or devices != _supervised_devices:
        if _supervised is not None:
            _supervised.close()
        # The supervised process is spawned (on its first task) with this environment.
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
        _supervised = SupervisedWorker(preload_job_modules)
        _supervised_devices = devices
    return _supervised


def run_unit_on_node(
    unit: WorkUnit,
    index: int,
    places: Any,
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    parent: ParentRun | None,
    skip_finished: bool,
) -> list[JobReturn] | WorkerDeath:
    """The Ray task: run one unit in the process this Ray worker supervises.

    Args:
        unit: the unit.
        index: its number in the sweep's plan (for ``places``).
        places: the ``UnitPlaces`` actor.
        hydra_context: Hydra's context (its callbacks hand each job the parent run).
        config: the sweep's config.
        task_function: the entry point's task function (jobs that run alone).
        singleton_state: Hydra's singletons of the launching process.
        parent: the sweep's parent run (None: tracking off).
        skip_finished: leave out the jobs already FINISHED under ``parent`` (a retried unit).

    Returns:
        Each job's result, or how the supervised process died.
    """
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    ray.get(places.started.remote(index, node_id))
    gpu_ids = ray.get_gpu_ids()
    # Ray sets CUDA_VISIBLE_DEVICES for a task given GPUs and leaves it as it was for one given
    # none: a unit without a GPU must see none (TensorFlow would take every card it sees).
    worker = supervised_worker(os.environ.get("CUDA_VISIBLE_DEVICES", "") if gpu_ids else "")
    from xent_tf.train.placement import placement_tags  # no TensorFlow: a module of its own

    tags = placement_tags(node_id, gpu_ids)
    return worker.run(
        functools.partial(
            _run_unit,
            unit,
            tags,
            hydra_context,
            config,
            task_function,
            singleton_state,
            parent if skip_finished else None,
        )
    )


def _run_unit(
    unit: WorkUnit,
    tags: Mapping[str, str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    finished_under: ParentRun | None,
) -> list[JobReturn]:
    """In the supervised process: tag the runs with where they train, run the unit.

    Args:
        finished_under: leave out the jobs that FINISHED under this parent (None: run all).
    """
    from xent_tf.train.placement import record_placement

    record_placement(tags)
    if finished_under is None:
        return execute_unit(unit, hydra_context, config, task_function, singleton_state)
    from xent_tf.track.recovery import finished_children

    done = finished_children(
        finished_under.tracking_uri, finished_under.run_id, finished_under.experiment_id
    )
    configs = unit.configs or tuple(to_config(c) for c in unit.sweep_configs)
    keep = [i for i, c in enumerate(configs) if training_config_hash(c) not in done]
    results: dict[int, JobReturn] = {}
    for i, c in enumerate(configs):
        if i not in keep:
            results[i] = _finished_before(
                list(unit.jobs[i][1]), done[training_config_hash(c)].val_loss
            )
    if keep:
        rest = dataclasses.replace(
            unit,
            jobs=tuple(unit.jobs[i] for i in keep),
            sweep_configs=tuple(unit.sweep_configs[i] for i in keep),
            replicated=unit.replicated and len(keep) > 1,
            configs=tuple(configs[i] for i in keep),
        )
        ran = execute_unit(rest, hydra_context, config, task_function, singleton_state)
        results.update(zip(keep, ran, strict=True))
    if len(keep) < len(configs):
        log.info("%s: %d jobs had FINISHED already (a retry)", unit.name, len(configs) - len(keep))
    return [results[i] for i in range(len(configs))]


def _finished_before(overrides: list[str], val_loss: float) -> JobReturn:
    """A retried unit's job that had FINISHED: its recorded val loss, not a second run."""
    return decided_job(overrides, JobOutcome.SKIPPED, val_loss)


def lost_unit(
    error: Exception,
    node_id: str | None,
    nodes: Sequence[Mapping[str, Any]],
    node_died: bool = False,
) -> WorkerDeath:
    """How a unit was lost, as Ray reported it, naming its node.

    Args:
        error: Ray's error (``NodeDiedError``, ``WorkerCrashedError``, ...).
        node_id: the node the unit started on (None: not known).
        nodes: ``ray.nodes()`` now (whether that node is still alive, its address).
        node_died: Ray said the node died (``NodeDiedError``): its GCS may not list it as
            dead yet.

    Returns:
        A death without a process ("worker died (Ray lost node <id> at <address>: ...)").
    """
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    info = next((n for n in nodes if n.get("NodeID") == node_id), None)
    if node_id is None:
        where = "Ray lost the unit's worker"
    elif not node_died and info is not None and info.get("Alive", True):
        where = f"Ray lost the worker on node {node_id} ({info.get('NodeManagerAddress', '?')})"
    else:
        address = info.get("NodeManagerAddress", "?") if info else "?"
        where = f"Ray lost node {node_id} at {address}"
    cause = f"{where}: {type(error).__name__}"
    return WorkerDeath(0, 0, f"{cause}: {first_line}" if first_line else cause)


def _request(
    unit: WorkUnit, cluster_gpus: float, cpus_per_unit: float, gpus_per_unit: float
) -> UnitResources:
    """What ``unit`` asks for: its runs' ``trainer.device`` (one graph key, one device)."""
    if unit.configs:
        device = unit.configs[0].trainer.device
    else:
        device = str(OmegaConf.select(unit.sweep_configs[0], "trainer.device", default="auto"))
    return unit_resources(device, cluster_gpus, cpus_per_unit, gpus_per_unit)


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    max_replicas: int,
    memory_mb: int,
    cpus_per_unit: float,
    gpus_per_unit: float,
    ray_settings: DictConfig,
) -> list[JobReturn]:
    """Launch a sweep's jobs as replica units on a Ray cluster.

    Args:
        hydra_context: Hydra's context.
        task_function: the entry point's task function.
        config: the sweep's config.
        job_overrides: every job's overrides.
        initial_job_idx: the first job's number.
        max_replicas: most replicas per unit.
        memory_mb: memory a unit's batch may use, MiB (0: the GPU's, else its node's).
        cpus_per_unit: CPUs each unit asks for.
        gpus_per_unit: GPUs (or share of one) a unit that trains on a GPU asks for.
        ray_settings: ``init`` (``ray.init``'s arguments) and ``remote`` (task options, e.g.
            ``max_retries``).

    Returns:
        One JobReturn per job, in the order of ``job_overrides``; a lost unit's jobs return NaN
        and have FAILED runs naming the node.
    """
    import ray

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _start_ray(ray_settings)
    remote_options = OmegaConf.to_container(ray_settings.get("remote", {}), resolve=True) or {}
    assert isinstance(remote_options, dict)
    max_retries = int(remote_options.get("max_retries", 0))
    resources = ray.cluster_resources()
    cluster_cpus, cluster_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    # On the launcher's node (never a worker node that may be lost), without a CPU of its own.
    places = (
        ray.remote(num_cpus=0, max_restarts=0)(UnitPlaces)
        .options(
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False
            )
        )
        .remote()
    )
    # Planned first for one worker: how many units run at once depends on their devices.
    units, returns = plan_units(
        hydra_context,
        config,
        job_overrides,
        initial_job_idx,
        max_replicas,
        sweep_dir.name,
        read_finished(sweep_dir),
        memory_mb,
    )
    slots = concurrent_units(
        cluster_cpus,
        cluster_gpus,
        [_request(u, cluster_gpus, cpus_per_unit, gpus_per_unit) for u in units],
    )
    units = spread_units(units, slots, sweep_dir.name)
    requests = [_request(u, cluster_gpus, cpus_per_unit, gpus_per_unit) for u in units]
    units = [
        dataclasses.replace(u, gpu_share=r.num_gpus) if r.num_gpus else u
        for u, r in zip(units, requests, strict=True)
    ]
    nodes_alive = sum(1 for n in ray.nodes() if n.get("Alive"))
    log.info(
        "%d jobs in %d units (%s) on a Ray cluster of %d nodes (%g CPUs, %g GPUs; %d units at "
        "once); sweep output dir: %s",
        len(job_overrides),
        len(units),
        ", ".join(f"{len(u.jobs)}{' replicas' if u.replicated else ' job'}" for u in units),
        nodes_alive,
        cluster_cpus,
        cluster_gpus,
        slots,
        sweep_dir,
    )
    parent = parent_for_sweep(sweep_dir)
    state = Singleton.get_state()
    task = ray.remote(run_unit_on_node)
    started_ms = int(time.time() * 1000)
    pending = {}
    for index, (unit, request) in enumerate(zip(units, requests, strict=True)):
        options = {**remote_options, **request.options(), "name": unit.name}
        reference = task.options(**options).remote(
            unit,
            index,
            places,
            hydra_context,
            config,
            task_function,
            state,
            parent,
            max_retries != 0,
        )
        pending[reference] = index
    announced: set[int] = set()
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=_PLACES_POLL_SECONDS)
        announced |= _announce_starts(places, units, announced)
        if not done:
            continue
        [reference] = done
        index = pending.pop(reference)
        unit = units[index]
        try:
            result = ray.get(reference)
        except ray.exceptions.RayTaskError:
            raise  # the unit itself raised (not a lost node or worker): as the other launchers
        except ray.exceptions.RayError as error:  # NodeDiedError, WorkerCrashedError, OOM...
            node_died = isinstance(error, ray.exceptions.NodeDiedError)
            result = lost_unit(error, _started_on(places, index), ray.nodes(), node_died)
        if isinstance(result, WorkerDeath):
            log.error("%s: %s; its %d jobs FAILED", unit.name, result.description, len(unit.jobs))
            jobs = [
                (to_config(c), list(o))
                for c, (_, o) in zip(unit.sweep_configs, unit.jobs, strict=True)
            ]
            result = record_lost_jobs(sweep_dir, result, jobs, started_ms)
        for (number, _), ret in zip(unit.jobs, result, strict=True):
            returns[number] = ret
    return [returns[initial_job_idx + i] for i in range(len(job_overrides))]


def _announce_starts(places: Any, units: Sequence[WorkUnit], announced: set[int]) -> set[int]:
    """Log where each unit not announced yet has started ("sweep#2: 20 jobs started on Ray
    node <id>"; Ray's own log forwarding folds such lines from several workers into one).

    Returns:
        The units announced now.
    """
    import ray

    try:
        started = ray.get(places.started_units.remote(), timeout=30)
    except ray.exceptions.RayError as error:
        log.warning("could not ask where the units run: %s", error)
        return set()
    new = {i: node for i, node in started.items() if i not in announced}
    for index, node in sorted(new.items()):
        unit = units[index]
        log.info("%s: %d jobs started on Ray node %s", unit.name, len(unit.jobs), node)
    return set(new)


def _started_on(places: Any, index: int) -> str | None:
    """The node unit ``index`` started on, as ``UnitPlaces`` knows it (None: unknown)."""
    import ray

    try:
        return ray.get(places.where.remote(index), timeout=30)
    except ray.exceptions.RayError as error:
        log.warning("could not ask where unit %d ran: %s", index, error)
        return None


def _start_ray(ray_settings: DictConfig) -> None:
    """``ray.init`` with the launcher's settings (a start-only option is dropped, with a
    warning, when joining a running cluster: Ray refuses it there)."""
    import ray

    if ray.is_initialized():
        return
    settings = OmegaConf.to_container(ray_settings.get("init", {}), resolve=True) or {}
    assert isinstance(settings, dict)
    arguments, dropped = init_arguments({str(k): v for k, v in settings.items()}, os.environ)
    if dropped:
        log.warning(
            "joining a running Ray cluster: %s ignored (set where its nodes start, e.g. "
            "ray start --num-cpus)",
            ", ".join(dropped),
        )
    ray.init(**arguments)
