"""What each per-run MLflow record costs: dataset inputs, the logged model, the model as a file.

    python -m benchmarks.mlflow_records                 # 5 runs into a throwaway SQLite store
    python -m benchmarks.mlflow_records --runs 10

For each of ``--runs`` runs of one experiment (the reference data and a trained-size 10-10 MLP,
untrained: what is logged is the same size), times in a fresh MLflow run:
    datasets     ``recorder.log_datasets`` of the train/val/test splits (one request);
    logged_model ``recorder.log_model`` (MLflow 3 logged model, tensorflow flavour, signature,
                 input example, linked metrics);
    artifact     the path it replaces: ``model.save`` to model.keras + ``log_file`` as an artifact.
Prints the median seconds of each (the first run is left out: it pays one-off imports).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def measure(runs: int, workdir: Path) -> dict[str, list[float]]:
    """Seconds per record kind, one value per run after the first."""
    from xent_tf.config import MakeClassificationConfig
    from xent_tf.metrics import VAL_ACC_METRIC, VAL_LOSS_METRIC
    from xent_tf.track import artifacts, writing
    from xent_tf.train.build import build_dataset
    from xent_tf.train.models import build_mlp

    data = build_dataset(MakeClassificationConfig())
    model = build_mlp(data.n_features, [10, 10], 1, "sigmoid")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    splits = {
        "train": artifacts.DatasetSplit(data.train.x, data.train.y),
        "val": artifacts.DatasetSplit(data.val.x, data.val.y),
        "test": artifacts.DatasetSplit(data.test.x, data.test.y),
    }
    times: dict[str, list[float]] = {"datasets": [], "logged_model": [], "artifact": []}
    for index in range(runs + 1):
        with writing.open_run(uri, "records", f"run {index}") as recorder:
            recorder.log_metrics({VAL_LOSS_METRIC: 0.5, VAL_ACC_METRIC: 0.8}, step=1)
            started = time.perf_counter()
            recorder.log_datasets(splits, "reference", {"generator": "make_classification"})
            datasets = time.perf_counter() - started
            started = time.perf_counter()
            recorder.log_model(model, data.test.x[:5], step=1)
            logged = time.perf_counter() - started
            started = time.perf_counter()
            path = workdir / f"model-{index}.keras"
            model.save(path)
            recorder.log_file(path, "model")
            artifact = time.perf_counter() - started
        if index:  # the first run imports the flavour and warms the store
            times["datasets"].append(datasets)
            times["logged_model"].append(logged)
            times["artifact"].append(artifact)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xent-records-") as workdir:
        times = measure(args.runs, Path(workdir))
    for name, values in times.items():
        print(
            f"{name:>13}: median {statistics.median(values):.3f} s per run "
            f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"
        )


if __name__ == "__main__":
    main()
