"""Where a study's units go on a Ray cluster, decided without Ray, TensorFlow or a GPU.

The Ray replica launcher (``xent_tf.ray_units``) asks these functions what to pass to
``ray.init`` (joining a running cluster takes no start-only option), what each unit asks the
scheduler for (CPUs, and a GPU only when ``trainer.device`` wants one and the cluster has one),
how many units run at once, and how much memory a unit's replica batch may use where it lands
(``hydra.launcher.memory_mb``, else the GPU's memory when it trains on one, else the node's
available memory). The tags that say where each run trained are kept here too: the process
that records a unit's runs sets them (``record_placement``) and ``pipeline.run_tags`` adds them
to every run it opens.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xent_tf.config import DEVICES

# ``ray.init`` options that only a new Ray instance takes: joining a running cluster with any of
# them fails ("When connecting to an existing cluster, object_store_memory must not be
# provided"). Those resources are set where each node starts (``ray start``, KubeRay's spec).
START_ONLY_INIT_OPTIONS = (
    "num_cpus",
    "num_gpus",
    "resources",
    "labels",
    "object_store_memory",
    "_system_config",
    "_enable_object_reconstruction",
    "_node_name",
)
# Ray's default ``object_store_memory`` is a share of the machine's memory, more than a CI
# container may give it; Hydra's Ray launcher sets this value when none is configured.
LOCAL_OBJECT_STORE_BYTES = 78_643_200

# Tags of every run recorded by a unit on Ray: the node it ran on and the GPUs Ray gave it.
NODE_TAG = "xent.ray_node"
GPUS_TAG = "xent.ray_gpus"


def joins_existing_cluster(address: str | None, environ: Mapping[str, str]) -> bool:
    """Whether ``ray.init(address=address)`` joins a running cluster rather than starting one.

    Args:
        address: the ``address`` setting (None, "local", "auto" or host:port).
        environ: the process's environment (Ray reads ``RAY_ADDRESS`` when it is set).

    Returns:
        False only for a new local instance (no address, or "local", and no ``RAY_ADDRESS``).
    """
    if address == "local":
        return False
    return address is not None or bool(environ.get("RAY_ADDRESS"))


def init_arguments(
    settings: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """``ray.init``'s arguments from the launcher's ``ray.init`` settings.

    A new local instance gets a small object store unless one is set; joining a running cluster
    (an address, or ``RAY_ADDRESS``) drops every start-only option, which Ray refuses there.

    Args:
        settings: ``hydra.launcher.ray.init``.
        environ: the process's environment.

    Returns:
        (the arguments, the names of the options dropped).
    """
    arguments = dict(settings)
    if not joins_existing_cluster(arguments.get("address"), environ):
        arguments.setdefault("object_store_memory", LOCAL_OBJECT_STORE_BYTES)
        return arguments, []
    dropped = sorted(k for k in START_ONLY_INIT_OPTIONS if arguments.get(k) is not None)
    for name in dropped:
        del arguments[name]
    return arguments, dropped


@dataclass(frozen=True)
class UnitResources:
    """What one unit asks Ray's scheduler for.

    Attributes:
        num_cpus: CPUs (a replica batch trains on one thread).
        num_gpus: GPUs (0: the unit trains on a CPU).
    """

    num_cpus: float
    num_gpus: float

    def options(self) -> dict[str, float]:
        """The Ray task options for it."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def unit_resources(
    device: str, cluster_gpus: float, cpus_per_unit: float, gpus_per_unit: float
) -> UnitResources:
    """The resources a unit asks for, given its runs' ``trainer.device`` and the cluster.

    A unit asks for a GPU only when the device wants one (``gpu``, or ``auto`` on a cluster that
    has one): a unit on a CPU never holds a GPU another unit could use, and ``auto`` on a
    cluster without a GPU never waits for one.

    Args:
        device: ``trainer.device`` of the unit's runs ("auto", "cpu" or "gpu").
        cluster_gpus: GPUs in the cluster (``ray.cluster_resources()["GPU"]``, 0 without).
        cpus_per_unit: CPUs each unit asks for (> 0).
        gpus_per_unit: share of a GPU (0 < x <= 1) or whole GPUs each GPU unit asks for.

    Returns:
        The unit's request.

    Raises:
        ValueError: an unknown device, a bad share, or ``gpu`` on a cluster without a GPU.
    """
    if device not in DEVICES:
        raise ValueError(f"trainer.device={device!r} is not one of {list(DEVICES)}")
    if not cpus_per_unit > 0:
        raise ValueError(f"hydra.launcher.cpus_per_unit={cpus_per_unit} must be > 0")
    if not (0 < gpus_per_unit <= 1 or float(gpus_per_unit).is_integer()):
        raise ValueError(
            f"hydra.launcher.gpus_per_unit={gpus_per_unit} must be a share of one GPU "
            "(0 < x <= 1) or a whole number of GPUs"
        )
    if device == "gpu" and cluster_gpus <= 0:
        raise ValueError(
            "trainer.device='gpu' but the Ray cluster has no GPU (ray.cluster_resources() "
            "lists none); start its nodes with GPUs (ray start --num-gpus=N) or use "
            "trainer.device=auto|cpu"
        )
    wants_gpu = device == "gpu" or (device == "auto" and cluster_gpus > 0)
    return UnitResources(cpus_per_unit, gpus_per_unit if wants_gpu else 0.0)


