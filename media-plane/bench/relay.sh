#!/usr/bin/env bash
# System-level relay benchmark: bgf kernel relay vs rtpengine (userspace,
# --table=-1), same generator, loopback only (127.60-63.0.1, 127.0.0.1).
# Relay pinned to CPU 1, generator to CPU 0 (this machine has 2 cores).
# Usage: media-plane/bench/relay.sh [quick]   (run as root: raw socket, ulimit)
# Output: one JSON line per scenario on stdout (also appended to $OUT).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-media}
cargo build --release -q -p media-plane --example relay_bench
B=$CARGO_TARGET_DIR/release/examples/relay_bench
OUT=${OUT:-/tmp/relay_bench_results.jsonl}
SECS=${SECS:-5}
RELAY_CPU=${RELAY_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"  # hard limit here: 20000 fds
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { exec 3>&- 2>/dev/null || true; [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

start_bgf() { # streams
  mkfifo "$WORK/in"
  taskset -c "$RELAY_CPU" "$B" serve --streams "$1" --workers 1 --max-seconds 900 <"$WORK/in" >"$WORK/out" 2>&1 &
  SERVER_PID=$!
  exec 3>"$WORK/in"
  for _ in $(seq 300); do grep -q READY "$WORK/out" && return 0; sleep 0.1; done
  echo "bgf relay did not start:"; cat "$WORK/out"; exit 1
}
stop_bgf() { exec 3>&-; wait "$SERVER_PID" || true; grep COUNTERS "$WORK/out" >&2 || true; rm -f "$WORK/in"; SERVER_PID=""; }

start_rtpengine() {
  taskset -c "$RELAY_CPU" /usr/bin/rtpengine --table=-1 --interface=127.0.0.1 \
    --listen-ng=127.0.0.1:2223 --port-min=20000 --port-max=65000 --num-threads=1 \
    --foreground --log-stderr >"$WORK/rtpe.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "Startup complete" "$WORK/rtpe.log" && return 0; sleep 0.1; done
  echo "rtpengine did not start:"; cat "$WORK/rtpe.log"; exit 1
}
stop_rtpengine() { kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=""; }

gen() { # target streams rate
  taskset -c "$GEN_CPU" "$B" gen --target "$1" --pid "$SERVER_PID" --streams "$2" --rate "$3" \
    --seconds "$SECS" | tee -a "$OUT"
}

if [ "${1:-}" = quick ]; then RATES="100000 200000"; STREAMS="1000"; else
  RATES="${RATES:-100000 150000 200000 300000 400000}"; STREAMS="${STREAMS:-1000 4900}"; fi

for n in $STREAMS; do
  start_bgf "$n"
  for r in $RATES; do gen bgf "$n" "$r"; done
  stop_bgf
  for r in $RATES; do
    # A fresh rtpengine per run: calls left from the previous run (same
    # source addresses) made the next run's packets vanish.
    start_rtpengine
    gen rtpengine "$n" "$r"
    stop_rtpengine
  done
done
