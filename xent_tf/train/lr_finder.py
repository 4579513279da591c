"""The learning-rate range test (CLAIMS.md C14).

Train from a tiny learning rate, raising it after every mini-batch up to a huge one, and record
each batch's own loss. The smoothed loss first barely moves, then falls, then explodes; a good
rate lies where it falls fastest. Three suggestions are computed from the same curve:

- ``steepest``: the rate where the smoothed loss falls fastest against log(lr);
- ``valley``: fastai's default, the middle of the longest descending run of the smoothed loss;
- ``minimum``: the rate at the lowest smoothed loss, divided by 10.

Unlike the Keras 2 finders, this one records the batch's own loss (not Keras's running epoch
mean), runs inside the suite's compiled loop (one ``tf.function`` call for the whole test), and
puts back the optimizer's state (slots, iteration counter, learning rate) as well as the weights,
so the model trains afterwards exactly as if the test had not run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from xent_tf.metrics import LR_FIND_LOSS_METRIC, LR_FIND_LR_METRIC, LR_FIND_SMOOTHED_METRIC
from xent_tf.train.training import CompiledLoop, TensorSplit

MODES = ("exponential", "linear")
METHODS = ("steepest", "valley", "minimum")
# Fewer recorded steps than this is no curve to read a rate from (and no test worth running).
MIN_STEPS = 10
# The steepest slope counts only once the loss has fallen this share of the way to its minimum
# (see steepest_lr: slower wandering on the flat start is noise, not the fall).
FALL_FRACTION = 0.1
# fastai trims the last 5 points before suggesting: they are the explosion that stopped the test.
_SKIP_END = 5


@dataclass(frozen=True)
class RangeTestResult:
    """What a range test measured and suggests.

    Attributes:
        lrs: learning rate of each recorded step (float64, as requested; the optimizer applies
            them in float32).
        losses: each recorded step's own batch loss, before that step's update.
        smoothed: bias-corrected exponential moving average of ``losses``.
        steepest_lr: rate of the steepest descent of ``smoothed`` vs log(lr), or None.
        valley_lr: fastai's "valley" rate, or None.
        minimum_lr: (rate at the lowest smoothed loss) / 10, or None.
        min_loss_lr: rate at the lowest smoothed loss (not divided), or None.
        method: which suggestion ``suggestion`` is ("steepest", "valley" or "minimum").
        suggestion: the chosen rate, or None when the curve gives none (see ``message``).
        stopped_early: whether the divergence check stopped the test (the curve then ends at
            the step that tripped it, or just before a non-finite one).
        stop_reason: why it stopped early ("" when it did not).
        message: a one-paragraph human summary, including what to try when there is no
            suggestion.
        num_steps: steps requested.
        mode: "exponential" or "linear".
        seconds: wall time of the test (tracing of the compiled loop included on first use).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    steepest_lr: float | None
    valley_lr: float | None
    minimum_lr: float | None
    min_loss_lr: float | None
    method: str
    suggestion: float | None
    stopped_early: bool
    stop_reason: str
    message: str
    num_steps: int
    mode: str
    seconds: float

    def suggestions(self) -> dict[str, float | None]:
        """All three suggestions by method name."""
        return {"steepest": self.steepest_lr, "valley": self.valley_lr, "minimum": self.minimum_lr}

    def step_metrics(self) -> dict[str, np.ndarray]:
        """The per-step series under their MLflow names (step = index in the curve)."""
        return {
            LR_FIND_LR_METRIC: self.lrs,
            LR_FIND_LOSS_METRIC: self.losses,
            LR_FIND_SMOOTHED_METRIC: self.smoothed,
        }

    def smoothed_loss_at(self, lr: float) -> float:
        """The smoothed loss at ``lr``, interpolated on log(lr) (to mark a rate on the curve)."""
        return float(np.interp(math.log(lr), np.log(self.lrs), self.smoothed))


