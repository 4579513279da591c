"""Generated command lines: a valid config from declared ranges, plus at most one known defect.

``valid_choices`` draws every group's option and every field of the chosen options from the
range the schema declares valid (``xent_tf/config.py``), cross-field constraints included, so a
case without a defect must be accepted. ``config_cases`` then applies one defect from a catalog
(a value out of range, a wrong type, a field of another option, a typo in a key, an unknown
option, a cross-field conflict), each with the names a message must contain to count as naming
it. The overrides are composed through Hydra as the command line is (tests/conftest.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

UINT32 = 2**32  # seeds are NumPy/scikit-learn seeds: 0 <= seed < 2**32
BUNDLED = {"breast_cancer": 2, "digits": 10, "wine": 3, "iris": 3}
KERAS_ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu", "linear", "softplus", "selu")
NON_FINITE = (math.inf, -math.inf, math.nan)


@dataclass(frozen=True)
class Field:
    """One settable field: its dotted key, type and the values the schema accepts or refuses.

    Attributes:
        key: the dotted key, e.g. "optimizer.learning_rate".
        kind: "int", "float", "bool", "str" or "list".
        valid: draws an accepted value.
        bad: draws a value of the right type that must be refused (None: every value of the
            type is accepted).
    """

    key: str
    kind: str
    valid: st.SearchStrategy[Any]
    bad: st.SearchStrategy[Any] | None = None


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def _outside(low: float, high: float, low_open: bool, high_open: bool) -> st.SearchStrategy[float]:
    """Floats outside [low, high] (an open end's bound itself included), and NaN / +-inf."""
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, min_value=-1e9)
    above = st.floats(min_value=high, exclude_min=not high_open, allow_nan=False, max_value=1e9)
    return st.one_of(below, above, st.sampled_from(NON_FINITE))


def _positive_bad() -> st.SearchStrategy[float]:
    """Refused by a "> 0, finite" field: zero, negatives, NaN and infinities."""
    return st.one_of(
        st.floats(max_value=0.0, min_value=-1e9, allow_nan=False), st.sampled_from(NON_FINITE)
    )


def _seed_bad() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-(10**12), -1), st.integers(UINT32, 10**15))


def _name() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


