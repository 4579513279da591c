"""docs/PERFORMANCE.md is rendered from the bench's results file: exact rows, merging, freshness.

The results below are constructed; nothing is timed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench, performance_doc, results

EPYC = {
    "date": "2026-12-02T08:57:09+00:00",
    "cpu": "AMD EPYC",
    "cpu_count": 2,
    "python": "3.11.7",
    "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"},
    "git_commit": "914b876",
}
XEON = {**EPYC, "date": "2026-11-22T03:35:41+00:00", "cpu": "Intel Xeon", "git_commit": "e0b6bba"}
FULL = {"repeats": 5, "quick": False, "sections": ["reproduce"]}
QUICK = {"repeats": 1, "quick": True, "sections": ["memory"]}

REPRODUCE = {
    "one_process": 80.0,
    "one_process_cpu": 142.0,
    "per_step": 170.0,
    "per_step_cpu": 253.0,
    "verdicts": {"holds": 10, "contradicted": 3, "inconclusive": 3},
}
MEMORY = {
    "peak_rss_mb": [900.0, 982.0, 950.0],
    "wall_seconds": [12.0, 16.5, 12.8],
    "train_seconds": [1.0, 1.2, 1.1],
    "import_seconds": 5.8,
    "store_seconds": 1.4,
    "target_seconds": 15.0,
    "verdict": "met",
}


def constructed_results() -> dict[str, Any]:
    """reproduce measured on the EPYC at 914b876; memory kept from an older, quick Xeon run;
    mlflow failed; replicas stored by a bench whose fields differ."""
    return {
        "machine": EPYC,
        "settings": FULL,
        "sections": {
            "memory": MEMORY,
            "mlflow": {"error": "RuntimeError: store | locked"},
            "replicas": {"replica_cold": [1.0]},
            "reproduce": REPRODUCE,
        },
        "measured": {
            "memory": {"machine": XEON, "settings": QUICK},
            "mlflow": {"machine": EPYC, "settings": FULL},
            "replicas": {"machine": EPYC, "settings": FULL},
            "reproduce": {"machine": EPYC, "settings": FULL},
        },
    }


def test_render_gives_the_summary_and_each_sections_rows() -> None:
    lines = performance_doc.render(constructed_results()).splitlines()

    summary = lines.index("## Targets")
    assert lines[summary + 2 : summary + 6] == [
        "| measure | value | target | met? | machine | date | commit |",
        "|---|---|---|---|---|---|---|",
        # bench order: section 5 (memory) before section 8 (reproduce)
        "| `make run` equivalent, start to exit | 12.8 s (median of 3) | <= 15 s | met "
        "| Intel Xeon, 2 CPUs | 2026-11-22 03:35 UTC | e0b6bba |",
        "| make reproduce (one process: experiments/reproduce.py) | 80 s wall, 142 s CPU "
        "| <= 90 s | met | AMD EPYC, 2 CPUs | 2026-12-02 08:57 UTC | 914b876 |",
    ]
    assert lines[summary + 6 : summary + 8] == [
        "",
        "Not in the results file: reference, wider, sweep, scaling, evidence, evidence-full "
        '(`make bench ARGS="--only NAME"` measures one section).',
    ]

    memory = lines.index("## " + bench.SECTION_TITLES["memory"].format(repeats=1))
    assert lines[memory + 2] == (
        "Measured 2026-11-22 03:35 UTC at commit e0b6bba on Intel Xeon, 2 CPUs; Python 3.11.7, "
        "tensorflow 2.21.0, keras 3.15.1; 1 repeat, --quick."
    )
    assert lines[memory + 4 : memory + 10] == [
        "| measure | value | target | met? |",
        "|---|---|---|---|",
        "| peak RSS of a run (max over runs) | 982 MiB |  |  |",
        "| `make run` equivalent, start to exit | 12.8 s (median of 3) | <= 15 s | met |",
        "| ↳ training | 1.10 s |  |  |",
        "| ↳ imports (timed in a fresh process) | 5.8 s |  |  |",
    ]
    # 12.8 - 5.8 - 1.1
    assert lines[memory + 10] == "| ↳ everything else | 5.9 s |  |  |"

    reproduce = lines.index("## " + bench.SECTION_TITLES["reproduce"].format(repeats=5))
    assert lines[reproduce + 4 : reproduce + 10] == [
        "| measure | value | target | met? |",
        "|---|---|---|---|",
        "| make reproduce (one process: experiments/reproduce.py) | 80 s wall, 142 s CPU "
        "| <= 90 s | met |",
        "| the same steps, one process each (run.py per study, then the ledger) "
        "| 170 s wall, 253 s CPU |  |  |",
        # 80 / 170 and 142 / 253
        "| one process / one process per step | 0.47x wall, 0.56x CPU |  |  |",
        "| ledger (one-process run) | 3 contradicted, 10 holds, 3 inconclusive |  |  |",
    ]

    mlflow = lines.index("## " + bench.SECTION_TITLES["mlflow"].format(repeats=5))
    assert lines[mlflow + 4] == "Not measured: the section failed (RuntimeError: store \\| locked)."
    replicas = lines.index("## " + bench.SECTION_TITLES["replicas"].format(repeats=5))
    assert lines[replicas + 4].startswith("The stored result does not fit this code's table")
    assert lines[replicas + 4].endswith('measure it again: `make bench ARGS="--only replicas"`.')


def test_a_missed_target_is_in_the_summary_as_missed() -> None:
    data = constructed_results()
    data["sections"] = {"reproduce": {**REPRODUCE, "one_process": 95.4}}
    lines = performance_doc.render(data).splitlines()
    assert (
        "| make reproduce (one process: experiments/reproduce.py) | 95 s wall, 142 s CPU "
        "| <= 90 s | MISSED | AMD EPYC, 2 CPUs | 2026-12-02 08:57 UTC | 914b876 |"
    ) in lines


def test_merge_keeps_the_sections_not_run_with_who_measured_them() -> None:
    old_file = {  # written before "measured" existed
        "machine": XEON,
        "settings": QUICK,
        "sections": {"memory": MEMORY, "reproduce": {**REPRODUCE, "one_process": 99.0}},
    }
    latest = {"machine": EPYC, "settings": FULL, "sections": {"reproduce": REPRODUCE}}

    merged = results.merge(old_file, latest)

    assert merged["machine"] == EPYC and merged["settings"] == FULL
    assert merged["sections"] == {"memory": MEMORY, "reproduce": REPRODUCE}
    assert merged["measured"] == {
        "memory": {"machine": XEON, "settings": QUICK},
        "reproduce": {"machine": EPYC, "settings": FULL},
    }
    assert results.provenance(merged, "memory").commit == "e0b6bba"
    assert results.provenance(merged, "reproduce").commit == "914b876"
    # merged again: the section's own provenance travels on, not the file's top-level one
    again = results.merge(merged, {"machine": XEON, "settings": QUICK, "sections": {}})
    assert results.provenance(again, "reproduce").date == "2026-12-02 08:57 UTC"


def test_merge_without_a_previous_file_holds_only_the_latest() -> None:
    latest = {"machine": EPYC, "settings": FULL, "sections": {"reproduce": REPRODUCE}}
    assert results.merge(None, latest)["sections"] == {"reproduce": REPRODUCE}


def test_provenance_of_an_unknown_section_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"no section 'sweep'.*\['memory'"):
        results.provenance({"sections": {"memory": MEMORY}}, "sweep")


def test_load_refuses_a_file_that_is_not_bench_results(tmp_path: Path) -> None:
    assert results.load(tmp_path / "absent.json") is None
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json is not a bench results file"):
        results.load(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps({"machine": {}}))
    with pytest.raises(ValueError, match=r"lacks \['settings', 'sections'\]"):
        results.load(tmp_path / "other.json")


def test_markdown_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="has 1 cells; expected 2"):
        performance_doc.markdown_table(["measure", "value"], [["only one"]])


def test_check_reports_a_stale_doc(tmp_path: Path) -> None:
    source = tmp_path / "latest.json"
    source.write_text(json.dumps(constructed_results()))
    doc = tmp_path / "PERFORMANCE.md"
    argv = ["--results", str(source), "--out", str(doc)]
    assert performance_doc.main([*argv, "--check"]) == 1  # no doc yet
    assert performance_doc.main(argv) == 0
    assert doc.read_text() == performance_doc.render(constructed_results())
    assert performance_doc.main([*argv, "--check"]) == 0


def test_the_committed_doc_is_what_the_committed_results_render_to() -> None:
    data = results.load(results.RESULTS_PATH)
    assert data is not None
    assert performance_doc.DOC_PATH.read_text() == performance_doc.render(data), (
        "docs/PERFORMANCE.md is stale: run `make performance-doc`"
    )


def test_rendering_imports_neither_tensorflow_nor_mlflow() -> None:
    code = (
        "import sys, benchmarks.performance_doc; "
        "print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=bench.REPO_ROOT, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False False", out.stderr


def test_a_sub_row_with_a_target_is_named_after_its_row() -> None:
    table = (
        ["measure", "value", "target", ""],
        [
            ["wall / sum of training", "2.99x", "<= 0.6x", "MISSED"],
            ["  best possible", "1.33x", "<= 0.6x", "MISSED"],
            ["sweep wall time", "23.9 s", "", ""],
        ],
    )
    who = results.provenance(constructed_results(), "reproduce")
    rows = performance_doc.target_rows(performance_doc.SECTIONS["sweep"], table, who)
    assert [(r.measure, r.value, r.verdict) for r in rows] == [
        ("wall / sum of training", "2.99x", "MISSED"),
        ("wall / sum of training, best possible", "1.33x", "MISSED"),
    ]
