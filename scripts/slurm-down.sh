#!/usr/bin/env bash
# Stops the test cluster scripts/slurm-up.sh started and removes its configuration and state.
set -uo pipefail
dir="${PRIVYNET_SLURM_DIR:-/tmp/privynet-slurm}"
conf=/etc/slurm/slurm.conf
if [ -f "$conf" ] && ! grep -q "^# privynet test cluster" "$conf"; then
    echo "slurm-down: $conf is not this project's test cluster; not touching it" >&2
    exit 1
fi
# Cancel whatever is still queued (one argument per job id), then stop the daemons.
jobs=$(squeue -h -o %i 2>/dev/null || true)
[ -n "$jobs" ] && scancel --quiet $jobs 2>/dev/null || true
pkill -x slurmd; pkill -x slurmctld
for _ in $(seq 1 100); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 0.1
done
rm -rf "$dir" "$conf"
echo "slurm-down: stopped" >&2
