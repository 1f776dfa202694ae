#!/usr/bin/env bash
# Benchmark: the atomic-disk NBD gateway (3 replicas on this machine) against nbdkit serving one
# file with every write forced to FUA (one durable copy), same fio jobs (nbd engine), same run.
# Prints IOPS, MB/s and the gateway/nbdkit ratio per job, the CPU each side used per operation
# (all of the cluster's processes against nbdkit's), then the floors from the issue. First lines
# calibrate the machine (bench/machine.mjs: loopback round trip, fdatasync, new-page cost, HMAC),
# since the same code measures 2-3x apart between VMs of the same kind.
# Before the fio jobs fill the volumes, a sparse copy-out: nbdcopy of each volume with 16 MiB
# written, which BLOCK_STATUS lets it mostly skip (ratio: nbdkit's time over ours).
# Env: SIZE_MIB (volume size, default 256), RUNTIME (seconds per job, default 10),
#      RAMP (seconds of each job run before fio starts counting, default 1; the processes are
#      JIT-compiled, and sequential writes through a fresh cluster speed up for their first 10-20 s,
#      so RAMP=10 RUNTIME=20 shows the steady state a long transfer sees),
#      CONNS (gateway --connections-per-replica, default 2), KEEP=1 keeps the temp dir,
#      CLI (the atomic-disk entry point, default dist/cli/main.js: another build to compare).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-256}
RUNTIME=${RUNTIME:-10}
RAMP=${RAMP:-1}
CONNS=${CONNS:-2}
CLI=${CLI:-dist/cli/main.js}
for tool in fio nbdkit nbdinfo nbdcopy qemu-io node; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deb-deps)" >&2; exit 1; }
done
[ -f "$CLI" ] || { echo "bench: $CLI missing (make build)" >&2; exit 1; }
# The V8 flags the atomic-disk script's shebang gives node (src/cli/node_flags.ts says why).
read -r -a NODE_FLAGS <<<"$(sed -n '1s/^#!.*env -S node//p' "$CLI")"

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
  node "${NODE_FLAGS[@]}" "$CLI" replica --config "$TMP/cluster.json" --rank "$rank" --data "$TMP/replica-$rank" \
    >"$TMP/replica-$rank.log" 2>&1 &
  PIDS+=($!)
done
node "${NODE_FLAGS[@]}" "$CLI" nbd --config "$TMP/cluster.json" --listen "127.0.0.1:$GW_PORT" --connections-per-replica "$CONNS" \
  >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
truncate -s "${SIZE_MIB}M" "$TMP/nbdkit.img"
nbdkit -f -p "$KIT_PORT" -i 127.0.0.1 --filter=fua file "$TMP/nbdkit.img" fuamode=force &
PIDS+=($!)
KIT_PID=$!
CLUSTER_PIDS=("${PIDS[@]:0:4}")
GW_URI="nbd://127.0.0.1:$GW_PORT"
KIT_URI="nbd://127.0.0.1:$KIT_PORT"
wait_nbd "$GW_URI"
wait_nbd "$KIT_URI"

# name rw bs iodepth
# rewrite-1m-qd8 runs the sequential writes again: overwrites of written sectors, the steady state
# (write-1m-qd8 after the random writes partly fills new space and partly lands in scattered free
# slots; see the README's performance notes).
# rerandwrite-4k-qd32 runs the random writes again at the end: every sector written, every process
# warm, on both sides (nbdkit's file speeds up too once its blocks are allocated).
JOBS=("randwrite-4k-qd32 randwrite 4k 32" "randread-4k-qd32 randread 4k 32" "write-1m-qd8 write 1M 8"
  "rewrite-1m-qd8 write 1M 8" "read-1m-qd8 read 1M 8" "rerandwrite-4k-qd32 randwrite 4k 32")

# Clock ticks (user + system) each of the given processes has used so far, comma-separated.
cpu_ticks() {
  local pid out=()
  for pid in "$@"; do out+=("$(awk '{print $14 + $15}' "/proc/$pid/stat")"); done
  (IFS=,; echo "${out[*]}")
}

run_fio() { # uri name rw bs depth -> "iops MBps"
  local out="$TMP/fio-$2-$(echo "$1" | tr -c 'a-z0-9' _).json"
  fio --name="$2" --ioengine=nbd --uri="$1" --rw="$3" --bs="$4" --iodepth="$5" --size="${SIZE_MIB}M" \
    --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --output-format=json >"$out" 2>"$out.err" || {
    echo "bench: fio $2 against $1 failed: $(tail -2 "$out.err")" >&2; echo "0 0"; return; }
  python3 - "$out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
print(f'{side["iops"]:.0f} {side["bw_bytes"] / 1e6:.1f}')
PY
}

