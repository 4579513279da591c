"""Null calibration of a study's rules on its own stored runs, randomly relabelled.

    python experiments/null_calibration.py --tracking-uri sqlite:///mlflow.db --study annealing

Prints, per claim the study checks, how often its rules called it holds / contradicted when
the arms were the same runs relabelled (the protocol's stated rate: alpha / 2 per direction).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xent_tf.claims.calibration import ARMS, stored_null_rates
from xent_tf.claims.protocol import statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--study", required=True, choices=sorted(ARMS))
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rates, source = stored_null_rates(args.tracking_uri, args.study, args.draws, args.seed)
    print(f"{args.study}, {source}; stated rate per direction: {statistic('alpha') / 2:g}")
    for claim_rates in rates.values():
        print(f"  {claim_rates.describe()}")


if __name__ == "__main__":
    main()
