"""Learning rate per training step: constant, step, exponential, cosine and one-cycle.

The training loop takes one rate per step as an array, so a schedule is just that array; the
range test uses the same mechanism. The formulas match Keras's ``ExponentialDecay`` and
``CosineDecay`` (the tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch

import numpy as np

from xent_tf.config import (
    ConstantScheduleConfig,
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    OneCycleScheduleConfig,
    ScheduleConfig,
    StepScheduleConfig,
)


def learning_rates(
    schedule: ScheduleConfig, base_rate: float, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """The learning rate of every step of a run.

    Args:
        schedule: which schedule and its parameters.
        base_rate: the optimizer's learning rate (the peak for one-cycle).
        epochs: number of epochs.
        steps_per_epoch: steps in each epoch.

    Returns:
        float32 array of shape (epochs * steps_per_epoch,).
    """
    if base_rate <= 0:
        raise ValueError(f"base_rate={base_rate} must be > 0")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs={epochs} and steps_per_epoch={steps_per_epoch} must be >= 1")
    total = epochs * steps_per_epoch
    step = np.arange(total, dtype=np.float64)
    # Progress 0 -> 1 over the run; a one-step run stays at 0.
    progress = step / max(total - 1, 1)
    rates = _rates(schedule, base_rate, _Steps(step, progress, steps_per_epoch, total))
    return rates.astype(np.float32)


@dataclass(frozen=True)
class _Steps:
    """Every step of a run: its index, its progress 0 -> 1, and the run's shape."""

    index: np.ndarray
    progress: np.ndarray
    steps_per_epoch: int
    total: int


@singledispatch
def _rates(schedule: ScheduleConfig, base_rate: float, steps: _Steps) -> np.ndarray:
    """The rate of every step, float64; one function per schedule, registered below."""
    raise ValueError(
        f"schedule.name={schedule.name!r} has no rate formula in xent_tf.train.schedules"
    )


@_rates.register
def _constant(schedule: ConstantScheduleConfig, base_rate: float, steps: _Steps) -> np.ndarray:
    return np.full(steps.total, base_rate)


@_rates.register
def _step(schedule: StepScheduleConfig, base_rate: float, steps: _Steps) -> np.ndarray:
    epoch = steps.index // steps.steps_per_epoch
    return np.asarray(base_rate * schedule.factor ** (epoch // schedule.step_epochs))


@_rates.register
def _exponential(
    schedule: ExponentialScheduleConfig, base_rate: float, steps: _Steps
) -> np.ndarray:
    return np.asarray(base_rate * schedule.final_fraction**steps.progress)


@_rates.register
def _cosine_schedule(schedule: CosineScheduleConfig, base_rate: float, steps: _Steps) -> np.ndarray:
    return base_rate * _cosine(steps.progress, schedule.final_fraction)


@_rates.register
def _one_cycle(schedule: OneCycleScheduleConfig, base_rate: float, steps: _Steps) -> np.ndarray:
    total, step = steps.total, steps.index
    warmup = max(1, round(schedule.warmup_fraction * total))
    start = base_rate / schedule.div_factor
    rates = np.empty(total)
    rates[:warmup] = start + (base_rate - start) * step[:warmup] / warmup
    decay_progress = (step[warmup:] - warmup) / max(total - warmup - 1, 1)
    rates[warmup:] = base_rate * _cosine(decay_progress, schedule.final_fraction)
    return rates


def _cosine(progress: np.ndarray, final_fraction: float) -> np.ndarray:
    """Half a cosine from 1 down to ``final_fraction`` as progress goes 0 -> 1."""
    return (1 - final_fraction) * 0.5 * (1 + np.cos(np.pi * progress)) + final_fraction


def has_formula(schedule_type: type) -> bool:
    """Whether a schedule config class has a registered rate formula."""
    return _rates.dispatch(schedule_type) is not _rates.dispatch(object)
