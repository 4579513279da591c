"""Helpers every benchmark section shares: the repository root, a composed config, medians
and paired ratios, a verdict against a target, a plain-text table.

Kept apart from ``bench`` (the sections and ``make bench``'s entry point) so that ``replicas``
and ``reproduce``, which ``bench`` runs, import them without importing ``bench``.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xent_tf.config import Config


REPO_ROOT = Path(__file__).resolve().parent.parent

# A section's table: its column titles and its rows of cells (the console prints it with
# format_table, docs/PERFORMANCE.md as markdown: benchmarks/performance_doc.py).
Table = tuple[list[str], list[list[str]]]


def collect_garbage() -> None:
    """Free what earlier measurements left before timing the next one.

    A trained model or trainer sits in reference cycles (its traced functions hold it), so it
    is freed by the cyclic collector whenever that next runs: freeing one took 0.3-0.4 s here,
    and it landed inside whichever measurement came next. Every timed section starts after a
    full collection instead.
    """
    gc.collect()


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence.

    Args:
        values: the measurements.

    Returns:
        Their median.

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Ratios of measurements taken in pairs (repeat i of one against repeat i of the other).

    Interleaved pairs ran close together in time, so the ratio of a pair cancels most of the load
    drift of a shared machine.

    Args:
        numerators: e.g. the suite's times, one per repeat.
        denominators: e.g. the yardstick's times, same length.

    Returns:
        ``numerators[i] / denominators[i]`` for every i.

    Raises:
        ValueError: the lengths differ, there are no pairs, or a denominator is not positive.
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(
            f"need the same non-zero number of repeats, got {len(numerators)} and "
            f"{len(denominators)}"
        )
    if min(denominators) <= 0:
        raise ValueError(f"denominators must be positive, got {list(denominators)}")
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of the paired ratios (see ``paired_ratios``).

    Args:
        numerators: one measurement per repeat.
        denominators: the paired measurements.

    Returns:
        median(numerators[i] / denominators[i]).
    """
    return median(paired_ratios(numerators, denominators))


def verdict(value: float | None, limit: float | None, void: bool = False) -> str:
    """How a measurement stands against an upper-bound target.

    Args:
        value: the measurement (None when it could not be made).
        limit: the target's upper bound, or None when the row has no target.
        void: the comparison does not count (e.g. the yardstick learned something else).

    Returns:
        "VOID", "-" (no target or no value), "met" or "MISSED".
    """
    if void:
        return "VOID"
    if limit is None or value is None:
        return "-"
    return "met" if value <= limit else "MISSED"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned.

    Args:
        headers: column titles.
        rows: cells as strings, one sequence per row, each as long as ``headers``.

    Returns:
        The table, one line per row, under a header and a rule.

    Raises:
        ValueError: a row's length differs from the header's.
    """
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {list(row)} has {len(row)} cells; expected {len(headers)}")
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def compose_config(overrides: Sequence[str]) -> Config:
    """The run config ``experiments/run.py`` would get with these overrides.

    Args:
        overrides: Hydra overrides, e.g. ``["tracking=off"]``.

    Returns:
        The validated config.
    """
    from hydra import compose, initialize_config_dir

    from xent_tf.config import to_config

    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))
