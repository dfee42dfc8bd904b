//! Keeping both directions of a flow on one worker, and checking that it held.
//!
//! With symmetric RSS the NIC does the steering; otherwise each worker sends
//! frames whose flow another worker owns over a single-producer ring to that
//! worker ([`crate::flow::FlowTable::shard_of`]). Under RSS the rings carry only
//! IP fragments, which the NIC steers by their addresses: once their datagram
//! is whole, they go to the worker whose queue the NIC picks for its flow
//! ([`crate::rss`]). Either way, the [`SplitAudit`]
//! checks the result: workers report each flow they create, and a flow
//! reported by two workers is one whose directions (or packets) were split.

use std::collections::HashMap;

use crate::flow::FlowKey;

/// Flows created per worker, as reported between bursts, checked for flows
/// that two workers both created.
pub struct SplitAudit {
    seen: HashMap<FlowKey, (u16, u64)>,
    max_entries: usize,
    retention_ms: u64,
    /// Flows created on more than one worker.
    pub split_flows: u64,
    /// Reports not checked because the audit was at its size limit.
    pub unchecked: u64,
}

impl SplitAudit {
    /// Remembers up to `max_entries` flows for `retention_ms` each.
    pub fn new(max_entries: usize, retention_ms: u64) -> SplitAudit {
        SplitAudit {
            seen: HashMap::new(),
            max_entries,
            retention_ms,
            split_flows: 0,
            unchecked: 0,
        }
    }

    pub fn record(&mut self, worker: u16, keys: &[FlowKey], now_ms: u64) {
        for key in keys {
            let full = self.seen.len() >= self.max_entries;
            match self.seen.get_mut(key) {
                Some((owner, seen)) => {
                    if *owner != worker {
                        self.split_flows += 1;
                    }
                    *owner = worker;
                    *seen = now_ms;
                }
                None if full => self.unchecked += 1,
                None => {
                    self.seen.insert(*key, (worker, now_ms));
                }
            }
        }
    }

    /// Forgets flows reported longer ago than the retention.
    pub fn prune(&mut self, now_ms: u64) {
        let retention = self.retention_ms;
        self.seen
            .retain(|_, (_, seen)| now_ms.saturating_sub(*seen) <= retention);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowTable;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(port: u16) -> FlowKey {
        FlowKey::from_packet(
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            6,
            port,
            80,
        )
        .0
    }

    #[test]
    fn a_flow_created_on_two_workers_is_counted() {
        let mut audit = SplitAudit::new(100, 10_000);
        audit.record(0, &[key(1000), key(1001)], 0);
        audit.record(1, &[key(2000)], 1);
        assert_eq!(audit.split_flows, 0);
        audit.record(1, &[key(1000)], 2);
        assert_eq!(audit.split_flows, 1);
    }

    #[test]
    fn the_same_worker_recreating_a_flow_is_not_a_split() {
        let mut audit = SplitAudit::new(100, 10_000);
        audit.record(0, &[key(1000)], 0);
        audit.record(0, &[key(1000)], 50);
        assert_eq!(audit.split_flows, 0);
    }

    #[test]
    fn the_audit_is_bounded_and_forgets_old_flows() {
        let mut audit = SplitAudit::new(2, 100);
        audit.record(0, &[key(1), key(2), key(3)], 0);
        assert_eq!(audit.len(), 2);
        assert_eq!(audit.unchecked, 1);
        audit.prune(1_000);
        assert!(audit.is_empty());
    }

    #[test]
    fn software_steering_sends_both_directions_to_one_worker_and_spreads_flows() {
        let a = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        for workers in [2usize, 3, 4, 7] {
            let mut load = vec![0u32; workers];
            for port in 1024..11024u16 {
                let (k1, _) = FlowKey::from_packet(a, b, 6, port, 443);
                let (k2, _) = FlowKey::from_packet(b, a, 6, 443, port);
                let w = FlowTable::shard_of(k1.software_hash(), workers);
                assert_eq!(w, FlowTable::shard_of(k2.software_hash(), workers));
                load[w] += 1;
            }
            let fair = 10_000 / workers as u32;
            for l in load {
                assert!(
                    l > fair * 8 / 10 && l < fair * 12 / 10,
                    "uneven spread over {workers}: {l} vs {fair}"
                );
            }
        }
    }
}
