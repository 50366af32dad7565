#!/usr/bin/env bash
# start_slurm.sh -- bring up a real single-node SLURM (slurmctld + slurmd + munged)
# on localhost, without systemd and without cgroups.  Idempotent: if the node is
# already answering `sinfo` as idle/mixed/allocated, it does nothing and exits 0.
#
# Environment knobs (all optional):
#   SLURM_CONF          path of slurm.conf to write/use   (default /etc/slurm/slurm.conf)
#                       Every slurm client (sbatch, srun, sinfo...) honours SLURM_CONF, so if
#                       you change it, export it in the shells/tests that talk to the cluster.
#   SLURM_LOCAL_DIR     state/spool/log/pid dir           (default /var/lib/slurm-local)
#   SLURM_USER          SlurmUser for slurmctld           (default slurm if that user exists, else root)
#   SLURM_KILLWAIT      KillWait seconds (TERM -> KILL)   (default 10)
#   SLURM_START_TIMEOUT seconds to wait for node idle     (default 60)
#   SLURM_NO_INSTALL=1  never run apt-get
#   SLURM_FORCE_CONF=1  rewrite slurm.conf even if one exists and the cluster is down
set -euo pipefail

export SLURM_CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
LOCAL_DIR="${SLURM_LOCAL_DIR:-/var/lib/slurm-local}"
KILLWAIT="${SLURM_KILLWAIT:-10}"
TIMEOUT="${SLURM_START_TIMEOUT:-60}"
HOST="$(hostname -s)"

t0=$(date +%s.%N)
log() { echo "[start_slurm +$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$t0}")s] $*" >&2; }

node_state() {  # prints the node state or nothing
    timeout 5 sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -1 || true
}

if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages, starts munged as munge, slurmd must be root to launch jobs as other users)"
    exit 1
fi

# serialize concurrent callers (e.g. pytest-xdist workers all calling the fixture)
exec 9>/run/start_slurm.lock
flock -w 300 9 || { log "could not get /run/start_slurm.lock"; exit 1; }

# ---- 0. already up? -------------------------------------------------------
alive() {  # daemon name: true if its pid file names a live process of that name
    local pf="$LOCAL_DIR/run/$1.pid" pid
    [ -f "$pf" ] || return 1
    pid="$(cat "$pf" 2>/dev/null)"; [ -n "$pid" ] || return 1
    [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ]
}

if command -v sinfo >/dev/null 2>&1 && [ -f "$SLURM_CONF" ] \
   && alive slurmctld && alive slurmd; then
    st="$(node_state)"
    if [[ "$st" =~ ^(idle|mixed|allocated|completing)$ ]]; then
        log "SLURM already up (node $HOST is $st); nothing to do"
        exit 0
    fi
fi

# ---- 1. install ----------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    if [ "${SLURM_NO_INSTALL:-0}" = 1 ]; then
        log "slurm/munge not installed and SLURM_NO_INSTALL=1"; exit 1
    fi
    log "installing slurm-wlm + munge via apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurm-wlm munge >/tmp/start_slurm_apt.log 2>&1; then
        apt-get update >>/tmp/start_slurm_apt.log 2>&1
        apt-get install -y --no-install-recommends slurm-wlm munge >>/tmp/start_slurm_apt.log 2>&1 \
            || { tail -30 /tmp/start_slurm_apt.log >&2; exit 1; }
    fi
fi

# ---- 1b. hostname must resolve (slurm itself uses NodeAddr=127.0.0.1, but anything that
# dials the node by name -- e.g. jax.distributed's SLURM auto-detection, which uses the
# first host of SLURM_STEP_NODELIST -- needs it).  Set SLURM_NO_HOSTS_EDIT=1 to skip.
if ! getent hosts "$HOST" >/dev/null && [ "${SLURM_NO_HOSTS_EDIT:-0}" != 1 ]; then
    log "adding '127.0.0.1 $HOST' to /etc/hosts"
    echo "127.0.0.1 $HOST" >>/etc/hosts
fi

# ---- 2. users / dirs -------------------------------------------------------
if [ -n "${SLURM_USER:-}" ]; then
    SUSER="$SLURM_USER"
elif id slurm >/dev/null 2>&1; then
    SUSER=slurm
else
    SUSER=root
fi
mkdir -p "$LOCAL_DIR"/{ctld,spool,log,run} "$(dirname "$SLURM_CONF")"
chown "$SUSER": "$LOCAL_DIR/ctld" "$LOCAL_DIR/log"
chmod 755 "$LOCAL_DIR" "$LOCAL_DIR"/{ctld,spool,log,run}

