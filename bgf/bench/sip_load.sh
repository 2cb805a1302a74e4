#!/usr/bin/env bash
# System-level SIP benchmark: SIPp uac (access side) -> bgf active -> SIPp uas
# (core side) on loopback, release build. Reports, per rate: calls ok/failed,
# retransmissions, and bgf's CPU per call (utime+stime from /proc over the run
# / successful calls). Signalling only (SIPp's stock scenarios carry SDP, so
# every call allocates and releases its pinholes; no RTP is sent).
#
#   bgf/bench/sip_load.sh                 # RATES="300 1000 2000" CALLS=6000
#   STATELOG=embedded bgf/bench/sip_load.sh   # with output commit: a fresh
#       `bgf statelog` (127.201.0.7:7400, data in the run's temp dir) per rate;
#       its CPU is reported too (log_cpu_s, log µs/call)
#   PERF=1 ...        # also `perf record -e cpu-clock -g` bgf during each
#       run (perf-RATE.data in the run's directory; `perf report -i` it)
#   BGF_BIN=path ...  # a prebuilt bgf instead of building this tree
#
# Bounded: each run is CALLS calls at RATE calls/s with 500 ms hold, on
# 127.201.0.0/24 only, and SIPp is killed after 180 s whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${RATES:-"300 1000 2000"}
CALLS=${CALLS:-6000}
WORKERS=${WORKERS:-1}
STATELOG=${STATELOG:-}
# SIPp's socket buffers (its default, 64 KiB, drops the bursts that output
# commit releases at once after each durable append; 4 MiB = net.core.rmem_max here).
SIPP_BUF=${SIPP_BUF:-4194304}
# BGF_BIN=path runs a prebuilt binary (e.g. to compare two builds back to back).
if [ -z "${BGF_BIN:-}" ]; then cargo build --release -p bgf >/dev/null; fi
BGF=${BGF_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/bgf}
DIR=$(mktemp -d /tmp/bgf-sipload.XXXX)
TICK=$(getconf CLK_TCK)
cat > "$DIR/bgf.toml" <<TOML
[instance]
name = "load1"
secret = "load-Pw6Tz2Kq8Xm4Vn9Rc3Lb7Hj5Yf1Gd0sA"
[access]
sip = "127.201.0.1:5060"
rtp_ports = "20000-29999"
allow_loopback_media = true
require_registration = false
[core]
sip = "127.201.0.2:5060"
rtp_ports = "30000-39999"
next_hop = "127.201.0.3:5060"
allow_loopback_media = true
# one SIPp UAC on one address: lift the per-source limits
[limits]
sessions_per_source = 10000000
early_dialogs_per_source = 10000000
registrations_per_source = 10000000
unanswered_invite_ports = 65536
invite_rate = 1000000
register_rate = 1000000
other_rate = 1000000
[media]
workers = $WORKERS
[log]
format = "json"
level = "warn"
TOML
case "$STATELOG" in
    "") ;;
    embedded)
        # The store takes mutual TLS only: the lab's certificates (bgf gen-certs).
        "$BGF" gen-certs "$DIR/pki" --server statelog=127.201.0.7 --active load1 >/dev/null
        printf '[statelog]\nbackend = "embedded"\naddr = "127.201.0.7:7400"\nca = "pki/ca.pem"\ncert = "pki/active-load1.pem"\nkey = "pki/active-load1.key"\n' >> "$DIR/bgf.toml" ;;
    *) echo "STATELOG=$STATELOG: only \"embedded\" is supported here" >&2; exit 2 ;;
esac
cleanup() { kill "${BGFPID:-}" "${UASPID:-}" "${LOGPID:-}" 2>/dev/null || true; }
trap cleanup EXIT
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
printf '%-6s %-7s %-7s %-7s %-9s %-8s %s\n' rate ok failed retrans cpu_s "µs/call" "log_µs/call"
for rate in $RATES; do
    LOGPID=
    if [ -n "$STATELOG" ]; then
        "$BGF" statelog --listen 127.201.0.7:7400 --data "$DIR/log-$rate" --ca "$DIR/pki/ca.pem" \
            --cert "$DIR/pki/server-statelog.pem" --key "$DIR/pki/server-statelog.key" \
            --log-level warn 2>"$DIR/statelog-$rate.log" & LOGPID=$!
        for _ in $(seq 50); do [ -n "$(ss -Hltn 'sport = :7400' src 127.201.0.7)" ] && break; sleep 0.1; done
    fi
    "$BGF" active --config "$DIR/bgf.toml" 2>"$DIR/bgf-$rate.log" & BGFPID=$!
    for _ in $(seq 50); do [ -n "$(ss -Hlun 'sport = :5060' src 127.201.0.1)" ] && break; sleep 0.1; done
    (cd "$DIR" && exec sipp -sn uas -i 127.201.0.3 -p 5060 -buff_size "$SIPP_BUF" -nostdin >/dev/null 2>&1) & UASPID=$!
    sleep 0.3
    c0=$(cpu "$BGFPID"); l0=0; [ -n "$LOGPID" ] && l0=$(cpu "$LOGPID")
    PERFPID=
    if [ -n "${PERF:-}" ]; then
        perf record -q -e cpu-clock -F "${PERF_FREQ:-4000}" --call-graph "${PERF_CG:-fp}" -p "$BGFPID" -o "$DIR/perf-$rate.data" >/dev/null 2>&1 & PERFPID=$!
    fi
    (cd "$DIR" && timeout 180 sipp -sn uac 127.201.0.1:5060 -i 127.201.0.4 -p 5061 \
        -r "$rate" -m "$CALLS" -l $((rate * 2 + 100)) -d 500 -buff_size "$SIPP_BUF" -nostdin \
        -trace_stat -stf "stat-$rate.csv" >/dev/null 2>&1) || true
    c1=$(cpu "$BGFPID"); l1=0; [ -n "$LOGPID" ] && l1=$(cpu "$LOGPID")
    if [ -n "$PERFPID" ]; then kill -INT "$PERFPID"; wait "$PERFPID" 2>/dev/null || true; fi
    kill "$UASPID" "$BGFPID"; wait "$BGFPID" 2>/dev/null || true
    if [ -n "$LOGPID" ]; then kill "$LOGPID"; wait "$LOGPID" 2>/dev/null || true; fi
    stat="$DIR/stat-$rate.csv"
    field() { paste -d= <(head -1 "$stat" | tr ';' '\n') <(tail -1 "$stat" | tr ';' '\n') | grep "^$1=" | cut -d= -f2; }
    ok=$(field 'SuccessfulCall(C)'); failed=$(field 'FailedCall(C)'); re=$(field 'Retransmissions(C)')
    awk -v r="$rate" -v ok="$ok" -v f="$failed" -v re="$re" -v c=$((c1 - c0)) -v l=$((l1 - l0)) -v t="$TICK" \
        'BEGIN { printf "%-6s %-7s %-7s %-7s %-9.2f %-8.0f %.0f\n", r, ok, f, re, c/t, (ok>0 ? c/t*1e6/ok : 0), (ok>0 ? l/t*1e6/ok : 0) }'
done
echo "logs and SIPp stats in $DIR"
