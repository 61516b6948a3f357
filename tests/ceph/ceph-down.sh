#!/bin/bash
# (lsvd tests/ceph)
# Stop the daemons started by ceph-up.sh DIR (only those: the pids in DIR/run/*.pid whose
# command line names DIR/ceph.conf) and remove DIR. OSDs go first, while the mon can still
# take their "mark me down"; then mgr and mon. SIG=KILL for an instant (unclean) stop; KEEP=1 keeps DIR.
set -u
DIR=$(realpath -m "${1:?usage: $0 DIR}")
SIG=${SIG:-TERM}
stop() {   # stop <pidfile>... : signal them, wait up to 10 s, then SIGKILL leftovers
  local pids=() f p i alive
  for f in "$@"; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    if grep -qaF -- "$DIR/ceph.conf" "/proc/$p/cmdline" 2>/dev/null; then
      pids+=("$p"); kill -"$SIG" "$p"
    fi
  done
  for i in $(seq 1 100); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return; sleep 0.1
  done
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && { echo "SIGKILL $p" >&2; kill -KILL "$p"; }; done
}
stop "$DIR"/run/osd.*.pid
stop "$DIR"/run/mgr.*.pid "$DIR"/run/mon.*.pid
[ "${KEEP:-0}" = 1 ] || rm -rf "${DIR:?}"
