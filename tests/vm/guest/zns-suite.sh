#!/bin/sh
# The engine on real zoned block devices, in the guest (issue #9): on a
# null_blk zoned device (memory backed, 8 MiB zones with 6 MiB capacity, no
# conventional zones, max_open 4 / max_active 6) and on the QEMU NVMe ZNS
# namespace (64 MiB zones, 48 MiB capacity; boot with --nvme-zns):
#   - the engine's property tests (model check with reopen/crash/GC),
#   - GC under 10x random overwrite (space bound on segments and on zones,
#     write amplification printed),
#   - the kill -9 crash test of the journal + engine (ZNS_CRASH_CYCLES, 100),
#   - mkfs.ext4 + mount + fsck on /dev/ublkbN of a zns: image through the
#     lsvd daemon, unmap, map again, files verify, image fsck, image rm
#     resets the image's zones,
#   - bad input: a device that holds an image (refused without --force), a
#     data zone reset behind the store's back (open refused, nothing
#     written), a non-zoned device.
# It leaves an image `keep` on the NVMe namespace with its catalog in
# /scratch/zns-home for tests/vm/guest/zns-restart.sh (next boot: QEMU has
# forgotten the zone state, which must be refused).
#
# Needs /lsvd/target/zns-tests.env, written by tests/vm/ci.sh: HOST_ROOT and
# the test binaries (cargo test --no-run) of engine_model, gc_bound, crash.
. /lsvd/tests/vm/guest/lib.sh
CTL=/lsvd/target/release/lsvdctl
LSVD=/lsvd/target/release/lsvd
ENVF=/lsvd/target/zns-tests.env
[ -f "$ENVF" ] || fail "$ENVF missing: run tests/vm/ci.sh (it builds the test binaries)"
. "$ENVF"
for b in "$ENGINE_MODEL" "$GC_BOUND" "$CRASH"; do
    [ -x "/lsvd/$b" ] || fail "test binary /lsvd/$b missing"
done
[ -x "$CTL" ] && [ -x "$LSVD" ] || fail "lsvd/lsvdctl missing"
# The test binaries name their helper binaries by the host's path.
if [ ! -e "$HOST_ROOT/Cargo.toml" ]; then
    mkdir -p "$(dirname "$HOST_ROOT")"
    ln -s /lsvd "$HOST_ROOT"
fi
CASES=${ZNS_CASES:-16}
CYCLES=${ZNS_CRASH_CYCLES:-100}
export TMPDIR=/tmp RUST_LOG=${RUST_LOG:-warn}

# non_empty DEV: number of sequential zones that are not empty.
non_empty() {
    blkzone report "$1" | grep -c 'SEQ_WRITE_REQUIRED' | {
        read -r total
        e=$(blkzone report "$1" | grep 'SEQ_WRITE_REQUIRED' | grep -c '1(em)' || true)
        echo $((total - e))
    }
}

# engine_tests DEV GC_MIB: property tests, GC bound and crash test on DEV.
engine_tests() {
    dev=$1 gcmib=$2 name=$(basename "$1")
    part "$name-proptest"
    LSVD_TEST_ZNS="zns:$dev" PROPTEST_CASES=$CASES "/lsvd/$ENGINE_MODEL" --ignored --test-threads 1 zns_device \
        >/tmp/prop.out 2>&1 || { grep -m4 -B2 -A12 "panicked" /tmp/prop.out; tail -8 /tmp/prop.out; fail "property tests on $dev"; }
    grep -q "test result: ok. 2 passed" /tmp/prop.out || { cat /tmp/prop.out; fail "property tests on $dev did not run"; }
    log "property tests on $dev: 2 properties x $CASES cases passed"
    part "$name-gc"
    LSVD_TEST_ZNS="zns:$dev" LSVD_TEST_ZNS_GC_MIB=$gcmib "/lsvd/$GC_BOUND" --ignored --nocapture --test-threads 1 zns_device \
        >/tmp/gc.out 2>&1 || { tail -40 /tmp/gc.out; fail "GC bound on $dev"; }
    grep -q "test result: ok. 1 passed" /tmp/gc.out || { cat /tmp/gc.out; fail "GC test on $dev did not run"; }
    grep "write amplification" /tmp/gc.out
    part "$name-crash"
    LSVD_CRASH_ZNS="zns:$dev" CRASH_CYCLES=$CYCLES "/lsvd/$CRASH" --ignored --nocapture --test-threads 1 crash_zns_device \
        >/tmp/crash.out 2>&1 || { tail -40 /tmp/crash.out; fail "crash test on $dev"; }
    grep -q "test result: ok. 1 passed" /tmp/crash.out || { cat /tmp/crash.out; fail "crash test on $dev did not run"; }
    grep "cycles=" /tmp/crash.out
    grep -q "cycles=$CYCLES violations=0" /tmp/crash.out || fail "crash test on $dev: not $CYCLES clean cycles"
}

