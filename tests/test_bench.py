"""Smoke tests of the benchmark's pure helpers: ratios, VOID, verdicts, tables, log parsing.

No timing is measured or asserted here; the numbers are synthetic.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bench, common
from benchmarks.bench import JobTiming, RunTiming, TrainingComparison


def timing(seconds: float, val_acc: float, epochs: int = 20, first_extra: float = 0.0) -> RunTiming:
    steady = seconds / epochs
    return RunTiming(seconds, steady + first_extra, steady, val_acc)


def test_importing_the_bench_does_not_import_tensorflow() -> None:
    # The helpers stay cheap to import: the sections import TensorFlow when they run.
    code = "import sys, benchmarks.bench; print('tensorflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=common.REPO_ROOT, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_median_ratio_pairs_repeats_in_order() -> None:
    assert common.paired_ratios([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == [2.0, 3.0, 1.0]
    assert common.median_ratio([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == 2.0
    # Even count: the mean of the middle two.
    assert common.median_ratio([1.0, 4.0], [1.0, 1.0]) == 2.5


@pytest.mark.parametrize(
    ("numerators", "denominators"),
    [([1.0], [1.0, 2.0]), ([], []), ([1.0], [0.0])],
)
def test_paired_ratios_reject_bad_input(numerators: list[float], denominators: list[float]) -> None:
    with pytest.raises(ValueError):
        common.paired_ratios(numerators, denominators)


def test_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        common.median([])


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [(0.954, 0.954, True), (0.950, 0.960, True), (0.950, 0.9601, False), (0.72, 0.70, False)],
)
def test_accuracies_agree_within_one_point(a: float, b: float, agree: bool) -> None:
    assert bench.accuracies_agree(a, b) is agree


@pytest.mark.parametrize(
    ("value", "limit", "void", "expected"),
    [
        (1.9, 2.0, False, "met"),
        (2.0, 2.0, False, "met"),
        (2.1, 2.0, False, "MISSED"),
        (1.0, 2.0, True, "VOID"),
        (1.0, None, False, "-"),
        (None, 2.0, False, "-"),
    ],
)
def test_verdict(value: float | None, limit: float | None, void: bool, expected: str) -> None:
    assert common.verdict(value, limit, void) == expected


def test_format_ratio() -> None:
    assert bench.format_ratio(2.414) == "2.41x"
    assert bench.format_ratio(2.414, void=True) == "VOID"
    assert bench.format_ratio(None) == "-"


def test_comparison_from_repeats_takes_medians_of_paired_ratios() -> None:
    suite = [timing(2.0, 0.955, first_extra=0.5), timing(3.0, 0.954), timing(2.2, 0.950)]
    numpy = [timing(1.0, 0.956), timing(1.0, 0.957), timing(2.2, 0.951)]
    c = TrainingComparison.from_repeats("ref", 6300, 20, suite, numpy, target_ratio=2.0)
    assert c.ratio == 2.0  # pairs 2.0, 3.0, 1.0
    assert c.ratio_range == (1.0, 3.0)
    assert c.steady_ratio == 2.0
    assert c.trace_seconds == pytest.approx(0.0)  # median of 0.5, 0, 0
    assert (c.suite_val_acc, c.numpy_val_acc) == (0.954, 0.956)
    assert not c.void
    assert c.verdict == "met"


def test_comparison_is_void_when_the_yardstick_learns_something_else() -> None:
    suite = [timing(1.0, 0.95)] * 3
    numpy = [timing(2.0, 0.93)] * 3
    c = TrainingComparison.from_repeats("ref", 6300, 20, suite, numpy, target_ratio=2.0)
    assert c.ratio == 0.5
    assert c.void
    assert c.verdict == "VOID"
    assert "VOID" in bench.render_training([c])


def test_comparison_without_target_has_no_verdict() -> None:
    c = TrainingComparison.from_repeats(
        "wide", 6300, 20, [timing(3.0, 0.9)], [timing(1.0, 0.9)], target_ratio=None
    )
    assert c.ratio == 3.0
    assert c.verdict == "-"


def test_format_table_aligns_columns() -> None:
    table = common.format_table(["case", "ratio"], [["reference", "1.50x"], ["wide", "12.00x"]])
    assert table.splitlines() == [
        "case        ratio",
        "---------  ------",
        "reference   1.50x",
        "wide       12.00x",
    ]


def test_format_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells"):
        common.format_table(["a", "b", "c"], [["1", "2"]])


def test_parse_job_log_reads_pid_and_time_span() -> None:
    text = (
        "1700000000.250 4242 [xent_tf.train.pipeline][INFO] - training on CPU\n"
        "1700000001.000 4242 [xent_tf.train.pipeline][INFO] - epoch 1/20 ...\n"
        "continuation line of a multi-line message\n"
        "1700000003.500 4242 [xent_tf.run][INFO] - \n"
    )
    log = bench.parse_job_log(text)
    assert log == bench.JobLog(pid=4242, first=1700000000.25, last=1700000003.5)


def test_parse_job_log_needs_the_bench_format() -> None:
    with pytest.raises(ValueError, match="JOB_LOG_FORMAT"):
        bench.parse_job_log("[2026-01-01 00:00:00,000][xent_tf.run][INFO] - hello\n")


def test_launch_time_finds_hydras_launching_line() -> None:
    out = (
        "1700000004.100 [HYDRA] sweep parent run abc in experiment 'reference'\n"
        "1700000004.200 [HYDRA] Joblib.Parallel(n_jobs=-1) is launching 10 jobs\n"
        "1700000004.300 [HYDRA] Launching jobs, sweep output dir : /tmp/sweep\n"
    )
    assert bench.launch_time(out) == 1700000004.3
    assert bench.launch_time("no timestamps here") is None


def test_job_overheads_count_from_when_the_worker_became_free() -> None:
    start = 100.0
    jobs = [
        # worker 1: first job (carries start-up), then a reused-worker job
        JobTiming(number=0, pid=1, start=110.0, end=113.0, train_seconds=2.0),
        JobTiming(number=2, pid=1, start=113.5, end=116.0, train_seconds=2.0),
        # worker 2: one job
        JobTiming(number=1, pid=2, start=111.0, end=114.0, train_seconds=2.5),
    ]
    overheads = bench.job_overheads(start, jobs)
    assert [o.first_in_worker for o in overheads] == [True, False, True]
    assert [o.before_run for o in overheads] == pytest.approx([10.0, 0.5, 11.0])
    assert [o.in_run for o in overheads] == pytest.approx([1.0, 0.5, 0.5])
    assert [o.total for o in overheads] == pytest.approx([11.0, 1.0, 11.5])


@pytest.mark.parametrize(
    ("only", "quick", "expected"),
    [
        (None, False, list(bench.SECTIONS)),
        (None, True, ["reference", "wider", "mlflow", "memory", "scaling", "replicas"]),
        (["sweep", "reference"], True, ["reference", "sweep"]),
        (["reproduce"], True, ["reproduce"]),
        (["evidence-full"], True, ["evidence-full"]),
    ],
)
def test_select_sections(only: list[str] | None, quick: bool, expected: list[str]) -> None:
    assert bench.select_sections(only, quick) == expected


def test_select_sections_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="bogus"):
        bench.select_sections(["bogus"], quick=False)


def test_evidence_training_counts_each_replica_batch_once(tmp_path: Path) -> None:
    from benchmarks.evidence import not_training_share, read_training

    store = tmp_path / "mlflow.db"
    with sqlite3.connect(store) as db:
        db.execute("create table runs (run_uuid text)")
        db.execute("create table tags (run_uuid text, key text, value text)")
        db.execute("create table latest_metrics (run_uuid text, key text, value real)")
        rows = [  # run, parent, batch tag, train_seconds
            ("a1", "p1", "lr_sweep#1", 4.0),  # one batch of two runs: 4 s once
            ("a2", "p1", "lr_sweep#1", 4.0),
            ("b1", "p2", "lr_sweep#1", 3.0),  # the same tag under another sweep: its own
            ("c1", "p2", None, 1.5),  # a job trained alone
        ]
        for run, parent, batch, seconds in rows:
            db.execute("insert into runs values (?)", (run,))
            db.execute("insert into tags values (?, 'mlflow.parentRunId', ?)", (run, parent))
            if batch:
                db.execute("insert into tags values (?, 'xent.replica_batch', ?)", (run, batch))
            db.execute("insert into latest_metrics values (?, 'train_seconds', ?)", (run, seconds))
        db.execute("insert into runs values ('ref')")  # the ledger's reference run: no parent
        db.execute("insert into latest_metrics values ('ref', 'train_seconds', 9.0)")
    assert read_training(store) == 8.5
    assert not_training_share(8.5, 10.0, 2) == pytest.approx(0.575)
    with pytest.raises(ValueError, match="must be positive"):
        not_training_share(1.0, 0.0, 2)


def test_the_evidence_table_gives_ratios_and_the_not_training_share() -> None:
    from benchmarks.evidence import EvidenceBench, EvidenceRun, TrainerReuse, render_evidence

    before = EvidenceRun("before", 400.0, 700.0, 200.0, 0.75, {"C13": "1 of 4"})
    now = EvidenceRun("now", 100.0, 150.0, 120.0, 0.4, {"C13": "1 of 4"})
    table = render_evidence(
        EvidenceBench([before, now], [TrainerReuse("wine", [4.0, 6.0], [1.0, 1.5])])
    )
    assert "0.25x wall, 0.21x CPU" in table
    lines = table.splitlines()
    now_line = next(line for line in lines if "100 s wall, 150 s CPU, 120 s training" in line)
    assert now_line.rstrip().endswith("met") and "<= 150 s" in now_line
    share = [line for line in lines if "not training" in line]
    assert share[1].rstrip().endswith("MISSED") and "40%" in share[1] and "<= 25%" in share[1]
    assert (
        "kept trainer / fresh" in table
        and "0.25x (fresh 5.00 s, kept 1.25 s; median of 2)" in table
    )
    assert "same 'holds on N of M' both ways" in table
