"""The reference data and split of CLAIMS.md C16."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_classification

from xent_tf.config import DataConfig
from xent_tf.data import make_dataset


def test_reference_split_sizes_and_test_rows_are_the_last_thousand() -> None:
    data = make_dataset(DataConfig())
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
    config = DataConfig(name="multiclass", n_classes=5)
    first, second = make_dataset(config), make_dataset(config)
    np.testing.assert_array_equal(first.train.x, second.train.x)
    assert set(np.unique(first.train.y)) == {0, 1, 2, 3, 4}
