#!/usr/bin/env bash
# Run the whole lsvd test suite from a fresh checkout: build everything, then
# every test, each step timed ("[time] NAME: N s"), then a summary of times.
# Exits non-zero if any step failed (all steps still run).
#
# Environment knobs:
#   PROPTEST_CASES    cases per proptest property (proptest default 256; lower
#                     it for a quick run, raise it for a soak)
#   LSVD_TEST_RUNNER  "nextest" (default when cargo-nextest is installed) or
#                     "cargo" (plain `cargo test`)
#   LSVD_TEST_ARGS    extra arguments for the runner, e.g. a test-name filter
#   CARGO_BUILD_JOBS  parallel compiler jobs (cargo's own knob)
#   RUST_BACKTRACE    as usual (default 1 here)
#
# Notes: some tests mount a 1 MiB tmpfs to provoke a full disk; without root
# they print "SKIPPED: ..." and pass without running that case.
set -uo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

runner="${LSVD_TEST_RUNNER:-}"
if [[ -z "$runner" ]]; then
    if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
fi
# shellcheck disable=SC2206
extra=(${LSVD_TEST_ARGS:-})

names=() times=() results=()
failed=0
step() {
    local name=$1; shift
    echo "=== $name: $*"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    local took=$((SECONDS - start))
    echo "[time] $name: $took s"
    names+=("$name") times+=("$took")
    if [[ $rc -eq 0 ]]; then results+=(ok); else results+=("FAILED (exit $rc)"); failed=1; fi
}

step build cargo build --workspace --all-targets
case "$runner" in
    nextest)
        step tests cargo nextest run --workspace --no-fail-fast "${extra[@]}"
        step doctests cargo test --workspace --doc "${extra[@]}"
        ;;
    cargo)
        step tests cargo test --workspace --no-fail-fast "${extra[@]}"
        ;;
    *)
        echo "run-all.sh: unknown LSVD_TEST_RUNNER=$runner (nextest or cargo)" >&2
        exit 2
        ;;
esac

echo
echo "=== summary (runner: $runner, PROPTEST_CASES=${PROPTEST_CASES:-default})"
total=0
for i in "${!names[@]}"; do
    printf '[time] %-10s %5s s  %s\n' "${names[$i]}:" "${times[$i]}" "${results[$i]}"
    total=$((total + times[i]))
done
printf '[time] %-10s %5s s\n' "total:" "$total"
if [[ $failed -ne 0 ]]; then
    echo "run-all.sh: FAILED"
    exit 1
fi
echo "run-all.sh: all passed"
