"""`make bench` section 8: `make reproduce`, start to end, against its 90 s target.

The same work two ways, each from an empty directory with its own SQLite store, one after the
other on this machine:
- one process (``experiments/reproduce.py``, what `make reproduce` runs): every study with one
  kept pool of worker processes, then the ledger in one of them;
- one process per step (what `make reproduce` ran before): ``experiments/run.py -m
  +experiment=STUDY +resume=matching`` for each study, then ``experiments/run.py
  +experiment=claims``.
Wall time and CPU time (user + system of every process) of each, and the ledger's verdicts of
the one-process run.

    python -m benchmarks.bench --only reproduce
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPRODUCE_TARGET_SECONDS = 90.0


@dataclass(frozen=True)
class ReproduceBench:
    """What section 8 measured.

    Attributes:
        one_process: wall seconds of ``experiments/reproduce.py``.
        one_process_cpu: its CPU seconds (user + system, workers included).
        per_step: wall seconds of the same steps, one process each.
        per_step_cpu: their CPU seconds.
        verdicts: {verdict: number of claims} of the one-process run's ledger.
    """

    one_process: float
    one_process_cpu: float
    per_step: float
    per_step_cpu: float
    verdicts: dict[str, int]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(commands: Sequence[Sequence[str]], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of running ``commands`` one after another in ``cwd``."""
    cpu = _children_cpu()
    started = time.perf_counter()
    with (cwd / "output.log").open("w") as log:
        for command in commands:
            subprocess.run(
                command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=1800
            )
    return time.perf_counter() - started, _children_cpu() - cpu


def _verdicts(directory: Path) -> dict[str, int]:
    """{verdict: count} of the ledger's claims.json under ``directory``."""
    (path,) = directory.glob("outputs/claims/*/claims.json")
    counts: dict[str, int] = {}
    for claim in json.loads(path.read_text())["claims"]:
        counts[claim["verdict"]] = counts.get(claim["verdict"], 0) + 1
    return counts


def bench_reproduce(workdir: Path) -> ReproduceBench:
    """Section 8 (see the module docstring).

    Args:
        workdir: an empty scratch directory.

    Returns:
        The measurements.
    """
    from benchmarks.common import REPO_ROOT
    from xent_tf.claims.studies import STUDIES

    python = sys.executable
    one, steps = workdir / "one-process", workdir / "per-step"
    one.mkdir()
    steps.mkdir()
    uri = "tracking.uri=sqlite:///{}/mlflow.db"
    wall_one, cpu_one = _timed(
        [[python, str(REPO_ROOT / "experiments" / "reproduce.py"), uri.format(one)]], one
    )
    run = str(REPO_ROOT / "experiments" / "run.py")
    per_step = [
        [python, run, "-m", f"+experiment={study}", "+resume=matching", uri.format(steps)]
        for study in STUDIES
    ]
    wall_steps, cpu_steps = _timed(
        [*per_step, [python, run, "+experiment=claims", uri.format(steps)]], steps
    )
    return ReproduceBench(wall_one, cpu_one, wall_steps, cpu_steps, _verdicts(one))


def render_reproduce(result: ReproduceBench) -> str:
    """Section 8's table."""
    from benchmarks.common import format_table

    return format_table(*reproduce_table(result))


def reproduce_table(result: ReproduceBench) -> tuple[list[str], list[list[str]]]:
    """Section 8's headers and rows."""
    from benchmarks.common import verdict

    rows = [
        [
            "make reproduce (one process: experiments/reproduce.py)",
            f"{result.one_process:.0f} s wall, {result.one_process_cpu:.0f} s CPU",
            f"<= {REPRODUCE_TARGET_SECONDS:.0f} s",
            verdict(result.one_process, REPRODUCE_TARGET_SECONDS),
        ],
        [
            "the same steps, one process each (run.py per study, then the ledger)",
            f"{result.per_step:.0f} s wall, {result.per_step_cpu:.0f} s CPU",
            "",
        ],
        [
            "one process / one process per step",
            f"{result.one_process / result.per_step:.2f}x wall, "
            f"{result.one_process_cpu / result.per_step_cpu:.2f}x CPU",
            "",
        ],
        [
            "ledger (one-process run)",
            ", ".join(f"{n} {v}" for v, n in sorted(result.verdicts.items())),
            "",
        ],
    ]
    return ["measure", "value", "target", ""], [[*row, *[""] * (4 - len(row))] for row in rows]
