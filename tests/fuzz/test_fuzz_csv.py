"""CSV files: a valid table with random harmless variations, or with one corruption.

A valid table (numeric features, a label column, enough rows per class for the stratified
split) written with quoted numbers, empty lines, a BOM, CRLF line ends, a constant or boolean
column must load with its exact shape and classes and reach the store; a corrupted one (NaN,
infinities, text, mixed types, duplicate or missing headers, one class, a class with too few
rows, huge values, semicolons, a ragged row, a missing label, no header) must be refused before
an MLflow run opens, with a message naming the column, the label or what is wrong.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import tally
from tests.fuzz.conftest import examples
from tests.fuzz.harness import (
    build_until_the_store,
    error_text,
    hydra_configs,
    judge,
    store_is_empty,
    validate,
)
from tests.fuzz.tally import Outcome
from xent_tf.config import Config, CsvDataConfig

LABEL_POOLS = (("cat", "dog", "emu", "fox"), ("0", "1", "2", "3"), ("-1", "1", "7", "9"))
WORD = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


@dataclass
class Table:
    """A CSV table as text cells, before it is written.

    Attributes:
        header: column names.
        rows: cells, one list per row.
        label: the label column's name.
        classes: the distinct labels.
    """

    header: list[str]
    rows: list[list[str]]
    label: str
    classes: tuple[str, ...]

    @property
    def features(self) -> list[int]:
        return [i for i, name in enumerate(self.header) if name != self.label]

    def text(self, sep: str = ",", newline: str = "\n", bom: bool = False) -> str:
        lines = [sep.join(self.header), *(sep.join(row) for row in self.rows)]
        return ("\ufeff" if bom else "") + newline.join(lines) + newline


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """A valid table: 1-5 numeric features, 2-4 classes of 8-14 rows each, shuffled."""
    names = draw(st.lists(WORD, min_size=2, max_size=6, unique=True))
    label, features = f"y_{names[0]}", names[1:]
    pool = draw(st.sampled_from(LABEL_POOLS))
    classes = pool[: draw(st.integers(2, 4))]
    counts = [draw(st.integers(8, 14)) for _ in classes]
    labels = [c for c, n in zip(classes, counts, strict=True) for _ in range(n)]
    labels = draw(st.permutations(labels))
    number = st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.6g}"),
        st.integers(-1000, 1000).map(str),
    )
    columns = [draw(st.lists(number, min_size=len(labels), max_size=len(labels))) for _ in features]
    position = draw(st.integers(0, len(features)))
    header = [*features[:position], label, *features[position:]]
    rows = []
    for i, y in enumerate(labels):
        cells = [column[i] for column in columns]
        rows.append([*cells[:position], y, *cells[position:]])
    return Table(header, rows, label, classes)


@dataclass(frozen=True)
class CsvCase:
    """A file's text and what the contract says of it.

    Attributes:
        kind: the kind of input (a row of the campaign's table).
        text: the file's content.
        label: ``data.label``.
        names: for a bad case, strings of which the refusal must contain one; empty if valid.
        shape: for a valid case, (rows, features, classes) it must load as.
    """

    kind: str
    text: str
    label: str
    names: tuple[str, ...] = ()
    shape: tuple[int, int, int] = (0, 0, 0)


def _valid(draw: st.DrawFn, table: Table) -> CsvCase:
    """Harmless variations: the file still says the same table."""
    variation = draw(st.sampled_from(["plain", "quoted", "blank_lines", "bom", "crlf", "constant"]))
    if variation == "quoted":
        for row in table.rows:
            for i in table.features:
                if draw(st.booleans()):
                    row[i] = f'"{row[i]}"'
    if variation == "constant":
        column = draw(st.sampled_from(table.features))
        value = draw(st.sampled_from(["0", "1.5", "-3", "True"]))
        for row in table.rows:
            row[column] = value
    text = table.text(newline="\r\n" if variation == "crlf" else "\n", bom=variation == "bom")
    if variation == "blank_lines":
        lines = text.split("\n")
        for _ in range(draw(st.integers(1, 3))):
            lines.insert(draw(st.integers(1, len(lines) - 1)), "")
        text = "\n".join(lines)
    shape = (len(table.rows), len(table.features), len(table.classes))
    return CsvCase(f"csv: valid ({variation})", text, table.label, shape=shape)


def _corrupt(draw: st.DrawFn, table: Table, corruption: str) -> CsvCase:
    """One corruption, and the names a refusal must contain."""
    rows, header = table.rows, table.header
    row = draw(st.integers(0, len(rows) - 1))
    column = draw(st.sampled_from(table.features))
    name = header[column]
    kind = f"csv: {corruption}"
    if corruption in ("nan", "inf", "text", "huge"):
        cell = {
            "nan": st.sampled_from(["", "NaN", "nan", "NA", "null", "N/A"]),
            "inf": st.sampled_from(["inf", "-inf", "Infinity", "-Infinity"]),
            "text": WORD.map(lambda w: f"x{w}"),
            "huge": st.sampled_from(["1e39", "-5e300", "3.5e38", "1e308"]),
        }[corruption]
        rows[row][column] = draw(cell)
        return CsvCase(kind, table.text(), table.label, (f"'{name}'",))
    if corruption == "mixed":
        for r in rows:
            if draw(st.booleans()):
                r[column] = draw(WORD.map(lambda w: f"x{w}"))
        rows[row][column] = "xword"
        return CsvCase(kind, table.text(), table.label, (f"'{name}'",))
    if corruption == "duplicate_header":
        other = draw(st.sampled_from([i for i in range(len(header)) if i != column]))
        header[column] = header[other]
        return CsvCase(kind, table.text(), table.label, (f"'{header[other]}'",))
    if corruption == "missing_header":
        header[column] = ""
        return CsvCase(kind, table.text(), table.label, (f"column {column + 1} ",))
    if corruption == "no_header":
        return CsvCase(kind, table.text().split("\n", 1)[1], table.label, ("data.label=",))
    if corruption == "one_class":
        for r in rows:
            r[header.index(table.label)] = table.classes[0]
        return CsvCase(kind, table.text(), table.label, ("one class",))
    if corruption == "small_class":
        y = header.index(table.label)
        keep = draw(st.integers(1, 2))
        victim = draw(st.sampled_from(table.classes))
        mine = [r for r in rows if r[y] == victim]
        table.rows = [r for r in rows if r[y] != victim] + mine[:keep]
        return CsvCase(kind, table.text(), table.label, (f"'{victim}': {keep} rows",))
    if corruption == "semicolons":
        return CsvCase(kind, table.text(sep=";"), table.label, ("data.label=",))
    if corruption == "label_missing":
        rows[row][header.index(table.label)] = ""
        return CsvCase(kind, table.text(), table.label, ("data.label=",))
    if corruption == "ragged":
        rows[row].append("1")
        return CsvCase(kind, table.text(), table.label, ("not a readable CSV",))
    if corruption == "empty":
        text = draw(st.sampled_from(["", "\n", table.text().split("\n", 1)[0] + "\n"]))
        return CsvCase(kind, text, table.label, ("not a readable CSV", "no data rows"))
    raise KeyError(corruption)


CORRUPTIONS = (
    "nan",
    "inf",
    "text",
    "mixed",
    "huge",
    "duplicate_header",
    "missing_header",
    "no_header",
    "one_class",
    "small_class",
    "semicolons",
    "label_missing",
    "ragged",
    "empty",
)


@st.composite
def csv_cases(draw: st.DrawFn, corruption: str) -> CsvCase:
    table = draw(tables())
    return _valid(draw, table) if corruption == "valid" else _corrupt(draw, table, corruption)


# Examples per kind of file (the ci profile's; make fuzz runs 20 times as many).
CSV_EXAMPLES = {"valid": 12, **dict.fromkeys(CORRUPTIONS, 3)}


@pytest.fixture(scope="module")
def base_config() -> Iterator[Config]:
    """A tiny run on a CSV, composed once; each case swaps in its own file."""
    with hydra_configs() as compose:
        overrides = ["data=csv", "data.path=x.csv", "data.label=y", "loss=ce", "+debug=quick"]
        attempt = validate(compose, [*overrides, "trainer.verbose=false"])
    assert attempt.config is not None, error_text(attempt.error)  # type: ignore[arg-type]
    yield attempt.config


@pytest.mark.parametrize("corruption", list(CSV_EXAMPLES))
def test_a_corrupted_csv_is_refused_naming_the_problem_and_a_valid_one_loads(
    corruption: str, base_config: Config, tmp_path: Path
) -> None:
    counter = itertools.count()
    db = tmp_path / "never.db"

    @examples(CSV_EXAMPLES[corruption])
    @given(case=csv_cases(corruption))
    def check(case: CsvCase) -> None:
        path = tmp_path / f"table{next(counter)}.csv"
        path.write_bytes(case.text.encode("utf-8"))
        data = CsvDataConfig(path=str(path), label=case.label, name="fuzzed")
        tracking = dataclasses.replace(base_config.tracking, uri=f"sqlite:///{db}")
        config = dataclasses.replace(base_config, data=data, tracking=tracking)
        attempt = build_until_the_store(config, tmp_path / "out")
        if case.names:
            outcome = judge(case.names, attempt)
            detail = f"{case.text[:300]!r} (names {case.names}): {attempt.error}"
            tally.check(case.kind, outcome, detail)
        else:
            from xent_tf.train.data import make_dataset

            outcome = Outcome.FINISHED if attempt.reached_store else Outcome.REJECTED_VALID
            tally.check(case.kind, outcome, f"{case.text[:300]!r}: {attempt.error}")
            loaded = make_dataset(data)
            rows = sum(len(split) for split in loaded.splits().values())
            assert (rows, loaded.n_features, loaded.n_classes) == case.shape
        assert store_is_empty(db)

    check()
