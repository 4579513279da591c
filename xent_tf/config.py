"""Typed config schemas, registered in Hydra's ConfigStore.

Every option of a config group (each data source, model kind, optimizer, schedule) is its own
dataclass, registered with ``@option`` under ``schema/<group>/<kind>``; the option's YAML file
under ``configs/<group>/`` extends it (``defaults: [/schema/<group>/<kind>@_here_, _self_]``). So
a typo in a key, a wrong type, or a field that belongs to another option (``optimizer.momentum``
on Adam) fails at compose time with Hydra's own message, and the allowed kinds of a group are the
registered classes (``option_kinds``), written once. Value checks that types cannot express (a
positive learning rate, a loss that fits the data) live in ``__post_init__``: they run when the
entry point turns the composed config into these objects with ``OmegaConf.to_object``, before
anything trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypedDict, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

DEVICES = ("auto", "cpu", "gpu")
OUTPUT_INITS = ("standard", "saturated")

# What each loss accepts; the Keras loss each name builds is in xent_tf.train.losses (its
# registry is keyed by these names, tests/test_config.py checks they agree). "ce" is cross-entropy
# with the head the data's class count asks for: bce on binary data, sparse_cce otherwise (so a
# study written with loss=ce runs on any data set); it takes no label smoothing, which sparse_cce
# lacks. "mse_raw" is the square loss on the raw outputs (no sigmoid/softmax; C12's control arm).
LOSS_SMOOTHS_LABELS = {
    "bce": True,
    "cce": True,
    "sparse_cce": False,
    "mse": False,
    "mse_raw": False,
    "ce": False,
}
LOSS_TAKES_LOGITS = {
    "bce": True,
    "cce": True,
    "sparse_cce": True,
    "mse": False,
    "mse_raw": False,
    "ce": True,
}
LOSSES = tuple(LOSS_SMOOTHS_LABELS)

# scikit-learn's bundled classification sets (shipped with the package: no download), each
# loaded by sklearn.datasets.load_<name>, with its class count (tests/test_data.py checks them
# against the loaded sets): a loss that does not fit is refused when the config is composed.
BUNDLED_CLASS_COUNTS = {"breast_cancer": 2, "digits": 10, "wine": 3, "iris": 3}
BUNDLED_DATASETS = tuple(BUNDLED_CLASS_COUNTS)

# The data sets the full evidence (`make evidence`, ``claims.datasets=all``) judges every training
# claim on (configs/data/<name>.yaml): the reference, three real tables, two non-linear
# boundaries, label noise and class imbalance.
EVIDENCE_DATASETS = (
    "reference",
    "breast_cancer",
    "digits",
    "wine",
    "moons",
    "circles",
    "label_noise",
    "imbalanced",
)
ALL_DATASETS = "all"  # claims.datasets=all: EVIDENCE_DATASETS

_OPTIONS: dict[str, dict[str, type]] = {}
_Option = TypeVar("_Option", bound=type)


def option(group: str, kind: str) -> Callable[[_Option], _Option]:
    """Class decorator: register a dataclass as the schema of option ``kind`` of ``group``.

    Args:
        group: the config group ("data", "model", "optimizer", "schedule").
        kind: the option's kind, e.g. "adam"; stored as the class's ``KIND``.

    Returns:
        The decorator (it returns the class unchanged apart from ``KIND``).
    """

    def register(cls: _Option) -> _Option:
        setattr(cls, "KIND", kind)  # noqa: B010  (a ClassVar of the schema)
        _OPTIONS.setdefault(group, {})[kind] = cls
        return cls

    return register


def option_kinds(group: str) -> tuple[str, ...]:
    """The registered kinds of a config group, in registration order."""
    return tuple(_OPTIONS[group])


def option_schema(group: str, kind: str) -> type:
    """The dataclass registered for ``kind`` of ``group``.

    Raises:
        ValueError: no such kind (the message lists the registered ones).
    """
    kinds = _OPTIONS.get(group, {})
    if kind not in kinds:
        raise ValueError(f"{group} kind {kind!r} is not one of {list(kinds)}")
    return kinds[kind]


def _require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


# NumPy's and scikit-learn's seeds (weights, shuffling, make_classification, the splits).
SEED_LIMIT = 2**32


def _require_finite_floats(config: object, group: str) -> None:
    """Every float field of a schema must be a finite number (nan and +-inf are refused).

    NaN already fails every range check; an infinite rate, scale or factor would pass a
    one-sided one (``learning_rate > 0``) and only blow up once a run has opened.
    """
    for spec in fields(config):  # type: ignore[arg-type]
        value = getattr(config, spec.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{group}.{spec.name}={value} must be a finite number")


def _require_seed(field_name: str, value: int) -> None:
    _require(
        0 <= value < SEED_LIMIT,
        f"{field_name}={value} must be >= 0 and < 2**32 (a NumPy / scikit-learn seed)",
    )


def _require_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, f"{field_name}={value!r} is not one of {list(allowed)}")


class NotApplicableError(ValueError):
    """A valid choice that does not fit the rest of the config (bce on 10-class data).

    In a sweep such a job is left out with a warning, not failed: a study that sweeps heads
    over data sets (bce, cce, sparse_cce x binary and 5-class data) asks only for the pairs
    that exist.
    """


def _require_kind(group: str, field_name: str, value: str, kind: str) -> None:
    """The option's kind field must name its own schema (another kind is another option)."""
    _require(
        value == kind,
        f"{group}.{field_name}={value!r} does not match the selected {group} option {kind!r}; "
        f"choose another option with `{group}=<option>` (kinds: {list(option_kinds(group))})",
    )


