#!/bin/sh
# `lsvdctl map` through the lsvd daemon in the guest: a plain image
# (write-through) and an image with a write journal (write-back through the
# journal). For each: map -> /dev/ublkbN, mkfs.ext4, mount, a tree of files,
# unmount, fsck.ext4 -fn clean, unmap, map again, files verify, unmap. Then
# `device ls`, daemon SIGTERM and `lsvdctl image fsck` clean.
. /lsvd/tests/vm/guest/lib.sh
LSVD=/lsvd/target/release/lsvd
CTL=/lsvd/target/release/lsvdctl
[ -x "$LSVD" ] && [ -x "$CTL" ] || fail "lsvd/lsvdctl missing: cargo build --release -p lsvd-ctl --bins"
export LSVD_HOME=/tmp/lsvd-map-home
export LSVD_CONTROL=/tmp/lsvd-map.sock
rm -rf "$LSVD_HOME"; mkdir -p /mnt/map

part daemon
"$CTL" image create plain --size 256M --segment-size 4M >/dev/null || fail "create plain"
"$CTL" image create journaled --size 256M --segment-size 4M \
    --cache-dir /tmp/lsvd-map-cache --journal-size 32M --read-cache-size 16M >/dev/null || fail "create journaled"
start_lsvd "$LSVD_CONTROL" /tmp/lsvd-map-run /tmp/lsvd-map

for img in plain journaled; do
    part "$img-map"
    dev=$("$CTL" map "$img" --queues 2 --depth 32) || { cat /tmp/lsvd-map.err; fail "map $img"; }
    [ -b "$dev" ] || fail "map printed $dev, not a block device"
    "$CTL" map "$img" >/dev/null 2>&1 && fail "mapping $img twice must fail"
    part "$img-ext4"
    mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev"
    mount "$dev" /mnt/map || fail "mount $dev"
    make_tree /mnt/map 30
    umount /mnt/map || fail "umount"
    fsck.ext4 -fn "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck.ext4 -fn $img"; }
    "$CTL" unmap "$dev" || fail "unmap $dev"
    [ -b "$dev" ] && fail "$dev still there after unmap"
    part "$img-remap"
    dev=$("$CTL" map "$img") || fail "map $img again"
    mount "$dev" /mnt/map || fail "remount $img"
    check_tree /mnt/map
    umount /mnt/map
    "$CTL" device ls | grep -q "$img" || fail "device ls does not list $img"
    "$CTL" unmap "$img" || fail "unmap $img by name"
done

part shutdown
kill -TERM "$DPID"
wait "$DPID" || { cat /tmp/lsvd-map.err; fail "lsvd exited with $? on SIGTERM"; }
for img in plain journaled; do
    "$CTL" image fsck "$img" >/tmp/ifsck.out || { cat /tmp/ifsck.out; fail "image fsck $img"; }
done
part ""
log "map: lsvdctl map/unmap through the daemon: ok"
