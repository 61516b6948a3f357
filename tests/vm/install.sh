#!/usr/bin/env bash
# Install what the VM test harness (tests/vm/) needs on a Debian 12 host, and
# fetch the guest kernel package into .ci/cache/vm/ (kept across runs).
#
#   tests/vm/install.sh          # idempotent; prints "[time] vm-install: N s"
#
# Guest kernel: the newest linux-image-6.12.*+deb12-amd64-unsigned that apt
# knows (bookworm-updates / security carry the 6.12 backport kernel). It is
# only downloaded (apt-get download), never installed on the host; the .deb is
# unpacked into .ci/cache/vm/kernel-<version>/ by build-initramfs.sh.
# Override with LSVD_VM_KERNEL_PKG=<package name> to pin a version.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS

APT_PACKAGES=(busybox-static e2fsprogs xfsprogs btrfs-progs fio cpio nbd-client
    xz-utils util-linux libclang-dev clang linux-libc-dev pkg-config)

sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Other processes (CI steps, parallel installs) may hold apt's locks: retry.
retry_apt() {
    local i
    for i in $(seq 1 60); do
        "${sudo[@]}" "$@" && return 0
        echo "install.sh: '$*' failed (attempt $i), retrying in 10 s" >&2
        sleep 10
    done
    return 1
}
updated=0
apt_update() {
    if [[ $updated -eq 0 ]]; then retry_apt apt-get update -q; updated=1; fi
}

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install.sh: installing ${missing[*]}"
    apt_update
    retry_apt env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}"
fi

cache=.ci/cache/vm
mkdir -p "$cache"

# QEMU comes from bookworm-backports (10.0), through a private apt
# configuration (the host's sources are not changed). Reason: this machine
# image ships qemu-utils 10.0 from backports, and bookworm's qemu-system-x86
# 7.2 conflicts with it (installing 7.2 removes qemu-utils, which the NBD
# tests need). qemu-utils is installed at the same version alongside.
qemu_ok() {
    local v
    v=$(dpkg-query -W -f='${Status} ${Version}' qemu-system-x86 2>/dev/null || true)
    [[ $v == "install ok installed "*bpo* ]] &&
        dpkg-query -W -f='${Status} ${Version}' qemu-utils 2>/dev/null | grep -q "install ok installed .*bpo"
}
if ! qemu_ok; then
    bpo="$PWD/$cache/apt-bpo"
    mkdir -p "$bpo/lists/partial" "$bpo/archives/partial"
    cat >"$bpo/sources.list" <<'SRC'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian bookworm-backports main
SRC
    bpo_opts=(-o Dir::Etc::sourcelist="$bpo/sources.list" -o Dir::Etc::sourceparts=-
        -o Dir::State::lists="$bpo/lists" -o Dir::Cache::archives="$bpo/archives")
    echo "install.sh: installing qemu-system-x86 + qemu-utils from bookworm-backports"
    retry_apt apt-get -q "${bpo_opts[@]}" update
    retry_apt env DEBIAN_FRONTEND=noninteractive apt-get "${bpo_opts[@]}" install -y -q \
        --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
fi

pick_kernel() {
    apt-cache search --names-only '^linux-image-6\.12\..*\+deb12-amd64-unsigned$' 2>/dev/null \
        | awk '{print $1}' | sort -V | tail -n1
}

pkg="${LSVD_VM_KERNEL_PKG:-}"
if [[ -z "$pkg" ]]; then
    # Use a cached .deb if there is one (no network needed on reruns).
    cached=$(ls "$cache"/linux-image-6.12.*+deb12-amd64-unsigned_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [[ -n "$cached" ]]; then
        echo "install.sh: kernel package cached: $cached"
    else
        pkg=$(pick_kernel)
        if [[ -z "$pkg" ]]; then apt_update; pkg=$(pick_kernel); fi
        if [[ -z "$pkg" ]]; then
            echo "install.sh: no linux-image-6.12.*+deb12-amd64-unsigned package in apt's lists" >&2
            echo "  (needs bookworm-updates or bookworm-security in /etc/apt/sources.list*)" >&2
            exit 1
        fi
    fi
fi
if [[ -n "$pkg" ]] && ! ls "$cache/${pkg}_"*.deb >/dev/null 2>&1; then
    echo "install.sh: downloading $pkg"
    (cd "$cache" && apt-get download "$pkg")
fi
ls -1 "$cache"/linux-image-*.deb
echo "[time] vm-install: $((SECONDS - start)) s"
