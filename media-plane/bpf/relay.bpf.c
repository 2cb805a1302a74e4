// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// bgf's in-kernel media relay: an XDP program on the access and core
// interfaces. It owns the fast path only — what the pinhole map says, for
// packets whose source is already the accepted remote:
//
//   frame → Ethernet (ours?) → IPv4/IPv6 UDP → PINHOLES[(dst addr, dst port)]
//   → source check → RTP/RTCP header check → next hop (bpf_fib_lookup)
//   → NAT rewrite with checksum fix-up (same family in place; IPv6↔IPv4 by
//   resizing the header) → XDP_TX / bpf_redirect.
//
// What it cannot decide goes up to user space through the UPCALLS ring
// buffer (and is dropped here): a packet from a pinhole's latch IP or from
// its negotiated remote while another remote is latched (the latch is the
// relay's decision, `Relay::process` in media-plane/src/table.rs), a next
// hop whose MAC the kernel has not resolved yet, and the rare shapes this
// program does not translate (IPv4 options or a zero UDP checksum towards
// IPv6). User space decides, sends that packet itself and rewrites the map.
//
// Packets to a media address inside a port range of an active plane with no
// pinhole are dropped and counted (unknown_port); everything else (SIP, ARP,
// ND, ICMP, other hosts' frames) is passed to the kernel untouched.
//
// The decision rules mirror media-plane/src/forward.rs (`decide`,
// `classify`) rule for rule; tests/xdp_* run both on the same packets
// (BPF_PROG_TEST_RUN) and compare. Layouts of the maps' keys and values are
// mirrored by media-plane/src/xdp/maps.rs (repr(C)).
//
// Dual licensed: the kernel only lets GPL-compatible programs call
// bpf_fib_lookup, so the license section says GPL.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

// Drop reasons: the order of media_plane::forward::Reason::ALL.
#define R_UNKNOWN_PORT 0
#define R_WRONG_SOURCE 1
#define R_NOT_RTP 2
#define R_TOO_SHORT 3
#define R_NO_DESTINATION 4
#define R_SEND_ERROR 5
#define R_COUNT 6

// Why a packet went up to user space.
#define UP_LATCH 1
#define UP_NO_NEIGH 2
#define UP_SHAPE 3

#define UPCALL_MAX 2048
#define MAX_RANGES 32
#define MAX_PLANES 64

// An address and UDP port; IPv4 as ::ffff:a.b.c.d. family 0 = none.
struct ap {
	__u8 addr[16];
	__u16 port; // network order
	__u8 family; // 4 or 6
	__u8 pad;
};

#define FL_CORE 1 // the port is on the core leg (else access)
#define FL_RTCP 2 // the RTCP port (else RTP, which also carries muxed RTCP)
#define FL_LATCH 4 // this (leg, kind) may still latch from latch_ip

// One local port of a pinhole.
struct leg_port {
	struct ap expect; // the accepted source (remote of this kind)
	struct ap negotiated; // the SDP remote: always accepted, takes the remote back
	struct ap from; // source of the forwarded packet (the other leg's local port)
	struct ap to; // its destination; family 0 = no usable destination
	__u8 latch_ip[16]; // mapped form; valid with FL_LATCH
	__u32 slot; // index into STATS / ACTIVITY
	__u32 plane; // index into PLANES
	__u32 flags;
};

struct ph_stats {
	__u64 pkts[2]; // accepted, by arrival leg (0 access, 1 core)
	__u64 bytes[2]; // their UDP payload bytes
	__u64 drops[2]; // dropped, by arrival leg
};

struct totals {
	__u64 fwd_pkts;
	__u64 fwd_bytes;
	__u64 drops[R_COUNT];
	__u64 upcalls;
	__u64 upcalls_lost; // ring buffer full: dropped
	__u64 tx;
	__u64 redirect;
};

struct range {
	__u8 addr[16];
	__u16 lo; // host order
	__u16 hi;
	__u32 plane; // 0 = unused entry; else plane index + 1
};

struct iface {
	__u8 mac[6];
	__u8 pad[2];
};

