"""Hydra's own conformance suite for launcher plugins, run on every launcher xent-tf registers.

``replicas`` is in Hydra's shared ``hydra_plugins`` namespace, where any Hydra app can select it:
a task that is not xent-tf's runs job by job, as under Hydra's basic launcher. The resilient
joblib launcher (what ``hydra/launcher=joblib`` selects in configs/) runs the suite with Hydra's
joblib settings and its own class.
"""

from __future__ import annotations

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark

RESILIENT_JOBLIB = "hydra_plugins.xent_tf_launcher.joblib_launcher.ResilientJoblibLauncher"


@mark.parametrize(
    "launcher_name, overrides",
    [
        ("replicas", []),
        ("joblib", [f"hydra.launcher._target_={RESILIENT_JOBLIB}", "hydra.launcher.n_jobs=2"]),
    ],
)
class TestProjectLaunchers(LauncherTestSuite):
    """Hydra's ``LauncherTestSuite``: sweeps of its test app through each launcher."""


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
