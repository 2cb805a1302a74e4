/* bgf's DPDK shim: the DPDK API bgf uses, with DPDK's static-inline
 * functions (burst I/O, mbuf access, rte_errno) wrapped as real symbols so
 * Rust can call them. */
#ifndef BGF_DPDK_SHIM_H
#define BGF_DPDK_SHIM_H

#include <stdint.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_version.h>

int bgf_rte_errno(void);
uint16_t bgf_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t bgf_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *bgf_pktmbuf_alloc(struct rte_mempool *pool);
void bgf_pktmbuf_free(struct rte_mbuf *m);
/* First byte of the packet data. */
uint8_t *bgf_mbuf_data(struct rte_mbuf *m);
uint16_t bgf_mbuf_data_len(const struct rte_mbuf *m);
uint16_t bgf_mbuf_nb_segs(const struct rte_mbuf *m);
/* Bytes available from the data start to the end of the buffer. */
uint16_t bgf_mbuf_room(const struct rte_mbuf *m);
/* Set a single-segment packet's length (data_len = pkt_len = len). */
void bgf_mbuf_set_len(struct rte_mbuf *m, uint16_t len);
/* Ask the port to compute the UDP checksum (and the IPv4 header checksum):
 * sets the offload flags and lengths and writes the pseudo-header sum. */
void bgf_mbuf_udp_cksum_offload(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, int ipv4);
unsigned bgf_lcore_id(void);
uint64_t bgf_tsc_hz(void);
uint64_t bgf_rdtsc(void);

/* Configure `port` with one RX and one TX queue and start it. With
 * `want_udp_cksum` the UDP/IPv4 checksum TX offloads are enabled when the
 * port offers them; `*cksum_offload` says whether they were. The port's MAC
 * goes to `mac` (6 bytes). Returns 0 or a negative errno. */
int bgf_port_start(uint16_t port, uint16_t nb_rxd, uint16_t nb_txd, struct rte_mempool *pool,
                   int want_udp_cksum, int *cksum_offload, uint8_t *mac);

#endif
