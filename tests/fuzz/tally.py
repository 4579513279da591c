"""What the fuzz campaign tried and what became of it, counted per kind of input.

Each property test reports every case it runs (``record``): the kind of input, whether the
generator meant it to be valid or bad, and what the code did with it. The outcomes the contract
allows are "refused" for a bad case (refused before training, with a message naming it) and
"finished" for a valid one; anything else is counted as it happened, so a slipped case shows in
the table instead of vanishing into a retry. With ``XENT_FUZZ_TABLE=<path>`` the session writes
its counts there (one JSON file per test process, merged at the end) and prints the table.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Outcome(Enum):
    """What happened to one generated case."""

    REFUSED = "refused"  # a bad case, refused before training with a message naming it
    SLIPPED = "slipped"  # a bad case that was accepted (trained, or went on to the store)
    WRONG_MESSAGE = "wrong message"  # a bad case refused, but the message does not name it
    FINISHED = "finished"  # a valid case that was accepted (and, where run, finished)
    REJECTED_VALID = "valid refused"  # a valid case that was refused


TABLE_ENV = "XENT_FUZZ_TABLE"
# XENT_FUZZ_CENSUS=1: count every case and fail none (how the campaign's "before the fixes"
# table was made); by default a case the contract does not allow fails its test.
CENSUS_ENV = "XENT_FUZZ_CENSUS"
_ALLOWED = (Outcome.REFUSED, Outcome.FINISHED)
_COUNTS: Counter[tuple[str, str]] = Counter()
# The first few cases of each kind the contract does not allow, for the table's notes.
_FOUND: dict[tuple[str, str], list[str]] = {}
_FOUND_PER_KIND = 3


def record(kind: str, outcome: Outcome) -> None:
    """Count one case of ``kind`` (e.g. "config: out of range") with its outcome."""
    _COUNTS[(kind, outcome.value)] += 1


def check(kind: str, outcome: Outcome, detail: str) -> None:
    """Count the case, then fail the test unless the contract allows ``outcome``.

    Args:
        kind: the kind of input.
        outcome: what the code did with the case.
        detail: what to say when it fails (the case and the message it got).
    """
    record(kind, outcome)
    if outcome not in _ALLOWED:
        found = _FOUND.setdefault((kind, outcome.value), [])
        if len(found) < _FOUND_PER_KIND:
            found.append(detail[:600])
    if outcome not in _ALLOWED and os.environ.get(CENSUS_ENV) != "1":
        raise AssertionError(f"{kind}: {outcome.value}: {detail}")


def dump(directory: Path) -> None:
    """Write this process's counts to ``directory`` (one file per process)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [[kind, outcome, n] for (kind, outcome), n in sorted(_COUNTS.items())]
    found = [[kind, outcome, cases] for (kind, outcome), cases in sorted(_FOUND.items())]
    payload = {"counts": rows, "found": found}
    (directory / f"counts-{os.getpid()}.json").write_text(json.dumps(payload))


@dataclass(frozen=True)
class Row:
    """One kind of input: cases tried, refused correctly, slipped through, valid ones."""

    kind: str
    tried: int
    refused: int
    slipped: int
    wrong_message: int
    valid_finished: int
    valid_refused: int


def merge(directory: Path) -> list[Row]:
    """Sum every process's counts in ``directory`` into one row per kind, sorted by kind."""
    counts: Counter[tuple[str, str]] = Counter()
    for path in sorted(directory.glob("counts-*.json")):
        for kind, outcome, n in json.loads(path.read_text())["counts"]:
            counts[(kind, outcome)] += n
    kinds = sorted({kind for kind, _ in counts})
    return [
        Row(
            kind=kind,
            tried=sum(n for (k, _), n in counts.items() if k == kind),
            refused=counts[(kind, Outcome.REFUSED.value)],
            slipped=counts[(kind, Outcome.SLIPPED.value)],
            wrong_message=counts[(kind, Outcome.WRONG_MESSAGE.value)],
            valid_finished=counts[(kind, Outcome.FINISHED.value)],
            valid_refused=counts[(kind, Outcome.REJECTED_VALID.value)],
        )
        for kind in kinds
    ]


def found(directory: Path) -> list[str]:
    """Examples of the cases the contract does not allow, one line each (kind: outcome: case)."""
    lines = []
    for path in sorted(directory.glob("counts-*.json")):
        for kind, outcome, cases in json.loads(path.read_text())["found"]:
            lines += [f"- {kind}: {outcome}: {case}" for case in cases]
    return lines


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, with a total line."""
    header = (
        "| kind of input | cases tried | bad: refused correctly | bad: slipped through | "
        "bad: refused, message not naming it | valid: finished | valid: refused |"
    )
    lines = [header, "|" + "---|" * 7]
    for row in [*rows, _total(rows)]:
        lines.append(
            f"| {row.kind} | {row.tried} | {row.refused} | {row.slipped} | "
            f"{row.wrong_message} | {row.valid_finished} | {row.valid_refused} |"
        )
    return "\n".join(lines)


def _total(rows: list[Row]) -> Row:
    return Row(
        kind="**total**",
        tried=sum(r.tried for r in rows),
        refused=sum(r.refused for r in rows),
        slipped=sum(r.slipped for r in rows),
        wrong_message=sum(r.wrong_message for r in rows),
        valid_finished=sum(r.valid_finished for r in rows),
        valid_refused=sum(r.valid_refused for r in rows),
    )
