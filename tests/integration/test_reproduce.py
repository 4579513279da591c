"""`make reproduce` killed after its first study finished, then started again: the finished study
is not trained again (same parent, same runs), the interrupted one continues under its own parent
and trains only what is missing, and the claims ledger runs once. Two tiny studies (2 seeds) and
one exact claim keep it bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.records import read_sweep
from tests.integration.services import ROOT, TINY, stop_group, wait_until

pytestmark = pytest.mark.integration

# study: its jobs with claims.seeds=2 (annealing's 5 schedules x seeds 0,1; binary_vs_categorical's
# bce, cce and sparse_cce on the reference data, cce and sparse_cce on multiclass, x seeds 0,1)
STUDIES = {"annealing": 10, "binary_vs_categorical": 10}


def _make_reproduce(store: str, cwd: Path) -> subprocess.Popen[bytes]:
    """`make -f <repo>/Makefile reproduce` with this interpreter's venv, in its own process
    group, output appended to ``cwd/make-output.log``."""
    arguments = [
        *TINY,
        f"tracking.uri={store}",
        "'claims.only=[C2,C8,C15]'",
        "claims.seeds=2",
        "claims.run_missing=false",
    ]
    with (cwd / "make-output.log").open("ab") as out:
        return subprocess.Popen(
            [
                "make",
                "-f",
                str(ROOT / "Makefile"),
                "reproduce",
                f"VENV={sys.prefix}",
                # The venv is this one, installed already: make must not install into it.
                "-o",
                f"{sys.prefix}/.installed",
                f"STUDIES={' '.join(STUDIES)}",
                f"ARGS={' '.join(arguments)}",
            ],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            start_new_session=True,
        )


def _runs(client: MlflowClient, experiment_name: str, parents: bool = False) -> dict[str, str]:
    """{run id: status} of every run (or sweep parent) of an experiment ({} when it does not
    exist)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id])
    return {
        r.info.run_id: r.info.status for r in runs if not parents or "xent.sweep_dir" in r.data.tags
    }


def test_an_interrupted_make_reproduce_started_again_trains_only_what_is_missing(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.search_experiments()  # the store's tables now: polling it never races their creation
    first, second = STUDIES
    make = _make_reproduce(store, tmp_path)
    try:
        # The first study FINISHED and the second one's first replica batch recorded: kill
        # everything, as a crash or a lost machine would (no process gets to end its runs).
        def second_study_half_done() -> bool:
            first_done = "FINISHED" in _runs(client, first, parents=True).values()
            return first_done and "FINISHED" in _runs(client, second).values()

        wait_until(second_study_half_done, 240, f"{first} to finish and {second} to record runs")
        os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=30)
    finally:
        stop_group(make)
    before = {study: _runs(client, study) for study in STUDIES}
    first_sweep = read_sweep(store, first)
    assert first_sweep.statuses == {"FINISHED": STUDIES[first]}
    assert _runs(client, "claims") == {}
    finished_before = read_sweep(store, second).statuses["FINISHED"]
    assert finished_before >= 1  # the rerun must leave these alone

    again = _make_reproduce(store, tmp_path)
    try:
        returncode = again.wait(timeout=400)
    finally:
        stop_group(again)
    output = (tmp_path / "make-output.log").read_text(errors="replace")
    assert returncode == 0, output[-5000:]

    # The finished study: the same parent and runs, none trained again, no point doubled.
    assert _runs(client, first) == before[first]
    resumed = read_sweep(store, first)
    assert resumed.parent.info.run_id == first_sweep.parent.info.run_id
    assert resumed.total_points == first_sweep.total_points
    assert f"{STUDIES[first]} configs that already FINISHED there are skipped" in output
    # The interrupted study: its parent (left RUNNING by the kill) continued, one FINISHED run
    # per job; the rerun trained only the jobs that had not finished.
    second_sweep = read_sweep(store, second)
    assert second_sweep.parent.info.run_id in before[second]
    assert second_sweep.parent.info.status == "FINISHED"
    finished = [r for r in second_sweep.children if r.info.status == "FINISHED"]
    assert len(finished) == STUDIES[second]
    assert len({r.data.tags["xent.config_hash"] for r in finished}) == STUDIES[second]
    assert "RUNNING" not in second_sweep.statuses
    trained_again = len([r for r in finished if r.info.run_id not in before[second]])
    assert trained_again == STUDIES[second] - finished_before
    for run in finished:  # every epoch once (+debug=tiny: 2 epochs)
        assert second_sweep.points[run.info.run_id]["val/loss"] == [1, 2]
    assert list(_runs(client, "claims").values()) == ["FINISHED"]
    # The ledger judged C8 and C15 on the tiny studies make reproduce ran (ARGS has
    # +debug=tiny): found in the store, none run again (run_missing=false would leave them out).
    ledger = json.loads(next(tmp_path.glob("outputs/*/*/claims.json")).read_text())
    studies = {s["study"]: s for s in ledger["studies"]}
    for study in STUDIES:
        assert studies[study]["problem"] == "" and not studies[study]["ran_now"], studies[study]
        assert studies[study]["parent_run_id"] == read_sweep(store, study).parent.info.run_id
    print(
        f"\n[reproduce] killed after {first}: {first} {len(before[first]) - 1} runs, {second} "
        f"{finished_before} FINISHED of {STUDIES[second]}; started again: {first} "
        f"{len(resumed.children)} runs ({resumed.total_points} points, unchanged), {second} "
        f"{trained_again} trained, {len(finished)} FINISHED ({second_sweep.total_points} points)"
    )
