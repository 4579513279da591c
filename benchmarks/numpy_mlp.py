"""The benchmark yardstick: the reference MLP trained in plain NumPy.

It does the same maths as the suite's Keras run (C16) with Keras's defaults, so the time it takes
is what the arithmetic alone costs; `model.fit` taking longer is framework overhead.

- Dense layers: glorot_uniform kernels, zero biases; ReLU on hidden layers.
- n_classes == 2: one output unit, sigmoid + binary cross-entropy computed from the logit.
  n_classes > 2: softmax + sparse categorical cross-entropy computed with a stable log-softmax.
- Adam with Keras 3's defaults and update rule (keras/src/optimizers/adam.py).
- A fresh shuffle every epoch, mini-batches with a smaller last batch, validation once per epoch.
"""

import itertools
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
# One (kernel, bias) pair per Dense layer, input layer first; kernels are (fan_in, fan_out).
Params = list[tuple[FloatArray, FloatArray]]

# Keras 3 Adam defaults (keras.optimizers.Adam).
BETA_1 = 0.9
BETA_2 = 0.999
# Keras's "epsilon hat": added to sqrt(v) without bias correction, so it differs from PyTorch's.
EPSILON = 1e-7


@dataclass(frozen=True)
class NumpyRunResult:
    """What one NumPy training run produced.

    Attributes:
        train_loss: per epoch, the mean of the batch losses weighted by batch size (what Keras's
            loss tracker reports).
        train_acc: per epoch, the accuracy on the training batches as they were seen.
        val_loss: per epoch, the loss on the whole validation set after the epoch.
        val_acc: per epoch, the accuracy on the whole validation set after the epoch.
        params: the final (kernel, bias) pairs, input layer first.
        train_seconds: wall time of the training loop (validation included, set-up excluded).
    """

    train_loss: list[float]
    train_acc: list[float]
    val_loss: list[float]
    val_acc: list[float]
    params: Params
    train_seconds: float


@dataclass
class AdamState:
    """Adam's running moments, shaped like the parameters, and the number of steps taken.

    Attributes:
        m: first-moment estimates (Keras's "momentums").
        v: second-moment estimates (Keras's "velocities").
        step: updates applied so far (Keras's `optimizer.iterations`).
    """

    m: Params
    v: Params
    step: int = 0


@dataclass(frozen=True)
class ForwardCache:
    """What the backward pass needs from the forward pass.

    Attributes:
        inputs: the input of every Dense layer (the batch, then each hidden activation).
        hidden_pre: the pre-activation of every hidden layer (to mask ReLU's gradient).
    """

    inputs: list[FloatArray]
    hidden_pre: list[FloatArray]


def init_params(
    layer_sizes: list[int], rng: np.random.Generator, dtype: npt.DTypeLike = np.float32
) -> Params:
    """Initialise Dense layers as Keras does: glorot_uniform kernels, zero biases.

    Args:
        layer_sizes: widths from input to output, e.g. [20, 10, 10, 1].
        rng: the random generator to draw the kernels from.
        dtype: dtype of the parameters (float32 for training, float64 for gradient checks).

    Returns:
        One (kernel, bias) pair per layer, kernels shaped (fan_in, fan_out).
    """
    params: Params = []
    for fan_in, fan_out in itertools.pairwise(layer_sizes):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)
        params.append((kernel, np.zeros(fan_out, dtype=dtype)))
    return params


def forward(params: Params, x: FloatArray) -> tuple[FloatArray, ForwardCache]:
    """Run the MLP up to the output logits (the sigmoid/softmax lives in the loss).

    Args:
        params: (kernel, bias) pairs, input layer first.
        x: a batch, shape (batch, n_features).

    Returns:
        The logits, shape (batch, n_outputs), and the cache for `backward`.
    """
    inputs: list[FloatArray] = []
    hidden_pre: list[FloatArray] = []
    a = x
    for kernel, bias in params[:-1]:
        inputs.append(a)
        z = a @ kernel + bias
        hidden_pre.append(z)
        a = np.maximum(z, 0)
    inputs.append(a)
    kernel, bias = params[-1]
    return a @ kernel + bias, ForwardCache(inputs=inputs, hidden_pre=hidden_pre)


def binary_loss_and_grad(logits: FloatArray, y: FloatArray) -> tuple[float, FloatArray]:
    """Binary cross-entropy of sigmoid(logits), computed from the logits.

    Args:
        logits: shape (batch, 1).
        y: labels in {0, 1}, shape (batch, 1), same dtype as the logits.

    Returns:
        The mean loss over the batch and its gradient with respect to the logits.
    """
    # max(z, 0) - z*y + log(1 + exp(-|z|)) is -[y log s + (1-y) log(1-s)] without exp overflow.
    per_sample = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    probs = 1 / (1 + np.exp(-logits))
    return float(per_sample.mean()), (probs - y) / len(logits)


