#include "shim.h"
#include <string.h>
#include <rte_ip.h>
#include <rte_cycles.h>

int bgf_rte_errno(void) { return rte_errno; }

uint16_t bgf_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t bgf_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *bgf_pktmbuf_alloc(struct rte_mempool *pool) { return rte_pktmbuf_alloc(pool); }

void bgf_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

uint8_t *bgf_mbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }

uint16_t bgf_mbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }

uint16_t bgf_mbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }

uint16_t bgf_mbuf_room(const struct rte_mbuf *m) { return (uint16_t)(m->buf_len - m->data_off); }

void bgf_mbuf_set_len(struct rte_mbuf *m, uint16_t len)
{
    m->data_len = len;
    m->pkt_len = len;
}

void bgf_mbuf_udp_cksum_offload(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, int ipv4)
{
    uint8_t *l3 = rte_pktmbuf_mtod_offset(m, uint8_t *, l2_len);
    uint8_t *udp = l3 + l3_len;
    uint16_t ck;
    m->l2_len = l2_len;
    m->l3_len = l3_len;
    if (ipv4) {
        struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)l3;
        ip->hdr_checksum = 0;
        m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_CKSUM;
        ck = rte_ipv4_phdr_cksum(ip, m->ol_flags);
    } else {
        m->ol_flags |= RTE_MBUF_F_TX_IPV6 | RTE_MBUF_F_TX_UDP_CKSUM;
        ck = rte_ipv6_phdr_cksum((struct rte_ipv6_hdr *)l3, m->ol_flags);
    }
    memcpy(udp + 6, &ck, 2);
}

unsigned bgf_lcore_id(void) { return rte_lcore_id(); }

uint64_t bgf_tsc_hz(void) { return rte_get_tsc_hz(); }

uint64_t bgf_rdtsc(void) { return rte_rdtsc(); }

int bgf_port_start(uint16_t port, uint16_t nb_rxd, uint16_t nb_txd, struct rte_mempool *pool,
                   int want_udp_cksum, int *cksum_offload, uint8_t *mac)
{
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    struct rte_ether_addr addr;
    uint64_t want = RTE_ETH_TX_OFFLOAD_UDP_CKSUM | RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
    int ret, socket;

    memset(&conf, 0, sizeof(conf));
    *cksum_offload = 0;
    ret = rte_eth_dev_info_get(port, &info);
    if (ret != 0)
        return ret;
    if (want_udp_cksum && (info.tx_offload_capa & want) == want) {
        conf.txmode.offloads |= want;
        *cksum_offload = 1;
    }
    ret = rte_eth_dev_configure(port, 1, 1, &conf);
    if (ret != 0)
        return ret;
    ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
    if (ret != 0)
        return ret;
    socket = rte_eth_dev_socket_id(port);
    if (socket < 0)
        socket = 0;
    ret = rte_eth_rx_queue_setup(port, 0, nb_rxd, (unsigned)socket, NULL, pool);
    if (ret != 0)
        return ret;
    {
        struct rte_eth_txconf txc = info.default_txconf;
        txc.offloads = conf.txmode.offloads;
        ret = rte_eth_tx_queue_setup(port, 0, nb_txd, (unsigned)socket, &txc);
        if (ret != 0)
            return ret;
    }
    ret = rte_eth_dev_start(port);
    if (ret != 0)
        return ret;
    /* ARP is broadcast, neighbour solicitations are multicast. */
    (void)rte_eth_allmulticast_enable(port);
    ret = rte_eth_macaddr_get(port, &addr);
    if (ret != 0)
        return ret;
    memcpy(mac, addr.addr_bytes, 6);
    return 0;
}
