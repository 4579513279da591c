"""The Ray launcher's reading of a lost worker: Ray's error, named, without a process or signal."""

from __future__ import annotations

import pytest

from xent_tf.launch.ray_sweep import lost_worker

ray_exceptions = pytest.importorskip("ray.exceptions")


def test_a_worker_ray_lost_is_described_by_rays_error_and_its_first_line() -> None:
    death = lost_worker(ray_exceptions.WorkerCrashedError())
    assert (death.pid, death.exitcode) == (0, 0)
    assert death.description == (
        "worker died (Ray lost the worker: WorkerCrashedError: The worker died unexpectedly "
        "while executing this task. Check python-core-worker-*.log files for more information.)"
    )
    node = lost_worker(ray_exceptions.NodeDiedError("node 1a2b died\nsecond line"))
    assert node.description == "worker died (Ray lost the worker: NodeDiedError: node 1a2b died)"
