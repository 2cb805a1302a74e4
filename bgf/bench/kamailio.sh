#!/usr/bin/env bash
# Reference SIP benchmark: the same SIPp load as bgf/bench/sip_load.sh (stock
# uac -> proxy -> stock uas, CALLS calls per rate, 500 ms hold) against
# Kamailio 5.6 (bgf/bench/kamailio/kamailio.cfg: stateful, record-routing,
# media anchored through rtpengine's ng offer/answer/delete) + rtpengine
# (userspace only, --table=-1), on loopback. Reports per rate: calls
# ok/failed, retransmissions, and CPU per successful call of kamailio (all its
# processes) and rtpengine, from /proc utime+stime over the SIPp run.
#
#   bgf/bench/kamailio.sh                       # RATES="1000 2000 3000" CALLS=6000
#   BESIDE=bgf bgf/bench/kamailio.sh            # per rate, bgf first (release
#       `bgf active`, no state log, the same config as sip_load.sh's baseline
#       but on 127.232.0.0/24 so that it does not collide with a sip_load.sh
#       run of someone else) and then kamailio, back to back, so both figures
#       see the same machine load. BGF_BIN=path runs a prebuilt bgf instead
#       of building this tree.
#   CHILDREN=8 bgf/bench/kamailio.sh            # kamailio UDP workers (default 4)
#   SIPP_TRACE=1 ...                            # SIPp uac's -trace_err (why calls failed)
#
# Needs: kamailio 5.6 (apt-get install kamailio), /usr/bin/rtpengine, sipp.
# Bounded: every SIPp run is killed after 180 s; everything listens on
# 127.231.0.0/24 (kamailio) and 127.232.0.0/24 (bgf) only (checked after
# start-up: the script stops if kamailio, rtpengine or bgf holds a socket on
# any other address, or if another run already holds one of these addresses);
# the processes it started are killed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${RATES:-"1000 2000 3000"}
CALLS=${CALLS:-6000}
CHILDREN=${CHILDREN:-4}
BESIDE=${BESIDE:-}
CFG=$PWD/bgf/bench/kamailio/kamailio.cfg
PROXY=127.231.0.1   # kamailio
UAS=127.231.0.3     # SIPp uas (core side)
UAC=127.231.0.4     # SIPp uac (access side)
RTPE=127.231.0.10   # rtpengine: media interface and ng control socket
for bin in kamailio /usr/bin/rtpengine sipp; do
    command -v "$bin" >/dev/null || { echo "$bin not found (apt-get install -y kamailio rtpengine sip-tester)" >&2; exit 2; }
