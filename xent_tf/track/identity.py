"""Which variant of a study a run is, and what it is called: its MLflow name and tags.

A sweep job's Hydra overrides mix what defines its variant (``loss=mse``, ``optimizer=sgd``), its
seed, and settings shared by every job of the sweep (``trainer.epochs=3``,
``tracking.uri=...``). ``run_identity`` keeps the first kind: the variant's id names the run
(``reference mse sgd output_init=saturated seed=0``) and is tagged, so that the MLflow UI can
group runs by variant; the full overrides stay in the ``hydra.overrides`` tag. Pure: any
launcher that makes runs (Hydra's task function, a launcher that trains many jobs in one
process) calls it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xent_tf.config import Config

# The config keys that make a variant of each comparison study: its runs' names and
# ``VARIANT_TAG``. ``claims.studies`` groups a study's runs by the same keys (its ``group_by``).
STUDY_VARIANT_KEYS: dict[str, tuple[str, ...]] = {
    "binary_vs_categorical": ("data.name", "loss.name"),
    "mse_vs_ce": ("data.name", "loss.name", "optimizer.name", "model.output_init"),
    "lr_sweep": ("lr_find.use", "optimizer.learning_rate"),
    "lr_range_test": ("lr_find.use",),
    "annealing": ("schedule.name",),
}

# Config groups whose choice sets a study's variant keys at once (lr_sweep's rate arms set
# optimizer.learning_rate and lr_find.use): their choice names the variant too.
STUDY_VARIANT_GROUPS: dict[str, tuple[str, ...]] = {"lr_sweep": ("rate_arm",)}

STUDY_TAG = "xent.study"
VARIANT_TAG = "xent.variant"
VARIANT_LABEL_TAG = "xent.variant_label"

# Overrides that never define a variant: where and how a job runs, not what it trains.
_NOT_A_VARIANT = (
    "seed",
    "tracking",
    "hydra",
    "+experiment",
    "+debug",
    "+resume",
    "trainer.verbose",
)


@dataclass(frozen=True)
class RunIdentity:
    """What a run is called and which variant it belongs to.

    Attributes:
        variant_id: the variant's short id: the overrides that define the variant, a config
            group's choice by its name and a value by its short key (``mse sgd
            output_init=saturated``); the experiment's name for a run without any.
        variant_label: the variant as the study report labels it (``data=reference loss=mse``),
            from the study's ``group_by`` params; the id for a plain sweep.
        run_name: ``"<variant_id> seed=<seed>"``.
        tags: ``xent.study``, ``xent.variant``, ``xent.variant_label`` for the MLflow run.
    """

    variant_id: str
    variant_label: str
    run_name: str
    tags: dict[str, str]


def _key_and_value(override: str) -> tuple[str, str]:
    """``"+trainer.x=a"`` -> ("trainer.x", "a"); leading ``+``, ``++``, ``~`` are dropped."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _defines_no_variant(key: str) -> bool:
    return any(
        key == name.lstrip("+") or key.startswith((f"{name.lstrip('+')}.", f"{name}/"))
        for name in _NOT_A_VARIANT
    ) or key.startswith("hydra/")


def study_keys(study: str) -> tuple[str, ...]:
    """The config keys that define a variant of ``study``, or () for none ("").

    Raises:
        ValueError: ``study`` is not a known study (the message lists them).
    """
    if not study:
        return ()
    if study not in STUDY_VARIANT_KEYS:
        raise ValueError(f"study={study!r} is not one of {sorted(STUDY_VARIANT_KEYS)}")
    return STUDY_VARIANT_KEYS[study]


def short_name(param: str) -> str:
    """ "optimizer.learning_rate" -> "learning_rate", "loss.name" -> "loss": short, readable."""
    group, _, leaf = param.rpartition(".")
    return group.rsplit(".", 1)[-1] if leaf == "name" and group else leaf


def _is_study_key(key: str, study_keys: tuple[str, ...]) -> bool:
    """Whether an override sets a ``group_by`` param: directly, or as its config group
    (``optimizer=sgd`` sets ``optimizer.name``)."""
    return any(key == name or name.startswith(f"{key}.") for name in study_keys)


def variant_parts(study: str, overrides: list[str]) -> list[str]:
    """The overrides that define a run's variant, as shown in its name.

    Args:
        study: the study the run belongs to ("" for none: every override but the seed and
            the run settings defines the variant).
        overrides: the job's Hydra overrides (``hydra.overrides.task``).

    Returns:
        In order, a config group's choice as its name (``data=digits`` -> ``digits``: the
        MLflow UI's name column is narrow) and any other value as ``short key=value``
        (``model.output_init=saturated`` -> ``output_init=saturated``).
    """
    keys = study_keys(study)
    parts = []
    for override in overrides:
        key, value = _key_and_value(override)
        if _defines_no_variant(key):
            continue
        if not study or _is_study_key(key, keys) or key in STUDY_VARIANT_GROUPS.get(study, ()):
            parts.append(value if "." not in key else f"{short_name(key)}={value}")
    return parts


def variant_id(study: str, experiment_name: str, overrides: list[str]) -> str:
    """The variant's short id: ``variant_parts`` joined, or the experiment's name for none."""
    return " ".join(variant_parts(study, overrides)) or experiment_name


def run_name(study: str, experiment_name: str, seed: int, overrides: list[str]) -> str:
    """``"<variant id> seed=<seed>"``: a run's MLflow name (``run_identity`` without a Config)."""
    return f"{variant_id(study, experiment_name, overrides)} seed={seed}"


def config_value(config: Config, dotted: str) -> str:
    """The value of a dotted config key (``"optimizer.learning_rate"``) as a string."""
    node: object = config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or not hasattr(node, part):
            raise ValueError(f"config has no key {dotted!r}")
        node = getattr(node, part)
    return str(node)


def run_identity(study: str, config: Config, overrides: list[str]) -> RunIdentity:
    """The MLflow name, variant and tags of one run.

    Args:
        study: the study the run belongs to (``config.study``; "" for none).
        config: the run's validated config.
        overrides: the job's Hydra overrides (``[]`` for a run without any).

    Returns:
        The run's identity.

    Raises:
        ValueError: ``study`` is not a known study (the message lists them).
    """
    variant = variant_id(study, config.experiment_name, overrides)
    if study:
        label = " ".join(
            f"{short_name(key)}={config_value(config, key)}" for key in study_keys(study)
        )
    else:
        label = variant
    tags = {VARIANT_TAG: variant, VARIANT_LABEL_TAG: label}
    if study:
        tags[STUDY_TAG] = study
    return RunIdentity(variant, label, f"{variant} seed={config.seed}", tags)
