#include "shim.h"

const uint64_t TG_ETH_RSS_IP = RTE_ETH_RSS_IP;
const uint64_t TG_ETH_RSS_TCP = RTE_ETH_RSS_TCP;
const uint64_t TG_ETH_RSS_UDP = RTE_ETH_RSS_UDP;
const uint64_t TG_ETH_RX_OFFLOAD_RSS_HASH = RTE_ETH_RX_OFFLOAD_RSS_HASH;
const uint64_t TG_ETH_TX_OFFLOAD_MBUF_FAST_FREE = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
const uint64_t TG_ETH_TX_OFFLOAD_MULTI_SEGS = RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
const uint64_t TG_MBUF_F_RX_RSS_HASH = RTE_MBUF_F_RX_RSS_HASH;
const uint16_t TG_PKTMBUF_HEADROOM = RTE_PKTMBUF_HEADROOM;
const uint16_t TG_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE;
const unsigned TG_RING_F_SP_ENQ = RING_F_SP_ENQ;
const unsigned TG_RING_F_SC_DEQ = RING_F_SC_DEQ;
const unsigned TG_MAX_ETHPORTS = RTE_MAX_ETHPORTS;
const uint32_t TG_LCORE_ID_ANY = LCORE_ID_ANY;

int tg_errno(void) { return rte_errno; }
unsigned tg_lcore_id(void) { return rte_lcore_id(); }
uint64_t tg_rdtsc(void) { return rte_rdtsc(); }

uint16_t tg_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t tg_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *tg_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int tg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, n);
}

void tg_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

char *tg_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

uint16_t tg_mbuf_refcnt_read(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }

uint16_t tg_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value)
{
	return rte_mbuf_refcnt_update(m, value);
}

int tg_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail)
{
	return rte_pktmbuf_chain(head, tail);
}

unsigned tg_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned tg_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned tg_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

/* Layout facts the Rust side checks its bindgen view against. */
size_t tg_mbuf_rss_offset(void) { return offsetof(struct rte_mbuf, hash.rss); }
size_t tg_mbuf_size(void) { return sizeof(struct rte_mbuf); }
