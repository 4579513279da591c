"""The environment is the lock: every installed package at its locked version, and the lock
resolved from the pyproject.toml it sits next to."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "uv.lock"
# python -m venv puts pip (and on older Pythons setuptools) into a venv before uv runs; uv
# leaves them alone. The project itself is installed editable from the working tree.
NOT_FROM_THE_LOCK = {"pip", "setuptools", "xent-tf"}


def _normalise(name: str) -> str:
    """PEP 503's normal form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path = LOCK) -> dict[str, set[str]]:
    """{normalised package name: its locked versions} (a universal lock may hold a package at
    two versions, one per Python range)."""
    packages = tomllib.loads(lock.read_text())["package"]
    versions: dict[str, set[str]] = {}
    for package in packages:
        if "version" in package:
            versions.setdefault(_normalise(package["name"]), set()).add(package["version"])
    return versions


def test_every_installed_package_is_at_its_locked_version() -> None:
    locked = locked_versions()
    installed = {
        _normalise(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    assert len(installed) > 100  # TensorFlow, MLflow, Hydra and their dependencies
    unlocked = sorted(n for n in installed if n not in locked and n not in NOT_FROM_THE_LOCK)
    assert unlocked == [], f"installed but not in uv.lock: {unlocked} (make lock)"
    differ = {
        name: (version, sorted(locked[name]))
        for name, version in installed.items()
        if name in locked and version not in locked[name]
    }
    assert differ == {}, f"installed version differs from uv.lock: {differ} (make install)"


def test_the_lock_pins_the_packages_a_study_needs() -> None:
    locked = locked_versions()
    for name in ["tensorflow", "keras", "mlflow", "hydra-core", "joblib", "cloudpickle", "uv"]:
        assert len(locked[name]) == 1, name
    # Each pinned with the hashes of its files: an installer checks what it downloads.
    packages = tomllib.loads(LOCK.read_text())["package"]
    tensorflow = next(p for p in packages if p["name"] == "tensorflow")
    assert tensorflow["wheels"] and all(
        w["hash"].startswith("sha256:") for w in tensorflow["wheels"]
    )


def test_the_lock_is_resolved_from_this_pyproject() -> None:
    uv = Path(sys.prefix) / "bin" / "uv"
    if not uv.exists():
        pytest.skip("uv is not in this environment (make install puts it there)")
    checked = subprocess.run(
        [str(uv), "lock", "--check", "--offline", "--project", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, (
        f"uv.lock is out of date with pyproject.toml: make lock\n{checked.stderr}"
    )


def test_check_latest_lists_only_packages_newer_than_their_locked_versions() -> None:
    from tools.check_latest import differences

    locked = {"joblib": {"1.5.3"}, "numpy": {"2.4.6", "2.5.5"}, "torch": {"2.15.0"}}
    latest = {"joblib": "1.6.0", "numpy": "2.5.5", "newdep": "0.1"}
    # numpy is at one of its locked versions; torch is not installed here (another extra).
    assert differences(locked, latest) == [("joblib", "1.5.3", "1.6.0"), ("newdep", "-", "0.1")]


def test_check_latests_summary_shows_a_steps_result_not_a_log_line_on_stderr() -> None:
    from tools.check_latest import result_line

    cuinit = "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    assert result_line("..\n817 passed, 32 skipped in 442.70s\n\n", cuinit) == (
        "817 passed, 32 skipped in 442.70s"
    )
    assert result_line("", "Traceback ...\nValueError: bad\n") == "ValueError: bad"
    assert result_line("", "") == ""
    # A step that failed shows its error.
    assert result_line("epoch 1\n", "ValueError: bad\n", failed=True) == "ValueError: bad"
