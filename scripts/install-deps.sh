#!/usr/bin/env bash
# Install what building and testing lsvd needs beyond the Rust toolchain.
# Idempotent: installs only missing packages. apt downloads are cached under
# .ci/cache/apt so CI runs can reuse them.
#
# These are what the workspace *build* needs (librados for lsvd-rados, libclang
# for libublk's bindgen). Each test part installs its own tools with its own
# script: tests/nbd/install.sh, tests/ceph/install.sh, tests/vm/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the workspace build needs.
APT_PACKAGES=(librados-dev libclang-dev clang pkg-config linux-libc-dev)

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps.sh: cargo not found; install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps.sh: nothing to install"
    exit 0
fi

cache="$PWD/.ci/cache/apt"
mkdir -p "$cache/partial"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends \
    -o Dir::Cache::archives="$cache" "${missing[@]}"
