"""Learning rate per training step: constant, step, exponential, cosine and one-cycle.

The training loop takes one rate per step as an array, so a schedule is just that array; the
range test uses the same mechanism. The formulas match Keras's ``ExponentialDecay`` and
``CosineDecay`` (the tests check it).
"""

from __future__ import annotations

import numpy as np

from xent_tf.config import ScheduleConfig


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
    if schedule.name == "constant":
        rates = np.full(total, base_rate)
    elif schedule.name == "step":
        epoch = step // steps_per_epoch
        rates = base_rate * schedule.factor ** (epoch // schedule.step_epochs)
    elif schedule.name == "exponential":
        rates = base_rate * schedule.final_fraction**progress
    elif schedule.name == "cosine":
        rates = base_rate * _cosine(progress, schedule.final_fraction)
    elif schedule.name == "one_cycle":
        warmup = max(1, round(schedule.warmup_fraction * total))
        start = base_rate / schedule.div_factor
        rates = np.empty(total)
        rates[:warmup] = start + (base_rate - start) * step[:warmup] / warmup
        decay_progress = (step[warmup:] - warmup) / max(total - warmup - 1, 1)
        rates[warmup:] = base_rate * _cosine(decay_progress, schedule.final_fraction)
    else:
        raise ValueError(
            f"schedule.name={schedule.name!r} is not one of "
            "['constant', 'step', 'exponential', 'cosine', 'one_cycle']"
        )
    return rates.astype(np.float32)


def _cosine(progress: np.ndarray, final_fraction: float) -> np.ndarray:
    """Half a cosine from 1 down to ``final_fraction`` as progress goes 0 -> 1."""
    return (1 - final_fraction) * 0.5 * (1 + np.cos(np.pi * progress)) + final_fraction
