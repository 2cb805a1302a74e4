#!/usr/bin/env bash
# Kernel vs DPDK media relay throughput on the same virtual setup (root).
#
#   media-plane/bench/dpdk_vs_kernel.sh [SECONDS]      (default 10)
#   GEN=dpdk media-plane/bench/dpdk_vs_kernel.sh 10    (DPDK generator)
#
# Two namespaces: dkb-gen (UE 198.18.0.200 on g0, core peer 198.18.1.200 on
# g1) and dkb-rel (the relay: r0 access, r1 core), veth pairs g0-r0, g1-r1,
# TX checksum offload off. One pinhole UE:41000 -> 198.18.0.41:20000 |
# 198.18.1.41:30000 -> peer:40000. The generator (sendmmsg, 64/call, RTP
# 172 B) and its sink run on CPU 0, the relay on CPU 1:
#   kernel: media addresses on r0/r1, one epoll worker (recvmmsg/sendmmsg);
#   dpdk:   r0/r1 without addresses, net_af_packet (then net_af_xdp) ports,
#           --no-huge --no-pci, lcore 1, busy poll.
# GEN=socket (default): the generator uses sendmmsg (~250-300 kpps here, the
# limit of these runs); GEN=dpdk: it sends from its own DPDK process
# (net_af_xdp on g0, bursts of 64 pre-built frames, lcore 0), and the
# relay's output lands on an unbound port (ICMP unreachable is rate-limited).
# Prints each run's RESULT/GEN lines and a summary. Needs the example built:
#   cargo build --release -p media-plane --features dpdk --example dpdk_bench
# Noisy on a shared 2-vCPU VM: run it when nothing else builds, compare the
# two backends back to back, repeat.
set -euo pipefail
SECS=${1:-10}
TARGET=${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}
BIN=${DPDK_BENCH:-$TARGET/release/examples/dpdk_bench}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p media-plane --features dpdk --example dpdk_bench" >&2; exit 2; }
G=dkb-gen R=dkb-rel

cleanup() { ip netns del $G 2>/dev/null || true; ip netns del $R 2>/dev/null || true; }
trap cleanup EXIT

setup() { # $1 = kernel|dpdk
    cleanup
    ip netns add $G; ip netns add $R
    for n in $G $R; do ip -n $n link set lo up; done
    ip -n $G link add g0 type veth peer name r0 netns $R
    ip -n $G link add g1 type veth peer name r1 netns $R
    for i in g0 g1; do ip -n $G link set $i up; ip netns exec $G ethtool -K $i tx off >/dev/null; done
    for i in r0 r1; do ip -n $R link set $i up; ip netns exec $R ethtool -K $i tx off >/dev/null; done
    ip -n $G addr add 198.18.0.200/24 dev g0
    ip -n $G addr add 198.18.1.200/24 dev g1
    if [ "$1" = kernel ]; then
        ip -n $R addr add 198.18.0.41/24 dev r0
        ip -n $R addr add 198.18.1.41/24 dev r1
    fi
}

run() { # $1 = label, rest = relay args
    local label=$1; shift
    ip netns exec $R taskset -c 1 "$BIN" relay "$@" > /tmp/dkb-relay.out 2>/tmp/dkb-relay.err &
    local pid=$!
    for _ in $(seq 100); do grep -q READY /tmp/dkb-relay.out 2>/dev/null && break; sleep 0.1; done
    grep -q READY /tmp/dkb-relay.out || { cat /tmp/dkb-relay.err; kill $pid; return 1; }
    if [ "${GEN:-socket}" = dpdk ]; then
        local mac; mac=$(ip -n $R -br link show r0 | awk '{print $3}')
        ip netns exec $G taskset -c 0 "$BIN" gen-dpdk $((SECS - 2)) \
            "net_af_xdp9,iface=g0,start_queue=0,queue_count=1" "$mac" 0 2>/dev/null | grep GEN | tee /tmp/dkb-gen.out
    else
        ip netns exec $G taskset -c 0 "$BIN" gen $((SECS - 2)) | tee /tmp/dkb-gen.out
    fi
    wait $pid || true
    local r; r=$(grep RESULT /tmp/dkb-relay.out)
    echo "$label: $r"
    echo "$label: $r | $(cat /tmp/dkb-gen.out)" >> /tmp/dkb-summary.txt
}

: > /tmp/dkb-summary.txt
setup kernel; run kernel kernel "$SECS"
setup dpdk;   run dpdk-af_packet dpdk "$SECS" net_af_packet0,iface=r0 net_af_packet1,iface=r1 1
setup dpdk;   run dpdk-af_xdp dpdk "$SECS" "net_af_xdp0,iface=r0,start_queue=0,queue_count=1" "net_af_xdp1,iface=r1,start_queue=0,queue_count=1" 1
echo; echo "=== summary (generator ${GEN:-socket}, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)) ==="
cat /tmp/dkb-summary.txt
