#!/bin/sh
# Smoke test of the VM harness: ublk, null_blk (zoned), the 9p shares and the
# tools are there. Run: tests/vm/run.sh tests/vm/guest/smoke.sh
set -eu
fail() { echo "smoke: FAIL: $*"; exit 1; }

[ -c /dev/ublk-control ] || fail "/dev/ublk-control missing"
echo "smoke: /dev/ublk-control present"

insmod /lib/modules/null_blk.ko zoned=1 zone_size=64 nr_devices=1 gb=1 || fail "insmod null_blk"
[ -b /dev/nullb0 ] || fail "/dev/nullb0 missing"
z=$(cat /sys/block/nullb0/queue/zoned)
n=$(cat /sys/block/nullb0/queue/nr_zones)
[ "$z" = host-managed ] || fail "nullb0 zoned=$z"
[ "$n" = 16 ] || fail "nullb0 nr_zones=$n"
blkzone report -c 2 /dev/nullb0 || fail "blkzone report"
echo "smoke: null_blk zoned: $z, $n zones"

[ -f /lsvd/Cargo.toml ] || fail "project share not mounted"
touch /scratch/smoke-ok || fail "scratch share not writable"
if touch /lsvd/.smoke-write 2>/dev/null; then fail "project share is writable"; fi
for t in mkfs.ext4 fsck.ext4 mkfs.xfs xfs_repair mkfs.btrfs btrfs fio blkzone sha256sum; do
    command -v $t >/dev/null || fail "$t missing"
done
fio --version
echo "smoke: OK"
