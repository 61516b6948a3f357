#!/bin/sh
# Benchmark (not a test): fio on /dev/ublkbN served by lsvd-ublk-serve vs the
# kernel loop device on a file, in the same guest run; both backing stores
# live on the guest's tmpfs. Prints a table with ublk/loop ratios.
# TCG emulation: absolute numbers mean little, compare the ratios.
#   tests/vm/run.sh tests/vm/guest/bench.sh [RUNTIME_S [lsvd-ublk-serve args...]]
# e.g. bench.sh 8 --workers 4 --queues 1. Env: SIZE (default 256M).
. /lsvd/tests/vm/guest/lib.sh
RUNTIME=${1:-8}
[ $# -gt 0 ] && shift
SERVE_ARGS="$*"
SIZE=${SIZE:-256M}

# run_fio DEV NAME RW BS QD -> prints "iops kib_s"
run_fio() {
    fio --name="$2" --filename="$1" --direct=1 --ioengine=libaio --rw="$3" --bs="$4" \
        --iodepth="$5" --numjobs=1 --size="$SIZE" --runtime="$RUNTIME" --time_based \
        --ramp_time=1 --randrepeat=0 --output-format=terse --terse-version=3 >/tmp/b.out 2>&1 ||
        { cat /tmp/b.out; fail "fio $2 on $1"; }
    case $3 in
        *read) awk -F';' '{print $8, $7}' /tmp/b.out ;;
        *) awk -F';' '{print $49, $48}' /tmp/b.out ;;
    esac
}

bench_dev() {
    dev=$1 tag=$2
    # Fill the device first so reads hit written data.
    run_fio "$dev" seqwrite write 1M 8 >"/tmp/r.$tag.seqwrite"
    run_fio "$dev" randwrite randwrite 4k 32 >"/tmp/r.$tag.randwrite"
    run_fio "$dev" randread randread 4k 32 >"/tmp/r.$tag.randread"
    run_fio "$dev" seqread read 1M 8 >"/tmp/r.$tag.seqread"
}

part bench-ublk
rm -rf "$STORE_DIR"; mkdir -p "$STORE_DIR"
# shellcheck disable=SC2086
start_server --create "$SIZE" ${SERVE_ARGS:-}
bench_dev "$DEV" ublk
stop_server
rm -rf "$STORE_DIR"

part bench-loop
truncate -s "$SIZE" /tmp/loop.img
loopdev=$(losetup -f)
losetup "$loopdev" /tmp/loop.img || fail "losetup"
bench_dev "$loopdev" loop
losetup -d "$loopdev"
rm -f /tmp/loop.img
part ""

echo
echo "fio, ${RUNTIME}s per job, $(nproc) vCPUs (TCG), lsvd-ublk-serve ${SERVE_ARGS:-(write-back)} vs loop on tmpfs"
printf '%-22s %12s %12s %12s %12s %8s\n' job ublk-IOPS ublk-MiB/s loop-IOPS loop-MiB/s ratio
for j in "randwrite 4k QD32:randwrite" "randread 4k QD32:randread" "seqwrite 1M QD8:seqwrite" "seqread 1M QD8:seqread"; do
    name=${j%%:*} key=${j##*:}
    read -r ui ub <"/tmp/r.ublk.$key"
    read -r li lb <"/tmp/r.loop.$key"
    awk -v n="$name" -v ui="$ui" -v ub="$ub" -v li="$li" -v lb="$lb" 'BEGIN {
        r = (lb > 0) ? ub / lb : 0
        printf "%-22s %12d %12.1f %12d %12.1f %7.2fx\n", n, ui, ub / 1024, li, lb / 1024, r }'
done
