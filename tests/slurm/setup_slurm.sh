#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
#   sudo bash tests/slurm/setup_slurm.sh     # install (Debian), configure, start
#   sudo bash tests/slurm/stop_slurm.sh      # stop every daemon started here
#
# Controller (slurmctld) and compute node (slurmd) both live on 127.0.0.1; the node
# is this machine (`hostname -s`) with the CPUs and memory `slurmd -C` reports. Safe
# to run again: the config is rewritten and the daemons restarted. Needs root and
# a working apt (Debian/Ubuntu); does nothing to a slurm.conf it did not write.
#
# The partition is "main", the name profiles/slurm submits to.
# SLURM_TEST_TIMEOUT: seconds to wait for the node to become idle (default: 60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/slurm/common.sh
source "$HERE/common.sh"

PARTITION=main
TIMEOUT="${SLURM_TEST_TIMEOUT:-60}"

[[ $EUID -eq 0 ]] || die "run as root (installs packages and starts system daemons)"

# ------------------------------------------------------------------ packages
# slurm-wlm: slurmctld, slurmd and the clients the Snakemake plugin calls (sbatch to
# submit, sacct or squeue for status, scontrol and sinfo for settings, scancel).
# munge: the authentication every SLURM RPC needs.
install_packages() {
    local missing=()
    for tool in slurmctld slurmd sbatch srun sacct squeue scontrol sinfo scancel; do
        command -v "$tool" >/dev/null || missing+=(slurm-wlm)
    done
    for tool in munged munge unmunge; do
        command -v "$tool" >/dev/null || missing+=(munge)
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get to install it"
    log "installing slurm-wlm and munge"
    # Keep the packages' own service units from starting half-configured daemons
    # (this script runs them); put back whatever policy was there before.
    local policy=/usr/sbin/policy-rc.d saved=""
    if [[ -e $policy ]]; then saved="$(mktemp)"; cp -p "$policy" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    local status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurm-wlm munge >/dev/null; } || status=$?
    if [[ -n $saved ]]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
    ((status == 0)) || die "apt-get install slurm-wlm munge failed (exit $status)"
}

# Service units of a systemd host would fight over the same pid files and ports.
stop_system_units() {
    [[ -d /run/systemd/system ]] || return 0
    systemctl stop slurmd slurmctld munge >/dev/null 2>&1 || true
}

# ------------------------------------------------------------------ munge
start_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    if ! running "$MUNGE_PID"; then
        runuser -u munge -- munged || die "munged did not start; see /var/log/munge/munged.log"
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 20 /var/log/munge/munged.log >&2 || true
    die "munge does not encode/decode credentials"
}

# ------------------------------------------------------------------ slurm.conf
write_config() {
    if [[ -e $SLURM_CONF_FILE ]] && ! grep -q "^$CONF_MARKER" "$SLURM_CONF_FILE"; then
        die "$SLURM_CONF_FILE exists and was not written by this script; not touching it"
    fi
    local node cpus sockets cores threads memory
    node="$(hostname -s)"
    # `slurmd -C` prints this machine as SLURM sees it, e.g.
    # NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
    local probe
    probe="$(slurmd -C | head -n 1)"
    field() { sed -n "s/.*\<$1=\([0-9]*\).*/\1/p" <<<"$probe"; }
    cpus="$(field CPUs)"
    sockets="$(field SocketsPerBoard)"
    cores="$(field CoresPerSocket)"
    threads="$(field ThreadsPerCore)"
    memory="$(field RealMemory)"
    [[ -n $cpus && -n $sockets && -n $cores && -n $threads && -n $memory ]] \
        || die "cannot read the node's hardware from 'slurmd -C': $probe"

    install -d -o slurm -g slurm -m 0755 "$SPOOL/ctld" "$SPOOL/d" "$LOGDIR"
    install -d -m 0755 "$(dirname "$SLURM_CONF_FILE")"
    cat >"$SLURM_CONF_FILE" <<EOF
$CONF_MARKER; rewritten on every run.
# A one-node test cluster: controller and compute node on 127.0.0.1.
ClusterName=snaketest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# A DOWN node (e.g. slurmd killed in an earlier run) comes back when it registers.
ReturnToService=2
# Keep finished jobs in the controller for an hour: without slurmdbd, squeue is how
# Snakemake learns that a job ended (and tests/test_slurm.py reads it afterwards).
MinJobAge=3600

# No cgroups: they are not usable in every container/VM, and nothing here needs
# hard confinement. Processes are tracked through /proc; tasks are not pinned.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30

# Cores and memory are consumable: a job gets --cpus-per-task cores and --mem MB,
# and jobs that do not fit wait, as on a real cluster.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory

# Accounting without a database (no slurmdbd, no MySQL): every finished job is
# appended to a text file. sacct needs slurmdbd and says "accounting storage is
# disabled"; job status comes from squeue (--slurm-status-command squeue).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP_LOG

NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    touch "$JOBCOMP_LOG"
    chown slurm:slurm "$JOBCOMP_LOG"
    log "wrote $SLURM_CONF_FILE (node $node: $cpus CPUs, ${memory} MB; partition $PARTITION)"
}

# ------------------------------------------------------------------ daemons
show_logs() {
    local file
    for file in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log"; do
        echo "----- last lines of $file" >&2
        tail -n 25 "$file" >&2 2>/dev/null || echo "(missing)" >&2
    done
}

start_slurm() {
    # Restart so that a rewritten slurm.conf is read.
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    slurmctld || { show_logs; die "slurmctld did not start"; }
    slurmd || { show_logs; die "slurmd did not start"; }
    local node state deadline=$((SECONDS + TIMEOUT))
    node="$(hostname -s)"
    while :; do
        state="$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null || true)"
        [[ $state == idle ]] && break
        if ((SECONDS >= deadline)); then
            show_logs
            die "node $node is not idle after ${TIMEOUT}s (sinfo says: '${state:-no answer}')"
        fi
        sleep 1
    done
    log "SLURM is up: node $node idle in partition $PARTITION"
    sinfo
}

install_packages
stop_system_units
start_munge
write_config
start_slurm
