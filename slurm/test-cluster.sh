#!/usr/bin/env bash
# Single-node SLURM test cluster for vitbench (CI and local testing).
#
#   slurm/test-cluster.sh up   [DIR]           start munged + slurmctld + slurmd
#   slurm/test-cluster.sh down [DIR] [--purge] stop them (keeps DIR unless --purge)
#   slurm/test-cluster.sh status [DIR]         exit 0 if all three daemons run
#
# DIR defaults to ${VITBENCH_SLURM_DIR:-/tmp/vitbench-slurm}. Everything lives
# under DIR: munge key/socket/pid/log/seed, slurm.conf, state, spool, pids,
# logs. Nothing under /etc or /var is read or written, so several clusters can
# run side by side (give each its own DIR and VITBENCH_SLURM_PORT).
#
# Environment:
#   VITBENCH_SLURM_PORT  SlurmctldPort=P, SlurmdPort=P+1 (default 6917)
#   VITBENCH_SLURM_CPUS  CPUs declared for the node (default: max(nproc, 8))
#   VITBENCH_SLURM_CRED_EXPIRE  AuthInfo cred_expire in s (default 30); a
#                        requeued job starts again cred_expire+1 s later
#
# `up` prints exactly one line to stdout, `export SLURM_CONF=DIR/slurm.conf`,
# so `eval "$(slurm/test-cluster.sh up)"` works. Progress goes to stderr.
# SLURM_CONF must always be set for clients: there is no /etc/slurm/slurm.conf
# and no DNS SRV record to fall back on.
#
# Exit status: 0 ok, 1 the cluster failed to come up/stop, 2 usage or
# prerequisites (missing binaries, bad port, DIR too long for a socket path).
set -euo pipefail

PROG=test-cluster.sh
# Daemons live in sbin, which is not on PATH for every user.
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin"

log() { echo "[$PROG] $*" >&2; }
die() { echo "$PROG: $1" >&2; exit "${2:-1}"; }
usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ----------------------------------------------------------------- arguments
[[ $# -ge 1 ]] || usage
CMD=$1; shift
PURGE=0
DIR=
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h|--help) usage ;;
        -*) die "unknown option: $arg" 2 ;;
        *) [[ -z $DIR ]] || die "only one DIR may be given" 2; DIR=$arg ;;
    esac
done
DIR=${DIR:-${VITBENCH_SLURM_DIR:-/tmp/vitbench-slurm}}
DIR=$(realpath -m -- "$DIR")
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge.socket
export SLURM_CONF=$CONF

# ------------------------------------------------------------------- helpers
# pid_alive PIDFILE NAME: the pid in PIDFILE is running and is NAME
# (guards against a recycled pid belonging to an unrelated process).
pid_alive() {
    local pidfile=$1 name=$2 pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(tr -dc 0-9 <"$pidfile")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == "$name"* ]]
}

# stop_daemon PIDFILE NAME: SIGTERM, wait up to 20 s, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    pid=$(tr -dc 0-9 <"$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.2
    done
    log "$name (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    rm -f "$pidfile"
}

all_running() {
    [[ -f $CONF ]] &&
        pid_alive "$DIR/munge/munged.pid" munged &&
        pid_alive "$DIR/run/slurmctld.pid" slurmctld &&
        pid_alive "$DIR/run/slurmd.pid" slurmd
}

any_running() {
    pid_alive "$DIR/munge/munged.pid" munged ||
        pid_alive "$DIR/run/slurmctld.pid" slurmctld ||
        pid_alive "$DIR/run/slurmd.pid" slurmd
}

tail_logs() {
    local f
    for f in "$DIR"/log/munged.log "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
        [[ -f $f ]] || continue
        echo "----- last lines of $f -----" >&2
        tail -n 15 "$f" >&2 || true
    done
}

# fail_up MSG: show the logs, stop whatever this 'up' started, exit 1.
fail_up() {
    tail_logs
    stop_all >/dev/null 2>&1 || true
    die "$1"
}

port_in_use() {
    # Something accepts TCP connections on 127.0.0.1:$1.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_prereqs() {
    local b
    for b in munged munge unmunge slurmctld slurmd sinfo sbatch srun squeue scontrol scancel; do
        command -v "$b" >/dev/null 2>&1 ||
            die "$b not found: apt-get install slurm-wlm munge" 2
    done
    command -v mungekey >/dev/null 2>&1 || command -v dd >/dev/null 2>&1 ||
        die "neither mungekey nor dd found to create a munge key" 2
    # slurmd must be root to start job steps (SlurmdUser=root); untested otherwise.
    ((EUID == 0)) || die "must run as root (slurmd launches the jobs); in CI use sudo" 2
}