# ----------------------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    """What every data source shares: its name and how its rows are split and scaled."""

    KIND: ClassVar[str] = ""

    name: str = MISSING  # the data set's name in MLflow params, tags and study groupings
    source: str = MISSING  # the option's kind: make_classification | sklearn | csv
    val_fraction: float = 0.3  # of the rows left after the test rows
    split_seed: int = 2022  # fixed, so every run seed sees the same split
    # Standardise features with the mean and std of the training rows only.
    standardize: bool = True

    def __post_init__(self) -> None:
        _require_kind("data", "source", self.source, self.KIND)
        _require_finite_floats(self, "data")
        _require(bool(self.name.strip()), "data.name must not be empty")
        _require_seed("data.split_seed", self.split_seed)
        _require(
            0.0 < self.val_fraction < 1.0,
            f"data.val_fraction={self.val_fraction} must be strictly between 0 and 1",
        )

    @property
    def known_n_classes(self) -> int | None:
        """The class count when the config alone says it (else the data tells, when loaded)."""
        return None


@option("data", "make_classification")
@dataclass
class MakeClassificationConfig(DataConfig):
    """A ``make_classification`` dataset and its split (CLAIMS.md C16)."""

    name: str = "reference"
    source: str = "make_classification"
    # make_classification's features are on a unit scale already; unscaled is C16's protocol
    # (and keeps the reference run's numbers).
    standardize: bool = False
    n_samples: int = 10_000
    n_features: int = 20
    n_informative: int = 10
    n_redundant: int = 2
    n_classes: int = 2
    n_clusters_per_class: int = 2
    random_state: int = 2022
    n_test: int = 1_000  # the LAST n_test rows are the test set
    # Share of the rows whose label is drawn at random (label noise); 0.01 is scikit-learn's
    # default, the one the reference data (C16) was made with.
    flip_y: float = 0.01
    # Each class's share of the rows before label noise (the last may be left out: the rest);
    # None: balanced classes.
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0.0 <= self.flip_y <= 1.0, f"data.flip_y={self.flip_y} must be between 0 and 1")
        if self.weights is not None:
            weights = [float(w) for w in self.weights]
            _require(
                len(weights) in (self.n_classes - 1, self.n_classes)
                and all(0.0 < w < 1.0 for w in weights)
                and sum(weights) <= 1.0 + 1e-9,
                f"data.weights={weights} must give n_classes={self.n_classes} (or one fewer) "
                "shares, each between 0 and 1, summing to at most 1",
            )
            self.weights = weights
        _require(self.n_features >= 1, f"data.n_features={self.n_features} must be >= 1")
        _require(
            1 <= self.n_informative <= self.n_features,
            f"data.n_informative={self.n_informative} must be between 1 and "
            f"data.n_features={self.n_features}",
        )
        _require(
            self.n_informative + self.n_redundant <= self.n_features,
            f"data.n_informative + data.n_redundant = {self.n_informative + self.n_redundant} "
            f"must be <= data.n_features={self.n_features}",
        )
        _require(self.n_redundant >= 0, f"data.n_redundant={self.n_redundant} must be >= 0")
        _require(self.n_classes >= 2, f"data.n_classes={self.n_classes} must be >= 2")
        _require(
            self.n_clusters_per_class >= 1,
            f"data.n_clusters_per_class={self.n_clusters_per_class} must be >= 1",
        )
        _require_seed("data.random_state", self.random_state)
        _require(
            self.n_classes * self.n_clusters_per_class <= 2**self.n_informative,
            f"data.n_classes * data.n_clusters_per_class = "
            f"{self.n_classes * self.n_clusters_per_class} must be <= 2**data.n_informative "
            f"= {2**self.n_informative} (make_classification's limit)",
        )
        _require(
            self.n_classes <= self.n_test < self.n_samples,
            f"data.n_test={self.n_test} must be >= data.n_classes={self.n_classes} (a test "
            f"row per class at least) and < data.n_samples={self.n_samples}",
        )
        n_val = round((self.n_samples - self.n_test) * self.val_fraction)
        n_train = self.n_samples - self.n_test - n_val
        _require(
            n_train >= self.n_classes and n_val >= self.n_classes,
            f"data.n_samples={self.n_samples} leaves {n_train} train and {n_val} validation rows;"
            f" each needs at least n_classes={self.n_classes}",
        )

    @property
    def known_n_classes(self) -> int | None:
        return self.n_classes


