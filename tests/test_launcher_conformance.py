"""Hydra's own conformance suite for launcher plugins, run on every launcher xent-tf registers.

``replicas`` is in Hydra's shared ``hydra_plugins`` namespace, where any Hydra app can select it:
a task that is not xent-tf's runs job by job, as under Hydra's basic launcher. The resilient
joblib launcher (what ``hydra/launcher=joblib`` selects in configs/) runs the suite with Hydra's
joblib settings and its own class.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark

# Hydra's in-process suite needs a process whose Hydra state no other test has touched (Hydra
# keeps process-wide state, e.g. the version base of the last app initialised: after another
# test's, the suite's jobs no longer run in their own directories). The suite runs in a fresh
# pytest process of its own, started by the test at the end of this file.
IN_FRESH_PROCESS = "XENT_CONFORMANCE_PROCESS"

RESILIENT_JOBLIB = "hydra_plugins.xent_tf_launcher.joblib_launcher.ResilientJoblibLauncher"


@mark.parametrize(
    "launcher_name, overrides",
    [
        ("replicas", []),
        ("joblib", [f"hydra.launcher._target_={RESILIENT_JOBLIB}", "hydra.launcher.n_jobs=2"]),
    ],
)
@mark.skipif(
    os.environ.get(IN_FRESH_PROCESS) != "1",
    reason="runs in a fresh process: test_hydras_launcher_suite_passes_in_a_fresh_process",
)
class TestProjectLaunchers(LauncherTestSuite):
    """Hydra's ``LauncherTestSuite``: sweeps of its test app through each launcher."""


def test_hydras_launcher_suite_passes_in_a_fresh_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"{Path(__file__)}::TestProjectLaunchers"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, IN_FRESH_PROCESS: "1"},
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:]
    # Hydra's suite: 9 tests for each of the two launchers, none skipped.
    assert "18 passed" in done.stdout.splitlines()[-1], done.stdout[-2000:]


def _app_config(launcher: str) -> dict[str, object]:
    """The test app's primary config: the launcher, Hydra's own logging off (as in Hydra's
    plugins' suites)."""
    return {
        "defaults": [
            {"override hydra/launcher": launcher},
            {"override hydra/hydra_logging": "disabled"},
            {"override hydra/job_logging": "disabled"},
            "_self_",
        ]
    }


@mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (_app_config("replicas"), ["-m"]),
        (_app_config("joblib"), ["-m", f"hydra.launcher._target_={RESILIENT_JOBLIB}"]),
    ],
)
class TestProjectLaunchersIntegration(IntegrationTestSuite):
    """Hydra's ``IntegrationTestSuite``: apps run in their own process through each launcher."""
