#!/bin/sh
# Server crash under a mounted ext4: kill -9 lsvd-ublk-serve while a writer
# creates and fsyncs files, recover the device (UBLK_F_USER_RECOVERY) with a
# new server, and check: no I/O error reached the writer or the kernel log,
# every file whose sync returned reads back intact, fsck.ext4 is clean.
# The server runs --write-through: without a write journal only that mode
# keeps acknowledged writes across a server crash (see lsvd-ublk docs).
. /lsvd/tests/vm/guest/lib.sh
SIZE=${SIZE:-256M}
ROUNDS=${ROUNDS:-2}
MODE=${MODE:---write-through}

# Part 1, raw device: fio writes with verify=crc32c while the server is
# killed and recovered; its verify pass then reads every block it wrote.
part recover-raw-fio
rm -rf "$STORE_DIR"; mkdir -p "$STORE_DIR" /mnt/t
start_server --create "$SIZE" $MODE
echo "write_cache: $(cat /sys/block/ublkb$DEV_ID/queue/write_cache) fua: $(cat /sys/block/ublkb$DEV_ID/queue/fua 2>/dev/null)"
fio --name=rv --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=8 --numjobs=2 \
    --size=16M --offset_increment=16M --rw=randwrite --bs=4k --verify=crc32c \
    --verify_fatal=1 --do_verify=1 --output=/tmp/fio-rv.out &
fpid=$!
sleep 4
kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
log "killed the server under fio"
old_id=$DEV_ID
start_server --recover "$old_id" $MODE
wait $fpid || { cat /tmp/fio-rv.out; fail "fio write+verify across a server kill"; }
grep -E "err=" /tmp/fio-rv.out
stop_server
rm -rf "$STORE_DIR"; mkdir -p "$STORE_DIR"

part recover-setup
start_server --create "$SIZE" $MODE
mkfs.ext4 -q -F "$DEV"
mount -t ext4 "$DEV" /mnt/t
make_tree /mnt/t/base 30
cp /tmp/tree.sha256 /tmp/base.sha256
sync

# Writer: file i is acknowledged (listed in /tmp/acked) once its sync returns.
writer() {
    i=0
    : >/tmp/acked
    while [ ! -f /tmp/stop-writer ]; do
        f=/mnt/t/w/f$i
        mkdir -p /mnt/t/w
        dd if=/dev/urandom of=$f bs=4k count=$(( (i % 16) + 1 )) 2>/dev/null || { echo "writer: dd $f failed"; exit 1; }
        sync || { echo "writer: sync failed"; exit 1; }
        echo "$(sha256sum $f | cut -d' ' -f1)  ./w/f$i" >>/tmp/acked
        i=$((i + 1))
    done
    echo "writer: $i files"
}

r=1
while [ $r -le "$ROUNDS" ]; do
    part "recover-round-$r"
    rm -f /tmp/stop-writer
    writer >/tmp/writer.out 2>&1 &
    wpid=$!
    sleep 3
    n0=$(wc -l </tmp/acked)
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    log "killed the server with $n0 files acknowledged"
    sleep 1
    state=$(cat /sys/class/ublk-char/ublkc$DEV_ID/device/state 2>/dev/null || echo "?")
    log "device state after the kill: $state"
    old_id=$DEV_ID
    start_server --recover "$old_id" $MODE
    [ "$DEV_ID" = "$old_id" ] || fail "recovered device id $DEV_ID, expected $old_id"
    sleep 3
    touch /tmp/stop-writer
    wait $wpid || { cat /tmp/writer.out; fail "writer saw an error across the recovery"; }
    cat /tmp/writer.out
    n1=$(wc -l </tmp/acked)
    [ "$n1" -gt "$n0" ] || fail "no writes completed after recovery ($n0 -> $n1)"
    log "writer went on after recovery: $n0 -> $n1 files"
    r=$((r + 1))
done

part recover-verify
# Drop the page cache so the checks below read the device.
sync; echo 3 >/proc/sys/vm/drop_caches
(cd /mnt/t && sha256sum -c -s /tmp/acked) || fail "acknowledged files differ after recovery"
(cd /mnt/t/base && sha256sum -c -s /tmp/base.sha256) || fail "base tree differs after recovery"
umount /mnt/t
fsck.ext4 -fn "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck.ext4 -fn after recovery"; }
if dmesg | grep -i -E "I/O error|EXT4-fs error|blk_update_request|Buffer I/O"; then
    fail "kernel logged I/O errors"
fi
stop_server
# Serve once more from the store alone: all acknowledged data is there.
start_server
mount -t ext4 -o ro "$DEV" /mnt/t
(cd /mnt/t && sha256sum -c -s /tmp/acked) || fail "acknowledged files differ after a clean restart"
umount /mnt/t
stop_server
part ""
echo "recover: OK"
