"""Where a unit's runs train on a Ray cluster, and the memory a replica batch may use there.

The process that records a Ray unit's runs sets the placement tags (``record_placement``: the
Ray node and the GPUs Ray gave the unit) and ``pipeline.run_tags`` adds them to every run it
opens. A batch's memory budget is ``hydra.launcher.memory_mb``, else the GPU's memory (times the
unit's share of it) when it trains on one, else the machine's available memory. No TensorFlow
here: the Ray launcher's tests and the launching process may import it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

# Tags of every run recorded by a unit on Ray: the node it ran on and the GPUs Ray gave it.
NODE_TAG = "xent.ray_node"
GPUS_TAG = "xent.ray_gpus"


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
