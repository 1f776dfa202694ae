#!/usr/bin/env bash
# Benchmark: the atomic-disk NBD gateway (3 replicas on this machine) against nbdkit serving one
# file with every write forced to FUA (one durable copy), same fio jobs (nbd engine), same run.
# Prints IOPS, MB/s and the gateway/nbdkit ratio per job, then the floors from the issue.
# Env: SIZE_MIB (volume size, default 256), RUNTIME (seconds per job, default 10),
#      CONNS (gateway --connections-per-replica, default 2), KEEP=1 keeps the temp dir,
#      CLI (the atomic-disk entry point, default dist/cli/main.js: another build to compare).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-256}
RUNTIME=${RUNTIME:-10}
CONNS=${CONNS:-2}
CLI=${CLI:-dist/cli/main.js}
for tool in fio nbdkit nbdinfo node; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deb-deps)" >&2; exit 1; }
done
[ -f "$CLI" ] || { echo "bench: $CLI missing (make build)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/atomic-disk-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

# N consecutive free loopback ports, printed as the first one.
free_base_port() {
  python3 - "$1" <<'PY'
import socket, sys, random
n = int(sys.argv[1])
for _ in range(200):
    base = random.randint(20000, 60000 - n)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
PY
}

wait_nbd() { # URI
  for _ in $(seq 1 150); do nbdinfo --size "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "bench: nothing answers at $1" >&2; return 1
}

SECTORS=$((SIZE_MIB * 256))
BASE=$(free_base_port 5)
GW_PORT=$((BASE + 3))
KIT_PORT=$((BASE + 4))
node "$CLI" init --replicas 3 --out "$TMP/cluster.json" --sectors "$SECTORS" --base-port "$BASE" >/dev/null
for rank in 1 2 3; do
  node "$CLI" replica --config "$TMP/cluster.json" --rank "$rank" --data "$TMP/replica-$rank" \
    >"$TMP/replica-$rank.log" 2>&1 &
  PIDS+=($!)
done
node "$CLI" nbd --config "$TMP/cluster.json" --listen "127.0.0.1:$GW_PORT" --connections-per-replica "$CONNS" \
  >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
truncate -s "${SIZE_MIB}M" "$TMP/nbdkit.img"
nbdkit -f -p "$KIT_PORT" -i 127.0.0.1 --filter=fua file "$TMP/nbdkit.img" fuamode=force &
PIDS+=($!)
GW_URI="nbd://127.0.0.1:$GW_PORT"
KIT_URI="nbd://127.0.0.1:$KIT_PORT"
wait_nbd "$GW_URI"
wait_nbd "$KIT_URI"

# name rw bs iodepth
# rewrite-1m-qd8 runs the sequential writes again: overwrites of written sectors, the steady state
# (write-1m-qd8 after the random writes partly fills new space and partly lands in scattered free
# slots; see the README's performance notes).
JOBS=("randwrite-4k-qd32 randwrite 4k 32" "randread-4k-qd32 randread 4k 32" "write-1m-qd8 write 1M 8"
  "rewrite-1m-qd8 write 1M 8" "read-1m-qd8 read 1M 8")

run_fio() { # uri name rw bs depth -> "iops MBps"
  local out="$TMP/fio-$2-$(echo "$1" | tr -c 'a-z0-9' _).json"
  fio --name="$2" --ioengine=nbd --uri="$1" --rw="$3" --bs="$4" --iodepth="$5" --size="${SIZE_MIB}M" \
    --time_based --runtime="$RUNTIME" --ramp_time=1 --output-format=json >"$out" 2>"$out.err" || {
    echo "bench: fio $2 against $1 failed: $(tail -2 "$out.err")" >&2; echo "0 0"; return; }
  python3 - "$out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
print(f'{side["iops"]:.0f} {side["bw_bytes"] / 1e6:.1f}')
PY
}

printf "\natomic-disk NBD gateway (3 replicas, %s MiB) vs nbdkit file + fua=force; %ss per job; %s\n\n" \
  "$SIZE_MIB" "$RUNTIME" "$(date -u +%FT%TZ)"
printf "%-18s %12s %10s %12s %10s %8s\n" job gw_IOPS gw_MB/s nbdkit_IOPS kit_MB/s ratio
RESULTS=()
for job in "${JOBS[@]}"; do
  read -r name rw bs depth <<<"$job"
  read -r g_iops g_mbs <<<"$(run_fio "$GW_URI" "$name" "$rw" "$bs" "$depth")"
  read -r k_iops k_mbs <<<"$(run_fio "$KIT_URI" "$name" "$rw" "$bs" "$depth")"
  ratio=$(python3 -c "print(f'{($g_iops / $k_iops) if $k_iops else 0:.2f}')")
  printf "%-18s %12s %10s %12s %10s %8s\n" "$name" "$g_iops" "$g_mbs" "$k_iops" "$k_mbs" "$ratio"
  RESULTS+=("$name $g_iops $g_mbs $ratio")
done

echo
for r in "${RESULTS[@]}"; do
  read -r name iops mbs ratio <<<"$r"
  case "$name" in
    randwrite-4k-qd32) python3 -c "import sys; r=$ratio; print(f'floor randwrite 4k QD32 >= 0.5x nbdkit: {r:.2f}x', 'PASS' if r >= 0.5 else 'FAIL')" ;;
    write-1m-qd8) python3 -c "m=$mbs; print(f'floor sequential 1 MiB writes >= 100 MB/s: {m:.1f} MB/s', 'PASS' if m >= 100 else 'FAIL')" ;;
    rewrite-1m-qd8) echo "(sequential 1 MiB rewrites of written sectors: $mbs MB/s)" ;;
  esac
done
