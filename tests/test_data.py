"""Every data source: the reference split of CLAIMS.md C16, bundled sets, CSV files, scaling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from sklearn.datasets import make_classification

from tests.conftest import CONFIG_DIR, compose_config
from xent_tf.config import (
    EVIDENCE_DATASETS,
    BundledDataConfig,
    CsvDataConfig,
    MakeCirclesConfig,
    MakeClassificationConfig,
    MakeMoonsConfig,
    to_config,
)
from xent_tf.train.data import Split, majority_share, make_dataset


def test_reference_split_sizes_and_test_rows_are_the_last_thousand() -> None:
    data = make_dataset(MakeClassificationConfig())
    assert (len(data.train), len(data.val), len(data.test)) == (6300, 2700, 1000)
    x, y = make_classification(n_samples=10000, n_informative=10, random_state=2022)
    np.testing.assert_array_equal(data.test.x, x[9000:].astype(np.float32))
    np.testing.assert_array_equal(data.test.y, y[9000:])
    # train and val partition the first 9,000 rows exactly
    together = np.concatenate([data.train.x, data.val.x])
    assert {tuple(r) for r in together} == {tuple(r) for r in x[:9000].astype(np.float32)}
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int32
    assert data.n_features == 20 and data.n_classes == 2


def test_dataset_is_deterministic_and_multiclass_has_five_classes() -> None:
    config = MakeClassificationConfig(name="multiclass", n_classes=5)
    first, second = make_dataset(config), make_dataset(config)
    np.testing.assert_array_equal(first.train.x, second.train.x)
    assert set(np.unique(first.train.y)) == {0, 1, 2, 3, 4}


# rows, features, classes, (train, val, test): a stratified 20% test set (rounded up), then 30%
# of the rest for validation (rounded up), as sklearn's train_test_split counts them.
BUNDLED = {
    "breast_cancer": (569, 30, 2, (318, 137, 114)),
    "digits": (1797, 64, 10, (1005, 432, 360)),
    "wine": (178, 13, 3, (99, 43, 36)),
    "iris": (150, 4, 3, (84, 36, 30)),
}


def test_multiclass_preset_split_sizes_and_shapes() -> None:
    data = make_dataset(MakeClassificationConfig(name="multiclass", n_classes=5))
    assert [s.x.shape for s in data.splits().values()] == [(6300, 20), (2700, 20), (1000, 20)]
    assert data.scaling is None  # C16's protocol: make_classification rows are not rescaled


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_shapes_split_sizes_and_classes(name: str) -> None:
    n_rows, n_features, n_classes, sizes = BUNDLED[name]
    data = make_dataset(BundledDataConfig(name=name))
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    assert sum(sizes) == n_rows
    assert data.input_shape == (n_features,) and data.n_classes == n_classes
    # The class count the config states (losses are checked against it at compose time).
    assert BundledDataConfig(name=name).known_n_classes == n_classes
    assert [s.x.shape for s in data.splits().values()] == [(k, n_features) for k in sizes]
    assert data.source == f"sklearn.datasets.load_{name}" and data.name == name
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int32
    # Stratified: every class in every part, in the whole set's proportions (+-1 row).
    _, y_all = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    share = np.bincount(y_all) / n_rows
    for split in data.splits().values():
        assert np.abs(np.bincount(split.y, minlength=n_classes) - share * len(split)).max() <= 1


def test_iris_file_sorted_by_class_still_gets_every_class_in_every_part() -> None:
    data = make_dataset(BundledDataConfig(name="iris"))
    assert [np.bincount(s.y).tolist() for s in data.splits().values()] == [
        [28, 28, 28],
        [12, 12, 12],
        [10, 10, 10],
    ]
    assert data.class_names == ("setosa", "versicolor", "virginica")


def test_scaling_uses_the_training_rows_only() -> None:
    raw = make_dataset(BundledDataConfig(name="wine", standardize=False))
    scaled = make_dataset(BundledDataConfig(name="wine"))
    # The same rows in the same parts: the split does not depend on the scaling.
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(raw.splits()[part].y, scaled.splits()[part].y)
    mean = raw.train.x.astype(np.float64).mean(axis=0)
    std = raw.train.x.astype(np.float64).std(axis=0)
    np.testing.assert_allclose(scaled.test.x, (raw.test.x - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaled.train.x.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled.train.x.std(axis=0), 1.0, atol=1e-5)
    # Statistics fitted on all rows (test rows included) give other test features: this test
    # fails if the scaler sees the test rows.
    every_row = np.concatenate([raw.train.x, raw.val.x, raw.test.x]).astype(np.float64)
    leaky = (raw.test.x - every_row.mean(axis=0)) / every_row.std(axis=0)
    assert np.abs(scaled.test.x - leaky).max() > 0.01


def test_a_constant_column_keeps_scale_one() -> None:
    data = make_dataset(BundledDataConfig(name="digits"))
    assert data.scaling is not None
    assert data.scaling.scale[0] == 1.0 and data.scaling.mean[0] == 0.0  # pixel 0 is always 0
    assert np.all(data.train.x[:, 0] == 0.0)


def _write_csv(path: Path, n_rows: int = 60, n_classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    labels = np.array(["cat", "dog", "emu", "fox"][:n_classes])[np.arange(n_rows) % n_classes]
    columns = {
        "height": rng.normal(100.0, 15.0, n_rows).round(3),
        "weight": rng.normal(-5.0, 2.0, n_rows).round(3),
        "kind": labels,
        "age": np.arange(n_rows) ** 2,  # integers, and a test row far from the training mean
    }
    lines = [",".join(columns)] + [
        ",".join(str(columns[c][i]) for c in columns) for i in range(n_rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_shapes_split_sizes_and_label_encoding(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "animals.csv")
    data = make_dataset(CsvDataConfig(path=str(path), label="kind", name="animals"))
    assert (len(data.train), len(data.val), len(data.test)) == (33, 15, 12)
    assert data.feature_names == ("height", "weight", "age")  # the label column is dropped
    assert data.class_names == ("cat", "dog", "emu") and data.n_classes == 3
    assert data.input_shape == (3,) and data.source == str(path) and data.name == "animals"
    assert [np.bincount(s.y).tolist() for s in data.splits().values()] == [
        [11, 11, 11],
        [5, 5, 5],
        [4, 4, 4],
    ]
    raw = make_dataset(CsvDataConfig(path=str(path), label="kind", standardize=False))
    table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 3))
    # every raw row is in exactly one part, its label coded by the sorted names
    together = np.concatenate([s.x for s in raw.splits().values()])
    assert sorted(map(tuple, together.tolist())) == sorted(
        map(tuple, table.astype(np.float32).tolist())
    )
    np.testing.assert_allclose(data.train.x.mean(axis=0), 0.0, atol=1e-6)
    assert data.digest() != raw.digest() and len(data.digest()) == 16


@pytest.mark.parametrize(
    ("edit", "label", "message"),
    [
        ("missing", "kind", r"data.path='.*nope.csv': no such file"),
        ("", "species", r"data.label='species' is not a column of .*\['height', 'weight', 'kind'"),
        ("nan", "kind", r"has NaN \(empty\) feature values: \{'weight': 1\}"),
        ("text", "kind", r"non-numeric feature column\(s\) \['height'\]"),
        ("one_class", "kind", r"has one class \(cat\) in 60 rows; classification needs at least 2"),
        ("few_rows", "kind", r"too few rows for the split: 8 rows, 3 classes"),
    ],
)
def test_bad_csv_files_are_refused_with_a_message(
    tmp_path: Path, edit: str, label: str, message: str
) -> None:
    path = _write_csv(tmp_path / "table.csv", n_rows=8 if edit == "few_rows" else 60)
    lines = path.read_text().splitlines()
    if edit == "missing":
        path = tmp_path / "nope.csv"
    elif edit == "nan":
        lines[5] = lines[5].split(",", 2)[0] + ",," + lines[5].split(",", 2)[2]
    elif edit == "text":
        lines[3] = "tall," + lines[3].split(",", 1)[1]
    elif edit == "one_class":
        lines = [lines[0]] + [
            line.replace("dog", "cat").replace("emu", "cat") for line in lines[1:]
        ]
    if edit != "missing":
        path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        make_dataset(CsvDataConfig(path=str(path), label=label))


def test_majority_share_is_the_accuracy_of_guessing_the_most_common_class() -> None:
    assert majority_share(np.array([0, 1, 1, 2, 1])) == 0.6
    assert majority_share(np.array([3, 3])) == 1.0
    assert np.isnan(majority_share(np.array([], dtype=np.int64)))
    # breast_cancer's validation rows: 86 benign of 137 (a stratified split keeps 357/569).
    data = make_dataset(BundledDataConfig(name="breast_cancer"))
    assert majority_share(data.val.y) == pytest.approx(86 / 137)


# Found by the fuzz campaign (tests/fuzz, issue 29): pandas read these files without a word.
@pytest.mark.parametrize(
    ("header", "message"),
    [
        # a repeated label column became a feature holding the labels ("kind.1")
        ("height,weight,kind,kind", r"has repeated column name\(s\) \['kind'\]"),
        # an unnamed column (a pandas index) became the feature "Unnamed: 0"
        (",weight,kind,age", r"column 1 of 4 has no header name \(columns without one: \[1\]\)"),
    ],
)
def test_repeated_or_empty_header_names_are_refused(
    tmp_path: Path, header: str, message: str
) -> None:
    path = _write_csv(tmp_path / "table.csv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header, *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=message):
        make_dataset(CsvDataConfig(path=str(path), label="kind"))


def test_a_file_without_a_header_whose_first_row_repeats_a_value_says_so(tmp_path: Path) -> None:
    # Found by make fuzz (XENT_FUZZ_SCALE=5): the first data row, read as the header, repeated
    # 0.333333, and the message spoke only of repeated column names, not of the missing header.
    path = tmp_path / "table.csv"
    path.write_text("0.333333,9,711039,0.333333\n-93,9,-2.5,-93\n845,1,-152,845\n")
    with pytest.raises(ValueError) as refused:
        make_dataset(CsvDataConfig(path=str(path), label="kind"))
    message = str(refused.value)
    assert "has repeated column name(s) ['0.333333']" in message
    assert "those names are numbers: if the file has no header line" in message
    assert "data.label=" in message
    # The same with a text label in the first row (found next: 'cat,0,0').
    path.write_text("cat,0,0\ncat,0,0\ndog,0,0\n")
    with pytest.raises(ValueError, match=r"\['0'\]; .*those names are numbers"):
        make_dataset(CsvDataConfig(path=str(path), label="y"))
    # A header of names keeps the plain message.
    named = _write_csv(tmp_path / "named.csv")
    lines = named.read_text().splitlines()
    named.write_text("\n".join(["height,weight,kind,kind", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"\['kind'\]; every column needs a name of its own$"):
        make_dataset(CsvDataConfig(path=str(named), label="kind"))


def test_a_row_of_another_width_is_refused_naming_the_line(tmp_path: Path) -> None:
    """A first row with one field more made pandas take the first column as the index."""
    path = _write_csv(tmp_path / "table.csv")
    lines = path.read_text().splitlines()
    lines[1] += ",7"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 2 has 5 fields, the header 4"):
        make_dataset(CsvDataConfig(path=str(path), label="kind"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("inf", r"infinite feature values in column\(s\) \['weight'\]"),
        # finite in the file, infinite as float32: was reported as "infinite feature values"
        ("1e39", r"beyond float32's range \(\|x\| > 3.403e\+38\) in column\(s\) \['weight'\]"),
    ],
)
def test_infinite_and_too_large_values_name_their_column(
    tmp_path: Path, value: str, message: str
) -> None:
    path = _write_csv(tmp_path / "table.csv")
    lines = path.read_text().splitlines()
    cells = lines[4].split(",")
    cells[1] = value
    lines[4] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        make_dataset(CsvDataConfig(path=str(path), label="kind"))


def test_a_header_without_rows_is_refused_as_such(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("height,weight,kind\n")  # was "has one class (none) in 0 rows"
    with pytest.raises(ValueError, match=r"has a header but no data rows"):
        make_dataset(CsvDataConfig(path=str(path), label="kind"))


def test_a_semicolon_separated_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "table.csv")
    path.write_text(path.read_text().replace(",", ";"))
    with pytest.raises(ValueError, match=r"it looks separated by ';': the file must be comma"):
        make_dataset(CsvDataConfig(path=str(path), label="kind"))


# Every preset states its class count, its rows per class and its majority share in a comment
# line ("# Classes: 2; rows per class: 5009 / 4991 of 10000 (majority share 0.5009)."): the
# generated data must have exactly those counts.
_STATED = re.compile(
    r"^# Classes: (\d+); rows per class: ([\d / ]+) of (\d+) \(majority share ([\d.]+)\)\.$",
    re.MULTILINE,
)
_PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "data").glob("*.yaml") if p.stem != "csv")


@pytest.mark.parametrize("name", _PRESETS)
def test_every_preset_states_its_exact_class_counts_and_majority_share(name: str) -> None:
    stated = _STATED.findall((Path(CONFIG_DIR) / "data" / f"{name}.yaml").read_text())
    assert len(stated) == 1, f"configs/data/{name}.yaml states no (or several) class counts"
    n_classes, per_class, n_rows, share = stated[0]
    config = to_config(compose_config([f"data={name}", "loss=ce"]))
    data = make_dataset(config.data)
    labels = np.concatenate([data.train.y, data.val.y, data.test.y])
    counts = np.bincount(labels, minlength=data.n_classes).tolist()
    assert data.n_classes == int(n_classes) == config.data.known_n_classes
    assert counts == [int(c) for c in per_class.split(" / ")]
    assert len(labels) == int(n_rows)
    assert f"{majority_share(labels):.4f}" == share


def test_the_evidence_data_sets_are_presets_two_class_generators_included() -> None:
    assert set(EVIDENCE_DATASETS) <= set(_PRESETS) and len(EVIDENCE_DATASETS) == 8
    moons = make_dataset(MakeMoonsConfig(noise=0.3))
    x, y = sklearn.datasets.make_moons(n_samples=2000, noise=0.3, random_state=2022)
    # the last 400 generated rows are the test set (standardised with the training rows)
    assert (len(moons.train), len(moons.val), len(moons.test)) == (1120, 480, 400)
    np.testing.assert_array_equal(moons.test.y, y[1600:])
    assert moons.scaling is not None
    np.testing.assert_allclose(
        moons.scaling.apply(Split(x[1600:], y[1600:])).x, moons.test.x, atol=1e-6
    )
    circles = make_dataset(MakeCirclesConfig(noise=0.0, factor=0.5, standardize=False))
    radius = np.linalg.norm(circles.train.x, axis=1)
    # no noise: the outer ring (class 0) has radius 1, the inner one (class 1) 0.5
    np.testing.assert_allclose(radius, np.where(circles.train.y == 0, 1.0, 0.5), atol=1e-6)


def test_label_noise_and_class_weights_reach_make_classification() -> None:
    imbalanced = make_dataset(MakeClassificationConfig(name="imbalanced", weights=[0.9]))
    x, y = make_classification(
        n_samples=10000, n_informative=10, weights=[0.9], flip_y=0.01, random_state=2022
    )
    np.testing.assert_array_equal(imbalanced.test.y, y[9000:])
    np.testing.assert_array_equal(imbalanced.test.x, x[9000:].astype(np.float32))
    noisy = make_dataset(MakeClassificationConfig(name="label_noise", flip_y=0.2))
    _, y = make_classification(n_samples=10000, n_informative=10, flip_y=0.2, random_state=2022)
    np.testing.assert_array_equal(noisy.test.y, y[9000:])
    with pytest.raises(ValueError, match=r"data.weights=\[0.9, 0.3\] must give n_classes=2"):
        MakeClassificationConfig(weights=[0.9, 0.3])
    with pytest.raises(ValueError, match=r"data.flip_y=1.5 must be between 0 and 1"):
        MakeClassificationConfig(flip_y=1.5)
