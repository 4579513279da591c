"""A shared `make server` with PostgreSQL behind it: a 16-job study over HTTP loses nothing."""

from __future__ import annotations

import pytest

from tests.integration.cli import PG_STUDY_EPOCHS, PG_STUDY_JOBS, FinishedStudy
from tests.integration.records import (
    CHILD_ARTIFACTS,
    EPOCH_METRICS,
    ONCE_METRICS,
    PARENT_ARTIFACTS,
    artifacts,
    read_sweep,
)
from xent_tf.claims.study_report import publish_report

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("pg_study")]


def test_sixteen_parallel_jobs_log_every_run_point_and_artifact_to_the_server(
    pg_study: FinishedStudy,
) -> None:
    records = read_sweep(pg_study.uri, pg_study.experiment_name)

    assert records.parent.info.status == "FINISHED"
    assert records.statuses == {"FINISHED": PG_STUDY_JOBS}
    seeds = sorted((r.data.tags["loss"], int(r.data.tags["seed"])) for r in records.children)
    assert seeds == [(loss, seed) for loss in ("ce", "mse") for seed in range(8)]
    # The jobs really ran in parallel worker processes, each logging itself over HTTP.
    assert len({r.data.tags["pid"] for r in records.children}) == 2
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in records.children)

    # Every metric history is complete: epochs x per-epoch metrics, plus the once-only ones.
    assert records.incomplete(PG_STUDY_EPOCHS) == {}
    expected_points = sum(
        PG_STUDY_EPOCHS * len(EPOCH_METRICS) + len(run.data.metrics.keys() - EPOCH_METRICS)
        for run in records.children
    )
    assert records.total_points == expected_points
    assert all(run.data.metrics.keys() >= ONCE_METRICS for run in records.children)

    files = artifacts(pg_study.uri, [r.info.run_id for r in records.children])
    assert {run_id: CHILD_ARTIFACTS - got for run_id, got in files.items()} == {
        r.info.run_id: set() for r in records.children
    }
    parent_files = artifacts(pg_study.uri, [records.parent.info.run_id])[records.parent.info.run_id]
    assert parent_files >= PARENT_ARTIFACTS
    # The verdict tag is the one the study's rules give on the runs as the server stores them.
    rebuilt, _ = publish_report(
        pg_study.uri,
        pg_study.sweep_dir / "rebuilt",
        parent_run_id=records.parent.info.run_id,
        upload=False,
    )
    assert {c.claim: str(c.verdict) for c in rebuilt.checks} == {
        claim: records.parent.data.tags[f"verdict.{claim}"] for claim in ("C12", "C12b", "C12c")
    }
    report = (pg_study.sweep_dir / "report.md").read_text()
    assert "8/8" in report and "loss=ce" in report and "loss=mse" in report
    print(
        f"\n[pg study] {len(records.children)} runs, {records.total_points} metric points, "
        f"{len(parent_files)} parent artifacts, sweep {pg_study.result.seconds:.1f} s"
    )