# ublk_fs DEV: an image on DEV mapped through the daemon: ext4 on /dev/ublkbN.
ublk_fs() {
    dev=$1 name=$(basename "$1")
    part "$name-ublk-ext4"
    export LSVD_HOME=/tmp/zns-home-$name LSVD_CONTROL=/tmp/zns-$name.sock
    rm -rf "$LSVD_HOME"
    "$CTL" image create zfs --store "zns:$dev" --force --size 192M >/tmp/create.out 2>&1 \
        || { cat /tmp/create.out; fail "image create on $dev"; }
    "$CTL" image create other --store "zns:$dev" --size 64M >/tmp/other.out 2>&1 \
        && fail "a second image on $dev without --force must be refused"
    grep -qi "force" /tmp/other.out || { cat /tmp/other.out; fail "refusal does not mention --force"; }
    : >/tmp/zns-lsvd.err
    start_lsvd "$LSVD_CONTROL" "/tmp/zns-run-$name" /tmp/zns-lsvd
    bdev=$("$CTL" map zfs --queues 1 --depth 32) || { cat /tmp/zns-lsvd.err; fail "map zfs"; }
    [ -b "$bdev" ] || fail "map printed $bdev"
    mkdir -p /mnt/zns
    mkfs.ext4 -q -F "$bdev" || fail "mkfs.ext4 on $bdev ($dev)"
    mount "$bdev" /mnt/zns || fail "mount $bdev"
    make_tree /mnt/zns 40
    umount /mnt/zns || fail "umount"
    fsck.ext4 -fn "$bdev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck.ext4 -fn on $bdev"; }
    "$CTL" unmap "$bdev" || fail "unmap"
    bdev=$("$CTL" map zfs) || fail "map zfs again"
    mount "$bdev" /mnt/zns || fail "remount"
    check_tree /mnt/zns
    umount /mnt/zns
    "$CTL" unmap zfs || fail "unmap zfs"
    kill -TERM "$DPID"
    wait "$DPID" || { cat /tmp/zns-lsvd.err; fail "lsvd exited with $? on SIGTERM"; }
    "$CTL" image fsck zfs >/tmp/ifsck.out 2>&1 || { cat /tmp/ifsck.out; fail "image fsck zfs"; }
    "$CTL" image info zfs >/tmp/info.out || fail "image info"
    [ "$(non_empty "$dev")" -gt 0 ] || fail "no zone of $dev was written"
    "$CTL" image rm zfs || fail "image rm zfs"
    n=$(non_empty "$dev")
    [ "$n" -eq 0 ] || { blkzone report "$dev" | head; fail "image rm left $n zones of $dev non-empty"; }
    log "ext4 on $bdev over zns:$dev: mkfs, files, fsck clean, remap verified, image rm reset all zones"
}

