"""Stores and files: a locked, read-only, damaged or full SQLite store, a corrupted spool, a
truncated sweep file that a resumed sweep reads.

A store that cannot take the run refuses it before training, naming the store and why, and
holds no run afterwards; a store that fills up during a run leaves no run RUNNING; a
transiently locked store waits and the run finishes. A damaged spool is refused naming the
file, with nothing sent; an intact one is sent whole. A damaged ``mlflow_parent.json`` or
``finished_jobs.json`` is refused naming the file.

A full disk is a small tmpfs when this process may mount one (root); otherwise the run goes to
a subprocess under ``RLIMIT_FSIZE`` (files cannot grow past the limit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import tally
from tests.fuzz.conftest import examples
from tests.fuzz.harness import Attempt, error_text, hydra_configs, judge, validate
from tests.fuzz.tally import Outcome
from xent_tf.config import Config
from xent_tf.track.disk_reserve import RESERVE_BYTES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow store, made once (MLflow's schema migrations cost seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("fuzz-store-template") / "template.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def copy_store(template: Path, target: Path) -> Path:
    """A copy of the template store (through SQLite's backup: its WAL is part of it)."""
    source, copy = sqlite3.connect(template), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return target


def run_statuses(db: Path) -> list[str]:
    return [status for status, _ in runs_with_errors(db)]


def runs_with_errors(db: Path) -> list[tuple[str, str]]:
    """Every run in the store: (status, its ``error`` tag or "")."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    return [
        (r.info.status, r.data.tags.get("error", ""))
        for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
    ]


@pytest.fixture(scope="module")
def base_config() -> Iterator[Config]:
    with hydra_configs() as compose:
        attempt = validate(compose, ["+debug=tiny", "trainer.verbose=false"])
    assert attempt.config is not None, error_text(attempt.error)  # type: ignore[arg-type]
    yield attempt.config


def with_store(config: Config, db: Path, **tracking: object) -> Config:
    return dataclasses.replace(
        config,
        tracking=dataclasses.replace(config.tracking, uri=f"sqlite:///{db}", **tracking),
    )


def attempt_run(config: Config, output_dir: Path) -> Attempt:
    """Run to the end; the Attempt holds the error (reached_store: the run finished)."""
    from xent_tf.train.pipeline import run_experiment

    try:
        run_experiment(config, output_dir=output_dir)
    except Exception as error:
        return Attempt(config, error, reached_store=False)
    return Attempt(config, None, reached_store=True)


def mount_tmpfs(path: Path, size_kb: int, read_only: bool = False) -> bool:
    """Mount a tmpfs of ``size_kb`` at ``path`` (root only); False when it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def unmount(path: Path) -> None:
    # Lazy: this process's MLflow engine may still hold the store open.
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# --------------------------------------------------------------------------- locked, read-only


@examples(1)
@given(hold=st.just(True))
def test_a_locked_store_refuses_the_run_before_training_naming_the_store(
    hold: bool, base_config: Config, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """MLflow waits 20 s for SQLite's lock, then the run is refused: one case costs that."""
    where = tmp_path_factory.mktemp("locked")
    db = copy_store(template, where / "mlflow.db")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        attempt = attempt_run(with_store(base_config, db), where / "out")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    outcome = judge(("database is locked",), attempt)
    tally.check("store: locked SQLite file", outcome, str(attempt.error))
    assert "tracking.uri=" in error_text(attempt.error)  # type: ignore[arg-type]
    assert run_statuses(db) == []
    assert not (where / "out" / "model.keras").exists()


@examples(2)
@given(seconds=st.floats(0.5, 2.0))
def test_a_store_locked_for_a_moment_waits_and_the_run_finishes(
    seconds: float, base_config: Config, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    where = tmp_path_factory.mktemp("briefly-locked")
    db = copy_store(template, where / "mlflow.db")
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(seconds, lambda: holder.execute("ROLLBACK"))
    timer.start()
    try:
        config = with_store(base_config, db, log_model=False, plots=False)
        attempt = attempt_run(config, where / "out")
    finally:
        timer.join()
        holder.close()
    outcome = Outcome.FINISHED if attempt.reached_store else Outcome.REJECTED_VALID
    tally.check("store: locked for a moment", outcome, str(attempt.error))
    assert run_statuses(db) == ["FINISHED"]


@examples(2)
@given(damage=st.sampled_from(["truncated", "garbage", "read_only"]))
def test_a_read_only_or_damaged_store_refuses_the_run_naming_the_store(
    damage: str, base_config: Config, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    where = tmp_path_factory.mktemp(f"store-{damage}")
    db = where / "mlflow.db"
    mounted = False
    if damage == "read_only":
        mounted = mount_tmpfs(where / "ro", 8192)
        db = copy_store(template, (where / "ro" if mounted else where) / "mlflow.db")
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(where / "ro")], check=True)
        else:
            db.chmod(0o444)  # not root: the file's mode is enough
        names: tuple[str, ...] = ("read-only", "not writable")
    else:
        whole = copy_store(template, where / "whole.db").read_bytes()
        db.write_bytes(whole[:5000] if damage == "truncated" else b"not SQLite\x00" * 500)
        names = ("tracking.uri=",)
    try:
        attempt = attempt_run(with_store(base_config, db), where / "out")
        outcome = judge(names, attempt)
        tally.check(f"store: {damage.replace('_', '-')} SQLite file", outcome, str(attempt.error))
        assert not (where / "out" / "model.keras").exists()
    finally:
        if mounted:
            unmount(where / "ro")


# --------------------------------------------------------------------------------- full disk

_RLIMIT_RUN = """
import json, resource, signal, sys
from pathlib import Path
from tests.conftest import compose_config
from xent_tf.config import to_config
from xent_tf.train.pipeline import run_experiment
config = to_config(compose_config(["+debug=tiny", "trainer.verbose=false",
                                   "tracking.uri=sqlite:///" + sys.argv[2]]))
# Imported first: TensorFlow's import needs a temporary file of its own.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    run_experiment(config, output_dir=Path(sys.argv[3]))
    print(json.dumps({"error": None}))
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
"""


# Free space left on the disk: none to speak of (not even for the reserve a run keeps next to
# its store, ``disk_reserve``), some (the run opens, then its records and files fill the disk),
# room for the whole run.
RESERVE_KB = RESERVE_BYTES // 1024
FREE_KB = {
    "store: disk full before the run": (0, 32),
    "store: disk fills during the run": (RESERVE_KB + 64, RESERVE_KB + 320),
    "store: disk with room for the run": (RESERVE_KB + 3000, RESERVE_KB + 4000),
}
DISK_KB = RESERVE_KB + 6144


@pytest.mark.parametrize("kind", list(FREE_KB))
def test_a_full_disk_refuses_the_run_or_fails_it_never_leaving_it_running(
    kind: str, base_config: Config, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    @examples(1)
    @given(free_kb=st.integers(*FREE_KB[kind]))
    def check(free_kb: int) -> None:
        _full_disk_case(kind, free_kb, base_config, template, tmp_path_factory)

    check()


# Free space (beyond the reserve) at which a run that filled the disk stayed RUNNING before the
# reserve existed: 9 of 33 sizes from 64 to 320 KB did, these among them.
LEFT_RUNNING_KB = [72, 120, 248]


@pytest.mark.skipif(os.geteuid() != 0, reason="fills a tmpfs of its own, which needs root")
@pytest.mark.parametrize("free_kb", LEFT_RUNNING_KB)
def test_a_disk_that_fills_during_a_run_ends_it_failed_saying_the_disk_is_full(
    free_kb: int, base_config: Config, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    runs = _full_disk_case(
        "store: disk fills during the run",
        RESERVE_KB + free_kb,
        base_config,
        template,
        tmp_path_factory,
    )
    assert [status for status, _ in runs] == ["FAILED"], runs
    assert any(s in runs[0][1] for s in ("disk is full", "No space left")), runs


def _full_disk_case(
    kind: str,
    free_kb: int,
    base_config: Config,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[tuple[str, str]]:
    """The store and the run's files on a small tmpfs with ``free_kb`` left (or, not root, a
    subprocess whose files may not grow past ``free_kb``: RLIMIT_FSIZE).

    Returns:
        The store's runs: (status, error tag).
    """
    where = tmp_path_factory.mktemp("full")
    disk = where / "disk"
    if mount_tmpfs(disk, DISK_KB):
        try:
            db = copy_store(template, disk / "mlflow.db")
            stat = os.statvfs(disk)
            ballast = max(0, stat.f_bavail * stat.f_frsize - free_kb * 1024)
            (disk / "ballast").write_bytes(b"\0" * ballast)
            attempt = attempt_run(with_store(base_config, db), disk / "out")
            (disk / "ballast").unlink()  # room to read the store back
            runs = runs_with_errors(db)
            message = "" if attempt.error is None else error_text(attempt.error)
        finally:
            unmount(disk)
    else:
        disk.mkdir()
        db = copy_store(template, disk / "mlflow.db")
        # Per file, not per disk: no file (the store, its journal, the run's files) may grow
        # past free_kb, and the store already exceeds it, so it cannot grow at all.
        limit = free_kb * 1024
        done = subprocess.run(
            [sys.executable, "-c", _RLIMIT_RUN, str(limit), str(db), str(disk / "out")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        message = json.loads(done.stdout.strip().splitlines()[-1])["error"] or ""
        attempt = Attempt(None, RuntimeError(message) if message else None, not message)
        runs = runs_with_errors(db)
    statuses = [status for status, _ in runs]
    assert "RUNNING" not in statuses, f"a run was left RUNNING with {free_kb} KB free: {message}"
    if attempt.reached_store:
        outcome = Outcome.FINISHED
        assert statuses == ["FINISHED"]
    else:
        # SQLite says "disk I/O error" when it cannot even create its journal files.
        space = ("disk is full", "No space left", "File too large", "disk I/O error")
        outcome = Outcome.REFUSED if any(s in message for s in space) else Outcome.WRONG_MESSAGE
        # A run that opened and then filled the disk still had room to say why it failed (the
        # store's reserve, freed).
        for status, error in runs:
            assert status == "FAILED" and any(s in error for s in space), runs
        if "before" in kind:  # no room to open the run: refused before it opened, naming it
            assert statuses == [] and "tracking.uri=" in message, message
            assert "bytes free on its disk" in message, message
    tally.check(kind, outcome, f"{free_kb} KB free: {message} (runs {statuses})")
    return runs


# ---------------------------------------------------------------------------------- spools


def _spool_with_a_run(template: Path, where: Path) -> tuple[Path, str, Path]:
    """A store holding one RUNNING run, and that run's spool (params, metrics, status)."""
    from mlflow import MlflowClient

    from xent_tf.track.spool import SpoolHeader, SpoolWriter

    db = copy_store(template, where / "mlflow.db")
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(f"spool-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    writer = SpoolWriter(where / "job", SpoolHeader(run.info.run_id, experiment, uri, ""))
    writer.append("params", {"params": {"seed": "3", "loss.name": "bce"}})
    writer.append("metrics", {"metrics": [["val/loss", 0.5, 1000, 1], ["val/loss", 0.4, 1001, 2]]})
    writer.append("status", {"status": "FINISHED"})
    return writer.path, run.info.run_id, db


# Where a damage falls, in 1/SPOOL_POSITIONS of the spool's length. Drawn independently of the
# spool: its length varies between runs (run ids, timestamps), and a strategy whose bounds
# change between Hypothesis's replays of a case is refused as FlakyStrategyDefinition.
SPOOL_POSITIONS = 4096


@st.composite
def spool_damage(draw: st.DrawFn) -> tuple[str, int, bytes]:
    """A damage: its kind, its position in 1/SPOOL_POSITIONS of the spool, its junk bytes."""
    kind = draw(
        st.sampled_from(["truncate", "flip", "drop_line", "garbage_line", "bytes", "empty"])
    )
    at = draw(st.integers(0, SPOOL_POSITIONS - 1))
    junk = draw(st.binary(min_size=1, max_size=12))
    return kind, at, junk


def _damage(text: bytes, kind: str, at: int, junk: bytes) -> bytes:
    lines = text.split(b"\n")
    if kind == "truncate":
        return text[: max(1, min(at, len(text) - 2))]
    if kind == "flip":
        position = min(at, len(text) - 2)
        flipped = bytes([text[position] ^ 0x01 if text[position] != 0x0B else 0x41])
        return text[:position] + flipped + text[position + 1 :]
    if kind == "drop_line":
        return b"\n".join(lines[: at % 4] + lines[at % 4 + 1 :])
    if kind == "garbage_line":
        return b"\n".join([*lines[: at % 4], b"{not json", *lines[at % 4 :]])
    if kind == "bytes":
        position = min(at, len(text) - 1)
        return text[:position] + b"\xff\xfe" + junk + text[position:]
    return b""


@examples(12)
@given(data=st.data())
def test_a_damaged_spool_is_refused_whole_and_an_intact_one_is_sent_whole(
    data: st.DataObject, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from mlflow import MlflowClient

    from xent_tf.track.recovery import replay_spools
    from xent_tf.track.spool import SpoolError

    where = tmp_path_factory.mktemp("spool")
    path, run_id, db = _spool_with_a_run(template, where)
    intact = path.read_bytes()
    damaged = data.draw(st.booleans()) or data.draw(st.booleans())  # 3 in 4 damaged
    if damaged:
        kind, fraction, junk = data.draw(spool_damage())
        at = fraction * len(intact) // SPOOL_POSITIONS
        text = _damage(intact, kind, at, junk)
        if text == intact:
            return
        path.write_bytes(text)
        # A spool cut after a whole record is what a job killed there leaves: valid, also when
        # the cut falls just before the record's newline (the record itself is whole).
        whole = text if text.endswith(b"\n") else text + b"\n"
        if intact.startswith(whole) and whole.count(b"\n") >= 1:
            damaged = False
            intact = whole
    client = MlflowClient(f"sqlite:///{db}")
    try:
        replay_spools(where, parent_run_id=None)
    except SpoolError as error:
        run = client.get_run(run_id)
        sent = (dict(run.data.params), run.info.status)
        assert sent == ({}, "RUNNING"), f"a refused spool sent {sent}"
        outcome = Outcome.REFUSED if str(path) in str(error) else Outcome.WRONG_MESSAGE
        if not damaged:
            outcome = Outcome.REJECTED_VALID
        tally.check(f"spool: {'damaged' if damaged else 'intact'}", outcome, str(error))
        return
    except Exception as error:  # anything else escaped the spool's own checks
        tally.check("spool: damaged", Outcome.WRONG_MESSAGE, f"{type(error).__name__}: {error}")
        return
    run = client.get_run(run_id)
    if damaged:  # a damaged spool that was replayed: only acceptable if nothing was lost
        tally.check("spool: damaged", Outcome.SLIPPED, f"{text!r} was replayed")
        return
    lines = intact.count(b"\n")  # the header, then params, metrics, status
    assert run.data.params == ({"seed": "3", "loss.name": "bce"} if lines >= 2 else {})
    history = [m.value for m in client.get_metric_history(run_id, "val/loss")]
    assert history == ([0.5, 0.4] if lines >= 3 else [])
    assert run.info.status == ("FINISHED" if lines >= 4 else "RUNNING")
    tally.check("spool: intact", Outcome.FINISHED, str(path))


def test_a_spool_cut_just_before_a_records_newline_replays_the_whole_records(
    template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Regression (make fuzz, XENT_FUZZ_SCALE=10): the campaign counted this cut as a damaged
    # spool replayed; its records are whole, so replaying them is right (the header: nothing).
    from mlflow import MlflowClient

    from xent_tf.track.recovery import replay_spools

    where = tmp_path_factory.mktemp("spool-cut")
    path, run_id, db = _spool_with_a_run(template, where)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:2]))  # the header and the params, no final newline
    replay_spools(where, parent_run_id=None)
    run = MlflowClient(f"sqlite:///{db}").get_run(run_id)
    assert run.data.params == {"seed": "3", "loss.name": "bce"}
    assert run.data.metrics == {} and run.info.status == "RUNNING"


# ----------------------------------------------------------------------- resumed sweep files


@examples(8)
@given(
    which=st.sampled_from(["mlflow_parent.json", "finished_jobs.json"]),
    cut=st.integers(0, 200),
    bad_shape=st.booleans(),
)
def test_a_damaged_sweep_file_is_refused_naming_it(
    which: str, cut: int, bad_shape: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from xent_tf.launch.callback import parent_for_sweep
    from xent_tf.track.resume import read_finished

    sweep = tmp_path_factory.mktemp("sweep")
    whole = (
        json.dumps({"run_id": "a" * 32, "experiment_id": "1", "tracking_uri": "sqlite:///m.db"})
        if which == "mlflow_parent.json"
        else json.dumps({"f" * 64: {"run_id": "b" * 32, "val_loss": 0.5}})
    )
    text = json.dumps(["not", "this"]) if bad_shape else whole[: cut % len(whole)]
    (sweep / which).write_text(text)
    try:
        if which == "mlflow_parent.json":
            parent_for_sweep(sweep)
        else:
            read_finished(sweep)
    except ValueError as error:
        outcome = Outcome.REFUSED if which in str(error) else Outcome.WRONG_MESSAGE
        tally.check(f"resume: damaged {which}", outcome, f"{text!r}: {error}")
        return
    except Exception as error:
        tally.check(f"resume: damaged {which}", Outcome.WRONG_MESSAGE, f"{text!r}: {error!r}")
        return
    tally.check(f"resume: damaged {which}", Outcome.SLIPPED, f"{text!r} was read")