@dataclass
class _TwoFeatureGeneratorConfig(DataConfig):
    """A two-feature, two-class scikit-learn generator: ``n_samples`` shuffled rows, the last
    ``n_test`` of them the test set, the rest split into train and validation (as the
    reference data)."""

    n_samples: int = 2_000
    noise: float = 0.2  # standard deviation of the Gaussian noise added to every point
    random_state: int = 2022  # the generator's seed
    n_test: int = 400  # the LAST n_test rows are the test set

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.noise >= 0.0, f"data.noise={self.noise} must be >= 0")
        _require(
            0 <= self.n_test < self.n_samples,
            f"data.n_test={self.n_test} must be >= 0 and < data.n_samples={self.n_samples}",
        )
        n_val = round((self.n_samples - self.n_test) * self.val_fraction)
        n_train = self.n_samples - self.n_test - n_val
        _require(
            n_train >= 2 and n_val >= 2,
            f"data.n_samples={self.n_samples} leaves {n_train} train and {n_val} validation "
            "rows; each needs at least 2 (one per class)",
        )

    @property
    def known_n_classes(self) -> int | None:
        return 2


@option("data", "make_moons")
@dataclass
class MakeMoonsConfig(_TwoFeatureGeneratorConfig):
    """scikit-learn's ``make_moons``: two interleaving half circles (a non-linear boundary)."""

    name: str = "moons"
    source: str = "make_moons"


@option("data", "make_circles")
@dataclass
class MakeCirclesConfig(_TwoFeatureGeneratorConfig):
    """scikit-learn's ``make_circles``: a small circle inside a large one (no linear boundary
    separates them at all)."""

    name: str = "circles"
    source: str = "make_circles"
    factor: float = 0.5  # the inner circle's radius over the outer one's

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0.0 < self.factor < 1.0, f"data.factor={self.factor} must be between 0 and 1")