struct upcall {
	__u32 ifindex;
	__u16 len; // bytes of data: the IP packet
	__u8 why;
	__u8 pad;
	__u8 data[UPCALL_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ap);
	__type(value, struct leg_port);
	__uint(max_entries, 4096); // set by the loader
} PINHOLES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct ph_stats);
	__uint(max_entries, 1024); // set by the loader
} STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64); // CLOCK_MONOTONIC ns of the last accepted packet
	__uint(max_entries, 1024); // set by the loader
} ACTIVITY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct totals);
	__uint(max_entries, MAX_PLANES); // by plane
} TOTALS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct range);
	__uint(max_entries, MAX_RANGES);
} RANGES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32); // 1 = the plane serves (an active, or a standby after takeover)
	__uint(max_entries, MAX_PLANES);
} PLANES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); // ifindex
	__type(value, struct iface);
	__uint(max_entries, 64);
} IFACES SEC(".maps");

// Scratch for summing a payload (a zero IPv4 UDP checksum going to IPv6,
// where the checksum is mandatory): the stack is too small for it.
struct scratch {
	__u8 b[512];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct scratch);
	__uint(max_entries, 1);
} SCRATCH SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23); // set by the loader
} UPCALLS SEC(".maps");

static __always_inline struct totals *totals(__u32 plane)
{
	return bpf_map_lookup_elem(&TOTALS, &plane);
}

static __always_inline int drop(__u32 plane, struct ph_stats *st, __u32 dir, int reason)
{
	struct totals *t = totals(plane);
	if (t && (unsigned)reason < R_COUNT)
		t->drops[reason]++;
	if (st)
		st->drops[dir & 1]++;
	return XDP_DROP;
}

static __always_inline int eq16(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline int ap_eq(const struct ap *a, const struct ap *b)
{
	return a->family == b->family && a->port == b->port && eq16(a->addr, b->addr);
}

// RTCP: version 2, packet type 192..=223, the first packet's length fits.
// media-plane/src/forward.rs check_rtcp.
static __always_inline int check_rtcp(const __u8 *p, const void *end, __u32 len)
{
	if (len < 8)
		return R_TOO_SHORT;
	if ((void *)(p + 4) > end)
		return R_TOO_SHORT;
	if ((p[0] >> 6) != 2 || p[1] < 192 || p[1] > 223)
		return R_NOT_RTP;
	__u32 words = ((__u32)p[2] << 8) | p[3];
	if ((words + 1) * 4 > len)
		return R_NOT_RTP;
	return -1;
}

// forward.rs classify: -1 = valid, else the drop reason. `p` points at the
// UDP payload of `len` bytes (all in the packet).
static __always_inline int classify(const __u8 *p, const void *end, __u32 len, int rtcp_port)
{
	// Larger than the kernel backend's receive buffer: not media there
	// either (and it keeps the offsets below provably in the packet).
	if (len > 4096)
		return R_NOT_RTP;
	if (rtcp_port)
		return check_rtcp(p, end, len);
	if (len >= 2) {
		if ((void *)(p + 2) > end)
			return R_TOO_SHORT;
		if (p[1] >= 192 && p[1] <= 223)
			return check_rtcp(p, end, len);
	}
	if (len < 12)
		return R_TOO_SHORT;
	if ((void *)(p + 12) > end)
		return R_TOO_SHORT;
	if ((p[0] >> 6) != 2)
		return R_NOT_RTP;
	__u32 csrc_end = 12 + 4 * (__u32)(p[0] & 0x0f);
	__u32 off = csrc_end;
	if (p[0] & 0x10) {
		__u32 ext_start = csrc_end + 4;
		if (ext_start > len)
			return R_NOT_RTP;
		const __u8 *e = p + (csrc_end & 0x7f);
		if ((void *)(e + 4) > end)
			return R_NOT_RTP;
		__u32 ext_len = 4 * (((__u32)e[2] << 8) | e[3]);
		off = ext_start + ext_len;
		if (off > len)
			return R_NOT_RTP;
	}
	if (off > len)
		return R_NOT_RTP;
	if (p[0] & 0x20) {
		if (len - off == 0)
			return R_NOT_RTP;
		const __u8 *last = p + ((len - 1) & 0xfff);
		if ((void *)(last + 1) > end)
			return R_NOT_RTP;
		__u32 pad = *last;
		if (pad == 0 || off + pad > len)
			return R_NOT_RTP;
	}
	return -1;
}

static __always_inline __u16 fold(__u32 acc)
{
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return (__u16)acc;
}

// One's-complement sum helpers on raw (network-order) 16-bit words: the sum
// is byte-order independent as long as every word is taken the same way.
static __always_inline __u32 sum16(__u32 acc, const __u8 *b, int words)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (i < words)
			acc += ((const __u16 *)b)[i];
	}
	return acc;
}

