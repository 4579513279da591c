"""Tomorrow's releases before they bite: the newest versions pyproject.toml allows, installed into
a throw-away environment, against the unit suite and a tiny study (what `make check-latest` runs).

It prints which packages differ from uv.lock, then runs the checks; the exit code is non-zero
when a check fails. Not part of CI: its answer depends on the day it runs.

    python tools/check_latest.py --uv .venv/bin/uv                # unit suite + tiny study
    python tools/check_latest.py --uv .venv/bin/uv --no-unit      # the tiny study only
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The installed set: what `make install` and `make reproduce` give, without the scale extra,
# whose Ray launcher caps cloudpickle (and so joblib): without it, versions move furthest.
EXTRAS = "dev,reference"
ALL_EXTRAS = "dev,scale,reference"


@dataclass(frozen=True)
class Step:
    """One check's outcome."""

    name: str
    returncode: int
    seconds: float
    result: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def normalise(name: str) -> str:
    """PEP 503's normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path) -> dict[str, set[str]]:
    """{package: its versions in the lock}."""
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads(lock.read_text())["package"]:
        if "version" in package:
            versions.setdefault(normalise(package["name"]), set()).add(package["version"])
    return versions


def frozen_versions(uv: str, python: Path) -> dict[str, str]:
    """{package: installed version} of an environment (``uv pip freeze``, editable ones left
    out)."""
    out = subprocess.run(
        [uv, "pip", "freeze", "--python", str(python)], capture_output=True, text=True, check=True
    ).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            versions[normalise(name)] = version.strip()
    return versions


def differences(locked: dict[str, set[str]], latest: dict[str, str]) -> list[tuple[str, str, str]]:
    """(package, locked version(s) or "-", newest installed version or "-") for every package
    whose newest allowed version is not a locked one, sorted by name."""
    rows = []
    for name in sorted(set(locked) | set(latest)):
        have = latest.get(name)
        pinned = locked.get(name, set())
        if have is None:
            continue  # locked for another platform, Python or extra: not installed here
        if have not in pinned:
            rows.append((name, ", ".join(sorted(pinned)) or "-", have))
    return rows


def compiled_versions(uv: str, extras: str) -> dict[str, str]:
    """{package: newest version} that a resolution of pyproject.toml with only ``extras`` picks
    (``uv pip compile``: nothing installed)."""
    command = [uv, "pip", "compile", "--quiet", "--resolution", "highest", "--no-header",
               "--no-annotate", str(ROOT / "pyproject.toml")]  # fmt: skip
    for extra in extras.split(","):
        command += ["--extra", extra]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    versions = {}
    for line in out.splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[normalise(name)] = version.split(";")[0].strip()
    return versions


def run_step(name: str, command: list[str], cwd: Path) -> Step:
    """Runs a check, its output going to the terminal and kept for the summary."""
    print(f"\n== {name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    process = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    output = process.stdout + process.stderr
    print(output[-4000:], flush=True)
    result = result_line(process.stdout, process.stderr, failed=process.returncode != 0)
    return Step(name, process.returncode, time.monotonic() - start, result)


def result_line(stdout: str, stderr: str, failed: bool = False) -> str:
    """The line a step's summary shows: its last line of output on stdout (pytest's "N passed",
    the study's result). TensorFlow's and MLflow's start-up logs go to stderr, and would read as
    the result of a step that passed when they come last.

    Args:
        stdout: the step's standard output.
        stderr: its standard error.
        failed: the step failed: its error (the last line on stderr) comes first.

    Returns:
        The last non-blank line of the first stream that has one, else "".
    """
    for stream in (stderr, stdout) if failed else (stdout, stderr):
        lines = [line for line in stream.splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", default="uv", help="the uv executable (make passes the venv's)")
    parser.add_argument("--no-unit", action="store_true", help="skip the unit suite")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away environment")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="xent-latest-"))
    venv = work / "venv"
    python = venv / "bin" / "python"
    try:
        make_venv = [args.uv, "venv", "--quiet", "--python", sys.executable, str(venv)]
        subprocess.run(make_venv, check=True)
        print(f"installing the newest versions pyproject.toml allows into {venv}", flush=True)
        subprocess.run(
            [args.uv, "pip", "install", "--quiet", "--python", str(python),
             "--resolution", "highest", "-e", f"{ROOT}[{EXTRAS}]"],
            check=True,
        )  # fmt: skip
        locked = locked_versions(ROOT / "uv.lock")
        for what, latest in [
            (f"installed here (extras {EXTRAS})", frozen_versions(args.uv, python)),
            (f"resolved with every extra ({ALL_EXTRAS})", compiled_versions(args.uv, ALL_EXTRAS)),
        ]:
            rows = differences(locked, latest)
            print(
                f"\n{what}: {len(rows)} package(s) differ from uv.lock (locked -> newest allowed):"
            )
            for name, pinned, have in rows:
                print(f"  {name}: {pinned} -> {have}")

        steps = []
        if not args.no_unit:
            unit = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                    "-m", "not integration", "--ignore=tests/test_lock.py"]  # fmt: skip
            steps.append(run_step("unit suite", unit, ROOT))
        study_dir = work / "study"
        study_dir.mkdir()
        store = f"tracking.uri=sqlite:///{study_dir / 'mlflow.db'}"
        study = [str(python), str(ROOT / "experiments" / "run.py"), "-m",
                 "+experiment=binary_vs_categorical", "seed=0,1", "+debug=tiny",
                 "trainer.verbose=false", store]  # fmt: skip
        steps.append(run_step("tiny study", study, study_dir))

        print("\nsummary (newest allowed versions):")
        for step in steps:
            verdict = "passed" if step.passed else f"FAILED (exit {step.returncode})"
            print(f"  {step.name}: {verdict} in {step.seconds:.0f} s; {step.result}")
        return 0 if all(step.passed for step in steps) else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
