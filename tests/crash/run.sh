#!/usr/bin/env bash
# Crash test of the write journal (see tests/tests/crash.rs): a child
# process writes stamped data through a Disk (engine + journal) and is
# SIGKILLed at a random moment; the parent damages the leftovers per
# variant (none, reordered completions, wiped journal, torn tail, corrupted
# record, lost newest segments), reopens and checks that every write
# acknowledged before the last completed flush is there and that the image
# is prefix-consistent. Zero violations allowed.
#
# Usage: tests/crash/run.sh [--cycles N] [--seed S] [--store dir|zoned|both]
#   --cycles N   cycles per store (default 100: 200 in all, the CI run)
#   --seed S     reproduce a run (printed as CRASH_SEED=...)
# Soak (documented, not in CI): tests/crash/run.sh --cycles 1000
#
# Prints "[time] crash: N s" and, per store, cycles, violations, cycles/s.
set -euo pipefail
cd "$(dirname "$0")/../.."

cycles=100 seed="" store=both
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cycles) cycles=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --store) store=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$store" in
    dir) filter=crash_dir_store ;;
    zoned) filter=crash_zoned_file_store ;;
    both) filter=crash_ ;;
    *) echo "run.sh: --store dir|zoned|both" >&2; exit 2 ;;
esac

export CRASH_CYCLES=$cycles
[[ -n "$seed" ]] && export CRASH_SEED=$seed
start=$SECONDS
# Test profile (optimised deps): reuses the build of tests/run-all.sh.
# Build first so the timing below is the test alone.
cargo test -p lsvd-tests --test crash --no-run
t0=$SECONDS
cargo test -p lsvd-tests --test crash -- --nocapture --test-threads 1 "$filter"
echo "[time] crash: $((SECONDS - t0)) s (build $((t0 - start)) s), $cycles cycles per store"
