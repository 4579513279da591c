"""A sweep's console: one line per finished job with its result, the count and the time left.

    [37/80] sat_mse seed=3  val loss 0.4123  1.1 s  ETA 40 s

``SweepProgress`` counts finished jobs and prints their lines (through ``rich``, which drops
styling when the output is not a terminal). Any launcher can use it: one that trains every job
in its own process keeps the count in memory; Hydra's joblib launcher runs jobs in worker
processes that only report back when the whole sweep has ended, so there each worker reports
its own job and the count is kept in a small file of the sweep directory, under a lock.

A replica batch trains all its jobs at once, then records them one by one: its first job's line
comes after the whole batch has trained. The launcher reports the batch as trained
(``jobs_trained``), and the ETA extrapolates from the jobs trained, not only those recorded.

While a sweep runs, ``quiet_console`` keeps a job's INFO lines (per-epoch lines, its summary)
off the terminal: they still go to the job's log file and MLflow, and warnings still show.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``1 h 05 min``: rounded to what a person reads."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(
    done: int,
    total: int | None,
    name: str,
    result_text: str,
    seconds: float,
    elapsed: float,
    trained: int = 0,
) -> str:
    """One finished job's line.

    Args:
        done: jobs finished so far, this one included.
        total: jobs in the sweep (None when unknown: no count of the total, no ETA).
        name: the job's run name.
        result_text: its key result ("val loss 0.4123", "FAILED: ...").
        seconds: the job's own wall time.
        elapsed: seconds since the sweep started: the ETA assumes the rest goes as fast.
        trained: jobs whose training is over (replica batches: recorded or not yet); the ETA
            counts the larger of this and ``done`` as the work done.

    Returns:
        ``[done/total] name  result  1.1 s  ETA 40 s`` (``all done in ...`` for the last job).
    """
    count = f"[{done}/{total}]" if total else f"[{done}]"
    line = f"{count} {name}  {result_text}  {seconds:.1f} s"
    if total and done >= total:
        return f"{line}  all done in {format_duration(elapsed)}"
    worked = min(max(done, trained), total or 0)
    if total and worked > 0:
        return f"{line}  ETA {format_duration(elapsed / worked * (total - worked))}"
    return line


def result_text(val_loss: float | None, error: str | None = None) -> str:
    """A job's key result: its final validation loss, or why it failed."""
    if error is not None:
        return f"FAILED: {error.splitlines()[0][:120] if error else 'no reason given'}"
    if val_loss is None or not math.isfinite(val_loss):
        return "FAILED (see the job's log)"
    return f"val loss {val_loss:.4f}"


@dataclass
class SweepProgress:
    """Counts a sweep's finished jobs and prints one line for each.

    Attributes:
        total: jobs in the sweep (None when unknown).
        started: when the sweep started (``time.time()``), for the ETA.
        state_file: where the count is shared between processes (None: in this object).
        console: where lines go (standard output by default).
    """

    total: int | None
    started: float = 0.0
    state_file: Path | None = None
    console: Console | None = None
    done: int = 0

    def __post_init__(self) -> None:
        self.started = self.started or time.time()

    def reset(self) -> None:
        """Start the count at 0 (a sweep re-run into the same directory counts anew)."""
        self.done = 0
        if self.state_file is not None:
            self.state_file.write_text(json.dumps(dict.fromkeys(_COUNTS, 0)))

    def job_done(self, name: str, result_text: str, seconds: float) -> str:
        """Count one finished job and print its line.

        Args:
            name: the job's run name.
            result_text: its key result (see ``result_text``).
            seconds: its wall time.

        Returns:
            The line printed.
        """
        done, left_out, trained = self._count_one()
        total = None if self.total is None else self.total - left_out
        line = progress_line(
            done, total, name, result_text, seconds, time.time() - self.started, trained
        )
        console = self.console or Console(highlight=False, soft_wrap=True)
        style = "red" if result_text.startswith("FAILED") else None
        console.print(escape(line), style=style)
        return line

    def count_only(self) -> None:
        """Count one finished job without printing its line (the sweep's caller prints its
        own)."""
        with contextlib.suppress(Exception):  # a count is never worth failing a job for
            self._count_one()

    def _count_one(self) -> tuple[int, int, int]:
        """(this job's number, jobs left out, jobs trained): the shared file's count + 1 under
        a lock, else in memory."""
        if self.state_file is None:
            self.done += 1
            return self.done, 0, 0
        try:
            state = _add_to_state(self.state_file, "done", 1)
        except (OSError, ValueError):  # e.g. a Ray node without the sweep dir
            self.done += 1
            return self.done, 0, 0
        return state["done"], state["left_out"], state["trained"]


def leave_out(state_file: Path, count: int) -> None:
    """Take ``count`` jobs out of the sweep's total in its shared count file: jobs left out that
    will never finish (a loss that does not fit the data, ``config.NotApplicableError``).

    Args:
        state_file: the sweep's count file (``callback.PROGRESS_FILE`` in its directory).
        count: jobs left out.
    """
    with contextlib.suppress(OSError, ValueError):
        _add_to_state(state_file, "left_out", count)


def jobs_trained(state_file: Path, count: int) -> None:
    """Add ``count`` jobs whose training is over (a replica batch's, before its jobs are
    recorded) to the sweep's shared count file, for the ETA.

    Args:
        state_file: the sweep's count file (``callback.PROGRESS_FILE`` in its directory).
        count: jobs trained.
    """
    with contextlib.suppress(OSError, ValueError):
        _add_to_state(state_file, "trained", count)


# What the shared count file counts.
_COUNTS = ("done", "left_out", "trained")


def _add_to_state(state_file: Path, key: str, count: int) -> dict[str, int]:
    """Add ``count`` to ``key`` of the shared count file, under its lock.

    Returns:
        The state as written (a count for each of ``_COUNTS``).

    Raises:
        OSError, ValueError: the file cannot be read or written as a count file.
    """
    with _locked(state_file) as handle:
        text = handle.read()
        read = json.loads(text) if text.strip() else {}
        if not isinstance(read, dict):
            raise ValueError(f"{state_file} holds {type(read).__name__}, not a count file")
        state = {name: int(read.get(name, 0)) for name in _COUNTS}
        state[key] += count
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(state))
    return state


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[TextIO]:
    """The file opened for reading and writing, under an exclusive lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _BelowWarning(logging.Filter):
    """Lets through only warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_QUIET = _BelowWarning()


def _console_handlers() -> list[logging.Handler]:
    """The root logger's handlers that write to a stream but not to a file."""
    return [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def quiet_console() -> None:
    """Keep INFO lines off the terminal (they still reach the log file handlers)."""
    for handler in _console_handlers():
        handler.addFilter(_QUIET)


def restore_console() -> None:
    """Undo ``quiet_console``."""
    for handler in _console_handlers():
        handler.removeFilter(_QUIET)
