"""Worker processes for a sweep's jobs, where a worker that dies fails only the job it ran.

joblib's loky pool (what Hydra's joblib launcher uses) treats one dead worker (SIGKILL, the
kernel's OOM killer) as a broken pool: every pending and running task fails with
``TerminatedWorkerError`` and the sweep aborts. Here each worker is a process of its own with
its own pipe, so the pool knows which task each worker holds: when a worker dies, that task's
result is what ``on_death`` makes of it, a new worker takes its place, and the other tasks go on.
Tasks and results travel cloudpickled (a Hydra task function is often defined in ``__main__``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, TypeVar

import cloudpickle

log = logging.getLogger(__name__)

T = TypeVar("T")
# prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerDeath:
    """How a worker process ended while it held a task.

    Attributes:
        pid: the worker's process id (the ``pid`` tag of the runs it opened); 0 when unknown.
        exitcode: its exit code; negative: killed by that signal.
        cause: how it ended, when only another system's report says it (Ray reports a lost
            worker without its process or signal); replaces the exit code in the description.
    """

    pid: int
    exitcode: int
    cause: str = ""

    @property
    def description(self) -> str:
        """ "worker died (signal 9, SIGKILL) in process N", "worker died (exit code 1) in
        process N" or "worker died (<cause>)"."""
        if self.cause:
            where = f" in process {self.pid}" if self.pid else ""
            return f"worker died ({self.cause}){where}"
        if self.exitcode < 0:
            number = -self.exitcode
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = "unknown signal"
            return f"worker died (signal {number}, {name}) in process {self.pid}"
        return f"worker died (exit code {self.exitcode}) in process {self.pid}"


def _serve(connection: Connection, initializer: Callable[[], object] | None) -> None:
    """A worker's loop: run each task it is sent, send back ("ok"|"error", payload)."""
    if initializer is not None:
        initializer()
    while True:
        try:
            message = connection.recv_bytes()
        except EOFError:  # the pool is done with this worker (or gone)
            _exit_now()
        task = cloudpickle.loads(message)
        try:
            reply = ("ok", task())
        except BaseException as error:  # the pool re-raises it where the task was submitted
            reply = ("error", error)
        connection.send_bytes(cloudpickle.dumps(reply))


