"""`hydra/launcher=ray`: a study on a local Ray instance, every job logging to the shared server."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cli import CliResult
from tests.integration.records import CHILD_ARTIFACTS, PARENT_ARTIFACTS, artifacts, read_sweep
from tests.integration.services import TINY, TrackingServer, need

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ray")]

EPOCHS = 2


def test_ray_launcher_runs_a_study_whose_jobs_find_their_parent_without_the_sweep_dir(
    pg_server: TrackingServer, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    need(
        importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None,
        "hydra-ray-launcher not installed (pip install -e '.[scale]')",
    )
    # Ray copies this empty directory for its workers and runs them there, so the jobs cannot
    # see the driver's sweep dir (nor the parent-run file in it), as on another cluster node.
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    result = cli(
        "-m",
        "+experiment=mse_vs_ce",
        "data=reference",
        "loss=ce,mse",
        "optimizer=sgd",
        "model.output_init=standard",
        "seed=0,1",
        *TINY,
        f"trainer.epochs={EPOCHS}",
        "experiment_name=mse_vs_ce_ray",
        "tracking.plots=true",  # the children's records are checked in full
        "tracking=server",
        f"tracking.uri={pg_server.uri}",
        "hydra.sweep.dir=sweep",  # relative: each side resolves it in its own directory
        "hydra/launcher=ray",
        "hydra.launcher.ray.init.address=null",  # start a local Ray instance
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        f"+hydra.launcher.ray.init.runtime_env.working_dir={node_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.output[-5000:]
    assert "Ray Launcher is launching 4 jobs" in result.output
    assert "(run_job_supervised pid=" in result.output  # log lines came back from Ray workers
    # The jobs wrote their outputs in the workers' copy, not next to the parent-run file.
    sweep_dir = tmp_path / "sweep"
    assert (sweep_dir / "mlflow_parent.json").exists()
    assert not any(path.name.isdigit() for path in sweep_dir.iterdir())

    records = read_sweep(pg_server.uri, "mse_vs_ce_ray")
    assert records.parent.info.status == "FINISHED"
    assert records.statuses == {"FINISHED": 4}
    assert sorted((r.data.tags["loss"], r.data.tags["seed"]) for r in records.children) == [
        ("ce", "0"),
        ("ce", "1"),
        ("mse", "0"),
        ("mse", "1"),
    ]
    assert records.incomplete(EPOCHS) == {}
    files = artifacts(pg_server.uri, [r.info.run_id for r in records.children])
    assert all(got >= CHILD_ARTIFACTS for got in files.values()), files
    parent_files = artifacts(pg_server.uri, [records.parent.info.run_id])
    assert parent_files[records.parent.info.run_id] >= PARENT_ARTIFACTS
    assert "2/2" in (sweep_dir / "report.md").read_text()
    print(
        f"\n[ray] {len(records.children)} runs, {records.total_points} metric points, "
        f"sweep {result.seconds:.1f} s"
    )