node_state() {
    # e.g. "idle", "mixed", "down*", "unknown"; empty if the controller is unreachable
    timeout 10 sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true
}

# ------------------------------------------------------------------------ up
cmd_up() {
    check_prereqs
    local port=${VITBENCH_SLURM_PORT:-6917}
    [[ $port =~ ^[0-9]+$ ]] && ((port >= 1024 && port <= 65534)) ||
        die "VITBENCH_SLURM_PORT must be an integer in 1024..65534, got '$port'" 2
    # Unix socket paths are limited to 108 bytes (munge appends ".lock").
    ((${#SOCKET} <= 100)) ||
        die "DIR too long for a unix socket path (${#SOCKET} > 100 chars): $DIR" 2
    [[ -z ${VITBENCH_SLURM_CPUS:-} || ${VITBENCH_SLURM_CPUS} =~ ^[1-9][0-9]*$ ]] ||
        die "VITBENCH_SLURM_CPUS must be a positive integer, got '$VITBENCH_SLURM_CPUS'" 2
    local cred_expire=${VITBENCH_SLURM_CRED_EXPIRE:-30}
    [[ $cred_expire =~ ^[0-9]+$ ]] && ((cred_expire >= 5)) ||
        die "VITBENCH_SLURM_CRED_EXPIRE must be an integer >= 5, got '$cred_expire'" 2
    NODE=$(hostname -s)

    if all_running; then
        local state
        state=$(node_state)
        if [[ $state == idle || $state == mixed || $state == allocated ]]; then
            local running_port
            running_port=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
            [[ $running_port == "$port" ]] ||
                log "warning: it runs on port $running_port, not $port (down it first to change)"
            log "cluster in $DIR is already running (node $NODE $state)"
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        log "daemons in $DIR run but node state is '${state:-unreachable}'; restarting"
    fi
    if any_running; then
        log "stopping leftover daemons of a partial cluster in $DIR"
        stop_all
    fi

    local q
    for q in "$port" "$((port + 1))"; do
        ! port_in_use "$q" ||
            die "port $q is in use (another cluster?): set VITBENCH_SLURM_PORT to a free P (uses P and P+1)"
    done

    local t0=$SECONDS
    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    mkdir -p "$DIR/munge" "$DIR/log" "$DIR/run" "$DIR/state" "$DIR/spool" "$DIR/tmp"
    chmod 0700 "$DIR/munge" "$DIR/state"
    rm -f "$SOCKET" "$SOCKET.lock"

    # --- munge: own key, own socket; --force because munged refuses root.
    local key=$DIR/munge/munge.key
    if [[ ! -s $key ]]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$key" --bits=1024 >/dev/null
        else
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        fi
        chmod 0400 "$key"
    fi
    log "starting munged (socket $SOCKET)"
    munged --force \
        --socket="$SOCKET" \
        --key-file="$key" \
        --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" ||
        fail_up "munged failed to start"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -S $SOCKET ]] && break
        sleep 0.1
    done
    if ! munge --socket="$SOCKET" -n 2>/dev/null | unmunge --socket="$SOCKET" >/dev/null 2>&1; then
        fail_up "munged in $DIR does not answer on $SOCKET"
    fi

    # --- slurm.conf
    local ncpu cpus mem_total real_mem def_mem
    ncpu=$(nproc)
    cpus=${VITBENCH_SLURM_CPUS:-$((ncpu > 8 ? ncpu : 8))}
    mem_total=$(free -m | awk '/^Mem:/ {print $2}')
    # Leave 10% (at least 512 MiB) for the OS; slurmd drains a node that
    # reports less memory than configured.
    real_mem=$((mem_total - (mem_total / 10 > 512 ? mem_total / 10 : 512)))
    ((real_mem >= 512)) || real_mem=512
    def_mem=$((real_mem / cpus))
    local user
    user=$(id -un)
    local cluster="vitbench$port"

    cat >"$CONF" <<EOF
# Generated by slurm/test-cluster.sh for $DIR -- do not edit, rerun 'up'.
# Slurm $(slurmctld -V 2>/dev/null | awk '{print $2}'), single node, no accounting.
ClusterName=$cluster
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$user
SlurmdUser=root

# Own munged: both auth/munge and cred/munge read "socket=" from AuthInfo.
# cred_expire is also the delay before a requeued job may start again
# (BeginTime = requeue + cred_expire + 1; Slurm's default is 120 s). 30 s
# keeps requeue tests short and still leaves plenty of time for step launch
# on a loaded 2-core machine (VITBENCH_SLURM_CRED_EXPIRE).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=$cred_expire

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$DIR/tmp
MailProg=/bin/true
# Do not pick up /etc/slurm/plugstack.conf (SPANK plugins of the host).
PlugStackConfig=$DIR/plugstack.conf

# No cgroups (containers/CI rarely allow them) and no accounting daemon.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

# Scheduling: start jobs right away. The main loop also runs on every
# submit/completion; the intervals below only bound the worst case.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks for no memory is given the whole node
# and blocks every other job. RealMemory/CPUs per CPU lets all CPUs be used.
DefMemPerCPU=$def_mem
# The node declares more CPUs than the machine has (see NodeName below);
# config_overrides stops slurmd from draining it for that.
SlurmdParameters=config_overrides

JobRequeue=1
ReturnToService=2
# Finished jobs stay visible to 'scontrol show job' (there is no sacct)
# for MinJobAge seconds; squeue never lists them by default.
MinJobAge=60
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10

# CPUs=$cpus on a $ncpu-CPU machine: deliberate oversubscription so that a
# 2-task DDP job, an array throttled to %4 and the test jobs can all run at
# the same time instead of queueing behind each other. Jobs get slower, not
# blocked. Override with VITBENCH_SLURM_CPUS=\$(nproc) for a strict node.
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    : >"$DIR/plugstack.conf"

    # --- slurmctld (-c: fresh state, no jobs recovered from an earlier run)
    log "starting slurmctld (cluster $cluster, port $port)"
    slurmctld -f "$CONF" -c || fail_up "slurmctld failed to start"
    for ((i = 0; i < 100; i++)); do
        timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && break
        if ((i % 10 == 9)) && ! pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
            fail_up "slurmctld exited during startup (port $port busy?)"
        fi
        sleep 0.3
    done

    log "starting slurmd (node $NODE, port $((port + 1)))"
    slurmd -f "$CONF" -N "$NODE" || fail_up "slurmd failed to start"

    # --- wait (bounded) for the node to be idle
    local state=
    for ((i = 0; i < 60; i++)); do
        state=$(node_state)
        [[ $state == idle ]] && break
        sleep 0.5
    done
    if [[ $state != idle ]]; then
        fail_up "node $NODE not idle after 30 s (state: '${state:-controller unreachable}')"
    fi
    log "cluster up in $((SECONDS - t0)) s: $DIR (ports $port/$((port + 1)), $cpus CPUs, ${real_mem} MB)"
    echo "export SLURM_CONF=$CONF"
}

# ---------------------------------------------------------------------- down
stop_all() {
    if [[ -f $CONF ]] && pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
        # Cancel every job first so no slurmstepd/user process is orphaned.
        local part p i
        part=$(timeout 10 scontrol show partition -o 2>/dev/null | sed -n 's/^PartitionName=\([^ ]*\).*/\1/p' || true)
        for p in $part; do
            timeout 10 scancel --partition="$p" 2>/dev/null || true
        done
        for ((i = 0; i < 50; i++)); do
            [[ -z $(timeout 10 squeue -h -o %i 2>/dev/null || true) ]] && break
            sleep 0.2
        done
    fi
    # slurmd and slurmctld each take ~2 s to exit: stop them in parallel,
    # munged last (the slurm daemons authenticate until they are gone).
    stop_daemon "$DIR/run/slurmd.pid" slurmd &
    local bg=$!
    stop_daemon "$DIR/run/slurmctld.pid" slurmctld
    wait "$bg" || true
    stop_daemon "$DIR/munge/munged.pid" munged
}

cmd_down() {
    [[ -d $DIR ]] || { log "no cluster in $DIR"; return 0; }
    stop_all
    if any_running; then
        die "daemons of $DIR are still running"
    fi
    if ((PURGE)); then
        # Only ever delete a directory this script created.
        grep -qs '^# Generated by slurm/test-cluster.sh' "$CONF" ||
            die "refusing to purge $DIR: no slurm.conf generated by $PROG in it" 2
        rm -rf -- "$DIR"
        log "stopped and removed $DIR"
    else
        rm -f "$SOCKET" "$SOCKET.lock"
        log "stopped; logs kept in $DIR/log"
    fi
}

cmd_status() {
    NODE=$(hostname -s)
    if all_running; then
        log "running: $DIR (node $NODE $(node_state))"
        echo "export SLURM_CONF=$CONF"
    else
        log "not running: $DIR"
        return 1
    fi
}

case $CMD in
    up) ((PURGE == 0)) || die "--purge only applies to 'down'" 2; cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    -h|--help|help) usage ;;
    *) die "unknown command '$CMD' (expected up, down or status)" 2 ;;
esac
