#!/bin/sh
# Issue #9 benchmark, one run in the guest (boot with --nvme-zns; TCG, so read
# the ratios): per medium, the raw sequential write bandwidth (fio, 1 MiB,
# direct; --zonemode=zbd on zoned devices) vs lsvd 4 KiB random writes on an
# image there (lsvd-zns-bench; goal >= 0.7), and GC write amplification at
# 80 % fill with random 4 KiB overwrites (goal <= 1.5). Media: null_blk zoned,
# the QEMU NVMe ZNS namespace, and the emulated zoned file on the guest's
# tmpfs (its raw peer: fio on a plain tmpfs file).
. /lsvd/tests/vm/guest/lib.sh
BENCH=/lsvd/target/release/lsvd-zns-bench
[ -x "$BENCH" ] || fail "$BENCH missing: cargo build --release -p lsvd-tests --bin lsvd-zns-bench"
SIZE=${ZNS_BENCH_MIB:-128}
GC=${ZNS_BENCH_GC_MIB:-96}
rows=/tmp/zns-bench.rows
: >"$rows"

raw_fio() { # raw_fio TARGET [fio args...] -> MiB/s
    t=$1; shift
    fio --name=seq --filename="$t" --rw=write --bs=1M --direct=1 --ioengine=psync \
        --size=${SIZE}M "$@" --output-format=terse --terse-version=3 2>/tmp/fio.err \
        | awk -F';' '{printf "%.1f", $48/1024}' || { cat /tmp/fio.err; fail "fio on $t"; }
}

bench() { # bench NAME SPEC RAW_MIB_S
    name=$1 spec=$2 raw=$3
    part "bench-$name"
    "$BENCH" --spec "$spec" --size-mib "$SIZE" --gc-mib "$GC" >/tmp/b.out 2>/tmp/b.err \
        || { cat /tmp/b.err; fail "lsvd-zns-bench on $spec"; }
    cat /tmp/b.out
    rw=$(awk '$1=="randwrite4k_mib_s"{print $2}' /tmp/b.out)
    g=$(awk '$1=="wa80_Greedy"{print $2}' /tmp/b.out)
    c=$(awk '$1=="wa80_CostBenefit"{print $2}' /tmp/b.out)
    ratio=$(awk -v a="$rw" -v b="$raw" 'BEGIN{printf "%.2f", a/b}')
    printf '%-22s %10s %12s %8s %10s %12s\n' "$name" "$raw" "$rw" "$ratio" "$g" "$c" >>"$rows"
}

part nullblk
insmod /lib/modules/null_blk.ko nr_devices=1 zoned=1 zone_size=8 zone_capacity=6 \
    zone_nr_conv=0 zone_max_open=4 zone_max_active=6 memory_backed=1 gb=1 || fail "insmod null_blk"
raw=$(raw_fio /dev/nullb0 --zonemode=zbd --max_open_zones=2)
bench null_blk-zoned zns:/dev/nullb0 "$raw"
rmmod null_blk

part nvme
[ -b /dev/nvme0n1 ] || fail "/dev/nvme0n1 missing: boot with --nvme-zns"
raw=$(raw_fio /dev/nvme0n1 --zonemode=zbd --max_open_zones=2)
bench qemu-nvme-zns zns:/dev/nvme0n1 "$raw"

part zoned-file
raw=$(raw_fio /tmp/raw.bin --direct=0 --end_fsync=1)
rm -f /tmp/raw.bin
bench zoned-file-tmpfs "zoned-file:/tmp/zf.img,zone-size=8M,zone-cap=6M,zones=128,max-open=4,max-active=6" "$raw"
part ""
echo
echo "ZNS benchmark (guest, TCG; image ${SIZE} MiB for writes, ${GC} MiB for GC; threshold 70 %)"
printf '%-22s %10s %12s %8s %10s %12s\n' medium "raw MiB/s" "4k rand MiB/s" ratio "WA greedy" "WA cost-ben"
cat "$rows"
