"""Shared fixtures: compose the real configs with tiny overrides, and a throwaway MLflow store."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Ray reports usage to its makers' server by default: tests send traffic to loopback only
# (inherited by every Ray process a test starts).
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from xent_tf.config import Config, to_config

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")
TINY = ["+debug=tiny", "trainer.verbose=false"]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``configs/config.yaml`` with ``overrides``, as the entry point would."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def require_torch() -> None:
    """Skip a test that runs PyTorch itself when torch is not installed; under
    ``XENT_REQUIRE_SERVICES=1`` (CI, whose `make test` installs the reference extra) fail
    instead, so a missing PyTorch can never pass CI as skipped."""
    try:
        import torch  # noqa: F401
    except ImportError as error:
        reason = f"PyTorch is not installed ({error}): make install-reference"
        if os.environ.get("XENT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"XENT_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """Build a validated Config from overrides (tiny by default)."""

    def build(*overrides: str, tiny: bool = True) -> Config:
        return to_config(compose_config([*(TINY if tiny else []), *overrides]))

    return build


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test class with ``SAMPLED_CASES`` (name prefixes of the cases `make test` runs) has its
    other cases skipped, unless ``XENT_CONFORMANCE=full`` (`make conformance`)."""
    if os.environ.get("XENT_CONFORMANCE") == "full":
        return
    skip = pytest.mark.skip(reason="a sampled suite: XENT_CONFORMANCE=full runs every case")
    for item in items:
        sampled = getattr(getattr(item, "cls", None), "SAMPLED_CASES", None)
        if sampled is not None and not any(item.name.startswith(p) for p in sampled):
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under ``--dist loadgroup`` (an xdist worker), fail a test whose ``xdist_group`` did not
    reach its id: xdist sends a test to its group's worker by the id's ``@group`` suffix, and
    without it every group is split over the workers silently (the session's PostgreSQL study
    trained once per worker, Ray instances overlapping). pytest 9.2 did that to pytest-xdist
    3.8; pyproject.toml keeps pytest below it."""
    grouped = item.get_closest_marker("xdist_group") is not None
    if grouped and getattr(item.config.option, "loadgroup", False) and "@" not in item.nodeid:
        pytest.fail(
            f"--dist loadgroup lost this test's xdist_group (its id is {item.nodeid!r}, with "
            "no @group): this pytest and pytest-xdist do not group tests; see pyproject.toml",
            pytrace=False,
        )
