#!/bin/sh
# Benchmark (not a test): B+-tree lookups (6 levels) offloaded to the lsvd
# daemon's offload socket vs the same lookups done with one 4 KiB pread per
# level on the daemon's ublk device, same image, same daemon, same run; warm
# (buffered preads, page cache holds the tree) and cold (drop_caches before
# each round, O_DIRECT preads), 1 and 16 threads; warm also with O_DIRECT
# preads (every level reaches the daemon, as offload does). The image is plain
# (no lsvd read cache); its store is on ext4 over a loop device on a tmpfs file
# (the /scratch 9p share has no page cache), so drop_caches makes the daemon's
# store reads real block reads.
# TCG emulation: absolute numbers mean little, compare the ratios. Run it with
# one vCPU: with two, a Unix-socket wake-up across TCG vCPUs (host threads on a
# loaded host) costs milliseconds per round trip, while ublk completes on the
# issuing vCPU, so the 2-vCPU table measures QEMU's wake-ups, not lsvd.
#   tests/vm/run.sh --smp 1 --timeout 900 tests/vm/guest/offload-bench.sh
# Env: OPS (warm lookups per row, 2000), ROUNDS (cold rounds, 5), COLD_OPS
# (cold lookups per thread per round, 4), FANOUT (8), ENGINE (jit; interp,
# rbpf-interp: the daemon's --offload-engine), BENCH_ARGS (more bench options).
# Needs: cargo build --release -p lsvd-ctl --bin lsvd --bin lsvdctl \
#        -p lsvd-offload --bin lsvd-offload-bench -p lsvd-ublk --bin lsvd-ublk-serve
. /lsvd/tests/vm/guest/lib.sh
LSVD=/lsvd/target/release/lsvd
CTL=/lsvd/target/release/lsvdctl
BENCH=/lsvd/target/release/lsvd-offload-bench
for b in "$LSVD" "$CTL" "$BENCH"; do
    [ -x "$b" ] || fail "$b missing: cargo build --release -p lsvd-ctl --bins -p lsvd-offload --bin lsvd-offload-bench"
done
export LSVD_HOME=/mnt/ob-store/home
export LSVD_CONTROL=/tmp/lsvd-ob/lsvd.sock
OSOCK=/tmp/lsvd-ob/offload.sock
rm -rf /tmp/lsvd-ob; mkdir -p /tmp/lsvd-ob /mnt/ob-store

part store
truncate -s 256M /tmp/ob-store.img
loopdev=$(losetup -f)
losetup "$loopdev" /tmp/ob-store.img || fail "losetup"
mkfs.ext4 -q -F "$loopdev" || fail "mkfs.ext4 $loopdev"
mount "$loopdev" /mnt/ob-store || fail "mount $loopdev"

part daemon
"$CTL" image create tree --size 64M --segment-size 4M >/dev/null || fail "image create"
"$LSVD" --home "$LSVD_HOME" --control "$LSVD_CONTROL" --offload-socket "$OSOCK" \
    --offload-engine "${ENGINE:-jit}" \
    >/tmp/lsvd-ob.out 2>/tmp/lsvd-ob.err &
DPID=$!
i=0
while [ ! -S "$LSVD_CONTROL" ] || [ ! -S "$OSOCK" ]; do
    kill -0 "$DPID" 2>/dev/null || { cat /tmp/lsvd-ob.err; fail "lsvd exited"; }
    i=$((i + 1)); [ $i -lt 300 ] || fail "no daemon sockets after 30 s"
    sleep 0.1
done

part map
# A function registered first makes the daemon open and hold the image for
# offload; the map then takes that volume over (one opener per image).
"$CTL" offload register tree /lsvd/offload/examples/bpf/btree_lookup.o \
    --offload-socket "$OSOCK" >/dev/null || { cat /tmp/lsvd-ob.err; fail "offload register before map"; }
dev=$("$CTL" map tree --queues 2 --depth 32) || { cat /tmp/lsvd-ob.err; fail "map tree"; }
[ -b "$dev" ] || fail "map printed $dev, not a block device"

part bench
"$BENCH" --ublk "$dev" --offload-socket "$OSOCK" --image tree --fanout "${FANOUT:-8}" \
    --ops "${OPS:-2000}" --rounds "${ROUNDS:-5}" --cold-ops "${COLD_OPS:-4}" ${BENCH_ARGS:-} ||
    { cat /tmp/lsvd-ob.err; fail "lsvd-offload-bench --ublk"; }
"$CTL" offload ls --offload-socket "$OSOCK" || fail "offload ls"
"$CTL" offload rm 1 --offload-socket "$OSOCK" >/dev/null || fail "offload rm 1"

part shutdown
"$CTL" unmap "$dev" || fail "unmap $dev"
kill -TERM "$DPID"
wait "$DPID" || { cat /tmp/lsvd-ob.err; fail "lsvd exited with $? on SIGTERM"; }
umount /mnt/ob-store && losetup -d "$loopdev"
part ""
log "offload-bench: done"
