"""Where a study's units go on a Ray cluster, decided without Ray, TensorFlow or a GPU.

The Ray backend of the replica launcher (``launch.ray_units``) asks these functions what to
pass to ``ray.init`` (joining a running cluster takes no start-only option), what each unit
asks the scheduler for (CPUs, and a GPU only when ``trainer.device`` wants one and the cluster
has one) and how many units run at once. ``hydra/launcher=ray`` (``launch.ray_sweep``) uses
``init_arguments`` too. Where a unit's runs trained, and the memory its batch may use there, are
``train.placement``'s.
"""

from __future__ import annotations

import math
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
