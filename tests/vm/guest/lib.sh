# Helpers for guest test scripts (sourced; busybox sh). The project is at
# /lsvd (read-only), release binaries at /lsvd/target/release.
set -eu
SERVE=${LSVD_UBLK_SERVE:-/lsvd/target/release/lsvd-ublk-serve}
STORE_DIR=${STORE_DIR:-/tmp/lsvd-store}
SERVER_PID=""
DEV=""
DEV_ID=""
T0=$(date +%s)
cd /tmp   # fio writes state files into the cwd; /lsvd is read-only

fail() { echo "FAIL: $*"; dmesg | tail -30; exit 1; }
log() { echo "[$(($(date +%s) - T0)) s] $*"; }

# part NAME: print a [time] line for the previous part and start NAME.
PART="" PART_T=0
part() {
    now=$(date +%s)
    [ -n "$PART" ] && echo "[time] $PART: $((now - PART_T)) s"
    PART=$1 PART_T=$now
    [ -n "$PART" ] && log "--- $PART"
    return 0
}

[ -x "$SERVE" ] || fail "$SERVE missing: build it on the host first (cargo build --release -p lsvd-ublk)"

# start_server [serve args...]: start lsvd-ublk-serve on $STORE_DIR, wait for
# the device; sets SERVER_PID, DEV, DEV_ID.
start_server() {
    rm -f /tmp/ready
    RUST_LOG=${RUST_LOG:-warn} "$SERVE" --store "dir:$STORE_DIR" --ready-file /tmp/ready "$@" \
        >/tmp/serve.out 2>/tmp/serve.err &
    SERVER_PID=$!
    i=0
    while [ ! -f /tmp/ready ]; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat /tmp/serve.err
            fail "lsvd-ublk-serve exited before the device was ready"
        fi
        i=$((i + 1))
        [ $i -lt 600 ] || fail "device not ready after 60 s"
        sleep 0.1
    done
    read -r DEV DEV_ID </tmp/ready
    [ -b "$DEV" ] || fail "$DEV is not a block device"
    log "serving $DEV (id $DEV_ID, pid $SERVER_PID)"
}

# start_lsvd CONTROL RUN LOG [lsvd args...]: start the lsvd daemon ($LSVD) on
# $LSVD_HOME with its stdout and stderr appended to LOG.out and LOG.err, and wait
# up to ${START_WAIT:-30} s for its control socket; sets DPID.
start_lsvd() {
    c=$1 r=$2 l=$3
    shift 3
    mkdir -p "$r"
    "$LSVD" --home "$LSVD_HOME" --control "$c" --run-dir "$r" "$@" >>"$l.out" 2>>"$l.err" &
    DPID=$!
    i=0
    while [ ! -S "$c" ]; do
        kill -0 "$DPID" 2>/dev/null || { cat "$l.err"; fail "lsvd exited"; }
        i=$((i + 1))
        [ $i -lt $((${START_WAIT:-30} * 10)) ] || fail "no control socket after ${START_WAIT:-30} s"
        sleep 0.1
    done
}

# stop_server: SIGTERM and wait (the server flushes and deletes the device).
stop_server() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || fail "lsvd-ublk-serve exited with $? on SIGTERM: $(cat /tmp/serve.err)"
    SERVER_PID=""
    log "server stopped"
}

# make_tree DIR N: N files of assorted sizes with random content; records
# their checksums in /tmp/tree.sha256 (paths relative to DIR).
make_tree() {
    d=$1 n=$2
    mkdir -p "$d"
    i=0
    while [ $i -lt "$n" ]; do
        sub=$d/dir$((i % 7))
        mkdir -p "$sub"
        kb=$(( (i * 37) % 700 + 1 ))
        dd if=/dev/urandom of="$sub/f$i" bs=1024 count=$kb 2>/dev/null
        i=$((i + 1))
    done
    (cd "$d" && find . -type f | sort | xargs sha256sum) >/tmp/tree.sha256
}

# check_tree DIR: every file of make_tree reads back with its checksum.
check_tree() {
    (cd "$1" && sha256sum -c -s /tmp/tree.sha256) || fail "checksums differ under $1"
}
