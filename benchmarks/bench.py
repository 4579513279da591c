"""`make bench`: the suite's costs measured side by side, against the targets of issue 6.

    python -m benchmarks.bench                  # everything (reproduce and evidence: minutes each)
    python -m benchmarks.bench --quick          # 1 repeat, no sweep/reproduce/evidence or 10^6 rows
    python -m benchmarks.bench --only sweep --only mlflow --repeats 3

Sections:
    reference  C16 training time through the suite's path (CompiledLoop + fit, a fresh model each
               repeat, tracing included) vs the NumPy yardstick; VOID unless val accuracy agrees.
    wider      the same for 5-class data and for a 256-256 model (how the ratio moves).
    sweep      a 10-job joblib sweep: wall time vs the same sweep run serially (basic launcher,
               one process) and vs the sum of its jobs' training times, start-up
               cost per job, and how many worker processes (so TensorFlow imports) served it.
    mlflow     MLflow's share of a run: seconds inside MLflow client calls / ``run_experiment``'s
               wall time, with tracking on vs off as a cross-check.
    memory     peak RSS and wall time of the reference run (``experiments/run.py``), a fresh
               process per repeat: the ``make run`` target.
    scaling    training time as n_samples grows 10^4 -> 10^5 -> 10^6.
    replicas   replica batches vs single runs, records' share, memory (benchmarks/replicas.py).
    reproduce  `make reproduce` start to end: one process vs one process per step
               (benchmarks/reproduce.py; about 5 minutes).
    evidence   every study x 4 data sets x 10 seeds + ledger: the ledger's subprocess per
               study vs reproduce.py --datasets; share of the wall not training
               (benchmarks/evidence.py; issue 28).
    evidence-full  `make evidence` (8 data sets, seeds 0-19, ledger) from an empty store.

Every number is printed next to its target and written to ``benchmarks/results/latest.json``
(a section not run this time keeps its last result there, with its date and commit; see
``benchmarks/results.py``); ``make bench`` then renders ``docs/PERFORMANCE.md`` from that file
(``benchmarks/performance_doc.py``).
Nothing here asserts a time: a missed target is reported, not raised.

TensorFlow, MLflow and the suite are imported inside the section functions, so the pure helpers
at the top can be imported (and tested) without paying TensorFlow's import.
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import results
from benchmarks.common import (
    REPO_ROOT,
    Table,
    collect_garbage,
    compose_config,
    format_table,
    median,
    median_ratio,
    paired_ratios,
    verdict,
)
from benchmarks.results import RESULTS_PATH

if TYPE_CHECKING:
    from xent_tf.config import DataConfig
    from xent_tf.train.data import Dataset

SECTIONS = (
    "reference",
    "wider",
    "sweep",
    "mlflow",
    "memory",
    "scaling",
    "replicas",
    "reproduce",
    "evidence",
    "evidence-full",
)
# The sections --quick leaves out unless asked for by name (minutes each).
SLOW_SECTIONS = ("sweep", "reproduce", "evidence", "evidence-full")

# Targets of issue 6 (this machine: 2 cores, no GPU).
REFERENCE_RATIO_TARGET = 2.0  # suite training time / NumPy training time, reference run
SWEEP_RATIO_TARGET = 0.6  # sweep wall time / the same sweep run serially (basic launcher)
MLFLOW_SHARE_TARGET = 0.05  # MLflow's share of a run's wall time
MAKE_RUN_TARGET_SECONDS = 15.0  # `make run`, start to printed summary, warm venv
# The yardstick only counts if it learns as well as the suite: else the comparison is void.
ACCURACY_TOLERANCE = 0.01

SWEEP_JOBS = 10
# Each job's log lines carry the wall clock and the worker's pid, so the bench can tell which
# process ran which job and when it finished (Hydra's default format has neither).
JOB_LOG_FORMAT = "%(created).3f %(process)d [%(name)s][%(levelname)s] - %(message)s"
_JOB_LOG_LINE = re.compile(r"^(\d+\.\d+) (\d+) ")
# The launcher's own lines get the wall clock too, to time its start-up.
LAUNCHER_LOG_FORMAT = "%(created).3f [HYDRA] %(message)s"
_LAUNCHING_LINE = re.compile(r"^(\d+\.\d+) \[HYDRA\] .*Launching jobs", re.MULTILINE)
# (n_samples, epochs): fewer epochs for the big sets keeps the bench in minutes; per-epoch and
# per-1k-row costs are what compare across sizes.
SCALING_SIZES = ((10_000, 20), (100_000, 5), (1_000_000, 2))


# --------------------------------------------------------------------------- pure helpers


def accuracies_agree(a: float, b: float, tolerance: float = ACCURACY_TOLERANCE) -> bool:
    """Whether two accuracies are within ``tolerance`` of each other.

    Args:
        a: one accuracy in [0, 1].
        b: the other.
        tolerance: the largest allowed absolute difference (a tiny slack absorbs float error).

    Returns:
        True when |a - b| <= tolerance.
    """
    return abs(a - b) <= tolerance + 1e-9


def format_ratio(ratio: float | None, void: bool = False) -> str:
    """A ratio as "2.41x", or "VOID" when the comparison does not count, "-" when missing."""
    if void:
        return "VOID"
    return "-" if ratio is None else f"{ratio:.2f}x"


@dataclass(frozen=True)
class JobLog:
    """What one sweep job's log file says about when and where it ran.

    Attributes:
        pid: the process that ran the job (a reused joblib worker runs several).
        first: wall-clock time of the job's first log line (seconds since the epoch).
        last: wall-clock time of its last line (the printed summary).
    """

    pid: int
    first: float
    last: float


def parse_job_log(text: str) -> JobLog:
    """Read a job log written with ``JOB_LOG_FORMAT``.

    Args:
        text: the log file's content.

    Returns:
        The job's pid and the times of its first and last lines.

    Raises:
        ValueError: no line has the expected "<time> <pid> " prefix.
    """
    stamps = [m for m in map(_JOB_LOG_LINE.match, text.splitlines()) if m is not None]
    if not stamps:
        raise ValueError("no '<unix time> <pid> ' log lines; was JOB_LOG_FORMAT applied?")
    pids = {int(m.group(2)) for m in stamps}
    if len(pids) != 1:
        raise ValueError(f"one job's log names several processes: {sorted(pids)}")
    times = [float(m.group(1)) for m in stamps]
    return JobLog(pid=pids.pop(), first=min(times), last=max(times))


def launch_time(launcher_output: str) -> float | None:
    """When the launcher started dispatching jobs, from its stdout (``LAUNCHER_LOG_FORMAT``).

    Args:
        launcher_output: the sweep command's stdout.

    Returns:
        The wall-clock time of Hydra's "Launching jobs" line, or None if there is none.
    """
    match = _LAUNCHING_LINE.search(launcher_output)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class JobTiming:
    """One finished sweep job.

    Attributes:
        number: Hydra's job number.
        pid: the worker process that ran it.
        start: wall-clock time of its first log line (seconds since the epoch).
        end: wall-clock time of its last log line, the printed summary.
        train_seconds: its training time as the run recorded it.
    """

    number: int
    pid: int
    start: float
    end: float
    train_seconds: float


@dataclass(frozen=True)
class JobOverhead:
    """A sweep job's time that was not training.

    Attributes:
        first_in_worker: the job was its worker's first (it also carries the launcher's and the
            worker's start-up: process spawn, imports).
        before_run: from its worker becoming free to the job's first log line (job set-up).
        in_run: from its first to its last log line, minus training (data, MLflow, artifacts).
    """

    first_in_worker: bool
    before_run: float
    in_run: float

    @property
    def total(self) -> float:
        """All of the job's non-training time."""
        return self.before_run + self.in_run


