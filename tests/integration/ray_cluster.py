"""A multi-node Ray cluster on this machine, on loopback only, in a process of its own.

Ray's own multi-node test harness (``ray.cluster_utils.Cluster``: a head and worker nodes, each
its own raylet and object store) started in a subprocess, so the environment it needs is set
before Ray is imported there, and the test process never imports Ray:

- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: on Linux Ray otherwise resolves 127.0.0.1 to the
  machine's routable address (every node would listen and talk there); with it every node is
  on 127.0.0.1;
- ``RAY_USAGE_STATS_ENABLED=0``: Ray reports usage to usage-stats.ray.io by default;
- ``RAY_TMPDIR``: a private directory, so the cluster's address file never makes another
  process's ``ray.init()`` join this cluster.

Run as ``python -m tests.integration.ray_cluster WORKERS CPUS_PER_WORKER``: it prints one JSON
line (the address, every node's id and address), then reads commands on stdin: ``remove N``
(remove worker N, print ``removed <node id>``); end of input shuts the cluster down.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Set before Ray is imported (``ray_constants`` reads them at import); they override the caller's.
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def ray_environment(tmpdir: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of every Ray process a test starts (the cluster and its drivers).

    Args:
        tmpdir: the cluster's private ``RAY_TMPDIR`` (short: Ray's socket paths must fit in
            107 characters).
        base: the environment to extend.

    Returns:
        ``base`` with the loopback settings, the private temp dir and no ``RAY_ADDRESS``.
    """
    environment = {k: v for k, v in base.items() if k != "RAY_ADDRESS"}
    return {**environment, **LOOPBACK_ENV, "RAY_TMPDIR": tmpdir}


def _start_cluster(
    cluster_class: Any, n_workers: int, cpus_per_worker: int
) -> tuple[Any, list[Any]]:
    """A started ``Cluster`` and its worker nodes; if a node fails to start, every process
    started so far is killed (a node that failed in its constructor cannot be shut down)."""
    import psutil

    try:
        # The head runs no unit (0 CPUs): units go to the worker nodes, and removing one of
        # them never removes the node the study's driver is connected to (the head).
        cluster = cluster_class(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False},
        )
        workers = [cluster.add_node(num_cpus=cpus_per_worker) for _ in range(n_workers)]
        cluster.wait_for_nodes()
    except Exception:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
        raise
    return cluster, workers


def main(n_workers: int, cpus_per_worker: int) -> None:
    """Start the cluster, say where it is, obey ``remove N`` until stdin ends, shut it down."""
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        raise SystemExit("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is required: nodes on loopback only")
    from ray.cluster_utils import Cluster

    # A raylet waits a fixed ~30 s for its node's agent (a Python process) to start; on a
    # loaded machine that can be too short ("The current node timed out during startup"):
    # the cluster is started again, up to 3 times.
    for attempt in range(1, 4):
        try:
            cluster, workers = _start_cluster(Cluster, n_workers, cpus_per_worker)
            break
        except Exception as error:
            print(f"cluster start {attempt} failed: {error}", file=sys.stderr, flush=True)
            if attempt == 3:
                raise
    nodes = [cluster.head_node, *workers]
    print(
        json.dumps(
            {
                "address": cluster.address,
                "nodes": [
                    {"id": n.node_id, "ip": n.node_ip_address, "head": n is cluster.head_node}
                    for n in nodes
                ],
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["remove"]:
            node = workers[int(command[1])]
            cluster.remove_node(node, allow_graceful=False)
            print(f"removed {node.node_id}", flush=True)
    cluster.shutdown()


def _is_loopback(address: str) -> bool:
    """Whether an ``ss`` address ("127.0.0.1:5001", "[::ffff:127.0.0.1]:80", "[::1]:9") is
    on loopback."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host.startswith("::ffff:127.") or host == "::1"


def non_loopback_sockets(session_ids: Collection[int]) -> list[str]:
    """Every TCP/UDP socket of the processes in these sessions whose local or peer address is
    not on loopback (``ss -tuanpH``), as ss prints it: [] when all traffic stays on 127.0.0.1.

    A listening socket's peer is "*" (no peer); its local address must still be loopback.
    """
    pids = set()
    for sid in session_ids:
        found = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True, text=True)
        pids.update(found.stdout.split())
    sockets = subprocess.run(["ss", "-tuanpH"], capture_output=True, text=True, check=True)
    wrong = []
    for line in sockets.stdout.splitlines():
        if not any(f"pid={pid}," in line for pid in pids):
            continue
        fields = line.split()
        local, peer = fields[4], fields[5]
        peer_host = peer.rsplit(":", 1)[0]
        if not _is_loopback(local) or (
            peer_host not in ("*", "0.0.0.0", "[::]") and not _is_loopback(peer)
        ):
            wrong.append(line)
    return wrong


@dataclass
class LocalCluster:
    """The cluster process seen from a test: where it is, and how to remove a worker node."""

    process: subprocess.Popen[str]
    tmpdir: str
    address: str = ""
    nodes: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def start(cls, n_workers: int, cpus_per_worker: int, tmpdir: str, log: Path) -> LocalCluster:
        """Start a head (0 CPUs) and ``n_workers`` worker nodes; wait until all are up.

        Args:
            n_workers: worker nodes.
            cpus_per_worker: CPUs each worker node offers.
            tmpdir: the cluster's ``RAY_TMPDIR`` (short).
            log: where its stderr goes.
        """
        root = Path(__file__).resolve().parents[2]
        environment = ray_environment(tmpdir, os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), environment.get("PYTHONPATH", "")) if p
        )
        with log.open("ab") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.ray_cluster",
                    str(n_workers),
                    str(cpus_per_worker),
                ],
                # The nodes' working directory, where jobs without a runtime_env working_dir
                # run (a relative hydra.sweep.dir lands there): next to the log, not the repo.
                cwd=log.parent,
                env=environment,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        cluster = cls(process, tmpdir)
        line = cluster._read_line(400)
        description = json.loads(line)
        cluster.address = description["address"]
        cluster.nodes = description["nodes"]
        return cluster

    @property
    def driver_env(self) -> dict[str, str]:
        """The environment of a study that joins this cluster (its driver on loopback too)."""
        return ray_environment(self.tmpdir, os.environ)

    @property
    def worker_ids(self) -> list[str]:
        return [str(n["id"]) for n in self.nodes if not n["head"]]

    def remove(self, worker: int) -> str:
        """Remove worker node ``worker`` (its raylet and every process on it, at once).

        Returns:
            Its node id.
        """
        assert self.process.stdin is not None
        self.process.stdin.write(f"remove {worker}\n")
        self.process.stdin.flush()
        answer = self._read_line(120)
        assert answer.startswith("removed "), answer
        return answer.split()[1]

    def stop(self) -> None:
        """Shut the cluster down (end of stdin), then end whatever is left of its session."""
        from tests.integration.services import stop_group

        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(90)
        stop_group(self.process)  # type: ignore[arg-type]

    def _read_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the Ray cluster process said nothing within {timeout:.0f} s")
        return line.strip()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
