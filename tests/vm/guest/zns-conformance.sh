#!/bin/sh
# lsvd on REAL host-managed zoned block devices (boot with run.sh --nvme-zns):
#  (a) null_blk zoned, 2 conventional zones, capacity < zone size,
#      max_open 4 / max_active 6, 512-byte blocks;
#  (b) null_blk zoned, no conventional zones, max_active 4, 4096-byte blocks;
#  (c) the QEMU NVMe ZNS namespace /dev/nvme0n1 (64 MiB zones, 48 MiB cap).
# On each: lsvd-zns-conformance (zoned-device + segment-store suites),
# `lsvdctl zns info`, and an image's life cycle on a zns: store (create, io
# write/verify, info, fsck, rm, zones empty again). Then the bad inputs: a
# non-zoned device, a zone range out of bounds, a store over another image.
# One daemon serves two images on zone ranges of one drive while another
# process is refused (exclusive open). Every check fails the script.
. /lsvd/tests/vm/guest/lib.sh
BIN=${LSVD_BIN:-/lsvd/target/release}
CTL=$BIN/lsvdctl
CONF=$BIN/lsvd-zns-conformance
export LSVD_HOME=/tmp/lsvd-home
# expect_fail OUTFILE CMD...: CMD must exit non-zero; its stderr goes to OUTFILE.
expect_fail() {
    out=$1; shift
    if "$@" >/tmp/ef.out 2>"$out"; then
        cat /tmp/ef.out "$out"
        fail "expected failure: $*"
    fi
    echo "  refused as expected: $(cat "$out")"
}
# must_contain FILE TEXT
must_contain() {
    grep -qF -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "$1 lacks: $2"; }
}

[ -x "$CTL" ] || fail "$CTL missing: cargo build --release -p lsvd-ctl --bin lsvdctl"
[ -x "$CONF" ] || fail "$CONF missing: cargo build --release -p lsvd-zns --bin lsvd-zns-conformance"
command -v blkzone >/dev/null || fail "blkzone missing from the initramfs"

