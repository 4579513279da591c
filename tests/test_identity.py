"""Run names and variant tags: what the MLflow UI groups a study's runs by."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xent_tf.config import Config
from xent_tf.track.identity import run_identity, variant_parts


def test_a_study_job_is_named_by_its_variant_and_seed(make_config: Callable[..., Config]) -> None:
    overrides = [
        "+experiment=binary_vs_categorical",
        "data=multiclass",
        "loss=sparse_cce",
        "seed=3",
        "trainer.epochs=2",
        "tracking.uri=sqlite:////tmp/x.db",
        "hydra/launcher=joblib",
    ]
    config = make_config(*overrides)
    identity = run_identity("binary_vs_categorical", config, overrides)
    assert identity.run_name == "multiclass sparse_cce seed=3"
    assert identity.variant_id == "multiclass sparse_cce"
    # The study report's label for the same variant (its group_by params, short names).
    assert identity.variant_label == "data=multiclass loss=sparse_cce"
    assert identity.tags == {
        "xent.study": "binary_vs_categorical",
        "xent.variant": "multiclass sparse_cce",
        "xent.variant_label": "data=multiclass loss=sparse_cce",
    }


def test_a_config_group_choice_and_a_param_both_name_the_variant(
    make_config: Callable[..., Config],
) -> None:
    overrides = [
        "+experiment=mse_vs_ce",
        "loss=mse",
        "optimizer=sgd",
        "model.output_init=saturated",
        "seed=0",
    ]
    identity = run_identity("mse_vs_ce", make_config(*overrides), overrides)
    assert identity.run_name == "mse sgd output_init=saturated seed=0"
    assert identity.variant_label == "data=reference loss=mse optimizer=sgd output_init=saturated"


def test_a_rate_arm_names_the_lr_sweep_variant(make_config: Callable[..., Config]) -> None:
    """lr_sweep's arms are config-group choices that set its two variant keys at once."""
    for arm, label in (
        ("grid3", "use=given learning_rate=0.01"),
        ("valley", "use=valley learning_rate=0.1"),
    ):
        overrides = ["+experiment=lr_sweep", f"+rate_arm={arm}", "seed=2"]
        identity = run_identity("lr_sweep", make_config(*overrides), overrides)
        assert identity.run_name == f"{arm} seed=2"
        assert identity.variant_label == label


def test_settings_shared_by_every_job_are_not_part_of_a_study_variant() -> None:
    overrides = ["optimizer.learning_rate=0.1", "trainer.epochs=3", "data.n_samples=300", "seed=1"]
    assert variant_parts("lr_sweep", overrides) == ["learning_rate=0.1"]
    # Without a study nothing says which overrides vary: all but the run settings name it.
    assert variant_parts("", overrides) == ["learning_rate=0.1", "epochs=3", "n_samples=300"]
    # A config group's choice is named by the option alone.
    assert variant_parts("", ["data=digits", "loss=ce", "seed=0"]) == ["digits", "ce"]


def test_a_single_run_without_overrides_is_named_after_its_experiment(
    make_config: Callable[..., Config],
) -> None:
    identity = run_identity("", make_config(), [])
    assert identity.run_name == "reference seed=0"
    assert identity.tags == {"xent.variant": "reference", "xent.variant_label": "reference"}


def test_an_unknown_study_is_named_in_the_error(make_config: Callable[..., Config]) -> None:
    with pytest.raises(ValueError, match="study='nope' is not one of"):
        run_identity("nope", make_config(), [])
