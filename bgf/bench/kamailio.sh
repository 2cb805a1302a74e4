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
#   BESIDE=bgf bgf/bench/kamailio.sh            # per rate, run bgf/bench/sip_load.sh
#       (release bgf, no state log) first and then kamailio, back to back, so
#       both figures see the same machine load
#   CHILDREN=8 bgf/bench/kamailio.sh            # kamailio UDP workers (default 4)
#
# Needs: kamailio 5.6 (apt-get install kamailio), /usr/bin/rtpengine, sipp.
# Bounded: every SIPp run is killed after 180 s; everything listens on
# 127.202.0.0/24 only (checked after start-up: the script stops if kamailio or
# rtpengine holds a socket on any other address); processes are killed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${RATES:-"1000 2000 3000"}
CALLS=${CALLS:-6000}
CHILDREN=${CHILDREN:-4}
BESIDE=${BESIDE:-}
CFG=$PWD/bgf/bench/kamailio/kamailio.cfg
PROXY=127.202.0.1   # kamailio
UAS=127.202.0.3     # SIPp uas (core side)
UAC=127.202.0.4     # SIPp uac (access side)
RTPE=127.202.0.10   # rtpengine: media interface and ng control socket
for bin in kamailio /usr/bin/rtpengine sipp; do
    command -v "$bin" >/dev/null || { echo "$bin not found (apt-get install -y kamailio rtpengine sip-tester)" >&2; exit 2; }
done
DIR=$(mktemp -d /tmp/bgf-kamailio.XXXX)
TICK=$(getconf CLK_TCK)
KAMPID= RTPEPID= UASPID= KIDS=
cleanup() {
    # Only the processes this script started: kamailio's main process (it
    # stops its workers), the workers recorded at start-up in case it did not,
    # rtpengine and the SIPp uas.
    for p in $KAMPID $RTPEPID $UASPID; do kill "$p" 2>/dev/null || true; done
    for p in $KAMPID $RTPEPID $UASPID; do wait "$p" 2>/dev/null || true; done
    for p in $KIDS; do kill -9 "$p" 2>/dev/null || true; done
    KAMPID= RTPEPID= UASPID= KIDS=
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
field() { # name csv: last value of a SIPp -trace_stat column
    paste -d= <(head -1 "$2" | tr ';' '\n') <(tail -1 "$2" | tr ';' '\n') | grep "^$1=" | cut -d= -f2
}

run_kamailio() { # rate
    local rate=$1
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
    (cd "$DIR" && exec sipp -sn uas -i "$UAS" -p 5060 -nostdin >/dev/null 2>&1) & UASPID=$!
    sleep 0.3
    local k0 r0 k1 r1
    k0=$(cpus "$KAMPID" $KIDS); r0=$(cpu "$RTPEPID")
    (cd "$DIR" && timeout 180 sipp -sn uac "$PROXY:5060" -i "$UAC" -p 5061 \
        -r "$rate" -m "$CALLS" -l $((rate * 2 + 100)) -d 500 -nostdin \
        -trace_stat -stf "stat-$rate.csv" >/dev/null 2>&1) || true
    k1=$(cpus "$KAMPID" $KIDS); r1=$(cpu "$RTPEPID")
    cleanup
    local stat="$DIR/stat-$rate.csv" ok failed re
    ok=$(field 'SuccessfulCall(C)' "$stat"); failed=$(field 'FailedCall(C)' "$stat")
    re=$(field 'Retransmissions(C)' "$stat")
    awk -v r="$rate" -v ok="$ok" -v f="$failed" -v re="$re" -v k=$((k1 - k0)) -v e=$((r1 - r0)) -v t="$TICK" \
        'BEGIN { us = ok > 0 ? 1e6 / t / ok : 0
                 printf "%-10s %-6s %-7s %-7s %-7s %-9.2f %-9.0f %-9.0f %.0f\n", "kamailio", r, ok, f, re,
                        (k + e) / t, k * us, e * us, (k + e) * us }'
}

printf '%-10s %-6s %-7s %-7s %-7s %-9s %-9s %-9s %s\n' proxy rate ok failed retrans cpu_s \
    "kam_µs" "rtpe_µs" "µs/call"
for rate in $RATES; do
    if [ "$BESIDE" = bgf ]; then
        # sip_load.sh prints a header, one row and where its logs are.
        RATES=$rate CALLS=$CALLS bgf/bench/sip_load.sh | sed -n 2p | awk '{printf "%-10s %-6s %-7s %-7s %-7s %-9s %-9s %-9s %s\n", "bgf", $1, $2, $3, $4, $5, "-", "-", $6}'
    fi
    run_kamailio "$rate"
done
echo "logs and SIPp stats in $DIR"
