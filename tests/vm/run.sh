#!/usr/bin/env bash
# Boot a QEMU guest (TCG) with the lsvd test initramfs and run one guest script.
#
#   tests/vm/run.sh [options] GUEST_SCRIPT [args...]
#
# GUEST_SCRIPT is a path inside the project (e.g. tests/vm/guest/smoke.sh); the
# guest sees the project read-only at /lsvd (cwd) and a fresh writable scratch
# directory at /scratch. Exits with the script's exit code; 124 when the
# timeout killed QEMU, 125 when the guest ended without reporting one.
# The guest script's output is printed as it runs; on failure the whole
# console log is printed too.
#
# Options:
#   --timeout SECS     kill QEMU after SECS (default 900)
#   --mem SIZE         guest RAM (default 2G)
#   --smp N            guest CPUs (default 2)
#   --nvme-zns         add an NVMe controller with a 1 GiB ZNS namespace
#                      (64 MiB zones, 48 MiB capacity; file in the scratch dir)
#   --scratch DIR      use DIR as the scratch share (kept; default: a temp dir
#                      removed afterwards unless the run failed)
#   --qemu-arg ARG     pass ARG to QEMU (repeatable)
#   --verbose          print the whole console as it runs
# Needs tests/vm/install.sh run once.
set -euo pipefail
cd "$(dirname "$0")/../.."
root_dir=$PWD

timeout=900 mem=2G smp=2 zns=0 scratch="" verbose=0
qemu_extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --timeout) timeout=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --nvme-zns) zns=1; shift ;;
        --scratch) scratch=$2; shift 2 ;;
        --qemu-arg) qemu_extra+=("$2"); shift 2 ;;
        --verbose) verbose=1; shift ;;
        --) shift; break ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { sed -n '2,24p' "$0" >&2; exit 2; }
script=$1; shift
[[ -f "$script" ]] || { echo "run.sh: no such guest script: $script" >&2; exit 2; }
script=$(realpath --relative-to="$root_dir" "$script")
[[ "$script" != ../* ]] || { echo "run.sh: $script is outside the project" >&2; exit 2; }

command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 missing; run tests/vm/install.sh" >&2; exit 1; }
eval "$(tests/vm/build-initramfs.sh)"

keep=0
if [[ -z "$scratch" ]]; then
    mkdir -p .ci/cache/vm/runs
    scratch=$(mktemp -d "$root_dir/.ci/cache/vm/runs/scratch.XXXXXX")
else
    keep=1
    mkdir -p "$scratch"
fi
scratch=$(realpath "$scratch")
rm -rf "$scratch/.vm"
mkdir -p "$scratch/.vm"
{
    printf 'cd /lsvd && exec sh'
    printf ' %q' "/lsvd/$script" "$@"
    printf '\n'
} >"$scratch/.vm/cmd"
log=$scratch/.vm/console.log

args=(-accel tcg -cpu max -m "$mem" -smp "$smp" -nographic -no-reboot
    -kernel "$KERNEL" -initrd "$INITRD"
    -append "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init"
    -virtfs "local,path=$root_dir,mount_tag=lsvd,security_model=none,readonly=on"
    -virtfs "local,path=$scratch,mount_tag=scratch,security_model=none"
    -nic none)
if [[ $zns -eq 1 ]]; then
    truncate -s 1G "$scratch/.vm/zns.img"
    args+=(-drive "file=$scratch/.vm/zns.img,id=zns0,format=raw,if=none"
        -device nvme,id=nvme0,serial=zns0
        -device "nvme-ns,drive=zns0,bus=nvme0,nsid=1,zoned=true,zoned.zone_size=64M,zoned.zone_capacity=48M,zoned.max_open=4,zoned.max_active=6")
fi
args+=("${qemu_extra[@]}")

start=$SECONDS
qrc=0
# The guest script's own output lies between the two "=== lsvd-vm" markers.
timeout --signal=KILL "$timeout" qemu-system-x86_64 "${args[@]}" </dev/null 2>&1 | tr -d '\r' | tee "$log" |
    if [[ $verbose -eq 1 ]]; then cat; else
        awk '/=== lsvd-vm: guest script start/ {on=1; next} /=== lsvd-vm: guest script exit/ {on=0} on {print; fflush()}'
    fi || true
qrc=${PIPESTATUS[0]}
took=$((SECONDS - start))

if [[ -f "$scratch/.vm/rc" ]]; then
    rc=$(cat "$scratch/.vm/rc")
elif [[ $qrc -eq 137 ]]; then
    echo "run.sh: timeout after $timeout s, QEMU killed" >&2
    rc=124
else
    echo "run.sh: the guest ended without an exit code (QEMU exit $qrc)" >&2
    rc=125
fi
echo "[time] vm $script: $took s (exit $rc)"
if [[ "$rc" != 0 ]]; then
    echo "----- guest console ($log)" >&2
    cat "$log" >&2
    echo "----- end of guest console" >&2
    keep=1
fi
if [[ $keep -eq 0 ]]; then rm -rf "$scratch"; else echo "run.sh: scratch kept: $scratch" >&2; fi
exit "$rc"
