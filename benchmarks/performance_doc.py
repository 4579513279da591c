"""docs/PERFORMANCE.md, rendered from the bench's results file (never written by hand).

``make bench`` measures and then calls this; ``make performance-doc`` only re-renders:

    python -m benchmarks.performance_doc            # write docs/PERFORMANCE.md
    python -m benchmarks.performance_doc --check    # exit 1 if the file is not what it renders

Each section's rows are the ones the bench prints (``bench.training_table``, ``sweep_table``, ...,
``replicas.replicas_table``, ``reproduce.reproduce_table``, ``evidence.evidence_table``), rebuilt
from the raw measurements in ``benchmarks/results/latest.json``; a summary table lists every row
that has a target, with the machine, date and commit that measured it. No TensorFlow or MLflow
is imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import bench, results
from benchmarks.common import REPO_ROOT, Table
from benchmarks.evidence import evidence_table, stored_evidence
from benchmarks.replicas import ReplicaBench, replicas_table
from benchmarks.reproduce import ReproduceBench, reproduce_table

DOC_PATH = REPO_ROOT / "docs" / "PERFORMANCE.md"
# What a target row's verdict cell may say (bench.verdict); "-" and "" are rows without one.
TARGET_VERDICTS = ("met", "MISSED", "VOID")


@dataclass(frozen=True)
class SectionSpec:
    """How one section's stored result becomes its table.

    Attributes:
        table: the stored JSON result -> (headers, rows), through the bench's own row code.
        value_column: the header of the column the summary shows as the value.
        summary_suffix: added to a row's first cell to name it in the summary.
    """

    table: Callable[[Any], Table]
    value_column: str = "value"
    summary_suffix: str = ""


def _timing(data: Mapping[str, Any]) -> bench.RunTiming:
    return bench.RunTiming(**data)


def _comparison(data: Mapping[str, Any]) -> bench.TrainingComparison:
    fields = dict(data)
    fields["suite"] = [_timing(r) for r in data["suite"]]
    fields["numpy"] = [_timing(r) for r in data["numpy"]]
    fields["ratio_range"] = tuple(data["ratio_range"])
    return bench.TrainingComparison(**fields)


def _scaling_point(data: Mapping[str, Any]) -> bench.ScalingPoint:
    fields = dict(data)
    fields["suite"] = _timing(data["suite"])
    fields["numpy"] = _timing(data["numpy"])
    return bench.ScalingPoint(**fields)


def _replicas(data: Mapping[str, Any]) -> ReplicaBench:
    return ReplicaBench(**{**data, "val_acc_spread": tuple(data["val_acc_spread"])})


_TRAINING = SectionSpec(
    lambda data: bench.training_table([_comparison(c) for c in data]),
    value_column="ratio",
    summary_suffix=": suite / NumPy training time",
)
SECTIONS: dict[str, SectionSpec] = {
    "reference": _TRAINING,
    "wider": _TRAINING,
    "sweep": SectionSpec(lambda data: bench.sweep_table(bench.SweepResult(**data))),
    "mlflow": SectionSpec(lambda data: bench.mlflow_table(bench.MlflowShare(**data))),
    "memory": SectionSpec(lambda data: bench.memory_table(bench.MemoryResult(**data))),
    "scaling": SectionSpec(lambda data: bench.scaling_table([_scaling_point(p) for p in data])),
    "replicas": SectionSpec(lambda data: replicas_table(_replicas(data))),
    "reproduce": SectionSpec(lambda data: reproduce_table(ReproduceBench(**data))),
    "evidence": SectionSpec(lambda data: evidence_table(stored_evidence(data))),
    "evidence-full": SectionSpec(lambda data: evidence_table(stored_evidence(data))),
}


def markdown_cell(text: str) -> str:
    """A table cell as markdown: pipes escaped, a leading indent (a sub-row) shown as "↳ "."""
    stripped = text.strip().replace("|", "\\|")
    return f"↳ {stripped}" if text.startswith(" ") and stripped else stripped


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table: a header line, a rule, one line per row.

    Args:
        headers: column titles; an empty one (the bench's verdict column) becomes "met?".
        rows: cells as strings, each row as long as ``headers``.

    Returns:
        The table's lines.

    Raises:
        ValueError: a row's length differs from the header's.
    """
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells; expected {len(headers)}")
    titles = [markdown_cell(h) or "met?" for h in headers]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return lines


