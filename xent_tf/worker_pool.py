"""Worker processes for a sweep's jobs, where a worker that dies fails only the job it ran.

joblib's loky pool (what Hydra's joblib launcher uses) treats one dead worker (SIGKILL, the
kernel's OOM killer) as a broken pool: every pending and running task fails with
``TerminatedWorkerError`` and the sweep aborts. Here each worker is a process of its own with
its own pipe, so the pool knows which task each worker holds: when a worker dies, that task's
result is what ``on_death`` makes of it, a new worker takes its place, and the other tasks go on.
Tasks and results travel cloudpickled (a Hydra task function is often defined in ``__main__``).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from joblib.externals import cloudpickle

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerDeath:
    """How a worker process ended while it held a task.

    Attributes:
        pid: the worker's process id (the ``pid`` tag of the runs it opened).
        exitcode: its exit code; negative: killed by that signal.
    """

    pid: int
    exitcode: int

    @property
    def description(self) -> str:
        """ "worker died (signal 9, SIGKILL)" or "worker died (exit code 1)"."""
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
        except EOFError:  # the pool is gone
            return
        task = cloudpickle.loads(message)
        try:
            reply = ("ok", task())
        except BaseException as error:  # the pool re-raises it where the task was submitted
            reply = ("error", error)
        connection.send_bytes(cloudpickle.dumps(reply))


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection
    task: int | None = None


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
    if n_workers < 1:
        raise ValueError(f"n_workers={n_workers} must be >= 1")
    context = multiprocessing.get_context("spawn")
    results: dict[int, T] = {}
    pending = list(range(len(tasks)))
    workers: list[_Worker] = []

    def start_worker() -> _Worker:
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, initializer), daemon=True)
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def hand_out(worker: _Worker) -> None:
        index = pending.pop(0)
        worker.task = index
        worker.connection.send_bytes(cloudpickle.dumps(tasks[index]))

    try:
        # Every worker starts (and imports what its initializer imports) before the first
        # task is handed out: handing out blocks until the worker reads its task, which it
        # does only once started, and a task larger than the pipe's buffer would otherwise
        # hold the next worker's start until the previous one has imported TensorFlow.
        workers.extend(start_worker() for _ in range(min(n_workers, len(tasks))))
        for worker in workers:
            hand_out(worker)
        while len(results) < len(tasks):
            busy = [w for w in workers if w.task is not None]
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.connection not in ready and worker.process.sentinel not in ready:
                    continue
                assert worker.task is not None
                index = worker.task
                reply = _receive(worker.connection)
                if reply is None:  # no answer: the process is gone
                    worker.process.join()
                    death = WorkerDeath(worker.process.pid or 0, worker.process.exitcode or 0)
                    log.error("task %d: %s; a new worker takes its place", index, death.description)
                    results[index] = on_death(index, death)
                    workers.remove(worker)
                    worker.connection.close()
                    if pending:
                        workers.append(start_worker())
                        hand_out(workers[-1])
                    continue
                status, value = reply
                if status == "error":
                    raise value
                results[index] = value
                worker.task = None
                if pending:
                    hand_out(worker)
    finally:
        for worker in workers:
            worker.connection.close()  # the worker's recv sees EOF and returns
        for worker in workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
    return [results[i] for i in range(len(tasks))]


def _receive(connection: Connection) -> tuple[str, Any] | None:
    """The worker's reply, or None when its end of the pipe closed without one."""
    try:
        if not connection.poll():
            return None
        return cloudpickle.loads(connection.recv_bytes())
    except (EOFError, OSError):
        return None