def job_overheads(sweep_start: float, jobs: Sequence[JobTiming]) -> list[JobOverhead]:
    """Each job's time that was not training, counted from when its worker became free.

    A worker runs its jobs one after another, so a job occupies its worker from the end of the
    worker's previous job (the sweep's start, for the worker's first job) to its own end; what of
    that is not training is the job's start-up cost.

    Args:
        sweep_start: wall-clock time the sweep command was started.
        jobs: the finished jobs, in any order.

    Returns:
        One overhead per job, in ``jobs`` order.
    """
    previous_end: dict[int, float] = {}
    result: dict[int, JobOverhead] = {}
    for job in sorted(jobs, key=lambda j: j.end):
        result[job.number] = JobOverhead(
            first_in_worker=job.pid not in previous_end,
            before_run=job.start - previous_end.get(job.pid, sweep_start),
            in_run=job.end - job.start - job.train_seconds,
        )
        previous_end[job.pid] = job.end
    return [result[job.number] for job in jobs]


def select_sections(only: Sequence[str] | None, quick: bool) -> list[str]:
    """Which sections to run.

    Args:
        only: sections asked for with ``--only`` (None: all of them).
        quick: ``--quick``; drops ``SLOW_SECTIONS`` unless asked for by name.

    Returns:
        Section names in ``SECTIONS`` order.

    Raises:
        ValueError: an unknown section name.
    """
    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if only:
        return [s for s in SECTIONS if s in only]
    return [s for s in SECTIONS if not (quick and s in SLOW_SECTIONS)]


def _pad(row: Sequence[str], width: int) -> list[str]:
    """A row filled with empty cells up to ``width``."""
    return [*row, *([""] * (width - len(row)))]


def _median_of(values: Sequence[float]) -> str:
    """The median as "1.23 s (median of 8)", or "-" for no values."""
    return f"{median(values):.2f} s (median of {len(values)})" if values else "-"


