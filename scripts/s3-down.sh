#!/usr/bin/env bash
# Stops the test S3 server scripts/s3-up.sh started and removes its state (and every object).
set -uo pipefail
dir="${PRIVYNET_S3_DIR:-/tmp/privynet-s3}"
if [ -f "$dir/ceph.conf" ] && ! grep -q "^# written by scripts/s3-up.sh" "$dir/ceph.conf"; then
    echo "s3-down: $dir is not this project's test cluster; not touching it" >&2
    exit 1
fi
pkill -x radosgw; pkill -x ceph-osd; pkill -x ceph-mon
for _ in $(seq 1 100); do
    pgrep -x radosgw >/dev/null || pgrep -x ceph-osd >/dev/null || pgrep -x ceph-mon >/dev/null || break
    sleep 0.1
done
rm -rf "$dir"
echo "s3-down: stopped" >&2
