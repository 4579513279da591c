"""Every config group composes; bad input fails before training with a message that names it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from tests.conftest import CONFIG_DIR, compose_config
from xent_tf.config import (
    LOSSES,
    BundledDataConfig,
    Config,
    CsvDataConfig,
    KerasModelConfig,
    OneCycleScheduleConfig,
    SgdConfig,
    option_kinds,
    option_schema,
    to_config,
)
from xent_tf.train.losses import LOSS_BUILDERS

GROUPS = ["data", "model", "loss", "optimizer", "schedule", "trainer", "tracking", "debug"]


def group_options() -> list[tuple[str, str]]:
    return [
        (group, path.stem)
        for group in GROUPS
        for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
    ]


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_group_option_composes(group: str, option: str) -> None:
    prefix = "+" if group == "debug" else ""
    overrides = [f"{prefix}{group}={option}"]
    if group == "data" and option in ("multiclass", "digits", "wine", "iris"):
        overrides.append("loss=ce")  # the default bce needs binary data
    if group == "data" and option == "csv":
        overrides += ["data.path=table.csv", "data.label=target"]  # no defaults: yours to give
    if group == "model" and option == "keras":
        overrides.append("model._target_=my_models.build")  # no default: yours to give
    config = to_config(compose_config(overrides))
    assert isinstance(config, Config)


def test_defaults_are_the_reference_run(make_config: Callable[..., Config]) -> None:
    config = make_config(tiny=False)
    assert config.experiment_name == "reference"
    assert (config.data.n_samples, config.data.n_informative, config.data.random_state) == (
        10_000,
        10,
        2022,
    )
    assert config.model.hidden_units == [10, 10]
    assert (config.loss.name, config.optimizer.name, config.optimizer.learning_rate) == (
        "bce",
        "adam",
        0.001,
    )
    assert (config.trainer.epochs, config.trainer.batch_size) == (20, 32)
    assert config.tracking.uri == "sqlite:///mlflow.db"


def test_command_line_overrides_reach_the_config(make_config: Callable[..., Config]) -> None:
    config = make_config("loss=mse", "optimizer.learning_rate=0.01", "trainer.epochs=5")
    assert (config.loss.name, config.optimizer.learning_rate, config.trainer.epochs) == (
        "mse",
        0.01,
        5,
    )


def test_unknown_group_choice_lists_the_options() -> None:
    with pytest.raises(ConfigCompositionException, match="Could not find 'loss/hinge'") as info:
        compose_config(["loss=hinge"])
    assert "bce" in str(info.value) and "sparse_cce" in str(info.value)


def test_typo_in_a_key_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["trainer.epocs=3"])
    assert isinstance(info.value.__cause__, ConfigAttributeError | ConfigKeyError)
    assert "Key 'epocs' not in 'TrainerConfig'" in str(info.value.__cause__)


def test_wrong_type_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["trainer.epochs=many"])
    assert isinstance(info.value.__cause__, ValidationError)
    assert "many" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.epochs=0"], r"trainer.epochs=0 must be >= 1"),
        (["trainer.epochs=-3"], r"trainer.epochs=-3 must be >= 1"),
        (["trainer.batch_size=0"], r"trainer.batch_size=0 must be >= 1"),
        (["trainer.batch_size=-32"], r"trainer.batch_size=-32 must be >= 1"),
        (["model.hidden_units=[]"], r"model.hidden_units=\[\] is empty"),
        (["model.hidden_units=[10,0]"], r"model.hidden_units=\[10, 0\] has width 0"),
        (["data.n_informative=25"], r"data.n_informative=25 must be between 1 and"),
        (
            ["data=multiclass", "loss=bce"],
            r"loss.name='bce' needs binary data, but data 'multiclass' has 5 classes; use "
            "loss=ce, cce or sparse_cce",
        ),
        (["data=digits"], r"loss.name='bce' needs binary data, but data 'digits' has 10 classes"),
        (["optimizer.learning_rate=0"], r"optimizer.learning_rate=0.0 must be > 0"),
        (["optimizer.learning_rate=-0.1"], r"optimizer.learning_rate=-0.1 must be > 0"),
        (["trainer.device=tpu"], r"trainer.device='tpu' is not one of \['auto', 'cpu', 'gpu'\]"),
        (["loss=mse", "loss.from_logits=true"], r"from_logits=true does not apply"),
        (["loss=sparse_cce", "loss.label_smoothing=0.1"], r"label_smoothing=0.1 is not supported"),
        (
            ["optimizer=sgd", "optimizer.momentum=1.0"],
            r"optimizer.momentum=1.0 must be in \[0, 1\)",
        ),
        (["optimizer.name=sgd"], r"optimizer.name='sgd' does not match the selected optimizer"),
        (["schedule=cosine", "schedule.name=step"], r"schedule.name='step' does not match"),
        (["schedule=step", "schedule.factor=2"], r"schedule.factor=2.0 must be in \(0, 1\]"),
        (
            ["data=digits", "data.name=mnist"],
            r"data.name='mnist' is not one of \['breast_cancer', ",
        ),
        (["data=iris", "data.test_fraction=1.5"], r"data.test_fraction=1.5 must be strictly"),
        (["model=keras", "model._target_=nodots"], r"model._target_='nodots' is not a dotted path"),
        (["model=keras", "model._target_=a.1b"], r"model._target_='a.1b' is not a dotted path"),
        (["seed=-1"], r"seed=-1 must be >= 0"),
        (["lr_find=on", "lr_find.min_lr=20"], r"lr_find.max_lr=10.0 must be > lr_find.min_lr=20"),
        (["lr_find=on", "lr_find.min_lr=0"], r"lr_find.min_lr=0.0 must be > 0"),
        (["lr_find=on", "lr_find.num_steps=5"], r"lr_find.num_steps=5 must be >= 10"),
        (["lr_find.use=best"], r"lr_find.use='best' is not one of"),
    ],
)
def test_bad_values_fail_with_a_message_naming_them(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_config(compose_config(overrides))


def test_experiment_and_debug_files_compose() -> None:
    for path in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml")):
        config = to_config(compose_config([f"+experiment={path.stem}", "+debug=tiny"]))
        assert config.trainer.epochs <= 2, path.stem


@pytest.mark.parametrize(
    ("overrides", "key", "schema"),
    [
        (["optimizer.momentum=0.9"], "momentum", "AdamConfig"),  # SGD's field on Adam
        (["schedule=step", "schedule.final_fraction=0.1"], "final_fraction", "StepScheduleConfig"),
        (["data=digits", "data.n_informative=5"], "n_informative", "BundledDataConfig"),
        (["data=reference", "data.path=x.csv"], "path", "MakeClassificationConfig"),
        (["model=keras", "model.hidden_units=[4]"], "hidden_units", "KerasModelConfig"),
        (["model.kwargs={a: 1}"], "kwargs", "MlpConfig"),
    ],
)
def test_a_field_of_another_option_fails_at_compose_time(
    overrides: list[str], key: str, schema: str
) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(overrides)
    assert f"Key '{key}' not in '{schema}'" in str(info.value.__cause__)


def test_unknown_data_set_and_model_names_list_the_options() -> None:
    with pytest.raises(ConfigCompositionException, match="Could not find 'data/mnist'") as info:
        compose_config(["data=mnist"])
    for name in ("breast_cancer", "csv", "digits", "iris", "multiclass", "reference", "wine"):
        assert f"\t{name}\n" in str(info.value)
    with pytest.raises(ConfigCompositionException, match="Could not find 'model/resnet'") as info:
        compose_config(["model=resnet"])
    assert "\tkeras\n" in str(info.value) and "\tmlp\n" in str(info.value)


def test_every_option_file_extends_a_registered_schema_and_every_schema_is_used() -> None:
    """The kinds are written once (``@option``); each YAML option names one in its defaults."""
    import yaml

    for group in ("data", "model", "optimizer", "schedule"):
        used = set()
        for path in sorted((Path(CONFIG_DIR) / group).glob("*.yaml")):
            defaults = yaml.safe_load(path.read_text())["defaults"]
            schema = defaults[0].removeprefix(f"/schema/{group}/").removesuffix("@_here_")
            assert schema in option_kinds(group), (path, schema)
            used.add(schema)
        assert used == set(option_kinds(group)), group


def test_option_kinds_and_schemas() -> None:
    assert option_kinds("data") == (
        "make_classification",
        "make_moons",
        "make_circles",
        "sklearn",
        "csv",
    )
    assert option_kinds("model") == ("mlp", "keras")
    assert option_kinds("optimizer") == ("adam", "sgd")
    assert option_schema("optimizer", "sgd") is SgdConfig
    with pytest.raises(ValueError, match=r"optimizer kind 'nag' is not one of \['adam', 'sgd'\]"):
        option_schema("optimizer", "nag")


def test_every_loss_name_has_a_builder() -> None:
    assert (*LOSS_BUILDERS, "ce") == LOSSES == ("bce", "cce", "sparse_cce", "mse", "mse_raw", "ce")


def test_the_composed_options_have_their_own_schemas(make_config: Callable[..., Config]) -> None:
    config = make_config(
        "data=wine", "loss=cce", "optimizer=sgd", "schedule=one_cycle", "+debug=quick", tiny=False
    )
    assert isinstance(config.data, BundledDataConfig) and config.data.name == "wine"
    assert isinstance(config.optimizer, SgdConfig) and config.optimizer.momentum == 0.0
    assert isinstance(config.schedule, OneCycleScheduleConfig)
    assert config.schedule.final_fraction == 1e-4
    config = make_config(
        "model=convnet",
        "model.kwargs.filters=4",
        "data=digits",
        "loss=cce",
        "+debug=quick",
        tiny=False,
    )
    assert isinstance(config.model, KerasModelConfig)
    assert config.model._target_ == "xent_tf.zoo.small_convnet"
    assert config.model.kwargs == {"image_shape": [8, 8], "filters": 4, "hidden_units": 32}
    config = make_config(
        "data=csv",
        "data.path=my.csv",
        "data.label=y",
        "model=keras",
        "model._target_=my_models.build",
        "+model.kwargs.extra=1",
        "+debug=quick",
        tiny=False,
    )
    assert isinstance(config.data, CsvDataConfig) and (config.data.path, config.data.label) == (
        "my.csv",
        "y",
    )
    assert config.model.kwargs == {"extra": 1}  # type: ignore[attr-defined]


def test_to_config_converts_a_sweep_jobs_config_field_by_field_as_omegaconf_would() -> None:
    import copy

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict, read_write

    from xent_tf.config import Config, to_config

    overrides = ["+experiment=mse_vs_ce", "loss=mse", "optimizer=sgd", "+resume=matching"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        job = compose("config", overrides, return_hydra_config=True)  # as a sweep job has it
    reference = copy.deepcopy(job)  # the old way: a copy without Hydra's node, as a whole
    with read_write(reference), open_dict(reference):
        del reference["hydra"], reference["resume"]
    expected = OmegaConf.to_object(reference)
    assert isinstance(expected, Config)
    assert to_config(job) == expected
    assert to_config(job).loss.name == "mse" and "hydra" in job  # the job's config is untouched
    with pytest.raises(TypeError, match="expected a config built on config_schema"):
        to_config(OmegaConf.create({"seed": 1}))


# Found by the fuzz campaign (tests/fuzz, issue 29): each was accepted before and failed (or
# misreported) only once a run had opened, or was refused with a library's message that did
# not name the key.
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.learning_rate=inf"], r"optimizer.learning_rate=inf must be a finite number"),
        (
            ["model.output_init=saturated", "model.saturation_scale=inf"],
            r"model.saturation_scale=inf must be a finite number",
        ),
        (["lr_find=on", "lr_find.max_lr=inf"], r"lr_find.max_lr=inf must be a finite number"),
        (
            ["schedule=one_cycle", "schedule.div_factor=inf"],
            r"schedule.div_factor=inf must be a finite number",
        ),
        (["loss=cce", "loss.label_smoothing=-inf"], r"loss.label_smoothing=-inf must be a finite"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_config(compose_config(["+debug=tiny", *overrides]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=4294967296"], r"seed=4294967296 must be >= 0 and < 2\*\*32"),
        (["data.split_seed=-1"], r"data.split_seed=-1 must be >= 0 and < 2\*\*32"),
        (["data.random_state=-5"], r"data.random_state=-5 must be >= 0 and < 2\*\*32"),
        (["data.n_redundant=-1"], r"data.n_redundant=-1 must be >= 0"),
        (["data.n_clusters_per_class=0"], r"data.n_clusters_per_class=0 must be >= 1"),
    ],
)
def test_values_numpy_or_scikit_learn_refuse_are_refused_by_the_config_naming_the_key(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        to_config(compose_config(["+debug=tiny", *overrides]))
    config = to_config(compose_config(["+debug=tiny", "seed=4294967295"]))
    assert config.seed == 2**32 - 1  # the largest seed NumPy takes is still accepted


def test_a_test_set_smaller_than_the_class_count_is_refused() -> None:
    """data.n_test=0 trained and reported test loss 0.0 and accuracy 0.0 on no rows."""
    with pytest.raises(ValueError, match=r"data.n_test=0 must be >= data.n_classes=2"):
        to_config(compose_config(["+debug=tiny", "data.n_test=0"]))
    config = to_config(compose_config(["+debug=tiny", "data.n_test=2"]))
    assert config.data.n_test == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("uri", ["sqlite://x.db", "sqlite:", "sqlite:///"])
def test_a_sqlite_url_that_names_no_file_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match=r"is not a SQLite file URL: give sqlite:///relative"):
        to_config(compose_config(["+debug=tiny", f"tracking.uri={uri}"]))
    off = to_config(compose_config(["+debug=tiny", "tracking=off", f"tracking.uri={uri}"]))
    assert off.tracking.enabled is False  # with tracking off the URL is not used
