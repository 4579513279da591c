"""A replica batch's runs recorded one store call per record vs buffered (one transaction).

Trains one batch of the reference run (``REPLICAS`` seeds, a study's tracking settings: no
per-run PNG, the model file as a plain artifact), then records its replicas with
``record_outcome`` into two SQLite stores that already hold the experiment and a parent run,
as a study's do: alternately per-run (``buffered=False``, MLflow's calls) and buffered
(``writing.BufferedRun``), ``ROUNDS`` times each, so that load from other processes falls on
both alike. Prints the CPU (this process's, ``time.process_time``) and wall milliseconds per
recorded run of each, and their ratio.

    python -m benchmarks.batched_records [--replicas 16] [--rounds 4] [--lr-find]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    """Measure and print (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--lr-find", action="store_true", help="with the range test's series")
    args = parser.parse_args()

    from benchmarks.common import compose_config, median
    from xent_tf.track.writing import start_parent_run
    from xent_tf.train.replica_batch import record_outcome, train_batch

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        uris = {mode: f"sqlite:///{work / f'{mode}.db'}" for mode in ("per-run", "buffered")}
        parents = {
            mode: start_parent_run(uri, "bench", "parent", {})[0] for mode, uri in uris.items()
        }
        overrides = [
            "trainer.verbose=false",
            "tracking.plots=false",
            "tracking.logged_model=false",
            "experiment_name=bench",
            *(["lr_find.enabled=true"] if args.lr_find else []),
        ]
        configs = {
            mode: [
                compose_config([*overrides, f"tracking.uri={uri}", f"seed={s}"])
                for s in range(args.replicas)
            ]
            for mode, uri in uris.items()
        }
        batches = {mode: train_batch(c) for mode, c in configs.items()}
        cpu: dict[str, list[float]] = {mode: [] for mode in uris}
        wall: dict[str, list[float]] = {mode: [] for mode in uris}
        for round_ in range(args.rounds):
            for mode in uris if round_ % 2 == 0 else reversed(list(uris)):
                started_cpu, started = time.process_time(), time.perf_counter()
                for k in range(args.replicas):
                    out = work / f"{mode}-{round_}-{k}"
                    out.mkdir()
                    record_outcome(
                        batches[mode],
                        k,
                        out,
                        [f"seed={k}"],
                        parents[mode],
                        None,
                        None,
                        "bench#1",
                        buffered=mode == "buffered",
                    )
                cpu[mode].append((time.process_time() - started_cpu) / args.replicas)
                wall[mode].append((time.perf_counter() - started) / args.replicas)
        for mode in uris:
            print(
                f"{mode:9s} CPU {1000 * median(cpu[mode]):6.1f} ms/run "
                f"(rounds: {', '.join(f'{1000 * v:.1f}' for v in cpu[mode])}); "
                f"wall {1000 * median(wall[mode]):6.1f} ms/run"
            )
        ratios = [b / p for b, p in zip(cpu["buffered"], cpu["per-run"], strict=True)]
        print(
            f"buffered / per-run CPU: {statistics.median(ratios):.2f} (per round: "
            f"{', '.join(f'{r:.2f}' for r in ratios)})"
        )


if __name__ == "__main__":
    main()
