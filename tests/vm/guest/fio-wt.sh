#!/bin/sh
# fio.sh with the server in write-through mode.
MODE=--write-through JOBSIZE=${JOBSIZE:-24M} exec sh /lsvd/tests/vm/guest/fio.sh "$@"
