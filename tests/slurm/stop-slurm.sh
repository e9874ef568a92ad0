#!/usr/bin/env bash
# Stop the daemons that start-slurm.sh started (by their pid files): slurmd, slurmctld, and
# munged if it was not running before.
set -uo pipefail
state=${FEATSCALE_SLURM_STATE:-/var/tmp/featscale-slurm}
stop() {  # stop <pid file>: TERM, then wait up to 10 s
    [[ -s $1 ]] || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
}
stop "$state/slurmd.pid"
stop "$state/slurmctld.pid"
stop "$state/munged.pid"
