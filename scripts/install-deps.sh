#!/usr/bin/env bash
# Install what building and testing lsvd needs beyond the Rust toolchain.
# Idempotent: installs only missing packages. apt downloads are cached under
# .ci/cache/apt so CI runs can reuse them.
#
# Today nothing is needed; this is the hook later parts (ublk, NBD, librados,
# eBPF) add their packages to.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages to install (none yet).
APT_PACKAGES=()

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
