"""Figures as PNG files. The only module that imports matplotlib (Agg backend, no screen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save_loss_curve(
    train_loss: Sequence[float], val_loss: Sequence[float], path: Path, title: str = ""
) -> Path:
    """Train and validation loss per epoch.

    Args:
        train_loss: loss per epoch on the training set.
        val_loss: loss per epoch on the validation set.
        path: where to write the PNG (parent directories are created).
        title: figure title.

    Returns:
        ``path``.
    """
    epochs = range(1, len(train_loss) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, train_loss, marker="o", markersize=3, label="train")
    ax.plot(epochs, val_loss, marker="o", markersize=3, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
