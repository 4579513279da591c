"""Rebuild a study's report from MLflow alone, without retraining.

python experiments/report.py mse_vs_ce                 # latest finished sweep of it
python experiments/report.py --run-id <parent run id>  # exactly that sweep
python experiments/report.py mse_vs_ce --tracking-uri http://127.0.0.1:5001 --no-upload
python experiments/report.py --sync multirun/mse_vs_ce/<date_time>   # send its jobs' spools
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xent_tf.claims.study_report import publish_report


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, rebuild the report, print it; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("experiment", nargs="?", help="MLflow experiment (study) name")
    parser.add_argument("--run-id", help="the sweep's parent run id (instead of a name)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default reports/<name>)"
    )
    parser.add_argument("--no-upload", action="store_true", help="don't attach to the parent run")
    parser.add_argument(
        "--sync",
        type=Path,
        metavar="DIR",
        help="send what the runs under DIR (a sweep's or a job's output dir) kept in their "
        "spools while the tracking server was away, then stop",
    )
    args = parser.parse_args(argv)
    if args.sync is not None:
        return sync(args.sync)
    if not args.experiment and not args.run_id:
        parser.error("give an experiment name or --run-id")
    out = args.out or Path("reports") / (args.experiment or args.run_id)
    out.mkdir(parents=True, exist_ok=True)
    try:
        _, text = publish_report(
            args.tracking_uri,
            out,
            experiment_name=args.experiment,
            parent_run_id=args.run_id,
            upload=not args.no_upload,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nwritten: {out / 'report.md'}, {out / 'report.html'}")
    return 0


def sync(directory: Path) -> int:
    """Replay every spool under ``directory``; a sweep directory's must be its parent's runs.

    Returns:
        0, or 2 when a spool was refused (damaged, another sweep's): then none was sent.
    """
    from xent_tf.launch.callback import parent_for_sweep
    from xent_tf.track import recovery
    from xent_tf.track.spool import SpoolError

    if not directory.is_dir():
        print(f"error: --sync {directory}: no such directory", file=sys.stderr)
        return 2
    parent = parent_for_sweep(directory)
    try:
        replayed = recovery.replay_spools(directory, parent.run_id if parent else None)
    except SpoolError as error:
        print(f"error: nothing was sent: {error}", file=sys.stderr)
        return 2
    for done in replayed:
        print(
            f"run {done.run_id}: {done.records} records, {done.points_sent} metric points sent "
            f"({done.points_present} there already), status {done.status or '(unchanged)'}"
        )
    print(f"{len(replayed)} spools sent from {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