@dataclass
class _HeldOutTestConfig(DataConfig):
    """A loaded table: a stratified random share of the rows is the test set."""

    test_fraction: float = 0.2  # stratified, drawn with split_seed before train/val

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            0.0 < self.test_fraction < 1.0,
            f"data.test_fraction={self.test_fraction} must be strictly between 0 and 1",
        )


@option("data", "sklearn")
@dataclass
class BundledDataConfig(_HeldOutTestConfig):
    """One of scikit-learn's bundled classification sets (no download)."""

    name: str = "digits"
    source: str = "sklearn"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_choice("data.name", self.name, BUNDLED_DATASETS)

    @property
    def known_n_classes(self) -> int | None:
        return BUNDLED_CLASS_COUNTS[self.name]


@option("data", "csv")
@dataclass
class CsvDataConfig(_HeldOutTestConfig):
    """A CSV file with a header row: numeric feature columns and one label column."""

    name: str = "csv"
    source: str = "csv"
    path: str = MISSING  # relative paths resolve against the directory the command started in
    label: str = MISSING  # the label column; any values (names or numbers), at least 2 distinct

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.path.strip()), "data.path must name a CSV file")
        _require(bool(self.label.strip()), "data.label must name the CSV's label column")


# ---------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """What every model kind shares: the kind and how the output layer starts."""

    KIND: ClassVar[str] = ""

    name: str = MISSING  # the option's kind: mlp | keras
    # "saturated" starts the output layer confidently wrong (C12); "standard" is Keras's default.
    output_init: str = "standard"
    saturation_scale: float = 10.0  # how hard the saturated init pushes the logits

    def __post_init__(self) -> None:
        _require_kind("model", "name", self.name, self.KIND)
        _require_finite_floats(self, "model")
        _require_choice("model.output_init", self.output_init, OUTPUT_INITS)
        _require(
            self.saturation_scale > 0,
            f"model.saturation_scale={self.saturation_scale} must be > 0",
        )


@option("model", "mlp")
@dataclass
class MlpConfig(ModelConfig):
    """An MLP: Dense hidden layers, then an output head chosen by the loss."""

    name: str = "mlp"
    hidden_units: list[int] = field(default_factory=lambda: [10, 10])
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            len(self.hidden_units) >= 1,
            "model.hidden_units=[] is empty; give at least one layer width, e.g. [10, 10]",
        )
        for width in self.hidden_units:
            _require(
                width >= 1,
                f"model.hidden_units={list(self.hidden_units)} has width {width}; "
                "every width must be >= 1",
            )


@option("model", "keras")
@dataclass
class KerasModelConfig(ModelConfig):
    """Any Keras model: ``_target_(input_shape, n_outputs, **kwargs)`` returns it (logits out)."""

    name: str = "keras"
    _target_: str = MISSING  # dotted path of the builder, e.g. xent_tf.zoo.small_convnet
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the builder

    def __post_init__(self) -> None:
        super().__post_init__()
        parts = self._target_.split(".")
        _require(
            len(parts) >= 2 and all(part.isidentifier() for part in parts),
            f"model._target_={self._target_!r} is not a dotted path to a callable; give "
            "'package.module.function', e.g. xent_tf.zoo.small_convnet",
        )


# ----------------------------------------------------------------------------------------- loss


@dataclass
class LossConfig:
    """Which loss to train with; it also picks the output head and label encoding."""

    name: str = "bce"
    from_logits: bool = False  # True: linear output layer, the loss applies sigmoid/softmax
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _require_choice("loss.name", self.name, LOSSES)
        _require_finite_floats(self, "loss")
        _require(
            0.0 <= self.label_smoothing < 1.0,
            f"loss.label_smoothing={self.label_smoothing} must be in [0, 1)",
        )
        smoothing = [name for name, smooths in LOSS_SMOOTHS_LABELS.items() if smooths]
        _require(
            LOSS_SMOOTHS_LABELS[self.name] or self.label_smoothing == 0,
            f"loss.label_smoothing={self.label_smoothing} is not supported by loss.name="
            f"{self.name!r}; only {' and '.join(repr(n) for n in smoothing)} smooth labels",
        )
        with_logits = [name for name, takes in LOSS_TAKES_LOGITS.items() if takes]
        _require(
            LOSS_TAKES_LOGITS[self.name] or not self.from_logits,
            f"loss.from_logits=true does not apply to loss.name={self.name!r} (it compares "
            f"probabilities); use {', '.join(with_logits)}",
        )


