#!/usr/bin/env bash
# Starts a single-node Slurm cluster on loopback for the Slurm executor's tests (and for trying
# `privynet run --executor slurm` on one machine): munged, slurmctld and slurmd started by hand,
# no systemd, no accounting database. Installs slurm-wlm and munge from Debian when they are
# missing and apt-get is there (CI runs as root). Idempotent: a cluster already up is left alone.
#
#   scripts/slurm-up.sh          start (state under $PRIVYNET_SLURM_DIR, default /tmp/privynet-slurm)
#   scripts/slurm-down.sh        stop
set -euo pipefail

dir="${PRIVYNET_SLURM_DIR:-/tmp/privynet-slurm}"
conf=/etc/slurm/slurm.conf
marker="# privynet test cluster"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "slurm-up: installing slurm-wlm and munge from Debian" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurm-wlm munge >/dev/null
    else
        echo "slurm-up: slurm-wlm and munge are not installed (apt-get install slurm-wlm munge as root)" >&2
        exit 1
    fi
fi
if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up: a cluster is already up" >&2
    exit 0
fi
if [ -f "$conf" ] && ! grep -q "^$marker" "$conf"; then
    echo "slurm-up: $conf exists and is not this project's test cluster; not touching it" >&2
    exit 1
fi

mkdir -p "$dir/state" "$dir/spool" /run/munge /var/log/munge /var/lib/munge
# munged runs as the munge user and wants its key and folders to be that user's alone.
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

host=$(hostname)
# The node's CPUs and memory as slurmd sees them, so the node registers without a mismatch.
node=$(slurmd -C | head -1)
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
mkdir -p /etc/slurm
cat >"$conf" <<CONF
$marker: written by scripts/slurm-up.sh, removed by scripts/slurm-down.sh
ClusterName=privynet
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
# Cores are the consumable resource; memory requests are checked against the node, not summed,
# so several stages share one test node as they would share a cluster's nodes.
SelectTypeParameters=CR_Core
# Without these each dependency step waits for the scheduler's next pass (about 2.6 s).
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld -i
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 100); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "slurm-up: cluster up on $host ($cpus CPUs, $mem MiB)" >&2
        exit 0
    fi
    sleep 0.2
done
echo "slurm-up: the node did not become idle; logs in $dir:" >&2
tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