# As run_fio, plus the CPU the given processes used per operation in µs, in all and each:
# "iops MBps cpu_us_per_op cpu_us_per_op_of_each,...". Counted from the end of fio's ramp, like
# fio's own numbers, so that warm-up is in neither.
run_fio_cpu() { # uri name rw bs depth pid...
  local args=("$1" "$2" "$3" "$4" "$5")
  shift 5
  local result="$TMP/result-${args[1]}-$(echo "${args[0]}" | tr -c 'a-z0-9' _)" job t0 c0 t1 c1
  run_fio "${args[@]}" >"$result" &
  job=$!
  sleep "$RAMP"
  t0=$(date +%s.%N)
  c0=$(cpu_ticks "$@")
  wait "$job"
  c1=$(cpu_ticks "$@")
  t1=$(date +%s.%N)
  read -r iops mbs <"$result"
  python3 -c "
iops, secs, hz = $iops, $t1 - $t0, $(getconf CLK_TCK)
each = [b - a for a, b in zip([$c0], [$c1])]
per_op = [f'{t * 1e6 / hz / (iops * secs):.0f}' if iops else '?' for t in each]
total = f'{sum(each) * 1e6 / hz / (iops * secs):.0f}' if iops else '?'
print(iops, $mbs, total, ','.join(per_op))"
}

printf "\natomic-disk NBD gateway (3 replicas, %s MiB) vs nbdkit file + fua=force; %ss per job after %ss of ramp; %s\n\n" \
  "$SIZE_MIB" "$RUNTIME" "$RAMP" "$(date -u +%FT%TZ)"
node bench/machine.mjs "$TMP" || echo "machine: calibration failed"
echo

# Copy-out of a sparse volume, before the fio jobs fill it: 16 MiB written, the rest never, so
# BLOCK_STATUS decides how much a copy tool reads (nbdkit's file plugin maps the file's holes).
sparse_copy_s() { # uri -> seconds of nbdcopy to null:
  qemu-io -f raw -c "write -P 7 $((SIZE_MIB / 4))M 16M" "$1" >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  nbdcopy "$1" null: || { echo "bench: nbdcopy from $1 failed" >&2; echo 0; return; }
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}
g_copy=$(sparse_copy_s "$GW_URI")
k_copy=$(sparse_copy_s "$KIT_URI")
printf "sparse copy-out, nbdcopy to null: of the volume with 16 MiB written: gateway %s s, nbdkit %s s, ratio %s\n\n" \
  "$g_copy" "$k_copy" "$(python3 -c "print(f'{($k_copy / $g_copy) if $g_copy else 0:.2f}')")"

printf "%-18s %10s %9s %9s %12s %9s %9s %7s\n" job gw_IOPS gw_MB/s gw_us/op nbdkit_IOPS kit_MB/s kit_us/op ratio
RESULTS=()
BREAKDOWN=()
for job in "${JOBS[@]}"; do
  read -r name rw bs depth <<<"$job"
  read -r g_iops g_mbs g_cpu g_each <<<"$(run_fio_cpu "$GW_URI" "$name" "$rw" "$bs" "$depth" "${CLUSTER_PIDS[@]}")"
  read -r k_iops k_mbs k_cpu _ <<<"$(run_fio_cpu "$KIT_URI" "$name" "$rw" "$bs" "$depth" "$KIT_PID")"
  ratio=$(python3 -c "print(f'{($g_iops / $k_iops) if $k_iops else 0:.2f}')")
  printf "%-18s %10s %9s %9s %12s %9s %9s %7s\n" "$name" "$g_iops" "$g_mbs" "$g_cpu" "$k_iops" "$k_mbs" "$k_cpu" "$ratio"
  RESULTS+=("$name $g_iops $g_mbs $ratio")
  BREAKDOWN+=("$name $g_each")
done

echo "(us/op: CPU time per operation of the 3 replicas + gateway, and of nbdkit; fio's own not counted)"
echo
echo "CPU per operation by process, µs (the coordinator of most writes is the busiest replica):"
printf "%-18s %10s %10s %10s %10s\n" job replica1 replica2 replica3 gateway
for b in "${BREAKDOWN[@]}"; do
  read -r name each <<<"$b"
  IFS=, read -r r1 r2 r3 gw <<<"$each"
  printf "%-18s %10s %10s %10s %10s\n" "$name" "$r1" "$r2" "$r3" "$gw"
done
echo
for r in "${RESULTS[@]}"; do
  read -r name iops mbs ratio <<<"$r"
  case "$name" in
    randwrite-4k-qd32) python3 -c "import sys; r=$ratio; print(f'floor randwrite 4k QD32 >= 0.5x nbdkit: {r:.2f}x', 'PASS' if r >= 0.5 else 'FAIL')" ;;
    write-1m-qd8) python3 -c "m=$mbs; print(f'floor sequential 1 MiB writes >= 100 MB/s: {m:.1f} MB/s', 'PASS' if m >= 100 else 'FAIL')" ;;
    rewrite-1m-qd8) echo "(sequential 1 MiB rewrites of written sectors: $mbs MB/s)" ;;
    rerandwrite-4k-qd32) echo "(random 4 KiB rewrites at QD32, both volumes full and warm: ${ratio}x nbdkit)" ;;
  esac
done
