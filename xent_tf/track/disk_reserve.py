"""Room kept on a SQLite store's disk, so that a run which fills the disk can still end FAILED.

When the disk under a SQLite store fills during a run, every write fails, the one that would
mark the run FAILED included: SQLite needs room for its journal even to change one row, and
the run would stay RUNNING for ever. So a run opens only once a reserve file of
``RESERVE_BYTES`` sits next to the store (``mlflow.db.disk-reserve`` beside ``mlflow.db``); a
run that fails on a full disk deletes it, and the room it frees is what records the failure.
The next run makes the reserve again, or is refused with the free space named.

One reserve serves every process writing to the store: it is made under a temporary name and
renamed into place, so processes racing to make it never leave a part-written one, and any of
them may delete it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from pathlib import Path

from xent_tf.track.connection import sqlite_file

log = logging.getLogger(__name__)

# Room to record a failure: the error tag, the final status and error.txt, with SQLite's
# journal pages for those writes. Orders of magnitude more than they take.
RESERVE_BYTES = 1 << 20
RESERVE_SUFFIX = ".disk-reserve"

# What a write raises when the disk (or a quota or a file-size limit) has no room.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NO_ROOM_MESSAGES = ("database or disk is full", "No space left on device", "File too large")


class NoRoomForRunError(OSError):
    """The store's disk has no room for the reserve a run needs before it opens."""


def reserve_path(tracking_uri: str) -> Path | None:
    """Where a store keeps its reserve.

    Args:
        tracking_uri: the tracking store's URI.

    Returns:
        ``<store file>.disk-reserve`` for a ``sqlite:///`` store; None for any other store (a
        server keeps its own disk).
    """
    database = sqlite_file(tracking_uri)
    if database is None or database.name in ("", ":memory:"):
        return None
    return database.with_name(database.name + RESERVE_SUFFIX)


def keep_reserve(tracking_uri: str, size: int = RESERVE_BYTES) -> None:
    """Make sure the store's reserve exists, making it when missing or short.

    Args:
        tracking_uri: the tracking store's URI (only ``sqlite:///`` stores keep a reserve).
        size: the reserve's size in bytes.

    Raises:
        NoRoomForRunError: the disk has no room for the reserve; the message names the store's
            directory, its free bytes and the room a run needs. Any other reason the reserve
            cannot be made (a read-only directory: SQLite will say so itself) is only logged.
    """
    path = reserve_path(tracking_uri)
    if path is None:
        return
    with contextlib.suppress(OSError):
        if path.stat().st_size >= size:
            return
    if not path.parent.is_dir():
        return  # MLflow names a missing directory itself
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        _allocate(partial, size)
        os.replace(partial, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        if error.errno not in NO_ROOM_ERRNOS:
            log.warning(
                "no disk reserve next to %s (%s): a disk that fills during a run may "
                "leave it RUNNING",
                path.parent,
                error,
            )
            return
        free = _free_bytes(path.parent)
        raise NoRoomForRunError(
            error.errno,
            f"no room on the store's disk: {error.strerror} ({free} bytes free on its disk, in "
            f"{path.parent}; a run first keeps {size} bytes there in {path.name}, so that a disk "
            "that fills during the run still lets it be marked FAILED). Free some space or "
            "point tracking.uri at another disk",
        ) from error


def release_reserve(tracking_uri: str) -> bool:
    """Delete the store's reserve, freeing its room for the writes that record a failure.

    Args:
        tracking_uri: the tracking store's URI.

    Returns:
        True when this call freed a reserve (False: none, or another process freed it first).
    """
    path = reserve_path(tracking_uri)
    if path is None:
        return False
    try:
        path.unlink()
    except OSError:
        return False
    log.warning(
        "the disk under %s is full: its %s was freed to record the run's failure",
        path.parent,
        path.name,
    )
    return True


def is_out_of_room(error: BaseException) -> bool:
    """Whether an error, or one it was raised from, says a disk (or a quota) is full.

    Args:
        error: the exception a run stopped on.

    Returns:
        True for an ``OSError`` with ENOSPC, EDQUOT or EFBIG, or an error whose message says
        so (SQLite's "database or disk is full", as MLflow and SQLAlchemy wrap it).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_ROOM_ERRNOS:
            return True
        if any(message in str(current) for message in NO_ROOM_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def _allocate(path: Path, size: int) -> None:
    """Write a file of ``size`` bytes whose blocks the disk really holds (not a sparse file)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if not _fallocated(descriptor, size):
            # A system (macOS) or a file system without fallocate: write the zeros.
            os.ftruncate(descriptor, 0)
            block = b"\0" * min(size, 1 << 16)
            written = 0
            while written < size:
                written += os.write(descriptor, block[: size - written])
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fallocated(descriptor: int, size: int) -> bool:
    """Have the disk hold ``size`` bytes for the file with ``posix_fallocate``; False where
    there is none (macOS) or the file system does not support it. No room raises."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return False
    try:
        fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno in NO_ROOM_ERRNOS:
            raise
        return False
    return True


def _free_bytes(directory: Path) -> int | str:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return "unknown"
