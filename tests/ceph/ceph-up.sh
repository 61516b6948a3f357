#!/bin/bash
# Start a throwaway one-node Ceph cluster (1 mon, 1 osd, optional mgr) on 127.0.0.1
# for lsvd's RADOS tests and benchmark. No cephx. Waits until a write succeeds.
# usage: ceph-up.sh DIR [memstore|bluestore]
#   memstore: data in RAM (2 GiB cap; when full, writes hang: keep data small);
#   bluestore: on a sparse file DIR/osd.block (BLOCK_SIZE bytes, default 10 GiB),
#              survives an OSD kill -9 + restart (`ceph-osd -c DIR/ceph.conf -i 0`).
#   env: WITH_MGR=0 (default 0; the mgr is only needed for `ceph -s` PG stats),
#        POOL=test (pool to create), MON_PORT=3300, BLOCK_SIZE=10737418240
# Afterwards: export CEPH_CONF=DIR/ceph.conf ; stop with ceph-down.sh DIR
set -euo pipefail
DIR=$(realpath -m "${1:?usage: $0 DIR [memstore|bluestore]}")
STORE=${2:-memstore}
WITH_MGR=${WITH_MGR:-0}
BLOCK_SIZE=${BLOCK_SIZE:-10737418240}
POOL=${POOL:-test}
MON_PORT=${MON_PORT:-3300}

T0=$(date +%s.%N)
if [ -e "$DIR/run" ]; then echo "$DIR already in use (run ceph-down.sh first)" >&2; exit 1; fi
mkdir -p "$DIR"/{mon,osd,mgr,run,log}
# on any failure: stop whatever this script started (by pid file), keep DIR/log for debugging
trap 'echo "ceph-up failed (line $LINENO); logs in $DIR/log" >&2; SIG=KILL KEEP=1 "$(dirname "$0")/ceph-down.sh" "$DIR"' ERR
export CEPH_CONF="$DIR/ceph.conf"
FSID=$(uuidgen)

if [ "$STORE" = bluestore ]; then
  STORE_CONF="osd objectstore = bluestore
bluestore block path = $DIR/osd.block
bluestore block create = true
bluestore block size = $BLOCK_SIZE
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824"
else
  STORE_CONF="osd objectstore = memstore
memstore device bytes = 2147483648"
fi

cat > "$CEPH_CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
[mon.a]
mon data = $DIR/mon
public addr = v2:127.0.0.1:$MON_PORT
[osd.0]
osd data = $DIR/osd
$STORE_CONF
[mgr.x]
mgr data = $DIR/mgr
[client]
log file = /dev/null
client mount timeout = 30
admin socket =
EOF

ceph-mon -c "$CEPH_CONF" -i a --mkfs --keyring /dev/null
ceph-mon -c "$CEPH_CONF" -i a                   # daemonizes, writes run/mon.a.pid
if [ "$WITH_MGR" = 1 ]; then ceph-mgr -c "$CEPH_CONF" -i x; fi  # optional: only for `ceph -s` pg stats
OSD_UUID=$(uuidgen)
OSD_ID=$(timeout 60 ceph osd new "$OSD_UUID")   # blocks until the mon answers
ceph-osd -c "$CEPH_CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$DIR/log/mkfs.log" 2>&1 \
  || { cat "$DIR/log/mkfs.log" >&2; false; }
ceph-osd -c "$CEPH_CONF" -i "$OSD_ID" 2>/dev/null
ceph osd pool create "$POOL" 8 8 2>/dev/null
ceph osd pool application enable "$POOL" rados 2>/dev/null
# wait until a write succeeds (i.e. the PGs are active)
for i in $(seq 1 300); do
  if echo ok | timeout 5 rados -p "$POOL" put __probe - 2>/dev/null; then break; fi
  [ "$i" = 300 ] && false    # ~60 s without a successful write: fail (ERR trap cleans up)
  sleep 0.2
done
rados -p "$POOL" rm __probe
trap - ERR
T1=$(date +%s.%N)
echo "cluster up in $(awk "BEGIN{printf \"%.1f\", $T1-$T0}") s; export CEPH_CONF=$CEPH_CONF"