# ------------------------------------------------------------------------------------ optimizer


@dataclass
class OptimizerConfig:
    """What every optimizer shares: its kind and base learning rate."""

    KIND: ClassVar[str] = ""

    name: str = MISSING  # the option's kind: adam | sgd
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        _require_kind("optimizer", "name", self.name, self.KIND)
        _require_finite_floats(self, "optimizer")
        _require(
            self.learning_rate > 0,
            f"optimizer.learning_rate={self.learning_rate} must be > 0",
        )


@option("optimizer", "adam")
@dataclass
class AdamConfig(OptimizerConfig):
    """Adam with Keras's defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7)."""

    name: str = "adam"


@option("optimizer", "sgd")
@dataclass
class SgdConfig(OptimizerConfig):
    """Mini-batch SGD, optionally with momentum."""

    name: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.0  # 0.9 is the usual "SGD with momentum"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            0.0 <= self.momentum < 1.0,
            f"optimizer.momentum={self.momentum} must be in [0, 1)",
        )


# ------------------------------------------------------------------------------------- schedule


@dataclass
class ScheduleConfig:
    """What every schedule shares: its kind. The rate moves per step (batch)."""

    KIND: ClassVar[str] = ""

    name: str = MISSING  # the option's kind: constant | step | exponential | cosine | one_cycle

    def __post_init__(self) -> None:
        _require_kind("schedule", "name", self.name, self.KIND)
        _require_finite_floats(self, "schedule")


def _require_final_fraction(value: float) -> None:
    _require(0 < value <= 1, f"schedule.final_fraction={value} must be in (0, 1]")


@option("schedule", "constant")
@dataclass
class ConstantScheduleConfig(ScheduleConfig):
    """The rate stays at the optimizer's learning rate."""

    name: str = "constant"


@option("schedule", "step")
@dataclass
class StepScheduleConfig(ScheduleConfig):
    """Multiply the rate by ``factor`` every ``step_epochs`` epochs."""

    name: str = "step"
    step_epochs: int = 5
    factor: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.step_epochs >= 1, f"schedule.step_epochs={self.step_epochs} must be >= 1")
        _require(0 < self.factor <= 1, f"schedule.factor={self.factor} must be in (0, 1]")


@option("schedule", "exponential")
@dataclass
class ExponentialScheduleConfig(ScheduleConfig):
    """Decay exponentially to ``final_fraction`` x the base rate at the last step."""

    name: str = "exponential"
    final_fraction: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_final_fraction(self.final_fraction)


@option("schedule", "cosine")
@dataclass
class CosineScheduleConfig(ScheduleConfig):
    """Anneal along half a cosine to ``final_fraction`` x the base rate at the last step."""

    name: str = "cosine"
    final_fraction: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_final_fraction(self.final_fraction)


@option("schedule", "one_cycle")
@dataclass
class OneCycleScheduleConfig(ScheduleConfig):
    """Warm up from base/div_factor to the base rate, then cosine down to final_fraction x base."""

    name: str = "one_cycle"
    warmup_fraction: float = 0.3
    div_factor: float = 25.0
    final_fraction: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            0 < self.warmup_fraction < 1,
            f"schedule.warmup_fraction={self.warmup_fraction} must be in (0, 1)",
        )
        _require(self.div_factor >= 1, f"schedule.div_factor={self.div_factor} must be >= 1")
        _require_final_fraction(self.final_fraction)


