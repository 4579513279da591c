"""`make bench` sections 9 and 10: the evidence on several data sets (issue 28).

Section 9 (``evidence``): every study x 4 data sets (reference, breast_cancer, digits, wine) x
10 seeds, then the ledger, from an empty store, two ways one after the other:
- before: the ledger asked for the data sets (``experiments/run.py +experiment=claims
  claims.datasets=[...]``), which runs each missing study as a subprocess of its own
  (``runner.SubprocessStudyRunner``: one process, so TensorFlow import and worker pool, per
  study and data set);
- now: ``experiments/reproduce.py --datasets ...`` (``make evidence`` without the second seed
  set): every study on every data set in one process with one worker pool.
Section 9 also trains one batch of 10 replicas (wine, reference) with a fresh trainer and with
a kept one (``replicas.reusable_trainer``), alternately in one process: what a worker's later
batches of the same graph save.
Section 10 (``evidence-full``): ``make evidence`` itself (8 data sets, seeds 0-19, the ledger)
from an empty store; there is no "before" for it (the ledger's way runs 80 subprocess sweeps).

Each reports wall and CPU seconds and the share of the wall that is not training: 1 - (the
training seconds of every replica batch, summed) / (workers x wall), the training seconds being
each batch's ``train_seconds`` (its fit's wall time, logged on every run of the batch).

    python -m benchmarks.bench --only evidence
    python -m benchmarks.bench --only evidence-full
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Table

EVIDENCE_4_TARGET_SECONDS = 150.0  # 4 data sets x 10 seeds + ledger, fresh store
EVIDENCE_FULL_TARGET_SECONDS = 600.0  # 8 data sets x seeds 0-19 + ledger, fresh store
NOT_TRAINING_TARGET = 0.25  # share of the wall that is not training
FOUR_DATASETS = ("reference", "breast_cancer", "digits", "wine")
WORKERS = 2  # experiments/reproduce.py's default pool


@dataclass(frozen=True)
class EvidenceRun:
    """One way of getting the evidence, measured.

    Attributes:
        how: what ran.
        wall: wall seconds.
        cpu: CPU seconds (user + system, every process).
        training: seconds the replica batches trained (summed over batches).
        not_training: 1 - training / (workers x wall).
        per_dataset: {claim: "holds on N of M"} of its ledger.
    """

    how: str
    wall: float
    cpu: float
    training: float
    not_training: float
    per_dataset: dict[str, str]


@dataclass(frozen=True)
class EvidenceBench:
    """Section 9 (before and now, and the kept trainers) or 10 (now only)."""

    runs: list[EvidenceRun]
    trainers: list[TrainerReuse] = field(default_factory=list)


def training_seconds(batches: Mapping[tuple[str, str], float], single: Sequence[float]) -> float:
    """The training seconds of a store's study runs: each replica batch once (every run of a
    batch logs the batch's ``train_seconds``), plus each run trained alone.

    Args:
        batches: {(parent run, batch tag): the batch's train_seconds}.
        single: train_seconds of each child run that is in no batch.

    Returns:
        Their sum.
    """
    return sum(batches.values()) + sum(single)


def not_training_share(training: float, wall: float, workers: int) -> float:
    """1 - training / (workers x wall): the share of the pool's time not spent training."""
    if wall <= 0 or workers < 1:
        raise ValueError(f"wall={wall} and workers={workers} must be positive")
    return 1.0 - training / (workers * wall)


def read_training(store: Path) -> float:
    """``training_seconds`` of every child run in the SQLite store at ``store``."""
    query = """
        select p.value, b.value, m.value from runs r
        join tags p on p.run_uuid = r.run_uuid and p.key = 'mlflow.parentRunId'
        join latest_metrics m on m.run_uuid = r.run_uuid and m.key = 'train_seconds'
        left join tags b on b.run_uuid = r.run_uuid and b.key = 'xent.replica_batch'
    """
    batches: dict[tuple[str, str], float] = {}
    single: list[float] = []
    with sqlite3.connect(store) as connection:
        for parent, batch, seconds in connection.execute(query):
            if batch is None:
                single.append(float(seconds))
            else:
                batches[(parent, batch)] = max(batches.get((parent, batch), 0.0), float(seconds))
    return training_seconds(batches, single)


def _holds_on(directory: Path) -> dict[str, str]:
    """{claim: "holds on N of M"} of the ledger's claims.json under ``directory``."""
    (path,) = directory.glob("outputs/claims/*/claims.json")
    return {c["claim"]: c["holds_on"] for c in json.loads(path.read_text())["claims"]}


def _measure(how: str, command: list[str], directory: Path) -> EvidenceRun:
    from benchmarks.reproduce import _timed

    directory.mkdir()
    wall, cpu = _timed([command], directory)
    training = read_training(directory / "mlflow.db")
    return EvidenceRun(
        how,
        wall,
        cpu,
        training,
        not_training_share(training, wall, WORKERS),
        _holds_on(directory),
    )


def bench_evidence(workdir: Path, full: bool = False, repeats: int = 3) -> EvidenceBench:
    """Section 9 (``full``: 10); see the module docstring.

    Args:
        workdir: an empty scratch directory.
        full: ``make evidence`` itself (8 data sets, two seed sets), now only.
        repeats: pairs of the kept-trainer measure (section 9).

    Returns:
        The measurements.
    """
    from benchmarks.common import REPO_ROOT

    python = sys.executable
    reproduce = str(REPO_ROOT / "experiments" / "reproduce.py")
    uri = "tracking.uri=sqlite:///{}/mlflow.db"
    if full:
        now = workdir / "evidence"
        command = [python, reproduce, "--datasets", "all", "--stability", uri.format(now)]
        return EvidenceBench([_measure("make evidence (8 data sets, seeds 0-19)", command, now)])
    datasets = ",".join(FOUR_DATASETS)
    before, now = workdir / "ledger-subprocesses", workdir / "one-process"
    runs = [
        _measure(
            "before: the ledger, a subprocess per study and data set",
            [
                python,
                str(REPO_ROOT / "experiments" / "run.py"),
                "+experiment=claims",
                f"claims.datasets=[{datasets}]",
                uri.format(before),
            ],
            before,
        ),
        _measure(
            "now: reproduce.py --datasets (one process, one pool)",
            [python, reproduce, "--datasets", datasets, uri.format(now)],
            now,
        ),
    ]
    return EvidenceBench(runs, bench_trainer_reuse(repeats))


def render_evidence(result: EvidenceBench) -> str:
    """Section 9's or 10's table, as the bench prints it."""
    from benchmarks.common import format_table

    return format_table(*evidence_table(result))


def evidence_table(result: EvidenceBench) -> Table:
    """Section 9's or 10's (headers, rows): printed by the bench, shown in docs/PERFORMANCE.md."""
    from benchmarks.common import verdict

    full = len(result.runs) == 1
    target = EVIDENCE_FULL_TARGET_SECONDS if full else EVIDENCE_4_TARGET_SECONDS
    rows = []
    for run in result.runs:
        rows.append(
            [
                run.how,
                f"{run.wall:.0f} s wall, {run.cpu:.0f} s CPU, {run.training:.0f} s training",
                f"<= {target:.0f} s",
                verdict(run.wall, target),
            ]
        )
        rows.append(
            [
                "  share of the pool's wall not training",
                f"{run.not_training:.0%}",
                f"<= {NOT_TRAINING_TARGET:.0%}",
                verdict(run.not_training, NOT_TRAINING_TARGET),
            ]
        )
    if not full:
        before, now = result.runs
        rows.append(
            [
                "now / before",
                f"{now.wall / before.wall:.2f}x wall, {now.cpu / before.cpu:.2f}x CPU",
                "",
                "",
            ]
        )
        rows.append(
            [
                "same 'holds on N of M' both ways",
                "yes" if before.per_dataset == now.per_dataset else "no",
                "",
                "",
            ]
        )
    for reuse in result.trainers:
        ratios = [r / f for f, r in zip(reuse.fresh, reuse.reused, strict=True)]
        rows.append(
            [
                f"a batch of 10 replicas on {reuse.dataset}, 20 epochs: kept trainer / fresh",
                f"{statistics.median(ratios):.2f}x (fresh {statistics.median(reuse.fresh):.2f} s,"
                f" kept {statistics.median(reuse.reused):.2f} s; median of {len(ratios)})",
                "",
                "",
            ]
        )
    last = result.runs[-1]
    rows += [
        [f"  {claim} holds on", held, "", ""] for claim, held in last.per_dataset.items() if held
    ]
    # The last column, titled "", is the verdict (as in the bench's other tables).
    return ["measure", "value", "target", ""], rows


def stored_evidence(data: Mapping[str, Any]) -> EvidenceBench:
    """Section 9's or 10's result as the results file stores it (``dataclasses.asdict``)."""
    return EvidenceBench(
        [EvidenceRun(**run) for run in data["runs"]],
        [TrainerReuse(**reuse) for reuse in data.get("trainers", [])],
    )


@dataclass(frozen=True)
class TrainerReuse:
    """A replica batch trained by a fresh trainer (tracing its functions) vs by a kept one
    restarted from the batch's weights, interleaved in one process.

    Attributes:
        dataset: the data set.
        fresh: seconds per batch, fresh trainer, each repeat.
        reused: the same, kept trainer.
    """

    dataset: str
    fresh: list[float]
    reused: list[float]


def bench_trainer_reuse(
    repeats: int, datasets: Sequence[str] = ("wine", "reference")
) -> list[TrainerReuse]:
    """Section 9's trainer measure: one batch of 10 replicas (MLP 10-10, SGD 0.1, 20 epochs,
    batch 32) of each data set, ``repeats`` times a fresh trainer and a kept one, alternately.

    Args:
        repeats: pairs per data set.
        datasets: data set presets (configs/data).

    Returns:
        One measurement per data set.
    """
    import functools
    import gc
    import time

    import numpy as np
    from hydra import compose, initialize_config_dir

    from benchmarks.common import REPO_ROOT
    from xent_tf.config import MlpConfig, to_config
    from xent_tf.train.build import build_dataset, build_loss, build_model, tensor_splits
    from xent_tf.train.replicas import OptimizerRule, ReplicaTrainer, reusable_trainer
    from xent_tf.train.runtime import configure_runtime
    from xent_tf.train.training import steps_per_epoch

    device = configure_runtime("cpu", 1, 0)
    results = []
    for name in datasets:
        with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "configs")):
            config = to_config(compose("config", [f"data={name}", "loss=ce"]))
        data = build_dataset(config.data)
        spec = build_loss(config.loss, data)
        train, val, _ = tensor_splits(data, spec)
        mlp = MlpConfig(hidden_units=[10, 10])
        template = build_model(mlp, data, spec, 0)
        weights = [build_model(mlp, data, spec, s).get_weights() for s in range(10)]
        seeds = list(range(10))
        rates = np.full((10, 20 * steps_per_epoch(len(train), 32)), 0.1, np.float32)
        rule = OptimizerRule("sgd")
        kept = reusable_trainer(template, weights, spec.loss, rule, 32, False, device.name)
        kept.fit(train, val, rates, 20, seeds)  # traced once: what a worker's later batches find
        fresh: list[float] = []
        reused: list[float] = []
        makers = (
            (fresh, functools.partial(ReplicaTrainer.from_weights, template, weights)),
            (reused, functools.partial(reusable_trainer, template, weights, device=device.name)),
        )
        for _ in range(repeats):
            for times, make in makers:
                gc.collect()
                started = time.perf_counter()
                trainer = make(spec.loss, rule, 32, False)
                trainer.evaluate(val, with_norms=False)
                trainer.fit(train, val, rates, 20, seeds)
                times.append(time.perf_counter() - started)
        results.append(TrainerReuse(name, fresh, reused))
    return results
