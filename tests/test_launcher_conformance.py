"""Hydra's own conformance suite for launcher plugins, run on every launcher xent-tf registers.

``replicas`` is in Hydra's shared ``hydra_plugins`` namespace, where any Hydra app can select it:
a task that is not xent-tf's runs job by job, as under Hydra's basic launcher. The resilient
joblib and Ray launchers (what ``hydra/launcher=joblib`` and ``hydra/launcher=ray`` select in
configs/) run the suites with Hydra's plugins' settings and their own class; the Ray ones on a
local Ray instance of their own (skipped without the scale extra).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from hydra.core.plugins import Plugins
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark, param

# Hydra's in-process suite needs a process whose Hydra state no other test has touched (Hydra
# keeps process-wide state, e.g. the version base of the last app initialised: after another
# test's, the suite's jobs no longer run in their own directories). The suite runs in a fresh
# pytest process of its own, started by the test at the end of this file.
IN_FRESH_PROCESS = "XENT_CONFORMANCE_PROCESS"

RESILIENT_JOBLIB = "hydra_plugins.xent_tf_launcher.joblib_launcher.ResilientJoblibLauncher"
RESILIENT_RAY = "hydra_plugins.xent_tf_launcher.ray_launcher.ResilientRayLauncher"
HAS_RAY = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None
# A local Ray instance is a real service (pyproject's ``integration`` marker): each of Hydra's
# integration cases starts one in its app's process (~30 s each here, 11 cases), the
# in-process suite one for its 9 cases (~40 s).
needs_ray = [
    mark.integration,
    mark.skipif(not HAS_RAY, reason="Ray is in the scale extra: make install-scale"),
    mark.xdist_group("ray"),  # one Ray at a time: `make test-integration` runs on three workers
]
if HAS_RAY:
    # Hydra's Ray plugin stores its ``hydra/launcher/ray`` config when Hydra's plugin scan
    # imports its modules, once per process: the suite's fixtures restore the ConfigStore each
    # test started with, so the scan runs here, before the first test, for every test to find.
    Plugins.instance()
# A local Ray instance of two CPUs, without its dashboard (a test serves nothing).
RAY_LOCAL = [
    f"hydra.launcher._target_={RESILIENT_RAY}",
    "+hydra.launcher.ray.init.num_cpus=2",
    "+hydra.launcher.ray.init.include_dashboard=false",
]


@mark.parametrize(
    "launcher_name, overrides",
    [
        ("replicas", []),
        ("joblib", [f"hydra.launcher._target_={RESILIENT_JOBLIB}", "hydra.launcher.n_jobs=2"]),
        param("ray", RAY_LOCAL, marks=needs_ray, id="ray"),
    ],
)
@mark.skipif(
    os.environ.get(IN_FRESH_PROCESS) != "1",
    reason="runs in a fresh process: test_hydras_launcher_suite_passes_in_a_fresh_process",
)
class TestProjectLaunchers(LauncherTestSuite):
    """Hydra's ``LauncherTestSuite``: sweeps of its test app through each launcher."""


def _suite_in_a_fresh_process(selected: str) -> str:
    """Runs ``TestProjectLaunchers``'s cases ``-k selected`` in a fresh pytest process.

    Returns:
        Its last line (the counts).
    """
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"{Path(__file__)}::TestProjectLaunchers", "-k", selected],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, IN_FRESH_PROCESS: "1"},
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:]
    return done.stdout.splitlines()[-1]


def test_hydras_launcher_suite_passes_in_a_fresh_process() -> None:
    # Hydra's suite: 9 tests for each of the two launchers, none skipped.
    counts = _suite_in_a_fresh_process("not ray")
    assert "18 passed" in counts and "skipped" not in counts, counts


@needs_ray[0]
@needs_ray[1]
@needs_ray[2]
def test_hydras_launcher_suite_passes_for_ray_in_a_fresh_process() -> None:
    counts = _suite_in_a_fresh_process("ray")
    assert "9 passed" in counts and "skipped" not in counts, counts


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
        param(_app_config("replicas"), ["-m"], id="replicas"),
        param(
            _app_config("joblib"),
            ["-m", f"hydra.launcher._target_={RESILIENT_JOBLIB}"],
            id="joblib",
        ),
        param(_app_config("ray"), ["-m", *RAY_LOCAL], marks=needs_ray, id="ray"),
    ],
)
class TestProjectLaunchersIntegration(IntegrationTestSuite):
    """Hydra's ``IntegrationTestSuite``: apps run in their own process through each launcher.

    Each case starts an app process (and, for Ray, a Ray instance): `make test` runs one case of
    each of the suite's four tests for the replica and joblib launchers, the one with the most
    overrides in play, and one of them for Ray, whose every case costs a Ray start and whose
    launcher the in-process suite above and tests/integration exercise besides
    (``SAMPLED_CASES``; tests/conftest.py skips the rest, saying so);
    ``XENT_CONFORMANCE=full`` (`make conformance`) runs all eleven per launcher.
    """

    SAMPLED_CASES = frozenset(
        [
            f"{case}{launcher}]"
            for case in (
                "test_custom_task_name[different_filename_and_config_file_name_override_and_"
                "command_line_override-",
                "test_custom_sweeper_run_workdir[subdir:custom_override_dirname-",
                "test_get_orig_dir_multirun[",
                "test_to_absolute_path_multirun[",
            )
            for launcher in ("replicas", "joblib")
        ]
        + ["test_custom_sweeper_run_workdir[subdir:custom_override_dirname-ray]"]
    )
