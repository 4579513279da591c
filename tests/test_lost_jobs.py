"""A dead worker's jobs: the runs it left RUNNING end FAILED, one FAILED run for a job it never
opened, and nothing of another job's is touched - by process id, or by config when Ray could not
say which process it was."""

from __future__ import annotations

from collections.abc import Callable

from mlflow import MlflowClient

from xent_tf.config import Config
from xent_tf.launch.lost_jobs import record_worker_death
from xent_tf.launch.worker_pool import WorkerDeath
from xent_tf.track import writing
from xent_tf.track.resume import CONFIG_HASH_TAG, training_config_hash


def _sweep_with_two_running_jobs(
    uri: str, first: Config, second: Config
) -> tuple[str, str, dict[str, str]]:
    """A parent and two RUNNING children (processes 101 and 102); returns their ids by epochs."""
    parent, experiment = writing.start_parent_run(uri, "lost", "sweep", {})
    client = MlflowClient(uri)
    runs = {}
    for config, pid in ((first, 101), (second, 102)):
        run = client.create_run(
            experiment,
            tags={
                "mlflow.parentRunId": parent,
                "pid": str(pid),
                CONFIG_HASH_TAG: training_config_hash(config),
            },
        )
        runs[str(config.trainer.epochs)] = run.info.run_id
    return parent, experiment, runs


def test_a_dead_process_fails_its_own_runs_and_a_job_it_never_opened(
    make_config: Callable[..., Config], tracking_uri: str
) -> None:
    first, second, unopened = (make_config(f"trainer.epochs={n}") for n in (5, 6, 7))
    parent, experiment, runs = _sweep_with_two_running_jobs(tracking_uri, first, second)
    death = WorkerDeath(101, -9)
    ids = record_worker_death(
        tracking_uri, parent, experiment, death, [(first, []), (unopened, ["trainer.epochs=7"])], 0
    )
    client = MlflowClient(tracking_uri)
    assert ids[0] == runs["5"]
    assert client.get_run(runs["5"]).info.status == "FAILED"
    assert client.get_run(runs["5"]).data.tags["error"] == (
        "WorkerDied: worker died (signal 9, SIGKILL) in process 101; the rest of the sweep went on"
    )
    assert client.get_run(runs["6"]).info.status == "RUNNING"  # another process's job
    new = client.get_run(ids[1])
    assert (new.info.status, new.data.tags[CONFIG_HASH_TAG]) == (
        "FAILED",
        training_config_hash(unopened),
    )
    assert new.data.tags["pid"] == "101"


def test_a_worker_ray_lost_without_a_process_is_found_by_its_jobs_config(
    make_config: Callable[..., Config], tracking_uri: str
) -> None:
    first, second = make_config("trainer.epochs=5"), make_config("trainer.epochs=6")
    parent, experiment, runs = _sweep_with_two_running_jobs(tracking_uri, first, second)
    death = WorkerDeath(0, 0, "Ray lost the worker: WorkerCrashedError")
    ids = record_worker_death(tracking_uri, parent, experiment, death, [(second, [])], 0)
    client = MlflowClient(tracking_uri)
    assert ids == [runs["6"]]  # its own run, not a second one
    assert client.get_run(runs["6"]).info.status == "FAILED"
    assert client.get_run(runs["6"]).data.tags["error"] == (
        "WorkerDied: worker died (Ray lost the worker: WorkerCrashedError); the rest of the "
        "sweep went on"
    )
    assert client.get_run(runs["5"]).info.status == "RUNNING"
    assert len(client.search_runs([experiment])) == 3  # the parent and the two jobs
