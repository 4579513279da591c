"""Configs: random command lines over every group and field, composed as the CLI composes them.

A bad case must be refused before an MLflow run opens, by ``to_config`` or by the build path
(``run_experiment`` up to its tripwire at the store), with a message naming the key or value;
a valid one must be accepted, and a few valid ones train to a FINISHED run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import tally
from tests.fuzz.config_cases import (
    Case,
    Field,
    config_cases,
    every_field,
    field_cases,
    valid_choices,
)
from tests.fuzz.conftest import examples
from tests.fuzz.harness import (
    build_until_the_store,
    error_text,
    hydra_configs,
    judge,
    store_is_empty,
    validate,
)
from tests.fuzz.tally import Outcome


@pytest.fixture(scope="module")
def composer() -> Iterator[Callable[[list[str]], Any]]:
    with hydra_configs() as compose:
        yield compose


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-configs")


# Examples per kind of command line (the ci profile's; make fuzz runs 20 times as many).
CONFIG_EXAMPLES = {"none": 12, "foreign": 8, "typo": 8, "option": 6, "cross": 16}
# Every field with a declared range gets this many out-of-range values (each in a random
# valid config of the options the field belongs to); every field type this many wrong types.
RANGE_EXAMPLES = 1
TYPE_EXAMPLES = 3
RANGED = [(g, f) for g, f in every_field() if f.bad is not None]


@pytest.mark.parametrize("defect", list(CONFIG_EXAMPLES))
def test_a_bad_config_is_refused_before_a_run_opens_and_a_valid_one_is_accepted(
    defect: str, composer: Callable[[list[str]], Any], workdir: Path
) -> None:
    @examples(CONFIG_EXAMPLES[defect])
    @given(case=config_cases(defect))
    def check(case: Case) -> None:
        _check_config_case(case, composer, workdir)

    check()


@pytest.mark.parametrize(("group", "spec"), RANGED, ids=[f.key for _, f in RANGED])
def test_every_field_out_of_its_range_is_refused_naming_it(
    group: str, spec: Field, composer: Callable[[list[str]], Any], workdir: Path
) -> None:
    @examples(RANGE_EXAMPLES)
    @given(case=field_cases(group, spec, "range"))
    def check(case: Case) -> None:
        _check_config_case(case, composer, workdir)

    check()


@pytest.mark.parametrize("kind", sorted({f.kind for _, f in every_field()}))
def test_a_field_of_a_wrong_type_is_refused_naming_it(
    kind: str, composer: Callable[[list[str]], Any], workdir: Path
) -> None:
    fields = [(g, f) for g, f in every_field() if f.kind == kind]

    @examples(TYPE_EXAMPLES)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        group, spec = data.draw(st.sampled_from(fields))
        _check_config_case(data.draw(field_cases(group, spec, "type")), composer, workdir)

    check()


def _check_config_case(case: Case, composer: Callable[[list[str]], Any], workdir: Path) -> None:
    db = workdir / "never.db"
    overrides = [f"tracking.uri=sqlite:///{db}", "tracking.log_model=false", *case.overrides]
    attempt = validate(composer, overrides)
    if case.valid:
        outcome = Outcome.FINISHED if attempt.config is not None else Outcome.REJECTED_VALID
        tally.check(case.kind, outcome, f"{case.overrides}: {attempt.error}")
        return
    if attempt.config is not None:  # the schema let it through: the build path must refuse it
        attempt = build_until_the_store(attempt.config, workdir / "out")
    outcome = judge(case.names, attempt)
    detail = f"{case.overrides} (should name {case.names}): {attempt.error}"
    tally.check(case.kind, outcome, detail)
    assert store_is_empty(db), "a refused config left a run in the store"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the valid runs (creating a store costs seconds)."""
    return tmp_path_factory.mktemp("fuzz-valid-runs") / "mlflow.db"


@examples(3)
@given(choices=valid_choices())
def test_a_valid_config_trains_to_a_finished_run(
    choices: Any, composer: Callable[[list[str]], Any], shared_store: Path
) -> None:
    from mlflow import MlflowClient

    from xent_tf.train.pipeline import run_experiment

    overrides = [
        *choices.overrides(),
        f"tracking.uri=sqlite:///{shared_store}",
        "tracking.log_model=false",
        "tracking.plots=false",
        "trainer.epochs=1",
        "lr_find=off",  # a range test may rightly find no rate; that is not an input check
    ]
    attempt = validate(composer, overrides)
    assert attempt.config is not None, f"{overrides}: {error_text(attempt.error)}"  # type: ignore[arg-type]
    try:
        summary = run_experiment(attempt.config, output_dir=shared_store.parent / "out")
    except Exception as error:
        tally.check("config: valid, trained", Outcome.REJECTED_VALID, f"{overrides}: {error}")
        raise
    run = MlflowClient(f"sqlite:///{shared_store}").get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.params["seed"]) == attempt.config.seed
    assert len(summary.history) == 1
    tally.check("config: valid, trained", Outcome.FINISHED, str(overrides))
