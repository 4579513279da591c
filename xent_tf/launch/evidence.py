"""The full evidence (`make evidence`): every study on every data set, as units of work, and a
console line per finished unit with the time left.

A unit is one study's sweep on one data set (``data=<name>``). Units differ a lot in cost (a
study on the 10,000-row reference data trains ~50 times the steps of one on wine), so the time
left is not extrapolated from a count of units: each unit's wall time is modelled as
``per_job * jobs + per_step * jobs * steps`` (a job's fixed cost: composing, recording, its
share of the report; and its training, proportional to its mini-batch steps), the two rates
fitted to the units done so far (least squares), and applied to the units left.

Nothing here imports TensorFlow or MLflow: the launching process runs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xent_tf.launch.progress import format_duration


@dataclass(frozen=True)
class Unit:
    """One study's sweep on one data set.

    Attributes:
        study: the study (``+experiment=<study>``).
        dataset: the data set (``data=<dataset>``).
        jobs: jobs its sweep launches (seeds x variants; jobs that do not apply included).
        steps: mini-batch steps one job trains (steps per epoch x epochs).
    """

    study: str
    dataset: str
    jobs: int
    steps: int

    @property
    def name(self) -> str:
        return f"{self.study} on {self.dataset}"


@dataclass(frozen=True)
class UnitOutcome:
    """How a finished unit's jobs went, from its sweep directory's files.

    Attributes:
        trained: jobs trained now.
        skipped: jobs that had FINISHED (or diverged) before (``+resume=matching``): not
            trained again.
        left_out: jobs whose choices do not fit the data set (bce on 3 classes).
    """

    trained: int
    skipped: int
    left_out: int


def read_outcome(sweep_dir: Path, jobs: int) -> UnitOutcome:
    """A finished unit's outcome: its resumed jobs (``finished_jobs.json``) and the jobs left
    out (``.progress.json``) in ``sweep_dir``; the rest were trained.

    Args:
        sweep_dir: the unit's sweep directory.
        jobs: the jobs its sweep launched.

    Returns:
        The counts (0 for a file that is not there).
    """
    skipped = left_out = 0
    finished = sweep_dir / "finished_jobs.json"
    if finished.exists():
        skipped = len(json.loads(finished.read_text()))
    counts = sweep_dir / ".progress.json"
    if counts.exists():
        left_out = int(json.loads(counts.read_text()).get("left_out", 0))
    skipped = min(skipped, jobs - left_out)
    return UnitOutcome(max(0, jobs - skipped - left_out), skipped, left_out)


@dataclass
class EvidenceClock:
    """The time left for a list of units, from the wall times of those done.

    Attributes:
        units: every unit, in the order they run.
        done: (trained jobs, steps per job, wall seconds) of each finished unit.
    """

    units: Sequence[Unit]
    done: list[tuple[int, int, float]] = field(default_factory=list)

    def finish(self, trained: int, steps: int, seconds: float) -> None:
        """Record a finished unit: its trained jobs, steps per job and wall seconds."""
        self.done.append((trained, steps, seconds))

    def rates(self) -> tuple[float, float]:
        """(seconds per job, seconds per job-step), fitted to the finished units.

        With units of one step count only, the two cannot be told apart: every second is put
        on the jobs. Most of a job's time is not its training (its records, its share of
        start-up: docs/EVIDENCE.md, "Where the time goes"), so a data set of fewer rows takes
        nearly as long; putting it on the steps had the first data set's ETA say seconds with
        minutes left.
        """
        rows = [(jobs, jobs * steps, s) for jobs, steps, s in self.done if jobs > 0]
        if not rows:
            return 0.0, 0.0
        matrix = np.array([[a, b] for a, b, _ in rows], dtype=float)
        seconds = np.array([s for _, _, s in rows], dtype=float)
        if len({steps for _, steps, _ in self.done}) >= 2:
            (per_job, per_step), *_ = np.linalg.lstsq(matrix, seconds, rcond=None)
            if per_job >= 0 and per_step >= 0:
                return float(per_job), float(per_step)
        return float(seconds.sum() / matrix[:, 0].sum()), 0.0

    def seconds_left(self) -> float:
        """Predicted seconds for the units not finished yet (all their jobs to train)."""
        per_job, per_step = self.rates()
        return sum(
            per_job * u.jobs + per_step * u.jobs * u.steps for u in self.units[len(self.done) :]
        )


def unit_line(
    number: int, clock: EvidenceClock, unit: Unit, outcome: UnitOutcome, seconds: float
) -> str:
    """The console line of a finished unit.

    Args:
        number: the unit's position (1-based).
        clock: the clock, this unit already recorded in it.
        unit: the unit.
        outcome: how its jobs went.
        seconds: its wall time.

    Returns:
        ``[3/40] lr_sweep on wine: 80 jobs trained (20 left out: not applicable) in 12 s;
        ETA 8 min 10 s`` (``all done`` for the last unit).
    """
    extra = []
    if outcome.skipped:
        extra.append(f"{outcome.skipped} finished earlier")
    if outcome.left_out:
        extra.append(f"{outcome.left_out} left out: not applicable")
    detail = f" ({'; '.join(extra)})" if extra else ""
    line = (
        f"[{number}/{len(clock.units)}] {unit.name}: {outcome.trained} jobs trained{detail} "
        f"in {format_duration(seconds)}"
    )
    if number >= len(clock.units):
        return f"{line}; all units done"
    left = clock.seconds_left()
    return f"{line}; ETA {format_duration(left) if math.isfinite(left) else '?'}"
