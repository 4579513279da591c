"""The compiled training path computes what a plain GradientTape loop computes, and stops on NaN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from xent_tf.config import AdamConfig, LossConfig, MakeClassificationConfig, MlpConfig, SgdConfig
from xent_tf.train.build import (
    build_dataset,
    build_loss,
    build_model,
    build_optimizer,
    tensor_splits,
)
from xent_tf.train.data import make_dataset
from xent_tf.train.losses import loss_spec
from xent_tf.train.models import build_mlp
from xent_tf.train.training import (
    CompiledLoop,
    NonFiniteLossError,
    TensorSplit,
    fit,
    reusable_loop,
    steps_per_epoch,
)

SMALL = MakeClassificationConfig(n_samples=600, n_test=100)


def _setup(
    loss: str = "bce", n_classes: int = 2, seed: int = 0, optimizer: str = "adam", lr: float = 1e-2
) -> tuple[keras.Model, CompiledLoop, TensorSplit, TensorSplit]:
    data = build_dataset(
        SMALL
        if n_classes == 2
        else MakeClassificationConfig(n_samples=600, n_test=100, n_classes=n_classes)
    )
    spec = build_loss(LossConfig(name=loss), data)
    model = build_model(MlpConfig(hidden_units=[8, 8]), data, spec, seed)
    opt = build_optimizer(
        AdamConfig(learning_rate=lr)
        if optimizer == "adam"
        else SgdConfig(learning_rate=lr, momentum=0.9)
    )
    loop = CompiledLoop(model, spec.loss, opt, batch_size=32, from_logits=False)
    train, val, _ = tensor_splits(data, spec)
    return model, loop, train, val


@pytest.mark.parametrize(
    ("loss", "n_classes", "optimizer"),
    [("bce", 2, "adam"), ("sparse_cce", 5, "sgd"), ("cce", 5, "adam"), ("mse", 2, "sgd")],
)
def test_compiled_epoch_matches_a_plain_gradient_tape_loop(
    loss: str, n_classes: int, optimizer: str
) -> None:
    model, loop, train, _ = _setup(loss, n_classes, optimizer=optimizer)
    # The same starting point for the reference loop: a clone with identical weights.
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    ref_opt = (
        keras.optimizers.Adam(1e-2) if optimizer == "adam" else keras.optimizers.SGD(1e-2, 0.9)
    )
    order = np.random.default_rng(1).permutation(len(train))
    n_steps = steps_per_epoch(len(train), 32)  # 350 rows -> 11 steps, the last of 30 rows
    rates = np.full(n_steps, 1e-2, np.float32)

    losses, mean_loss, _ = loop.run_epoch(train, order, rates)

    x, targets = train.x.numpy()[order], train.targets.numpy()[order]
    expected = []
    for step in range(n_steps):
        rows = slice(step * 32, (step + 1) * 32)
        with tf.GradientTape() as tape:
            batch_loss = loop.loss(targets[rows], reference(x[rows], training=True))
        grads = tape.gradient(batch_loss, reference.trainable_variables)
        ref_opt.apply(grads, reference.trainable_variables)
        expected.append(float(batch_loss))

    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-6)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    sizes = np.array([32] * (n_steps - 1) + [len(train) - 32 * (n_steps - 1)])
    assert mean_loss == pytest.approx(np.sum(np.array(expected) * sizes) / sizes.sum(), rel=1e-6)


def test_per_step_learning_rates_are_applied() -> None:
    # With SGD (no momentum) and rate 0 for every step, nothing may move.
    data = make_dataset(SMALL)
    spec = loss_spec(LossConfig(), 2)
    model = build_mlp(20, [4], 1, "sigmoid")
    loop = CompiledLoop(model, spec.loss, keras.optimizers.SGD(0.1), 32, False)
    train = TensorSplit.from_numpy(data.train.x, spec.encode_labels(data.train.y, 2), data.train.y)
    before = [w.copy() for w in model.get_weights()]
    loop.run_epoch(train, np.arange(64), np.zeros(2, np.float32))
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    loop.run_epoch(train, np.arange(64), np.full(2, 0.5, np.float32))
    assert not np.array_equal(model.get_weights()[0], before[0])


def test_fit_records_every_epoch_with_validation_and_gradient_norms() -> None:
    _, loop, train, val = _setup()
    n_steps = steps_per_epoch(len(train), 32)
    result = fit(loop, train, val, np.full(3 * n_steps, 1e-2, np.float32), epochs=3, seed=0)
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert len(result.batch_losses) == 3 * n_steps
    assert set(result.history[0].grad_norms) == {"hidden_1", "hidden_2", "output"}
    assert all(v > 0 for v in result.history[0].grad_norms.values())
    assert result.history[-1].val_loss < result.history[0].val_loss
    metrics = result.history[0].metrics()
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "grad_norm/output"} <= set(metrics)


def test_same_seed_gives_identical_histories() -> None:
    histories = []
    for _ in range(2):
        _, loop, train, val = _setup(seed=3)
        n_steps = steps_per_epoch(len(train), 32)
        result = fit(loop, train, val, np.full(2 * n_steps, 1e-2, np.float32), epochs=2, seed=3)
        histories.append([(r.train_loss, r.val_loss, r.val_acc) for r in result.history])
    assert histories[0] == histories[1]


def test_nan_loss_stops_training_at_once_and_records_the_epoch() -> None:
    _, loop, train, val = _setup(loss="mse", optimizer="sgd")
    n_steps = steps_per_epoch(len(train), 32)
    seen = []
    rates = np.full(3 * n_steps, 1e-2, np.float32)
    rates[n_steps + 2 :] = np.inf  # the 2nd epoch's third step sends the weights to inf
    with pytest.raises(NonFiniteLossError, match="NaN/inf at epoch 2") as info:
        fit(loop, train, val, rates, epochs=3, seed=0, on_epoch_end=seen.append)
    assert [r.epoch for r in seen] == [1, 2]  # epoch 2 was recorded, epoch 3 never ran
    assert info.value.epoch == 2
    # it stopped within epoch 2: fewer batch losses than two full epochs
    assert len(info.value.result.batch_losses) < 2 * n_steps


def test_wrong_number_of_rates_is_refused() -> None:
    _, loop, train, val = _setup()
    with pytest.raises(ValueError, match="expected \\(22,\\) = epochs 2 x 11 steps"):
        fit(loop, train, val, np.ones(5, np.float32), epochs=2, seed=0)


def test_schedule_object_learning_rate_is_refused() -> None:
    model = build_mlp(3, [2], 1, "sigmoid")
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(ValueError, match="learning_rate is a schedule object"):
        CompiledLoop(
            model, keras.losses.BinaryCrossentropy(), keras.optimizers.SGD(schedule), 8, False
        )


def test_evaluate_matches_a_plain_forward_pass_and_gradient() -> None:
    model, loop, train, val = _setup()
    before = [w.copy() for w in model.get_weights()]
    result = loop.evaluate(val)
    outputs = model(val.x, training=False)
    with tf.GradientTape() as tape:
        loss = loop.loss(val.targets, model(val.x, training=False))
    grads = tape.gradient(loss, model.trainable_variables)
    expected_norm = np.sqrt(sum(float(tf.reduce_sum(g**2)) for g in grads[-2:]))  # output layer
    assert result.loss == pytest.approx(float(loss), rel=1e-6)
    assert result.grad_norms["output"] == pytest.approx(expected_norm, rel=1e-5)
    predicted = (np.asarray(outputs)[:, 0] > 0.5).astype(np.int32)
    assert result.accuracy == pytest.approx(np.mean(predicted == val.labels.numpy()), abs=1e-7)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)  # evaluating never trains
    # the test split has another row count: the same trace serves it
    assert loop.evaluate(train).loss > 0
    assert loop._compiled_evaluate is not None
    assert loop._compiled_evaluate.experimental_get_tracing_count() == 1


def _fresh(
    seed: int, hidden: list[int], loss: str = "bce", lr: float = 1e-2
) -> tuple[keras.Model, keras.losses.Loss, keras.optimizers.Optimizer]:
    spec = loss_spec(LossConfig(name=loss), 2)
    keras.utils.set_random_seed(seed)
    model = build_mlp(20, hidden, spec.output_units, spec.output_activation)
    return model, spec.loss, keras.optimizers.Adam(lr)


def test_a_reused_loop_trains_exactly_like_a_fresh_one() -> None:
    data = build_dataset(SMALL)
    train, val, _ = tensor_splits(data, build_loss(LossConfig(), data))
    rates = np.full(2 * steps_per_epoch(len(train), 32), 1e-2, np.float32)

    # A first run leaves the process's loop trained (weights, Adam moments, step counter moved).
    first = reusable_loop(*_fresh(0, [6, 6]), 32, False)
    fit(first, train, val, rates, epochs=2, seed=0)

    model, loss, optimizer = _fresh(5, [6, 6])
    initial_weights = [w.copy() for w in model.get_weights()]
    reused = reusable_loop(model, loss, optimizer, 32, False)
    assert reused is first  # same architecture, loss, optimizer kind, batch: no new trace
    assert reused.model is not model
    for got, want in zip(reused.model.get_weights(), initial_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    assert int(reused.optimizer.iterations.numpy()) == 0
    reused_result = fit(reused, train, val, rates, epochs=2, seed=5)

    fresh = CompiledLoop(*_fresh(5, [6, 6]), 32, False)
    fresh_result = fit(fresh, train, val, rates, epochs=2, seed=5)
    np.testing.assert_array_equal(reused_result.batch_losses, fresh_result.batch_losses)
    assert [r.val_loss for r in reused_result.history] == [r.val_loss for r in fresh_result.history]
    for got, want in zip(reused.model.get_weights(), fresh.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_different_shape_loss_or_batch_gets_its_own_loop() -> None:
    base = reusable_loop(*_fresh(0, [5]), 32, False)
    assert reusable_loop(*_fresh(0, [5]), 32, False) is base
    assert reusable_loop(*_fresh(0, [7]), 32, False) is not base
    assert reusable_loop(*_fresh(0, [5], loss="mse"), 32, False) is not base
    assert reusable_loop(*_fresh(0, [5]), 16, False) is not base
    model, loss, _ = _fresh(0, [5])
    assert reusable_loop(model, loss, keras.optimizers.SGD(0.1), 32, False) is not base
