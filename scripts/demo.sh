#!/usr/bin/env bash
# The main job on a fresh machine: build lsvdctl (release), create an image in
# a temporary home on the default embedded store (a directory), write a test
# pattern, verify it, read a block back, fsck the image, and print the result.
#
# Environment knobs:
#   DEMO_SIZE     image size (default 1G)
#   DEMO_LENGTH   bytes of pattern written and verified (default 64M)
#   DEMO_STORE    store spec instead of the default directory store, e.g.
#                 "zoned-file:/tmp/z.img,zone-size=64M,zones=32"
#   DEMO_KEEP=1   keep the temporary home afterwards (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."

size="${DEMO_SIZE:-1G}"
length="${DEMO_LENGTH:-64M}"
seed=42

echo "=== building lsvdctl (release)"
cargo build --release -p lsvd-ctl --bin lsvdctl
lsvdctl="$PWD/target/release/lsvdctl"

LSVD_HOME="$(mktemp -d -t lsvd-demo.XXXXXX)"
export LSVD_HOME
cleanup() {
    if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
        echo "demo home kept at $LSVD_HOME"
    else
        rm -rf "$LSVD_HOME"
    fi
}
trap cleanup EXIT

store_args=()
[[ -n "${DEMO_STORE:-}" ]] && store_args=(--store "$DEMO_STORE")

run() {
    echo "+ lsvdctl $*"
    "$lsvdctl" "$@"
}

run image create demo --size "$size" "${store_args[@]}"
run image info demo
run io write demo --offset 0 --length "$length" --pattern "$seed"
run io verify demo --offset 0 --length "$length" --pattern "$seed"
echo "+ lsvdctl io read demo --offset 0 --length 4K | od -A d -t x8 | sed -n 1,3p"
"$lsvdctl" io read demo --offset 0 --length 4K | od -A d -t x8 | sed -n 1,3p
run image fsck demo
run image ls
echo
echo "DEMO OK: wrote, verified and fsck'd $length of pattern $seed on a $size image"