# ---- 3. munge --------------------------------------------------------------
MUNGE_USER=munge; id munge >/dev/null 2>&1 || MUNGE_USER=root
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown -R "$MUNGE_USER": /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge   # clients (any user) must reach the socket
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged as $MUNGE_USER"
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    if [ "$MUNGE_USER" = root ]; then munged --force 9>&-
    else runuser -u "$MUNGE_USER" -- munged 9>&-; fi
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || { log "munged did not come up"; exit 1; }
fi

# ---- 4. slurm.conf ---------------------------------------------------------
CPUS="$(nproc)"
MEM_AVAIL_MB=$(( $(awk '/^MemAvailable:/{print $2}' /proc/meminfo) / 1024 ))
REALMEM=$(( MEM_AVAIL_MB * 9 / 10 ))
# slurmd -C gives the socket/core/thread layout; keep it consistent with CPUs.
HW="$(slurmd -C 2>/dev/null | head -1 || true)"
SOCK=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$HW"); SOCK=${SOCK:-1}
CORES=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$HW"); CORES=${CORES:-$CPUS}
THREADS=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$HW"); THREADS=${THREADS:-1}
# CR_Core hands out whole cores; on an SMT machine (ThreadsPerCore>1) a 1-cpu job would
# eat 2 CPUs, so fall back to CR_CPU there to keep "nproc one-CPU jobs at once".
SELPARAM=CR_Core; [ "$THREADS" -gt 1 ] && SELPARAM=CR_CPU

# (re)write the config only when slurmctld is down, so a running controller and a
# restarted slurmd never disagree; a hand-written slurm.conf is kept unless SLURM_FORCE_CONF=1.
if ! alive slurmctld && { [ ! -f "$SLURM_CONF" ] || [ "${SLURM_FORCE_CONF:-0}" = 1 ] \
     || grep -q '^# generated by start_slurm.sh' "$SLURM_CONF"; }; then
cat >"$SLURM_CONF" <<EOF
# generated by start_slurm.sh -- single node, no cgroups, no accounting
ClusterName=localcluster
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=${SUSER}
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${LOCAL_DIR}/ctld
SlurmdSpoolDir=${LOCAL_DIR}/spool
SlurmctldPidFile=${LOCAL_DIR}/run/slurmctld.pid
SlurmdPidFile=${LOCAL_DIR}/run/slurmd.pid
SlurmctldLogFile=${LOCAL_DIR}/log/slurmctld.log
SlurmdLogFile=${LOCAL_DIR}/log/slurmd.log
MailProg=/bin/true
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOCAL_DIR}/log/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=${SELPARAM}
ReturnToService=2
KillWait=${KILLWAIT}
MinJobAge=300
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} Boards=1 SocketsPerBoard=${SOCK} CoresPerSocket=${CORES} ThreadsPerCore=${THREADS} RealMemory=${REALMEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
fi

# ---- 5. daemons ------------------------------------------------------------
# stale processes from a half-dead previous run: stop them by pid file
for d in slurmd slurmctld; do alive $d || rm -f "$LOCAL_DIR/run/$d.pid"; done
if ! alive slurmctld; then
    log "starting slurmctld (SlurmUser=$SUSER)"
    # -c: clear previous job state so a fresh start never resurrects old jobs
    slurmctld -c -i 9>&-   # 9>&-: daemons must not inherit the lock fd
fi
for _ in $(seq 100); do timeout 2 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
if ! alive slurmd; then
    log "starting slurmd"
    slurmd 9>&-
fi
# wait until the local slurmd answers RPCs (scontrol show slurmd talks to it directly)
for _ in $(seq 100); do timeout 2 scontrol show slurmd >/dev/null 2>&1 && break; sleep 0.2; done

# ---- 6. wait for the node to be idle -------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    st="$(node_state)"
    [[ "$st" =~ ^(idle|mixed|allocated)$ ]] && break
    if [[ "$st" =~ ^(down|drained|draining|fail) ]]; then
        # e.g. leftover DOWN state; ReturnToService=2 usually handles it
        scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "node $HOST not idle after ${TIMEOUT}s (state='$st')"
        tail -20 "$LOCAL_DIR/log/slurmctld.log" "$LOCAL_DIR/log/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 0.3
done
t1=$(date +%s.%N)
log "SLURM up: node $HOST $st, conf $SLURM_CONF, took $(awk "BEGIN{printf \"%.1f\", $t1-$t0}")s"
exit 0
