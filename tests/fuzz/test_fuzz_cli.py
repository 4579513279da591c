"""A few generated cases through ``python experiments/run.py`` itself, as a user runs it: the
exit status is not 0, stderr names the key, layer or file, nothing trained and the store holds
no run. Few on purpose: each command costs a process (one of them a TensorFlow import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import tally
from tests.fuzz.config_cases import Field, every_field, field_cases
from tests.fuzz.conftest import examples
from tests.fuzz.harness import store_is_empty
from tests.fuzz.tally import Outcome
from tests.fuzz.test_fuzz_models import ModelCase, model_cases

ROOT = Path(__file__).resolve().parents[2]

RANGED: list[tuple[str, Field]] = [
    (group, spec)
    for group, spec in every_field()
    if spec.bad is not None and not spec.key.startswith(("tracking.", "claims."))
]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _judge_cli(
    kind: str, result: subprocess.CompletedProcess[str], names: tuple[str, ...], db: Path
) -> None:
    output = result.stdout + result.stderr  # Hydra's log lines go to stdout
    if result.returncode == 0 or "epoch 1/" in output or not store_is_empty(db):
        outcome = Outcome.SLIPPED
    elif any(name in output for name in names):
        outcome = Outcome.REFUSED
    else:
        outcome = Outcome.WRONG_MESSAGE
    tally.check(kind, outcome, f"exit {result.returncode}: {output[-600:]}")


@examples(1, shrink=False)  # a failing command is reported as found: each try costs a process
@given(data=st.data())
def test_a_bad_value_on_the_command_line_exits_non_zero_naming_it(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    group, spec = data.draw(st.sampled_from(RANGED))
    case = data.draw(field_cases(group, spec, "range"))
    cwd = tmp_path_factory.mktemp("cli-config")
    result = run_cli(*case.overrides, cwd=cwd)  # the case's own overrides hold +debug=quick
    _judge_cli("cli: bad config value", result, case.names, cwd / "mlflow.db")


@examples(1, shrink=False)  # a failing command is reported as found: each try costs a process
@given(case=model_cases("head"))
def test_a_user_model_with_a_head_exits_non_zero_naming_the_layer(
    case: ModelCase, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cwd = tmp_path_factory.mktemp("cli-model")
    result = run_cli("+debug=tiny", *case.overrides(), cwd=cwd)
    _judge_cli("cli: user model with a head", result, case.names, cwd / "mlflow.db")


@examples(1, shrink=False)  # a failing command is reported as found: each try costs a process
@given(cut=st.integers(1, 60))
def test_a_sweep_into_a_directory_with_a_damaged_parent_file_stops_naming_it(
    cut: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cwd = tmp_path_factory.mktemp("cli-sweep")
    sweep = cwd / "sweep"
    sweep.mkdir()
    whole = json.dumps({"run_id": "a" * 32, "experiment_id": "1", "tracking_uri": "x"})
    (sweep / "mlflow_parent.json").write_text(whole[:cut])
    result = run_cli("-m", "+debug=tiny", "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=cwd)
    _judge_cli(
        "cli: sweep with a damaged parent file", result, ("mlflow_parent.json",), cwd / "mlflow.db"
    )
