#!/usr/bin/env bash
# The RADOS store's tests on a real one-node Ceph cluster (bluestore on a
# sparse file, so the OSD kill -9 + restart test keeps its data):
# install (if needed), start the cluster, `cargo test -p lsvd-rados` with
# CEPH_CONF and LSVD_REQUIRE_CEPH=1, stop the cluster. Prints [time] per part.
# FAILS (never skips) when the cluster cannot start.
#   env: CEPH_DIR (default: a fresh temp dir), PROPTEST_CASES (model test
#        cases, default 16), CARGO_TEST_ARGS (extra args, e.g. a filter)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/ceph

t() { local t0=$SECONDS rc=0; "$@" || rc=$?; echo "[time] $(( SECONDS - t0 )) s: $*"; return $rc; }

t "$here/install.sh"
dir=${CEPH_DIR:-$(mktemp -d /tmp/lsvd-ceph.XXXXXX)/cluster}
# A small block file is enough for the tests (sparse; the model and restart
# tests write a few hundred MiB at most).
if ! BLOCK_SIZE=${BLOCK_SIZE:-4294967296} t "$here/ceph-up.sh" "$dir" bluestore; then
    echo "FAIL: the Ceph cluster did not start (logs were in $dir/log)" >&2
    exit 1
fi
# Only a cluster this script started is stopped (ceph-up.sh cleans up after
# its own failures and refuses a DIR in use).
cleanup() { t "$here/ceph-down.sh" "$dir" || true; }
trap cleanup EXIT
export CEPH_CONF="$(realpath "$dir")/ceph.conf" LSVD_REQUIRE_CEPH=1
export PROPTEST_CASES=${PROPTEST_CASES:-16}
# shellcheck disable=SC2086
t cargo test -p lsvd-rados ${CARGO_TEST_ARGS:-} -- --include-ignored --nocapture

# lsvdctl on the cluster: create rados:POOL/NAME, write, verify, fsck, rm
# (and rm leaves none of the image's objects behind).
cli() {
    local pool=${POOL:-test} home ctl=target/debug/lsvdctl
    cargo build -q -p lsvd-ctl --bin lsvdctl
    home=$(mktemp -d /tmp/lsvd-ceph-cli.XXXXXX)
    "$ctl" --home "$home" image create "rados:$pool/clitest" --size 64M --segment-size 1M
    "$ctl" --home "$home" io write clitest --offset 1M --length 8M --pattern 9
    "$ctl" --home "$home" io verify clitest --offset 1M --length 8M --pattern 9
    "$ctl" --home "$home" image fsck clitest
    "$ctl" --home "$home" image info clitest --json | grep -q '"rados:'
    [[ $(rados -p "$pool" ls | grep -c '^clitest') -gt 0 ]] || { echo "FAIL: no clitest objects in $pool" >&2; return 1; }
    "$ctl" --home "$home" image rm clitest
    if rados -p "$pool" ls | grep -q '^clitest'; then
        echo "FAIL: image rm left objects of clitest in $pool" >&2
        return 1
    fi
    rm -rf "$home"
}
t cli

# The journal crash test (kill -9 of a writer, journal damage variants) with
# the segments in RADOS.
crash() {
    LSVD_CRASH_RADOS="rados:${POOL:-test}/crash" CRASH_CYCLES=${CRASH_CYCLES_RADOS:-20} \
        cargo test -p lsvd-tests --test crash crash_rados_store -- --ignored --nocapture
}
t crash
echo "tests/ceph/run.sh: PASS"