# -------------------------------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    """The training loop."""

    epochs: int = 20
    batch_size: int = 32
    device: str = "auto"  # auto: a GPU when TensorFlow sees one, else the CPU
    # TF intra-op threads (the inter-op pool gets at least 2: runtime.inter_op_threads); 0 =
    # TensorFlow's default (every core). 1 is the default: on these small models a second
    # intra-op thread only adds hand-offs (measured: epoch 19 ms with 1 thread vs 36-56 ms with
    # 2 on the reference run; 74 vs 101 ms on 256-256), and parallel sweep jobs then never
    # oversubscribe the cores.
    threads: int = 1
    target_val_acc: float = 0.9  # "epochs to reach target" diagnostic
    verbose: bool = True  # one line per epoch
    # Training rows whose loss is measured after every step (the same rows each time, so the
    # curve moves only when the weights do: C13/C15's oscillation); 0 = off (no extra forward
    # pass). Logged as the per-step series train/probe_loss.
    probe_rows: int = 0
    # The share of the last epochs the probe is measured in (the claims read only the late
    # curve; the forward pass over the probe rows is the probe's whole cost): 0.5 of 20 epochs
    # = epochs 11-20.
    probe_late_fraction: float = 1.0

    def __post_init__(self) -> None:
        _require_finite_floats(self, "trainer")
        _require(self.epochs >= 1, f"trainer.epochs={self.epochs} must be >= 1")
        _require(self.batch_size >= 1, f"trainer.batch_size={self.batch_size} must be >= 1")
        _require_choice("trainer.device", self.device, DEVICES)
        _require(self.threads >= 0, f"trainer.threads={self.threads} must be >= 0 (0 = default)")
        _require(
            self.probe_rows >= 0, f"trainer.probe_rows={self.probe_rows} must be >= 0 (0 = off)"
        )
        _require(
            0 < self.probe_late_fraction <= 1,
            f"trainer.probe_late_fraction={self.probe_late_fraction} must be in (0, 1]",
        )
        _require(
            0 < self.target_val_acc <= 1,
            f"trainer.target_val_acc={self.target_val_acc} must be in (0, 1]",
        )


# "steepest", "valley", "minimum": that rule's suggestion (C14's regret of each rule); "given": run
# and record the range test, train with optimizer.learning_rate (C13/C14's grid).
LR_FIND_USES = ("suggested", "flat", "exploding", "steepest", "valley", "minimum", "given")


class RangeTestSettings(TypedDict):
    """The range test's arguments, as ``LrFindConfig.curve_settings`` gives them."""

    min_lr: float
    max_lr: float
    num_steps: int
    mode: str
    beta: float
    divergence_factor: float
    method: str


@dataclass
class LrFindConfig:
    """The learning-rate range test (C14) run before training, and which rate to train with."""

    enabled: bool = False
    # suggested | flat | exploding: where on the curve to take the rate; steepest | valley |
    # minimum: that rule's suggestion; given: train with optimizer.learning_rate (the test is
    # only recorded)
    use: str = "suggested"
    min_lr: float = 1e-6
    max_lr: float = 10.0
    num_steps: int = 300  # mini-batches; may span several epochs
    mode: str = "exponential"  # exponential | linear spacing of the rates
    beta: float = 0.98  # smoothing of the loss (bias-corrected moving average)
    divergence_factor: float = 4.0  # stop when the smoothed loss exceeds this x its best
    method: str = "steepest"  # steepest | valley | minimum (lr at the minimum / 10)

    def curve_settings(self) -> RangeTestSettings:
        """The range test's own arguments (``lr_finder.find_learning_rate`` and the replica
        trainer's ``range_test``): everything here but ``enabled`` and ``use``."""
        return RangeTestSettings(
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            num_steps=self.num_steps,
            mode=self.mode,
            beta=self.beta,
            divergence_factor=self.divergence_factor,
            method=self.method,
        )

    def __post_init__(self) -> None:
        _require_finite_floats(self, "lr_find")
        _require_choice("lr_find.use", self.use, LR_FIND_USES)
        _require_choice("lr_find.mode", self.mode, ("exponential", "linear"))
        _require_choice("lr_find.method", self.method, ("steepest", "valley", "minimum"))
        _require(self.min_lr > 0, f"lr_find.min_lr={self.min_lr} must be > 0")
        _require(
            self.max_lr > self.min_lr,
            f"lr_find.max_lr={self.max_lr} must be > lr_find.min_lr={self.min_lr}",
        )
        _require(self.num_steps >= 10, f"lr_find.num_steps={self.num_steps} must be >= 10")
        _require(0 <= self.beta < 1, f"lr_find.beta={self.beta} must be in [0, 1)")
        _require(
            self.divergence_factor > 1,
            f"lr_find.divergence_factor={self.divergence_factor} must be > 1",
        )


