"""Synthetic classification data from scikit-learn and the reference split (CLAIMS.md C16)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from xent_tf.config import DataConfig


@dataclass(frozen=True)
class Split:
    """Features (float32) and integer class labels of one part of a dataset."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test parts of one generated dataset."""

    train: Split
    val: Split
    test: Split
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.train.x.shape[1])


def make_dataset(config: DataConfig) -> Dataset:
    """Generate a dataset with ``make_classification`` and split it as in C16.

    The last ``n_test`` rows are the test set; the rest are split into train and validation with
    ``train_test_split(test_size=val_fraction, random_state=split_seed)``.

    Args:
        config: what to generate and how to split it.

    Returns:
        The three parts, features as float32 and labels as int32.
    """
    x, y = make_classification(
        n_samples=config.n_samples,
        n_features=config.n_features,
        n_informative=config.n_informative,
        n_redundant=config.n_redundant,
        n_classes=config.n_classes,
        n_clusters_per_class=config.n_clusters_per_class,
        random_state=config.random_state,
    )
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
        n_classes=config.n_classes,
    )
