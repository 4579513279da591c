"""Sweeps: one MLflow parent run per Hydra multirun, created once before any job starts.

Parallel jobs racing to create the same experiment or parent is a known MLflow failure, so the
Hydra callback creates both in the launching process and leaves a small JSON file in the sweep
directory; each job reads it (``parent_for_sweep``) and logs itself as a child. On a Ray
cluster a job may run on a machine that cannot see that directory: the launcher ships the
callback itself (pickled with Hydra's context) to every job, and its ``on_job_start`` hands the
parent to the job in-process. When the sweep ends, the callback marks children left RUNNING by
a vanished tracking server FAILED, builds the study report from the store and attaches it to
the parent.

Re-running a sweep into the same sweep directory (``hydra.sweep.dir=<the interrupted one>``),
or with ``+resume=true`` (the experiment's latest sweep parent, if it recorded the same study
definition) or ``+resume=matching`` (its newest parent with the same definition, if any),
continues it: its parent is reused, every job whose config already FINISHED under it (or ended
FAILED on a measured outcome: diverged, no rate) is skipped (``finished_job``, by config hash),
and the report keeps one run per variant x seed.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from xent_tf.claims.studies import get_study
from xent_tf.config import Config
from xent_tf.launch import progress
from xent_tf.launch.jobs import InvalidJobError
from xent_tf.track.identity import run_name
from xent_tf.track.resume import (
    FinishedJob,
    definition_differences,
    read_finished,
    study_definition,
    training_config_hash,
    write_finished,
)
from xent_tf.track.run_record import RunStatus

if TYPE_CHECKING:
    from xent_tf.track.reading import ChildrenRead

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
# The count of a sweep's finished jobs, shared by the processes that run them.
PROGRESS_FILE = ".progress.json"


@dataclass(frozen=True)
class ParentRun:
    """Where a sweep's parent run lives."""

    run_id: str
    experiment_id: str
    tracking_uri: str


# The parent handed to this process by ``on_job_start`` (for the job's sweep dir): jobs that
# run where the sweep dir's JSON file is not (another machine of a Ray cluster) find it here.
_job_parent: tuple[Path, ParentRun] | None = None
# When this process's current job started (``on_job_start``), for its progress line.
_job_started: float = 0.0
# The resumed parent's FINISHED jobs handed to this process by ``on_job_start``.
_job_finished: dict[str, FinishedJob] = {}


