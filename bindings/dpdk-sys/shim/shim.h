/* The DPDK headers tollgate binds to, plus exported wrappers for the
 * static-inline fast-path functions and the macro constants that bindgen
 * cannot see (RTE_BIT64 and friends). */
#ifndef TOLLGATE_DPDK_SHIM_H
#define TOLLGATE_DPDK_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_bus_vdev.h>
#include <rte_telemetry.h>
#include <rte_pdump.h>

/* Macro constants, re-exported as real symbols. */
extern const uint64_t TG_ETH_RSS_IP;
extern const uint64_t TG_ETH_RSS_TCP;
extern const uint64_t TG_ETH_RSS_UDP;
extern const uint64_t TG_ETH_RX_OFFLOAD_RSS_HASH;
extern const uint64_t TG_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
extern const uint64_t TG_ETH_TX_OFFLOAD_MULTI_SEGS;
extern const uint64_t TG_MBUF_F_RX_RSS_HASH;
extern const uint16_t TG_PKTMBUF_HEADROOM;
extern const uint16_t TG_MBUF_DEFAULT_BUF_SIZE;
extern const unsigned TG_RING_F_SP_ENQ;
extern const unsigned TG_RING_F_SC_DEQ;
extern const unsigned TG_MAX_ETHPORTS;
extern const uint32_t TG_LCORE_ID_ANY;

int tg_errno(void);
unsigned tg_lcore_id(void);
uint64_t tg_rdtsc(void);

uint16_t tg_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t tg_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *tg_pktmbuf_alloc(struct rte_mempool *mp);
int tg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void tg_pktmbuf_free(struct rte_mbuf *m);
char *tg_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint16_t tg_mbuf_refcnt_read(const struct rte_mbuf *m);
uint16_t tg_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);
int tg_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);

unsigned tg_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned tg_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned tg_ring_count(const struct rte_ring *r);

size_t tg_mbuf_rss_offset(void);
size_t tg_mbuf_size(void);

#endif
