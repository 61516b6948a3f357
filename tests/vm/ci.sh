#!/usr/bin/env bash
# CI entry for the VM tests: install what is needed, build the release
# binaries the guest runs, build the initramfs, then boot one QEMU guest that
# runs tests/vm/guest/suite.sh. Prints "[time] NAME: N s" per part.
#   tests/vm/ci.sh            # about 3-4 minutes on 2 cores after the first build
#   tests/vm/ci.sh --bench    # also run the benchmarks (fio: another boot, ~90 s;
#                             # offload vs ublk preads: another boot, a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
t() {
    local name=$1; shift
    local s=$SECONDS
    "$@"
    echo "[time] $name: $((SECONDS - s)) s"
}
t vm-install tests/vm/install.sh
t vm-build-release cargo build --release -p lsvd-ublk --bin lsvd-ublk-serve -p lsvd-ctl --bin lsvd --bin lsvdctl
t vm-initramfs tests/vm/build-initramfs.sh >/dev/null
t vm-guest-suite tests/vm/run.sh --timeout 1200 tests/vm/guest/suite.sh
if [[ "${1:-}" == --bench ]]; then
    t vm-bench tests/vm/run.sh --timeout 900 tests/vm/guest/bench.sh
    t vm-build-offload-bench cargo build --release -p lsvd-offload --bin lsvd-offload-bench
    # One vCPU: with two, a Unix-socket wake-up across TCG vCPUs on this loaded host
    # takes milliseconds (the offload socket's round trip measured QEMU, not lsvd).
    t vm-offload-bench tests/vm/run.sh --smp 1 --timeout 900 tests/vm/guest/offload-bench.sh
fi
echo "vm ci: OK"