# behind_checks DEV: a zone reset behind the store's back is refused.
behind_checks() {
    dev=$1 name=$(basename "$1")
    part "$name-reset-behind"
    export LSVD_HOME=/tmp/zns-behind-$name
    rm -rf "$LSVD_HOME"
    "$CTL" image create zb --store "zns:$dev" --force --size 64M >/dev/null || fail "create zb"
    "$CTL" io write zb --offset 0 --length 48M --pattern 5 >/dev/null || fail "io write zb"
    "$CTL" io verify zb --offset 0 --length 48M --pattern 5 >/dev/null || fail "io verify zb"
    # Reset the last non-empty sequential zone behind the store's back.
    start=$(blkzone report "$dev" | grep SEQ_WRITE_REQUIRED | grep -v '1(em)' | tail -1 \
        | sed -n 's/.*start: *\(0x[0-9a-f]*\).*/\1/p')
    [ -n "$start" ] || fail "no written zone found on $dev"
    blkzone reset -o "$start" -c 1 "$dev" || fail "blkzone reset"
    before=$(blkzone report "$dev" | md5sum)
    "$CTL" io verify zb --offset 0 --length 48M --pattern 5 >/tmp/behind.out 2>&1 \
        && fail "an image whose zone was reset behind its back opened"
    grep -q "behind" /tmp/behind.out || { cat /tmp/behind.out; fail "refusal does not say the write pointer is behind"; }
    sed -n 1,3p /tmp/behind.out
    [ "$(blkzone report "$dev" | md5sum)" = "$before" ] || fail "the refused open wrote to $dev"
    "$CTL" image rm zb --force >/dev/null 2>&1 || true
    log "zone reset behind the store's back: refused, nothing written"
}

# (The zoned-device conformance suites and the CLI life cycle run in the
# main suite boot: tests/vm/guest/zns-conformance.sh.)
# --- null_blk zoned
part nullblk-setup
insmod /lib/modules/null_blk.ko nr_devices=1 zoned=1 zone_size=8 zone_capacity=6 \
    zone_nr_conv=0 zone_max_open=4 zone_max_active=6 memory_backed=1 gb=1 || fail "insmod null_blk"
[ "$(cat /sys/block/nullb0/queue/zoned)" = host-managed ] || fail "nullb0 not host-managed"
"$CTL" zns info /dev/nullb0 || fail "zns info nullb0"
engine_tests /dev/nullb0 32
ublk_fs /dev/nullb0
behind_checks /dev/nullb0
rmmod null_blk

# --- a device that is not zoned
part not-zoned
insmod /lib/modules/null_blk.ko nr_devices=1 gb=1 || fail "insmod null_blk (not zoned)"
export LSVD_HOME=/tmp/zns-nz
"$CTL" image create nz --store zns:/dev/nullb0 --size 64M >/tmp/nz.out 2>&1 && fail "a non-zoned device was accepted"
grep -q "not a zoned" /tmp/nz.out || { cat /tmp/nz.out; fail "non-zoned refusal unclear"; }
cat /tmp/nz.out
rmmod null_blk

# --- QEMU NVMe ZNS
part nvme-setup
[ -b /dev/nvme0n1 ] || fail "/dev/nvme0n1 missing: boot with tests/vm/run.sh --nvme-zns"
[ "$(cat /sys/block/nvme0n1/queue/zoned)" = host-managed ] || fail "nvme0n1 not host-managed"
"$CTL" zns info /dev/nvme0n1 || fail "zns info nvme0n1"
engine_tests /dev/nvme0n1 64
ublk_fs /dev/nvme0n1

# Leave an image for the next boot (zns-restart.sh).
part nvme-keep
export LSVD_HOME=/scratch/zns-home
rm -rf "$LSVD_HOME"
"$CTL" image create keep --store zns:/dev/nvme0n1 --force --size 64M >/dev/null || fail "create keep"
"$CTL" io write keep --offset 0 --length 16M --pattern 3 >/dev/null || fail "io write keep"
"$CTL" io verify keep --offset 0 --length 16M --pattern 3 >/dev/null || fail "io verify keep"
blkzone report /dev/nvme0n1 >/scratch/zns-keep-zones.txt
part ""
log "zns suite: OK"
