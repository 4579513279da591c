#!/usr/bin/env bash
# The README's path as a new user walks it, before `make test` adds the test extras: `make
# install` alone (the lock, no extras), the environment checked against the lock, then a tiny
# study sweep and a tiny `make reproduce` (which installs the reference extra itself) with its
# ledger, from a directory outside the repository as a user's would be.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

make install
.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_lock.py

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
store="sqlite:///$work/mlflow.db"
tiny=(+debug=tiny trainer.verbose=false "tracking.uri=$store")

echo "== a study sweep (README: python experiments/run.py -m +experiment=binary_vs_categorical)"
(cd "$work" && "$ROOT/.venv/bin/python" "$ROOT/experiments/run.py" -m \
    +experiment=binary_vs_categorical seed=0,1 "${tiny[@]}")

# No seeds in STUDY_ARGS: make reproduce runs each study on the seeds the ledger judges
# (claims.seeds=2: seeds 0,1, lr_sweep 0-3); seeds named there would leave lr_sweep short and
# the ledger would train it again.
echo "== make reproduce (every study, 2 seeds (lr_sweep 4), tiny; then the ledger)"
(cd "$work" && make --no-print-directory -f "$ROOT/Makefile" reproduce VENV="$ROOT/.venv" \
    ARGS="${tiny[*]} claims.seeds=2")
ledger="$(find "$work/outputs/claims" -name claims.md | head -1)"
test -s "$ledger" || { echo "the ledger wrote no claims.md under $work/outputs/claims" >&2; exit 1; }
# The ledger judged the studies make reproduce ran: it had none to run itself.
if grep -q "run by this ledger" "$ledger"; then
    grep "run by this ledger" "$ledger" >&2
    echo "the ledger ran a study itself: make reproduce did not run it on the seeds judged" >&2
    exit 1
fi
# make reproduce installed PyTorch itself: C7's cross-framework parts were measured.
if grep -q "PyTorch not installed" "$ledger"; then
    echo "C7 was not measured against PyTorch: make reproduce did not install it" >&2; exit 1
fi
echo "== the user's path works: install from the lock, a study, make reproduce, the ledger"
