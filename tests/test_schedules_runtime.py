"""Schedules agree with Keras's own; device selection works without a GPU."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from xent_tf.config import (
    ConstantScheduleConfig,
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    OneCycleScheduleConfig,
    StepScheduleConfig,
    option_kinds,
    option_schema,
)
from xent_tf.train.runtime import inter_op_threads, select_device
from xent_tf.train.schedules import has_formula, learning_rates


def _keras_values(schedule: keras.optimizers.schedules.LearningRateSchedule, n: int) -> np.ndarray:
    return np.array([float(schedule(step)) for step in range(n)])


def test_constant_and_step() -> None:
    assert np.all(learning_rates(ConstantScheduleConfig(), 0.1, 3, 4) == np.float32(0.1))
    rates = learning_rates(StepScheduleConfig(step_epochs=2, factor=0.5), 0.1, 5, 3)
    np.testing.assert_allclose(rates[::3], [0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-6)


def test_exponential_matches_keras() -> None:
    rates = learning_rates(ExponentialScheduleConfig(final_fraction=0.01), 0.1, 4, 25)
    keras_rates = _keras_values(keras.optimizers.schedules.ExponentialDecay(0.1, 99, 0.01), 100)
    np.testing.assert_allclose(rates, keras_rates, rtol=1e-5)
    assert rates[-1] == pytest.approx(0.001, rel=1e-5)


def test_cosine_matches_keras() -> None:
    rates = learning_rates(CosineScheduleConfig(final_fraction=0.01), 0.1, 4, 25)
    keras_rates = _keras_values(keras.optimizers.schedules.CosineDecay(0.1, 99, alpha=0.01), 100)
    np.testing.assert_allclose(rates, keras_rates, rtol=1e-5)


def test_one_cycle_matches_keras_warmup_cosine() -> None:
    config = OneCycleScheduleConfig(warmup_fraction=0.3, div_factor=25, final_fraction=1e-4)
    rates = learning_rates(config, 0.1, 10, 10)
    keras_rates = _keras_values(
        keras.optimizers.schedules.CosineDecay(
            0.1 / 25, decay_steps=69, alpha=1e-4, warmup_target=0.1, warmup_steps=30
        ),
        100,
    )
    np.testing.assert_allclose(rates, keras_rates, rtol=1e-4)
    assert rates.max() == pytest.approx(0.1, rel=1e-6) and int(np.argmax(rates)) == 30


def test_device_selection_logic() -> None:
    assert select_device("auto", []).name == "/CPU:0"
    assert select_device("auto", ["/physical_device:GPU:0"]).name == "/GPU:0"
    assert select_device("cpu", ["/physical_device:GPU:0"]).kind == "cpu"
    assert select_device("gpu", ["/physical_device:GPU:0"]).kind == "gpu"
    with pytest.raises(ValueError, match=r"trainer\.device='gpu' but TensorFlow sees no GPU"):
        select_device("gpu", [])
    with pytest.raises(ValueError, match=r"trainer\.device='tpu' is not one of"):
        select_device("tpu", [])


@pytest.mark.parametrize(("threads", "pools"), [(1, "1 2"), (3, "3 3")])
def test_the_inter_op_pool_has_room_for_two_threads_calls(threads: int, pools: str) -> None:
    """configure_runtime sizes the process's pools (a fresh process: they are set only once)."""
    assert [inter_op_threads(n) for n in (1, 2, 4)] == [2, 2, 4]
    script = (
        "import tensorflow as tf\n"
        "from xent_tf.train.runtime import configure_runtime\n"
        f"configure_runtime('cpu', {threads}, 0)\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split("\n")[-2] == pools


def test_every_registered_schedule_has_a_rate_formula() -> None:
    kinds = option_kinds("schedule")
    assert kinds == ("constant", "step", "exponential", "cosine", "one_cycle")
    assert all(has_formula(option_schema("schedule", kind)) for kind in kinds)
    assert not has_formula(object)
