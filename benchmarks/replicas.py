"""`make bench` section 7: replica batches against the same runs trained one by one.

Measured side by side in one process (the ratios are what count on this noisy machine):
- K=20 replicas of the reference run in one graph vs one reference run (``CompiledLoop`` +
  ``fit``), each from a fresh trainer (tracing included) and once traced;
- a 20-seed sweep of the reference run, vectorised (``replica_batch.train_batch``: data, 20
  models, one graph, range of seeds) vs the same 20 runs one after another in this warm
  process (``pipeline.run_experiment`` with tracking off, its compiled loop reused);
- the per-run records (params, metrics, batch-loss series, model file, datasets: ``record_outcome``
  into a SQLite store that, as a study's, already holds the experiment and the parent run, with
  a study's tracking settings) as a share of one batch's training + records (the strict
  reading), and the records of a real study's runs as a share of that study's wall time, start
  to end (the issue's words: "of a vectorised study's wall time");
- peak memory of a process that trains 20 replicas (a fresh subprocess).

    python -m benchmarks.bench --only replicas
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xent_tf.config import Config

REPLICAS = 20
REPLICA_RATIO_TARGET = 2.0  # K=20 replicas' training / one run's training
VECTORISED_SWEEP_TARGET = 0.15  # vectorised 20-seed sweep / the same runs serially, warm
RECORD_SHARE_TARGET = 0.25  # per-run records / a vectorised study's wall time


@dataclass(frozen=True)
class ReplicaBench:
    """What section 7 measured (seconds unless named otherwise).

    Attributes:
        replica_cold, single_cold: a fresh trainer's 20 epochs, tracing included (per repeat).
        replica_warm, single_warm: the same trainer's next 20 epochs (per repeat).
        vectorised_sweep: train_batch of the 20 seed configs (tracking off), per repeat.
        serial_sweep: the same 20 runs via run_experiment, one after another, per repeat.
        record_seconds: recording the 20 runs of one batch into SQLite (model, datasets...).
        study_seconds: train_batch + recording of that batch.
        peak_rss_mb: peak RSS of a fresh process training 20 replicas of the reference run.
        replica_mib: the batch's memory estimate per replica (``replicas.bytes_per_replica``).
        val_acc_spread: (min, max) final validation accuracy over the 20 replicas.
        record_kinds: median seconds per run of the records studies may leave out
            (``benchmarks.mlflow_records``: datasets, logged_model, artifact).
        study_record_seconds: a real study's records (``STUDY``, ``experiments/run.py -m`` in
            a fresh process): each child run's time from its creation to its end, summed over
            the children (runs recorded side by side in two workers both count).
        whole_study_seconds: that study's wall time, process start to exit.
        study_runs: its child runs.
    """

    replica_cold: list[float]
    single_cold: list[float]
    replica_warm: list[float]
    single_warm: list[float]
    vectorised_sweep: list[float]
    serial_sweep: list[float]
    record_seconds: float
    study_seconds: float
    peak_rss_mb: float
    replica_mib: float
    val_acc_spread: tuple[float, float]
    record_kinds: dict[str, float]
    study_record_seconds: float = 0.0
    whole_study_seconds: float = 0.0
    study_runs: int = 0


def _seed_configs(n: int, *overrides: str) -> list[Config]:
    from benchmarks.common import compose_config

    return [
        compose_config(["tracking=off", "trainer.verbose=false", f"seed={s}", *overrides])
        for s in range(n)
    ]


class _Training:
    """The reference run's data and rates, and its two ways of training: K replicas in one
    graph, or one run through the single-run path (``CompiledLoop`` + ``fit``)."""

    def __init__(self, configs: Sequence[Config]) -> None:
        from xent_tf.train.build import build_dataset, build_loss, schedule_rates, tensor_splits
        from xent_tf.train.training import steps_per_epoch

        self.configs = configs
        self.first = first = configs[0]
        self.data = build_dataset(first.data)
        self.spec = build_loss(first.loss, self.data)
        self.train, self.val, _ = tensor_splits(self.data, self.spec)
        self.epochs = first.trainer.epochs
        n_steps = steps_per_epoch(len(self.train), first.trainer.batch_size)
        self.rates = schedule_rates(
            first.schedule, first.optimizer.learning_rate, self.epochs, n_steps
        )

    def replicas(self) -> Callable[[], object]:
        """Build the replica trainer and train it once; returns a function that trains again."""
        import numpy as np

        from xent_tf.train.build import build_model, build_optimizer
        from xent_tf.train.replica_batch import replicas_initial_weights
        from xent_tf.train.replicas import OptimizerRule, ReplicaTrainer

        first, configs = self.first, self.configs
        # The replicas' initial weights as a study's batch gets them (replica_batch.train_batch).
        template = build_model(first.model, self.data, self.spec, first.seed)
        trainer = ReplicaTrainer.from_weights(
            template,
            replicas_initial_weights(template, configs, self.data, self.spec),
            self.spec.loss,
            OptimizerRule.of(build_optimizer(first.optimizer)),
            first.trainer.batch_size,
            first.loss.from_logits,
        )
        rates = np.tile(self.rates, (len(configs), 1))
        seeds = [c.seed for c in configs]

        def again() -> object:
            return trainer.fit(self.train, self.val, rates, self.epochs, seeds)

        again()
        return again

    def single(self) -> Callable[[], object]:
        """Build the first config's single run and train it once; returns a function that
        trains it again."""
        from xent_tf.train.build import build_model, build_optimizer
        from xent_tf.train.training import CompiledLoop, fit

        first = self.first
        loop = CompiledLoop(
            build_model(first.model, self.data, self.spec, first.seed),
            self.spec.loss,
            build_optimizer(first.optimizer),
            first.trainer.batch_size,
            first.loss.from_logits,
        )

        def again() -> object:
            return fit(loop, self.train, self.val, self.rates, self.epochs, first.seed)

        again()
        return again


def _time_training(
    configs: Sequence[Config], single_first: bool = False
) -> tuple[float, float, float, float]:
    """(replicas cold, single cold, replicas warm, single warm) for the reference run.

    Args:
        configs: the replicas' configs; the single run is the first one's.
        single_first: time the single run before the replicas (the repeats alternate, so
            neither side always pays for what the process does the first time).
    """
    from benchmarks.common import collect_garbage

    training = _Training(configs)

    def cold_and_warm(start: Callable[[], Callable[[], object]]) -> tuple[float, float]:
        collect_garbage()
        started = time.perf_counter()
        again = start()
        cold = time.perf_counter() - started
        collect_garbage()
        started = time.perf_counter()
        again()
        return cold, time.perf_counter() - started

    if single_first:
        single_cold, single_warm = cold_and_warm(training.single)
        replica_cold, replica_warm = cold_and_warm(training.replicas)
    else:
        replica_cold, replica_warm = cold_and_warm(training.replicas)
        single_cold, single_warm = cold_and_warm(training.single)
    return replica_cold, single_cold, replica_warm, single_warm


def _time_sweeps(configs: Sequence[Config], workdir: Path) -> tuple[float, float]:
    """(vectorised, serial) wall time of the 20 seed runs, tracking off."""
    from benchmarks.common import collect_garbage
    from xent_tf.train.pipeline import run_experiment
    from xent_tf.train.replica_batch import train_batch

    collect_garbage()
    started = time.perf_counter()
    train_batch(configs)
    vectorised = time.perf_counter() - started
    collect_garbage()
    started = time.perf_counter()
    for i, config in enumerate(configs):
        run_experiment(config, workdir / f"serial-{i}")
    serial = time.perf_counter() - started
    return vectorised, serial


def _time_records(workdir: Path) -> tuple[float, float, tuple[float, float]]:
    """(recording seconds, train + record seconds, val acc range) of a 20-replica batch.

    As in a study, the store and the experiment exist before the batch's runs are recorded
    (a sweep's callback creates them with its parent run, before any job): creating a SQLite
    store's tables is a one-off second or two, not a per-run record. The runs are the parent's
    children, as a study's are.
    """
    from xent_tf.track.writing import start_parent_run
    from xent_tf.train.replica_batch import record_outcome, train_batch

    uri = f"sqlite:///{workdir / 'records.db'}"
    parent_run_id, _ = start_parent_run(uri, "reference", "bench parent", {})
    # As a study records its children: no per-run PNG, the model file as a plain artifact.
    configs = _seed_configs(
        REPLICAS,
        "tracking=sqlite",
        f"tracking.uri={uri}",
        "tracking.plots=false",
        "tracking.logged_model=false",
    )
    started = time.perf_counter()
    batch = train_batch(configs)
    trained = time.perf_counter()
    accs = []
    for k in range(len(configs)):
        out = workdir / f"job-{k}"
        out.mkdir()
        summary = record_outcome(batch, k, out, [f"seed={k}"], parent_run_id, None, None, "bench#1")
        accs.append(summary.history[-1].val_acc)
    ended = time.perf_counter()
    return ended - trained, ended - started, (min(accs), max(accs))


STUDY = "lr_sweep"


def _time_study_records(workdir: Path) -> tuple[float, float, int]:
    """(records summed over the children, the study's wall, its runs) of ``STUDY`` run as a
    user runs it. A replica's run is created once its batch has trained and ended once its
    records are written, so its start-to-end time is its records (Hydra's per-job set-up,
    which comes before, is not counted)."""
    from mlflow import MlflowClient

    from benchmarks.common import REPO_ROOT

    uri = f"sqlite:///{workdir / 'study.db'}"
    command = [
        sys.executable,
        str(REPO_ROOT / "experiments" / "run.py"),
        "-m",
        f"+experiment={STUDY}",
        f"tracking.uri={uri}",
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, capture_output=True, check=True, timeout=900)
    wall = time.perf_counter() - started
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    children = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=10_000)
        if "mlflow.parentRunId" in r.data.tags
    ]
    records = sum((r.info.end_time - r.info.start_time) / 1000 for r in children)
    return records, wall, len(children)


# The subprocess reports its own peak (ru_maxrss, KiB on Linux).
_PEAK_SCRIPT = """
import resource, sys
sys.path.insert(0, {root!r})
from benchmarks.replicas import _seed_configs
from xent_tf.train.replica_batch import train_batch
train_batch(_seed_configs({n}))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_mb(root: Path) -> float:
    """Peak RSS (MiB) of a fresh process that trains 20 reference replicas."""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.format(root=str(root), n=REPLICAS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def bench_replicas(workdir: Path, repeats: int) -> ReplicaBench:
    """Section 7 (see the module docstring).

    Args:
        workdir: an empty scratch directory.
        repeats: paired repeats of the timed comparisons.

    Returns:
        The measurements.
    """
    from benchmarks.common import median
    from benchmarks.mlflow_records import measure as measure_records
    from xent_tf.train.replicas import bytes_per_replica
    from xent_tf.train.runtime import configure_runtime

    configs = _seed_configs(REPLICAS)
    configure_runtime("cpu", 1, 0)
    timings = [_time_training(configs, single_first=i % 2 == 1) for i in range(repeats)]
    sweeps = [_time_sweeps(configs, workdir / f"sweep-{i}") for i in range(max(1, repeats // 2))]
    record_seconds, study_seconds, spread = _time_records(workdir)
    study_records, study_wall, study_runs = _time_study_records(workdir)
    (workdir / "records").mkdir()
    return ReplicaBench(
        replica_cold=[t[0] for t in timings],
        single_cold=[t[1] for t in timings],
        replica_warm=[t[2] for t in timings],
        single_warm=[t[3] for t in timings],
        vectorised_sweep=[s[0] for s in sweeps],
        serial_sweep=[s[1] for s in sweeps],
        record_seconds=record_seconds,
        study_seconds=study_seconds,
        peak_rss_mb=_peak_rss_mb(Path(__file__).resolve().parent.parent),
        replica_mib=bytes_per_replica(6300, 6300, 20, [10, 10, 1]) / 2**20,
        val_acc_spread=spread,
        record_kinds={
            name: median(values)
            for name, values in measure_records(max(3, repeats), workdir / "records").items()
        },
        study_record_seconds=study_records,
        whole_study_seconds=study_wall,
        study_runs=study_runs,
    )


def render_replicas(result: ReplicaBench) -> str:
    """Section 7's table."""
    from benchmarks.common import format_table

    return format_table(*replicas_table(result))


def replicas_table(result: ReplicaBench) -> tuple[list[str], list[list[str]]]:
    """Section 7's headers and rows."""
    from benchmarks.common import median, median_ratio, verdict

    cold = median_ratio(result.replica_cold, result.single_cold)
    warm = median_ratio(result.replica_warm, result.single_warm)
    sweep = median_ratio(result.vectorised_sweep, result.serial_sweep)
    share = result.record_seconds / result.study_seconds
    study_share = result.study_record_seconds / max(result.whole_study_seconds, 1e-9)
    rows = [
        [
            f"K={REPLICAS} replicas vs one run, training, tracing included",
            f"{cold:.2f}x ({median(result.replica_cold):.2f} s vs "
            f"{median(result.single_cold):.2f} s)",
            f"<= {REPLICA_RATIO_TARGET}x",
            verdict(cold, REPLICA_RATIO_TARGET),
        ],
        [
            "same, once traced",
            f"{warm:.2f}x ({median(result.replica_warm):.2f} s vs "
            f"{median(result.single_warm):.2f} s)",
            "",
        ],
        [
            f"{REPLICAS}-seed sweep vectorised vs the same runs serially (warm, tracking off)",
            f"{sweep:.3f}x ({median(result.vectorised_sweep):.2f} s vs "
            f"{median(result.serial_sweep):.2f} s)",
            f"<= {VECTORISED_SWEEP_TARGET}x",
            verdict(sweep, VECTORISED_SWEEP_TARGET),
        ],
        [
            "per-run records / study wall (20 runs into SQLite)",
            f"{100 * share:.0f}% ({result.record_seconds:.2f} s of {result.study_seconds:.2f} s)",
            f"<= {RECORD_SHARE_TARGET:.0%}",
            verdict(share, RECORD_SHARE_TARGET),
        ],
        [
            f"same, {STUDY} run as a user runs it: its {result.study_runs} runs' records "
            "(each run's start to end, summed) / the study's wall, process start to exit",
            f"{100 * study_share:.0f}% ({result.study_record_seconds:.2f} s of "
            f"{result.whole_study_seconds:.2f} s)",
            f"<= {RECORD_SHARE_TARGET:.0%}",
            verdict(study_share, RECORD_SHARE_TARGET),
        ],
        [
            f"peak RSS of a {REPLICAS}-replica process",
            f"{result.peak_rss_mb:.0f} MiB (estimate {result.replica_mib:.2f} MiB per replica)",
            "",
        ],
        [
            "per run: dataset inputs / MLflow logged model / model.keras as an artifact",
            " / ".join(
                f"{result.record_kinds[k]:.3f} s" for k in ("datasets", "logged_model", "artifact")
            ),
            "studies: artifact",
        ],
        [
            "replicas' final val acc",
            f"{result.val_acc_spread[0]:.3f}-{result.val_acc_spread[1]:.3f}",
            "",
        ],
    ]
    return ["measure", "value", "target", ""], [[*row, *[""] * (4 - len(row))] for row in rows]