@dataclass
class TrackingConfig:
    """Where MLflow records go."""

    enabled: bool = True
    # Relative sqlite paths resolve against the directory the command was started in.
    uri: str = "sqlite:///mlflow.db"
    log_model: bool = True  # keep the trained model (model.keras in the output dir, and MLflow)
    # true: an MLflow logged model (the runs table's Models column, models:/ URIs, pyfunc);
    # false: model.keras as a plain run artifact. Studies choose false for their children: the
    # logged model cost more than training a replica (benchmarks/replicas.py).
    logged_model: bool = True
    # Each run's plots/loss_curve.png (and plots/lr_find.png with the range test). Studies turn
    # them off for their children: drawing them was most of a replica's recording time, the
    # parent has the overlay plots, and the MLflow UI draws every run's curves from its metrics.
    plots: bool = True

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        _require(
            self.uri.split(":", 1)[0] in ("sqlite", "http", "https", "postgresql"),
            f"tracking.uri={self.uri!r} must start with sqlite:, http:, https: or postgresql:",
        )
        # sqlite://x.db (two slashes) is SQLAlchemy's in-memory store or an invalid URL.
        _require(
            not self.uri.startswith("sqlite")
            or (self.uri.startswith("sqlite:///") and len(self.uri) > len("sqlite:///")),
            f"tracking.uri={self.uri!r} is not a SQLite file URL: give sqlite:///relative/path.db"
            " or sqlite:////absolute/path.db",
        )


# The claims of CLAIMS.md, in order; `claims.only` must name a subset of them.
CLAIM_IDS = tuple(f"C{i}" for i in range(1, 17))
TASKS = ("train", "claims")


def expand_datasets(names: object) -> list[str]:
    """``claims.datasets`` as a list of names: "all" (alone or in a list) is EVIDENCE_DATASETS
    in their order; a single name is a list of one.

    Raises:
        ValueError: a value that is neither a name nor a list of names.
    """
    if isinstance(names, str):
        names = [names] if names.strip() else []
    if not isinstance(names, list | tuple):
        raise ValueError(
            f"claims.datasets={names!r} must be a data set name, a list of names, or "
            f"{ALL_DATASETS!r}"
        )
    expanded: list[str] = []
    for name in (str(n).strip() for n in names):
        expanded += list(EVIDENCE_DATASETS) if name == ALL_DATASETS else [name]
    return expanded


