#!/usr/bin/env bash
# Install the real NBD clients and peers the NBD tests (tests/nbd/run.sh) and
# benchmark (tests/nbd/bench.sh) use:
#   qemu-utils   qemu-io, qemu-img, qemu-nbd, qemu-storage-daemon (FUSE export)
#   libnbd-bin   nbdinfo, nbdcopy
#   nbdkit       the `nbdkit file` peer of the benchmark
#   fio          with the nbd ioengine (checked below)
#   fuse3        fusermount3 for qemu-storage-daemon's FUSE export
#   e2fsprogs, util-linux   mkfs.ext4, fsck.ext4, losetup, mount
# Idempotent: installs only what is missing. .deb files are cached under
# .ci/cache/apt so CI runs can reuse them.
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGES=(qemu-utils libnbd-bin nbdkit fio fuse3 e2fsprogs util-linux)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    cache="$PWD/.ci/cache/apt"
    mkdir -p "$cache/partial"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -o DPkg::Lock::Timeout=600 -y --no-install-recommends \
        -o Dir::Cache::archives="$cache" "${missing[@]}"
fi

# Check what the tests rely on, so a broken install fails here and not later.
fail=0
for t in qemu-io qemu-img qemu-nbd qemu-storage-daemon nbdinfo nbdcopy nbdkit fio \
    fusermount3 mkfs.ext4 fsck.ext4 losetup; do
    command -v "$t" >/dev/null 2>&1 || { echo "install.sh: $t missing after install" >&2; fail=1; }
done
if command -v fio >/dev/null 2>&1 && ! fio --enghelp 2>/dev/null | grep -qw nbd; then
    echo "install.sh: this fio has no nbd ioengine (fio --enghelp)" >&2
    fail=1
fi
exit $fail
