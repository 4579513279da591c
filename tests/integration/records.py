"""Read a sweep back from the tracking store and count what is there: runs, points, artifacts."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from xent_tf.metrics import BATCH_LOSS_METRIC

# Logged every epoch by every run (training.EpochRecord.metrics, the MLP's three Dense layers);
# every other metric a run has (test/*, train_seconds, val/initial_*, ...) is logged once.
EPOCH_METRICS = frozenset(
    {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/saturated_fraction",
        "lr",
        "epoch_seconds",
        "grad_norm/hidden_1",
        "grad_norm/hidden_2",
        "grad_norm/output",
    }
)
ONCE_METRICS = frozenset({"test/loss", "test/acc", "train_seconds"})
CHILD_ARTIFACTS = frozenset({"config.yaml", "plots/loss_curve.png", "logs/run.log"})
PARENT_ARTIFACTS = frozenset({"report.md", "report.html", "plots/val_loss.png"})


@dataclass
class SweepRecords:
    """One sweep parent and its children, as the store has them."""

    parent: Run
    children: list[Run]
    points: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # run -> metric -> steps

    @property
    def statuses(self) -> Counter[str]:
        return Counter(run.info.status for run in self.children)

    @property
    def total_points(self) -> int:
        return sum(len(steps) for metrics in self.points.values() for steps in metrics.values())

    def incomplete(self, epochs: int) -> dict[str, str]:
        """{run id: what is missing} for FINISHED children whose history is not complete."""
        problems = {}
        for run in self.children:
            if run.info.status != "FINISHED":
                continue
            steps = self.points[run.info.run_id]
            missing = sorted((EPOCH_METRICS | ONCE_METRICS) - set(steps))
            wrong = {}
            for name, got in steps.items():
                if name == BATCH_LOSS_METRIC:
                    continue  # a per-step series, where it is logged as metric points
                if name in EPOCH_METRICS and got != list(range(1, epochs + 1)):
                    wrong[name] = got  # one point per epoch, steps 1..epochs
                elif name not in EPOCH_METRICS and len(got) != 1:
                    wrong[name] = got  # logged once
            if missing or wrong:
                problems[run.info.run_id] = f"missing {missing}, wrong steps {wrong}"
        return problems


def read_sweep(uri: str, experiment_name: str) -> SweepRecords:
    """The experiment's only sweep parent, its children and every metric's steps.

    Args:
        uri: the tracking store.
        experiment_name: the sweep's MLflow experiment (one sweep in it).

    Returns:
        What the store has.
    """
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no experiment {experiment_name!r} in {uri}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "xent.sweep_dir" in r.data.tags]
    assert len(parents) == 1, f"{len(parents)} sweep parents in {experiment_name!r}"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    records = SweepRecords(parent, children, {run.info.run_id: {} for run in children})
    wanted = [(run.info.run_id, name) for run in children for name in run.data.metrics]
    # A request to the server takes ~50 ms one after another, ~9 ms eight at a time.
    with ThreadPoolExecutor(8) as pool:
        histories = pool.map(lambda key: client.get_metric_history(*key), wanted)
        for (run_id, name), history in zip(wanted, histories, strict=True):
            records.points[run_id][name] = sorted(m.step for m in history)
    return records


def artifacts(uri: str, run_ids: Sequence[str]) -> dict[str, set[str]]:
    """Every artifact path (files only, folders walked) of each run."""
    client = MlflowClient(uri)

    def walk(run_id: str) -> set[str]:
        found: set[str] = set()
        folders: list[str | None] = [None]
        while folders:
            folder = folders.pop()
            for item in client.list_artifacts(run_id, folder):
                if item.is_dir:
                    folders.append(item.path)
                else:
                    found.add(item.path)
        return found

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(run_ids, pool.map(walk, run_ids), strict=True))


def report_tables(report: Path) -> list[str]:
    """The lines of a report's Verdicts and Variants tables (what the study found), sorted:
    variants are listed in the order their first run started, which faults and launchers
    change."""
    text = report.read_text()
    found = re.search(r"## Verdicts\n.*?(?=\n## (?!Variants))", text, re.DOTALL)
    assert found is not None, text
    return sorted(found.group(0).splitlines())
