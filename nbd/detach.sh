#!/usr/bin/env bash
# Detach a kernel NBD device attached with nbd/attach.sh (sends NBD_CMD_DISC; the gateway answers
# every request in flight before closing). Unmount file systems on the device first.
# Usage: nbd/detach.sh [DEVICE]   (default /dev/nbd0)
set -euo pipefail
DEV=${1:-/dev/nbd0}
if findmnt -rn -S "$DEV" >/dev/null 2>&1; then
  echo "detach: $DEV is mounted; umount it first" >&2
  exit 1
fi
exec nbd-client -d "$DEV"
