#!/usr/bin/env bash
# Real NBD clients against a real `lsvd` daemon: nbdinfo, qemu-io (patterns,
# 512-byte read-modify-write, discard, write-zeroes), qemu-img convert both
# ways, nbdcopy both ways, fio (ioengine=nbd, verify=crc32c), and
# qemu-storage-daemon importing the export and re-exporting it as a FUSE
# file -> loop device -> mkfs.ext4, mount, files, unmount, fsck; then a
# clean SIGTERM, `lsvdctl image fsck`, and a restart that re-reads the data
# read-only. Exits non-zero on any failure, including a missing tool.
#
# Needs root (loop devices, mount) and: tests/nbd/install.sh.
# Usage: tests/nbd/run.sh [WORKDIR]   (default: a new directory under /var/tmp)
set -eEuo pipefail
source "$(dirname "$0")/common.sh"
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

require_tools qemu-io qemu-img qemu-storage-daemon nbdinfo nbdcopy fio fusermount3 \
    losetup mkfs.ext4 fsck.ext4 mount umount cmp sha256sum cargo
[[ $(id -u) -eq 0 ]] || die "run as root (loop devices and mount)"
[[ -e /dev/loop-control ]] || die "this host has no loop device support (/dev/loop-control)"
[[ -e /dev/fuse ]] || die "this host has no /dev/fuse"
fio --enghelp 2>/dev/null | grep -qw nbd || die "fio has no nbd ioengine"

