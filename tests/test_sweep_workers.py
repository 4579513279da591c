"""The joblib sweep's workers start (with TensorFlow imported) before launch and stop at the end."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from joblib import Parallel, delayed
from joblib.externals.loky import reusable_executor
from omegaconf import DictConfig, OmegaConf

from xent_tf.launch.callback import _release_idle_workers, _start_workers_early


def _worker_state() -> tuple[int, bool]:
    return os.getpid(), "tensorflow" in sys.modules and "mlflow" in sys.modules


def _joblib_config(n_jobs: int) -> DictConfig:
    launcher = {
        "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "n_jobs": n_jobs,
        "backend": None,
        "prefer": "processes",
        "require": None,
        "verbose": 0,
        "timeout": None,
        "pre_dispatch": "2*n_jobs",
        "batch_size": "auto",
        "temp_folder": None,
        "max_nbytes": None,
        "mmap_mode": "r",
    }
    return OmegaConf.create({"hydra": {"launcher": launcher}})


def test_workers_start_early_are_reused_by_the_launcher_and_are_stopped_at_the_end() -> None:
    config = _joblib_config(2)
    thread = _start_workers_early(config)
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()
    executor = reusable_executor._executor
    assert executor is not None
    warm_pids = set(executor._processes)
    assert len(warm_pids) == 2
    # The launcher's own call (the settings hydra's joblib launcher passes) runs on the same
    # pool, whose workers already have TensorFlow and MLflow imported.
    settings = {str(k): v for k, v in config.hydra.launcher.items() if k != "_target_"}
    settings["backend"] = "loky"
    states = Parallel(**settings)(delayed(_worker_state)() for _ in range(8))
    assert reusable_executor._executor is executor  # reused, not replaced
    pids = {pid for pid, _ in states}
    assert pids <= warm_pids
    assert all(ready for _, ready in states)
    pids = warm_pids
    _release_idle_workers()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie (killed, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_other_launchers_start_nothing_early() -> None:
    target = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    basic = OmegaConf.create({"hydra": {"launcher": {"_target_": target}}})
    assert _start_workers_early(basic) is None