def parent_for_sweep(sweep_dir: Path) -> ParentRun | None:
    """The parent run the sweep's callback created, or None (no callback, tracking off).

    Args:
        sweep_dir: the sweep directory, as the job sees it (``hydra.sweep.dir``).

    Returns:
        From ``<sweep_dir>/mlflow_parent.json``, else what the callback handed to this job.

    Raises:
        ResumeRefusedError: the file is there but damaged (the message names it).
    """
    path = sweep_dir / PARENT_FILE
    if path.exists():
        try:
            return ParentRun(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:  # truncated, or not the file this writes
            raise ResumeRefusedError(
                f"sweep directory {sweep_dir}: {path.name} is damaged ({error}), so the sweep's "
                "parent run is unknown; give this sweep a new hydra.sweep.dir (or delete the "
                "file to start a new parent run in this one)"
            ) from error
    if _job_parent is not None and _job_parent[0] == sweep_dir:
        return _job_parent[1]
    return None


def finished_job(sweep_dir: Path, config: Config) -> FinishedJob | None:
    """The FINISHED run of a resumed sweep's parent with this job's config, if any.

    Args:
        sweep_dir: the sweep directory, as the job sees it.
        config: the job's config.

    Returns:
        The run to keep in place of running the job again, or None (run it).
    """
    finished = read_finished(sweep_dir)
    if not finished and _job_parent is not None and _job_parent[0] == sweep_dir:
        finished = _job_finished  # a job on a machine that cannot see the sweep directory
    return finished.get(training_config_hash(config))


class ResumeRefusedError(ValueError):
    """``+resume`` cannot be honoured: not a resume mode, or (``+resume=true``) the latest
    parent run recorded another study."""


def _study_definition(config: DictConfig) -> dict[str, str]:
    """The sweep's study definition: its base config and the command line's overrides."""
    base = OmegaConf.to_container(config, resolve=False)
    assert isinstance(base, dict)
    base.pop("hydra", None)
    overrides = [str(o) for o in config.hydra.overrides.task]
    return study_definition({str(k): v for k, v in base.items()}, overrides)


# ``+resume=`` values: the latest sweep, refused if it is another study; or the newest sweep of
# this study, a new one when there is none (what `make reproduce` uses: an ad-hoc sweep of the
# same experiment in between does not stop it).
RESUME_LATEST = True
RESUME_MATCHING = "matching"


def _resume_mode(value: object) -> bool | str:
    """The ``+resume`` setting, checked: False, True (the latest sweep) or "matching"."""
    if value is None or value is False:
        return False
    if value is RESUME_LATEST:
        return RESUME_LATEST
    if value == RESUME_MATCHING:
        return RESUME_MATCHING
    raise ResumeRefusedError(
        f"+resume={value!r} is not a resume mode: use +resume=true (continue the experiment's "
        f"latest sweep, refused if it is another study) or +resume={RESUME_MATCHING} (continue "
        "the newest sweep of this study, or start one)"
    )


def _parent_to_resume(
    uri: str, experiment_name: str, definition: dict[str, str], mode: bool | str = RESUME_LATEST
) -> ParentRun | None:
    """The sweep parent to continue: the experiment's latest, if its study definition is this
    sweep's (``mode`` True), or its newest one with this definition (``mode`` "matching").

    Returns:
        None when there is none to continue (the sweep starts a new parent).

    Raises:
        ResumeRefusedError: with mode True, the latest parent recorded another definition (the
            message lists the keys).
    """
    from xent_tf.track import reading, recovery

    if mode == RESUME_MATCHING:
        return _newest_parent_of_study(uri, experiment_name, definition)
    try:
        found = reading.find_study_parent(uri, experiment_name, finished_only=False)
    except ValueError as error:
        log.info("+resume=true: nothing to resume (%s); starting a new sweep", error)
        return None
    recorded = recovery.recorded_study_definition(uri, found.run_id)
    if recorded is None:
        raise ResumeRefusedError(
            f"+resume=true: parent run {found.run_id} of experiment {experiment_name!r} has no "
            "recorded study definition (made before resume existed); re-run it into its own "
            "sweep directory (hydra.sweep.dir=...) instead"
        )
    differences = definition_differences(recorded, definition)
    if differences:
        raise ResumeRefusedError(
            f"+resume=true refused: this sweep is not the study of parent run {found.run_id} "
            f"(experiment {experiment_name!r}); keys that differ (recorded -> now): "
            + "; ".join(differences)
            + " (to start a new study of it, leave +resume=true out)"
        )
    return ParentRun(found.run_id, found.experiment_id, uri)


def _check_same_study(sweep_dir: Path, parent: ParentRun, definition: dict[str, str]) -> None:
    """Refuse to continue a sweep directory's parent run with another study.

    Re-running into a sweep directory continues its parent run; a different study there (for
    example one ``hydra.sweep.dir`` given to several studies) would mix its runs into the
    other's report and ledger.

    Raises:
        ResumeRefusedError: the parent recorded another study definition (the message lists
            the keys that differ).
    """
    from xent_tf.track import recovery

    recorded = recovery.recorded_study_definition(parent.tracking_uri, parent.run_id)
    differences = [] if recorded is None else definition_differences(recorded, definition)
    if differences:
        raise ResumeRefusedError(
            f"sweep directory {sweep_dir} belongs to another study (parent run {parent.run_id}); "
            "keys that differ (recorded -> now): "
            + "; ".join(differences)
            + ". Give this sweep its own hydra.sweep.dir (or leave it out for a new one)"
        )


def _newest_parent_of_study(
    uri: str, experiment_name: str, definition: dict[str, str]
) -> ParentRun | None:
    """The experiment's newest sweep parent that recorded this study definition, if any."""
    from xent_tf.track import reading, recovery

    parents = reading.study_parents(uri, experiment_name)
    for parent in parents:
        recorded = recovery.recorded_study_definition(uri, parent.run_id)
        if recorded is not None and not definition_differences(recorded, definition):
            return ParentRun(parent.run_id, parent.experiment_id, uri)
    if parents:
        log.info(
            "+resume=%s: none of the %d sweeps of experiment %r is this study; starting a new "
            "sweep",
            RESUME_MATCHING,
            len(parents),
            experiment_name,
        )
    return None


def _replay_spools(sweep_dir: Path, parent_run_id: str) -> None:
    """Send what the sweep's jobs kept in their spools (``recovery.replay_spools``).

    Raises:
        SystemExit: a spool is damaged or another sweep's (the message names it; none is sent).
    """
    from xent_tf.track import recovery
    from xent_tf.track.spool import SpoolError

    try:
        replayed = recovery.replay_spools(sweep_dir, parent_run_id)
    except SpoolError as error:
        log.error("the sweep's spooled records were not sent: %s", error)
        raise SystemExit(1) from error
    for done in replayed:
        log.info(
            "replayed the spool of run %s: %d records, %d metric points sent (%d were there "
            "already), status %s",
            done.run_id,
            done.records,
            done.points_sent,
            done.points_present,
            done.status or "(unchanged)",
        )


def _sweeps_as_basic(target: str) -> bool:
    """Whether the sweeper class ``target`` names is Hydra's basic sweeper or a subclass of it
    (the ``replicas`` sweeper), which expand a sweep as ``count_sweep_jobs`` does."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.utils import get_class

    try:
        sweeper = get_class(target)
    except (ImportError, ValueError):  # not installed, or not a class: Hydra says so itself
        return False
    return issubclass(sweeper, BasicSweeper)


def count_sweep_jobs(config: DictConfig) -> int | None:
    """How many jobs Hydra's basic sweeper will launch for this multirun (None if unknown).

    The sweeper's own expansion of its params and the command line's sweep overrides
    (``seed=0,1,2``, ``range(8)``), done once more in the launching process.
    """
    if not _sweeps_as_basic(str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    # As the basic sweeper expands them (``BasicSweeper.split_arguments``): every combination
    # of each key's values, a later override of a key replacing an earlier one; it refuses a
    # sweep that is not a list of values (an interval), so the count is unknown.
    values_per_key: dict[str, int] = {}
    try:
        for override in OverridesParser.create().parse_overrides(arguments):
            if not override.is_sweep_override():
                values_per_key[override.get_key_element()] = 1
            elif override.is_discrete_sweep():
                values = list(override.sweep_string_iterator())
                values_per_key[override.get_key_element()] = len(values)
            else:
                return None
    except Exception as error:  # a sweep syntax only the sweeper's config loader resolves
        log.debug("could not count the sweep's jobs: %s", error)
        return None
    return math.prod(values_per_key.values())


def _wants_epoch_lines(overrides: list[str]) -> bool:
    """Whether the command line asked for per-epoch lines on the terminal in a sweep."""
    return any(o.lstrip("+") in ("trainer.verbose=true", "trainer.verbose=True") for o in overrides)


def _say(text: str) -> None:
    """Print a report in a pool worker, whose logging is still set up for its last job."""
    print(text, flush=True)


def _report_and_end(
    sweep_dir: Path, parent: ParentRun, say: Callable[[str], object]
) -> ChildrenRead | None:
    """Build and publish the sweep's report, end its parent run, and say where both are.

    Args:
        sweep_dir: the sweep directory (``report.html`` goes there).
        parent: the sweep's parent run (FINISHED, or FAILED when the report cannot be built).
        say: prints a text for the user.

    Returns:
        The sweep's runs as the report read them (None when it could not be built).
    """
    from xent_tf.claims.study_report import publish_report  # matplotlib only when a sweep reports
    from xent_tf.track import connection, writing

    uri = parent.tracking_uri
    status = RunStatus.FINISHED
    read = None
    try:
        report, text = publish_report(uri, sweep_dir, parent_run_id=parent.run_id)
        read = report.children
        say("\n" + text)
    except Exception as error:
        status = RunStatus.FAILED
        log.exception("could not build the sweep's report")
        say(f"could not build the report of {sweep_dir}: {type(error).__name__}: {error}")
    writing.end_run(uri, parent.run_id, status)
    address = connection.ui_address(uri)
    say(
        f"report: {sweep_dir / 'report.html'} (and on the parent run "
        f"{connection.run_url(parent.experiment_id, parent.run_id, address)})\n"
        f"runs table: {connection.experiment_url(parent.experiment_id, address)}"
    )
    return read


class MlflowSweepCallback(Callback):
    """Creates the MLflow experiment and the sweep's parent run; reports and ends it at the end.

    An interrupted sweep (Ctrl-C, a crash in the launcher) ends its parent KILLED at exit
    rather than leaving it RUNNING.

    Args:
        job_lines: print a line per finished job and the report's text (false: a process that
            runs many sweeps prints a line per sweep itself, ``experiments/reproduce.py
            --datasets``; both still go to the jobs' logs and MLflow). Set with
            ``+hydra.callbacks.mlflow_sweep.job_lines=false``.
    """

    def __init__(self, job_lines: bool = True) -> None:
        self.job_lines = job_lines
        self.parent: ParentRun | None = None
        # {config hash: its FINISHED run} of a resumed parent: those jobs are skipped.
        self.finished: dict[str, FinishedJob] = {}
        self.sweep_dir: Path | None = None
        self.progress: progress.SweepProgress | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start_progress(config)
        self._start_parent(config)

    def _start_progress(self, config: DictConfig) -> None:
        """Count the sweep's jobs; each job's process reports to ``<sweep dir>/PROGRESS_FILE``."""
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress.SweepProgress(
            count_sweep_jobs(config), time.time(), state_file=sweep_dir / PROGRESS_FILE
        )
        self.progress.reset()

    def _start_parent(self, config: DictConfig) -> None:
        """Create (or reopen) the sweep's parent run, unless tracking is off."""
        if not config.tracking.enabled:
            return
        from xent_tf.track import (  # MLflow: imported while the workers start
            connection,
        )

        study = str(config.study)
        uri = str(config.tracking.uri)
        try:
            if study:
                get_study(study)
            connection.check_tracking_uri(uri)
        except (ValueError, connection.TrackingUnavailableError) as error:
            log.error("the sweep cannot start: %s", error)
            # Hydra turns a callback's exception into a warning and launches every job anyway,
            # each only to fail the same way: stop before any job, with a failing exit status.
            raise SystemExit(1) from error
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._open_parent(config, uri, study)
        except (connection.TrackingUnavailableError, ResumeRefusedError) as error:
            log.error("the sweep cannot start: %s", error)
            raise SystemExit(1) from error
        atexit.register(self._end_if_still_running)

    def _open_parent(self, config: DictConfig, uri: str, study: str) -> None:
        """Reopen the sweep directory's parent run (or with ``+resume=true``, the experiment's
        latest sweep parent), or create one; leave the reopened parent's FINISHED jobs for the
        jobs to skip."""
        from xent_tf.track import reading, recovery, writing

        assert self.sweep_dir is not None
        definition = _study_definition(config)
        earlier = parent_for_sweep(self.sweep_dir)
        if earlier is not None and earlier.tracking_uri == uri:
            _check_same_study(self.sweep_dir, earlier, definition)
        mode = _resume_mode(OmegaConf.select(config, "resume", default=False))
        if earlier is None and mode:
            earlier = _parent_to_resume(uri, str(config.experiment_name), definition, mode)
        self.finished = {}
        if (
            earlier is not None
            and earlier.tracking_uri == uri
            and writing.reopen_run(uri, earlier.run_id, earlier.experiment_id)
        ):
            self.parent = earlier
            (self.sweep_dir / PARENT_FILE).write_text(json.dumps(asdict(self.parent)))
            # What the last attempt's jobs could not send counts: a job whose spool ends
            # FINISHED is not run again.
            _replay_spools(self.sweep_dir, earlier.run_id)
            self.finished = recovery.finished_children(uri, earlier.run_id, earlier.experiment_id)
            log.info(
                "resuming sweep: its jobs join parent run %s again; %d configs that already "
                "FINISHED there are skipped (or diverged there: a measured outcome; same config "
                "hash); the report keeps the latest finished run of each variant and seed",
                earlier.run_id,
                len(self.finished),
            )
        else:
            overrides = list(config.hydra.overrides.task)
            run_id, experiment_id = writing.start_parent_run(
                uri,
                str(config.experiment_name),
                run_name=f"{config.experiment_name}-sweep-{self.sweep_dir.name}",
                tags={
                    "xent.sweep_dir": str(self.sweep_dir),
                    reading.STUDY_TAG: study,
                    "hydra.overrides": " ".join(overrides) or "(none)",
                },
            )
            self.parent = ParentRun(run_id, experiment_id, uri)
            (self.sweep_dir / PARENT_FILE).write_text(json.dumps(asdict(self.parent)))
            recovery.record_study_definition(uri, run_id, definition)
            log.info("sweep parent run %s in experiment '%s'", run_id, config.experiment_name)
        write_finished(self.sweep_dir, self.finished)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hand the parent to the job, which runs in this process (maybe on another machine),
        and keep its INFO lines (per epoch, its summary) in its log file, off the terminal,
        unless the command line says ``trainer.verbose=true``."""
        global _job_parent, _job_started, _job_finished
        _job_started = time.monotonic()
        multirun = OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN
        if multirun and not _wants_epoch_lines(list(config.hydra.overrides.task)):
            progress.quiet_console()
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if self.parent is None or sweep_dir is None:
            _job_parent = None
            _job_finished = {}
            return
        _job_parent = (Path(str(sweep_dir)), self.parent)
        _job_finished = self.finished

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Print the job's progress line (from the process that ran it)."""
        if self.job_lines:  # else the worker stays quiet between jobs too (replica batches)
            progress.restore_console()
        if self.progress is None:
            return
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # return_value raises it
            if isinstance(error, InvalidJobError):
                text = progress.result_text(None, f"invalid, not run: {error.reason}")
            else:
                text = progress.result_text(None, f"{type(error).__name__}: {error}")
        else:
            value = job_return.return_value
            text = progress.result_text(float(value) if isinstance(value, int | float) else None)
        name = run_name(
            str(config.study),
            str(config.experiment_name),
            int(config.seed),
            list(config.hydra.overrides.task),
        )
        if not self.job_lines:
            self.progress.count_only()
            return
        try:
            self.progress.job_done(name, text, time.monotonic() - _job_started)
        except Exception as error:  # a progress line is never worth failing a job for
            log.warning("could not print the job's progress line: %s", error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None or self.sweep_dir is None:
            return
        from xent_tf.track import connection, writing

        uri = self.parent.tracking_uri
        if not connection.server_answers(uri):
            atexit.unregister(self._end_if_still_running)
            log.error(
                "the sweep ended but MLflow tracking server %s is unreachable: no report was "
                "built and parent run %s (and any job that could not end its own run) stays "
                "RUNNING there; what its jobs could not send is kept in their spools "
                "(mlflow_spool.jsonl). When the server is back, re-run the sweep into the same "
                "directory (hydra.sweep.dir=%s): the spools are sent, jobs that FINISHED are "
                "skipped, and the report keeps the latest finished run of each variant and seed "
                "(or send the spools alone: python experiments/report.py --sync DIR)",
                uri,
                self.parent.run_id,
                self.sweep_dir,
            )
            # Hydra turns a callback's exception into a warning and exits 0: a sweep whose
            # records could not be completed must not look like a success to a script or CI.
            raise SystemExit(1)
        # Every job has returned: what they could not send while the server was away is sent
        # now; a child still RUNNING after that lost its server before it could end.
        _replay_spools(self.sweep_dir, self.parent.run_id)
        orphans = writing.fail_orphaned_children(uri, self.parent.run_id, self.parent.experiment_id)
        if orphans:
            log.warning(
                "%d child runs were left RUNNING by jobs that lost the tracking server; marked "
                "FAILED: %s",
                len(orphans),
                ", ".join(orphans),
            )
        from xent_tf.launch.worker_pool import kept_pool

        pool = kept_pool()
        if pool is None:
            _report_and_end(self.sweep_dir, self.parent, log.info)
            atexit.unregister(self._end_if_still_running)
        else:
            # A process that runs several sweeps (experiments/reproduce.py): a worker builds
            # this report while the next sweep is planned and trained; the process waits for
            # it (``drain``) before it reads the studies. Should the worker die first, the
            # parent run is marked KILLED at exit (``_end_if_still_running``).
            say = _say if self.job_lines else log.debug  # the caller prints a line per sweep
            pool.submit(functools.partial(_report_and_end, self.sweep_dir, self.parent, say))

    def _end_if_still_running(self) -> None:
        if self.parent is None:
            return
        from xent_tf.track import writing

        try:
            writing.end_run(
                self.parent.tracking_uri, self.parent.run_id, RunStatus.KILLED, only_if_running=True
            )
        except Exception as error:  # at exit: say it, don't print a second traceback
            log.error("could not mark sweep parent run %s KILLED: %s", self.parent.run_id, error)