def _seconds(value: float) -> str:
    """Seconds with 3 decimals below 1 s, 2 above."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


# --------------------------------------------------------------------------- sections 1-2


@dataclass(frozen=True)
class Case:
    """One training comparison.

    Attributes:
        name: the row label.
        data: the dataset to generate.
        hidden: hidden layer widths.
        loss: the suite's loss name (bce for 2 classes, sparse_cce for more).
        epochs: passes over the training set.
        batch_size: rows per step.
        learning_rate: Adam's rate.
        target_ratio: the issue's ratio target, or None for rows that only show a trend.
    """

    name: str
    data: DataConfig
    hidden: tuple[int, ...]
    loss: str
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    target_ratio: float | None = None


@dataclass(frozen=True)
class RunTiming:
    """One training run's times.

    Attributes:
        seconds: training wall time, validation every epoch included (and, for the suite,
            tracing and the per-epoch gradient norms).
        first_epoch: the first epoch's wall time (the suite traces its functions there).
        steady_epoch: median wall time of the later epochs (NumPy: seconds / epochs).
        val_acc: validation accuracy after the last epoch.
    """

    seconds: float
    first_epoch: float
    steady_epoch: float
    val_acc: float


@dataclass
class TrainingComparison:
    """The suite against the NumPy yardstick on one case, over interleaved repeats.

    Attributes:
        case: the row label.
        n_train: training rows.
        epochs: epochs per run.
        suite: one timing per repeat.
        numpy: one timing per repeat, paired with ``suite``.
        ratio: median paired ratio of training times (suite / NumPy), tracing included.
        ratio_range: the smallest and largest paired ratio (how noisy the machine was).
        steady_ratio: median paired ratio of steady-state epoch times.
        trace_seconds: median of (suite first epoch - suite steady epoch): tracing's cost.
        suite_val_acc: median final validation accuracy of the suite.
        numpy_val_acc: the same for NumPy.
        void: the accuracies differ by more than ``ACCURACY_TOLERANCE``.
        target_ratio: the issue's target for ``ratio``, if any.
        verdict: "met", "MISSED", "VOID" or "-".
    """

    case: str
    n_train: int
    epochs: int
    suite: list[RunTiming]
    numpy: list[RunTiming]
    ratio: float
    ratio_range: tuple[float, float]
    steady_ratio: float
    trace_seconds: float
    suite_val_acc: float
    numpy_val_acc: float
    void: bool
    target_ratio: float | None
    verdict: str

    @classmethod
    def from_repeats(
        cls,
        case: str,
        n_train: int,
        epochs: int,
        suite: list[RunTiming],
        numpy: list[RunTiming],
        target_ratio: float | None,
    ) -> TrainingComparison:
        """Summarise paired repeats.

        Args:
            case: the row label.
            n_train: training rows.
            epochs: epochs per run.
            suite: the suite's timings.
            numpy: the yardstick's timings, same length.
            target_ratio: the ratio target, or None.

        Returns:
            The comparison with its medians, ratios and verdict filled in.
        """
        suite_acc = median([r.val_acc for r in suite])
        numpy_acc = median([r.val_acc for r in numpy])
        void = not accuracies_agree(suite_acc, numpy_acc)
        ratios = paired_ratios([r.seconds for r in suite], [r.seconds for r in numpy])
        ratio = median(ratios)
        return cls(
            case=case,
            n_train=n_train,
            epochs=epochs,
            suite=suite,
            numpy=numpy,
            ratio=ratio,
            ratio_range=(min(ratios), max(ratios)),
            steady_ratio=median_ratio(
                [r.steady_epoch for r in suite], [r.steady_epoch for r in numpy]
            ),
            trace_seconds=median([r.first_epoch - r.steady_epoch for r in suite]),
            suite_val_acc=suite_acc,
            numpy_val_acc=numpy_acc,
            void=void,
            target_ratio=target_ratio,
            verdict=verdict(ratio, target_ratio, void),
        )


def time_suite_run(data: Dataset, case: Case, seed: int) -> RunTiming:
    """Train a fresh Keras model the way ``run_experiment`` does and time ``fit``.

    Args:
        data: the generated dataset.
        case: model, loss and training settings.
        seed: weights and shuffles.

    Returns:
        The run's timing (``fit``'s own ``train_seconds``: tracing included).
    """
    import tensorflow as tf

    from xent_tf.config import (
        AdamConfig,
        ConstantScheduleConfig,
        LossConfig,
        MlpConfig,
        TrainerConfig,
    )
    from xent_tf.train.build import (
        build_loss,
        build_model,
        build_optimizer,
        schedule_rates,
        tensor_split,
    )
    from xent_tf.train.runtime import configure_runtime
    from xent_tf.train.training import CompiledLoop, fit, steps_per_epoch

    device = configure_runtime("auto", TrainerConfig().threads, seed)
    spec = build_loss(LossConfig(name=case.loss), data)
    with tf.device(device.name):
        train, val = (tensor_split(s, spec, data.n_classes) for s in (data.train, data.val))
        model = build_model(MlpConfig(hidden_units=list(case.hidden)), data, spec, seed)
        optimizer = build_optimizer(AdamConfig(learning_rate=case.learning_rate))
        # A fresh loop, not the process's reusable one: the timing includes tracing.
        loop = CompiledLoop(model, spec.loss, optimizer, case.batch_size, from_logits=False)
        rates = schedule_rates(
            ConstantScheduleConfig(),
            case.learning_rate,
            case.epochs,
            steps_per_epoch(len(train), case.batch_size),
        )
        result = fit(loop, train, val, rates, case.epochs, seed)
    epochs = [r.seconds for r in result.history]
    return RunTiming(
        seconds=result.train_seconds,
        first_epoch=epochs[0],
        steady_epoch=median(epochs[1:]) if len(epochs) > 1 else epochs[0],
        val_acc=result.history[-1].val_acc,
    )


def time_numpy_run(data: Dataset, case: Case, seed: int) -> RunTiming:
    """Train the NumPy yardstick on the same data and settings.

    Args:
        data: the generated dataset.
        case: model and training settings.
        seed: weights and shuffles (NumPy's own generator: other weights than Keras's).

    Returns:
        The run's timing; every epoch counts as seconds / epochs.
    """
    from benchmarks.numpy_mlp import train_numpy_mlp

    result = train_numpy_mlp(
        data.train.x,
        data.train.y,
        data.val.x,
        data.val.y,
        hidden=case.hidden,
        n_classes=data.n_classes,
        epochs=case.epochs,
        batch_size=case.batch_size,
        learning_rate=case.learning_rate,
        seed=seed,
    )
    per_epoch = result.train_seconds / case.epochs
    return RunTiming(result.train_seconds, per_epoch, per_epoch, result.val_acc[-1])


def compare_training(case: Case, repeats: int) -> TrainingComparison:
    """Time the suite and the yardstick on one case, interleaved, and compare.

    Repeat i uses seed i for both; the order alternates (suite first on even repeats) so that
    neither side always runs on a machine the other has just warmed or loaded.

    Args:
        case: what to train.
        repeats: number of paired runs.

    Returns:
        The comparison.
    """
    from xent_tf.train.data import make_dataset

    data = make_dataset(case.data)
    suite: list[RunTiming] = []
    numpy: list[RunTiming] = []
    for seed in range(repeats):
        runs = [(suite, time_suite_run), (numpy, time_numpy_run)]
        for timings, run in runs if seed % 2 == 0 else runs[::-1]:
            collect_garbage()
            timings.append(run(data, case, seed))
    return TrainingComparison.from_repeats(
        case.name, len(data.train), case.epochs, suite, numpy, case.target_ratio
    )


def bench_reference(repeats: int) -> list[TrainingComparison]:
    """Section 1: the reference run (C16: 10-10-1, bce, Adam 1e-3, batch 32, 20 epochs).

    Args:
        repeats: paired repeats.

    Returns:
        One comparison.
    """
    from xent_tf.config import MakeClassificationConfig

    case = Case(
        "C16 binary 10-10 bce",
        MakeClassificationConfig(),
        (10, 10),
        "bce",
        target_ratio=REFERENCE_RATIO_TARGET,
    )
    return [compare_training(case, repeats)]


def bench_wider(repeats: int) -> list[TrainingComparison]:
    """Section 2: more arithmetic per step: 5 classes, then 256-256 hidden layers.

    Args:
        repeats: paired repeats.

    Returns:
        Comparisons for 5-class 10-10 and binary 256-256.
    """
    from xent_tf.config import MakeClassificationConfig

    five = MakeClassificationConfig(name="multiclass", n_classes=5)
    cases = [
        Case("5-class 10-10 sparse_cce", five, (10, 10), "sparse_cce"),
        Case("binary 256-256 bce", MakeClassificationConfig(), (256, 256), "bce"),
    ]
    return [compare_training(case, repeats) for case in cases]


def render_training(comparisons: Sequence[TrainingComparison]) -> str:
    """The table of sections 1-2."""
    return format_table(*training_table(comparisons))


def training_table(comparisons: Sequence[TrainingComparison]) -> Table:
    """The headers and rows of sections 1-2."""
    rows = [
        [
            c.case,
            _seconds(median([r.seconds for r in c.suite])),
            _seconds(median([r.seconds for r in c.numpy])),
            format_ratio(c.ratio, c.void),
            f"{c.ratio_range[0]:.2f}-{c.ratio_range[1]:.2f}",
            f"{1000 * median([r.steady_epoch for r in c.suite]):.0f}",
            f"{1000 * median([r.steady_epoch for r in c.numpy]):.0f}",
            format_ratio(c.steady_ratio, c.void),
            _seconds(c.trace_seconds),
            f"{c.suite_val_acc:.4f}/{c.numpy_val_acc:.4f}",
            "-" if c.target_ratio is None else f"<= {c.target_ratio:.1f}x",
            c.verdict,
        ]
        for c in comparisons
    ]
    headers = [
        "case",
        "suite s",
        "numpy s",
        "ratio",
        "range",
        "suite ms/ep",
        "numpy ms/ep",
        "ratio/ep",
        "trace s",
        "val acc suite/np",
        "target",
        "",
    ]
    return headers, rows


# --------------------------------------------------------------------------- child processes


def _subprocess_env() -> dict[str, str]:
    """The environment for child runs: quiet TensorFlow, the repo importable."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_in_fresh_process(command: Sequence[str], log_path: Path) -> tuple[float, float]:
    """Run a command to completion and measure it.

    Args:
        command: the command line (run from the repo root).
        log_path: where its stderr goes (its stdout is dropped).

    Returns:
        (wall seconds, peak RSS in MiB) of that process (``os.wait4`` reports on it alone).

    Raises:
        RuntimeError: it exited non-zero (the end of its stderr is in the message).
    """
    with log_path.open("w") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=stderr
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{list(command)} failed ({process.returncode}):\n{tail}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def import_seconds(timed: str, before: str = "") -> float:
    """Seconds a fresh interpreter takes for ``import {timed}`` (after ``import {before}``).

    Args:
        timed: modules whose import is timed (comma-separated).
        before: modules imported first, untimed ("" for none).

    Returns:
        The import's wall time.
    """
    code = (
        (f"import {before}\n" if before else "")
        + f"import time\nt = time.perf_counter()\nimport {timed}\n"
        + "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def entry_point_import_seconds() -> float:
    """Importing what ``experiments/run.py`` imports (Hydra, TensorFlow, Keras, MLflow,
    matplotlib, scikit-learn) in a fresh interpreter: the floor of any run's start-up."""
    return import_seconds("hydra, xent_tf.train.pipeline, xent_tf.launch.callback")


def run_command(uri: str, run_dir: Path, *overrides: str) -> list[str]:
    """``experiments/run.py`` for one run recorded in ``uri``, its files under ``run_dir``."""
    return [
        sys.executable,
        "experiments/run.py",
        *overrides,
        f"tracking.uri={uri}",
        f"hydra.run.dir={run_dir}",
    ]


def create_store(uri: str, experiment_name: str) -> float:
    """Create an MLflow SQLite store and experiment before anything is timed.

    A new store runs its schema migrations (seconds): a once-per-store cost that ``make run``
    on a used machine (./mlflow.db exists) does not pay, so the bench keeps it out of its times.

    Args:
        uri: ``sqlite:///...`` of a file that does not exist yet.
        experiment_name: the experiment the runs log to.

    Returns:
        Seconds it took.
    """
    from mlflow import MlflowClient

    from xent_tf.track.connection import get_or_create_experiment

    started = time.perf_counter()
    get_or_create_experiment(MlflowClient(tracking_uri=uri), experiment_name)
    return time.perf_counter() - started


@dataclass(frozen=True)
class RecordedRun:
    """A finished run as the tracking store holds it.

    Attributes:
        seed: the run's ``seed`` tag.
        start_ms: when MLflow created it (ms since the epoch).
        train_seconds: its ``train_seconds`` metric.
    """

    seed: str
    start_ms: int
    train_seconds: float


def recorded_runs(uri: str) -> list[RecordedRun]:
    """Every run in a store that recorded ``train_seconds`` (a sweep's parent run does not).

    Args:
        uri: the tracking store.

    Returns:
        The runs, oldest first.
    """
    from mlflow import MlflowClient

    from xent_tf.metrics import TRAIN_SECONDS_METRIC

    client = MlflowClient(tracking_uri=uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = [
        RecordedRun(
            str(run.data.tags.get("seed")),
            int(run.info.start_time),
            float(run.data.metrics[TRAIN_SECONDS_METRIC]),
        )
        for run in client.search_runs(experiment_ids, max_results=1000)
        if TRAIN_SECONDS_METRIC in run.data.metrics
    ]
    return sorted(runs, key=lambda r: r.start_ms)


# --------------------------------------------------------------------------- section 3


@dataclass
class SweepResult:
    """A joblib sweep over seeds, timed from outside.

    Attributes:
        n_jobs: jobs in the sweep.
        command: the command line run.
        store_seconds: creating its fresh store beforehand (kept out of ``wall_seconds``).
        wall_seconds: the sweep command's wall time, start to exit.
        serial_wall_seconds: the same sweep with Hydra's basic launcher (its jobs one after
            another in one process, TensorFlow imported once), start to exit.
        wall_over_serial: ``wall_seconds / serial_wall_seconds`` (target <= 0.6): what running
            the jobs in parallel buys over running them serially.
        train_seconds: each job's recorded ``train_seconds``, by job number.
        sum_train_seconds: their sum (the serial cost of the training alone).
        wall_over_train: ``wall_seconds / sum_train_seconds``, the strictest reading of the
            target (every second of start-up, launcher and report counts against it).
        import_seconds: one fresh process importing the entry point's modules.
        floor_over_train: the best ``wall_over_train`` possible with these workers if the only
            start-up were one such import per worker: (import + sum_train / workers) / sum_train.
        single_run_seconds: one of the jobs run alone as its own process (``make run`` style).
        wall_over_separate_runs: ``wall_seconds / (n_jobs * single_run_seconds)``: the sweep
            against running its jobs one after another as separate commands.
        first_job_overheads: per worker, its first job's non-training time (includes launcher
            and worker start-up: process spawn, imports).
        reused_job_overheads: non-training time of each job a warm worker ran.
        reused_before_run: the part of it before the job's first log line (Hydra's job
            set-up, config, device).
        reused_in_run: the part after (data, MLflow run, model and plot artifacts).
        launcher_seconds: from the command's start to the launcher dispatching jobs (its
            imports, config composition, the sweep callback's parent run); None if not logged.
        launch_to_first_job: seconds from the command's start to the first job's first log line.
        worker_pids: distinct processes that ran jobs.
        jobs_per_worker: how many jobs each of them ran.
        target: the target for ``wall_over_serial``.
        verdict: "met" or "MISSED".
    """

    n_jobs: int
    command: list[str]
    store_seconds: float
    wall_seconds: float
    serial_wall_seconds: float
    wall_over_serial: float
    train_seconds: list[float]
    sum_train_seconds: float
    wall_over_train: float
    import_seconds: float
    floor_over_train: float
    single_run_seconds: float
    wall_over_separate_runs: float
    first_job_overheads: list[float]
    reused_job_overheads: list[float]
    reused_before_run: list[float]
    reused_in_run: list[float]
    launcher_seconds: float | None
    launch_to_first_job: float
    worker_pids: list[int]
    jobs_per_worker: list[int]
    target: float = SWEEP_RATIO_TARGET
    verdict: str = "-"


def _job_seed(job_dir: Path) -> str:
    """The ``seed=`` override of one Hydra job directory."""
    import yaml

    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("seed="))


def bench_sweep(workdir: Path, n_jobs: int = SWEEP_JOBS) -> SweepResult:
    """Section 3: a seed sweep with the joblib launcher, one TF thread per job.

    Also times, for scale, one fresh import of the entry point's modules and one of the jobs
    run alone as its own process.

    Args:
        workdir: an empty scratch directory (store and sweep outputs go there).
        n_jobs: number of seeds.

    Returns:
        The sweep's timings.

    Raises:
        RuntimeError: the sweep command failed (its stderr tail is in the message).
    """
    uri = f"sqlite:///{workdir / 'bench.db'}"
    serial_uri = f"sqlite:///{workdir / 'serial.db'}"
    store_seconds = create_store(uri, "reference")
    create_store(serial_uri, "reference")
    sweep_dir = workdir / "sweep"

    def sweep_command(launcher: str, store: str, directory: Path) -> list[str]:
        return [
            sys.executable,
            "experiments/run.py",
            "-m",
            "seed=" + ",".join(str(s) for s in range(n_jobs)),
            f"hydra/launcher={launcher}",
            "trainer.threads=1",
            f"tracking.uri={store}",
            f"hydra.sweep.dir={directory}",
            f"hydra.job_logging.formatters.simple.format='{JOB_LOG_FORMAT}'",
            f"hydra.hydra_logging.formatters.simple.format='{LAUNCHER_LOG_FORMAT}'",
        ]

    def timed_sweep(command: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
        start_clock = time.time()
        started = time.perf_counter()
        process = subprocess.run(
            command, cwd=REPO_ROOT, env=_subprocess_env(), capture_output=True, text=True
        )
        if process.returncode != 0:
            raise RuntimeError(f"sweep failed ({process.returncode}):\n{process.stderr[-3000:]}")
        return start_clock, time.perf_counter() - started, process

    command = sweep_command("joblib", uri, sweep_dir)
    _, serial_wall, _ = timed_sweep(sweep_command("basic", serial_uri, workdir / "serial"))
    start_clock, wall, process = timed_sweep(command)

    train_by_seed = {run.seed: run.train_seconds for run in recorded_runs(uri)}
    jobs: list[JobTiming] = []
    for number in range(n_jobs):
        job_dir = sweep_dir / str(number)
        text = next(job_dir.glob("*.log")).read_text()
        seed = _job_seed(job_dir)
        if seed not in train_by_seed:  # a failed job does not stop the sweep; it voids it here
            raise RuntimeError(f"sweep job {number} (seed={seed}) failed:\n{text[-2000:]}")
        log = parse_job_log(text)
        jobs.append(JobTiming(number, log.pid, log.first, log.last, train_by_seed[seed]))
    overheads = job_overheads(start_clock, jobs)
    reused = [o for o in overheads if not o.first_in_worker]
    pids = sorted({j.pid for j in jobs})
    train = [j.train_seconds for j in jobs]
    launched = launch_time(process.stdout)

    single_run, _ = run_in_fresh_process(
        run_command(uri, workdir / "single", "seed=0", "trainer.threads=1"),
        workdir / "single.stderr",
    )
    imports = entry_point_import_seconds()
    return SweepResult(
        n_jobs=n_jobs,
        command=command,
        store_seconds=store_seconds,
        wall_seconds=wall,
        serial_wall_seconds=serial_wall,
        wall_over_serial=wall / serial_wall,
        train_seconds=train,
        sum_train_seconds=sum(train),
        wall_over_train=wall / sum(train),
        import_seconds=imports,
        floor_over_train=(imports + sum(train) / len(pids)) / sum(train),
        single_run_seconds=single_run,
        wall_over_separate_runs=wall / (n_jobs * single_run),
        first_job_overheads=[o.total for o in overheads if o.first_in_worker],
        reused_job_overheads=[o.total for o in reused],
        reused_before_run=[o.before_run for o in reused],
        reused_in_run=[o.in_run for o in reused],
        launcher_seconds=None if launched is None else launched - start_clock,
        launch_to_first_job=min(j.start for j in jobs) - start_clock,
        worker_pids=pids,
        jobs_per_worker=[sum(j.pid == pid for j in jobs) for pid in pids],
        verdict=verdict(wall / serial_wall, SWEEP_RATIO_TARGET),
    )


def render_sweep(result: SweepResult) -> str:
    """The table of section 3."""
    return format_table(*sweep_table(result))


def sweep_table(result: SweepResult) -> Table:
    """The headers and rows of section 3."""
    n_workers = len(result.worker_pids)
    per_worker = "/".join(map(str, result.jobs_per_worker))
    launcher = "-" if result.launcher_seconds is None else f"{result.launcher_seconds:.1f} s"
    rows = [
        [
            "wall / same sweep run serially",
            f"{result.wall_over_serial:.2f}x ({result.serial_wall_seconds:.1f} s serial)",
            f"<= {SWEEP_RATIO_TARGET:.1f}x",
            result.verdict,
        ],
        [
            "wall / sum of jobs' training (strictest)",
            f"{result.wall_over_train:.2f}x",
            f"<= {SWEEP_RATIO_TARGET:.1f}x",
            verdict(result.wall_over_train, SWEEP_RATIO_TARGET),
        ],
        [
            "  best possible: 1 import/worker, no other",
            f"{result.floor_over_train:.2f}x",
            f"<= {SWEEP_RATIO_TARGET:.1f}x",
            verdict(result.floor_over_train, SWEEP_RATIO_TARGET),
        ],
        [
            f"wall / {result.n_jobs} separate runs (other reading)",
            f"{result.wall_over_separate_runs:.2f}x (one alone: {result.single_run_seconds:.1f} s)",
            f"<= {SWEEP_RATIO_TARGET:.1f}x",
            verdict(result.wall_over_separate_runs, SWEEP_RATIO_TARGET),
        ],
        ["sweep wall time", f"{result.wall_seconds:.1f} s"],
        [
            "sum of training times",
            f"{result.sum_train_seconds:.1f} s ({median(result.train_seconds):.2f} s/job median)",
        ],
        ["start-up per job, warm worker", _median_of(result.reused_job_overheads)],
        ["  before the job's first log line", _median_of(result.reused_before_run)],
        ["  inside the run, not training", _median_of(result.reused_in_run)],
        ["start-up, each worker's first job", _median_of(result.first_job_overheads)],
        ["  launcher ready (imports, parent run)", launcher],
        ["  first job's first log line", f"{result.launch_to_first_job:.1f} s"],
        ["entry-point imports, fresh process", f"{result.import_seconds:.1f} s"],
        [
            "worker processes (TF imports)",
            f"{n_workers} for {result.n_jobs} jobs ({per_worker})",
            "1 per worker",
            "met" if n_workers < result.n_jobs else "MISSED",
        ],
        ["fresh store creation (excluded)", f"{result.store_seconds:.1f} s"],
    ]
    return ["measure", "value", "target", ""], [_pad(row, 4) for row in rows]


# --------------------------------------------------------------------------- section 4

TRACKED = "tracked"
TRACKED_NO_MODEL = "tracked, log_model=false"
UNTRACKED = "tracking off"


@dataclass
class MlflowShare:
    """``run_experiment`` with and without MLflow, in this (warm) process.

    Attributes:
        wall_seconds: per variant (``TRACKED``, ``TRACKED_NO_MODEL``, ``UNTRACKED``), the wall
            time of each repeat.
        train_seconds: per variant, the training time inside each repeat.
        share: per tracked run, seconds inside MLflow client calls / the run's wall time,
            median (target <= 0.05). Timed directly: a difference of two noisy run times
            (``difference_share``) cannot resolve a few percent on this machine.
        mlflow_seconds: per tracked repeat, the seconds spent inside MLflow client calls.
        difference_share: (median tracked - median untracked) / median tracked, the cross-check.
        model_artifact_seconds: median tracked - median tracked without the model artifact.
        import_seconds: importing ``xent_tf.track.writing`` (MLflow) in a fresh process after the
            run's other heavy imports: paid by every ``make run``, tracked or not.
        store_seconds: creating the fresh store (once per store; not in the share).
        target: the target for ``share``.
        verdict: "met" or "MISSED".
    """

    wall_seconds: dict[str, list[float]]
    train_seconds: dict[str, list[float]]
    share: float
    mlflow_seconds: list[float]
    difference_share: float
    model_artifact_seconds: float
    import_seconds: float
    store_seconds: float
    target: float = MLFLOW_SHARE_TARGET
    verdict: str = "-"


@contextlib.contextmanager
def time_mlflow_calls() -> Iterator[list[float]]:
    """Time every call into ``MlflowClient`` (the suite's only way into MLflow) while active.

    Yields:
        A one-element list holding the seconds spent so far; calls that MLflow makes from
        inside another client call are counted once.
    """
    from mlflow import MlflowClient

    spent = [0.0]
    depth = [0]
    originals = {
        name: member
        for name, member in vars(MlflowClient).items()
        if callable(member) and (not name.startswith("_") or name == "__init__")
    }

    def timed(method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - started

        return wrapper

    for name, method in originals.items():
        setattr(MlflowClient, name, timed(method))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(MlflowClient, name, method)


def bench_mlflow(workdir: Path, repeats: int) -> MlflowShare:
    """Section 4: the reference config through ``run_experiment``, tracked vs untracked.

    One warm-up run of each variant comes first (first-use costs in this process: matplotlib,
    model saving), then ``repeats`` rounds of the three variants in rotating order.

    Args:
        workdir: an empty scratch directory.
        repeats: rounds to time.

    Returns:
        The timings and MLflow's share.
    """
    from xent_tf.train.pipeline import run_experiment

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    configs = {
        TRACKED: compose_config([f"tracking.uri={uri}"]),
        TRACKED_NO_MODEL: compose_config([f"tracking.uri={uri}", "tracking.log_model=false"]),
        UNTRACKED: compose_config(["tracking=off"]),
    }
    store_seconds = create_store(uri, configs[TRACKED].experiment_name)
    walls: dict[str, list[float]] = {name: [] for name in configs}
    trains: dict[str, list[float]] = {name: [] for name in configs}
    in_mlflow: list[float] = []
    names = list(configs)
    for i in range(-1, repeats):  # round -1 warms up and is not kept
        for name in names[i % 3 :] + names[: i % 3]:
            with time_mlflow_calls() as spent:
                started = time.perf_counter()
                summary = run_experiment(
                    configs[name], output_dir=workdir / f"{i}-{names.index(name)}"
                )
                wall = time.perf_counter() - started
            if i >= 0:
                walls[name].append(wall)
                trains[name].append(summary.train_seconds)
                if name == TRACKED:
                    in_mlflow.append(spent[0])
    tracked, untracked = median(walls[TRACKED]), median(walls[UNTRACKED])
    share = median([t / w for t, w in zip(in_mlflow, walls[TRACKED], strict=True)])
    return MlflowShare(
        wall_seconds=walls,
        train_seconds=trains,
        share=share,
        mlflow_seconds=in_mlflow,
        difference_share=(tracked - untracked) / tracked,
        model_artifact_seconds=tracked - median(walls[TRACKED_NO_MODEL]),
        import_seconds=import_seconds(
            "xent_tf.track.writing",
            before="tensorflow, keras, yaml, xent_tf.report.plotting, xent_tf.config",
        ),
        store_seconds=store_seconds,
        verdict=verdict(share, MLFLOW_SHARE_TARGET),
    )


def render_mlflow(result: MlflowShare) -> str:
    """The table of section 4."""
    return format_table(*mlflow_table(result))


def mlflow_table(result: MlflowShare) -> Table:
    """The headers and rows of section 4."""
    wall = {name: median(values) for name, values in result.wall_seconds.items()}
    train = {name: median(values) for name, values in result.train_seconds.items()}
    rows = [
        [
            "MLflow share of run wall time (timed calls)",
            f"{100 * result.share:.1f}%",
            f"<= {100 * MLFLOW_SHARE_TARGET:.0f}%",
            result.verdict,
        ],
        ["  seconds inside MLflow client calls", _median_of(result.mlflow_seconds)],
        ["  cross-check: tracked - off, / tracked", f"{100 * result.difference_share:.1f}%"],
        *(
            [f"run_experiment, {name}", f"{wall[name]:.2f} s (training {train[name]:.2f} s)"]
            for name in (TRACKED, TRACKED_NO_MODEL, UNTRACKED)
        ),
        ["MLflow's added time", f"{wall[TRACKED] - wall[UNTRACKED]:.2f} s"],
        [
            "  counted outside training (less noisy)",
            f"{(wall[TRACKED] - train[TRACKED]) - (wall[UNTRACKED] - train[UNTRACKED]):.2f} s",
        ],
        ["  of which the model artifact", f"{result.model_artifact_seconds:.2f} s"],
        ["import of MLflow, fresh process", f"{result.import_seconds:.2f} s"],
        ["fresh store creation (once)", f"{result.store_seconds:.1f} s"],
    ]
    return ["measure", "value", "target", ""], [_pad(row, 4) for row in rows]


# --------------------------------------------------------------------------- section 5


@dataclass
class MemoryResult:
    """Reference runs, each ``experiments/run.py`` in a fresh process, as ``make run`` does.

    Attributes:
        peak_rss_mb: each run's maximum resident set size, MiB.
        wall_seconds: each run's time from start to exit (``make run`` without make's check).
        train_seconds: each run's recorded training time.
        import_seconds: one fresh process importing the entry point's modules.
        store_seconds: creating their store beforehand (``make run`` reuses ./mlflow.db).
        target_seconds: the ``make run`` target.
        verdict: "met" or "MISSED" for the median of ``wall_seconds``.
    """

    peak_rss_mb: list[float]
    wall_seconds: list[float]
    train_seconds: list[float]
    import_seconds: float
    store_seconds: float
    target_seconds: float = MAKE_RUN_TARGET_SECONDS
    verdict: str = "-"


def bench_memory(workdir: Path, repeats: int) -> MemoryResult:
    """Section 5: peak memory and wall time of the reference run, each in a fresh process.

    Args:
        workdir: an empty scratch directory.
        repeats: runs to make.

    Returns:
        Peak RSS and wall time of every run.
    """
    uri = f"sqlite:///{workdir / 'run.db'}"
    store_seconds = create_store(uri, "reference")
    walls: list[float] = []
    peaks: list[float] = []
    for i in range(repeats):
        command = run_command(uri, workdir / f"run-{i}")
        wall, peak = run_in_fresh_process(command, workdir / f"run-{i}.stderr")
        walls.append(wall)
        peaks.append(peak)
    return MemoryResult(
        peak_rss_mb=peaks,
        wall_seconds=walls,
        train_seconds=[run.train_seconds for run in recorded_runs(uri)],
        import_seconds=entry_point_import_seconds(),
        store_seconds=store_seconds,
        verdict=verdict(median(walls), MAKE_RUN_TARGET_SECONDS),
    )


def render_memory(result: MemoryResult) -> str:
    """The table of section 5."""
    return format_table(*memory_table(result))


def memory_table(result: MemoryResult) -> Table:
    """The headers and rows of section 5."""
    wall, train = median(result.wall_seconds), median(result.train_seconds)
    rows = [
        ["peak RSS of a run (max over runs)", f"{max(result.peak_rss_mb):.0f} MiB"],
        [
            "`make run` equivalent, start to exit",
            f"{wall:.1f} s (median of {len(result.wall_seconds)})",
            f"<= {MAKE_RUN_TARGET_SECONDS:.0f} s",
            result.verdict,
        ],
        ["  training", f"{train:.2f} s"],
        ["  imports (timed in a fresh process)", f"{result.import_seconds:.1f} s"],
        ["  everything else", f"{wall - result.import_seconds - train:.1f} s"],
    ]
    return ["measure", "value", "target", ""], [_pad(row, 4) for row in rows]


# --------------------------------------------------------------------------- section 6


@dataclass
class ScalingPoint:
    """Training cost at one dataset size (one run each of the suite and NumPy).

    Attributes:
        n_samples: rows generated.
        n_train: training rows.
        epochs: epochs run.
        suite: the suite's timing.
        numpy: the yardstick's timing.
        suite_ms_per_1k_rows: suite steady epoch time per 1,000 training rows, ms.
        numpy_ms_per_1k_rows: the same for NumPy.
    """

    n_samples: int
    n_train: int
    epochs: int
    suite: RunTiming
    numpy: RunTiming
    suite_ms_per_1k_rows: float
    numpy_ms_per_1k_rows: float


def bench_scaling(quick: bool) -> list[ScalingPoint]:
    """Section 6: the reference model and settings on 10^4, 10^5 and 10^6 rows.

    Args:
        quick: skip the 10^6 set.

    Returns:
        One point per size.
    """
    from xent_tf.config import MakeClassificationConfig
    from xent_tf.train.data import make_dataset

    points: list[ScalingPoint] = []
    for n_samples, epochs in SCALING_SIZES:
        if quick and n_samples >= 1_000_000:
            continue
        case = Case(
            f"n={n_samples}", MakeClassificationConfig(n_samples=n_samples), (10, 10), "bce", epochs
        )
        data = make_dataset(case.data)
        suite = time_suite_run(data, case, seed=0)
        numpy = time_numpy_run(data, case, seed=0)
        n_train = len(data.train)
        points.append(
            ScalingPoint(
                n_samples=n_samples,
                n_train=n_train,
                epochs=epochs,
                suite=suite,
                numpy=numpy,
                suite_ms_per_1k_rows=1e6 * suite.steady_epoch / n_train,
                numpy_ms_per_1k_rows=1e6 * numpy.steady_epoch / n_train,
            )
        )
    return points


def render_scaling(points: Sequence[ScalingPoint]) -> str:
    """The table of section 6."""
    return format_table(*scaling_table(points))


def scaling_table(points: Sequence[ScalingPoint]) -> Table:
    """The headers and rows of section 6."""
    rows = [
        [
            f"{p.n_samples:,}",
            f"{p.n_train:,}",
            str(p.epochs),
            _seconds(p.suite.seconds),
            _seconds(p.suite.first_epoch),
            _seconds(p.suite.steady_epoch),
            f"{p.suite_ms_per_1k_rows:.2f}",
            _seconds(p.numpy.steady_epoch),
            f"{p.numpy_ms_per_1k_rows:.2f}",
            format_ratio(p.suite.steady_epoch / p.numpy.steady_epoch),
        ]
        for p in points
    ]
    headers = [
        "n_samples",
        "train rows",
        "epochs",
        "suite s",
        "1st ep s",
        "s/epoch",
        "ms/1k rows",
        "numpy s/ep",
        "numpy ms/1k",
        "ratio/ep",
    ]
    return headers, rows


# --------------------------------------------------------------------------- driver


def _git(*args: str) -> str:
    """The stripped output of a git command run in the repo."""
    done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def machine_info() -> dict[str, Any]:
    """Where and with what the bench ran (for the JSON and the header line)."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):  # not Linux: keep platform's answer
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = {}
    for package in ("tensorflow", "keras", "numpy", "mlflow", "hydra-core"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        if _git("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"  # measured with uncommitted changes to tracked files
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": commit,
    }


@dataclass
class BenchReport:
    """Everything one invocation measured, for ``latest.json``.

    Attributes:
        machine: ``machine_info()``.
        settings: the command-line choices.
        sections: section name -> its result (or {"error": message}).
    """

    machine: dict[str, Any]
    settings: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)


def _run_section(name: str, repeats: int, quick: bool) -> tuple[Any, str]:
    """Run one section in its own scratch directory.

    Returns:
        (its result, the rendered table).
    """
    with tempfile.TemporaryDirectory(prefix=f"xent-bench-{name}-") as scratch:
        workdir = Path(scratch)
        if name == "reference":
            comparisons = bench_reference(repeats)
            return comparisons, render_training(comparisons)
        if name == "wider":
            comparisons = bench_wider(repeats)
            return comparisons, render_training(comparisons)
        if name == "sweep":
            sweep = bench_sweep(workdir)
            return sweep, render_sweep(sweep)
        if name == "mlflow":
            share = bench_mlflow(workdir, repeats)
            return share, render_mlflow(share)
        if name == "memory":
            memory = bench_memory(workdir, repeats)
            return memory, render_memory(memory)
        if name == "replicas":
            from benchmarks.replicas import bench_replicas, render_replicas

            replicas = bench_replicas(workdir, repeats)
            return replicas, render_replicas(replicas)
        if name == "reproduce":
            from benchmarks.reproduce import bench_reproduce, render_reproduce

            reproduce = bench_reproduce(workdir)
            return reproduce, render_reproduce(reproduce)
        if name in ("evidence", "evidence-full"):
            from benchmarks.evidence import bench_evidence, render_evidence

            evidence = bench_evidence(workdir, full=name == "evidence-full", repeats=repeats)
            return evidence, render_evidence(evidence)
        points = bench_scaling(quick)
        return points, render_scaling(points)


SECTION_TITLES = {
    "reference": "1. reference run: suite (CompiledLoop + fit, fresh model, tracing included) "
    "vs NumPy; median of {repeats} interleaved pairs",
    "wider": "2. more arithmetic: 5 classes and 256-256 hidden layers (trend; no target)",
    "sweep": f"3. {SWEEP_JOBS}-job seed sweep, hydra/launcher=joblib, trainer.threads=1",
    "mlflow": "4. MLflow's share: run_experiment tracked vs tracking off; median of {repeats}",
    "memory": "5. the reference run as `make run` runs it (experiments/run.py, a fresh process "
    "each); median of {repeats}",
    "replicas": "7. replica batches (issue 11): K=20 replicas of the reference run vs one run; "
    "a 20-seed sweep vectorised vs serial; records; memory",
    "reproduce": "8. make reproduce (5 studies x 10 seeds, then the ledger): one process vs "
    "one process per step, each from an empty directory and store",
    "evidence": "9. every study x 4 data sets x 10 seeds + ledger (issue 28): the ledger's "
    "subprocess per study vs one process (reproduce.py --datasets), each from an empty store; "
    "a replica batch with a kept trainer vs a fresh one, {repeats} interleaved pairs",
    "evidence-full": "10. make evidence: every study x 8 data sets x seeds 0-19 + ledger, "
    "from an empty store",
    "scaling": "6. scaling with n_samples (one run each; 20/5/2 epochs for 10^4/10^5/10^6; "
    "s/epoch excludes the first, tracing epoch)",
}


def _jsonable(value: Any) -> Any:
    """Dataclasses (also inside lists) as dicts, for ``json.dumps``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, run the sections, print their tables and write the JSON.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0, or 1 when a section could not be measured (its error is printed and recorded).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="paired repeats (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 repeat, no sweep, reproduce or evidence, no 10^6-row scaling point",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument("--json", type=Path, default=RESULTS_PATH, help="where to write results")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    repeats = 1 if args.quick else args.repeats
    sections = select_sections(args.only, args.quick)

    report = BenchReport(
        machine=machine_info(),
        settings={"repeats": repeats, "quick": args.quick, "sections": sections},
    )
    m, v = report.machine, report.machine["versions"]
    print(
        f"xent-tf bench  {m['date']}  {m['cpu']} ({m['cpu_count']} CPUs)  "
        f"TF {v['tensorflow']}, Keras {v['keras']}, NumPy {v['numpy']}, MLflow {v['mlflow']}  "
        f"commit {m['git_commit']}",
        flush=True,
    )
    failed = False
    for name in sections:
        print(f"\n{SECTION_TITLES[name].format(repeats=repeats)}", flush=True)
        started = time.perf_counter()
        try:
            result, table = _run_section(name, repeats, args.quick)
        except Exception as error:  # report and go on: the other sections still count
            failed = True
            report.sections[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"FAILED: {type(error).__name__}: {error}", flush=True)
            continue
        report.sections[name] = _jsonable(result)
        print(f"{table}\n({time.perf_counter() - started:.0f} s)", flush=True)

    try:
        previous = results.load(args.json)
    except ValueError as error:  # the new measurements matter more than an unreadable old file
        print(f"replacing it: {error}", flush=True)
        previous = None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    merged = results.merge(previous, dataclasses.asdict(report))
    args.json.write_text(json.dumps(merged, indent=2) + "\n")
    kept = sorted(set(merged["sections"]) - set(sections))
    kept_note = f" (kept from earlier runs: {', '.join(kept)})" if kept else ""
    print(f"\nresults: {args.json}{kept_note}")
    return 1 if failed else 0


if __name__ == "__main__":
    if str(REPO_ROOT) not in sys.path:  # `python benchmarks/bench.py` as well as `-m`
        sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
