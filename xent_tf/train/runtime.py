"""Device choice, threads and determinism: the TensorFlow process settings a run depends on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from xent_tf.config import DEVICES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    """Where a run trains.

    Attributes:
        name: TensorFlow device string for ``tf.device`` ("/GPU:0" or "/CPU:0").
        kind: "gpu" or "cpu".
        description: a human-readable line for logs and tags.
    """

    name: str
    kind: str
    description: str


def select_device(requested: str, gpu_names: Sequence[str]) -> DeviceChoice:
    """Pick the device from what was asked for and what TensorFlow sees.

    Args:
        requested: "auto" (a GPU when one is visible, else the CPU), "cpu" or "gpu".
        gpu_names: names of the visible GPUs (``tf.config.list_physical_devices("GPU")``).

    Returns:
        The device to train on.

    Raises:
        ValueError: ``requested`` is unknown, or "gpu" with no GPU visible.
    """
    if requested not in DEVICES:
        raise ValueError(f"trainer.device={requested!r} is not one of {list(DEVICES)}")
    if requested == "gpu" and not gpu_names:
        raise ValueError(
            "trainer.device='gpu' but TensorFlow sees no GPU; on a machine with an NVIDIA "
            "driver install the lock's gpu extra (TensorFlow's CUDA build: docs/USER_GUIDE.md, "
            "Devices), or use trainer.device=auto|cpu"
        )
    if requested != "cpu" and gpu_names:
        return DeviceChoice("/GPU:0", "gpu", f"GPU ({gpu_names[0]}, {len(gpu_names)} visible)")
    reason = "asked for" if requested == "cpu" else "no GPU visible"
    return DeviceChoice("/CPU:0", "cpu", f"CPU ({reason})")


def inter_op_threads(threads: int) -> int:
    """The inter-op pool's size for ``threads`` intra-op threads (> 0): at least two.

    Function calls made from two Python threads at once took turns on a one-thread inter-op
    pool (measured: two replica trainers' epochs in two threads, wall = serial wall); with two,
    they run side by side. ``replicas.ReplicaTrainer.fit`` evaluates an epoch's end in a second
    thread while the next epoch trains, so it needs two. A single run's epoch measured the same
    with one or two.
    """
    return max(threads, 2)


def _set_threads(threads: int) -> None:
    """Size TF's thread pools; a reused worker that already initialised TF keeps its pools."""
    if threads <= 0:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads(threads))
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads:
            log.warning("TensorFlow already runs with %d intra-op threads; keeping them", current)


def configure_runtime(device: str, threads: int = 0, seed: int = 0) -> DeviceChoice:
    """Apply the process-wide TensorFlow settings of a run and choose its device.

    Turns on GPU memory growth (so parallel jobs can share one card), op determinism (same
    seed, same numbers on the CPU), seeds Python/NumPy/TF, and switches off Grappler's graph
    rewrites, which cost more time than they save on these tiny per-epoch graphs.

    Args:
        device: "auto", "cpu" or "gpu".
        threads: intra-op threads (inter-op: ``inter_op_threads``), 0 for TensorFlow's default.
        seed: global seed for weights and anything else random in TF/Keras.

    Returns:
        The chosen device.
    """
    gpus = tf.config.list_physical_devices("GPU")
    choice = select_device(device, [gpu.name for gpu in gpus])
    for gpu in gpus:
        # A reused sweep worker has initialised its GPUs already; growth was set then.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    _set_threads(threads)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    tf.config.experimental.enable_op_determinism()
    tf.keras.utils.set_random_seed(seed)
    return choice
