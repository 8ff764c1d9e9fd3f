#!/usr/bin/env bash
# A one-node SLURM cluster on this host, for trying the DAG through Snakemake's slurm executor
# (profiles/slurm, README "On a cluster", tests/test_cluster.py).
#
#   scripts/slurm-one-node.sh start    # write slurm.conf, start munged, slurmctld, slurmd; wait for the node idle
#   scripts/slurm-one-node.sh status   # sinfo; exit 0 when the node takes jobs
#   scripts/slurm-one-node.sh stop     # cancel jobs, stop what start started, remove its files
#
# Needs root and Debian's slurm-wlm (apt-get install slurm-wlm: slurmctld, slurmd, slurm-client, munge).
# One node (this host, its CPU count and memory from `slurmd -C`), one default partition `debug`,
# select/cons_tres, proctrack/linuxproc and task/none (no cgroups needed), no accounting database:
# AccountingStorageType=accounting_storage/none, so `sacct` has nothing to read and the slurm executor
# plugin must poll with `squeue` (profiles/slurm sets status_command: squeue); MinJobAge=300 keeps
# finished jobs visible to squeue long enough. Finished jobs are also logged by JobCompType=jobcomp/filetxt
# to $NNDIFF_SLURM_DIR/jobcomp.txt.
# Start is idempotent (a running cluster is left as is); stop removes slurm.conf only if this script wrote
# it, and stops munged only if this script started it. State, logs, pids: $NNDIFF_SLURM_DIR
# (default /var/tmp/nndiff-slurm).
set -euo pipefail

DIR=${NNDIFF_SLURM_DIR:-/var/tmp/nndiff-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by nndiff-bench scripts/slurm-one-node.sh"
WAIT_S=${NNDIFF_SLURM_WAIT_S:-60}

die() { echo "slurm-one-node: $*" >&2; exit 1; }
log() { echo "slurm-one-node: $*"; }

alive() {  # alive PIDFILE: the process it names runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {  # the node's state as sinfo prints it (idle, mixed, allocated, down*, drained, ...) or nothing
    timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -1 || true
}

ours() { [ -f "$CONF" ] && grep -qxF "$MARK" "$CONF"; }

write_conf() {
    local node cpus boards sockets cores threads mem
    node=$(hostname -s)
    # slurmd -C prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    local hw
    hw=$(slurmd -C | head -1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    boards=$(sed -n 's/.*Boards=\([0-9]*\).*/\1/p' <<<"$hw")
    sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$hw")
    cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$hw")
    threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from 'slurmd -C': $hw"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF.tmp" <<EOF
$MARK
# One node, this host ($hw). Removed by 'scripts/slurm-one-node.sh stop'.
ClusterName=nndiff
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# No slurmdbd: sacct cannot answer; squeue keeps a finished job for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
        return  # a munged already answers (ours or the system's)
    fi
    [ -s /etc/munge/munge.key ] || die "no /etc/munge/munge.key (install Debian's munge package, or run mungekey)"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- munged
    touch "$DIR/munged.started"
    for _ in $(seq 50); do
        timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "munged does not answer (see /var/log/munge/munged.log)"
}

start() {
    [ "$(id -u)" = 0 ] || die "run as root (it starts munged, slurmctld and slurmd)"
    for b in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
        command -v "$b" >/dev/null || die "$b not found: apt-get install slurm-wlm"
    done
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
        case "$(node_state)" in idle* | mix* | alloc* | comp*)
            log "already running"; status; return ;;
        esac
    fi
    if [ -f "$CONF" ] && ! ours; then
        die "$CONF exists and was not written by this script: not touching a real cluster's configuration"
    fi
    mkdir -p "$DIR/state" "$DIR/spool"
    alive "$DIR/slurmctld.pid" || write_conf
    start_munge
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld -c || die "slurmctld failed: $(tail -5 "$DIR/slurmctld.log" 2>/dev/null)"
    fi
    for _ in $(seq 50); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
    if ! alive "$DIR/slurmd.pid"; then
        slurmd || die "slurmd failed: $(tail -5 "$DIR/slurmd.log" 2>/dev/null)"
    fi
    local state=""
    for _ in $(seq $((WAIT_S * 2))); do
        state=$(node_state)
        case "$state" in
            idle* | mix* | alloc*) log "node $(hostname -s) is $state"; status; return ;;
            down* | drain*) timeout 10 scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    echo "--- slurmctld.log" >&2; tail -20 "$DIR/slurmctld.log" >&2 || true
    echo "--- slurmd.log" >&2; tail -20 "$DIR/slurmd.log" >&2 || true
    die "node not idle after ${WAIT_S}s (state: ${state:-no answer from slurmctld})"
}

stop_pid() {  # stop_pid PIDFILE NAME
    local pid
    alive "$1" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }; sleep 0.2; done
    log "$2 ($pid) ignored SIGTERM for 10 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

stop() {
    if alive "$DIR/slurmctld.pid"; then
        timeout 10 scancel --partition debug 2>/dev/null || true
    fi
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    if [ -f "$DIR/munged.started" ]; then
        stop_pid /run/munge/munged.pid munged
        rm -f "$DIR/munged.started"
    fi
    if ours; then rm -f "$CONF"; fi
    rm -rf "$DIR"
    log "stopped"
}

status() {
    if ! [ -f "$CONF" ]; then echo "no $CONF: not running"; return 1; fi
    timeout 10 sinfo 2>&1 || true
    if ours; then
        for d in slurmctld slurmd; do
            alive "$DIR/$d.pid" || { echo "$d is not running"; return 1; }
        done
    fi
    case "$(node_state)" in idle* | mix* | alloc* | comp*) return 0 ;; *) return 1 ;; esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