def range_test_rates(min_lr: float, max_lr: float, num_steps: int, mode: str) -> np.ndarray:
    """The rate of every step: ``min_lr`` first, ``max_lr`` last.

    Args:
        min_lr: first rate (> 0).
        max_lr: last rate (> min_lr).
        num_steps: number of steps (>= 10).
        mode: "exponential" (geometric spacing) or "linear".

    Returns:
        float64 array of shape (num_steps,).
    """
    _check_range(min_lr, max_lr, num_steps, mode)
    if mode == "exponential":
        return np.geomspace(min_lr, max_lr, num_steps)
    return np.linspace(min_lr, max_lr, num_steps)


def smooth_losses(losses: np.ndarray, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average of the batch losses.

    ``avg_i = beta * avg_{i-1} + (1 - beta) * loss_i`` from ``avg_{-1} = 0``, and
    ``smoothed_i = avg_i / (1 - beta**(i + 1))``: the correction undoes the pull towards the zero
    start, so ``smoothed_0 == loss_0``. A non-finite loss makes the rest non-finite.

    Args:
        losses: batch losses in step order.
        beta: smoothing factor in [0, 1); 0 returns the losses unchanged.

    Returns:
        float64 array of the same length.
    """
    _check_beta(beta)
    smoothed = np.empty(len(losses), dtype=np.float64)
    average = 0.0
    for i, loss in enumerate(np.asarray(losses, dtype=np.float64)):
        average = beta * average + (1.0 - beta) * loss
        smoothed[i] = average / (1.0 - beta ** (i + 1))
    return smoothed


def divergence_index(smoothed: np.ndarray, divergence_factor: float) -> int | None:
    """The first step whose smoothed loss is non-finite or > factor x the best before it.

    Args:
        smoothed: smoothed losses in step order.
        divergence_factor: how many times the best loss so far counts as exploding (> 1).

    Returns:
        The step index, or None when the curve never diverges.
    """
    best = math.inf
    for i, value in enumerate(smoothed):
        if not math.isfinite(value) or value > divergence_factor * best:
            return i
        best = min(best, float(value))
    return None


def steepest_lr(lrs: np.ndarray, smoothed: np.ndarray, window: slice | None = None) -> float | None:
    """The rate where the smoothed loss falls fastest against log(lr), on its fall to the minimum.

    The slope is ``np.gradient(smoothed, log(lrs))`` over the whole curve (so the window's edges
    get central differences, not one-sided ones). Its most negative value is taken only within
    ``window``, and there only over the fall to the window's lowest smoothed loss: from the last
    point before that minimum where the loss had not yet dropped ``FALL_FRACTION`` of the way
    from its level at the window's start to the minimum.

    Why the restriction: past the minimum the exploding loss oscillates, and on the flat start
    the moving average of few batches wanders; both make local slopes steeper than the real
    fall. Measured: unrestricted, the argmin picked 167 and 0.0019 on logistic-regression
    curves whose good range is 0.02 to 2; restricted to "at or below the start level" it still
    picked 2.5e-6 on 2 of 18 reference-model curves (Adam, fall between 1e-4 and 0.5), and with
    the 10% margin none of the 18.

    Args:
        lrs: increasing rates.
        smoothed: smoothed losses at those rates.
        window: the part of the curve to read the suggestion from (default: all of it).

    Returns:
        The rate of the steepest descent, or None when the loss never falls there (or there are
        fewer than 2 points).
    """
    if len(lrs) < 2:
        return None
    bounds = fall_bounds(smoothed, window)
    if bounds is None:
        return None
    # Gradient against log(lr), not the step index, so linear mode (uneven in log) reads right.
    slopes = np.gradient(smoothed, np.log(lrs))
    fall = np.arange(bounds[0], bounds[1] + 1)
    index = int(fall[np.argmin(slopes[fall])])
    return float(lrs[index]) if slopes[index] < 0 else None


def fall_bounds(smoothed: np.ndarray, window: slice | None = None) -> tuple[int, int] | None:
    """Where the fall of the curve starts and where it bottoms out, as step indices.

    The fall starts at the last point before the window's lowest smoothed loss where the loss
    had not yet dropped ``FALL_FRACTION`` of the way from its level at the window's start to
    that minimum; everything before it is the flat part.

    Args:
        smoothed: smoothed losses in step order.
        window: the part of the curve to look in (default: all of it).

    Returns:
        (index where the fall starts, index of the minimum), or None for fewer than 2 points.
    """
    indices = np.arange(len(smoothed))[window or slice(None)]
    if len(indices) < 2:
        return None
    values = smoothed[indices]
    lowest = int(np.argmin(values))
    level = values[0] - FALL_FRACTION * (values[0] - values[lowest])
    fall_start = int(np.flatnonzero(values[: lowest + 1] >= level)[-1])
    return int(indices[fall_start]), int(indices[lowest])


def region_rates(result: RangeTestResult) -> dict[str, float | None]:
    """Rates from the three parts of a range-test curve, to train with and compare (C14).

    - ``flat``: half-way (in steps) through the flat start, before the fall begins;
    - ``suggested``: the suggestion of the result's method;
    - ``exploding``: the rate of the last recorded step, where the divergence check stopped the
      test (when it never stopped, the largest rate tried: not proven to explode).

    Args:
        result: a range test that gave a suggestion.

    Returns:
        {"flat", "suggested", "exploding"}: rates, all None when the curve gave no suggestion.
    """
    if result.suggestion is None:
        return {"flat": None, "suggested": None, "exploding": None}
    n = len(result.smoothed)
    skip = n // 10  # the same window the suggestions are read from
    bounds = fall_bounds(result.smoothed, slice(skip, n - min(_SKIP_END, skip)))
    flat_index = bounds[0] // 2 if bounds is not None else 0
    return {
        "flat": float(result.lrs[flat_index]),
        "suggested": result.suggestion,
        "exploding": float(result.lrs[-1]),
    }


class NoSuggestionError(ValueError):
    """The range test gave no rate for ``lr_find.use`` (its curve had no falling part, or not
    the one that rule reads): a measured outcome of the test, not a crash. The run ends FAILED,
    tagged ``run_record.NO_SUGGESTION_TAG`` (``pipeline.record_no_suggestion``)."""


def rate_to_train_with(result: RangeTestResult, use: str, given: float) -> float | None:
    """The rate a run trains with after its range test.

    Args:
        result: the range test.
        use: ``lr_find.use``: "suggested", "flat" or "exploding" (``region_rates``);
            "steepest", "valley" or "minimum": that rule's suggestion, whatever ``method`` says;
            "given": ``given``, whatever the curve says (the test is only recorded: C13/C14's
            rate grid keeps each seed's curve beside the rates it trained).
        given: ``optimizer.learning_rate``.

    Returns:
        The rate, or None when the curve gives none for ``use``.
    """
    if use == "given":
        return given
    if use in METHODS:
        return result.suggestions()[use]
    return region_rates(result)[use]


def valley_lr(lrs: np.ndarray, smoothed: np.ndarray) -> float | None:
    """fastai's "valley" suggestion (the default of ``Learner.lr_find`` since fastai 2.4).

    The longest strictly decreasing subsequence of the smoothed loss is found by dynamic
    programming; it is taken to span the ``length`` steps that end at its last point, and the
    suggestion is the point at start + int(span/3) + int(span/6), about half-way in (fastai's
    docs say "roughly 2/3"; its formula, reproduced here, gives half), where the curve is well
    into its fall but not yet near the bottom.

    Args:
        lrs: increasing rates.
        smoothed: smoothed losses at those rates.

    Returns:
        The suggested rate, or None when the loss never decreases.
    """
    n = len(smoothed)
    if n < 2:
        return None
    # longest[i]: length of the longest strictly decreasing subsequence ending at step i.
    longest = np.ones(n, dtype=np.int64)
    for i in range(1, n):
        higher_before = smoothed[:i] > smoothed[i]
        if higher_before.any():
            longest[i] = longest[:i][higher_before].max() + 1
    end = int(np.argmax(longest))  # the first step reaching the longest run, as fastai does
    if longest[end] < 2:
        return None
    # fastai's start can be -1 when the run starts at step 0; clamp so it never wraps around.
    start = max(end - int(longest[end]), 0)
    sections = (end - start) / 3
    index = start + int(sections) + int(sections / 2)
    return float(lrs[index])


def minimum_lr(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, float] | None:
    """The rate at the lowest smoothed loss, and that rate / 10.

    At the minimum the loss is about to explode; a tenth of it is the usual safe margin.

    Args:
        lrs: increasing rates.
        smoothed: smoothed losses at those rates.

    Returns:
        (rate at the minimum, rate / 10), or None for an empty curve.
    """
    if len(lrs) == 0:
        return None
    at_minimum = float(lrs[int(np.argmin(smoothed))])
    return at_minimum, at_minimum / 10.0


def find_learning_rate(
    loop: CompiledLoop,
    train: TensorSplit,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 200,
    mode: str = "exponential",
    beta: float = 0.98,
    divergence_factor: float = 4.0,
    method: str = "steepest",
    seed: int = 0,
) -> RangeTestResult:
    """Run the learning-rate range test and suggest a rate.

    One step per mini-batch of ``loop.batch_size`` rows; the rows come from per-epoch
    permutations laid end to end, so a test longer than an epoch simply carries on into the
    next. All steps run in one call of the compiled loop: one trace per step count, while chunks
    would trace once per chunk shape and measured no faster (300 steps of the reference model
    take about 0.05 s once traced). The loop itself stops only at a non-finite loss, so the
    divergence stop is applied afterwards: the curve ends at the first step whose smoothed loss
    is non-finite or above ``divergence_factor`` x its best so far (that step included when
    finite); steps trained past it are discarded. The model's variables and all of the
    optimizer's variables are put back afterwards, also when training raises.

    Suggestions are read from the curve without its first 10% (the moving average of a handful
    of batches is mostly noise) and its last ``min(5, 10%)`` steps (the explosion), as fastai
    does. A curve of fewer than 10 steps, or one whose smoothed loss never falls below both the
    first batch's loss and its own value at the start of that window, gives no suggestion and a
    message saying what to try.

    Args:
        loop: the compiled loop of the model, loss and optimizer to test (float learning rate).
        train: the training split.
        min_lr: rate of the first step (> 0).
        max_lr: rate of the last step (> min_lr).
        num_steps: number of steps (mini-batches), >= 10.
        mode: "exponential" (geometric spacing, the usual) or "linear".
        beta: smoothing factor of the moving average, in [0, 1).
        divergence_factor: stop when the smoothed loss exceeds this multiple of its best (> 1).
        method: the suggestion to use: "steepest", "valley" or "minimum".
        seed: seed of the row order.

    Returns:
        The curve, the three suggestions and the chosen one.

    Raises:
        ValueError: a bad argument (the message names it), an empty training split, or an
            optimizer whose learning rate is a schedule object.
    """
    rates = range_test_rates(min_lr, max_lr, num_steps, mode)
    # analyse_curve checks these too, but only after training: fail before it.
    _check_analysis(beta, divergence_factor, method)
    if not isinstance(loop.optimizer.learning_rate, keras.Variable):
        schedule = type(getattr(loop.optimizer, "_learning_rate", None)).__name__
        raise ValueError(
            f"the optimizer's learning_rate is a schedule object ({schedule}); the range test "
            "sets the rate per step itself: create the optimizer with a float learning_rate"
        )
    if len(train) == 0:
        raise ValueError("the training split is empty")

    started = time.perf_counter()
    order = row_order(len(train), num_steps * loop.batch_size, seed)
    variables = [*loop.model.variables, *loop.optimizer.variables]
    # Copies, not views: a NumPy view of a TF buffer is not guaranteed to survive later updates.
    snapshot = [np.array(variable.numpy(), copy=True) for variable in variables]
    try:
        losses, _, _ = loop.run_epoch(train, order, rates)
    finally:
        for variable, value in zip(variables, snapshot, strict=True):
            variable.assign(value)
    seconds = time.perf_counter() - started
    return analyse_curve(rates, losses, beta, divergence_factor, method, mode, seconds)


def analyse_curve(
    rates: np.ndarray,
    losses: np.ndarray,
    beta: float = 0.98,
    divergence_factor: float = 4.0,
    method: str = "steepest",
    mode: str = "exponential",
    seconds: float = 0.0,
) -> RangeTestResult:
    """Smooth a measured curve, cut it where it diverges, and suggest rates.

    ``find_learning_rate`` ends here; it is public so that a logged curve can be read again
    with another ``beta``, ``divergence_factor`` or ``method`` without training.

    Args:
        rates: the rate of every requested step, increasing (its length is the number of
            steps requested).
        losses: the batch loss of every step taken (may be shorter than ``rates`` and end
            with a non-finite value when training stopped there).
        beta: smoothing factor of the moving average, in [0, 1).
        divergence_factor: the smoothed loss above this multiple of its best counts as
            diverged (> 1).
        method: the suggestion to use: "steepest", "valley" or "minimum".
        mode: how ``rates`` were spaced, for the message.
        seconds: wall time to record.

    Returns:
        The curve up to the divergence and the suggestions read from it.
    """
    _check_analysis(beta, divergence_factor, method)
    if not 0 < len(losses) <= len(rates):
        raise ValueError(f"got {len(losses)} losses for {len(rates)} rates; need 1 to {len(rates)}")
    num_steps = len(rates)
    rates = np.asarray(rates, dtype=np.float64)
    if not (rates[0] > 0 and np.all(np.diff(rates) > 0)):
        raise ValueError("rates must be positive and increasing")
    raw_losses = np.asarray(losses, dtype=np.float64)
    smoothed = smooth_losses(raw_losses, beta)
    stop = divergence_index(smoothed, divergence_factor)
    stop_reason = ""
    n_kept = len(raw_losses)
    if stop is not None:
        value = smoothed[stop]
        if math.isfinite(value):
            stop_reason = (
                f"smoothed loss {value:.4g} exceeded {divergence_factor:g} x its best "
                f"{np.min(smoothed[:stop]):.4g} at step {stop} (lr {rates[stop]:.3g})"
            )
            n_kept = stop + 1
        else:
            stop_reason = f"loss became NaN/inf at step {stop} (lr {rates[stop]:.3g})"
            n_kept = stop
    lrs, losses, smoothed = rates[:n_kept], raw_losses[:n_kept], smoothed[:n_kept]
    stopped_early = stop is not None

    steepest = valley = minimum = min_loss = None
    # The window the suggestions are read from: see find_learning_rate's docstring.
    skip = n_kept // 10
    window = slice(skip, n_kept - min(_SKIP_END, skip))
    w_lrs, w_smoothed = lrs[window], smoothed[window]
    if n_kept < MIN_STEPS:
        message = (
            f"no suggestion: the test stopped after {n_kept} of {num_steps} steps "
            f"({stop_reason}). The loss diverged from the start: lower min_lr "
            f"(now {rates[0]:.3g}) and max_lr (now {rates[-1]:.3g})."
        )
    elif not np.min(w_smoothed[1:]) < min(w_smoothed[0], losses[0]):
        # Below both: the window's start alone is no reference when the loss jumps at once
        # and then wanders, and the first batch alone is one noisy batch.
        message = (
            f"no suggestion: the smoothed loss never fell below the first batch's loss "
            f"{losses[0]:.4g} and its own value {w_smoothed[0]:.4g} at step {skip} "
            f"(lr {w_lrs[0]:.3g}): the loss rose from the start, so the range begins where "
            f"training already diverges. Lower min_lr (now {rates[0]:.3g}) and max_lr "
            f"(now {rates[-1]:.3g})."
        )
    else:
        steepest = steepest_lr(lrs, smoothed, window)
        valley = valley_lr(w_lrs, w_smoothed)
        at_minimum = minimum_lr(w_lrs, w_smoothed)
        if at_minimum is not None:
            min_loss, minimum = at_minimum
        # The minimum in the last steps of the window: no rise was seen after it.
        still_falling = int(np.argmin(w_smoothed)) >= len(w_smoothed) - 2
        message = _summary(steepest, valley, minimum, method, stop_reason, mode, still_falling)
    chosen = {"steepest": steepest, "valley": valley, "minimum": minimum}[method]
    return RangeTestResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        steepest_lr=steepest,
        valley_lr=valley,
        minimum_lr=minimum,
        min_loss_lr=min_loss,
        method=method,
        suggestion=chosen,
        stopped_early=stopped_early,
        stop_reason=stop_reason,
        message=message,
        num_steps=num_steps,
        mode=mode,
        seconds=seconds,
    )


def _summary(
    steepest: float | None,
    valley: float | None,
    minimum: float | None,
    method: str,
    stop_reason: str,
    mode: str,
    still_falling: bool,
) -> str:
    """The message of a curve that gave suggestions."""

    def show(rate: float | None) -> str:
        return "none" if rate is None else f"{rate:.3g}"

    chosen = {"steepest": steepest, "valley": valley, "minimum": minimum}[method]
    lines = [
        f"suggested learning rate {show(chosen)} ({method}); steepest {show(steepest)}, "
        f"valley {show(valley)}, minimum/10 {show(minimum)} ({mode} range test)."
    ]
    if chosen is None:
        lines.append(f"The {method} method found no falling stretch; try another method.")
    if stop_reason:
        lines.append(f"Stopped early: {stop_reason}.")
    elif still_falling:
        # Without the explosion the minimum is just the end of the range, not a turning point.
        lines.append(
            "The loss was still falling at the end of the range, so the minimum (and with it "
            "the valley and minimum/10) may sit too low: try a larger max_lr."
        )
    return " ".join(lines)


def row_order(n_rows: int, n_needed: int, seed: int) -> np.ndarray:
    """Per-epoch permutations of the rows, laid end to end and cut to ``n_needed`` rows."""
    rng = np.random.default_rng(seed)
    epochs = -(-n_needed // n_rows)
    return np.concatenate([rng.permutation(n_rows) for _ in range(epochs)])[:n_needed]


def _check_range(min_lr: float, max_lr: float, num_steps: int, mode: str) -> None:
    if not min_lr > 0:  # written so NaN fails too
        raise ValueError(f"min_lr={min_lr} must be > 0")
    if not max_lr > 0:
        raise ValueError(f"max_lr={max_lr} must be > 0")
    if not min_lr < max_lr:
        raise ValueError(f"min_lr={min_lr} must be < max_lr={max_lr}")
    if not math.isfinite(max_lr):
        raise ValueError(f"max_lr={max_lr} must be finite")
    if num_steps < MIN_STEPS:
        raise ValueError(f"num_steps={num_steps} must be >= {MIN_STEPS}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {list(MODES)}")


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1)")


def _check_analysis(beta: float, divergence_factor: float, method: str) -> None:
    _check_beta(beta)
    if not divergence_factor > 1.0:
        raise ValueError(f"divergence_factor={divergence_factor} must be > 1")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {list(METHODS)}")
