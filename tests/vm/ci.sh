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
t vm-build-release cargo build --release -p lsvd-ublk --bin lsvd-ublk-serve -p lsvd-ctl --bin lsvd --bin lsvdctl \
    -p lsvd-zns --bin lsvd-zns-conformance
t vm-initramfs tests/vm/build-initramfs.sh >/dev/null
# --nvme-zns: the zns-conformance part needs the QEMU NVMe ZNS namespace.
t vm-guest-suite tests/vm/run.sh --nvme-zns --timeout 1200 tests/vm/guest/suite.sh
# Zoned devices (null_blk zoned + the QEMU NVMe ZNS namespace): the engine's
# test binaries (property, GC, crash) run inside the guest; a second boot on
# the same namespace file checks that lost zone state is refused.
zns_env() {
    cargo test -p lsvd-tests --test engine_model --test gc_bound --test crash --no-run \
        --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
root = os.getcwd()
exes = {}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        exes[m["target"]["name"]] = os.path.relpath(m["executable"], root)
need = {"engine_model": "ENGINE_MODEL", "gc_bound": "GC_BOUND", "crash": "CRASH"}
missing = [n for n in need if n not in exes]
if missing:
    sys.exit("zns test binaries missing: %s" % missing)
print("HOST_ROOT=%s" % root)
for n, v in need.items():
    print("%s=%s" % (v, exes[n]))
' >target/zns-tests.env
}
t vm-zns-build zns_env
zns_scratch=$(mktemp -d "${TMPDIR:-/tmp}/lsvd-zns.XXXXXX")
t vm-guest-zns tests/vm/run.sh --timeout 2400 --nvme-zns --scratch "$zns_scratch" tests/vm/guest/zns-suite.sh
t vm-guest-zns-restart tests/vm/run.sh --timeout 300 --nvme-zns --scratch "$zns_scratch" tests/vm/guest/zns-restart.sh
rm -rf "$zns_scratch"
if [[ "${1:-}" == --bench ]]; then
    t vm-zns-bench-build cargo build --release -p lsvd-tests --bin lsvd-zns-bench
    t vm-zns-bench tests/vm/run.sh --timeout 1800 --nvme-zns tests/vm/guest/zns-bench.sh
    t vm-bench tests/vm/run.sh --timeout 900 tests/vm/guest/bench.sh
    t vm-build-offload-bench cargo build --release -p lsvd-offload --bin lsvd-offload-bench
    # One vCPU: with two, a Unix-socket wake-up across TCG vCPUs on this loaded host
    # takes milliseconds (the offload socket's round trip measured QEMU, not lsvd).
    t vm-offload-bench tests/vm/run.sh --smp 1 --timeout 900 tests/vm/guest/offload-bench.sh
fi
echo "vm ci: OK"
