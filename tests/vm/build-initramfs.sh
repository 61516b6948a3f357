#!/usr/bin/env bash
# Build the guest initramfs for tests/vm/run.sh and print two lines:
#   KERNEL=<path to vmlinuz>
#   INITRD=<path to initramfs.cpio>
# Both live under .ci/cache/vm/ and are reused while the inputs are unchanged
# (kernel package, this script, guest/init, the host tools and their package
# versions): the cache key is a hash over them.
#
# Contents: busybox-static (sh, mount, insmod, sha256sum, ...), the kernel
# modules the guest tests need with their dependencies (resolved recursively
# from each module's .modinfo "depends=" field; the .deb ships no
# modules.dep) in load order, and the host's mkfs/fsck tools, fio, blkzone
# with the shared libraries ldd lists. Run tests/vm/install.sh first.
set -euo pipefail
cd "$(dirname "$0")/../.."
root_dir=$PWD
cache=$root_dir/.ci/cache/vm
start=$SECONDS

deb=$(ls "$cache"/linux-image-6.12.*+deb12-amd64-unsigned_*.deb 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z "$deb" ]]; then
    echo "build-initramfs.sh: no kernel package in $cache; run tests/vm/install.sh" >&2
    exit 1
fi

# Modules the tests need (their dependencies are added automatically).
MODULES=(ublk_drv configfs null_blk nvme 9p 9pnet_virtio netfs ext4 xfs btrfs loop nbd
    crc32c_generic crc32c-intel blake2b_generic xxhash_generic)
# Host programs copied in with their libraries (busybox covers the rest).
TOOLS=(mke2fs e2fsck mkfs.xfs xfs_repair xfs_db mkfs.btrfs btrfs fio blkzone blkdiscard nbd-client)
# Libraries our own Rust binaries (run from the 9p share) link to.
EXTRA_LIBS=(libgcc_s.so.1 libc.so.6 libm.so.6)

tool_paths=()
for t in "${TOOLS[@]}"; do
    p=$(command -v "$t" || true)
    [[ -n "$p" ]] || { echo "build-initramfs.sh: $t not found; run tests/vm/install.sh" >&2; exit 1; }
    tool_paths+=("$(readlink -f "$p")")
done
command -v busybox >/dev/null || { echo "build-initramfs.sh: busybox missing; run tests/vm/install.sh" >&2; exit 1; }

key=$( {
    basename "$deb"
    cat "$0" tests/vm/guest/init
    for p in "${tool_paths[@]}" "$(readlink -f "$(command -v busybox)")"; do
        echo "$p $(dpkg -S "$p" 2>/dev/null | cut -d: -f1 | xargs -r dpkg-query -W -f='${Package}=${Version}' 2>/dev/null)"
        stat -c '%s %Y' "$p"
    done
} | sha256sum | cut -c1-16)
out=$cache/initramfs-$key.cpio
kdir=$cache/kernel-$(basename "$deb" .deb)
if [[ -f "$out" && -d "$kdir" ]]; then
    echo "KERNEL=$(ls "$kdir"/boot/vmlinuz-*)"
    echo "INITRD=$out"
    exit 0
fi

if [[ ! -d "$kdir" ]]; then
    rm -rf "$kdir.tmp"
    dpkg-deb -x "$deb" "$kdir.tmp"
    mv "$kdir.tmp" "$kdir"
fi
kver=$(ls "$kdir/lib/modules")
mdir=$kdir/lib/modules/$kver

work=$(mktemp -d "$cache/initramfs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
r=$work/root
mkdir -p "$r"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt,lsvd,scratch,lib/modules,usr/bin,usr/sbin,usr/lib,var/tmp}
ln -s lib "$r/lib64"

# --- busybox
cp "$(command -v busybox)" "$r/bin/busybox"
for applet in $(busybox --list); do
    [[ "$applet" == busybox ]] && continue
    ln -sf busybox "$r/bin/$applet"
