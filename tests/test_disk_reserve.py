"""The reserve kept next to a SQLite store, freed to record a run's failure on a full disk.

The end-to-end check (a disk that fills during a real run) is
``tests/fuzz/test_fuzz_stores.py::test_a_disk_that_fills_during_a_run_ends_it_failed_saying_the_disk_is_full``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import mlflow
import pytest
from sqlalchemy.exc import OperationalError

from xent_tf.track import disk_reserve
from xent_tf.track.disk_reserve import (
    NoRoomForRunError,
    is_out_of_room,
    keep_reserve,
    release_reserve,
    reserve_path,
)


def test_only_a_sqlite_file_store_keeps_a_reserve_beside_it(tmp_path: Path) -> None:
    assert reserve_path(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db.disk-reserve"
    assert reserve_path("sqlite:///mlflow.db") == Path("mlflow.db.disk-reserve")
    assert reserve_path("http://127.0.0.1:5001") is None
    assert reserve_path("sqlite:///:memory:") is None
    assert reserve_path("postgresql://u@127.0.0.1/db") is None


def test_the_reserve_is_made_once_at_its_size_and_regrown_when_short(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    keep_reserve(uri, size=4096 * 5)
    path = tmp_path / "mlflow.db.disk-reserve"
    assert path.stat().st_size == 4096 * 5
    assert path.stat().st_blocks * 512 >= 4096 * 5  # blocks really held, not a sparse file
    made = path.stat().st_mtime_ns
    keep_reserve(uri, size=4096 * 5)
    assert path.stat().st_mtime_ns == made  # already there: left alone
    path.write_bytes(b"\0" * 10)
    keep_reserve(uri, size=4096 * 5)
    assert path.stat().st_size == 4096 * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db.disk-reserve"]  # no .tmp


def test_no_room_for_the_reserve_refuses_naming_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk_reserve.os, "posix_fallocate", full)
    with pytest.raises(NoRoomForRunError) as refused:
        keep_reserve(f"sqlite:///{tmp_path}/mlflow.db", size=1 << 20)
    message = str(refused.value)
    assert "No space left on device" in message
    assert "bytes free on its disk" in message and str(tmp_path) in message
    assert "1048576 bytes" in message and "mlflow.db.disk-reserve" in message
    assert list(tmp_path.iterdir()) == []  # the part-made reserve is gone


def test_a_directory_that_cannot_hold_the_reserve_for_another_reason_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(path: object, flags: int, mode: int = 0o777) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(disk_reserve.os, "open", read_only)
    keep_reserve(f"sqlite:///{tmp_path}/mlflow.db")  # SQLite names a read-only store itself
    assert list(tmp_path.iterdir()) == []


def test_release_frees_the_reserve_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    keep_reserve(uri, size=4096)
    assert release_reserve(uri) is True
    assert not (tmp_path / "mlflow.db.disk-reserve").exists()
    assert release_reserve(uri) is False
    assert release_reserve("http://127.0.0.1:5001") is False


def _raised_from(cause: BaseException, error: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except BaseException as outer:
        return outer


def test_a_full_disk_is_recognised_through_the_errors_that_wrap_it() -> None:
    sqlite_full = sqlite3.OperationalError("database or disk is full")
    wrapped = _raised_from(
        OperationalError("UPDATE runs", {}, sqlite_full),
        mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database or disk is full"),
    )
    assert is_out_of_room(wrapped)
    assert is_out_of_room(_raised_from(OSError(errno.ENOSPC, "x"), RuntimeError("saving")))
    assert is_out_of_room(OSError(errno.EDQUOT, "quota"))
    assert is_out_of_room(OSError(errno.EFBIG, "too big"))
    assert not is_out_of_room(OSError(errno.EACCES, "Permission denied"))
    assert not is_out_of_room(_raised_from(ValueError("nan"), RuntimeError("training stopped")))


def test_without_fallocate_the_reserve_is_written_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(disk_reserve.os, "posix_fallocate")  # macOS has none
    keep_reserve(f"sqlite:///{tmp_path}/mlflow.db", size=3 * 65536 + 100)
    path = tmp_path / "mlflow.db.disk-reserve"
    assert path.stat().st_size == 3 * 65536 + 100
    assert path.stat().st_blocks * 512 >= 3 * 65536 + 100
