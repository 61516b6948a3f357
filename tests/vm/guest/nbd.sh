#!/bin/sh
# The kernel NBD client (nbd.ko + nbd-client) on an export of the lsvd
# daemon, inside the guest: image create, lsvd daemon, lsvdctl export,
# nbd-client over the export's Unix socket, mkfs.ext4, mount, a tree of files,
# unmount, fsck.ext4 -fn clean, remount and verify, disconnect, unexport,
# daemon SIGTERM, lsvdctl image fsck clean.
. /lsvd/tests/vm/guest/lib.sh
LSVD=/lsvd/target/release/lsvd
CTL=/lsvd/target/release/lsvdctl
[ -x "$LSVD" ] && [ -x "$CTL" ] || fail "lsvd/lsvdctl missing: cargo build --release -p lsvd-ctl --bins"
command -v nbd-client >/dev/null || fail "nbd-client missing from the initramfs"
[ -b /dev/nbd0 ] || fail "/dev/nbd0 missing: nbd.ko not loaded"
export LSVD_HOME=/tmp/lsvd-nbd-home
CONTROL=/tmp/lsvd-nbd.sock
RUN=/tmp/lsvd-nbd-run
rm -rf "$LSVD_HOME" "$RUN"; mkdir -p "$RUN" /mnt/nbd

part create
"$CTL" image create nbdvm --size 256M --segment-size 4M >/dev/null || fail "image create"
start_lsvd "$CONTROL" "$RUN" /tmp/lsvd
"$CTL" export nbdvm --control "$CONTROL" || fail "lsvdctl export"
SOCK="$RUN/nbd-nbdvm.sock"
[ -S "$SOCK" ] || fail "export socket $SOCK missing"

part connect
nbd-client -N nbdvm -u "$SOCK" /dev/nbd0 -b 4096 || fail "nbd-client connect"
size=$(blockdev --getsize64 /dev/nbd0)
[ "$size" = $((256 << 20)) ] || fail "/dev/nbd0 is $size bytes, want 256 MiB"

part ext4
mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4"
mount /dev/nbd0 /mnt/nbd || fail "mount"
make_tree /mnt/nbd 40
umount /mnt/nbd || fail "umount"
fsck.ext4 -fn /dev/nbd0 >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck.ext4 -fn"; }
mount /dev/nbd0 /mnt/nbd || fail "remount"
check_tree /mnt/nbd
umount /mnt/nbd

part disconnect
nbd-client -d /dev/nbd0 || fail "nbd-client -d"
"$CTL" unexport nbdvm --control "$CONTROL" || fail "lsvdctl unexport"
kill -TERM "$DPID"
wait "$DPID" || { cat /tmp/lsvd.err; fail "lsvd exited with $? on SIGTERM"; }
"$CTL" image fsck nbdvm >/tmp/ifsck.out || { cat /tmp/ifsck.out; fail "lsvdctl image fsck"; }
part ""
log "nbd: kernel client on the lsvd export: ok"