# Fields of each option (group:kind) or plain group; make_classification's counts are drawn
# together (``_make_classification``) and so have no independent valid strategy here.
FIELDS: dict[str, list[Field]] = {
    "root": [
        Field("seed", "int", st.integers(0, UINT32 - 1), _seed_bad()),
        Field("experiment_name", "str", _name(), st.sampled_from(["' '", "''"])),
        Field("study", "str", st.just(""), _name().map(lambda s: f"no_{s}")),
        Field("task", "str", st.just("train"), _name().filter(lambda s: s not in ("train",))),
    ],
    "data": [
        Field("data.val_fraction", "float", _floats(0.15, 0.5), _outside(0.0, 1.0, True, True)),
        Field("data.split_seed", "int", st.integers(0, UINT32 - 1), _seed_bad()),
        Field("data.standardize", "bool", st.booleans()),
    ],
    "data:make_classification": [
        Field("data.random_state", "int", st.integers(0, UINT32 - 1), _seed_bad()),
        Field("data.n_features", "int", st.nothing(), st.integers(-100, 0)),
        Field("data.n_informative", "int", st.nothing(), st.integers(-100, 0)),
        Field("data.n_redundant", "int", st.nothing(), st.integers(-100, -1)),
        Field("data.n_classes", "int", st.nothing(), st.integers(-100, 1)),
        Field("data.n_clusters_per_class", "int", st.nothing(), st.integers(-100, 0)),
        Field("data.n_test", "int", st.nothing(), st.integers(-100, 1)),
    ],
    "data:sklearn": [
        Field("data.test_fraction", "float", _floats(0.1, 0.3), _outside(0.0, 1.0, True, True)),
    ],
    "model": [
        Field("model.output_init", "str", st.sampled_from(["standard", "saturated"]), _name()),
        Field("model.saturation_scale", "float", _floats(0.5, 20.0), _positive_bad()),
    ],
    "model:mlp": [
        Field(
            "model.hidden_units",
            "list",
            st.lists(st.integers(1, 12), min_size=1, max_size=3),
            st.one_of(
                st.just([]),
                st.lists(st.integers(-5, 0), min_size=1, max_size=2).map(lambda w: [3, *w]),
            ),
        ),
        Field(
            "model.activation",
            "str",
            st.sampled_from(KERAS_ACTIVATIONS),
            _name().map(lambda s: f"not_{s}"),
        ),
    ],
    "loss": [
        Field("loss.from_logits", "bool", st.booleans()),
        Field("loss.label_smoothing", "float", st.just(0.0), _outside(0.0, 1.0, False, True)),
    ],
    "optimizer": [
        Field("optimizer.learning_rate", "float", _floats(1e-4, 0.3), _positive_bad()),
    ],
    "optimizer:sgd": [
        Field("optimizer.momentum", "float", _floats(0.0, 0.95), _outside(0.0, 1.0, False, True)),
    ],
    "schedule:step": [
        Field("schedule.step_epochs", "int", st.integers(1, 5), st.integers(-100, 0)),
        Field("schedule.factor", "float", _floats(0.05, 1.0), _outside(0.0, 1.0, True, False)),
    ],
    "schedule:exponential": [
        Field(
            "schedule.final_fraction", "float", _floats(1e-3, 1.0), _outside(0.0, 1.0, True, False)
        ),
    ],
    "schedule:cosine": [
        Field(
            "schedule.final_fraction", "float", _floats(1e-3, 1.0), _outside(0.0, 1.0, True, False)
        ),
    ],
    "schedule:one_cycle": [
        Field("schedule.warmup_fraction", "float", _floats(0.05, 0.9), _outside(0, 1, True, True)),
        Field(
            "schedule.div_factor",
            "float",
            _floats(1.0, 100.0),
            st.one_of(_floats(-100.0, 0.999), st.sampled_from(NON_FINITE)),
        ),
        Field(
            "schedule.final_fraction", "float", _floats(1e-4, 1.0), _outside(0.0, 1.0, True, False)
        ),
    ],
    "trainer": [
        Field("trainer.epochs", "int", st.integers(1, 2), st.integers(-1000, 0)),
        Field("trainer.batch_size", "int", st.integers(1, 256), st.integers(-1000, 0)),
        Field("trainer.threads", "int", st.integers(0, 2), st.integers(-100, -1)),
        Field(
            "trainer.target_val_acc", "float", _floats(0.01, 1.0), _outside(0.0, 1.0, True, False)
        ),
        Field("trainer.device", "str", st.just("cpu"), _name().filter(lambda s: s != "cpu")),
        Field("trainer.verbose", "bool", st.just(False)),
    ],
    "lr_find": [
        Field(
            "lr_find.use",
            "str",
            st.sampled_from(["suggested", "flat", "exploding"]),
            _name().map(lambda s: f"x{s}"),
        ),
        Field("lr_find.mode", "str", st.sampled_from(["exponential", "linear"]), _name()),
        Field(
            "lr_find.method",
            "str",
            st.sampled_from(["steepest", "valley", "minimum"]),
            _name().map(lambda s: f"x{s}"),
        ),
        Field("lr_find.num_steps", "int", st.integers(10, 40), st.integers(-100, 9)),
        Field("lr_find.beta", "float", _floats(0.0, 0.99), _outside(0.0, 1.0, False, True)),
        Field(
            "lr_find.divergence_factor",
            "float",
            _floats(1.5, 10.0),
            st.one_of(_floats(-10.0, 1.0), st.sampled_from(NON_FINITE)),
        ),
        Field("lr_find.min_lr", "float", st.nothing(), _positive_bad()),
        Field(
            "lr_find.max_lr",
            "float",
            st.nothing(),
            st.sampled_from(NON_FINITE),
        ),
    ],
    "tracking": [
        Field(
            "tracking.uri",
            "str",
            st.nothing(),
            st.sampled_from(
                ["ftp://host/x", "sqlite://x.db", "mlflow.db", "sqlite:", "file:///tmp/x", ""]
            ),
        ),
    ],
    "claims": [
        Field("claims.seeds", "int", st.integers(2, 20), st.integers(-100, 1)),
        Field(
            "claims.only",
            "list",
            st.lists(st.sampled_from([f"C{i}" for i in range(1, 17)]), max_size=3),
            st.sampled_from([["C0"], ["C17"], ["C2", "X9"]]),
        ),
    ],
}
# The kinds of each option group (the registered schemas) and where each kind's fields are.
OPTIONS = {
    "data": {
        "reference": "make_classification",
        "multiclass": "make_classification",
        "iris": "sklearn",
        "wine": "sklearn",
        "breast_cancer": "sklearn",
        "digits": "sklearn",
    },
    "model": {"mlp": "mlp"},
    "optimizer": {"adam": "adam", "sgd": "sgd"},
    "schedule": {
        "constant": "constant",
        "step": "step",
        "exponential": "exponential",
        "cosine": "cosine",
        "one_cycle": "one_cycle",
    },
}


