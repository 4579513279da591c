"""Jobs whose worker process died (SIGKILL, the OOM killer): each one's run ends FAILED.

A dead process cannot end its own MLflow run; the launching process does it when the worker
pool reports the death (``worker_pool.WorkerDeath``): runs the worker left RUNNING are marked
FAILED with ``WorkerDied: worker died (signal 9, SIGKILL) ...``, and a job it had not opened a run
for yet gets a FAILED run of its own, so the study's report lists it either way. A worker whose
process is not known (Ray reports a lost worker without it) is matched to its jobs' runs by
config hash instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from xent_tf.config import Config
from xent_tf.launch.worker_pool import WorkerDeath
from xent_tf.track import recovery, writing
from xent_tf.track.identity import run_identity
from xent_tf.track.resume import CONFIG_HASH_TAG, config_hash

log = logging.getLogger(__name__)


def record_worker_death(
    tracking_uri: str,
    parent_run_id: str,
    experiment_id: str,
    death: WorkerDeath,
    jobs: Sequence[tuple[Config, list[str]]],
    since_ms: int,
) -> list[str]:
    """End the runs of the jobs a dead worker held FAILED, creating those it never opened.

    Args:
        tracking_uri: the store.
        parent_run_id: the sweep's parent run.
        experiment_id: its experiment.
        death: which worker died and how.
        jobs: (config, overrides) of each job the worker held.
        since_ms: when the sweep started (ms since the epoch).

    Returns:
        The FAILED run of each job, in the order of ``jobs``.
    """
    error = f"WorkerDied: {death.description}; the rest of the sweep went on"
    opened = recovery.fail_runs_of_process(
        tracking_uri,
        parent_run_id,
        experiment_id,
        death.pid,
        error,
        since_ms,
        # A worker whose process is not known: its runs are those of its jobs' configs.
        None if death.pid else {config_hash(config) for config, _ in jobs},
    )
    run_ids = []
    for config, overrides in jobs:
        key = config_hash(config)
        if key in opened:
            run_ids.append(opened[key])
            continue
        identity = run_identity(config.study, config, overrides)
        run_ids.append(
            recovery.record_failed_run(
                tracking_uri,
                experiment_id,
                identity.run_name,
                parent_run_id,
                writing.flatten(dataclasses.asdict(config)),
                {
                    **identity.tags,
                    "seed": str(config.seed),
                    CONFIG_HASH_TAG: key,
                    "hydra.overrides": " ".join(overrides) or "(none)",
                    **({"pid": str(death.pid)} if death.pid else {}),
                },
                error,
            )
        )
    log.error(
        "%s: %d jobs FAILED (runs %s); the rest of the sweep goes on",
        death.description,
        len(jobs),
        ", ".join(run_ids),
    )
    return run_ids