T_ALL=$SECONDS
WORK=${1:-$(mktemp -d /var/tmp/lsvd-nbd-test.XXXXXX)}
mkdir -p "$WORK"
QSD_PID= LOOP= LSVD_PID=
cleanup() {
    set +e
    mountpoint -q "$WORK/mnt" && umount "$WORK/mnt"
    [[ -n $LOOP ]] && losetup -d "$LOOP"
    [[ -n $QSD_PID ]] && kill "$QSD_PID" && wait "$QSD_PID"
    [[ -n $LSVD_PID ]] && kill -TERM "$LSVD_PID" && wait "$LSVD_PID"
    if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

part build build_lsvd
LSVDCTL="$BIN/lsvdctl"
setup() {
    start_daemon "$WORK"
    "$LSVDCTL" image create disk --size 1G >/dev/null
    "$LSVDCTL" export disk >/dev/null
    "$LSVDCTL" image create fs --size 1G >/dev/null
    "$LSVDCTL" export fs >/dev/null
    SOCK="$WORK/run/nbd-disk.sock"
    FS_SOCK="$WORK/run/nbd-fs.sock"
    URI="nbd+unix:///disk?socket=$SOCK"
    [[ -S $SOCK ]] || die "no socket $SOCK"
}
part "daemon start + export" setup

# nbd_cmp URI FILE: the export starts with FILE's bytes (read with nbdcopy).
nbd_cmp() {
    nbdcopy "$1" "$WORK/readback.raw"
    cmp -n "$(stat -c %s "$2")" "$2" "$WORK/readback.raw"
    rm -f "$WORK/readback.raw"
}

t_nbdinfo() {
    local out
    out=$(nbdinfo --json "$URI")
    for want in '"export-size": 1073741824' '"can_multi_conn": true' '"can_fua": true' \
        '"can_trim": true' '"can_zero": true' '"is_read_only": false' \
        '"block_size_minimum": 512' '"block_size_maximum": 33554432'; do
        grep -qF "$want" <<<"$out" || { echo "$out"; echo "nbdinfo: missing $want"; return 1; }
    done
    nbdinfo --list "$URI" | grep -q 'export="disk"'
}
part nbdinfo t_nbdinfo

t_qemu_io() {
    qemu-io -f raw "$URI" \
        -c "write -P 0xab 0 4M" -c "write -P 0xcd 4608 512" -c "write -P 0xef 1M 1536" \
        -c "flush" \
        -c "read -P 0xab 0 4608" -c "read -P 0xcd 4608 512" -c "read -P 0xab 5120 3072" \
        -c "read -P 0xef 1M 1536" -c "read -P 0xab 1050112 1024" \
        -c "discard 2M 1M" -c "read -P 0 2M 1M" \
        -c "write -z 3M 64k" -c "read -P 0 3M 64k" -c "read -P 0xab 3211264 4096" \
        -c "aio_write -P 0x11 8M 64k" -c "aio_write -P 0x22 9M 64k" -c "aio_flush" \
        -c "read -P 0x11 8M 64k" -c "read -P 0x22 9M 64k" >"$WORK/qemu-io.log" 2>&1 \
        || { cat "$WORK/qemu-io.log"; return 1; }
    if grep -qi "fail" "$WORK/qemu-io.log"; then cat "$WORK/qemu-io.log"; return 1; fi
    # A second process sees the same data (multi-connection).
    qemu-io -r -f raw "$URI" -c "read -P 0xcd 4608 512" -c "read -P 0x22 9M 64k" >/dev/null
    # Acknowledged but never flushed by the client: must survive the
    # daemon's SIGTERM (checked after the restart).
    qemu-io -f raw "$URI" -c "write -P 0x5a 900M 1M" -c "write -P 0x5b 901M 512" >/dev/null
}
part qemu-io t_qemu_io

t_qemu_img() {
    head -c 64M /dev/urandom >"$WORK/src.raw"
    qemu-img convert -n -f raw -O raw "$WORK/src.raw" "$URI"
    qemu-img convert -f raw -O raw "$URI" "$WORK/back.raw"
    cmp -n $((64 << 20)) "$WORK/src.raw" "$WORK/back.raw"
    [[ $(stat -c %s "$WORK/back.raw") -eq $((1 << 30)) ]]
    rm -f "$WORK/back.raw"
}
part "qemu-img convert" t_qemu_img

t_nbdcopy() {
    nbdcopy "$URI" "$WORK/copy.raw"
    cmp -n $((64 << 20)) "$WORK/src.raw" "$WORK/copy.raw"
    head -c 32M /dev/urandom >"$WORK/src2.raw"
    nbdcopy --flush "$WORK/src2.raw" "$URI"
    nbd_cmp "$URI" "$WORK/src2.raw"
    rm -f "$WORK/copy.raw"
}
part nbdcopy t_nbdcopy

t_fio() {
    fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --size=128M \
        --offset=256M --iodepth=32 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output="$WORK/fio.log" || { cat "$WORK/fio.log"; return 1; }
    grep -q "err= 0" "$WORK/fio.log" || { cat "$WORK/fio.log"; return 1; }
    fio --name=verify-seq --ioengine=nbd --uri="$URI" --rw=write --bs=1M --size=128M \
        --offset=512M --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output="$WORK/fio2.log" || { cat "$WORK/fio2.log"; return 1; }
}
part "fio nbd verify" t_fio

# fuse_attach RW: qemu-storage-daemon imports export `fs` and re-exports it
# as the FUSE file WORK/fuse.img (writable if RW=on).
fuse_attach() {
    : >"$WORK/fuse.img"
    qemu-storage-daemon \
        --blockdev "driver=nbd,node-name=nbd0,server.type=unix,server.path=$FS_SOCK,export=fs,read-only=$([[ $1 == on ]] && echo off || echo on)" \
        --export "type=fuse,id=exp0,node-name=nbd0,mountpoint=$WORK/fuse.img,writable=$1" \
        >"$WORK/qsd.log" 2>&1 &
    QSD_PID=$!
    for _ in $(seq 100); do
        [[ $(stat -c %s "$WORK/fuse.img") -eq $((1 << 30)) ]] && break
        sleep 0.1
    done
    [[ $(stat -c %s "$WORK/fuse.img") -eq $((1 << 30)) ]] || { cat "$WORK/qsd.log"; return 1; }
}
fuse_detach() {
    kill "$QSD_PID"; wait "$QSD_PID" || true; QSD_PID=
}

t_fs() {
    mkdir -p "$WORK/mnt"
    fuse_attach on
    LOOP=$(losetup -f --show "$WORK/fuse.img")
    mkfs.ext4 -q -F "$LOOP"
    mount "$LOOP" "$WORK/mnt"
    mkdir "$WORK/mnt/d"
    for i in 1 2 3; do head -c $((i * 8))M /dev/urandom >"$WORK/mnt/d/f$i"; done
    cp -r "$ROOT/nbd-target/src" "$WORK/mnt/d/src"
    (cd "$WORK/mnt" && find d -type f -print0 | sort -z | xargs -0 sha256sum) >"$WORK/sums"
    umount "$WORK/mnt"
    fsck.ext4 -fn "$LOOP" >"$WORK/fsck.log" 2>&1 || { cat "$WORK/fsck.log"; return 1; }
    mount "$LOOP" "$WORK/mnt"
    (cd "$WORK/mnt" && sha256sum --quiet -c "$WORK/sums")
    umount "$WORK/mnt"
    losetup -d "$LOOP"; LOOP=
    fuse_detach
}
part "qemu-storage-daemon FUSE + loop + ext4" t_fs

t_restart() {
    stop_daemon
    "$LSVDCTL" image fsck disk >/dev/null
    "$LSVDCTL" image fsck fs >/dev/null
    start_daemon "$WORK"
    "$LSVDCTL" export disk --read-only >/dev/null
    "$LSVDCTL" export fs --read-only >/dev/null
    nbdinfo --json "$URI" | grep -qF '"is_read_only": true'
    qemu-io -r -f raw "$URI" -c "read -P 0x5a 900M 1M" -c "read -P 0x5b 901M 512" \
        -c "read -P 0 944767488 3584" >"$WORK/qemu-io2.log"
    if grep -qi "fail" "$WORK/qemu-io2.log"; then cat "$WORK/qemu-io2.log"; return 1; fi
    nbd_cmp "$URI" "$WORK/src2.raw"
    if qemu-io -f raw "$URI" -c "write -P 1 0 4k" >/dev/null 2>&1; then
        echo "write to a read-only export succeeded"; return 1
    fi
    # The filesystem survived the restart: fsck and checksums, read-only.
    fuse_attach off
    LOOP=$(losetup -r -f --show "$WORK/fuse.img")
    fsck.ext4 -fn "$LOOP" >/dev/null
    mount -o ro,noload "$LOOP" "$WORK/mnt"
    (cd "$WORK/mnt" && sha256sum --quiet -c "$WORK/sums")
    umount "$WORK/mnt"
    losetup -d "$LOOP"; LOOP=
    fuse_detach
    "$LSVDCTL" unexport disk
    "$LSVDCTL" unexport fs
    stop_daemon
}
part "SIGTERM, fsck, restart read-only" t_restart

echo "[time] total: $((SECONDS - T_ALL))s"
echo "tests/nbd/run.sh: all passed"
