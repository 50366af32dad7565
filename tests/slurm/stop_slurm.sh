#!/usr/bin/env bash
# stop_slurm.sh -- stop the slurmd/slurmctld/munged started by start_slurm.sh.
# Idempotent; uses the pid files (never a broad pkill). Same env knobs as start_slurm.sh
# (SLURM_CONF, SLURM_LOCAL_DIR). SLURM_KEEP_MUNGE=1 leaves munged running.
set -uo pipefail
export SLURM_CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
LOCAL_DIR="${SLURM_LOCAL_DIR:-/var/lib/slurm-local}"
log() { echo "[stop_slurm] $*" >&2; }

# Cancel every job first: stopping slurmd does NOT stop running jobs (their slurmstepd
# keeps going), so without this, job processes would outlive the cluster.
if [ -f "$SLURM_CONF" ] && timeout 3 scontrol ping 2>/dev/null | grep -q UP; then
    jobs=$(squeue -h -t PD,R,CG,S,CF -o %A 2>/dev/null | sort -u)
    if [ -n "$jobs" ]; then
        log "cancelling jobs: $(echo $jobs)"
        echo "$jobs" | xargs -r scancel 2>/dev/null || true
        kw=$(scontrol show config 2>/dev/null | awk '$1=="KillWait"{print $3}'); kw=${kw:-30}
        for _ in $(seq $(( (kw + 5) * 2 ))); do
            [ -z "$(squeue -h -t R,CG -o %A 2>/dev/null)" ] && break; sleep 0.5
        done
    fi
fi

stop_pidfile() {  # name pidfile
    local name=$1 pf=$2 pid
    [ -f "$pf" ] || return 0
    pid=$(cat "$pf")
    if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$name" ]; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then log "$name ($pid) ignored TERM, KILL"; kill -KILL "$pid"; fi
        log "$name ($pid) stopped"
    fi
    rm -f "$pf"
}
stop_pidfile slurmd "$LOCAL_DIR/run/slurmd.pid"
stop_pidfile slurmctld "$LOCAL_DIR/run/slurmctld.pid"
[ "${SLURM_KEEP_MUNGE:-0}" = 1 ] || stop_pidfile munged /run/munge/munged.pid

left=$(pgrep -x slurmstepd | tr '\n' ' ')
[ -z "$left" ] || log "warning: slurmstepd processes still alive: $left"
exit 0
