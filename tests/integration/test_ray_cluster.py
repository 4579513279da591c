"""A study's replica units on a real multi-node Ray cluster on this machine, loopback only.

``ray.cluster_utils.Cluster`` (a head and two worker nodes, each its own raylet and object
store; ``tests/integration/ray_cluster.py``) with every node on 127.0.0.1, checked before and
after anything runs; the study logs to `make server` over HTTP (PostgreSQL behind it), never to
a file one node alone could see. The head offers no CPU, so the two units land on the two
worker nodes; the jobs run in Ray's copy of an empty working directory, as on another machine.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.cli import run_cli, start_cli
from tests.integration.ray_cluster import LocalCluster, non_loopback_sockets
from tests.integration.records import SweepRecords, read_sweep, report_tables
from tests.integration.services import TINY, TrackingServer, need, stop_group, wait_until
from tests.replica_tolerances import VAL_ACC_ATOL, VAL_LOSS_ATOL
from xent_tf.track.resume import CONFIG_HASH_TAG
from xent_tf.train.placement import GPUS_TAG, NODE_TAG

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ray")]

# 2 losses x 2 seeds of the MSE-vs-CE comparison: two replica units of two runs.
STUDY = [
    "-m",
    "+experiment=mse_vs_ce",
    "data=reference",
    "loss=ce,mse",
    "optimizer=sgd",
    "model.output_init=standard",
    "seed=0,1",
    *TINY,
    "trainer.epochs=3",
    "hydra.sweep.dir=sweep",  # relative: each side resolves it in its own directory
]
# Compared between launchers, last values and per-epoch histories.
EPOCH_TOLERANCES = {
    "val/loss": VAL_LOSS_ATOL,
    "train/loss": VAL_LOSS_ATOL,
    "val/acc": VAL_ACC_ATOL,
    "train/acc": VAL_ACC_ATOL,
}
ONCE_TOLERANCES = {"test/loss": VAL_LOSS_ATOL, "test/acc": VAL_ACC_ATOL}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A head (0 CPUs) and two worker nodes (1 CPU each), all on 127.0.0.1."""
    need(
        importlib.util.find_spec("ray") is not None,
        "ray not installed (pip install -e '.[scale]')",
    )
    need(shutil.which("ss") is not None, "ss not found (iproute2): loopback cannot be checked")
    # Short: Ray's socket paths live under it and must fit in 107 characters.
    tmpdir = tempfile.mkdtemp(prefix="xr-", dir="/tmp")
    log = tmp_path_factory.mktemp("ray-cluster") / "cluster.log"
    try:
        started = LocalCluster.start(2, 1, tmpdir, log)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    try:
        assert [n["ip"] for n in started.nodes] == ["127.0.0.1"] * 3, started.nodes
        assert non_loopback_sockets([started.process.pid]) == []
        yield started
    finally:
        started.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


def ray_study(cluster: LocalCluster, node_dir: Path) -> list[str]:
    """The overrides that send a study's units to ``cluster``."""
    return [
        "hydra.launcher.backend=ray",
        f"hydra.launcher.ray.init.address={cluster.address}",
        # Ray copies this empty directory for its workers and runs them there: the jobs
        # cannot see the launcher's sweep dir, as on another machine.
        f"+hydra.launcher.ray.init.runtime_env.working_dir={node_dir}",
    ]


def _histories(uri: str, records: SweepRecords) -> dict[str, dict[str, list[float]]]:
    """{config hash: {metric: values by epoch}} of the FINISHED children."""
    client = MlflowClient(uri)
    found = {}
    for run in records.children:
        if run.info.status != "FINISHED":
            continue
        histories = {
            name: [
                m.value
                for m in sorted(
                    client.get_metric_history(run.info.run_id, name), key=lambda m: m.step
                )
            ]
            for name in EPOCH_TOLERANCES
        }
        histories.update({name: [run.data.metrics[name]] for name in ONCE_TOLERANCES})
        found[run.data.tags[CONFIG_HASH_TAG]] = histories
    return found


