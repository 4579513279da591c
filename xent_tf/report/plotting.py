"""Figures as PNG files. The only module that imports matplotlib (Agg backend, no screen)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker
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
    panels: dict[str, dict[str, list[list[float]]]],
    metric: str,
    path: Path,
    title: str = "",
    log_y: bool = False,
) -> Path:
    """Mean over seeds per variant with a min-max band, one panel per group of variants.

    A line keeps its colour in every panel, so "loss=mse" is the same colour next to each
    optimizer; the legend sits once, under the panels.

    Args:
        panels: {panel title: {line label: [one per-epoch series per seed]}}; series may differ
            in length (a diverged run stops early) and are aligned on the epoch.
        metric: the metric's name, for the y label.
        path: where to write the PNG.
        title: figure title.
        log_y: log-scale y axis (losses that span decades).

    Returns:
        ``path``.
    """
    labels = sorted({label for lines in panels.values() for label in lines})
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    styles = {label: ("-" if i < 10 else "--") for i, label in enumerate(labels)}
    n_cols = 1 if len(panels) == 1 else 2
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(6.5 * n_cols, 3.6 * n_rows + 0.4 * len(labels) / n_cols + 0.8),
        dpi=100,
        squeeze=False,
        sharex=True,
    )
    handles = {}
    for ax, (panel, lines) in zip(axes.flat, panels.items(), strict=False):
        for label, series in lines.items():
            if not series:
                continue
            mean, low, high = _mean_band(series)
            epochs = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(
                epochs, mean, color=colours[label], linestyle=styles[label], linewidth=1.6
            )
            ax.fill_between(epochs, low, high, color=colours[label], alpha=0.15, linewidth=0)
            handles[label] = (line, len(series))
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title or f"{metric}: mean over seeds, band = min-max", fontsize=11)
    fig.legend(
        [h for h, _ in handles.values()],
        [f"{label} (n={n})" for label, (_, n) in handles.items()],
        loc="lower center",
        ncol=min(2, len(handles)),
        fontsize=8,
        frameon=False,
    )
    legend_rows = -(-len(handles) // 2)
    _fixed_margins(fig, n_rows, n_cols, legend_rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# Room (inches) around the panels of a band overlay: y tick labels and label on the left, the
# title on top, x tick labels and label plus the legend's rows below, panel titles between.
_LEFT_IN, _RIGHT_IN, _TOP_IN, _XLABEL_IN, _LEGEND_ROW_IN = 0.85, 0.25, 0.75, 0.6, 0.17
_HSPACE_IN, _WSPACE_IN = 0.55, 0.75


def _fixed_margins(fig: Any, n_rows: int, n_cols: int, legend_rows: int) -> None:
    """Place the panels with margins fixed in inches: what ``tight_layout`` found for these
    figures, without measuring every text (it took half of a study report's plotting time)."""
    width, height = fig.get_size_inches()
    bottom = _XLABEL_IN + _LEGEND_ROW_IN * legend_rows + 0.1
    panel_w = (width - _LEFT_IN - _RIGHT_IN - _WSPACE_IN * (n_cols - 1)) / n_cols
    panel_h = (height - _TOP_IN - bottom - _HSPACE_IN * (n_rows - 1)) / n_rows
    fig.subplots_adjust(
        left=_LEFT_IN / width,
        right=1 - _RIGHT_IN / width,
        top=1 - _TOP_IN / height,
        bottom=bottom / height,
        wspace=_WSPACE_IN / panel_w,
        hspace=_HSPACE_IN / panel_h,
    )


def _mean_band(series: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max per epoch over seeds (NaN where no seed has a finite value)."""
    grid = np.full((len(series), max(len(s) for s in series)), np.nan)
    for row, values in enumerate(series):
        grid[row, : len(values)] = values
    grid[~np.isfinite(grid)] = np.nan
    with warnings.catch_warnings():  # epochs where every seed diverged are all-NaN: no line
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(grid, axis=0), np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)


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
