#!/usr/bin/env bash
# Starts a real S3 server on loopback for the cloud-store tests (and for trying
# `storage.cloud: s3://...` on one machine): Ceph's S3 gateway (radosgw) over a single-host
# cluster of one monitor and one in-memory OSD, auth off, pool size 1, the v1 messenger on
# 127.0.0.1, radosgw on 127.0.0.1:7480, one user and one bucket. Installs radosgw, ceph-mon and
# ceph-osd from Debian when they are missing and apt-get is there (CI runs as root).
# Idempotent: a gateway already answering is left alone. Prints nothing secret: the test user's
# keys are fixed test values, written with the endpoint to $dir/env for `source`.
#
#   scripts/s3-up.sh       start (state under $PRIVYNET_S3_DIR, default /tmp/privynet-s3)
#   source /tmp/privynet-s3/env; privynet run MANIFEST --set storage.cloud=s3://privynet/runs/x
#   scripts/s3-down.sh     stop and remove everything (the OSD keeps the objects in memory)
set -euo pipefail

dir="${PRIVYNET_S3_DIR:-/tmp/privynet-s3}"
endpoint=http://127.0.0.1:7480
bucket="${PRIVYNET_S3_BUCKET:-privynet}"
key=privynet-test
secret=privynet-test-secret
# The in-memory OSD's capacity: the default pipeline's cloud artifacts are about 1 GB.
osd_bytes="${PRIVYNET_S3_BYTES:-8589934592}"

if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "s3-up: installing radosgw, ceph-mon and ceph-osd from Debian" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            radosgw ceph-mon ceph-osd >/dev/null
    else
        echo "s3-up: radosgw, ceph-mon and ceph-osd are not installed (apt-get install radosgw ceph-mon ceph-osd as root)" >&2
        exit 1
    fi
fi

s3() { # s3 METHOD PATH: a signed request as the test user (curl's SigV4; radosgw wants the payload header)
    curl -sf -m 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X "$1" "$endpoint/$2" -o /dev/null
}
write_env() {
    cat >"$dir/env" <<ENV
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_ENDPOINT_URL=$endpoint
export AWS_REGION=us-east-1
ENV
}

if [ -f "$dir/env" ] && s3 GET "$bucket" 2>/dev/null; then
    echo "s3-up: the gateway is already up at $endpoint" >&2
    exit 0
fi
# A half-started cluster from an earlier try: stop it and wait for its ports to free.
"$(dirname "$0")/s3-down.sh" 2>/dev/null || true
rm -rf "$dir"
mkdir -p "$dir/run" "$dir/log" "$dir/mon.a" "$dir/osd.0"
conf="$dir/ceph.conf"
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<CONF
# written by scripts/s3-up.sh: a one-host test cluster, nothing durable
[global]
fsid = $fsid
mon host = 127.0.0.1:6789
mon initial members = a
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = $osd_bytes
run dir = $dir/run
log file = $dir/log/\$name.log
mon data = $dir/mon.\$id
osd data = $dir/osd.\$id
keyring = $dir/keyring
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:7480
CONF
ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --add a 127.0.0.1:6789 --fsid "$fsid" "$dir/monmap" >/dev/null
fail() { # CI shows only what we print: give the setup log's last lines with the reason
    echo "s3-up: $1; see $dir/log" >&2
    tail -n 20 "$dir/log/setup.log" >&2 2>/dev/null || true
    exit 1
}
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" 2>>"$dir/log/setup.log" || fail "ceph-mon --mkfs failed"
ceph-mon -c "$conf" -i a 2>>"$dir/log/setup.log" || fail "ceph-mon did not start"
# The monitor's first answers can be EPERM while it settles: retry.
ok=
for _ in $(seq 1 60); do
    if ceph -c "$conf" osd create >/dev/null 2>>"$dir/log/setup.log"; then ok=1; break; fi
    sleep 0.5
done
[ -n "$ok" ] || fail "the monitor did not answer"
ceph-osd -c "$conf" -i 0 --mkfs 2>>"$dir/log/setup.log" || fail "ceph-osd --mkfs failed"
# On a cold start (first run on a fresh machine, as in CI) the OSD can send its first monitor
# command before it has the monitor map and exit with "wrong fsid": start it again (seen up to
# 3 times in a row in 15 cold starts).
ok=
for _ in $(seq 1 10); do
    if ceph-osd -c "$conf" -i 0 2>>"$dir/log/setup.log"; then ok=1; break; fi
    sleep 1
done
[ -n "$ok" ] || fail "ceph-osd did not start"
radosgw -c "$conf" -n client.rgw 2>>"$dir/log/setup.log" || fail "radosgw did not start"
# radosgw creates its pools on start; the user can be made once they exist. A cold start can
# take 10 s before the gateway answers, so the user and the bucket are waited for separately
# (a retried `user create` would fail with "user exists").
ok=
for _ in $(seq 1 120); do
    if radosgw-admin -c "$conf" user create --uid=privynet --display-name=privynet \
        --access-key="$key" --secret-key="$secret" >/dev/null 2>>"$dir/log/setup.log"; then ok=1; break; fi
    sleep 0.5
done
[ -n "$ok" ] || fail "radosgw-admin could not create the test user"
ok=
for _ in $(seq 1 240); do
    if s3 PUT "$bucket" 2>/dev/null; then ok=1; break; fi
    sleep 0.5
done
[ -n "$ok" ] || fail "radosgw did not answer at $endpoint"
write_env
echo "s3-up: radosgw at $endpoint, bucket $bucket; source $dir/env for the credentials" >&2
