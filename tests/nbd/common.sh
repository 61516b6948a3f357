# Shared helpers of tests/nbd/run.sh and bench.sh (sourced).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/target/release"

die() { echo "FAIL: $*" >&2; exit 1; }

# Every tool must be present: a missing tool is a failure, never a skip.
require_tools() {
    local missing=()
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [[ ${#missing[@]} -eq 0 ]] || die "missing tools: ${missing[*]} (run tests/nbd/install.sh)"
}

build_lsvd() {
    (cd "$ROOT" && cargo build --release -q -p lsvd-ctl --bins) || die "cargo build"
}

# start_daemon WORKDIR: run `lsvd` with home WORK/home, control WORK/run/lsvd.sock.
start_daemon() {
    local work=$1
    export LSVD_HOME="$work/home" LSVD_CONTROL="$work/run/lsvd.sock"
    LSVD_LOG=${LSVD_LOG:-warn} "$BIN/lsvd" >>"$work/lsvd.log" 2>&1 &
    LSVD_PID=$!
    for _ in $(seq 200); do
        [[ -S $LSVD_CONTROL ]] && "$BIN/lsvdctl" export ls >/dev/null 2>&1 && return 0
        kill -0 "$LSVD_PID" 2>/dev/null || die "lsvd exited at start: $(tail -5 "$work/lsvd.log")"
        sleep 0.05
    done
    die "lsvd did not answer on $LSVD_CONTROL"
}

# stop_daemon: SIGTERM and require a clean exit.
stop_daemon() {
    [[ -n ${LSVD_PID:-} ]] || return 0
    kill -TERM "$LSVD_PID"
    local rc=0
    wait "$LSVD_PID" || rc=$?
    LSVD_PID=
    [[ $rc -eq 0 ]] || die "lsvd exited $rc on SIGTERM"
}

# part NAME CMD...: run one part, print [time].
# Call with `set -eE` in effect and NOT inside `||`/`&&`/`if` (that would
# switch errexit off inside the part): a failing command fails the run.
PART=
part() {
    local name=$1; shift
    local t0=$SECONDS
    echo "== $name"
    PART=$name
    "$@"
    echo "[time] $name: $((SECONDS - t0))s"
}
on_err() { echo "FAIL: part '${PART}': command failed at line $1: $2" >&2; }