def test_units_run_on_two_nodes_and_record_what_the_local_launcher_records(
    pg_server: TrackingServer, cluster: LocalCluster, tmp_path: Path
) -> None:
    local_dir, ray_dir, node_dir = tmp_path / "local", tmp_path / "ray", tmp_path / "node"
    for directory in (local_dir, ray_dir, node_dir):
        directory.mkdir()
    tracking = ["tracking=server", f"tracking.uri={pg_server.uri}"]
    local = run_cli(
        *STUDY, *tracking, "experiment_name=ray_units_local", "hydra.launcher.n_jobs=2",
        cwd=local_dir,
    )  # fmt: skip
    assert local.returncode == 0, local.output[-5000:]
    on_ray = run_cli(
        *STUDY, *tracking, "experiment_name=ray_units_cluster", *ray_study(cluster, node_dir),
        cwd=ray_dir, env=cluster.driver_env,
    )  # fmt: skip
    assert on_ray.returncode == 0, on_ray.output[-5000:]
    assert non_loopback_sockets([cluster.process.pid]) == []
    assert "4 jobs in 2 units (2 replicas, 2 replicas) on a Ray cluster of 3 nodes" in on_ray.output
    # The jobs wrote their outputs in Ray's copy of node_dir, not next to the parent-run file.
    assert not any(path.name.isdigit() for path in (ray_dir / "sweep").iterdir())

    want, got = (
        read_sweep(pg_server.uri, "ray_units_local"),
        read_sweep(pg_server.uri, "ray_units_cluster"),
    )
    assert want.statuses == got.statuses == Counter({"FINISHED": 4})
    assert got.parent.info.status == "FINISHED"
    # One unit on each worker node, every run tagged with its node (no GPU here).
    nodes = Counter(run.data.tags[NODE_TAG] for run in got.children)
    assert sorted(nodes.values()) == [2, 2] and set(nodes) == set(cluster.worker_ids)
    assert {run.data.tags[GPUS_TAG] for run in got.children} == {""}
    assert all(NODE_TAG not in run.data.tags for run in want.children)
    batches = {(r.data.tags[NODE_TAG], r.data.tags["xent.replica_batch"]) for r in got.children}
    assert len(batches) == 2  # each unit's runs on one node
    # The same numbers, run by run (paired by config hash), as the local replica launcher's.
    local_numbers, ray_numbers = _histories(pg_server.uri, want), _histories(pg_server.uri, got)
    assert sorted(local_numbers) == sorted(ray_numbers) and len(ray_numbers) == 4
    for key, metrics in ray_numbers.items():
        for name, values in metrics.items():
            tolerance = {**EPOCH_TOLERANCES, **ONCE_TOLERANCES}[name]
            expected = local_numbers[key][name]
            assert len(values) == len(expected) == (3 if name in EPOCH_TOLERANCES else 1)
            assert max(abs(a - b) for a, b in zip(values, expected, strict=True)) <= tolerance, (
                name,
                values,
                expected,
            )
    # The parent's report: the same verdicts and variant tables.
    assert report_tables(ray_dir / "sweep" / "report.md") == report_tables(
        local_dir / "sweep" / "report.md"
    )


def test_a_lost_node_fails_only_its_units_jobs_and_resume_trains_only_those(
    pg_server: TrackingServer, cluster: LocalCluster, tmp_path: Path
) -> None:
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    arguments = [
        *STUDY,
        "trainer.epochs=60",  # long enough that the units are still running when the node goes
        "tracking=server",
        f"tracking.uri={pg_server.uri}",
        "experiment_name=ray_units_node_lost",
        *ray_study(cluster, node_dir),
    ]
    process = start_cli(*arguments, cwd=tmp_path, env=cluster.driver_env)
    output = tmp_path / "cli-output.log"
    try:
        # Both units have started, one on each worker node: remove the first worker node.
        wait_until(
            lambda: output.read_text().count(" jobs started on Ray node ") == 2,
            300,
            "both units to start",
        )
        lost = cluster.remove(0)
        assert non_loopback_sockets([cluster.process.pid, process.pid]) == []
        returncode = process.wait(600)
    finally:
        stop_group(process)
    text = output.read_text()
    assert returncode == 0, text[-5000:]
    assert f"2 jobs started on Ray node {lost}" in text

    records = read_sweep(pg_server.uri, "ray_units_node_lost")
    assert records.statuses == Counter({"FINISHED": 2, "FAILED": 2})
    survivor = cluster.worker_ids[1]
    for run in records.children:
        if run.info.status == "FAILED":  # the lost node's unit: its runs name the node
            assert f"Ray lost node {lost} at 127.0.0.1" in run.data.tags["error"], run.data.tags
        else:
            assert run.data.tags[NODE_TAG] == survivor
    failed_configs = {
        r.data.tags[CONFIG_HASH_TAG] for r in records.children if r.info.status == "FAILED"
    }

    resumed = run_cli(*arguments, "+resume=matching", cwd=tmp_path, env=cluster.driver_env)
    assert resumed.returncode == 0, resumed.output[-5000:]
    assert "2 jobs skipped: their config already FINISHED" in resumed.output
    assert "4 jobs in 1 units (2 replicas)" in resumed.output
    after = read_sweep(pg_server.uri, "ray_units_node_lost")
    assert after.parent.info.run_id == records.parent.info.run_id
    assert after.statuses == Counter({"FINISHED": 4, "FAILED": 2})
    finished = Counter(
        r.data.tags[CONFIG_HASH_TAG] for r in after.children if r.info.status == "FINISHED"
    )
    assert len(finished) == 4 and set(finished.values()) == {1}  # none lost, none twice
    first_runs = {r.info.run_id for r in records.children}
    retrained = {
        r.data.tags[CONFIG_HASH_TAG] for r in after.children if r.info.run_id not in first_runs
    }
    assert retrained == failed_configs  # the resumed sweep trained only the lost node's jobs
    assert after.incomplete(60) == {}
    print(
        f"\n[ray node lost] first attempt {dict(records.statuses)}, after resume "
        f"{dict(after.statuses)}; sweep {resumed.seconds:.1f} s resumed"
    )