static __always_inline __u32 sub16(__u32 acc, const __u8 *b, int words)
{
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (i < words)
			acc += (__u16)~((const __u16 *)b)[i];
	}
	return acc;
}

// RFC 1624: checksum `hc` after the bytes summed into `delta` changed.
static __always_inline __u16 csum_update(__u16 hc, __u32 delta)
{
	return ~fold((__u32)(__u16)~hc + delta);
}

static __always_inline __u16 ip4_csum(const __u8 *h)
{
	__u32 acc = sum16(0, h, 8);
	acc = sum16(acc, h + 16, 2);
	return ~fold(acc);
}

// One's-complement sum (folded to 16 bits, raw byte order) of the `len`
// bytes at packet offset `off`, odd length padded with a zero byte; -1 if
// they cannot be read. In 512-byte steps through SCRATCH (bpf_csum_diff
// sums at most 512 bytes, a multiple of 4, per call).
static __always_inline int payload_sum(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&SCRATCH, &zero);
	if (!s)
		return -1;
	__u64 acc = 0;
	for (int i = 0; i < 4; i++) {
		if (len == 0)
			break;
		__u64 n = len > 512 ? 512 : len;
		asm volatile("%[n] &= 0x3ff" : [n] "+r"(n));
		if (n < 1 || n > 512)
			return -1;
		// Zero the word the payload ends in: the pad of an odd length.
		__u64 w = (n - 1) & 0x1fc;
		*(__u32 *)(s->b + w) = 0;
		if (bpf_xdp_load_bytes(ctx, off, s->b, n))
			return -1;
		__u64 sz = (n + 3) & 0x3fc;
		if (sz < 4 || sz > 512)
			return -1;
		__s64 c = bpf_csum_diff(0, 0, (__be32 *)s->b, sz, 0);
		if (c < 0)
			return -1;
		acc += (__u32)c;
		off += n;
		len -= n;
	}
	if (len)
		return -1;
	acc = (acc & 0xffffffff) + (acc >> 32);
	acc = (acc & 0xffffffff) + (acc >> 32);
	return fold((__u32)acc);
}

#define ETH_HLEN_ 14
#define IP4_HLEN 20
#define IP6_HLEN 40
#define UDP_HLEN 8
#define TTL 64

static __always_inline int upcall(struct xdp_md *ctx, __u32 plane, __u32 l3, __u8 why)
{
	struct totals *t = totals(plane);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 n = (__u32)(end - data);
	if (n <= l3)
		return XDP_DROP;
	n -= l3;
	if (n > UPCALL_MAX) {
		if (t)
			t->drops[R_NOT_RTP]++;
		return XDP_DROP;
	}
	struct upcall *u = bpf_ringbuf_reserve(&UPCALLS, sizeof(*u), 0);
	if (!u) {
		if (t)
			t->upcalls_lost++;
		return XDP_DROP;
	}
	// The verifier wants the length bounded in the register it sees.
	__u64 len = n;
	asm volatile("%[l] &= 0xfff" : [l] "+r"(len));
	if (len < 1 || len > UPCALL_MAX || bpf_xdp_load_bytes(ctx, l3, u->data, len) != 0) {
		bpf_ringbuf_discard(u, 0);
		return XDP_DROP;
	}
	u->ifindex = ctx->ingress_ifindex;
	u->len = len;
	u->why = why;
	u->pad = 0;
	bpf_ringbuf_submit(u, 0);
	if (t)
		t->upcalls++;
	return XDP_DROP;
}

