"""Issue 31's targets: one 40-run study three ways, side by side, on a 3-node loopback cluster.

- ``local``: the replica launcher on this machine (``hydra.launcher.n_jobs=2``);
- ``ray_units``: the same launcher with ``hydra.launcher.backend=ray`` on a local Ray cluster of
  3 nodes (``ray.cluster_utils.Cluster``: a head with no CPU and 2 worker nodes of 1 CPU, every
  node on 127.0.0.1, as in tests/integration/test_ray_cluster.py);
- ``ray_jobs``: ``hydra/launcher=ray`` (one Ray task per job) on the same cluster.

The study: ``mse_vs_ce`` on the reference data, ce and mse x 20 seeds (2 graphs of 20 replicas),
recorded to one `make server` (SQLite behind it) over HTTP. The three commands run one after
another in each round (the order rotates between rounds), each into its own directory and
experiment; the wall time of each command is printed, and the ratios ray_units/local and
ray_units/ray_jobs per round. The machine is shared: compare the ratios, not the seconds.

    .venv/bin/python -m benchmarks.ray_units --rounds 2
    .venv/bin/python -m benchmarks.ray_units --override data.n_samples=10000 trainer.epochs=20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tests.integration.cli import run_cli
from tests.integration.ray_cluster import LocalCluster, non_loopback_sockets
from tests.integration.services import TrackingServer

STUDY = [
    "-m",
    "+experiment=mse_vs_ce",
    "data=reference",
    "loss=ce,mse",
    "optimizer=sgd",
    "model.output_init=standard",
    "trainer.verbose=false",
    "tracking.log_model=false",
    "data.n_samples=2000",
    "data.n_test=400",
    "trainer.epochs=10",
    "hydra.sweep.dir=sweep",
]


def _commands(cluster: LocalCluster, seeds: int, overrides: list[str]) -> dict[str, list[str]]:
    study = [*STUDY, f"seed=range({seeds})", *overrides]
    on_cluster = [f"hydra.launcher.ray.init.address={cluster.address}"]
    return {
        "local": [*study, "hydra.launcher.n_jobs=2"],
        "ray_units": [*study, "hydra.launcher.backend=ray", *on_cluster],
        "ray_jobs": [*study, "hydra/launcher=ray", *on_cluster],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=20, help="per loss: 2 x seeds runs")
    parser.add_argument("--only", nargs="*", default=None, help="launchers to run")
    parser.add_argument(
        "--override", nargs="*", default=[], help="more overrides, e.g. trainer.epochs=40"
    )
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xent-bench-ray-"))
    ray_tmp = tempfile.mkdtemp(prefix="xr-", dir="/tmp")
    server = TrackingServer(f"sqlite:///{work / 'bench.db'}", work / "server")
    server.start(timeout=600)  # a loaded machine starts it slowly
    cluster = LocalCluster.start(2, 1, ray_tmp, work / "cluster.log")
    try:
        assert {n["ip"] for n in cluster.nodes} == {"127.0.0.1"}, cluster.nodes
        assert non_loopback_sockets([cluster.process.pid]) == []
        commands = _commands(cluster, options.seeds, options.override)
        names = options.only or list(commands)
        for round_number in range(options.rounds):
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            walls: dict[str, float] = {}
            for name in order:
                cwd = work / f"{name}-{round_number}"
                cwd.mkdir()
                result = run_cli(
                    *commands[name],
                    "tracking=server",
                    f"tracking.uri={server.uri}",
                    f"experiment_name=bench_{name}_{round_number}",
                    cwd=cwd,
                    timeout=3600,
                    env=cluster.driver_env,
                )
                if result.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{result.output[-3000:]}")
                walls[name] = result.seconds
                print(f"round {round_number} {name}: {result.seconds:.1f} s", flush=True)
            assert non_loopback_sockets([cluster.process.pid]) == []
            if "ray_units" in walls:
                for other in ("local", "ray_jobs"):
                    if other in walls:
                        print(
                            f"round {round_number} ray_units / {other}: "
                            f"{walls['ray_units'] / walls[other]:.2f}  "
                            f"({time.strftime('%H:%M:%S')}, order {' '.join(order)})",
                            flush=True,
                        )
    finally:
        cluster.stop()
        server.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        print(f"outputs in {work}")


if __name__ == "__main__":
    main()
