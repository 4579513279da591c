"""Figures as PNG files. The only module that imports matplotlib (Agg backend, no screen)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

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


def save_band_overlay(
    curves: dict[str, list[list[float]]],
    metric: str,
    path: Path,
    title: str = "",
    log_y: bool = False,
) -> Path:
    """Mean over seeds per variant, with a min-max band: one readable line per variant.

    Args:
        curves: {variant label: [one per-epoch series per seed]}; series may differ in length
            (a diverged run stops early) and are aligned on the epoch.
        metric: the metric's name, for the y label.
        path: where to write the PNG.
        title: figure title.
        log_y: log-scale y axis (losses that span decades).

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for label, series in curves.items():
        if not series:
            continue
        length = max(len(s) for s in series)
        grid = np.full((len(series), length), np.nan)
        for row, values in enumerate(series):
            grid[row, : len(values)] = values
        grid[~np.isfinite(grid)] = np.nan
        epochs = np.arange(1, length + 1)
        with warnings.catch_warnings():  # epochs where every seed diverged are all-NaN: no line
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(grid, axis=0)
            low, high = np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)
        (line,) = ax.plot(epochs, mean, label=f"{label} (n={len(series)})", linewidth=1.6)
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title or f"{metric}: mean over seeds, band = min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_range_test_curve(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    smoothed: Sequence[float] | np.ndarray,
    marks: dict[str, float],
    path: Path,
    title: str = "",
) -> Path:
    """Loss against learning rate (log x) with the suggested rates marked.

    Args:
        lrs: rate of each step.
        losses: each step's own batch loss.
        smoothed: the smoothed loss.
        marks: {label: rate} to draw as vertical lines (e.g. steepest, valley, flat).
        path: where to write the PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(lrs, losses, color="0.75", linewidth=0.8, label="batch loss")
    ax.plot(lrs, smoothed, color="C0", linewidth=1.8, label="smoothed")
    for index, (label, rate) in enumerate(marks.items()):
        ax.axvline(
            rate, color=f"C{index + 1}", linestyle="--", linewidth=1.2, label=f"{label} {rate:.3g}"
        )
    ax.set_xscale("log")
    finite = [v for v in smoothed if np.isfinite(v)]
    if finite:  # keep the explosion from flattening the interesting part
        ax.set_ylim(min(finite) * 0.9, max(finite[0], min(finite)) * 1.6)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title or "learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