def render(value: Any) -> str:
    """A Python value as Hydra's override grammar writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value.startswith("'") else f"'{value}'"
    return str(value)


@dataclass
class Choices:
    """A valid command line in parts: each group's option, each field's value.

    Attributes:
        options: {group: option file}, e.g. {"optimizer": "sgd"}.
        values: {dotted key: value}.
        n_classes: the data's class count (for the loss).
    """

    options: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 2

    def active(self) -> list[str]:
        """The FIELDS entries that apply to these options."""
        groups = ["root", "data", "model", "loss", "optimizer", "trainer", "tracking", "claims"]
        groups += [f"{g}:{OPTIONS[g][o]}" for g, o in self.options.items() if g in OPTIONS]
        if self.options.get("lr_find") == "on":
            groups.append("lr_find")
        return [g for g in groups if g in FIELDS]

    def overrides(self) -> list[str]:
        """The command line: group choices first, then fields, then the tiny preset."""
        choices = [f"{group}={option}" for group, option in self.options.items()]
        values = [f"{key}={render(value)}" for key, value in self.values.items()]
        return [*choices, *values, "+debug=quick"]


@st.composite
def _make_classification(draw: st.DrawFn, n_classes_max: int) -> dict[str, Any]:
    """make_classification's counts, consistent with each other and with the split."""
    n_features = draw(st.integers(2, 12))
    n_informative = draw(st.integers(1, n_features))
    # n_classes * clusters <= 2**n_informative, with n_classes >= 2
    clusters = draw(st.integers(1, min(2, 2**n_informative // 2)))
    n_classes = draw(st.integers(2, min(n_classes_max, 2**n_informative // clusters)))
    return {
        "data.n_samples": draw(st.integers(200, 500)),
        "data.n_features": n_features,
        "data.n_informative": n_informative,
        "data.n_redundant": draw(st.integers(0, n_features - n_informative)),
        "data.n_clusters_per_class": clusters,
        "data.n_classes": n_classes,
        "data.n_test": draw(st.integers(n_classes, 100)),
    }


def _options_for(group_key: str) -> dict[str, list[str]]:
    """The option files under which FIELDS[group_key] applies ({} for the common groups)."""
    group, _, kind = group_key.partition(":")
    if group == "lr_find":
        return {"lr_find": ["on"]}
    if not kind:
        return {}
    return {group: sorted(name for name, k in OPTIONS[group].items() if k == kind)}


@st.composite
def valid_choices(draw: st.DrawFn, group_key: str = "root") -> Choices:
    """A config every check must accept: options and values from their declared ranges.

    Args:
        group_key: a FIELDS key whose fields must apply (its option is then chosen).
    """
    forced = _options_for(group_key)
    options = {
        group: draw(st.sampled_from(forced.get(group, default)))
        for group, default in (
            ("data", sorted(OPTIONS["data"])),
            ("optimizer", sorted(OPTIONS["optimizer"])),
            ("schedule", sorted(OPTIONS["schedule"])),
            ("lr_find", ["off", "on"]),
        )
    }
    choices = Choices(options)
    if OPTIONS["data"][options["data"]] == "make_classification":
        counts = draw(_make_classification(n_classes_max=4))
        choices.values.update(counts)
        choices.n_classes = counts["data.n_classes"]
    else:
        choices.n_classes = BUNDLED[options["data"]]
    losses = ["ce", "cce", "sparse_cce", "mse"] + (["bce"] if choices.n_classes == 2 else [])
    options["loss"] = draw(st.sampled_from(losses))
    for group in choices.active():
        for spec in FIELDS[group]:
            if spec.valid.is_empty:
                continue
            if draw(st.booleans()):  # leave about half of the fields at their defaults
                choices.values[spec.key] = draw(spec.valid)
    if options["loss"] in ("bce", "cce") and draw(st.booleans()):
        choices.values["loss.label_smoothing"] = draw(_floats(0.0, 0.3))
    if options["loss"] == "mse":
        choices.values["loss.from_logits"] = False
    if options["lr_find"] == "on" and draw(st.booleans()):
        low = draw(_floats(1e-7, 1e-2))
        choices.values["lr_find.min_lr"] = low
        choices.values["lr_find.max_lr"] = draw(_floats(low * 2, 50.0))
    return choices


@dataclass(frozen=True)
class Case:
    """A command line and what the contract says of it.

    Attributes:
        kind: the kind of input (a row of the campaign's table).
        overrides: the command line.
        names: for a bad case, strings of which the refusal message must contain one (the
            offending key or value); empty for a valid case.
    """

    kind: str
    overrides: list[str]
    names: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.names


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


Defect = Callable[[st.DrawFn, Choices], Case]


def named(key: str) -> tuple[str, ...]:
    """What a message naming ``key`` contains: the dotted key, or a root key as ``key=``."""
    if "." in key:
        return (key,)
    return (f"{key}=", f"{key} must", f"full_key: {key}")


def out_of_range(draw: st.DrawFn, choices: Choices, spec: Field) -> Case:
    """``spec`` set to a value of its type the schema declares invalid."""
    assert spec.bad is not None
    value = draw(spec.bad)
    choices.values[spec.key] = value
    if spec.key.startswith("lr_find.") and spec.key.endswith("_lr"):
        choices.values.pop("lr_find.min_lr" if spec.key.endswith("max_lr") else "lr_find.max_lr", 0)
    if spec.key == "data.n_test" and "data.n_samples" not in choices.values:
        choices.values["data.n_samples"] = 400
    return Case("config: value out of range", choices.overrides(), named(spec.key))


_WRONG_TYPE = {
    "int": st.sampled_from(["abc", "1.5", "[1,2]", "true"]),
    "float": st.sampled_from(["abc", "[0.1]", "{a:1}"]),
    "bool": st.sampled_from(["maybe", "[1]", "abc"]),
    "str": st.sampled_from(["[1,2]", "{a:1}"]),
    "list": st.sampled_from(["abc", "{a:1}", "[a]", "[1.5]"]),
}


def wrong_type(draw: st.DrawFn, choices: Choices, spec: Field) -> Case:
    """``spec`` set to a text its type cannot hold."""
    text = draw(_WRONG_TYPE[spec.kind])
    choices.values.pop(spec.key, None)
    return Case("config: wrong type", [*choices.overrides(), f"{spec.key}={text}"], named(spec.key))


def _foreign_field(draw: st.DrawFn, choices: Choices) -> Case:
    """A field that exists only in another option of the same group (momentum on Adam)."""
    foreign = []
    for group in ("data", "optimizer", "schedule"):
        mine = OPTIONS[group][choices.options[group]]
        own = {f.key for f in FIELDS.get(f"{group}:{mine}", [])}
        for kind in set(OPTIONS[group].values()) - {mine}:
            foreign += [f for f in FIELDS.get(f"{group}:{kind}", []) if f.key not in own]
    foreign.append(Field("model.kwargs", "str", st.just("{a:1}")))
    spec = draw(st.sampled_from(foreign))
    value = draw(spec.valid) if not spec.valid.is_empty else 3
    text = value if spec.key == "model.kwargs" else render(value)
    return Case(
        "config: field of another option",
        [*choices.overrides(), f"{spec.key}={text}"],
        (f"Key '{_leaf(spec.key)}' not in",),
    )


def _typo(draw: st.DrawFn, choices: Choices) -> Case:
    spec = draw(st.sampled_from([f for g in choices.active() for f in FIELDS[g]]))
    head, _, leaf = spec.key.rpartition(".")
    cut = draw(st.integers(0, len(leaf) - 1))
    wrong = leaf[:cut] + draw(st.sampled_from(["x", "_", "s", ""])) + leaf[cut + 1 :]
    if wrong == leaf:
        wrong = leaf + "x"
    key = f"{head}.{wrong}" if head else wrong
    return Case("config: unknown key", [*choices.overrides(), f"{key}=1"], (key, wrong))


def _unknown_option(draw: st.DrawFn, choices: Choices) -> Case:
    group = draw(st.sampled_from(["data", "model", "loss", "optimizer", "schedule", "lr_find"]))
    name = "no_" + draw(_name())
    choices.options[group] = name
    return Case("config: unknown option", choices.overrides(), (f"{group}/{name}",))


def _cross_field(draw: st.DrawFn, choices: Choices) -> Case:
    """Values each valid alone that do not fit together."""
    conflict = draw(
        st.sampled_from(
            [
                "bce_multiclass",
                "lr_range",
                "informative",
                "redundant",
                "clusters",
                "n_test",
                "smoothing",
                "logits",
                "kind",
            ]
        )
    )
    values = choices.values
    if conflict == "bce_multiclass":
        multi = draw(st.sampled_from(["multiclass", "iris", "wine", "digits"]))
        choices.options["data"] = multi
        for key in [k for k in values if k.startswith("data.")]:
            del values[key]
        choices.options["loss"] = "bce"
        values.pop("loss.label_smoothing", None)
        return Case("config: cross-field", choices.overrides(), ("loss.name='bce'",))
    if conflict == "lr_range":
        choices.options["lr_find"] = "on"
        high = draw(_floats(1e-6, 5.0))
        values["lr_find.max_lr"] = high
        values["lr_find.min_lr"] = high * draw(_floats(1.0, 10.0))
        return Case("config: cross-field", choices.overrides(), ("lr_find.max_lr",))
    if conflict in ("smoothing", "logits"):
        if conflict == "smoothing":
            choices.options["loss"] = draw(st.sampled_from(["sparse_cce", "mse", "ce"]))
            values["loss.label_smoothing"] = draw(_floats(0.01, 0.5))
            values.pop("loss.from_logits", None)
            return Case("config: cross-field", choices.overrides(), ("loss.label_smoothing",))
        choices.options["loss"] = "mse"
        values.pop("loss.label_smoothing", None)
        values["loss.from_logits"] = True
        return Case("config: cross-field", choices.overrides(), ("loss.from_logits",))
    if conflict == "kind":
        group = draw(st.sampled_from(["optimizer", "schedule"]))
        mine = OPTIONS[group][choices.options[group]]
        other = draw(st.sampled_from(sorted(set(OPTIONS[group].values()) - {mine})))
        values[f"{group}.name"] = other
        return Case("config: cross-field", choices.overrides(), (f"{group}.name",))
    # make_classification's counts
    choices.options["data"] = "reference"
    choices.options["loss"] = "ce"
    values.pop("loss.label_smoothing", None)
    for key in [k for k in values if k.startswith("data.")]:
        del values[key]
    n_features = draw(st.integers(2, 10))
    values["data.n_features"] = n_features
    if conflict == "informative":
        values["data.n_informative"] = draw(st.integers(n_features + 1, n_features + 20))
        return Case("config: cross-field", choices.overrides(), ("data.n_informative",))
    if conflict == "redundant":
        informative = draw(st.integers(1, n_features))
        values["data.n_informative"] = informative
        values["data.n_redundant"] = draw(st.integers(n_features - informative + 1, 30))
        return Case("config: cross-field", choices.overrides(), ("data.n_redundant",))
    if conflict == "clusters":
        informative = draw(st.integers(1, min(3, n_features)))
        values["data.n_informative"] = informative
        values["data.n_redundant"] = 0
        values["data.n_clusters_per_class"] = 2
        values["data.n_classes"] = draw(st.integers(2**informative // 2 + 1, 2**informative + 3))
        return Case("config: cross-field", choices.overrides(), ("data.n_clusters_per_class",))
    # Only n_test may be wrong: the other counts valid for any n_features (the default
    # n_informative=10 is not, and its own check would fire first).
    values["data.n_informative"] = 1
    values["data.n_redundant"] = 0
    values["data.n_clusters_per_class"] = 1
    samples = draw(st.integers(10, 400))
    values["data.n_samples"] = samples
    values["data.n_test"] = draw(st.integers(samples, samples + 100))
    return Case("config: cross-field", choices.overrides(), ("data.n_test",))


DEFECTS: dict[str, Defect] = {
    "foreign": _foreign_field,
    "typo": _typo,
    "option": _unknown_option,
    "cross": _cross_field,
}


def every_field() -> list[tuple[str, Field]]:
    """(FIELDS key, field) for every field, in catalog order."""
    return [(group, spec) for group, specs in FIELDS.items() for spec in specs]


@st.composite
def config_cases(draw: st.DrawFn, defect: str) -> Case:
    """A valid config with the defect ``defect`` (a DEFECTS key), or none ("none")."""
    choices = draw(valid_choices())
    if defect == "none":
        return Case("config: valid", choices.overrides())
    return DEFECTS[defect](draw, choices)


@st.composite
def field_cases(draw: st.DrawFn, group: str, spec: Field, defect: str) -> Case:
    """A valid config with field ``spec`` (of FIELDS[group]) out of range or of a wrong type."""
    choices = draw(valid_choices(group))
    return (out_of_range if defect == "range" else wrong_type)(draw, choices, spec)
