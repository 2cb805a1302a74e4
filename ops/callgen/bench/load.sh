#!/bin/sh
# bgf-callgen's own cost: N concurrent calls UAC <-> UAS directly on loopback
# (no SUT), or through a BGF when PROXY is set. Prints the summary table, whose
# "uac:"/"uas:" lines carry CPU s, µs/call and µs/packet.
#
#   ops/callgen/bench/load.sh 2000            # 2000 concurrent, direct
#   PROXY=127.0.1.1:5060 UAS_SIP=127.0.2.2:5060 ops/callgen/bench/load.sh 500
#
# Env: BIN (default $CARGO_TARGET_DIR/release/bgf-callgen), HOLD_MS (10000),
# RATE (N/5 per second: the ramp takes 5 s), UAC_SIP, UAS_SIP, PROXY, OUT,
# IO (auto | socket | ring: the media path of both roles, default auto).
set -eu
N=${1:-500}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/bgf-callgen}
HOLD_MS=${HOLD_MS:-10000}
RATE=${RATE:-$((N / 5))}
UAC_SIP=${UAC_SIP:-127.0.3.1:5060}
UAS_SIP=${UAS_SIP:-127.0.2.2:5060}
PROXY=${PROXY:-$UAS_SIP}
OUT=${OUT:-/tmp/callgen-load-$N}
IO=${IO:-auto}
mkdir -p "$OUT"
SOCK="$OUT/ctl.sock"
"$BIN" uas --local "$UAS_SIP" --ctl-listen "unix:$SOCK" --rtp-ports 10000-29999 --io "$IO" \
    --json "$OUT/uas.json" 2>"$OUT/uas.err" &
UAS=$!
sleep 0.3
set +e
"$BIN" uac --local "$UAC_SIP" --proxy "$PROXY" --rtp-ports 30000-49999 --io "$IO" \
    --calls "$N" --concurrent "$N" --rate "$RATE" --hold-ms "$HOLD_MS" \
    --ctl-connect "unix:$SOCK" --json "$OUT/uac.json" --svg "$OUT/uac.svg" \
    --progress 2>"$OUT/uac.err"
RC=$?
wait $UAS
grep -E "^\[" "$OUT/uac.err" | tail -n 4
exit $RC