def _exit_now() -> NoReturn:
    """End an idle worker at once, its output flushed: every reply is sent, so nothing is left
    to do, and an interpreter with TensorFlow loaded takes seconds to tear itself down."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@dataclass(eq=False)  # a worker is itself: found in lists by identity
class _Worker:
    process: BaseProcess
    connection: Connection
    task: int | None = None
    token: int = 0  # of its background task (``submit``)


class WorkerPool:
    """Worker processes that run rounds of tasks; a dead worker fails only the task it held.

    ``run_tasks`` makes one for a single round. A process that runs several sweeps one after
    another (``experiments/reproduce.py``) keeps one for all of them (``keep_workers``): each
    worker imports TensorFlow once, and starts doing so while the first sweep is still being
    planned.
    """

    def __init__(self, n_workers: int, initializer: Callable[[], object] | None = None) -> None:
        """
        Args:
            n_workers: most worker processes at once.
            initializer: run once in each worker as it starts (e.g. imports every task needs).
        """
        if n_workers < 1:
            raise ValueError(f"n_workers={n_workers} must be >= 1")
        self.n_workers = n_workers
        self._initializer = initializer
        self._idle: list[_Worker] = []
        # Workers running a task handed over with ``submit``, and what those tasks raised.
        self._background: list[_Worker] = []
        self._background_errors: list[BaseException] = []
        self._background_results: dict[int, Any] = {}
        self._submitted = 0

    def start(self, n_workers: int | None = None) -> None:
        """Start workers now (up to ``n_workers``, default all), without waiting for them."""
        wanted = self.n_workers if n_workers is None else min(n_workers, self.n_workers)
        running = len(self._idle) + len(self._background)
        self._idle.extend(_start_worker(self._initializer) for _ in range(wanted - running))

    def _drop_dead_idle(self) -> None:
        """Forget the idle workers that died while idle (the next start replaces them)."""
        _stop([w for w in self._idle if not w.process.is_alive()])
        self._idle = [w for w in self._idle if w.process.is_alive()]

    def submit(self, task: Callable[[], object]) -> int:
        """Run ``task`` in a worker while the caller goes on (e.g. a sweep's report while the
        next sweep is planned). ``drain`` gives its result, or raises what it raised (or its
        worker's death). The next ``run`` counts the worker busy until it is done.

        Args:
            task: an argument-less callable (picklable with cloudpickle).

        Returns:
            The task's token (its result's key in what ``drain`` returns).
        """
        self._drop_dead_idle()
        if not self._idle and len(self._background) >= self.n_workers:
            self._collect_background()
        self.start(len(self._background) + 1)
        worker = self._idle.pop(0)
        self._submitted += 1
        worker.token = self._submitted
        worker.connection.send_bytes(cloudpickle.dumps(task))
        self._background.append(worker)
        return worker.token

    def _collect_background(self) -> None:
        """Wait until at least one background task has ended; take the replies of all that have."""
        for worker in _ready(self._background):
            if self._finish_background(worker):
                self._idle.append(worker)

    def _finish_background(self, worker: _Worker) -> bool:
        """Record how ``worker``'s background task ended.

        Returns:
            Whether the worker can take another task (False: it died).
        """
        self._background.remove(worker)
        reply = _receive(worker.connection)
        if reply is None:
            death = _death_of(worker)
            worker.connection.close()
            self._background_errors.append(RuntimeError(f"a background task's {death.description}"))
            return False
        status, value = reply
        if status == "error":
            self._background_errors.append(value)
        else:
            self._background_results[worker.token] = value
        return True

    def drain(self) -> dict[int, Any]:
        """Wait for every background task (``submit``).

        Returns:
            {token: result} of the background tasks that ended since the last drain.

        Raises:
            BaseException: the first error a background task raised, or its worker's death.
        """
        while self._background:
            self._collect_background()
        errors, self._background_errors = self._background_errors, []
        results, self._background_results = self._background_results, {}
        if errors:
            raise errors[0]
        return results

    def run(
        self, tasks: Sequence[Callable[[], T]], on_death: Callable[[int, WorkerDeath], T]
    ) -> list[T]:
        """Run every task in the pool's workers.

        Args:
            tasks: argument-less callables (picklable with cloudpickle).
            on_death: the result of task ``i`` whose worker died, given how it died.

        Returns:
            Each task's result, in the order of ``tasks``.

        Raises:
            BaseException: the first exception a task raised (the pool's workers are stopped;
                the next round starts new ones).
        """
        results: dict[int, T] = {}
        pending = list(range(len(tasks)))
        self._drop_dead_idle()
        # Every worker starts (and imports what its initializer imports) before the first
        # task is handed out: handing out blocks until the worker reads its task, which it
        # does only once started, and a task larger than the pipe's buffer would otherwise
        # hold the next worker's start until the previous one has imported TensorFlow.
        self.start(len(tasks) + len(self._background))
        # A worker still busy with a background task takes a task once that one is done.
        workers, self._idle = self._idle, []

        def hand_out(worker: _Worker) -> None:
            index = pending.pop(0)
            worker.task = index
            worker.connection.send_bytes(cloudpickle.dumps(tasks[index]))

        try:
            for worker in workers[: len(tasks)]:
                hand_out(worker)
            while len(results) < len(tasks):
                busy = [w for w in workers if w.task is not None]
                ready = _ready(busy + self._background)
                for worker in [w for w in self._background if w in ready]:
                    if self._finish_background(worker):
                        workers.append(worker)
                        if pending:
                            hand_out(worker)
                for worker in busy:
                    if worker not in ready:
                        continue
                    assert worker.task is not None
                    index = worker.task
                    reply = _receive(worker.connection)
                    if reply is None:  # no answer: the process is gone
                        death = _death_of(worker)
                        log.error(
                            "task %d: %s; a new worker takes its place", index, death.description
                        )
                        results[index] = on_death(index, death)
                        workers.remove(worker)
                        worker.connection.close()
                        if pending:
                            workers.append(_start_worker(self._initializer))
                            hand_out(workers[-1])
                        continue
                    status, value = reply
                    worker.task = None
                    if status == "error":
                        raise value
                    results[index] = value
                    if pending:
                        hand_out(worker)
        except BaseException:
            _stop(workers)
            raise
        self._idle = workers
        return [results[i] for i in range(len(tasks))]

    def close(self) -> None:
        """Stop the workers (each sees its pipe close and exits); background tasks still
        running are stopped with them (``drain`` first to wait for them)."""
        workers, self._idle = self._idle + self._background, []
        self._background = []
        _stop(workers)


def _ready(workers: Sequence[_Worker]) -> list[_Worker]:
    """Wait until one of ``workers`` has replied or ended; those that have, in order."""
    if not workers:
        return []
    ready = wait([w.connection for w in workers] + [w.process.sentinel for w in workers])
    return [w for w in workers if w.connection in ready or w.process.sentinel in ready]


def _stop(workers: Sequence[_Worker]) -> None:
    """Close each worker's pipe (its loop sees EOF and exits); kill any that lingers."""
    for worker in workers:
        worker.connection.close()
    for worker in workers:
        worker.process.join(timeout=10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()


_kept: WorkerPool | None = None


@contextmanager
def keep_workers(
    n_workers: int, initializer: Callable[[], object] | None = None
) -> Iterator[WorkerPool]:
    """Keep one pool of started workers for every sweep this process launches inside.

    Args:
        n_workers: worker processes.
        initializer: run once in each worker as it starts.

    Yields:
        The pool (``kept_pool`` returns it meanwhile); its workers start at once.
    """
    global _kept
    pool = WorkerPool(n_workers, initializer)
    pool.start()
    _kept = pool
    try:
        yield pool
    finally:
        _kept = None
        pool.close()


def kept_pool() -> WorkerPool | None:
    """The pool ``keep_workers`` keeps for this process's sweeps, if any."""
    return _kept


def run_tasks(
    tasks: Sequence[Callable[[], T]],
    n_workers: int,
    on_death: Callable[[int, WorkerDeath], T],
    initializer: Callable[[], object] | None = None,
) -> list[T]:
    """Run every task in up to ``n_workers`` spawned processes; a dead worker fails one task.

    Args:
        tasks: argument-less callables (picklable with cloudpickle).
        n_workers: most worker processes at once.
        on_death: the result of task ``i`` whose worker died, given how it died.
        initializer: run once in each worker as it starts (e.g. imports every task needs).

    Returns:
        Each task's result, in the order of ``tasks``.

    Raises:
        BaseException: the first exception a task raised (the other workers are stopped).
    """
    pool = WorkerPool(n_workers, initializer)
    try:
        return pool.run(tasks, on_death)
    finally:
        pool.close()


def _start_worker(initializer: Callable[[], object] | None) -> _Worker:
    """A spawned worker process running ``_serve``, and our end of its pipe."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs, initializer), daemon=True)
    process.start()
    theirs.close()
    return _Worker(process, ours)


def _death_of(worker: _Worker) -> WorkerDeath:
    """How a worker that stopped answering ended (waits for its process to be gone)."""
    worker.process.join()
    return WorkerDeath(worker.process.pid or 0, worker.process.exitcode or 0)


class SupervisedWorker:
    """One spawned worker process that runs tasks one at a time, and is replaced when it dies.

    For a process that must survive the death of the work it hands out (a Ray task whose job
    is killed by the OOM killer): the job runs in the worker, so this process sees how it ended.
    The worker is started at the first task and kept for the next ones (TensorFlow is imported
    once). On Linux the kernel kills the worker (SIGKILL) when this process dies: the two live
    and die as one, as the job would inside this process, and no orphan trains on.
    """

    def __init__(self, initializer: Callable[[], object] | None = None) -> None:
        self._initializer = functools.partial(_die_with_parent, os.getpid(), initializer)
        self._worker: _Worker | None = None

    def run(self, task: Callable[[], T]) -> T | WorkerDeath:
        """Run ``task`` in the worker.

        Args:
            task: an argument-less callable (picklable with cloudpickle).

        Returns:
            Its result, or how the worker died while running it (the next task gets a new
            worker).

        Raises:
            BaseException: what the task raised.
        """
        if self._worker is None or not self._worker.process.is_alive():
            self._worker = _start_worker(self._initializer)
        worker = self._worker
        worker.connection.send_bytes(cloudpickle.dumps(task))
        wait([worker.connection, worker.process.sentinel])
        reply = _receive(worker.connection)
        if reply is None:
            self._worker = None
            worker.connection.close()
            death = _death_of(worker)
            log.error("%s while it ran a task; a new worker runs the next one", death.description)
            return death
        status, value = reply
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop the worker (it sees its pipe close and exits); the next task starts a new one."""
        if self._worker is not None:
            _stop([self._worker])
            self._worker = None


def _die_with_parent(parent_pid: int, initializer: Callable[[], object] | None) -> None:
    """In a worker: have the kernel SIGKILL it when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``; elsewhere nothing), then run ``initializer``."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            log.warning("worker %d will outlive its parent: prctl failed", os.getpid())
        if os.getppid() != parent_pid:  # the parent died before we asked
            os._exit(1)
    if initializer is not None:
        initializer()


def _receive(connection: Connection) -> tuple[str, Any] | None:
    """The worker's reply, or None when its end of the pipe closed without one."""
    try:
        if not connection.poll():
            return None
        return cloudpickle.loads(connection.recv_bytes())
    except (EOFError, OSError):
        return None


def preload_job_modules() -> None:
    """Import what every training job imports (TensorFlow, Keras, MLflow, matplotlib): the
    initializer of the sweeps' worker processes, so a worker is ready before its first job."""
    for module in ("xent_tf.train.pipeline", "xent_tf.report.plotting", "xent_tf.track.writing"):
        importlib.import_module(module)
