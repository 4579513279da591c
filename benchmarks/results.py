"""The bench's results file, ``benchmarks/results/latest.json``: its layout and how runs merge.

The file holds the last measurement of every section::

    {"machine": {...}, "settings": {...},       # the latest invocation of the bench
     "sections": {name: result, ...},          # each section's last result (or {"error": ...})
     "measured": {name: {"machine": {...}, "settings": {...}}, ...}}   # who measured each

``python -m benchmarks.bench --only replicas`` replaces the replicas section and keeps the
others, each with the machine, date and commit that measured it. Files written before
"measured" existed: every section was measured by the file's top-level machine.

Plain JSON and the standard library only: no TensorFlow, no MLflow.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Provenance:
    """Where, when and with what one section was measured.

    Attributes:
        date: when its bench invocation started, as "2026-12-02 08:57 UTC".
        commit: the short commit hash measured ("-dirty": with uncommitted changes).
        machine: the CPU and its count, as "AMD EPYC, 2 CPUs".
        versions: package -> version (tensorflow, keras, numpy, mlflow, hydra-core).
        python: the Python version.
        repeats: the paired repeats asked for.
        quick: whether the invocation was ``--quick``.
    """

    date: str
    commit: str
    machine: str
    versions: Mapping[str, str]
    python: str
    repeats: int
    quick: bool

    def cells(self) -> list[str]:
        """Machine, date and commit: the provenance columns of a summary row."""
        return [self.machine, self.date, self.commit]


def _utc_minutes(iso: str) -> str:
    """An ISO timestamp as "YYYY-MM-DD HH:MM UTC" (unparseable text is returned as it is)."""
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def provenance(results: Mapping[str, Any], section: str) -> Provenance:
    """Who measured one section of a results file.

    Args:
        results: the parsed results file.
        section: a name in ``results["sections"]``.

    Returns:
        The section's own machine and settings, or the file's top-level ones when it has none.

    Raises:
        KeyError: the file has no such section.
    """
    if section not in results["sections"]:
        raise KeyError(f"no section {section!r} in the results; it has {list(results['sections'])}")
    measured = results.get("measured", {}).get(section)
    machine = (measured or results)["machine"]
    settings = (measured or results)["settings"]
    return Provenance(
        date=_utc_minutes(str(machine.get("date", "unknown date"))),
        commit=str(machine.get("git_commit", "unknown")),
        machine=f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cpu_count', '?')} CPUs",
        versions=dict(machine.get("versions", {})),
        python=str(machine.get("python", "?")),
        repeats=int(settings.get("repeats", 0)),
        quick=bool(settings.get("quick", False)),
    )


def merge(previous: Mapping[str, Any] | None, latest: Mapping[str, Any]) -> dict[str, Any]:
    """The results file after an invocation: its sections replace, the others stay.

    Args:
        previous: the file as it was (None: there was none).
        latest: what this invocation measured: "machine", "settings" and "sections".

    Returns:
        The new file: the latest machine and settings at the top, every section of both (the
        latest's where both have one), and for each section the machine and settings that
        measured it under "measured".
    """
    sections: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    if previous is not None:
        for name, result in previous.get("sections", {}).items():
            if name in latest["sections"]:
                continue
            sections[name] = result
            own = previous.get("measured", {}).get(name)
            measured[name] = own or {
                "machine": previous["machine"],
                "settings": previous["settings"],
            }
    for name, result in latest["sections"].items():
        sections[name] = result
        measured[name] = {"machine": latest["machine"], "settings": latest["settings"]}
    return {
        "machine": latest["machine"],
        "settings": latest["settings"],
        "sections": sections,
        "measured": measured,
    }


def load(path: Path) -> dict[str, Any] | None:
    """A results file, or None when there is none.

    Args:
        path: the file.

    Returns:
        Its parsed content, or None when the file does not exist.

    Raises:
        ValueError: the file is not JSON, or lacks "machine", "settings" or "sections".
    """
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a bench results file: {error}") from error
    missing = [key for key in ("machine", "settings", "sections") if key not in data]
    if missing:
        raise ValueError(f"{path} is not a bench results file: it lacks {missing}")
    return dict(data)
