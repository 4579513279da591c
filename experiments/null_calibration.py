"""Null calibration of the training claims' rules on stored runs, randomly relabelled.

    python experiments/null_calibration.py --tracking-uri sqlite:///mlflow.db
    python experiments/null_calibration.py --tracking-uri sqlite:///mlflow.db --claims C13 C14 \
        --draws 10000

Per claim (``claims.calibration.NULL_DESIGNS``: which runs of which study are shuffled, and
which verdicts are false alarms), how often its rules called it holds / contradicted when the
arms were the newest finished sweep's own runs, shuffled among its arms within each seed;
each rate with its exact (Clopper-Pearson) 95% interval, against the protocol's stated rate
(alpha / 2 per direction). Exits 1 when a false-alarm rate's interval lies above it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xent_tf.claims.calibration import (
    NULL_DESIGNS,
    NullRates,
    design_null_rates,
    is_false_alarm_rate_above,
    stored_pool,
)
from xent_tf.claims.protocol import PROTOCOL_VERSION, statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument(
        "--claims",
        nargs="+",
        default=list(NULL_DESIGNS),
        choices=list(NULL_DESIGNS),
        help="the claims to calibrate (default: every training claim)",
    )
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.draws < 1:
        parser.error(f"--draws={args.draws}: needs at least 1")
    stated = statistic("alpha") / 2
    print(f"protocol {PROTOCOL_VERSION}; stated false-alarm rate per direction: {stated:g}")
    done: dict[str, NullRates] = {}
    above = []
    for claim in args.claims:
        design = NULL_DESIGNS[claim]
        if claim not in done:
            pool = stored_pool(args.tracking_uri, design)
            start = time.perf_counter()
            rates = design_null_rates(design, pool.records, args.draws, args.seed)
            done.update(rates)
            wanted = [c for c in rates if c in args.claims]
            print(f"{pool.source}; {args.draws} draws in {time.perf_counter() - start:.0f} s")
            print(f"  null: {design.why}")
            for shown in wanted:
                alarms = ", ".join(v.value for v in NULL_DESIGNS[shown].false_alarms)
                flag = is_false_alarm_rate_above(done[shown], NULL_DESIGNS[shown], stated)
                if flag:
                    above.append(shown)
                verdict = "ABOVE the stated rate" if flag else "within the stated rate"
                print(f"  {done[shown].describe(0.95)}; false alarms: {alarms}: {verdict}")
    sys.exit(1 if above else 0)


if __name__ == "__main__":
    main()
