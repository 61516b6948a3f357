#!/usr/bin/env bash
# One benchmark run: fio (ioengine=nbd, one connection per job) against
#   lsvd            the lsvd daemon serving an image stored in WORK
#   qemu-nbd(direct) qemu-nbd on a raw file, --cache=none --aio=io_uring
#   qemu-nbd        qemu-nbd on a raw file, default cache and aio
#   nbdkit          nbdkit file plugin on a raw file
# all over Unix sockets, all files in the same directory (same filesystem).
# Workloads: 4 KiB random write and random read at QD32, 1 MiB sequential
# write and read at QD8. Each target is first filled with 1 MiB writes so
# reads hit written data. Prints IOPS / MiB/s and lsvd's ratio to each peer.
#
# Usage: tests/nbd/bench.sh [SECONDS_PER_TEST (default 10)] [SIZE (default 2G)]
# Env: BENCH_DIR (default /var/tmp) — where the images and files go.
set -eEuo pipefail
source "$(dirname "$0")/common.sh"
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

RUNTIME=${1:-10}
SIZE=${2:-2G}
require_tools fio qemu-nbd nbdkit nbdinfo python3 cargo
fio --enghelp 2>/dev/null | grep -qw nbd || die "fio has no nbd ioengine"

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/lsvd-nbd-bench.XXXXXX")
PEER_PID= LSVD_PID=
cleanup() {
    set +e
    [[ -n $PEER_PID ]] && kill "$PEER_PID" && wait "$PEER_PID"
    [[ -n $LSVD_PID ]] && kill -TERM "$LSVD_PID" && wait "$LSVD_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
echo "bench: $RUNTIME s per test, $SIZE, in $WORK ($(df -T "$WORK" | awk 'NR==2{print $2}')), $(nproc) cores, load:$(cut -d' ' -f1-3 /proc/loadavg)"
# Order matters and is the same for every target: sequential fill, then
# random writes (which scatter lsvd's log), then the reads.

build_lsvd

# fio_run TARGET URI NAME RW BS QD: append "TARGET NAME value" to results.
fio_run() {
    local target=$1 uri=$2 name=$3 rw=$4 bs=$5 qd=$6 extra=()
    [[ $rw == write ]] && extra=(--size="$SIZE") || extra=(--time_based --runtime="$RUNTIME" --ramp_time=1)
    fio --name="$name" --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --randrepeat=0 --norandommap "${extra[@]}" --output-format=json \
        --output="$WORK/$target-$name.json" >/dev/null
    python3 - "$WORK/$target-$name.json" "$target" "$name" "$bs" >>"$WORK/results" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] > 0 else j["read"]
v = d["iops"] if sys.argv[4] == "4k" else d["bw_bytes"] / 2**20
print(sys.argv[2], sys.argv[3], round(v, 1))
PY
}

# workloads TARGET URI
workloads() {
    echo "-- $1"
    local t0=$SECONDS
    fio_run "$1" "$2" seqwrite-1M write 1M 8
    fio_run "$1" "$2" randwrite-4k randwrite 4k 32
    fio_run "$1" "$2" randread-4k randread 4k 32
    fio_run "$1" "$2" seqread-1M read 1M 8
    echo "[time] $1: $((SECONDS - t0))s"
}

wait_sock() {
    for _ in $(seq 200); do nbdinfo "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done
    die "no NBD server at $1"
}

# lsvd
start_daemon "$WORK"
"$BIN/lsvdctl" image create bench --size "$SIZE" >/dev/null
"$BIN/lsvdctl" export bench >/dev/null
workloads lsvd "nbd+unix:///bench?socket=$WORK/run/nbd-bench.sock"
"$BIN/lsvdctl" export ls
stop_daemon

# peers on a raw file
peer() {
    local target=$1; shift
    rm -f "$WORK/peer.raw" "$WORK/peer.sock"
    truncate -s "$SIZE" "$WORK/peer.raw"
    "$@" >"$WORK/$target.log" 2>&1 &
    PEER_PID=$!
    wait_sock "nbd+unix:///?socket=$WORK/peer.sock"
    workloads "$target" "nbd+unix:///?socket=$WORK/peer.sock"
    kill "$PEER_PID"; wait "$PEER_PID" || true; PEER_PID=
}
peer qemu-nbd-direct qemu-nbd --persistent --shared=8 -f raw --cache=none --aio=io_uring \
    -k "$WORK/peer.sock" "$WORK/peer.raw"
peer qemu-nbd qemu-nbd --persistent --shared=8 -f raw -k "$WORK/peer.sock" "$WORK/peer.raw"
peer nbdkit nbdkit -f -U "$WORK/peer.sock" file "file=$WORK/peer.raw"

python3 - "$WORK/results" <<'PY'
import sys
res = {}
for line in open(sys.argv[1]):
    t, n, v = line.split()
    res[(t, n)] = float(v)
targets = ["lsvd", "qemu-nbd-direct", "qemu-nbd", "nbdkit"]
names = [("randwrite-4k", "IOPS"), ("randread-4k", "IOPS"), ("seqwrite-1M", "MiB/s"), ("seqread-1M", "MiB/s")]
head = ["workload", "unit"] + targets + ["lsvd/" + t for t in targets[1:]]
rows = [head]
for n, unit in names:
    r = [n, unit] + ["%.0f" % res[(t, n)] for t in targets]
    r += ["%.2fx" % (res[("lsvd", n)] / res[(t, n)]) if res[(t, n)] else "-" for t in targets[1:]]
    rows.append(r)
w = [max(len(r[i]) for r in rows) for i in range(len(head))]
for r in rows:
    print("  ".join(c.rjust(w[i]) if i > 1 else c.ljust(w[i]) for i, c in enumerate(r)))
PY
