"""Tests for the NumPy yardstick: gradients, the Adam rule, and that it learns the C16 data."""

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from benchmarks.numpy_mlp import (
    AdamState,
    Params,
    adam_update,
    backward,
    forward,
    init_adam,
    init_params,
    loss_and_grad,
    train_numpy_mlp,
)

Split = tuple[
    npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]


def reference_split() -> Split:
    """The C16 data: first 9,000 rows of make_classification, split 70/30.

    Returns:
        x_train (6300, 20), y_train, x_val (2700, 20), y_val.
    """
    x, y = make_classification(n_samples=10000, n_informative=10, random_state=2022)
    x_train, x_val, y_train, y_val = train_test_split(
        x[:9000], y[:9000], test_size=0.3, random_state=2022
    )
    return x_train, y_train, x_val, y_val


def five_class_split() -> Split:
    """A 5-class problem of the same kind, split 70/30.

    Returns:
        x_train (2100, 20), y_train, x_val (900, 20), y_val.
    """
    x, y = make_classification(
        n_samples=3000, n_features=20, n_informative=10, n_classes=5, random_state=2022
    )
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=2022)
    return x_train, y_train, x_val, y_val


def _batch_loss(params: Params, x: npt.NDArray[np.float64], y: np.ndarray, n_classes: int) -> float:
    logits, _ = forward(params, x)
    return loss_and_grad(logits, y, n_classes)[0]


def test_init_params_is_glorot_uniform_with_zero_biases() -> None:
    params = init_params([20, 10, 10, 1], np.random.default_rng(0))
    assert [k.shape for k, _ in params] == [(20, 10), (10, 10), (10, 1)]
    assert sum(k.size + b.size for k, b in params) == 331  # 210 + 110 + 11, as Keras counts
    for kernel, bias in params:
        fan_in, fan_out = kernel.shape
        assert kernel.dtype == np.float32
        assert np.abs(kernel).max() <= np.sqrt(6 / (fan_in + fan_out))
        assert not bias.any()


