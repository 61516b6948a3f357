#!/usr/bin/env bash
# lsvd on RADOS vs RBD, same one-node cluster, same run (bluestore on a
# sparse file): 4 KiB random writes at 32 threads (lsvd: through the engine
# with periodic flush, lsvd-rados-bench; RBD: `rbd bench`), then 4 KiB random
# reads. Backend ops per client write = delta of the OSD's `op_w` counter
# (admin socket perf dump) over the write phase / client writes.
#   env: IO_TOTAL (default 512M), IMAGE_SIZE (1G), THREADS (32),
#        READ_SECS (10), FLUSH_EVERY (256 writes per thread), CEPH_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/ceph
IO_TOTAL=${IO_TOTAL:-512M}
IMAGE_SIZE=${IMAGE_SIZE:-1G}
THREADS=${THREADS:-32}
READ_SECS=${READ_SECS:-10}
FLUSH_EVERY=${FLUSH_EVERY:-256}

t() { local t0=$SECONDS rc=0; "$@" || rc=$?; echo "[time] $(( SECONDS - t0 )) s: $*" >&2; return $rc; }

t "$here/install.sh" >&2
t cargo build --release -p lsvd-rados --bin lsvd-rados-bench >&2
dir=${CEPH_DIR:-$(mktemp -d /tmp/lsvd-ceph-bench.XXXXXX)/cluster}
BLOCK_SIZE=${BLOCK_SIZE:-21474836480} t "$here/ceph-up.sh" "$dir" bluestore >&2 \
    || { echo "FAIL: the Ceph cluster did not start" >&2; exit 1; }
cleanup() { t "$here/ceph-down.sh" "$dir" >&2 || true; }   # only once it is ours
trap cleanup EXIT
export CEPH_CONF="$(realpath "$dir")/ceph.conf"
POOL=test

op_w() { ceph daemon osd.0 perf dump | jq '.osd.op_w'; }
op_r() { ceph daemon osd.0 perf dump | jq '.osd.op_r'; }
ops_of() { numfmt --from=iec "$1" | awk '{print int($1/4096)}'; }
nw=$(ops_of "$IO_TOTAL")

bench() { target/release/lsvd-rados-bench --spec "rados:$POOL/lsvdbench?conf=$CEPH_CONF" \
             --threads "$THREADS" --flush-every "$FLUSH_EVERY" "$@"; }
iops_of() { sed -n 's/.*ops\/sec: *\([0-9.]*\).*/\1/p' | tail -1; }

# --- RBD: create, fill sequentially, random writes, random reads ---
# (no `rbd pool init`: it needs the pool free of other applications; rbd
# create/bench work on the rados-tagged pool without a mgr)
t ceph osd pool application enable "$POOL" rbd --yes-i-really-mean-it >&2
t rbd create --size "$IMAGE_SIZE" "$POOL/rbdbench" >&2
t rbd bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 \
    --io-total "$IMAGE_SIZE" "$POOL/rbdbench" >/dev/null
w0=$(op_w)
rbd_w_iops=$(t rbd bench --io-type write --io-pattern rand --io-size 4K --io-threads "$THREADS" \
        --io-total "$IO_TOTAL" "$POOL/rbdbench" | iops_of)
w1=$(op_w)
rbd_w_ops=$(( w1 - w0 ))
r0=$(op_r)
rbd_r_iops=$(t timeout $((READ_SECS * 20 + 60)) rbd bench --io-type read --io-pattern rand --io-size 4K \
        --io-threads "$THREADS" --io-total "$IO_TOTAL" "$POOL/rbdbench" | iops_of)
r1=$(op_r)
rbd_r_ops=$(( r1 - r0 ))
rbd_r_n=$(( $(ops_of "$IO_TOTAL") ))
t rbd rm "$POOL/rbdbench" >/dev/null 2>&1

# --- lsvd: create + fill, random writes, random reads (one process each) ---
t bench --create --size "$IMAGE_SIZE" --fill >&2
w0=$(op_w)
out=$(t bench --io-total "$IO_TOTAL")
w1=$(op_w)
echo "$out" >&2
lsvd_w_iops=$(sed -n 's/^RESULT phase=write .*iops=\([0-9]*\).*/\1/p' <<<"$out")
lsvd_w_ops=$(( w1 - w0 ))
r0=$(op_r)
out=$(t bench --read-secs "$READ_SECS" --no-gc)
r1=$(op_r)
echo "$out" >&2
lsvd_r_iops=$(sed -n 's/^RESULT phase=read .*iops=\([0-9]*\).*/\1/p' <<<"$out")
lsvd_r_n=$(sed -n 's/^RESULT phase=read ops=\([0-9]*\).*/\1/p' <<<"$out")
lsvd_r_ops=$(( r1 - r0 ))
t bench --rm >&2

awk -v rw="$rbd_w_iops" -v rwo="$rbd_w_ops" -v lw="$lsvd_w_iops" -v lwo="$lsvd_w_ops" \
    -v n="$nw" -v rr="$rbd_r_iops" -v rro="$rbd_r_ops" -v rrn="$rbd_r_n" \
    -v lr="$lsvd_r_iops" -v lro="$lsvd_r_ops" -v lrn="$lsvd_r_n" \
    -v io="$IO_TOTAL" -v th="$THREADS" -v sz="$IMAGE_SIZE" 'BEGIN {
  printf "\n4 KiB random I/O on a %s image (filled first), %s of writes, %d client threads,\n", sz, io, th
  printf "one mon + one bluestore OSD on a sparse file, same cluster, same run\n"
  printf "%-22s %12s %12s %16s\n", "", "client IOPS", "OSD ops", "OSD ops/client op"
  printf "%-22s %12.0f %12d %16.4f\n", "rbd write (op_w)", rw, rwo, rwo/n
  printf "%-22s %12.0f %12d %16.4f\n", "lsvd write (op_w)", lw, lwo, lwo/n
  printf "%-22s %12.0f %12d %16.4f\n", "rbd read (op_r)", rr, rro, rro/rrn
  printf "%-22s %12.0f %12d %16.4f\n", "lsvd read (op_r)", lr, lro, lro/(lrn>0?lrn:1)
  printf "lsvd/rbd write IOPS: %.2fx (goal >= 3x); OSD write ops per client write: 1/%.0f of rbd (goal <= 1/100)\n", \
      lw/rw, (lwo > 0 ? rwo/lwo : 0)
}'
