#!/bin/sh
# All guest tests in one boot (what tests/vm/ci.sh runs): smoke, filesystems,
# fio verify, server kill -9 + recovery, the kernel NBD client on the lsvd
# daemon's export, lsvdctl map/unmap through the daemon, daemon kill -9 and
# restart under a mounted fs (journaled image), lost-journal refusal, zns:
# stores on null_blk zoned and the QEMU NVMe ZNS namespace (the boot needs
# run.sh --nvme-zns). Stops at the first failure.
set -eu
for t in smoke fs fio fio-wt recover nbd map map-recover zns-conformance; do
    s=$(date +%s)
    echo "=== guest test: $t"
    sh "/lsvd/tests/vm/guest/$t.sh" || { echo "=== guest test $t FAILED"; exit 1; }
    echo "[time] guest-$t: $(($(date +%s) - s)) s"
    # Tests load null_blk with their own parameters.
    rmmod null_blk 2>/dev/null || true
done
echo "suite: all guest tests passed"