def test_binary_loss_is_stable_and_matches_the_textbook_formula() -> None:
    logits = np.array([[-3.0], [-0.5], [0.0], [2.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    s = 1 / (1 + np.exp(-logits))
    textbook = -(y * np.log(s) + (1 - y) * np.log(1 - s)).mean()
    loss, grad = loss_and_grad(logits, y, n_classes=2)
    assert loss == pytest.approx(textbook, rel=1e-12)
    np.testing.assert_allclose(grad, (s - y) / 4, rtol=1e-12)
    # A confidently wrong logit costs its size in nats; no overflow, no clipping.
    far_loss, _ = loss_and_grad(np.array([[1000.0]]), np.array([[0.0]]), n_classes=2)
    assert far_loss == pytest.approx(1000.0)


def test_sparse_categorical_loss_matches_worked_example() -> None:
    # C5: only the true class's probability enters: -ln 0.1.
    logits = np.log(np.array([[0.1, 0.5, 0.1, 0.1, 0.2]]))
    loss, grad = loss_and_grad(logits, np.array([0]), n_classes=5)
    assert loss == pytest.approx(-np.log(0.1), rel=1e-12)
    np.testing.assert_allclose(grad, [[0.1 - 1, 0.5, 0.1, 0.1, 0.2]], rtol=1e-12)
    # Huge logits stay finite thanks to the max shift.
    big_loss, _ = loss_and_grad(np.array([[1000.0, 0.0, -1000.0]]), np.array([1]), n_classes=3)
    assert big_loss == pytest.approx(1000.0)


@pytest.mark.parametrize(("n_classes", "n_outputs"), [(2, 1), (5, 5)])
def test_backward_matches_finite_differences(n_classes: int, n_outputs: int) -> None:
    rng = np.random.default_rng(1)
    params = init_params([6, 5, 4, n_outputs], rng, dtype=np.float64)
    # Non-zero biases so the check also covers them, not just kernels.
    for _, bias in params:
        bias[:] = rng.normal(scale=0.1, size=bias.shape)
    x = rng.normal(size=(16, 6))
    labels = rng.integers(0, n_classes, size=16)
    y: np.ndarray = labels[:, None].astype(np.float64) if n_classes == 2 else labels

    logits, cache = forward(params, x)
    grads = backward(params, cache, loss_and_grad(logits, y, n_classes)[1])

    step = 1e-6
    for layer, (p_pair, g_pair) in enumerate(zip(params, grads, strict=True)):
        for param, grad in zip(p_pair, g_pair, strict=True):
            numeric = np.zeros_like(param)
            for index in np.ndindex(param.shape):
                original = param[index]
                param[index] = original + step
                plus = _batch_loss(params, x, y, n_classes)
                param[index] = original - step
                minus = _batch_loss(params, x, y, n_classes)
                param[index] = original
                numeric[index] = (plus - minus) / (2 * step)
            np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8, err_msg=f"{layer=}")


def test_adam_single_step_matches_hand_computation() -> None:
    param = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    grad = np.array([0.5, -3.0, 1e-4], dtype=np.float32)
    params = [(param, np.zeros(1, dtype=np.float32))]
    state = init_adam(params)
    adam_update(params, [(grad, np.zeros(1, dtype=np.float32))], state, learning_rate=0.01)

    # By hand, Keras 3 rule at t = 1: m = 0.1 g, v = 0.001 g^2,
    # alpha = 0.01 * sqrt(1 - 0.999) / (1 - 0.9), step = alpha * m / (sqrt(v) + 1e-7).
    m = 0.1 * grad.astype(np.float64)
    v = 0.001 * grad.astype(np.float64) ** 2
    alpha = 0.01 * np.sqrt(0.001) / 0.1
    expected = np.array([1.0, -2.0, 0.5]) - alpha * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(param, expected, rtol=1e-6)
    # For |g| >> epsilon the first step is lr * sign(g).
    np.testing.assert_allclose(param[:2], [0.99, -1.99], rtol=1e-6)
    # For g = 1e-4, sqrt(v) = 3.16e-6 is comparable to epsilon, which is not bias-corrected in
    # Keras: the step shrinks by 3% (0.0096934). A bias-corrected epsilon (PyTorch) gives 0.00999.
    assert 0.5 - param[2] == pytest.approx(0.0096934, rel=1e-4)
    np.testing.assert_allclose(state.m[0][0], m, rtol=1e-6)
    np.testing.assert_allclose(state.v[0][0], v, rtol=1e-6)
    assert state.step == 1


def test_adam_matches_keras_over_several_steps() -> None:
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    start = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(5)]

    variable = keras.Variable(start.copy())
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    ours = [(start.copy(), np.zeros(1, dtype=np.float32))]
    state: AdamState = init_adam(ours)
    for grad in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
        adam_update(ours, [(grad, np.zeros(1, dtype=np.float32))], state, learning_rate=0.01)
    np.testing.assert_allclose(ours[0][0], keras.ops.convert_to_numpy(variable), rtol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_three_train_steps_match_keras_train_on_batch(n_classes: int) -> None:
    # End to end: same initial weights, same batches -> same losses and weights as Keras.
    keras = pytest.importorskip("keras")
    x_train, y_train, _, _ = reference_split() if n_classes == 2 else five_class_split()
    n_outputs = 1 if n_classes == 2 else n_classes
    params = init_params([20, 10, 10, n_outputs], np.random.default_rng(0))
    inputs = keras.Input(shape=(20,))
    hidden = keras.layers.Dense(10, activation="relu")(inputs)
    hidden = keras.layers.Dense(10, activation="relu")(hidden)
    head = "sigmoid" if n_classes == 2 else "softmax"
    model = keras.Model(inputs, keras.layers.Dense(n_outputs, activation=head)(hidden))
    model.set_weights([array for pair in params for array in pair])
    loss_name = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=loss_name)

    state = init_adam(params)
    x = x_train.astype(np.float32)
    for lo in range(0, 96, 32):
        x_batch, labels = x[lo : lo + 32], y_train[lo : lo + 32]
        targets = labels.astype(np.float32)[:, None] if n_classes == 2 else labels
        keras_loss = model.train_on_batch(x_batch, targets)
        logits, cache = forward(params, x_batch)
        loss, grad_logits = loss_and_grad(logits, targets, n_classes)
        adam_update(params, backward(params, cache, grad_logits), state, learning_rate=1e-3)
        assert loss == pytest.approx(float(keras_loss), rel=1e-6)
    for ours, theirs in zip(
        [array for pair in params for array in pair], model.get_weights(), strict=True
    ):
        # Measured: at most 3e-8 apart after three steps (float32 rounding).
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_reference_run_learns_and_is_deterministic() -> None:
    x_train, y_train, x_val, y_val = reference_split()
    assert (len(x_train), len(x_val)) == (6300, 2700)
    result = train_numpy_mlp(x_train, y_train, x_val, y_val, epochs=20, seed=0)

    assert len(result.train_loss) == len(result.val_loss) == len(result.val_acc) == 20
    # Seed 0 ends at 0.954 (seeds 0-5: 0.953-0.963); 0.93 leaves room for BLAS differences.
    assert result.val_acc[-1] >= 0.93
    # C16's shape: training and validation loss both fall over the 20 epochs.
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert result.val_loss[-1] < 0.5 * result.val_loss[0]
    assert all(kernel.dtype == np.float32 for kernel, _ in result.params)
    assert result.train_seconds > 0

    again = train_numpy_mlp(x_train, y_train, x_val, y_val, epochs=2, seed=0)
    assert again.val_loss == result.val_loss[:2]


def test_five_class_run_learns() -> None:
    x_train, y_train, x_val, y_val = five_class_split()
    result = train_numpy_mlp(x_train, y_train, x_val, y_val, n_classes=5, epochs=20, seed=0)
    assert result.params[-1][0].shape == (10, 5)
    # Chance is 0.2; seed 0 reaches 0.669 (seeds 0-2: 0.660-0.681).
    assert result.val_acc[-1] >= 0.55
    assert result.val_loss[-1] < result.val_loss[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"batch_size": 0}, "batch_size"),
        ({"y_train": np.array([0, 1, 2, 0])}, "labels in"),
        ({"x_val": np.zeros((2, 3))}, "features"),
    ],
)
def test_bad_input_raises_value_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "x_train": np.zeros((4, 2)),
        "y_train": np.array([0, 1, 0, 1]),
        "x_val": np.zeros((2, 2)),
        "y_val": np.array([0, 1]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train_numpy_mlp(**args)  # type: ignore[arg-type]
