"""A user model must return logits: what the fuzz campaign (tests/fuzz, issue 29) found
slipping through ``models.build_user_model``, one named regression test each.

Before, only the last weighted layer's own activation was checked: a head after the last Dense
layer (Activation, Softmax, ReLU, Lambda, a nested model ending in one) trained silently under
the loss's own sigmoid (the issue's run: test accuracy 0.507, chance).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow import MlflowClient

from xent_tf.config import Config
from xent_tf.train.models import ModelBuildError, build_user_model, check_returns_logits
from xent_tf.train.pipeline import run_experiment

HERE = "tests.test_user_model_heads"


def _dense_then(head: keras.layers.Layer) -> Callable[[tuple[int, ...], int], keras.Model]:
    def build(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
        x = keras.Input(shape=input_shape)
        h = keras.layers.Dense(7, activation="tanh", name="hidden")(x)
        out = keras.layers.Dense(n_outputs, name="logits")(h)
        return keras.Model(x, head(out))

    return build


def issue_example(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    """The builder of issue 29, verbatim: a sigmoid Activation after the last Dense layer."""
    x = keras.Input(shape=input_shape)
    h = keras.layers.Dense(7, activation="tanh")(x)
    out = keras.layers.Dense(n_outputs)(h)
    return keras.Model(x, keras.layers.Activation("sigmoid", name="the_head")(out))


def _nested_head() -> keras.layers.Layer:
    inner_in = keras.Input(shape=(1,))
    return keras.Model(
        inner_in, keras.layers.Activation("sigmoid", name="squash")(inner_in), name="head_model"
    )


@keras.saving.register_keras_serializable(package="tests")
class _SigmoidDense(keras.layers.Layer):
    """A weighted layer of one's own that applies a sigmoid inside its call."""

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], 1))

    def call(self, x: object) -> object:
        return keras.ops.sigmoid(keras.ops.matmul(x, self.kernel))


def custom_sigmoid_dense(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    x = keras.Input(shape=input_shape)
    return keras.Model(x, _SigmoidDense(name="sigmoid_dense")(keras.layers.Dense(4)(x)))


def raises_runtime_error(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    raise RuntimeError("out of coffee")


def two_outputs(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    x = keras.Input(shape=input_shape)
    out = keras.layers.Dense(n_outputs)(x)
    return keras.Model(x, [out, out])


def integer_output(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    x = keras.Input(shape=input_shape)
    out = keras.layers.Dense(n_outputs)(x)
    return keras.Model(x, keras.ops.cast(out, "int32"))


def no_weights(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    x = keras.Input(shape=input_shape)
    return keras.Model(x, keras.layers.Reshape((n_outputs,))(x[:, :n_outputs]))


def logits_through_identity_layers(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    """Valid: only identity-like layers (dropout, noise, a linear Activation) after the logits,
    and a residual Add of two linear branches."""
    x = keras.Input(shape=input_shape)
    h = keras.layers.Dense(5, activation="relu")(x)
    left = keras.layers.Dense(n_outputs, name="left")(h)
    right = keras.layers.Dense(n_outputs, name="right")(h)
    out = keras.layers.Add()([left, right])
    for layer in (
        keras.layers.Dropout(0.2),
        keras.layers.GaussianNoise(0.1),
        keras.layers.Activation("linear"),
    ):
        out = layer(out)
    return keras.Model(x, out)


HEADS = {
    "activation_sigmoid": (
        keras.layers.Activation,
        ("sigmoid",),
        r"'.*/head' \(Activation \('sigmoid'\)\)",
    ),
    "softmax": (keras.layers.Softmax, (), r"'.*/head' \(Softmax\)"),
    "relu": (keras.layers.ReLU, (), r"'.*/head' \(ReLU\)"),
    "lambda": (keras.layers.Lambda, (lambda t: keras.ops.sigmoid(t),), r"'.*/head' \(Lambda\)"),
}


def head_builder(input_shape: tuple[int, ...], n_outputs: int, head: str) -> keras.Model:
    """Dense logits, then the head HEADS[head] (a fresh layer per build)."""
    kind, args, _ = HEADS[head]
    return _dense_then(kind(*args, name="head"))(input_shape, n_outputs)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_a_head_after_the_last_dense_layer_is_refused_naming_the_layer(head: str) -> None:
    pattern = HEADS[head][2]
    with pytest.raises(ModelBuildError, match=pattern + r" comes after the last weighted layer"):
        build_user_model(f"{HERE}.head_builder", {"head": head}, (20,), 1, "sigmoid")


def nested_head_model(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    return _dense_then(_nested_head())(input_shape, n_outputs)


def test_a_nested_model_ending_in_an_activation_is_refused_naming_its_layer() -> None:
    with pytest.raises(ModelBuildError, match=r"layer '.*/head_model/squash' \(Activation"):
        build_user_model(f"{HERE}.nested_head_model", {}, (20,), 1, "sigmoid")


def test_the_issue_example_is_refused_before_a_run_opens(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    config = make_config(
        "model=keras", f"model._target_={HERE}.issue_example", f"tracking.uri={tracking_uri}"
    )
    with pytest.raises(ModelBuildError, match=r"layer '.*/the_head' \(Activation \('sigmoid'\)\)"):
        run_experiment(config, tmp_path)
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert not (tmp_path / "model.keras").exists()


def test_a_custom_layer_squashing_inside_its_call_is_refused_by_the_output_probe() -> None:
    with pytest.raises(
        ModelBuildError, match=r"outputs look like probabilities, not logits: on 256"
    ):
        build_user_model(f"{HERE}.custom_sigmoid_dense", {}, (20,), 1, "sigmoid")


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        ("raises_runtime_error", r"failed when called as .*: RuntimeError: out of coffee"),
        ("two_outputs", r"returns 2 outputs; return one tensor of \(None, 1\) logits"),
        ("integer_output", r"outputs int32 values; logits must be floats"),
        ("no_weights", r"has no trainable weights"),
    ],
)
def test_other_models_that_cannot_give_logits_are_refused_naming_the_target(
    builder: str, message: str
) -> None:
    with pytest.raises(ModelBuildError, match=rf"model._target_='{HERE}.{builder}'.*{message}"):
        build_user_model(f"{HERE}.{builder}", {}, (20,), 1, "sigmoid")


def test_identity_like_layers_after_the_logits_are_accepted_with_their_logits_layers() -> None:
    model, layer = build_user_model(
        f"{HERE}.logits_through_identity_layers", {}, (6,), 3, "softmax"
    )
    assert layer is None  # two Dense layers make the logits: no single one to saturate
    inner = model.layers[1]
    assert sorted(p.name for p in check_returns_logits(inner)) == ["left", "right"]
    rows = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    probabilities = np.asarray(model(rows))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    _, logits = build_user_model(f"{HERE}.issue_example_fixed", {}, (20,), 1, "sigmoid")
    assert logits is not None and logits.name == "logits"


def issue_example_fixed(input_shape: tuple[int, ...], n_outputs: int) -> keras.Model:
    """The issue's builder returning its logits: accepted, the Dense named logits found."""
    x = keras.Input(shape=input_shape)
    h = keras.layers.Dense(7, activation="tanh")(x)
    return keras.Model(
        x, keras.layers.Dropout(0.1)(keras.layers.Dense(n_outputs, name="logits")(h))
    )
