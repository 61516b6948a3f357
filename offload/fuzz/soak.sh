#!/usr/bin/env bash
# The verifier soak: TOTAL execs (default 10^7) of the `verifier` target in about 45 min on
# 2 cores. Two libFuzzer processes share one corpus:
#   - one built with trace-compares (libFuzzer learns the constants the verifier compares
#     against), a quarter of the execs;
#   - one built without them: 3.6x the throughput (3,000 vs 830 execs/s measured), the rest.
# LSVD_FUZZ_MAX_PROCESSED (default here 20,000) is the verifier's work limit per input; at
# the target's own default of 100,000 most time goes to inputs refused at the limit and the
# soak runs at 200-550 execs/s (14 h). Each input may take at most 10 s (a hang is a finding).
# Exit status 0 only if both processes ran to the end with no crash, timeout or leak.
set -uo pipefail
cd "$(dirname "$0")"
TOTAL=${TOTAL:-10000000}
export LSVD_FUZZ_MAX_PROCESSED=${LSVD_FUZZ_MAX_PROCESSED:-20000}
tc_runs=$((TOTAL / 4))
ntc_runs=$((TOTAL - tc_runs))
cargo +nightly fuzz build -O -s none verifier || exit 1
cargo +nightly fuzz build -O -s none --no-trace-compares --target-dir target-ntc verifier || exit 1
mkdir -p corpus/verifier artifacts/verifier
bin=x86_64-unknown-linux-gnu/release/verifier
args=(-max_len=600 -timeout=10 -print_final_stats=1 -artifact_prefix=artifacts/verifier/)
start=$(date +%s)
echo "soak: $tc_runs execs with trace-compares + $ntc_runs without," \
    "LSVD_FUZZ_MAX_PROCESSED=$LSVD_FUZZ_MAX_PROCESSED; logs soak-tc.log, soak-ntc.log"
"target/$bin" -runs="$tc_runs" "${args[@]}" corpus/verifier >soak-tc.log 2>&1 &
tc=$!
"target-ntc/$bin" -runs="$ntc_runs" "${args[@]}" corpus/verifier >soak-ntc.log 2>&1 &
ntc=$!
wait "$tc"
tc_rc=$?
wait "$ntc"
ntc_rc=$?
execs() { grep -h 'stat::number_of_executed_units' "$@" | awk '{s += $2} END {print s + 0}'; }
total=$(execs soak-tc.log soak-ntc.log)
echo "soak: exit $tc_rc (trace-compares) / $ntc_rc (without); $total execs in" \
    "$(($(date +%s) - start)) s; $(execs soak-tc.log) + $(execs soak-ntc.log)"
grep -h 'exec/s' soak-tc.log soak-ntc.log | grep DONE
if [ "$tc_rc" -ne 0 ] || [ "$ntc_rc" -ne 0 ] || [ "$total" -lt "$TOTAL" ]; then
    echo "soak: FAILED (see the logs and artifacts/verifier/)"
    exit 1
fi
echo "soak: OK"
