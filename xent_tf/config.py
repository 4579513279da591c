"""Typed config schemas, registered in Hydra's ConfigStore.

The YAML files under ``configs/`` fill these dataclasses, so a typo in a key or a wrong type fails
at compose time with Hydra's own message. Value checks that types cannot express (a positive
learning rate, a loss that fits the data) live in ``__post_init__``: they run when the entry point
turns the composed config into these objects with ``OmegaConf.to_object``, before anything trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

LOSSES = ("bce", "cce", "sparse_cce", "mse")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "step", "exponential", "cosine", "one_cycle")
DEVICES = ("auto", "cpu", "gpu")
OUTPUT_INITS = ("standard", "saturated")


def _require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)


def _require_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(value in allowed, f"{field_name}={value!r} is not one of {list(allowed)}")


@dataclass
class DataConfig:
    """A ``make_classification`` dataset and its split (CLAIMS.md C16)."""

    name: str = "reference"
    n_samples: int = 10_000
    n_features: int = 20
    n_informative: int = 10
    n_redundant: int = 2
    n_classes: int = 2
    n_clusters_per_class: int = 2
    random_state: int = 2022
    n_test: int = 1_000  # the LAST n_test rows are the test set
    val_fraction: float = 0.3  # of the remaining rows
    split_seed: int = 2022  # train/val split; fixed so every seed sees the same split

    def __post_init__(self) -> None:
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
        _require(self.n_classes >= 2, f"data.n_classes={self.n_classes} must be >= 2")
        _require(
            self.n_classes * self.n_clusters_per_class <= 2**self.n_informative,
            f"data.n_classes * data.n_clusters_per_class = "
            f"{self.n_classes * self.n_clusters_per_class} must be <= 2**data.n_informative "
            f"= {2**self.n_informative} (make_classification's limit)",
        )
        _require(
            0 <= self.n_test < self.n_samples,
            f"data.n_test={self.n_test} must be >= 0 and < data.n_samples={self.n_samples}",
        )
        _require(
            0.0 < self.val_fraction < 1.0,
            f"data.val_fraction={self.val_fraction} must be strictly between 0 and 1",
        )
        n_val = round((self.n_samples - self.n_test) * self.val_fraction)
        n_train = self.n_samples - self.n_test - n_val
        _require(
            n_train >= self.n_classes and n_val >= self.n_classes,
            f"data.n_samples={self.n_samples} leaves {n_train} train and {n_val} validation rows;"
            f" each needs at least n_classes={self.n_classes}",
        )


@dataclass
class ModelConfig:
    """An MLP: Dense hidden layers, then an output head chosen by the loss."""

    hidden_units: list[int] = field(default_factory=lambda: [10, 10])
    activation: str = "relu"
    # "saturated" starts the output layer confidently wrong (C12); "standard" is Keras's default.
    output_init: str = "standard"
    saturation_scale: float = 10.0  # how hard the saturated init pushes the logits

    def __post_init__(self) -> None:
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
        _require_choice("model.output_init", self.output_init, OUTPUT_INITS)
        _require(
            self.saturation_scale > 0,
            f"model.saturation_scale={self.saturation_scale} must be > 0",
        )


@dataclass
class LossConfig:
    """Which loss to train with; it also picks the output head and label encoding."""

    name: str = "bce"
    from_logits: bool = False  # True: linear output layer, the loss applies sigmoid/softmax
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _require_choice("loss.name", self.name, LOSSES)
        _require(
            0.0 <= self.label_smoothing < 1.0,
            f"loss.label_smoothing={self.label_smoothing} must be in [0, 1)",
        )
        _require(
            not (self.name in ("mse", "sparse_cce") and self.label_smoothing > 0),
            f"loss.label_smoothing={self.label_smoothing} is not supported by loss.name="
            f"{self.name!r}; only 'bce' and 'cce' smooth labels",
        )
        _require(
            not (self.name == "mse" and self.from_logits),
            "loss.from_logits=true does not apply to loss.name='mse' (MSE compares "
            "probabilities); use bce, cce or sparse_cce",
        )


@dataclass
class OptimizerConfig:
    """A Keras optimizer and its base learning rate."""

    name: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0  # SGD only; 0.9 is the usual "SGD with momentum"

    def __post_init__(self) -> None:
        _require_choice("optimizer.name", self.name, OPTIMIZERS)
        _require(
            self.learning_rate > 0,
            f"optimizer.learning_rate={self.learning_rate} must be > 0",
        )
        _require(
            0.0 <= self.momentum < 1.0,
            f"optimizer.momentum={self.momentum} must be in [0, 1)",
        )
        _require(
            self.name == "sgd" or self.momentum == 0.0,
            f"optimizer.momentum={self.momentum} only applies to optimizer.name='sgd'",
        )


@dataclass
class ScheduleConfig:
    """How the learning rate moves over training, per step (batch)."""

    name: str = "constant"
    # step: multiply by `factor` every `step_epochs` epochs.
    step_epochs: int = 5
    factor: float = 0.5
    # exponential: decay to final_fraction * base over the run; cosine: anneal to it.
    final_fraction: float = 0.01
    # one_cycle: warm up from base/div_factor to base over `warmup_fraction` of the steps.
    warmup_fraction: float = 0.3
    div_factor: float = 25.0

    def __post_init__(self) -> None:
        _require_choice("schedule.name", self.name, SCHEDULES)
        _require(self.step_epochs >= 1, f"schedule.step_epochs={self.step_epochs} must be >= 1")
        _require(0 < self.factor <= 1, f"schedule.factor={self.factor} must be in (0, 1]")
        _require(
            0 < self.final_fraction <= 1,
            f"schedule.final_fraction={self.final_fraction} must be in (0, 1]",
        )
        _require(
            0 < self.warmup_fraction < 1,
            f"schedule.warmup_fraction={self.warmup_fraction} must be in (0, 1)",
        )
        _require(self.div_factor >= 1, f"schedule.div_factor={self.div_factor} must be >= 1")


@dataclass
class TrainerConfig:
    """The training loop."""

    epochs: int = 20
    batch_size: int = 32
    device: str = "auto"  # auto: a GPU when TensorFlow sees one, else the CPU
    # TF intra/inter-op threads; 0 = TensorFlow's default (every core). 1 is the default: on these
    # small models a second thread only adds hand-offs (measured: epoch 19 ms with 1 thread vs
    # 36-56 ms with 2 on the reference run; 74 vs 101 ms on 256-256), and parallel sweep jobs
    # then never oversubscribe the cores.
    threads: int = 1
    target_val_acc: float = 0.9  # "epochs to reach target" diagnostic
    verbose: bool = True  # one line per epoch

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"trainer.epochs={self.epochs} must be >= 1")
        _require(self.batch_size >= 1, f"trainer.batch_size={self.batch_size} must be >= 1")
        _require_choice("trainer.device", self.device, DEVICES)
        _require(self.threads >= 0, f"trainer.threads={self.threads} must be >= 0 (0 = default)")
        _require(
            0 < self.target_val_acc <= 1,
            f"trainer.target_val_acc={self.target_val_acc} must be in (0, 1]",
        )


LR_FIND_USES = ("suggested", "flat", "exploding")


@dataclass
class LrFindConfig:
    """The learning-rate range test (C14) run before training, and which rate to train with."""

    enabled: bool = False
    use: str = "suggested"  # suggested | flat | exploding: where on the curve to take the rate
    min_lr: float = 1e-6
    max_lr: float = 10.0
    num_steps: int = 300  # mini-batches; may span several epochs
    mode: str = "exponential"  # exponential | linear spacing of the rates
    beta: float = 0.98  # smoothing of the loss (bias-corrected moving average)
    divergence_factor: float = 4.0  # stop when the smoothed loss exceeds this x its best
    method: str = "steepest"  # steepest | valley | minimum (lr at the minimum / 10)

    def __post_init__(self) -> None:
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
    log_model: bool = True  # the trained model as a .keras artifact
    # Each run's plots/loss_curve.png. Studies turn it off for their children: drawing it was
    # most of a replica's recording time, the parent has the overlay plots, and the MLflow UI
    # draws every run's curves from its metrics.
    plots: bool = True

    def __post_init__(self) -> None:
        _require(
            not self.enabled
            or self.uri.split(":", 1)[0] in ("sqlite", "http", "https", "postgresql"),
            f"tracking.uri={self.uri!r} must start with sqlite:, http:, https: or postgresql:",
        )


# The claims of CLAIMS.md, in order; `claims.only` must name a subset of them.
CLAIM_IDS = tuple(f"C{i}" for i in range(1, 17))
TASKS = ("train", "claims")


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

    def __post_init__(self) -> None:
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
    """One run: what to train, how, and where to record it."""

    experiment_name: str = "reference"  # the MLflow experiment
    study: str = ""  # a comparison study (xent_tf.studies) whose report ends the sweep; "" = none
    seed: int = 0  # weights, shuffling; the data and its split have their own fixed seeds
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    task: str = "train"  # train: one run (or a sweep's job); claims: the claims ledger
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)

    def __post_init__(self) -> None:
        _require_choice("task", self.task, TASKS)
        _require(self.seed >= 0, f"seed={self.seed} must be >= 0")
        _require(bool(self.experiment_name.strip()), "experiment_name must not be empty")
        _require(
            not (self.loss.name == "bce" and self.data.n_classes != 2),
            f"loss.name='bce' needs binary data, but data.n_classes={self.data.n_classes}; "
            "use loss=cce or loss=sparse_cce for multi-class data",
        )


def register_configs() -> None:
    """Register the schema so ``configs/config.yaml`` can extend it (idempotent)."""
    ConfigStore.instance().store(name="config_schema", node=Config)


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
    from omegaconf import OmegaConf

    config = OmegaConf.to_object(cfg)
    if not isinstance(config, Config):
        raise TypeError(f"expected a config built on config_schema, got {type(config).__name__}")
    return config
