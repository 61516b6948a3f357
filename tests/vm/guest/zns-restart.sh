#!/bin/sh
# Second boot after zns-suite.sh on the same NVMe ZNS backing file: QEMU does
# not keep zone state across its own restart, so every zone of /dev/nvme0n1
# now reports empty although the file still holds the image `keep`. lsvd must
# refuse to open it and say why, and must write nothing to the device.
. /lsvd/tests/vm/guest/lib.sh
CTL=/lsvd/target/release/lsvdctl
export LSVD_HOME=/scratch/zns-home
[ -f /scratch/zns-keep-zones.txt ] || fail "no state from the previous boot (run zns-suite.sh first with the same --scratch)"
[ -b /dev/nvme0n1 ] || fail "/dev/nvme0n1 missing: boot with --nvme-zns"
part restart-refused
grep -q '1(em)' /scratch/zns-keep-zones.txt || true
written=$(grep SEQ_WRITE_REQUIRED /scratch/zns-keep-zones.txt | grep -vc '1(em)' || true)
[ "$written" -gt 0 ] || fail "the previous boot wrote no zone"
now=$(blkzone report /dev/nvme0n1 | grep SEQ_WRITE_REQUIRED | grep -vc '1(em)' || true)
log "zones written before the QEMU restart: $written; non-empty now: $now"
before=$(blkzone report /dev/nvme0n1 | md5sum)
"$CTL" io verify keep --offset 0 --length 16M --pattern 3 >/tmp/keep.out 2>&1 \
    && fail "image keep opened on a device whose zone state was lost"
cat /tmp/keep.out
grep -q "every zone is empty" /tmp/keep.out || fail "refusal does not say the zones are empty"
"$CTL" image info keep >/tmp/keep-info.out 2>&1 && fail "image info opened keep"
[ "$(blkzone report /dev/nvme0n1 | md5sum)" = "$before" ] || fail "the refused opens wrote to the device"
part ""
log "zns restart: lost zone state refused, nothing written"
