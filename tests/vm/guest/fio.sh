#!/bin/sh
# fio verify on /dev/ublkbN: 4 jobs of random writes (4k..64k) with
# verify=crc32c on separate regions, verified inline; then the server is
# stopped, started again, and the same jobs re-verify what is on the device.
. /lsvd/tests/vm/guest/lib.sh
SIZE=${SIZE:-256M}
JOBSIZE=${JOBSIZE:-48M}

part fio-verify
rm -rf "$STORE_DIR"; mkdir -p "$STORE_DIR"
start_server --create "$SIZE" ${MODE:-}
job="--filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 --numjobs=4
  --size=$JOBSIZE --offset_increment=$JOBSIZE --rw=randwrite --bsrange=4k-64k
  --verify=crc32c --verify_fatal=1 --randrepeat=1 --group_reporting"
# shellcheck disable=SC2086
fio --name=write-verify $job --do_verify=1 --output=/tmp/fio.out || { cat /tmp/fio.out; fail "fio write+verify"; }
grep -E "WRITE:|READ:|err=" /tmp/fio.out
grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio reported errors"; }
stop_server

part fio-reverify-after-restart
start_server ${MODE:-}
# shellcheck disable=SC2086
fio --name=write-verify $job --verify_only --output=/tmp/fio2.out || { cat /tmp/fio2.out; fail "fio verify_only after restart"; }
grep -E "READ:|err=" /tmp/fio2.out
stop_server
part ""
echo "fio: OK"
