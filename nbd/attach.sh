#!/usr/bin/env bash
# Attach an atomic-disk gateway to a kernel NBD device with the stock nbd-client.
# Usage: nbd/attach.sh [HOST] [PORT] [DEVICE] [EXPORT]   (defaults: 127.0.0.1 10809 /dev/nbd0 "")
# -b 4096: one atomic register per logical block, so the kernel never issues sub-sector writes.
# -t 60:   the gateway fails a stuck request with EIO after 25 s (--timeout-ms); the kernel timeout
#          must be longer, or the kernel tears the socket down first and the file system sees errors.
# -C 2:    the gateway advertises CAN_MULTI_CONN, so several sockets are safe and spread the load.
# -p:      persist: reconnect if the gateway restarts (acknowledged writes are on the replicas).
set -euo pipefail
HOST=${1:-127.0.0.1}
PORT=${2:-10809}
DEV=${3:-/dev/nbd0}
EXPORT=${4:-}
modprobe nbd 2>/dev/null || true
[ -b "$DEV" ] || { echo "attach: $DEV is not a block device (is the nbd module loaded?)" >&2; exit 1; }
args=("$HOST" "$PORT" "$DEV" -b 4096 -t 60 -C 2 -p)
[ -n "$EXPORT" ] && args+=(-N "$EXPORT")
exec nbd-client "${args[@]}"
