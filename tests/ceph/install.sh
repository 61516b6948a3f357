#!/usr/bin/env bash
# Install what the RADOS store's tests and benchmark need: a one-node Ceph
# (mon + osd), the CLI tools (ceph, rados, rbd) and librados for linking.
# Idempotent: installs only missing packages; downloaded .debs are cached
# under .ci/cache/apt (reused by later CI runs).
set -euo pipefail
cd "$(dirname "$0")/../.."

APT_PACKAGES=(ceph-mon ceph-osd ceph-common librados-dev uuid-runtime)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "tests/ceph/install.sh: all installed (${APT_PACKAGES[*]})"
    exit 0
fi

cache="$PWD/.ci/cache/apt"
mkdir -p "$cache/partial"
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends \
    -o Dir::Cache::archives="$cache" "${missing[@]}"
