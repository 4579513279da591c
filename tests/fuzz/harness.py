"""How a fuzz case is run and judged: through the real entry path, stopped at the store.

``attempt`` validates a config (``to_config``) and, if that accepts it, runs
``pipeline.run_experiment`` with ``writing.open_run`` replaced by a tripwire: a case that gets
as far as opening an MLflow run has passed every input check (for a bad case, it slipped
through). Nothing trains in a refused case, and the store is never created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from tests.conftest import CONFIG_DIR
from tests.fuzz.tally import Outcome
from xent_tf.config import Config, to_config
from xent_tf.track import writing


class ReachedTheStore(Exception):
    """Raised by the tripwire in place of opening an MLflow run."""


def error_text(error: BaseException) -> str:
    """The error's message and those of its causes (Hydra wraps the one that names the key)."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None and len(parts) < 6:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@contextlib.contextmanager
def hydra_configs() -> Iterator[Callable[[list[str]], Any]]:
    """``compose(overrides)`` on configs/config.yaml, as the command line composes it."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        yield lambda overrides: compose(config_name="config", overrides=overrides)


@contextlib.contextmanager
def store_tripwire() -> Iterator[list[str]]:
    """Replace ``writing.open_run`` with a tripwire; yields the run names it stopped."""
    stopped: list[str] = []
    original = writing.open_run

    def tripwire(uri: str, experiment: str, run_name: str, *args: Any, **kwargs: Any) -> Any:
        stopped.append(run_name)
        raise ReachedTheStore(f"run {run_name!r} would open in {uri}")

    writing.open_run = tripwire  # type: ignore[assignment]
    try:
        yield stopped
    finally:
        writing.open_run = original  # type: ignore[assignment]


@dataclass(frozen=True)
class Attempt:
    """What became of one case.

    Attributes:
        config: the validated config, or None when validation refused it.
        error: the refusal (or the tripwire's exception), or None.
        reached_store: the case got as far as opening an MLflow run.
    """

    config: Config | None
    error: BaseException | None
    reached_store: bool


def build_until_the_store(config: Config, output_dir: Path) -> Attempt:
    """Run ``run_experiment`` up to the point where it would open its MLflow run."""
    from xent_tf.train.pipeline import run_experiment

    with store_tripwire():
        try:
            run_experiment(config, output_dir=output_dir)
        except ReachedTheStore as error:
            return Attempt(config, error, reached_store=True)
        except Exception as error:
            return Attempt(config, error, reached_store=False)
    raise AssertionError("run_experiment returned without opening a run")


def judge(names: tuple[str, ...], attempt: Attempt) -> Outcome:
    """The outcome of a bad case: refused with a message holding one of ``names``, or not."""
    if attempt.reached_store or attempt.error is None:
        return Outcome.SLIPPED
    text = error_text(attempt.error)
    return Outcome.REFUSED if any(name in text for name in names) else Outcome.WRONG_MESSAGE


def store_is_empty(db: Path) -> bool:
    """No run was ever opened in the SQLite store ``db`` (or it was never created)."""
    if not db.exists():
        return True
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return not client.search_runs(experiments)


def validate(compose_fn: Callable[[list[str]], Any], overrides: list[str]) -> Attempt:
    """Compose and validate; an Attempt with the config, or with the refusal."""
    try:
        return Attempt(to_config(compose_fn(overrides)), None, reached_store=False)
    except Exception as error:
        return Attempt(None, error, reached_store=False)
