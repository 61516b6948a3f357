#!/bin/sh
# Daemon crash under a mounted filesystem: an image with a write journal is
# mapped through the lsvd daemon, ext4 is mounted on it and a writer creates
# and fsyncs files; the daemon is killed with SIGKILL, then started again: it
# reattaches to the same /dev/ublkbN (UBLK_F_USER_RECOVERY), replaying the
# journal. The writer must see no I/O error and keep going, every fsynced
# file must read back, fsck.ext4 -fn must be clean. Also `lsvdctl recover`
# with nothing to recover, and a clean error for a lost journal.
. /lsvd/tests/vm/guest/lib.sh
LSVD=/lsvd/target/release/lsvd
CTL=/lsvd/target/release/lsvdctl
[ -x "$LSVD" ] && [ -x "$CTL" ] || fail "lsvd/lsvdctl missing"
export LSVD_HOME=/tmp/lsvd-mr-home
export LSVD_CONTROL=/tmp/lsvd-mr.sock
RUN=/tmp/lsvd-mr-run
rm -rf "$LSVD_HOME" "$RUN"; mkdir -p /mnt/mr

start_daemon() {
    rm -f "$LSVD_CONTROL"
    START_WAIT=60 start_lsvd "$LSVD_CONTROL" "$RUN" /tmp/lsvd-mr
}

part setup
"$CTL" image create vmr --size 256M --segment-size 4M \
    --cache-dir /tmp/lsvd-mr-cache --journal-size 64M --read-cache-size 0 >/dev/null || fail "create"
start_daemon
dev=$("$CTL" map vmr) || fail "map"
mkfs.ext4 -q -F "$dev" || fail "mkfs"
mount "$dev" /mnt/mr || fail "mount"
mkdir -p /mnt/mr/w
: >/tmp/mr-acked
(
    n=0
    while [ ! -f /tmp/mr-stop ]; do
        n=$((n + 1))
        head -c $(( (n % 7 + 1) * 8192 )) /dev/urandom >/mnt/mr/w/f$n || exit 1
        sync /mnt/mr/w/f$n 2>/dev/null || sync || exit 1
        sha256sum /mnt/mr/w/f$n | sed 's|/mnt/mr/||' >>/tmp/mr-acked
    done
) >/tmp/mr-writer.out 2>&1 &
WPID=$!
sleep 3

part kill
n0=$(wc -l </tmp/mr-acked)
kill -9 "$DPID"; wait "$DPID" 2>/dev/null || true
log "daemon killed after $n0 acknowledged files"
sleep 1
start_daemon
"$CTL" device ls | grep -q "$dev" || { cat /tmp/lsvd-mr.err; fail "restarted daemon did not recover $dev"; }
sleep 3
touch /tmp/mr-stop
wait $WPID || { cat /tmp/mr-writer.out; fail "the writer saw an error across the daemon crash"; }
n1=$(wc -l </tmp/mr-acked)
[ "$n1" -gt "$n0" ] || fail "no writes completed after recovery ($n0 -> $n1)"
log "writer went on after recovery: $n0 -> $n1 files"

part verify
echo 3 >/proc/sys/vm/drop_caches
(cd /mnt/mr && sha256sum -c -s /tmp/mr-acked) || fail "acknowledged files differ after recovery"
umount /mnt/mr || fail "umount"
fsck.ext4 -fn "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck.ext4 -fn after recovery"; }
dmesg | grep -qi "I/O error" && fail "the kernel logged I/O errors"
"$CTL" recover | grep -q "no device to recover" || fail "recover with nothing to do"

part lost-journal
# Unclean stop with the device mapped, then the journal disappears: the
# image must refuse to open without the flag, and open with it.
kill -9 "$DPID"; wait "$DPID" 2>/dev/null || true
rm -f /tmp/lsvd-mr-cache/vmr.journal
start_daemon
"$CTL" device ls | grep -q "$dev" && fail "recovered over a lost journal without --accept-cache-loss"
grep -q "accept_cache_loss\|accept-cache-loss" /tmp/lsvd-mr.err || { cat /tmp/lsvd-mr.err; fail "no clear lost-journal error in the daemon log"; }
kill -TERM "$DPID"; wait "$DPID" 2>/dev/null || true
part ""
log "map-recover: ok"
