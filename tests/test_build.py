"""The build path: today's reference numbers, user models by ``_target_``, bad input refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from xent_tf.config import Config, MlpConfig
from xent_tf.train.build import build_loss, build_model, build_run, tensor_splits
from xent_tf.train.data import make_dataset
from xent_tf.train.losses import loss_spec
from xent_tf.train.models import build_mlp
from xent_tf.train.pipeline import run_experiment
from xent_tf.train.runtime import configure_runtime
from xent_tf.train.schedules import learning_rates
from xent_tf.train.training import CompiledLoop, TensorSplit, fit, steps_per_epoch

HERE = "tests.test_build"


# ---- user models, found by their dotted path (tests.test_build.NAME) -------------------------


def tiny_user_model(input_shape: tuple[int, ...], n_outputs: int, width: int = 4) -> keras.Model:
    """One hidden Dense layer, then logits."""
    inputs = keras.Input(shape=input_shape)
    hidden = keras.layers.Dense(width, activation="relu", name="user_hidden")(inputs)
    logits = keras.layers.Dense(n_outputs, name="user_logits")(hidden)
    return keras.Model(inputs, logits, name="tiny_user_model")


def not_a_model(input_shape: tuple[int, ...], n_outputs: int) -> str:
    return "a string"


def two_logits_always(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def softmax_head(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(inputs))


def normalised_logits(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape)
    logits = keras.layers.Dense(n_outputs)(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization()(logits))


NOT_CALLABLE = 3


# ---- today's numbers -------------------------------------------------------------------------


def _old_chain(config: Config) -> tuple[float, float, list[float]]:
    """The reference run as the pipeline assembled it before xent_tf.build, step by step."""
    device = configure_runtime(config.trainer.device, config.trainer.threads, config.seed)
    data = make_dataset(config.data)
    assert isinstance(config.model, MlpConfig)
    with tf.device(device.name):
        spec = loss_spec(config.loss, data.n_classes)
        model = build_mlp(
            data.n_features, config.model.hidden_units, spec.output_units, spec.output_activation
        )
        train, val, test = (
            TensorSplit.from_numpy(s.x, spec.encode_labels(s.y, data.n_classes), s.y)
            for s in (data.train, data.val, data.test)
        )
        optimizer = keras.optimizers.Adam(learning_rate=config.optimizer.learning_rate)
        loop = CompiledLoop(model, spec.loss, optimizer, config.trainer.batch_size, False)
        rates = learning_rates(
            config.schedule,
            config.optimizer.learning_rate,
            config.trainer.epochs,
            steps_per_epoch(len(train), config.trainer.batch_size),
        )
        result = fit(loop, train, val, rates, config.trainer.epochs, config.seed)
        on_test = loop.evaluate(test)
    return on_test.loss, on_test.accuracy, [r.val_loss for r in result.history]


@pytest.mark.slow
def test_the_reference_run_gives_todays_numbers_through_the_build_path(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config("tracking=off", "trainer.verbose=false", tiny=False)
    summary = run_experiment(config, tmp_path)
    # Measured with the code before xent_tf.build (commit 6588dbb): 0.12111637741327286 and
    # 0.9629999995231628 on this machine; printed as the run prints them:
    assert (f"{summary.test_loss:.4f}", f"{summary.test_acc:.4f}") == ("0.1211", "0.9630")
    assert summary.n_params == 331
    # ... and bit for bit the old hand-assembled chain, in this process.
    loss, accuracy, val_losses = _old_chain(config)
    assert (summary.test_loss, summary.test_acc) == (loss, accuracy)
    assert [r.val_loss for r in summary.history] == val_losses


def test_build_run_gives_every_part(make_config: Callable[..., Config]) -> None:
    parts = build_run(make_config("data=multiclass", "loss=cce", "optimizer=sgd"), reuse_loop=False)
    assert (len(parts.train), len(parts.val), len(parts.test)) == (210, 90, 100)
    assert tuple(parts.train.targets.shape) == (210, 5)  # one-hot for cce
    assert parts.model.count_params() == 20 * 10 + 10 + 10 * 10 + 10 + 10 * 5 + 5
    assert parts.loop.model is parts.model and parts.spec.output_units == 5
    assert type(parts.optimizer).__name__ == "SGD"
    assert parts.steps_per_epoch == 7 and parts.rates().shape == (14,)
    assert np.all(parts.rates() == np.float32(0.1)) and np.all(parts.rates(0.5) == np.float32(0.5))


def test_build_model_depends_on_the_seed_only(make_config: Callable[..., Config]) -> None:
    config = make_config()
    data = make_dataset(config.data)
    spec = build_loss(config.loss, data)
    first, again, other = (build_model(config.model, data, spec, seed) for seed in (3, 3, 4))
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])


# ---- user models -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "from_logits", "units", "activation", "n_params"),
    [
        ("bce", False, 1, "sigmoid", 20 * 3 + 3 + 3 * 1 + 1),
        ("cce", False, 2, "softmax", 20 * 3 + 3 + 3 * 2 + 2),
        ("sparse_cce", True, 2, "linear", 20 * 3 + 3 + 3 * 2 + 2),
    ],
)
def test_a_user_model_gets_the_head_the_loss_needs(
    make_config: Callable[..., Config],
    loss: str,
    from_logits: bool,
    units: int,
    activation: str,
    n_params: int,
) -> None:
    config = make_config(
        "model=keras",
        f"model._target_={HERE}.tiny_user_model",
        "+model.kwargs.width=3",
        f"loss={loss}",
        f"loss.from_logits={str(from_logits).lower()}",
    )
    data = make_dataset(config.data)
    model = build_model(config.model, data, build_loss(config.loss, data), seed=0)
    assert tuple(model.output.shape) == (None, units) and model.count_params() == n_params
    assert model.layers[-1].name == "output_activation"
    assert model.layers[-1].activation.__name__ == activation


def test_saturated_init_reaches_a_user_models_logits(make_config: Callable[..., Config]) -> None:
    config = make_config(
        "model=keras", f"model._target_={HERE}.tiny_user_model", "model.output_init=saturated"
    )
    data = make_dataset(config.data)
    spec = build_loss(config.loss, data)
    model = build_model(config.model, data, spec, seed=0)
    kernel, bias = model.layers[1].get_layer("user_logits").get_weights()
    wrong = int(np.argmin(np.bincount(data.train.y)))
    assert bias.tolist() == [10.0 if wrong == 1 else -10.0]
    assert np.abs(kernel).max() < 0.01
    train, _, _ = tensor_splits(data, spec)
    p_one = np.asarray(model(train.x))[:, 0]
    assert np.all(np.abs(p_one - (1.0 if wrong == 1 else 0.0)) < 1e-3)  # confidently one class


def test_a_user_model_trains_range_tests_and_is_recorded(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = make_config(
        "model=keras",
        f"model._target_={HERE}.tiny_user_model",
        "+model.kwargs.width=3",
        "lr_find=on",
        "lr_find.num_steps=20",
        f"tracking.uri={tracking_uri}",
    )
    summary = run_experiment(config, tmp_path)
    client = MlflowClient(tracking_uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.name"] == "keras" and params["model._target_"] == f"{HERE}.tiny_user_model"
    assert params["model.kwargs.width"] == "3" and params["model.n_params"] == "67"
    assert summary.n_params == 67 and len(summary.history) == 2
    history = client.get_metric_history(summary.run_id, "val/loss")
    assert [m.step for m in history] == [1, 2]
    assert history[-1].value == pytest.approx(summary.history[-1].val_loss)
    assert {f"grad_norm/{name}" for name in ("user_hidden", "user_logits")} <= set(run.data.metrics)
    steps = client.get_metric_history(summary.run_id, "lr_find/lr")
    assert len(steps) >= 10 and min(m.value for m in steps) == pytest.approx(1e-6)
    used = float(params["lr_find.used_lr"])
    assert client.get_metric_history(summary.run_id, "lr")[0].value == pytest.approx(used)
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "plots")}
    assert artifacts == {"plots/lr_find.png", "plots/loss_curve.png"}
    # The user model is the run's logged model, and predicts what the trained model predicts.
    [output] = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).source_run_id == summary.run_id
    saved = keras.models.load_model(tmp_path / "model.keras")
    assert saved.count_params() == 67
    x = make_dataset(config.data).test.x[:20]
    mlflow.set_tracking_uri(tracking_uri)
    try:
        logged = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    finally:
        mlflow.set_tracking_uri("")
    np.testing.assert_allclose(
        np.asarray(logged.predict(x)), saved.predict(x, verbose=0), rtol=1e-6
    )


def test_a_csv_file_trains_end_to_end(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3))
    y = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    rows = ["a,b,c,answer"] + [
        f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{t}" for r, t in zip(x, y, strict=True)
    ]
    path = tmp_path / "answers.csv"
    path.write_text("\n".join(rows) + "\n")
    config = make_config(
        "data=csv",
        f"data.path={path}",
        "data.label=answer",
        "data.name=answers",
        "+debug=quick",
        "trainer.verbose=false",
        "tracking.log_model=false",
        f"tracking.uri={tracking_uri}",
        tiny=False,
    )
    summary = run_experiment(config, tmp_path)
    run = MlflowClient(tracking_uri).get_run(summary.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data"] == "answers"
    assert run.data.params["data.path"] == str(path) and run.data.params["data.source"] == "csv"
    # 120 rows: 24 test, 29 validation, 67 training; 3 features, 2 classes, one sigmoid unit
    assert summary.n_params == 3 * 10 + 10 + 10 * 10 + 10 + 10 + 1
    assert run.data.metrics["test/acc"] == pytest.approx(summary.test_acc)
    data = make_dataset(config.data)
    assert (len(data.train), len(data.val), len(data.test)) == (67, 29, 24)
    assert data.class_names == ("no", "yes") and data.input_shape == (3,)
    assert summary.test_acc * 24 == pytest.approx(round(summary.test_acc * 24), abs=1e-4)


# ---- bad input: refused before training, and no run is left in the store ----------------------


def _csv(tmp_path: Path, kind: str) -> str:
    """A small CSV with one defect (or none), written for one test."""
    path = tmp_path / f"{kind}.csv"
    if kind == "missing":
        return str(path)
    rows = ["f1,f2,label"] + [f"{i},{i % 7},{'ab'[i % 2]}" for i in range(40)]
    if kind == "nan":
        rows[4] = "3,,b"
    elif kind == "text":
        rows[4] = "three,3,b"
    elif kind == "one_class":
        rows = ["f1,f2,label"] + [f"{i},{i},a" for i in range(40)]
    elif kind == "few_rows":
        rows = rows[:6]
    elif kind == "three_classes":
        rows = ["f1,f2,label"] + [f"{i},{i % 7},{'abc'[i % 3]}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


BAD_INPUTS = [
    ("missing", ["data=csv", "data.label=label"], r"data.path='.*missing.csv': no such file"),
    ("ok", ["data=csv", "data.label=target"], r"data.label='target' is not a column .*'label'\]"),
    ("nan", ["data=csv", "data.label=label"], r"NaN \(empty\) feature values: \{'f2': 1\}"),
    ("text", ["data=csv", "data.label=label"], r"non-numeric feature column\(s\) \['f1'\]"),
    ("one_class", ["data=csv", "data.label=label"], r"has one class \(a\) in 40 rows"),
    ("few_rows", ["data=csv", "data.label=label"], r"too few rows for the split: 5 rows, 2"),
    (
        None,
        ["model=keras", "model._target_=no_such_package.models.build"],
        r"cannot import module 'no_such_package.models'",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.no_such_builder"],
        rf"module '{HERE}' has no attribute 'no_such_builder'; it has \[.*'tiny_user_model'",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.NOT_CALLABLE"],
        r"is a int, not a callable",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.not_a_model"],
        r"returned a str, not a keras.Model",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.two_logits_always"],
        r"outputs shape \(None, 2\); the loss needs \(None, 1\): 1 unit for bce",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.two_logits_always", "data=multiclass", "loss=cce"],
        r"outputs shape \(None, 2\); the loss needs \(None, 5\)",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.softmax_head"],
        r"last weighted layer '.*dense.*' applies 'softmax'; return logits",
    ),
    (
        None,
        ["model=keras", f"model._target_={HERE}.tiny_user_model", "+model.kwargs.depth=2"],
        r"failed when called as .*unexpected keyword argument 'depth'",
    ),
    (
        None,
        [
            "model=keras",
            f"model._target_={HERE}.normalised_logits",
            "model.output_init=saturated",
        ],
        r"output_init='saturated' needs a Dense-like last layer",
    ),
    # A CSV's class count is known only once it is read: refused by the build, not the config.
    (
        "three_classes",
        ["data=csv", "data.label=label"],
        r"data.name='csv' has 3 classes: loss.name='bce' needs binary data, got n_classes=3",
    ),
    (
        None,
        ["model=convnet", "loss=sparse_cce", "data=wine"],
        r"small_convnet needs rows of 8x8 = 64 features .* got input_shape=\(13,\)",
    ),
]


@pytest.mark.parametrize(("csv", "overrides", "message"), BAD_INPUTS)
def test_bad_input_fails_before_training_and_leaves_no_run(
    make_config: Callable[..., Config],
    tracking_uri: str,
    tmp_path: Path,
    csv: str | None,
    overrides: list[str],
    message: str,
) -> None:
    extra = [f"data.path={_csv(tmp_path, csv)}"] if csv else []
    tiny = not any(o.startswith("data=") and o != "data=multiclass" for o in overrides)
    config = make_config(
        *overrides,
        *extra,
        *([] if tiny else ["+debug=quick"]),
        f"tracking.uri={tracking_uri}",
        tiny=tiny,
    )
    with pytest.raises(ValueError, match=message):
        run_experiment(config, tmp_path)
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []
