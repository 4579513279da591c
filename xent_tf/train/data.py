"""Data sources (make_classification, make_moons, make_circles, scikit-learn's bundled sets, CSV
files) and their splits.

Every source gives a table of features and integer class labels 0..k-1; the split protocol and
the scaling are shared: held-out test rows first, then train/validation; features standardised
with statistics of the training rows only (``make_classification`` keeps C16's unscaled
protocol: its ``standardize`` defaults to false).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import singledispatch
from pathlib import Path

import numpy as np
import sklearn.datasets
from sklearn.datasets import make_circles, make_classification, make_moons
from sklearn.model_selection import train_test_split

from xent_tf.config import (
    BundledDataConfig,
    CsvDataConfig,
    DataConfig,
    MakeCirclesConfig,
    MakeClassificationConfig,
    MakeMoonsConfig,
)


@dataclass(frozen=True)
class Split:
    """Features (float32) and integer class labels of one part of a dataset."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def majority_share(labels: np.ndarray) -> float:
    """The share of the most common class: the accuracy of always guessing it.

    Args:
        labels: integer class labels.

    Returns:
        A number in (0, 1]; nan for no labels.
    """
    if len(labels) == 0:
        return float("nan")
    return float(np.bincount(labels.astype(np.int64)).max() / len(labels))


def prior_loss(labels: np.ndarray) -> float:
    """The cross-entropy of always predicting the labels' class frequencies: their entropy in
    nats. A model whose loss ends at or above it learned nothing (C13's "diverged").

    Args:
        labels: integer class labels.

    Returns:
        -sum(p log p) over the classes present; nan without labels.
    """
    if len(labels) == 0:
        return float("nan")
    shares = np.bincount(labels.astype(np.int64)) / len(labels)
    shares = shares[shares > 0]
    return float(-np.sum(shares * np.log(shares)))