@dataclass
class ClaimsConfig:
    """The claims ledger (``task: claims``): which claims, and how to get the study runs."""

    only: list[str] = field(default_factory=list)  # claim ids, e.g. [C2, C10]; empty = all
    # Seeds per seed set: a training claim is judged on seeds 0 .. seeds-1, and a study in the
    # store is used only if it has them all; a missing study is run with them. A verdict needs a
    # confidence interval, so at least 2.
    seeds: int = 10
    rerun: bool = False  # run every needed study afresh even when a finished one is in the store
    run_missing: bool = True  # false: a claim without a usable study is inconclusive, not run
    # Judge every training claim also on seeds seeds .. 2*seeds-1; where the two sets' verdicts
    # differ the claim is "unstable".
    stability: bool = False
    # Data sets (configs/data/<name>.yaml) to judge every training claim on, each study run
    # with data=<name>: a verdict per data set and "holds on N of M". Empty: each study's own
    # data (reference, and the 5-class set where a study compares both). "all": the eight of
    # EVIDENCE_DATASETS. (Typed Any so that the bare word `claims.datasets=all` composes; a list
    # of names after __post_init__.)
    datasets: Any = field(default_factory=list)
    # Hydra overrides every study is looked for and run with (make reproduce: the ARGS its
    # studies ran with, e.g. +debug=tiny), so the ledger finds the studies they made.
    study_overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.datasets = expand_datasets(self.datasets)
        repeated = sorted({name for name in self.datasets if self.datasets.count(name) > 1})
        _require(not repeated, f"claims.datasets={self.datasets} names {repeated} twice")
        self.only = [str(claim).strip().upper() for claim in self.only]
        unknown = [claim for claim in self.only if claim not in CLAIM_IDS]
        _require(
            not unknown,
            f"claims.only={list(self.only)} names unknown claim(s) {unknown}; "
            f"known: {', '.join(CLAIM_IDS)}",
        )
        _require(
            self.seeds >= 2,
            f"claims.seeds={self.seeds} must be >= 2: study verdicts need a confidence interval "
            "over at least two seeds",
        )


@dataclass
class Config:
    """One run: what to train, how, and where to record it.

    The option groups (data, model, optimizer, schedule) have no default here: the defaults
    list of ``configs/config.yaml`` picks them, so the composed node takes its option's schema.
    """

    experiment_name: str = "reference"  # the MLflow experiment
    # A comparison study (xent_tf.claims.studies) whose report ends the sweep; "" = none.
    study: str = ""
    seed: int = 0  # weights, shuffling; the data and its split have their own fixed seeds
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    task: str = "train"  # train: one run (or a sweep's job); claims: the claims ledger
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)

    def __post_init__(self) -> None:
        _require_choice("task", self.task, TASKS)
        _require_seed("seed", self.seed)
        _require(bool(self.experiment_name.strip()), "experiment_name must not be empty")
        n_classes = self.data.known_n_classes if isinstance(self.data, DataConfig) else None
        if self.loss.name == "bce" and n_classes is not None and n_classes != 2:
            raise NotApplicableError(
                f"loss.name='bce' needs binary data, but data {self.data.name!r} has "
                f"{n_classes} classes; use loss=ce, cce or sparse_cce for multi-class data"
            )


def register_configs() -> None:
    """Register the root schema and every option's schema (idempotent).

    ``configs/config.yaml`` extends ``config_schema``; each option file under
    ``configs/<group>/`` extends ``schema/<group>/<kind>``.
    """
    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, kinds in _OPTIONS.items():
        for kind, schema in kinds.items():
            store.store(group=f"schema/{group}", name=kind, node=schema)


register_configs()


def to_config(cfg: object) -> Config:
    """Turn a composed Hydra config into a validated ``Config``.

    Args:
        cfg: the DictConfig from ``@hydra.main`` or ``compose``.

    Returns:
        The typed config; every ``__post_init__`` check has run.

    Raises:
        ValueError: a value is out of range or the parts don't fit together (the message names
            the field, the bad value and what is allowed).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is not Config:
        kind = OmegaConf.get_type(cfg) if isinstance(cfg, DictConfig) else type(cfg)
        raise TypeError(f"expected a config built on config_schema, got {kind}")
    # Field by field, as OmegaConf.to_object builds it: a sweep job's config also holds
    # Hydra's own node (and keys such as +resume) that are not Config's, and converting only
    # Config's fields spares copying them (a job's config was a deep copy without Hydra's node).
    parts: dict[str, Any] = {
        name: OmegaConf.to_object(value) if isinstance(value, DictConfig | ListConfig) else value
        for name, value in ((f.name, cfg[f.name]) for f in fields(Config) if f.init)
    }
    return Config(**parts)
