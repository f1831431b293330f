#!/usr/bin/env bash
# CI step: start a one-node SLURM cluster on this machine, run tests/test_slurm.py
# against it (a failure, not a skip, if SLURM is not usable), and stop the daemons
# again whatever happens. Exits with pytest's status. Needs root and apt (Debian).
#
#   bash tests/slurm/run_ci.sh [extra pytest arguments]
#
# PYTHON: the interpreter with requirements.txt installed (default: .venv/bin/python);
# requirements-slurm.txt is installed into it here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

# The SLURM executor plugin is installed here, not with requirements.txt (see there).
"$PYTHON" -m pip install --quiet -r "$REPO/requirements-slurm.txt"

trap 'bash "$HERE/stop_slurm.sh"' EXIT
trap 'exit 130' INT TERM  # run the EXIT trap on Ctrl-C or a CI timeout too

bash "$HERE/setup_slurm.sh"
cd "$REPO"
status=0
SLURM_TEST_REQUIRED=1 "$PYTHON" -m pytest -q tests/test_slurm.py "$@" || status=$?
exit "$status"