# --- null_blk devices through configfs (several with different parameters)
part setup
insmod /lib/modules/null_blk.ko nr_devices=0 || fail "insmod null_blk"
[ -d /sys/kernel/config/nullb ] || fail "null_blk configfs missing"
# nullb NAME SIZE_MB BS ZONED ZONE_MB CAP_MB CONV MAX_OPEN MAX_ACTIVE -> prints /dev/nullbN
nullb() {
    d=/sys/kernel/config/nullb/$1
    mkdir "$d"
    echo "$2" >"$d/size"
    echo "$3" >"$d/blocksize"
    echo 1 >"$d/memory_backed"
    echo "$4" >"$d/zoned"
    if [ "$4" = 1 ]; then
        echo "$5" >"$d/zone_size"
        echo "$6" >"$d/zone_capacity"
        echo "$7" >"$d/zone_nr_conv"
        echo "$8" >"$d/zone_max_open"
        echo "$9" >"$d/zone_max_active"
    fi
    echo 1 >"$d/power"
    # 6.12 names the disk after the configfs item; older kernels nullbN.
    if [ -e "/sys/block/$1" ]; then echo "/dev/$1"; else echo "/dev/nullb$(cat "$d/index")"; fi
}
DA=$(nullb nullza 512 512 1 32 24 2 4 6)
DB=$(nullb nullzb 192 4096 1 16 12 0 0 4)
DC=$(nullb nullzc 512 512 1 32 24 2 4 6)
DN=$(nullb nullplain 64 512 0)
i=0
while [ ! -b "$DA" ] || [ ! -b "$DB" ] || [ ! -b "$DC" ] || [ ! -b "$DN" ] || [ ! -b /dev/nvme0n1 ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "devices missing: $DA $DB $DC $DN /dev/nvme0n1 (boot with run.sh --nvme-zns)"
    sleep 0.1
done
for d in "$DA" "$DB" /dev/nvme0n1; do
    n=${d#/dev/}
    log "$d: zoned=$(cat /sys/block/$n/queue/zoned) nr_zones=$(cat /sys/block/$n/queue/nr_zones) chunk_sectors=$(cat /sys/block/$n/queue/chunk_sectors) max_open=$(cat /sys/block/$n/queue/max_open_zones) max_active=$(cat /sys/block/$n/queue/max_active_zones) lbs=$(cat /sys/block/$n/queue/logical_block_size) pbs=$(cat /sys/block/$n/queue/physical_block_size) write_cache=$(cat /sys/block/$n/queue/write_cache)"
done
[ "$(cat /sys/block/${DN#/dev/}/queue/zoned)" = none ] || fail "$DN should not be zoned"

# zones_empty DEV NSEQ: lsvdctl zns info --json and blkzone agree that all
# NSEQ sequential zones are empty.
zones_empty() {
    "$CTL" zns info "$1" --json >/tmp/info.json
    must_contain /tmp/info.json "\"empty\": $2,"
    e=$(blkzone report "$1" | grep -c "zcond: *1(em)" || true)
    [ "$e" = "$2" ] || { blkzone report "$1"; fail "$1: blkzone sees $e empty zones, expected $2"; }
}

# --- conformance + info + image life cycle on one device
# device DEV LABEL NZONES NCONV
device() {
    dev=$1 label=$2 nz=$3 nconv=$4
    nseq=$((nz - nconv))
    part "$label-conformance"
    "$CONF" "$dev" | tee /tmp/conf.out || fail "lsvd-zns-conformance failed on $dev"
    [ "$(grep -c '^PASS' /tmp/conf.out)" = 4 ] || fail "expected 4 PASS lines on $dev"
    ! grep -q '^FAIL' /tmp/conf.out || fail "conformance FAIL on $dev"
    zones_empty "$dev" "$nseq"

    part "$label-info"
    "$CTL" zns info "$dev" | tee /tmp/info.txt
    must_contain /tmp/info.txt "zones:"
    must_contain /tmp/info.txt "conventional zones:   $nconv"
    grep -q "^zones: *$nz\$" /tmp/info.txt || fail "zns info: zone count is not $nz"
    "$CTL" zns info "$dev" --json >/tmp/info.json
    must_contain /tmp/info.json "\"nr_zones\": $nz,"
    must_contain /tmp/info.json "\"conventional\": $nconv,"
    must_contain /tmp/info.json "\"zoned\": \"host-managed\""

    part "$label-image"
    "$CTL" image create "z-$label" --store "zns:$dev" --size 40M --segment-size 2M
    "$CTL" io write "z-$label" --offset 0 --length 24M --pattern 7
    "$CTL" io write "z-$label" --offset 32M --length 8M --pattern 8
    "$CTL" io verify "z-$label" --offset 0 --length 24M --pattern 7
    "$CTL" io verify "z-$label" --offset 32M --length 8M --pattern 8
    "$CTL" image info "z-$label" | tee /tmp/iinfo.txt
    must_contain /tmp/iinfo.txt "zns:$dev"
    "$CTL" image fsck "z-$label" || fail "fsck of z-$label"
    "$CTL" zns info "$dev" | grep "zones by condition"
    # Another image over the same zones is refused (foreign data).
    expect_fail /tmp/err.txt "$CTL" image create "y-$label" --store "zns:$dev" --size 16M
    must_contain /tmp/err.txt "lsvdctl: error:"
    "$CTL" image rm "z-$label"
    zones_empty "$dev" "$nseq"
    part ""
}

device "$DA" nullb-conv 16 2
device "$DB" nullb-noconv 12 0
device /dev/nvme0n1 nvme-zns 16 0

# --- two images on one drive (zone ranges) and a range in the conformance tool
# (a fresh drive like (a): see the last part for why)
part ranges
"$CONF" "$DC" --zones 4-11 | tee /tmp/conf.out
[ "$(grep -c '^PASS' /tmp/conf.out)" = 4 ] || fail "conformance on zones 4-11 of $DC"
"$CTL" image create r1 --store "zns:$DC" --zones 0-7 --size 32M --segment-size 2M
"$CTL" image create r2 --store "zns:$DC" --zones 8-15 --size 32M --segment-size 2M
"$CTL" io write r1 --length 16M --pattern 11
"$CTL" io write r2 --length 16M --pattern 12
"$CTL" io verify r1 --length 16M --pattern 11
"$CTL" io verify r2 --length 16M --pattern 12
# One process (the lsvd daemon) serves both images of the drive: they share
# one exclusive open of it; meanwhile another process cannot open it.
LSVD=$BIN/lsvd
[ -x "$LSVD" ] || fail "$LSVD missing: cargo build --release -p lsvd-ctl --bin lsvd"
CONTROL=/tmp/lsvd-zns.sock RUN=/tmp/lsvd-zns-run
: >/tmp/lsvd.err
start_lsvd "$CONTROL" "$RUN" /tmp/lsvd
"$CTL" export r1 --control "$CONTROL" || { cat /tmp/lsvd.err; fail "export r1"; }
"$CTL" export r2 --control "$CONTROL" || { cat /tmp/lsvd.err; fail "export r2 (same drive, other zones, same process)"; }
expect_fail /tmp/err.txt "$CTL" io verify r1 --length 4M --pattern 11
must_contain /tmp/err.txt "$DC is busy: opened exclusively elsewhere"
"$CTL" unexport r1 --control "$CONTROL"
"$CTL" unexport r2 --control "$CONTROL"
kill -TERM "$DPID"
wait "$DPID" || { cat /tmp/lsvd.err; fail "lsvd exited with $? on SIGTERM"; }
"$CTL" io verify r1 --length 16M --pattern 11
"$CTL" image info r2 | tee /tmp/iinfo.txt
must_contain /tmp/iinfo.txt "zns:$DC,zones=8-15"
"$CTL" image fsck r1
"$CTL" image fsck r2
"$CTL" image rm r1
"$CTL" image rm r2
zones_empty "$DC" 14

# --- bad input
part bad-input
expect_fail /tmp/err.txt "$CTL" zns info "$DN"
must_contain /tmp/err.txt "$DN is not a zoned block device (queue/zoned=none): use a dir: or zoned-file: store"
expect_fail /tmp/err.txt "$CTL" image create bad1 --store "zns:$DN" --size 16M
must_contain /tmp/err.txt "$DN is not a zoned block device (queue/zoned=none): use a dir: or zoned-file: store"
expect_fail /tmp/err.txt "$CONF" "$DN"
must_contain /tmp/err.txt "is not a zoned block device"
dd if=/dev/zero of=/tmp/plain.img bs=1M count=16 2>/dev/null
LOOP=$(losetup -f)
losetup "$LOOP" /tmp/plain.img
expect_fail /tmp/err.txt "$CTL" image create bad2 --store "zns:$LOOP" --size 16M
must_contain /tmp/err.txt "$LOOP is not a zoned block device (queue/zoned=none)"
losetup -d "$LOOP"
expect_fail /tmp/err.txt "$CTL" image create bad3 --store "zns:/tmp/plain.img" --size 16M
must_contain /tmp/err.txt "/tmp/plain.img is not a block device"
expect_fail /tmp/err.txt "$CTL" image create bad4 --store "zns:$DA" --zones 10-99 --size 16M
must_contain /tmp/err.txt "zone range 10-99 is outside $DA (zones 0-15)"
expect_fail /tmp/err.txt "$CTL" image create bad5 --store "zns:$DA" --zones 9-3 --size 16M
must_contain /tmp/err.txt "first zone 9 is after last zone 3"
expect_fail /tmp/err.txt "$CTL" image create bad6 --store "dir:/tmp/d" --zones 1-2 --size 16M
must_contain /tmp/err.txt "applies to a zns: store"
expect_fail /tmp/err.txt "$CTL" image create bad7 --store "zns:/dev/no-such-dev" --size 16M
must_contain /tmp/err.txt "/dev/no-such-dev"
# No catalog entry was left by any refused create.
"$CTL" image ls | tee /tmp/ls.txt
! grep -q "bad" /tmp/ls.txt || fail "a refused create left a catalog entry"
zones_empty "$DA" 14

# --- a new image on the conventional zones an earlier image was removed from
# (log-engine: ZonedStore::destroy only invalidates the first block of each
# conventional metadata area; a new store must not adopt the old records).
part recreate
"$CTL" image create again --store "zns:$DA" --size 32M --segment-size 2M
"$CTL" io write again --length 4M --pattern 3
"$CTL" io verify again --length 4M --pattern 3
"$CTL" image rm again
part ""
# Remove the configfs devices so the module can be unloaded (suite.sh).
for n in nullza nullzb nullzc nullplain; do
    echo 0 >"/sys/kernel/config/nullb/$n/power"
    rmdir "/sys/kernel/config/nullb/$n"
done
echo "zns-conformance: all checks passed in $(($(date +%s) - T0)) s"
