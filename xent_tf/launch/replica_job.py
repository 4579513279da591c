"""One job of a replica batch run as Hydra's ``run_job`` runs it, without its config copies.

A replica batch trains once and then records each of its jobs as the job Hydra would have run:
its output directory, ``.hydra/`` files, log file, callbacks and ``JobReturn``. Hydra's
``run_job`` makes four copies of the job's whole config to do that (``HydraConfig.set_config``
twice, a deep copy for the task and one for the return), and a study records thousands of jobs.
``run_batch_job`` does the same work with one copy of the task's part:

- ``HydraConfig`` is pointed at the job's config, read-only (``HydraConfig.get()`` and the
  ``${hydra:...}`` resolver read its ``hydra`` node, the one ``set_config`` would have copied);
- the ``.hydra/`` files are written with OmegaConf's own YAML, the same bytes Hydra writes
  (``tests/test_replica_job.py`` compares them with ``run_job``'s);
- the ``JobReturn`` carries the task config (without ``hydra``), as Hydra's does, but not the
  hydra config: the sweepers read a return's status and value only, and the job's
  ``.hydra/hydra.yaml`` keeps it.

Anything else (a job that runs on its own, an app that is not xent-tf's) keeps Hydra's
``run_job``.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    env_override,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def run_batch_job(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
) -> JobReturn:
    """Run ``task_function`` as the sweep job ``config`` (composed, with its job number).

    Args:
        hydra_context: Hydra's context (its callbacks run around the task).
        task_function: called with the job's config without its ``hydra`` node.
        config: the job's composed sweep config; its ``hydra.runtime.output_dir`` is set.

    Returns:
        The job's return, as ``hydra.core.utils.run_job`` gives it (``hydra_cfg`` None).
    """
    instance = HydraConfig.instance()
    previous = instance.cfg
    old_cwd = os.getcwd()
    OmegaConf.set_readonly(config.hydra, True)
    # HydraConfig.get() returns cfg.hydra: the job's own node, as set_config's masked copy is.
    instance.cfg = config  # type: ignore[assignment]
    chdir = False
    try:
        output_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        output_dir /= str(OmegaConf.select(config, "hydra.sweep.subdir"))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        task_config = _task_config(config)
        ret = JobReturn(
            overrides=list(OmegaConf.to_container(config.hydra.overrides.task)),  # type: ignore[arg-type]
            cfg=task_config,
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        chdir = bool(config.hydra.job.chdir)  # None (Hydra < 1.2's default) is not ours
        if chdir:
            os.chdir(output_dir)
        ret.working_dir = os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        if config.hydra.output_subdir is not None:
            _save_hydra_files(config, task_config, output_dir / str(config.hydra.output_subdir))
        with env_override(config.hydra.job.env_set):
            hydra_context.callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_config)
                ret.status = JobStatus.COMPLETED
            except Exception as error:
                ret.return_value = error
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        for handler in logging.getLogger().handlers:
            handler.flush()
        hydra_context.callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        instance.cfg = previous
        if chdir:
            os.chdir(old_cwd)


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config without its ``hydra`` node, typed as the job's config, as the copy
    Hydra hands a task: a deep copy that skips the node (the copy's ``memo`` already holds a
    stand-in for it), which is most of a study config, then drops the stand-in."""
    stand_in = DictConfig({})
    task_config = copy.deepcopy(config, memo={id(config.hydra): stand_in})
    with read_write(task_config), open_dict(task_config):
        del task_config["hydra"]
    return task_config


def _save_hydra_files(config: DictConfig, task_config: DictConfig, directory: Path) -> None:
    """The job's ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    task = OmegaConf.to_container(task_config, enum_to_str=True)
    hydra = OmegaConf.to_container(config.hydra, enum_to_str=True)
    texts = {
        "config.yaml": _mapping_yaml(task, ()),
        "hydra.yaml": "hydra:\n" + _mapping_yaml(hydra, ("hydra",)),
        "overrides.yaml": OmegaConf.to_yaml(config.hydra.overrides.task),
    }
    for name, text in texts.items():
        (directory / name).write_text(text, encoding="utf-8")


def _mapping_yaml(mapping: Any, path: tuple[str, ...]) -> str:
    """The lines ``OmegaConf.to_yaml`` writes for a mapping's entries, the mapping sitting under
    the keys ``path`` of the file.

    Block-style YAML of a mapping is its entries' lines one after another. The jobs of a sweep
    share most entries (data and model settings; the launcher, logging and help settings of
    the hydra node): each entry's lines are made once per process (``_entry_yaml``, keyed by
    the entry's JSON) instead of by PyYAML's pure-Python emitter for every job.

    Args:
        mapping: plain data (``OmegaConf.to_container``) of a node of the job's config.
        path: the keys the node sits under (``()``: the file's top level).

    Returns:
        Its entries' YAML lines.
    """
    assert isinstance(mapping, dict)
    parts = []
    for key, value in mapping.items():
        try:
            entry = json.dumps({key: value})
        except (TypeError, ValueError):
            entry = ""
        if entry and json.loads(entry) == {key: value}:
            parts.append(_entry_yaml(entry, path))
        else:  # not plain JSON data (e.g. a key that is not a string): no shared text for it
            parts.append(_rendered({key: value}, path))
    return "".join(parts)


@functools.lru_cache(maxsize=1024)
def _entry_yaml(entry: str, path: tuple[str, ...]) -> str:
    """One entry (``{key: value}`` as JSON) of a mapping under ``path``, as YAML lines.

    An entry that is itself a mapping is made of its own entries' lines, under its key's line:
    an entry that differs from job to job (``hydra.job``, ``hydra.runtime``, ``optimizer``)
    differs in a few of its own entries only, and the others are made once.
    """
    ((key, value),) = json.loads(entry).items()
    if isinstance(value, dict) and value and _key_line(key, path).endswith(":\n"):
        return _key_line(key, path) + _mapping_yaml(value, (*path, key))
    return _rendered({key: value}, path)  # a leaf, or a key PyYAML writes otherwise ("? ...")


@functools.lru_cache(maxsize=256)
def _key_line(key: str, path: tuple[str, ...]) -> str:
    """The line of a key whose value is a (non-empty) block mapping, under ``path``."""
    return _rendered({key: {"_": 0}}, path).splitlines(keepends=True)[0]


def _rendered(data: dict[str, Any], path: tuple[str, ...]) -> str:
    """``OmegaConf.to_yaml``'s lines for ``data`` placed under the keys ``path``: rendered in
    place, since PyYAML wraps a long line by its column, so its depth matters."""
    for key in reversed(path):
        data = {key: data}
    lines = OmegaConf.to_yaml(data).splitlines(keepends=True)
    return "".join(lines[len(path) :])