@dataclass(frozen=True)
class Scaling:
    """Per-feature standardisation fitted on the training rows: ``(x - mean) / scale``."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x_train: np.ndarray) -> Scaling:
        """Mean and standard deviation of the training rows (a constant column keeps scale 1)."""
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = x_train.std(axis=0, dtype=np.float64)
        return cls(mean=mean, scale=np.where(std > 0, std, 1.0))

    def apply(self, split: Split) -> Split:
        x = ((split.x - self.mean) / self.scale).astype(np.float32)
        return Split(x, split.y)


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test parts of one data set, and what identifies it.

    Attributes:
        train: training rows.
        val: validation rows.
        test: held-out test rows.
        n_classes: number of classes; labels are 0..n_classes-1.
        name: the data set's name (``data.name``).
        source: where the rows came from ("make_classification", "sklearn.datasets.load_digits",
            or the CSV file's path).
        class_names: the original label of each class, in code order.
        feature_names: one name per feature column.
        scaling: the standardisation applied (fitted on the training rows), or None.
    """

    train: Split
    val: Split
    test: Split
    n_classes: int
    name: str
    source: str
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    scaling: Scaling | None = field(default=None, compare=False)

    @property
    def n_features(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one row of features, as a model's input takes it."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    def splits(self) -> dict[str, Split]:
        """The parts by name: train, val, test (e.g. for recording each as a dataset input)."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def digest(self) -> str:
        """A short content hash of every split's features and labels, in split order.

        Two data sets with the same digest hold the same rows in the same parts (after scaling).
        """
        sha = hashlib.sha256()
        for part, split in self.splits().items():
            sha.update(part.encode())
            sha.update(np.ascontiguousarray(split.x).tobytes())
            sha.update(np.ascontiguousarray(split.y).tobytes())
        return sha.hexdigest()[:16]


def make_dataset(config: DataConfig) -> Dataset:
    """Load or generate the data set ``config`` names, split it and scale it.

    Args:
        config: a data source's config (``make_classification``, ``sklearn`` or ``csv``).

    Returns:
        The three parts, features as float32 and labels as int32.

    Raises:
        ValueError: the source cannot give a usable data set (a CSV that is missing, has no such
            label column, NaN or non-numeric features, one class, or too few rows); the message
            names the value and what is allowed.
    """
    dataset = _load(config)
    if not config.standardize:
        return dataset
    scaling = Scaling.fit(dataset.train.x)
    return Dataset(
        train=scaling.apply(dataset.train),
        val=scaling.apply(dataset.val),
        test=scaling.apply(dataset.test),
        n_classes=dataset.n_classes,
        name=dataset.name,
        source=dataset.source,
        class_names=dataset.class_names,
        feature_names=dataset.feature_names,
        scaling=scaling,
    )


@singledispatch
def _load(config: DataConfig) -> Dataset:
    """One loader per data source, registered below (the registry is this function's)."""
    raise ValueError(f"data.source={config.source!r} has no loader in xent_tf.train.data")


@_load.register
def _make_classification(config: MakeClassificationConfig) -> Dataset:
    """C16's data (``_last_rows_test_split``), with label noise and class weights."""
    x, y = make_classification(
        n_samples=config.n_samples,
        n_features=config.n_features,
        n_informative=config.n_informative,
        n_redundant=config.n_redundant,
        n_classes=config.n_classes,
        n_clusters_per_class=config.n_clusters_per_class,
        weights=config.weights,
        flip_y=config.flip_y,
        random_state=config.random_state,
    )
    return _last_rows_test_split(x, y, config.n_classes, config, "make_classification")


@_load.register
def _make_moons(config: MakeMoonsConfig) -> Dataset:
    """Two interleaving half circles; split as ``make_classification``'s rows are."""
    x, y = make_moons(
        n_samples=config.n_samples, noise=config.noise, random_state=config.random_state
    )
    return _last_rows_test_split(x, y, 2, config, "make_moons")


@_load.register
def _make_circles(config: MakeCirclesConfig) -> Dataset:
    """A circle inside another; split as ``make_classification``'s rows are."""
    x, y = make_circles(
        n_samples=config.n_samples,
        noise=config.noise,
        factor=config.factor,
        random_state=config.random_state,
    )
    return _last_rows_test_split(x, y, 2, config, "make_circles")


def _last_rows_test_split(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    config: MakeClassificationConfig | MakeMoonsConfig | MakeCirclesConfig,
    source: str,
) -> Dataset:
    """C16's protocol for generated rows: the last ``n_test`` rows are the test set; the rest
    are split into train and validation with ``train_test_split(test_size=val_fraction,
    random_state=split_seed)``."""
    x = x.astype(np.float32)
    y = y.astype(np.int32)
    n_fit = config.n_samples - config.n_test
    x_train, x_val, y_train, y_val = train_test_split(
        x[:n_fit], y[:n_fit], test_size=config.val_fraction, random_state=config.split_seed
    )
    return Dataset(
        train=Split(x_train, y_train),
        val=Split(x_val, y_val),
        test=Split(x[n_fit:], y[n_fit:]),
        n_classes=n_classes,
        name=config.name,
        source=source,
        class_names=tuple(str(c) for c in range(n_classes)),
        feature_names=tuple(f"x{i}" for i in range(x.shape[1])),
    )


@_load.register
def _bundled(config: BundledDataConfig) -> Dataset:
    loader: Callable[..., object] = getattr(sklearn.datasets, f"load_{config.name}")
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float32)  # type: ignore[attr-defined]
    codes = np.asarray(bunch.target, dtype=np.int32)  # type: ignore[attr-defined]
    class_names = tuple(str(n) for n in bunch.target_names)  # type: ignore[attr-defined]
    feature_names = tuple(
        str(n) for n in getattr(bunch, "feature_names", [f"x{i}" for i in range(x.shape[1])])
    )
    return _held_out_split(
        x, codes, class_names, feature_names, config, source=f"sklearn.datasets.load_{config.name}"
    )


@_load.register
def _csv(config: CsvDataConfig) -> Dataset:
    import pandas as pd

    path = Path(config.path).expanduser()
    if not path.is_file():
        raise ValueError(
            f"data.path={config.path!r}: no such file (resolved to {path.resolve()}); give the "
            "path of a CSV file with a header row"
        )
    try:
        _check_layout(path, config.path)
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(
            f"data.path={config.path!r} is not a readable CSV file: {error}"
        ) from error
    if config.label not in table.columns:
        columns = [str(c) for c in table.columns]
        hint = (
            "; it looks separated by ';': the file must be comma-separated"
            if len(columns) == 1 and ";" in columns[0]
            else ""
        )
        raise ValueError(
            f"data.label={config.label!r} is not a column of {config.path!r}; its columns are "
            f"{columns}{hint}"
        )
    if len(table) == 0:
        raise ValueError(f"data.path={config.path!r} has a header but no data rows")
    labels = table[config.label]
    if labels.isna().any():
        raise ValueError(
            f"data.label={config.label!r} has {int(labels.isna().sum())} empty value(s) in "
            f"{config.path!r}; every row needs a label"
        )
    features = table.drop(columns=[config.label])
    if features.shape[1] == 0:
        raise ValueError(f"{config.path!r} has no feature columns besides data.label")
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise ValueError(
            f"{config.path!r} has non-numeric feature column(s) {non_numeric}; every column "
            f"except data.label={config.label!r} must hold numbers (encode categories first)"
        )
    with_nan = {str(c): int(n) for c, n in features.isna().sum().items() if n}
    if with_nan:
        raise ValueError(
            f"{config.path!r} has NaN (empty) feature values: {with_nan} (column: rows); "
            "fill or drop them first"
        )
    wide = features.to_numpy(dtype=np.float64)
    infinite = [
        str(c)
        for c, finite in zip(features.columns, np.isfinite(wide).all(axis=0), strict=True)
        if not finite
    ]
    if infinite:
        raise ValueError(
            f"{config.path!r} has infinite feature values in column(s) {infinite}; every value "
            "must be finite"
        )
    # Features are float32 (the model's dtype): a larger magnitude would become infinite.
    limit = float(np.finfo(np.float32).max)
    too_large = [
        str(c)
        for c, peak in zip(features.columns, np.abs(wide).max(axis=0), strict=True)
        if peak > limit
    ]
    if too_large:
        raise ValueError(
            f"{config.path!r} has feature values beyond float32's range (|x| > {limit:.4g}) in "
            f"column(s) {too_large}; rescale them first"
        )
    x = wide.astype(np.float32)
    values, codes = np.unique(labels.to_numpy(), return_inverse=True)
    class_names = tuple(str(v) for v in values)
    return _held_out_split(
        x,
        codes.astype(np.int32),
        class_names,
        tuple(str(c) for c in features.columns),
        config,
        source=str(path),
    )


def _check_layout(path: Path, shown: str) -> None:
    """Refuse a header with an empty or repeated column name, or a row of another width.

    pandas would name an empty column ``Unnamed: <i>`` and a repeat ``<name>.1`` and go on (a
    pandas index written by ``to_csv`` would become a feature, a repeated label column a
    feature holding the labels); a first row with one field more than the header would become
    the index, and a shorter row would be padded with NaN.

    Args:
        path: the file.
        shown: the path as the user gave it (``data.path``), for messages.

    Raises:
        ValueError: the message names the column(s) or the line.
    """
    import csv

    with path.open(newline="", encoding="utf-8-sig") as handle:
        lines = csv.reader(handle)
        header = next(lines, None)
        if not header:
            return  # an empty file: pandas says so
        names = [name.strip() for name in header]
        unnamed = [i + 1 for i, name in enumerate(names) if not name]
        if unnamed:
            raise ValueError(
                f"data.path={shown!r}: column {unnamed[0]} of {len(names)} has no header name "
                f"(columns without one: {unnamed}); name every column (a pandas index written "
                "by to_csv has none: save with index=False)"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            # A file without a header line: its first row is read as the names, and a value
            # repeated in it is a repeated "name".
            no_header = (
                "; those names are numbers: if the file has no header line, add one naming "
                "every column (data.label= names the label column)"
                if all(_is_number(name) for name in repeated)
                else ""
            )
            raise ValueError(
                f"data.path={shown!r} has repeated column name(s) {repeated}; every column "
                f"needs a name of its own{no_header}"
            )
        for row in lines:
            if row and len(row) != len(names):
                raise ValueError(
                    f"data.path={shown!r} is not a readable CSV file: line {lines.line_num} has "
                    f"{len(row)} fields, the header {len(names)}"
                )


def _is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (``float`` accepts it)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _held_out_split(
    x: np.ndarray,
    codes: np.ndarray,
    class_names: tuple[str, ...],
    feature_names: tuple[str, ...],
    config: BundledDataConfig | CsvDataConfig,
    source: str,
) -> Dataset:
    """A stratified random ``test_fraction`` of the rows, then ``val_fraction`` of the rest.

    Both draws use ``split_seed`` and keep every class's share (a file sorted by class, like
    iris, still gets every class in every part).

    Raises:
        ValueError: fewer than 2 classes, or a class or part too small for the split.
    """
    where = f"data.name={config.name!r} ({source})"
    n_classes = len(class_names)
    if n_classes < 2:
        raise ValueError(
            f"{where} has one class ({class_names[0] if class_names else 'none'!s}) in "
            f"{len(codes)} rows; classification needs at least 2"
        )
    counts = np.bincount(codes, minlength=n_classes)
    n_rows = len(codes)
    n_test = int(np.ceil(config.test_fraction * n_rows))  # train_test_split rounds the test up
    n_val = int(np.ceil(config.val_fraction * (n_rows - n_test)))
    n_train = n_rows - n_test - n_val
    if counts.min() < 3 or min(n_train, n_val, n_test) < n_classes:
        smallest = class_names[int(np.argmin(counts))]
        raise ValueError(
            f"{where} has too few rows for the split: {n_rows} rows, {n_classes} classes "
            f"(smallest, {smallest!r}: {counts.min()} rows) give {n_train} train / {n_val} "
            f"validation / {n_test} test rows; each part needs at least one row per class "
            "(so at least 3 rows per class and n_classes rows per part)"
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, codes, test_size=config.test_fraction, random_state=config.split_seed, stratify=codes
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=config.val_fraction,
        random_state=config.split_seed,
        stratify=y_rest,
    )
    return Dataset(
        train=Split(x_train, y_train),
        val=Split(x_val, y_val),
        test=Split(x_test, y_test),
        n_classes=n_classes,
        name=config.name,
        source=source,
        class_names=class_names,
        feature_names=feature_names,
    )