def sparse_categorical_loss_and_grad(logits: FloatArray, y: IntArray) -> tuple[float, FloatArray]:
    """Sparse categorical cross-entropy of softmax(logits), via a stable log-softmax.

    Args:
        logits: shape (batch, n_classes).
        y: integer class labels, shape (batch,).

    Returns:
        The mean loss over the batch and its gradient with respect to the logits.
    """
    # Subtracting the row maximum keeps exp() from overflowing; it cancels in the softmax.
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(logits))
    loss = -log_probs[rows, y].mean()
    grad = np.exp(log_probs)
    grad[rows, y] -= 1
    return float(loss), grad / len(logits)


def loss_and_grad(
    logits: FloatArray, y: FloatArray | IntArray, n_classes: int
) -> tuple[float, FloatArray]:
    """Dispatch to the loss the output head implies.

    Args:
        logits: shape (batch, 1) if n_classes == 2, else (batch, n_classes).
        y: (batch, 1) float labels for the binary head, (batch,) integer labels otherwise.
        n_classes: number of classes.

    Returns:
        The mean loss over the batch and its gradient with respect to the logits.
    """
    if n_classes == 2:
        # copy=False: already the logits' dtype in training, so no copy per batch.
        return binary_loss_and_grad(logits, y.astype(logits.dtype, copy=False))
    return sparse_categorical_loss_and_grad(logits, y.astype(np.intp, copy=False))


def accuracy(logits: FloatArray, labels: IntArray) -> float:
    """Fraction of rows whose predicted class is the label.

    Args:
        logits: shape (batch, 1) for the binary head, (batch, n_classes) otherwise.
        labels: integer class labels, shape (batch,).

    Returns:
        The accuracy in [0, 1].
    """
    # sigmoid(z) > 0.5 (Keras's binary_accuracy threshold) is the same test as z > 0.
    predicted = logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(axis=1)
    return float(np.mean(predicted == labels))


def backward(params: Params, cache: ForwardCache, grad_logits: FloatArray) -> Params:
    """Backpropagate the gradient of the loss through the MLP.

    Args:
        params: the (kernel, bias) pairs used in the forward pass.
        cache: what `forward` recorded.
        grad_logits: d loss / d logits, shape (batch, n_outputs).

    Returns:
        d loss / d (kernel, bias) for every layer, shaped like `params`.
    """
    grads: Params = []
    delta = grad_logits
    for layer in reversed(range(len(params))):
        kernel = params[layer][0]
        grads.append((cache.inputs[layer].T @ delta, delta.sum(axis=0)))
        if layer > 0:
            # ReLU passes the gradient only where its input was positive.
            delta = (delta @ kernel.T) * (cache.hidden_pre[layer - 1] > 0)
    grads.reverse()
    return grads


def init_adam(params: Params) -> AdamState:
    """Zero moments for every parameter, as Keras's Adam.build does.

    Args:
        params: the parameters the optimizer will update.

    Returns:
        A fresh Adam state.
    """
    m = [(np.zeros_like(k), np.zeros_like(b)) for k, b in params]
    v = [(np.zeros_like(k), np.zeros_like(b)) for k, b in params]
    return AdamState(m=m, v=v)


def adam_update(
    params: Params,
    grads: Params,
    state: AdamState,
    learning_rate: float,
    beta_1: float = BETA_1,
    beta_2: float = BETA_2,
    epsilon: float = EPSILON,
) -> None:
    """Apply one Adam step in place, following Keras 3's `Adam.update_step` term for term.

    Keras folds both bias corrections into the step size,
    alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t), and then subtracts
    m * alpha / (sqrt(v) + epsilon); so epsilon is not bias-corrected.

    Args:
        params: (kernel, bias) pairs, updated in place.
        grads: their gradients, shaped like `params`.
        state: Adam's moments and step count, updated in place.
        learning_rate: the step size.
        beta_1: decay rate of the first moment.
        beta_2: decay rate of the second moment.
        epsilon: added to sqrt(v) for numerical stability.
    """
    state.step += 1
    # Keras does this arithmetic in the variables' dtype; doing the same keeps float32 runs
    # bit-for-bit comparable rather than silently mixing in float64 scalars.
    cast = params[0][0].dtype.type
    t = cast(state.step)
    alpha = cast(learning_rate) * np.sqrt(1 - cast(beta_2) ** t) / (1 - cast(beta_1) ** t)
    for p_pair, g_pair, m_pair, v_pair in zip(params, grads, state.m, state.v, strict=True):
        for param, grad, m, v in zip(p_pair, g_pair, m_pair, v_pair, strict=True):
            m += (grad - m) * cast(1 - beta_1)
            v += (np.square(grad) - v) * cast(1 - beta_2)
            param -= (m * alpha) / (np.sqrt(v) + cast(epsilon))


