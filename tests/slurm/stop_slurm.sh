#!/usr/bin/env bash
# Stop the daemons tests/slurm/setup_slurm.sh started (by their pid files).
# Safe to call twice, or when nothing is running.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/slurm/common.sh
source "$HERE/common.sh"

[[ $EUID -eq 0 ]] || die "run as root"
stop_daemon slurmd "$SLURMD_PID"
stop_daemon slurmctld "$CTLD_PID"
stop_daemon munged "$MUNGE_PID"
