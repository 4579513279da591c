"""The worker pool: a worker that dies fails only the task it held; the others finish."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xent_tf.launch.worker_pool import (
    SupervisedWorker,
    WorkerDeath,
    keep_workers,
    kept_pool,
    run_tasks,
)


def square(value: int) -> tuple[int, int]:
    return value * value, os.getpid()


def die(_: int) -> tuple[int, int]:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def fail(_: int) -> tuple[int, int]:
    raise ValueError("bad task 7")


class Task:
    def __init__(self, function, value: int) -> None:  # type: ignore[no-untyped-def]
        self.function, self.value = function, value

    def __call__(self) -> tuple[int, int]:
        return self.function(self.value)  # type: ignore[no-any-return]


def test_a_killed_worker_fails_its_task_and_a_new_worker_runs_the_rest() -> None:
    deaths: list[tuple[int, WorkerDeath]] = []

    def on_death(index: int, death: WorkerDeath) -> tuple[int, int]:
        deaths.append((index, death))
        return -1, death.pid

    tasks = [Task(square, 2), Task(die, 0), Task(square, 3), Task(square, 4), Task(square, 5)]
    results = run_tasks(tasks, 2, on_death)
    assert [value for value, _ in results] == [4, -1, 9, 16, 25]
    assert len(deaths) == 1 and deaths[0][0] == 1
    death = deaths[0][1]
    assert death.exitcode == -signal.SIGKILL
    assert death.description == f"worker died (signal 9, SIGKILL) in process {death.pid}"
    # The dead worker's pid ran no later task; none ran in this process.
    pids = {pid for _, pid in results}
    assert os.getpid() not in pids and death.pid == results[1][1]
    assert len(pids) >= 2


def test_an_exception_in_a_task_is_raised_where_the_tasks_were_run() -> None:
    with pytest.raises(ValueError, match="bad task 7"):
        run_tasks([Task(square, 1), Task(fail, 0)], 2, lambda i, d: (0, 0))


def test_a_kept_pool_serves_every_round_with_the_same_workers_and_replaces_a_dead_one() -> None:
    def no_death(index: int, death: WorkerDeath) -> tuple[int, int]:
        raise AssertionError(f"task {index}: {death.description}")

    with keep_workers(2) as pool:
        assert kept_pool() is pool
        first = pool.run([Task(square, v) for v in range(4)], no_death)
        second = pool.run([Task(square, v) for v in range(4, 8)], no_death)
        assert [v for v, _ in first + second] == [v * v for v in range(8)]
        workers = {pid for _, pid in first}
        assert {pid for _, pid in second} <= workers and len(workers) == 2  # no new process
        os.kill(next(iter(workers)), signal.SIGKILL)  # dies while idle, between rounds
        time.sleep(0.5)
        third = pool.run([Task(square, v) for v in range(8, 12)], no_death)
        assert [v for v, _ in third] == [v * v for v in range(8, 12)]
        assert len({pid for _, pid in third} - workers) >= 1  # a new worker took its place
    assert kept_pool() is None


def test_an_exit_code_is_described_without_a_signal() -> None:
    assert WorkerDeath(12, 3).description == "worker died (exit code 3) in process 12"


def test_a_supervised_worker_reports_its_death_and_the_next_task_gets_a_new_worker() -> None:
    worker = SupervisedWorker()
    first = worker.run(Task(square, 3))
    assert isinstance(first, tuple) and first[0] == 9
    second = worker.run(Task(square, 4))
    assert isinstance(second, tuple) and second == (16, first[1])  # the same process, kept
    death = worker.run(Task(die, 0))
    assert isinstance(death, WorkerDeath)
    assert death.pid == first[1] and death.exitcode == -signal.SIGKILL
    assert death.description == f"worker died (signal 9, SIGKILL) in process {first[1]}"
    after = worker.run(Task(square, 5))
    assert isinstance(after, tuple) and after[0] == 25
    assert after[1] not in (first[1], os.getpid())
    with pytest.raises(ValueError, match="bad task 7"):
        worker.run(Task(fail, 0))


def test_a_death_known_only_from_another_system_is_described_by_its_cause() -> None:
    assert WorkerDeath(0, 0, "Ray lost the worker: WorkerCrashedError").description == (
        "worker died (Ray lost the worker: WorkerCrashedError)"
    )
    assert WorkerDeath(7, 0, "node gone").description == "worker died (node gone) in process 7"


def test_a_supervised_worker_dies_with_the_process_that_supervises_it(tmp_path: Path) -> None:
    """The supervising process (a Ray worker) is SIGKILLed: its worker, busy with a task, is
    killed with it by the kernel rather than training on as an orphan."""
    script = tmp_path / "supervise.py"
    script.write_text(
        "import os, time\n"
        "from xent_tf.launch.worker_pool import SupervisedWorker\n"
        "def busy():\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    SupervisedWorker().run(busy)\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert supervisor.stdout is not None
    worker = int(supervisor.stdout.readline())
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _alive(worker)
    if survived:
        os.kill(worker, signal.SIGKILL)  # not left behind by a failing test
    assert not survived


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def append_pid(path_and_pause: tuple[str, float]) -> tuple[int, int]:
    path, pause = path_and_pause
    time.sleep(pause)
    with open(path, "a") as out:
        out.write(f"{os.getpid()}\n")
    return 0, os.getpid()


def test_a_background_task_runs_while_rounds_go_on_and_drain_raises_what_it_raised(
    tmp_path: Path,
) -> None:
    def no_death(index: int, death: WorkerDeath) -> tuple[int, int]:
        raise AssertionError(f"task {index}: {death.description}")

    log = tmp_path / "background.txt"
    with keep_workers(2) as pool:
        token = pool.submit(Task(append_pid, (str(log), 1.0)))  # type: ignore[arg-type]
        results = pool.run([Task(square, v) for v in range(6)], no_death)
        assert [v for v, _ in results] == [v * v for v in range(6)]
        assert pool.drain() == {token: (0, int(log.read_text()))}
        assert len(log.read_text().split()) == 1
        assert len({pid for _, pid in results} | {int(log.read_text())}) == 2  # two workers
        # Errors and deaths of background tasks surface at drain, and the pool goes on.
        pool.submit(Task(fail, 0))
        with pytest.raises(ValueError, match="bad task 7"):
            pool.drain()
        pool.submit(Task(die, 0))
        with pytest.raises(RuntimeError, match=r"background task's worker died \(signal 9"):
            pool.drain()
        again = pool.run([Task(square, v) for v in range(4)], no_death)
        assert [v for v, _ in again] == [0, 1, 4, 9]
    # One worker: a second background task waits for the first; both run, in order.
    with keep_workers(1) as pool:
        ordered = tmp_path / "ordered.txt"
        pool.submit(Task(append_pid, (str(ordered), 0.5)))  # type: ignore[arg-type]
        pool.submit(Task(append_pid, (str(ordered), 0.0)))  # type: ignore[arg-type]
        pool.drain()
        pids = ordered.read_text().split()
        assert len(pids) == 2 and pids[0] == pids[1]  # the same single worker, one after another
