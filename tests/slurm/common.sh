# Paths and helpers shared by setup_slurm.sh and stop_slurm.sh (sourced, not run).
SLURM_CONF_FILE=/etc/slurm/slurm.conf
CONF_MARKER="# Written by tests/slurm/setup_slurm.sh"
SPOOL=/var/spool/slurm-test
LOGDIR=/var/log/slurm
JOBCOMP_LOG=$LOGDIR/jobcomp.log
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

log() { echo "slurm-test: $*"; }
die() { echo "slurm-test: error: $*" >&2; exit 1; }

# True if the pid file names a live process.
running() {
    local pid
    [[ -s $1 ]] && pid="$(cat "$1")" && [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# Stop the daemon whose pid file is $2 (TERM, then KILL after 10 s); no-op if not running.
stop_daemon() {
    local name=$1 pidfile=$2 pid
    if ! running "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$name did not stop after 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}
