#!/usr/bin/env bash
# Offload tests, each part timed ("[time] NAME: N s"). Needs root (the permission test
# runs a child as uid 65534 through setpriv) and util-linux's setpriv; clang only for the
# rebuild check of the example objects (tests/examples.rs).
#   LSVD_OFFLOAD_FUZZ_SECS=N  also run each cargo-fuzz target N seconds (needs nightly and
#                             cargo-fuzz; 0 = skip, the default)
set -uo pipefail
cd "$(dirname "$0")/../.."
failed=0
step() {
    local name=$1; shift
    echo "=== $name: $*"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    echo "[time] $name: $((SECONDS - start)) s (exit $rc)"
    [[ $rc -eq 0 ]] || failed=1
}
command -v setpriv >/dev/null || { echo "setpriv missing: apt-get install -y util-linux" >&2; exit 1; }
step offload-lib-and-e2e cargo test -p lsvd-offload
step lsvdctl-offload-cli cargo test -p lsvd-ctl --test offload_cli
secs=${LSVD_OFFLOAD_FUZZ_SECS:-0}
if [[ $secs -gt 0 ]]; then
    for t in verifier protocol; do
        step "fuzz-$t" bash -c "cd offload/fuzz && cargo +nightly fuzz run -O -s none $t -- -jobs=1 -max_total_time=$secs"
    done
fi
exit $failed