done
if [ "$BESIDE" = bgf ] && [ -z "${BGF_BIN:-}" ]; then cargo build --release -p bgf >/dev/null; fi
BGF=${BGF_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/bgf}
DIR=$(mktemp -d /tmp/bgf-kamailio.XXXX)
TICK=$(getconf CLK_TCK)
KAMPID= RTPEPID= UASPID= KIDS= BGFPID=
cleanup() {
    # Only the processes this script started: kamailio's main process (it
    # stops its workers), the workers recorded at start-up in case it did not,
    # rtpengine, bgf and the SIPp uas.
    for p in $KAMPID $RTPEPID $UASPID $BGFPID; do kill "$p" 2>/dev/null || true; done
    for p in $KAMPID $RTPEPID $UASPID $BGFPID; do wait "$p" 2>/dev/null || true; done
    for p in $KIDS; do kill -9 "$p" 2>/dev/null || true; done
    KAMPID= RTPEPID= UASPID= KIDS= BGFPID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
cpus() { local s=0 p; for p in "$@"; do s=$((s + $(cpu "$p"))); done; echo "$s"; }
wait_udp() { # addr port what
    for _ in $(seq 100); do [ -n "$(ss -Hlun "sport = :$2" src "$1")" ] && return 0; sleep 0.1; done
    echo "$3 did not open $1:$2; see $DIR" >&2; exit 1
}
loopback_only() { # pid...: every socket of these processes is on 127.0.0.0/8
    local p bad
    for p in "$@"; do
        bad=$(ss -Hanup 2>/dev/null | grep "pid=$p," | awk '{print $4}' | grep -vE '^(127\.|\[::1\]|\[::ffff:127\.)' || true)
        [ -z "$bad" ] || { echo "pid $p has a socket outside loopback: $bad" >&2; exit 1; }
    done
}
wait_free() { # addr port what: nobody else (another helper's run) holds it
    [ -z "$(ss -Hlun "sport = :$2" src "$1")" ] && return 0
    echo "$1:$2 is already in use ($3 cannot start): is another benchmark running?" >&2; exit 1
}
field() { # name csv: last value of a SIPp -trace_stat column
    paste -d= <(head -1 "$2" | tr ';' '\n') <(tail -1 "$2" | tr ';' '\n') | grep "^$1=" | cut -d= -f2
}

run_kamailio() { # rate
    local rate=$1
    wait_free "$PROXY" 5060 kamailio
    /usr/bin/rtpengine --config-file=none --table=-1 --interface="$RTPE" \
        --listen-ng="$RTPE:2223" --port-min=20000 --port-max=65000 --delete-delay=0 \
        --foreground --log-stderr --log-level=4 >"$DIR/rtpengine-$rate.log" 2>&1 & RTPEPID=$!
    wait_udp "$RTPE" 2223 rtpengine
    kamailio -DD -E -f "$CFG" -Y "$DIR" -m 512 -A "CHILDREN=$CHILDREN" \
        -A "NEXT_HOP=\"sip:$UAS:5060\"" -A "RTPENGINE_SOCK=\"udp:$RTPE:2223\"" \
        -A "LISTEN=udp:$PROXY:5060" >"$DIR/kamailio-$rate.log" 2>&1 & KAMPID=$!
    wait_udp "$PROXY" 5060 kamailio
    sleep 0.5   # let every worker come up before recording them
    KIDS=$(pgrep -P "$KAMPID" | tr '\n' ' ')
    loopback_only "$RTPEPID" "$KAMPID" $KIDS
    local k0 r0 k1 r1
    start_uas "$UAS"
    k0=$(cpus "$KAMPID" $KIDS); r0=$(cpu "$RTPEPID")
    run_uac kamailio "$PROXY" "$UAC" "$rate"
    k1=$(cpus "$KAMPID" $KIDS); r1=$(cpu "$RTPEPID")
    cleanup
    report kamailio "$rate" $((k1 - k0)) $((r1 - r0))
}

run_bgf() { # rate: sip_load.sh's baseline (no state log), on 127.232.0.0/24
    local rate=$1 c0 c1
    wait_free 127.232.0.1 5060 bgf
    cat > "$DIR/bgf.toml" <<TOML
[instance]
name = "load1"
secret = "load-Pw6Tz2Kq8Xm4Vn9Rc3Lb7Hj5Yf1Gd0sA"
[access]
sip = "127.232.0.1:5060"
rtp_ports = "20000-29999"
allow_loopback_media = true
require_registration = false
[core]
sip = "127.232.0.2:5060"
rtp_ports = "30000-39999"
next_hop = "127.232.0.3:5060"
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
workers = 1
[log]
format = "json"
level = "warn"
TOML
    "$BGF" active --config "$DIR/bgf.toml" 2>"$DIR/bgf-$rate.log" & BGFPID=$!
    wait_udp 127.232.0.1 5060 bgf
    loopback_only "$BGFPID"
    start_uas 127.232.0.3
    c0=$(cpu "$BGFPID")
    run_uac bgf 127.232.0.1 127.232.0.4 "$rate"
    c1=$(cpu "$BGFPID")
    cleanup
    report bgf "$rate" $((c1 - c0)) 0
}

start_uas() { # addr
    (cd "$DIR" && exec sipp -sn uas -i "$1" -p 5060 -nostdin >/dev/null 2>&1) & UASPID=$!
    wait_udp "$1" 5060 "SIPp uas"
}

run_uac() { # name proxy-addr uac-addr rate
    (cd "$DIR" && timeout 180 sipp -sn uac "$2:5060" -i "$3" -p 5061 \
        -r "$4" -m "$CALLS" -l $(($4 * 2 + 100)) -d 500 -nostdin \
        -trace_stat -stf "stat-$1-$4.csv" ${SIPP_TRACE:+-trace_err} >/dev/null 2>&1) || true
}

report() { # name rate proxy-ticks rtpengine-ticks
    local stat="$DIR/stat-$1-$2.csv" ok failed re
    ok=$(field 'SuccessfulCall(C)' "$stat"); failed=$(field 'FailedCall(C)' "$stat")
    re=$(field 'Retransmissions(C)' "$stat")
    awk -v n="$1" -v r="$2" -v ok="$ok" -v f="$failed" -v re="$re" -v k="$3" -v e="$4" -v t="$TICK" \
        'BEGIN { us = ok > 0 ? 1e6 / t / ok : 0
                 printf "%-10s %-6s %-7s %-7s %-7s %-9.2f %-9.0f %-9s %.0f\n", n, r, ok, f, re,
                        (k + e) / t, k * us, (n == "bgf" ? "-" : sprintf("%.0f", e * us)), (k + e) * us }'
}

# proxy_µs: bgf's or kamailio's (all processes) CPU per successful call;
# rtpe_µs: rtpengine's; µs/call: both.
printf '%-10s %-6s %-7s %-7s %-7s %-9s %-9s %-9s %s\n' proxy rate ok failed retrans cpu_s \
    "proxy_µs" "rtpe_µs" "µs/call"
for rate in $RATES; do
    if [ "$BESIDE" = bgf ]; then run_bgf "$rate"; fi
    run_kamailio "$rate"
done
echo "logs and SIPp stats in $DIR"
