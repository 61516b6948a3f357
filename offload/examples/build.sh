#!/bin/sh
# Rebuilds the committed example objects: examples/bpf/*.o and examples/bpf/hostile/*.o.
# Needs clang (Debian 12: `apt-get install -y clang` gives clang-14). Output must match the
# committed .o files byte for byte with clang-14 (tests/examples.rs checks when clang exists).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
CLANG=${CLANG:-$(command -v clang-14 || command -v clang || true)}
if [ -z "$CLANG" ]; then
	echo "clang not found: apt-get install -y clang" >&2
	exit 1
fi
for src in "$here"/bpf/*.c "$here"/bpf/hostile/*.c; do
	"$CLANG" -O2 -g0 -target bpf -I "$here/../include" -c "$src" -o "${src%.c}.o"
done
echo "built with $("$CLANG" --version | head -1)"
