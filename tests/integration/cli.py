"""`python experiments/run.py` as a user runs it, from the integration tests, and the study the
shared-server tests run once per session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.integration.services import ROOT, TINY, stop_group

# 2 losses x 8 seeds of the MSE-vs-CE comparison (plain SGD, standard init), 3 epochs each,
# logged by parallel joblib workers.
PG_STUDY = [
    "-m",
    "+experiment=mse_vs_ce",
    "data=reference",
    "loss=ce,mse",
    "optimizer=sgd",
    "model.output_init=standard",
    "seed=range(8)",
    *TINY,
    "trainer.epochs=3",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "tracking.plots=true",  # the children's records are checked in full, loss curve included
]
PG_STUDY_JOBS = 16

# The MLflow UI's view of a study: 2 variants x 2 seeds, 3 epochs, each run's model logged.
UI_STUDY = [
    "-m",
    "+experiment=binary_vs_categorical",
    "data=reference,multiclass",
    "loss=sparse_cce",
    "seed=0,1",
    *(o for o in TINY if not o.startswith("tracking.log_model")),
    "trainer.epochs=3",
    "tracking.logged_model=true",  # the Models column is what the browser test looks at
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
]
UI_STUDY_VARIANTS = ("multiclass sparse_cce", "reference sparse_cce")
PG_STUDY_EPOCHS = 3


@dataclass(frozen=True)
class CliResult:
    """A finished `experiments/run.py` process."""

    returncode: int
    output: str  # stdout and stderr, interleaved
    seconds: float


@dataclass(frozen=True)
class FinishedStudy:
    """A study sweep that ran to its end against a tracking store."""

    uri: str
    experiment_name: str
    sweep_dir: Path
    result: CliResult


def start_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`run.py ARGS` in the background, in its own process group (so the test can end it and
    its sweep workers), output appended to ``cwd/cli-output.log``; ``env``: its environment
    (default: this process's)."""
    with (cwd / "cli-output.log").open("ab") as out:
        out.write(f"$ run.py {' '.join(args)}\n".encode())
        out.flush()
        return subprocess.Popen(
            [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**(os.environ if env is None else env), "TF_CPP_MIN_LOG_LEVEL": "2"},
            start_new_session=True,
        )


def run_cli(
    *args: str, cwd: Path, timeout: float = 600, env: Mapping[str, str] | None = None
) -> CliResult:
    """Run `run.py ARGS` in ``cwd`` and wait for it (its process group ends with it).

    Returns:
        Exit code, this run's output, wall time.
    """
    log = cwd / "cli-output.log"
    offset = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    process = start_cli(*args, cwd=cwd, env=env)
    try:
        returncode = process.wait(timeout)
    finally:
        stop_group(process)  # also on a timeout: no sweep worker outlives the test
    output = log.read_bytes()[offset:].decode(errors="replace")
    return CliResult(returncode, output, time.monotonic() - started)
