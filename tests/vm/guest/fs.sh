#!/bin/sh
# Filesystems on /dev/ublkbN served by lsvd-ublk-serve: for FS in ext4 xfs
# btrfs (default all, or the arguments): mkfs, mount, write a tree of files,
# unmount, offline check clean, remount, verify; then stop the server, serve
# the store again and verify once more.
. /lsvd/tests/vm/guest/lib.sh
fss=${*:-ext4 xfs btrfs}
SIZE=${SIZE:-256M}   # xfs needs 300 MB at least: 512M for xfs
NFILES=${NFILES:-60}

for fs in $fss; do
    part "fs-$fs"
    rm -rf "$STORE_DIR"; mkdir -p "$STORE_DIR" /mnt/t
    size=$SIZE
    [ "$fs" = xfs ] && size=${XFS_SIZE:-512M}
    start_server --create "$size"
    case $fs in
        ext4) mkfs.ext4 -q -F "$DEV" ;;
        xfs) mkfs.xfs -q -f "$DEV" ;;
        btrfs) mkfs.btrfs -q -f "$DEV" >/dev/null ;;
        *) fail "unknown fs $fs" ;;
    esac
    mount -t "$fs" "$DEV" /mnt/t || fail "mount $fs"
    make_tree /mnt/t/tree "$NFILES"
    rm -f /mnt/t/tree/dir3/*          # frees blocks: discards on btrfs/xfs
    (cd /mnt/t/tree && find . -type f | sort | xargs sha256sum) >/tmp/tree.sha256
    fstrim -v /mnt/t 2>&1 || true
    umount /mnt/t
    case $fs in
        ext4) fsck.ext4 -fn "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck.ext4 -fn"; } ;;
        xfs) xfs_repair -n "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "xfs_repair -n"; } ;;
        btrfs) btrfs check "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "btrfs check"; } ;;
    esac
    log "$fs: offline check clean"
    mount -t "$fs" "$DEV" /mnt/t || fail "remount $fs"
    check_tree /mnt/t/tree
    umount /mnt/t
    stop_server
    start_server
    mount -t "$fs" -o ro "$DEV" /mnt/t || fail "mount $fs after restart"
    check_tree /mnt/t/tree
    umount /mnt/t
    stop_server
    log "$fs: OK ($(du -sh "$STORE_DIR" | cut -f1) in the store)"
done
part ""
echo "fs: OK"