def concurrent_units(
    cluster_cpus: float, cluster_gpus: float, requests: Sequence[UnitResources]
) -> int:
    """How many of the units can run at once on the cluster (at least 1): what the launcher
    spreads replica batches over (``replica_groups.spread_batches``).

    Args:
        cluster_cpus: CPUs in the cluster.
        cluster_gpus: GPUs in the cluster.
        requests: each unit's request (the most demanding decides).

    Returns:
        Units that fit side by side.
    """
    if not requests:
        return 1
    cpus = max(r.num_cpus for r in requests)
    gpus = max(r.num_gpus for r in requests)
    slots = math.floor(cluster_cpus / cpus + 1e-9)
    if gpus > 0:
        slots = min(slots, math.floor(cluster_gpus / gpus + 1e-9))
    return max(slots, 1)


def memory_budget(
    memory_mb: int,
    device_kind: str,
    gpu_total_bytes: int | None,
    gpu_share: float,
    available_bytes: int,
) -> int:
    """Bytes a replica batch may use where it trains.

    Args:
        memory_mb: ``hydra.launcher.memory_mb`` (0: decide from the device).
        device_kind: "gpu" or "cpu": where the batch trains (``runtime.DeviceChoice.kind``).
        gpu_total_bytes: the memory of the GPU it trains on (None: not known).
        gpu_share: the share of that GPU the unit was given (a fraction, or >= 1: all of it).
        available_bytes: the machine's available memory.

    Returns:
        ``memory_mb`` when set; on a GPU its memory times the unit's share; else
        ``available_bytes``.
    """
    if memory_mb > 0:
        return memory_mb * 2**20
    if device_kind == "gpu" and gpu_total_bytes:
        return int(gpu_total_bytes * min(gpu_share, 1.0))
    return available_bytes


def parse_gpu_memory(nvidia_smi_output: str) -> int | None:
    """The first GPU's total memory in bytes from ``nvidia-smi --query-gpu=memory.total
    --format=csv,noheader,nounits`` (MiB per line), or None when it says nothing usable."""
    for line in nvidia_smi_output.splitlines():
        text = line.strip()
        if text:
            try:
                return int(float(text)) * 2**20
            except ValueError:
                return None
    return None


def gpu_memory_bytes() -> int | None:
    """The total memory of the first GPU this process sees (``CUDA_VISIBLE_DEVICES`` applies to
    nvidia-smi too), or None without nvidia-smi or a GPU."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_gpu_memory(result.stdout) if result.returncode == 0 else None


def placement_tags(node_id: str, gpu_ids: Sequence[object]) -> dict[str, str]:
    """The tags that say where a unit ran: its Ray node, and the GPUs Ray gave it ("" none)."""
    return {NODE_TAG: node_id, GPUS_TAG: ",".join(str(g) for g in gpu_ids)}


# Set in the process that records a unit's runs on a Ray node; added to every run it opens.
_placement: dict[str, str] = {}


def record_placement(tags: Mapping[str, str]) -> None:
    """Tag every run this process opens from now on with ``tags`` (``placement_tags``)."""
    _placement.clear()
    _placement.update(tags)


def current_placement() -> dict[str, str]:
    """The placement tags of this process's runs (empty off Ray)."""
    return dict(_placement)
