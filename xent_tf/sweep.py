"""Sweeps: one MLflow parent run per Hydra multirun, created once before any job starts.

Parallel jobs racing to create the same experiment or parent is a known MLflow failure, so the
Hydra callback creates both in the launching process and leaves a small JSON file in the sweep
directory; each job reads it (``parent_for_sweep``) and logs itself as a child. When the sweep
ends, the callback builds the study report from the store and attaches it to the parent.
"""

from __future__ import annotations

import atexit
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from xent_tf import tracking
from xent_tf.studies import get_study

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"


@dataclass(frozen=True)
class ParentRun:
    """Where a sweep's parent run lives."""

    run_id: str
    experiment_id: str
    tracking_uri: str


def parent_for_sweep(sweep_dir: Path) -> ParentRun | None:
    """The parent run the sweep's callback created, or None (no callback, tracking off)."""
    path = sweep_dir / PARENT_FILE
    if not path.exists():
        return None
    return ParentRun(**json.loads(path.read_text()))


class MlflowSweepCallback(Callback):
    """Creates the MLflow experiment and the sweep's parent run; reports and ends it at the end.

    An interrupted sweep (Ctrl-C, a crash in the launcher) ends its parent KILLED at exit
    rather than leaving it RUNNING.
    """

    def __init__(self) -> None:
        self.parent: ParentRun | None = None
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.tracking.enabled:
            return
        study = str(config.study)
        if study:
            get_study(study)  # an unknown study fails here, before any job runs
        uri = str(config.tracking.uri)
        tracking.check_tracking_uri(uri)
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        run_id, experiment_id = tracking.start_parent_run(
            uri,
            str(config.experiment_name),
            run_name=f"{config.experiment_name}-sweep-{self.sweep_dir.name}",
            tags={
                "xent.sweep_dir": str(self.sweep_dir),
                tracking.STUDY_TAG: study,
                "hydra.overrides": " ".join(overrides) or "(none)",
            },
        )
        self.parent = ParentRun(run_id, experiment_id, uri)
        (self.sweep_dir / PARENT_FILE).write_text(json.dumps(asdict(self.parent)))
        atexit.register(self._end_if_still_running)
        log.info("sweep parent run %s in experiment '%s'", run_id, config.experiment_name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None or self.sweep_dir is None:
            return
        from xent_tf.report import publish_report  # matplotlib only when a sweep reports

        status = "FINISHED"
        try:
            _, text = publish_report(
                self.parent.tracking_uri, self.sweep_dir, parent_run_id=self.parent.run_id
            )
            log.info("\n%s", text)
        except Exception:
            status = "FAILED"
            log.exception("could not build the sweep's report")
        tracking.end_run(self.parent.tracking_uri, self.parent.run_id, status)
        atexit.unregister(self._end_if_still_running)
        address = tracking.ui_address(self.parent.tracking_uri)
        log.info(
            "report: %s (and on the parent run %s)\nruns table: %s",
            self.sweep_dir / "report.html",
            tracking.run_url(self.parent.experiment_id, self.parent.run_id, address),
            tracking.experiment_url(self.parent.experiment_id, address),
        )

    def _end_if_still_running(self) -> None:
        if self.parent is not None:
            tracking.end_run(
                self.parent.tracking_uri, self.parent.run_id, "KILLED", only_if_running=True
            )