@dataclass(frozen=True)
class TargetRow:
    """One measurement that has a target, for the summary.

    Attributes:
        measure: what was measured.
        value: the measured value as the bench prints it.
        target: the target, e.g. "<= 2.0x".
        verdict: "met", "MISSED" or "VOID".
        provenance: who measured it.
    """

    measure: str
    value: str
    target: str
    verdict: str
    provenance: results.Provenance


def target_rows(spec: SectionSpec, table: Table, provenance: results.Provenance) -> list[TargetRow]:
    """The rows of one section's table that have a target and a verdict.

    Args:
        spec: the section's spec (which column is the value).
        table: its headers and rows; the verdict is the last column, titled "".
        provenance: who measured the section.

    Returns:
        One target row per row whose verdict is met, MISSED or VOID; a sub-row (indented) is
        named after the row above it that is not one.
    """
    headers, rows = table
    if "target" not in headers or headers[-1] != "":
        return []
    value, target = headers.index(spec.value_column), headers.index("target")
    found: list[TargetRow] = []
    parent = ""
    for row in rows:
        measure = row[0].strip()
        if row[0].startswith(" "):  # a sub-row: named after the row it belongs to
            measure = f"{parent}, {measure}"
        else:
            parent = measure
        if row[-1] in TARGET_VERDICTS:
            found.append(
                TargetRow(
                    measure + spec.summary_suffix, row[value], row[target], row[-1], provenance
                )
            )
    return found


def _provenance_line(p: results.Provenance) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in p.versions.items())
    quick = ", --quick" if p.quick else ""
    return (
        f"Measured {p.date} at commit {p.commit} on {p.machine}; Python {p.python}, {versions}; "
        f"{p.repeats} repeat{'' if p.repeats == 1 else 's'}{quick}."
    )


def render(data: Mapping[str, Any]) -> str:
    """docs/PERFORMANCE.md from a results file.

    Args:
        data: the parsed results file (``results.load``).

    Returns:
        The markdown: a summary of every target, then each measured section (in the bench's
        order) with who measured it and its full table; sections not in the file are named.
    """
    sections = data["sections"]
    summary: list[TargetRow] = []
    body: list[str] = []
    for name in bench.SECTIONS:
        if name not in sections:
            continue
        provenance = results.provenance(data, name)
        title = bench.SECTION_TITLES[name].format(repeats=provenance.repeats)
        body += ["", f"## {title}", "", _provenance_line(provenance), ""]
        stored = sections[name]
        if isinstance(stored, dict) and "error" in stored:
            error = markdown_cell(str(stored["error"]))
            body.append(f"Not measured: the section failed ({error}).")
            continue
        spec = SECTIONS[name]
        try:
            table = spec.table(stored)
        except (KeyError, TypeError) as error:  # stored by a bench whose results differ
            body.append(
                f"The stored result does not fit this code's table ({type(error).__name__}: "
                f'{error}); measure it again: `make bench ARGS="--only {name}"`.'
            )
            continue
        body += markdown_table(*table)
        summary += target_rows(spec, table, provenance)

    lines = [
        "# Performance",
        "",
        "<!-- Generated from benchmarks/results/latest.json by benchmarks/performance_doc.py "
        "(make bench, make performance-doc). Do not edit by hand. -->",
        "",
        "What `make bench` measured last, section by section, against its targets. A section "
        "not run by the latest bench keeps its last measurement, with the date, commit and "
        "machine that measured it. The machine is shared and its speed drifts: compare code by "
        "ratios measured side by side, not by absolute times from different dates.",
        "",
        "## Targets",
        "",
    ]
    if summary:
        lines += markdown_table(
            ["measure", "value", "target", "met?", "machine", "date", "commit"],
            [[r.measure, r.value, r.target, r.verdict, *r.provenance.cells()] for r in summary],
        )
    else:
        lines.append("No measurement with a target in the results file.")
    missing = [name for name in bench.SECTIONS if name not in sections]
    if missing:
        lines += [
            "",
            f"Not in the results file: {', '.join(missing)} "
            '(`make bench ARGS="--only NAME"` measures one section).',
        ]
    return "\n".join(lines + body) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Render the results file into the doc, or check that the doc is up to date.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0; 1 with ``--check`` when the doc differs from what the results render to.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=results.RESULTS_PATH)
    parser.add_argument("--out", type=Path, default=DOC_PATH)
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    data = results.load(args.results)
    if data is None:
        parser.error(f"no results file at {args.results}: run `make bench` first")
    text = render(data)
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `make performance-doc`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
