#!/usr/bin/env bash
# Install (Debian's slurm-wlm and munge, if missing) and start a one-node SLURM cluster on
# this machine for tests/test_slurm.py: slurmctld and slurmd on localhost, one GPU GRES,
# no accounting. Needs root. Idempotent: a cluster it started before is restarted afresh.
# Stop it with tests/slurm/stop-slurm.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${FEATSCALE_SLURM_STATE:-/var/tmp/featscale-slurm}

if [[ $(id -u) != 0 ]]; then
    echo "start-slurm.sh: needs root (it installs packages and writes /etc/slurm)" >&2
    exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

"$here/stop-slurm.sh" >/dev/null 2>&1 || true

# munge: the key is made when the package is installed; make one if it is missing
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
rm -rf "$state"
mkdir -p "$state/slurmctld" "$state/slurmd" /etc/slurm
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    cp /run/munge/munged.pid "$state/munged.pid"  # ours: stop-slurm.sh stops it
fi

host=$(hostname -s)
node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$state|g" -e "s|@NODE@|$node|" "$here/slurm.conf.in" >/etc/slurm/slurm.conf
echo "NodeName=$host Name=gpu File=/dev/null" >/etc/slurm/gres.conf

slurmctld -c   # -c: start from a clean state (no jobs of an earlier cluster)
slurmd

for _ in $(seq 60); do
    if [[ $(sinfo -h -N -o %T 2>/dev/null) == idle ]]; then
        echo "SLURM is up: $(sinfo -h -N -o '%N %c CPUs %m MB %G')"
        exit 0
    fi
    sleep 1
done
echo "start-slurm.sh: the node did not become idle; see $state/slurmctld.log and $state/slurmd.log" >&2
sinfo -N -l >&2 || true
exit 1