// The plane (index + 1) serving `a` (mapped form) with host-order `port`
// inside its range, or 0.
static __always_inline __u32 in_media_range(const __u8 *a, __u16 port)
{
	for (__u32 i = 0; i < MAX_RANGES; i++) {
		__u32 k = i;
		struct range *r = bpf_map_lookup_elem(&RANGES, &k);
		if (!r || r->plane == 0)
			break;
		if (port < r->lo || port > r->hi || !eq16(r->addr, a))
			continue;
		__u32 pl = r->plane - 1;
		__u32 *on = bpf_map_lookup_elem(&PLANES, &pl);
		if (on && *on)
			return r->plane;
	}
	return 0;
}

static __always_inline void mapped4(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

SEC("xdp")
int bgf_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *eth = data;
	if ((void *)(eth + ETH_HLEN_) > end)
		return XDP_PASS;
	__u32 ifx = ctx->ingress_ifindex;
	struct iface *ifc = bpf_map_lookup_elem(&IFACES, &ifx);
	if (!ifc)
		return XDP_PASS;
	// Frames for other hosts (a bridge flooding an unknown MAC) are not ours.
	if (*(__u32 *)eth != *(__u32 *)ifc->mac || *(__u16 *)(eth + 4) != *(__u16 *)(ifc->mac + 4))
		return XDP_PASS;
	__u16 proto = *(__u16 *)(eth + 12);
	__u32 l3 = ETH_HLEN_, l4;
	struct ap src = {}, dst = {};
	int v4;
	__u32 ihl = 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = data + l3;
		if ((void *)(ip + IP4_HLEN) > end)
			return XDP_PASS;
		if ((ip[0] >> 4) != 4 || ip[9] != IPPROTO_UDP)
			return XDP_PASS;
		ihl = (ip[0] & 0x0f) * 4;
		if (ihl < IP4_HLEN)
			return XDP_PASS;
		// A fragment is not a whole datagram: the kernel reassembles (and,
		// with no socket on the port, drops) it.
		if (*(__u16 *)(ip + 6) & bpf_htons(0x3fff))
			return XDP_PASS;
		__u32 total = bpf_ntohs(*(__u16 *)(ip + 2));
		if (total < ihl + UDP_HLEN || (void *)(ip + total) > end)
			return XDP_PASS;
		mapped4(src.addr, *(__u32 *)(ip + 12));
		mapped4(dst.addr, *(__u32 *)(ip + 16));
		src.family = dst.family = 4;
		l4 = l3 + ihl;
		v4 = 1;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip = data + l3;
		if ((void *)(ip + IP6_HLEN) > end)
			return XDP_PASS;
		if ((ip[0] >> 4) != 6 || ip[6] != IPPROTO_UDP)
			return XDP_PASS;
		__u32 plen = bpf_ntohs(*(__u16 *)(ip + 4));
		if (plen < UDP_HLEN || (void *)(ip + IP6_HLEN + plen) > end)
			return XDP_PASS;
		__builtin_memcpy(src.addr, ip + 8, 16);
		__builtin_memcpy(dst.addr, ip + 24, 16);
		src.family = dst.family = 6;
		l4 = l3 + IP6_HLEN;
		v4 = 0;
	} else {
		return XDP_PASS;
	}
	__u8 *udp = data + (l4 & 0xff);
	if ((void *)(udp + UDP_HLEN) > end)
		return XDP_PASS;
	src.port = *(__u16 *)(udp + 0);
	dst.port = *(__u16 *)(udp + 2);
	__u32 ulen = bpf_ntohs(*(__u16 *)(udp + 4));
	if (ulen < UDP_HLEN || (void *)(udp + (ulen & 0xffff)) > end)
		return XDP_PASS;

	struct leg_port *v = bpf_map_lookup_elem(&PINHOLES, &dst);
	if (!v) {
		__u32 owner = in_media_range(dst.addr, bpf_ntohs(dst.port));
		if (owner)
			return drop(owner - 1, 0, 0, R_UNKNOWN_PORT);
		return XDP_PASS;
	}
	__u32 pl = v->plane;
	__u32 *on = bpf_map_lookup_elem(&PLANES, &pl);
	if (!on || !*on)
		return XDP_PASS;
	__u32 dir = (v->flags & FL_CORE) ? 1 : 0;
	__u32 slot = v->slot;
	struct ph_stats *st = bpf_map_lookup_elem(&STATS, &slot);

	// 1. Source.
	int up = 0;
	if (!ap_eq(&v->expect, &src)) {
		if (ap_eq(&v->negotiated, &src))
			up = 1;
		else if ((v->flags & FL_LATCH) && eq16(v->latch_ip, src.addr))
			up = 1;
		else
			return drop(pl, st, dir, R_WRONG_SOURCE);
	}
	// 2. Content.
	__u32 plen = ulen - UDP_HLEN;
	int r = classify(udp + UDP_HLEN, end, plen, v->flags & FL_RTCP);
	if (r >= 0)
		return drop(pl, st, dir, r);
	// 3. Destination (before a latch goes up: forward.rs records a latch
	// only on a packet it forwards).
	if (v->to.family == 0)
		return drop(pl, st, dir, R_NO_DESTINATION);
	if (up)
		return upcall(ctx, pl, l3, UP_LATCH);
	int out4 = v->to.family == 4;
	if (v4 && !out4 && ihl != IP4_HLEN)
		return upcall(ctx, pl, l3, UP_SHAPE);

	// Looked up as if arriving on the loopback interface: the kernel only
	// answers for an interface with forwarding on, and turning forwarding on
	// for the media interfaces would make the host route between access
	// and core. The loader turns it on for `lo` alone.
	struct bpf_fib_lookup fib = {};
	fib.ifindex = 1; // LOOPBACK_IFINDEX
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = v->from.port;
	fib.dport = v->to.port;
	if (out4) {
		fib.family = AF_INET;
		fib.tot_len = IP4_HLEN + ulen;
		__builtin_memcpy(&fib.ipv4_src, v->from.addr + 12, 4);
		__builtin_memcpy(&fib.ipv4_dst, v->to.addr + 12, 4);
	} else {
		fib.family = AF_INET6;
		fib.tot_len = IP6_HLEN + ulen;
		__builtin_memcpy(fib.ipv6_src, v->from.addr, 16);
		__builtin_memcpy(fib.ipv6_dst, v->to.addr, 16);
	}
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return upcall(ctx, pl, l3, UP_NO_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return drop(pl, st, dir, R_SEND_ERROR);

	// Rewrite. Keep what the new headers need before the head may move.
	struct ap from = v->from, to = v->to;
	__u16 old_ck = *(__u16 *)(udp + 6);
	__u32 delta = 0;
	delta = sub16(delta, udp, 2); // old ports
	delta = sum16(delta, (const __u8 *)&from.port, 1);
	delta = sum16(delta, (const __u8 *)&to.port, 1);
	__u8 *ip = data + l3;
	if (v4) {
		if ((void *)(ip + IP4_HLEN) > end)
			return XDP_DROP;
		delta = sub16(delta, ip + 12, 4); // old addresses
	} else {
		if ((void *)(ip + IP6_HLEN) > end)
			return XDP_DROP;
		delta = sub16(delta, ip + 8, 8);
		delta = sub16(delta, ip + 24, 8);
	}
	if (out4) {
		delta = sum16(delta, from.addr + 12, 2);
		delta = sum16(delta, to.addr + 12, 2);
	} else {
		delta = sum16(delta, from.addr, 8);
		delta = sum16(delta, to.addr, 8);
	}
	__u16 new_ck;
	if (v4 && out4 && old_ck == 0) {
		new_ck = 0; // IPv4 "no checksum" stays so
	} else if (v4 && old_ck == 0) {
		// No checksum to update, and IPv6 requires one: sum it all.
		int ps = payload_sum(ctx, l4 + UDP_HLEN, plen);
		if (ps < 0)
			return upcall(ctx, pl, l3, UP_SHAPE);
		__u16 len16 = bpf_htons(ulen), proto16 = bpf_htons(IPPROTO_UDP);
		__u32 acc = (__u32)ps;
		acc = sum16(acc, from.addr, 8);
		acc = sum16(acc, to.addr, 8);
		acc += len16 + proto16 + from.port + to.port + len16;
		new_ck = ~fold(acc);
		if (new_ck == 0)
			new_ck = 0xffff;
	} else {
		new_ck = csum_update(old_ck, delta);
		if (new_ck == 0)
			new_ck = 0xffff;
	}

	if (v4 && out4) {
		__u8 tp[2] = { TTL, ip[9] };
		__u32 hd = 0;
		hd = sub16(hd, ip + 8, 1);
		hd = sub16(hd, ip + 12, 4);
		hd = sum16(hd, tp, 1);
		hd = sum16(hd, from.addr + 12, 2);
		hd = sum16(hd, to.addr + 12, 2);
		__u16 ipck = csum_update(*(__u16 *)(ip + 10), hd);
		ip[8] = TTL;
		__builtin_memcpy(ip + 12, from.addr + 12, 4);
		__builtin_memcpy(ip + 16, to.addr + 12, 4);
		*(__u16 *)(ip + 10) = ipck;
	} else if (!v4 && !out4) {
		ip[7] = TTL;
		__builtin_memcpy(ip + 8, from.addr, 16);
		__builtin_memcpy(ip + 24, to.addr, 16);
	} else if (!v4 && out4) {
		// IPv6 → IPv4: the header shrinks by 20 bytes.
		if (bpf_xdp_adjust_head(ctx, IP6_HLEN - IP4_HLEN))
			return drop(pl, st, dir, R_SEND_ERROR);
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		eth = data;
		ip = data + ETH_HLEN_;
		if ((void *)(ip + IP4_HLEN + UDP_HLEN) > end)
			return XDP_DROP;
		ip[0] = 0x45;
		ip[1] = 0;
		*(__u16 *)(ip + 2) = bpf_htons(IP4_HLEN + ulen);
		*(__u16 *)(ip + 4) = 0;
		*(__u16 *)(ip + 6) = bpf_htons(0x4000); // don't fragment
		ip[8] = TTL;
		ip[9] = IPPROTO_UDP;
		*(__u16 *)(ip + 10) = 0;
		__builtin_memcpy(ip + 12, from.addr + 12, 4);
		__builtin_memcpy(ip + 16, to.addr + 12, 4);
		*(__u16 *)(ip + 10) = ip4_csum(ip);
	} else {
		// IPv4 (no options, checked above) → IPv6: the header grows by 20.
		if (bpf_xdp_adjust_head(ctx, -(int)(IP6_HLEN - IP4_HLEN)))
			return drop(pl, st, dir, R_SEND_ERROR);
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		eth = data;
		ip = data + ETH_HLEN_;
		if ((void *)(ip + IP6_HLEN + UDP_HLEN) > end)
			return XDP_DROP;
		*(__u32 *)ip = bpf_htonl(0x60000000);
		*(__u16 *)(ip + 4) = bpf_htons(ulen);
		ip[6] = IPPROTO_UDP;
		ip[7] = TTL;
		__builtin_memcpy(ip + 8, from.addr, 16);
		__builtin_memcpy(ip + 24, to.addr, 16);
	}
	udp = (__u8 *)ip + (out4 ? (v4 ? ihl & 0x3c : IP4_HLEN) : IP6_HLEN);
	if ((void *)(udp + UDP_HLEN) > end)
		return XDP_DROP;
	*(__u16 *)(udp + 0) = from.port;
	*(__u16 *)(udp + 2) = to.port;
	*(__u16 *)(udp + 6) = new_ck;

	if ((void *)(eth + ETH_HLEN_) > end)
		return XDP_DROP;
	__builtin_memcpy(eth, fib.dmac, 6);
	__builtin_memcpy(eth + 6, fib.smac, 6);
	*(__u16 *)(eth + 12) = out4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);

	if (st) {
		st->pkts[dir & 1]++;
		st->bytes[dir & 1] += plen;
	}
	__u64 *last = bpf_map_lookup_elem(&ACTIVITY, &slot);
	if (last)
		*last = bpf_ktime_get_coarse_ns();
	struct totals *t = totals(pl);
	if (fib.ifindex == ifx) {
		if (t) {
			t->fwd_pkts++;
			t->fwd_bytes += plen;
			t->tx++;
		}
		return XDP_TX;
	}
	if (t) {
		t->fwd_pkts++;
		t->fwd_bytes += plen;
		t->redirect++;
	}
	return bpf_redirect(fib.ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