done

# --- kernel modules, dependencies first
declare -A modpath
while IFS= read -r f; do
    n=$(basename "$f" .ko.xz); n=${n//-/_}
    modpath[$n]=$f
done < <(find "$mdir/kernel" -name '*.ko.xz')
declare -A seen
order=()
add_mod() {
    local n=${1//-/_}
    [[ -n "${seen[$n]:-}" ]] && return 0
    seen[$n]=1
    local f=${modpath[$n]:-}
    if [[ -z "$f" ]]; then
        # Built into the kernel (modules.builtin lists kernel/.../name.ko).
        if grep -q "/${n}.ko\$\|/${1}.ko\$" "$mdir/modules.builtin"; then return 0; fi
        echo "build-initramfs.sh: module $1 not found in $kver" >&2
        exit 1
    fi
    local info deps soft d
    info=$(xz -dc "$f" | tr '\0' '\n')
    deps=$(sed -n 's/^depends=//p' <<<"$info" | tr ',' ' ')
    # "softdep=pre: a b" names algorithms/aliases a module needs loaded
    # first (e.g. libcrc32c fails to init without a crc32c provider).
    soft=$(sed -n 's/^softdep=pre: *//p' <<<"$info" | tr '\n' ' ')
    for d in $soft; do
        case "$d" in
            crc32c | crypto-crc32c) add_mod crc32c_generic; add_mod crc32c-intel ;;
            blake2b-256) add_mod blake2b_generic ;;
            xxhash64) add_mod xxhash_generic ;;
            *) [[ -n "${modpath[${d//-/_}]:-}" ]] && add_mod "$d" ;;
        esac
    done
    for d in $deps; do add_mod "$d"; done
    order+=("$n")
}
for m in "${MODULES[@]}"; do add_mod "$m"; done
: >"$r/lib/modules/order"
for n in "${order[@]}"; do
    xz -dc "${modpath[$n]}" >"$r/lib/modules/$n.ko"
    echo "$n" >>"$r/lib/modules/order"
done

# --- host tools and their libraries
copy_lib() {
    local src=$1 dst
    dst=$r/lib/$(basename "$src")
    [[ -e "$dst" ]] || cp -L "$src" "$dst"
}
for p in "${tool_paths[@]}"; do
    cp -L "$p" "$r/usr/sbin/$(basename "$p")"
    while read -r lib; do copy_lib "$lib"; done < <(ldd "$p" | grep -o '/[^ ]*' | sort -u)
done
for l in "${EXTRA_LIBS[@]}"; do
    src=$(ldconfig -p | awk -v l="$l" '$1 == l && /x86-64/ {print $NF; exit}')
    [[ -n "$src" ]] || { echo "build-initramfs.sh: library $l not found" >&2; exit 1; }
    copy_lib "$src"
done
# Tool names the tests call.
ln -s mke2fs "$r/usr/sbin/mkfs.ext4"
ln -s e2fsck "$r/usr/sbin/fsck.ext4"

cp tests/vm/guest/init "$r/init"
chmod +x "$r/init"
echo "lsvd-vm" >"$r/etc/hostname"
echo "root:x:0:0:root:/root:/bin/sh" >"$r/etc/passwd"
echo "root:x:0:" >"$r/etc/group"
touch "$r/etc/mtab"

(cd "$r" && find . -print0 | cpio --null -o -H newc --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
# Keep only this build and the current kernel in the cache.
find "$cache" -maxdepth 1 -name 'initramfs-*.cpio' ! -path "$out" -delete
echo "build-initramfs.sh: $(du -h "$out" | cut -f1) initramfs, ${#order[@]} modules, built in $((SECONDS - start)) s" >&2
echo "[time] vm-initramfs-build: $((SECONDS - start)) s" >&2
echo "KERNEL=$(ls "$kdir"/boot/vmlinuz-*)"
echo "INITRD=$out"
