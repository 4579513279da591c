"""A run's local spool: what it could not deliver to the tracking server, kept for replay.

When the server stops answering in the middle of a run, the run goes on and appends each record
it cannot send (params, tags, metric points, artifacts, its dataset inputs, its logged model,
its final status) to ``SPOOL_FILE`` in the job's output directory; files to upload are copied
next to it, since the job may change them, and a logged model is saved there as an MLflow model
directory. ``recovery.replay_spool`` sends them once the server is back. The file is JSON lines: a
header naming the run, its store and its sweep's parent run, then one record per line, each with
the sha256 of its content, so a damaged file is refused rather than half-replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SPOOL_FILE = "mlflow_spool.jsonl"
# A replayed spool is renamed to this: a second replay finds nothing to send.
REPLAYED_FILE = "mlflow_spool.replayed.jsonl"
_FILES_DIR = "mlflow_spool_files"
_FORMAT = "xent-spool-1"
KINDS = ("params", "tags", "metrics", "artifact", "text", "datasets", "model", "status")
# Kinds whose record names a kept file or folder (``data["file"]``) next to the spool.
_KEEPS_FILES = ("artifact", "model")


class SpoolError(ValueError):
    """A spool file that cannot be replayed (damaged, or another sweep's): nothing was sent."""


@dataclass(frozen=True)
class SpoolHeader:
    """Which run a spool belongs to.

    Attributes:
        run_id: the MLflow run.
        experiment_id: its experiment.
        tracking_uri: its store.
        parent_run_id: its sweep's parent run ("" for a run outside a sweep).
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    parent_run_id: str


@dataclass(frozen=True)
class SpoolRecord:
    """One undelivered record: ``kind`` (one of ``KINDS``) and its content."""

    kind: str
    data: dict[str, Any]


def _digest(content: Any) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class SpoolWriter:
    """Appends a run's undelivered records to ``<directory>/SPOOL_FILE`` (created on first use)."""

    def __init__(self, directory: Path, header: SpoolHeader) -> None:
        self.directory = directory
        self.header = header
        self.path = directory / SPOOL_FILE
        self.records = 0

    def append(self, kind: str, data: dict[str, Any]) -> None:
        """Write one record and sync it to disk (the job may be killed next)."""
        if kind not in KINDS:
            raise ValueError(f"spool record kind {kind!r} is not one of {KINDS}")
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = []
        if not self.path.exists():
            header = {"format": _FORMAT, **asdict(self.header)}
            lines.append(json.dumps({**header, "sha256": _digest(header)}))
        if self.records == 0 and self.path.exists():  # appending to an earlier writer's file
            self.records = max(0, len(self.path.read_bytes().splitlines()) - 1)
        # The record's place in the file, checksummed with it: a line lost from the middle
        # shows as a gap (a spool cut after a whole line is a job that stopped there).
        content = {"kind": kind, "data": data, "n": self.records + 1}
        lines.append(json.dumps({**content, "sha256": _digest(content)}))
        with self.path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        self.records += 1

    def keep_file(self, path: Path) -> str:
        """Copy a file to upload later next to the spool; returns its name there."""
        kept, name = self.new_place(path.name)
        shutil.copy2(path, kept)
        return name

    def new_place(self, name: str) -> tuple[Path, str]:
        """A path next to the spool, not yet used, for a file or folder to upload later.

        Args:
            name: the file's (or folder's) name, kept as it is: it is uploaded under it.

        Returns:
            The path to write it to, and its name for the record (``spooled_file`` finds it).
        """
        folder = self.directory / _FILES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        # A folder per kept item: two with the same name do not collide.
        place = folder / str(len(list(folder.iterdir())))
        place.mkdir()
        return place / name, f"{place.name}/{name}"


def spooled_file(spool_path: Path, name: str) -> Path:
    """Where a file kept by ``SpoolWriter.keep_file`` is."""
    return spool_path.parent / _FILES_DIR / name


def read_spool(path: Path, parent_run_id: str | None) -> tuple[SpoolHeader, list[SpoolRecord]]:
    """Read and check a whole spool file.

    Args:
        path: the spool file.
        parent_run_id: the sweep parent its run must belong to (None: any).

    Returns:
        Its header and records, in the order written.

    Raises:
        SpoolError: a line is not valid JSON or does not match its checksum, the header is
            missing or of another format, a kept file is missing, or the run belongs to another
            sweep (the message names the file).
    """
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:  # bytes that were never written as JSON text
        raise SpoolError(f"spool {path} is damaged: {error}") from error
    entries = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            digest = entry.pop("sha256")
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as error:
            raise SpoolError(f"spool {path} is damaged at line {number}: {error}") from error
        if digest != _digest(entry):
            raise SpoolError(f"spool {path} is damaged at line {number}: checksum mismatch")
        entries.append(entry)
    if not entries or entries[0].get("format") != _FORMAT:
        raise SpoolError(f"spool {path} has no {_FORMAT} header line")
    fields = {k: v for k, v in entries[0].items() if k != "format"}
    try:
        header = SpoolHeader(**fields)
    except TypeError as error:
        raise SpoolError(f"spool {path} has a malformed header: {error}") from error
    if parent_run_id is not None and header.parent_run_id != parent_run_id:
        raise SpoolError(
            f"spool {path} belongs to another sweep: its run {header.run_id} has parent run "
            f"{header.parent_run_id or '(none)'}, this sweep's parent is {parent_run_id}"
        )
    records = []
    for number, entry in enumerate(entries[1:], start=2):
        if entry.get("kind") not in KINDS or not isinstance(entry.get("data"), dict):
            raise SpoolError(f"spool {path} line {number}: not a spool record")
        # Spools written before records were numbered have no "n": they are read as they are.
        if "n" in entry and entry["n"] != number - 1:
            raise SpoolError(
                f"spool {path} line {number}: record {entry['n']} where record {number - 1} "
                "belongs: a record is missing or out of place"
            )
        record = SpoolRecord(entry["kind"], entry["data"])
        kept = record.data.get("file") if record.kind in _KEEPS_FILES else None
        if kept is not None and not spooled_file(path, str(kept)).exists():
            raise SpoolError(f"spool {path} line {number}: kept file {kept} missing")
        records.append(record)
    return header, records


def find_spools(directory: Path) -> list[Path]:
    """Every spool not yet replayed under ``directory`` (a job's or a sweep's), sorted."""
    return sorted(directory.rglob(SPOOL_FILE))


def mark_replayed(path: Path) -> Path:
    """Rename a replayed spool so that it is not replayed again; returns the new path."""
    done = path.with_name(REPLAYED_FILE)
    path.replace(done)
    return done
