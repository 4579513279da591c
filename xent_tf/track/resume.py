"""Resuming a sweep: which jobs already FINISHED with the same config, and whether a resumed
study is the study it claims to continue (``study_definition``, which the claims ledger uses
too).

Every run records ``CONFIG_HASH_TAG``: a hash of its resolved config without the fields that do
not change what is trained (where it is recorded, how chatty it is). When a sweep continues an
earlier parent run (the same sweep directory, or ``+resume=true``), the launching process reads
that parent's FINISHED children (and those that diverged or got no rate from their range
test: measured outcomes, seeded, that would only repeat) once (``recovery.finished_children``)
and leaves them in ``<sweep dir>/FINISHED_FILE``; a job whose config hash is there is not run
again, and returns the final validation loss its run recorded. The comparison is by hash,
never by run name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xent_tf.config import Config

CONFIG_HASH_TAG = "xent.config_hash"
# A sweep parent's study definition (``study_definition``), as JSON: what ``+resume=true`` checks.
DEFINITION_TAG = "xent.study_definition"
FINISHED_FILE = "finished_jobs.json"
# Fields that say where and how visibly a run is recorded, not what is trained.
_NOT_TRAINING = ("experiment_name", "tracking", "claims", "trainer.verbose")


def _without(tree: dict[str, Any], dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if rest and isinstance(tree.get(head), dict):
        _without(tree[head], rest)
    else:
        tree.pop(head, None)


def training_config_hash(config: Config) -> str:
    """sha256 of the run's resolved config, without ``_NOT_TRAINING`` fields.

    Two jobs with the same hash train the same model on the same data with the same seed; the
    option groups' class names are part of it (an Adam and an SGD config with equal fields
    differ).

    Args:
        config: the run's validated config.

    Returns:
        64 hex digits.
    """
    tree = _tree(config)
    for dotted in _NOT_TRAINING:
        _without(tree, dotted)
    text = json.dumps(tree, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _tree(value: Any) -> Any:
    """A dataclass tree as plain dicts, each dataclass's type name kept as ``_type``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        tree = {f.name: _tree(getattr(value, f.name)) for f in dataclasses.fields(value)}
        tree["_type"] = type(value).__name__
        return tree
    if isinstance(value, list | tuple):
        return [_tree(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _tree(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class FinishedJob:
    """A job's earlier run that measured its config (FINISHED, or FAILED on a measured outcome:
    diverged, no rate; ``recovery.finished_children``): the sweep does not run the job again.

    Attributes:
        run_id: the MLflow run.
        val_loss: its final validation loss (the job's return value).
    """

    run_id: str
    val_loss: float


def write_finished(sweep_dir: Path, finished: Mapping[str, FinishedJob]) -> None:
    """Leave {config hash: finished job} in the sweep directory for the jobs to read."""
    payload = {key: dataclasses.asdict(job) for key, job in finished.items()}
    (sweep_dir / FINISHED_FILE).write_text(json.dumps(payload, sort_keys=True))


def read_finished(sweep_dir: Path) -> dict[str, FinishedJob]:
    """{config hash: finished job} left by the sweep's launching process ({} when none).

    Raises:
        ValueError: the file is damaged (the message names it).
    """
    path = sweep_dir / FINISHED_FILE
    if not path.exists():
        return {}
    try:
        return {key: FinishedJob(**job) for key, job in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as error:  # truncated or not ours
        raise ValueError(
            f"{path} is damaged ({error}); re-run the sweep into its directory: the launching "
            "process writes it afresh"
        ) from error


# Keys a resumed study may change: more or other seeds is the point of resuming; where and how
# visibly it is recorded, and what a claims ledger would do with it, do not change what it
# trains (the ledger's settings: a study is the same whichever ledger reads it).
_MAY_CHANGE = (
    "seed",
    "resume",
    "experiment_name",
    "tracking.",
    "tracking",
    "trainer.verbose",
    "claims.",
    "claims",
    "hydra.",
    "hydra/",
)


def study_definition(base_config: Mapping[str, Any], task_overrides: Sequence[str]) -> dict:
    """What a sweep trains, as {dotted key: text}: the one definition of "the same study".

    ``+resume`` continues a parent run only if its recorded definition is this one; the
    claims ledger uses a stored sweep only if its parent recorded the definition of the study
    it needs (``claims.runner.define_study`` composes that study's command line).

    Args:
        base_config: the launching process's config without its ``hydra`` node, as nested
            mappings (interpolations unresolved; dotted keys are kept as they are).
        task_overrides: the command line's overrides (``a=1,2``, ``+experiment=x``).

    Returns:
        Both merged, without the keys a resumed study may change (``_MAY_CHANGE``).
    """
    from xent_tf.track.artifacts import flatten  # MLflow: not before a sweep needs it

    overrides = dict(str(o).partition("=")[::2] for o in task_overrides)
    merged = {**flatten(base_config), **{k.lstrip("+~"): v for k, v in overrides.items()}}
    return {
        key: value
        for key, value in sorted(merged.items())
        if not any(key == m or (m[-1] in "./" and key.startswith(m)) for m in _MAY_CHANGE)
    }


def definition_differences(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """``key: recorded -> current`` for every key whose value differs (or exists in one only)."""
    missing = "(unset)"
    return [
        f"{key}: {recorded.get(key, missing)} -> {current.get(key, missing)}"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]