def evaluate(
    params: Params, x: FloatArray, targets: FloatArray | IntArray, labels: IntArray, n_classes: int
) -> tuple[float, float]:
    """Loss and accuracy on a whole data set in one forward pass.

    Args:
        params: (kernel, bias) pairs.
        x: inputs, shape (n, n_features).
        targets: labels in the form the loss takes (see `loss_and_grad`).
        labels: integer class labels, shape (n,).
        n_classes: number of classes.

    Returns:
        The mean loss and the accuracy.
    """
    logits, _ = forward(params, x)
    loss, _ = loss_and_grad(logits, targets, n_classes)
    return loss, accuracy(logits, labels)


def _validate_inputs(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    n_classes: int,
    epochs: int,
    batch_size: int,
) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    """Check the arguments and convert the data to float32 inputs and integer labels.

    Returns:
        x_train, y_train, x_val, y_val as float32 / intp arrays.

    Raises:
        ValueError: with a message naming what is wrong.
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    arrays: list[tuple[FloatArray, IntArray]] = []
    for name, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        x_arr = np.asarray(x, dtype=np.float32)
        y_arr = np.asarray(y)
        if x_arr.ndim != 2 or y_arr.shape != (len(x_arr),):
            raise ValueError(
                f"x_{name} must be (n, n_features) and y_{name} (n,); "
                f"got {x_arr.shape} and {y_arr.shape}."
            )
        if len(x_arr) == 0:
            raise ValueError(f"x_{name} is empty.")
        labels = y_arr.astype(np.intp)
        if not np.array_equal(labels, y_arr) or labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"y_{name} must hold integer labels in [0, {n_classes}).")
        arrays.append((x_arr, labels))
    (xt, yt), (xv, yv) = arrays
    if xt.shape[1] != xv.shape[1]:
        raise ValueError(f"x_train has {xt.shape[1]} features but x_val has {xv.shape[1]}.")
    return xt, yt, xv, yv


def _loss_targets(labels: IntArray, n_classes: int) -> FloatArray | IntArray:
    """Labels in the form the loss takes: a float32 column for binary, integers otherwise."""
    return labels.astype(np.float32)[:, None] if n_classes == 2 else labels


def train_numpy_mlp(
    x_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    x_val: npt.ArrayLike,
    y_val: npt.ArrayLike,
    hidden: tuple[int, ...] = (10, 10),
    n_classes: int = 2,
    epochs: int = 20,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> NumpyRunResult:
    """Train the MLP with mini-batch Adam in float32, validating after every epoch.

    Args:
        x_train: training inputs, shape (n, n_features).
        y_train: integer labels in [0, n_classes), shape (n,).
        x_val: validation inputs, shape (m, n_features).
        y_val: validation labels, shape (m,).
        hidden: widths of the ReLU hidden layers.
        n_classes: 2 for a sigmoid head with binary CE, more for softmax with sparse CE.
        epochs: passes over the training set.
        batch_size: rows per mini-batch; the last batch of an epoch may be smaller.
        learning_rate: Adam's step size.
        seed: seeds the initial weights and the per-epoch shuffles.

    Returns:
        Per-epoch metrics, the final parameters and the training wall time.

    Raises:
        ValueError: if the data or settings are inconsistent.
    """
    xt, yt, xv, yv = _validate_inputs(x_train, y_train, x_val, y_val, n_classes, epochs, batch_size)
    n_outputs = 1 if n_classes == 2 else n_classes
    rng = np.random.default_rng(seed)
    params = init_params([xt.shape[1], *hidden, n_outputs], rng)
    state = init_adam(params)
    train_targets = _loss_targets(yt, n_classes)
    val_targets = _loss_targets(yv, n_classes)
    n_train = len(xt)

    train_loss: list[float] = []
    train_acc: list[float] = []
    val_loss: list[float] = []
    val_acc: list[float] = []
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(n_train)
        # One gather per epoch, then contiguous slices: cheaper than fancy-indexing every batch.
        x_epoch, t_epoch, y_epoch = xt[order], train_targets[order], yt[order]
        loss_sum = 0.0
        correct = 0.0
        for lo in range(0, n_train, batch_size):
            x_batch = x_epoch[lo : lo + batch_size]
            logits, cache = forward(params, x_batch)
            loss, grad_logits = loss_and_grad(logits, t_epoch[lo : lo + batch_size], n_classes)
            adam_update(params, backward(params, cache, grad_logits), state, learning_rate)
            # Keras's loss tracker weights each batch's mean loss by the batch's size.
            loss_sum += loss * len(x_batch)
            correct += accuracy(logits, y_epoch[lo : lo + batch_size]) * len(x_batch)
        train_loss.append(loss_sum / n_train)
        train_acc.append(correct / n_train)
        epoch_val_loss, epoch_val_acc = evaluate(params, xv, val_targets, yv, n_classes)
        val_loss.append(epoch_val_loss)
        val_acc.append(epoch_val_acc)
    train_seconds = time.perf_counter() - start

    return NumpyRunResult(
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        params=params,
        train_seconds=train_seconds,
    )
