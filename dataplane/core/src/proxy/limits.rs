//! A policy rule's connection limits (`conn_max`, `embryonic_max`, `per_client_max`, as the
//! ASA's `set connection conn-max / embryonic-conn-max / per-client-max`), counted over all
//! workers together.
//!
//! A rule's limits are shared by every worker: its counts are atomics, touched when one of
//! the rule's new flows is admitted to the proxy and when that connection's handshakes end
//! or it closes, never for the other frames of a flow; rules without limits touch nothing.
//! Splitting a limit into per-worker shares (as `proxy.max_flows` is) would make
//! `conn_max 3` admit anything from 2 to 3 connections depending on how their flows hash
//! over the workers. Admission takes a count only below its bound (a compare-and-swap), so
//! workers admitting at once never take a rule past it.
//!
//! The counts belong to the rule, not to a policy generation: each [`CompiledPolicy`] hands
//! the rule the [`RuleLimits`] of the generation before it, and a connection keeps the
//! [`LimitTicket`] it was admitted with, so it is released from the count it was taken from
//! even if its rule has since been deleted.
//!
//! [`CompiledPolicy`]: crate::policy::CompiledPolicy

use std::hash::BuildHasher;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;

use crate::policy::{LimitAction, RuleSpec};

use super::table::BudgetAction;

/// Which limit a new flow met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    ConnMax,
    EmbryonicMax,
    PerClientMax,
}

impl LimitHit {
    /// In the words of `tollgatectl policy add`, for logs.
    pub fn name(self) -> &'static str {
        match self {
            LimitHit::ConnMax => "conn-max",
            LimitHit::EmbryonicMax => "embryonic-max",
            LimitHit::PerClientMax => "per-client-max",
        }
    }

    /// Counts the hit, and the action taken on it.
    pub fn count(self, action: BudgetAction, counters: &mut LimitCounters) {
        match self {
            LimitHit::ConnMax => counters.conn_max_hits += 1,
            LimitHit::EmbryonicMax => counters.embryonic_max_hits += 1,
            LimitHit::PerClientMax => counters.per_client_max_hits += 1,
        }
        match action {
            BudgetAction::Reset => counters.limit_reset += 1,
            BudgetAction::Bypass => counters.limit_bypassed += 1,
        }
    }
}

/// Connections per client address of one rule: counts in a fixed array of buckets, picked
/// by a keyed hash of the address so that no one can aim at another's bucket. Addresses
/// that share a bucket share its count, which can refuse a client early, never let one past
/// its bound. With n clients connected, a given one shares its bucket with another with a
/// probability of about n / 16,384.
struct ClientCounts {
    hasher: std::collections::hash_map::RandomState,
    buckets: Box<[AtomicU16]>,
}

impl ClientCounts {
    /// 16,384 buckets of 2 bytes: 32 KiB for each rule with `per_client_max`.
    const BUCKETS: usize = 16_384;

    fn new() -> ClientCounts {
        ClientCounts {
            hasher: std::collections::hash_map::RandomState::new(),
            buckets: (0..Self::BUCKETS).map(|_| AtomicU16::new(0)).collect(),
        }
    }

    fn bucket_of(&self, client: IpAddr) -> usize {
        self.hasher.hash_one(client) as usize % Self::BUCKETS
    }
}

/// One rule's limits and its counts, shared by every worker.
pub struct RuleLimits {
    rule: u32,
    conn_max: Option<u32>,
    embryonic_max: Option<u32>,
    per_client_max: Option<u16>,
    action: BudgetAction,
    connections: AtomicU32,
    embryonic: AtomicU32,
    clients: Option<ClientCounts>,
}

impl std::fmt::Debug for RuleLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleLimits")
            .field("rule", &self.rule)
            .field("conn_max", &self.conn_max)
            .field("embryonic_max", &self.embryonic_max)
            .field("per_client_max", &self.per_client_max)
            .field("action", &self.action)
            .field("connections", &self.connections())
            .field("embryonic", &self.embryonic())
            .finish()
    }
}

/// Takes one of `count` if it is below `max` (always, with no bound).
fn take_u32(count: &AtomicU32, max: Option<u32>) -> bool {
    match max {
        None => {
            count.fetch_add(1, Ordering::Relaxed);
            true
        }
        Some(max) => count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok(),
    }
}

fn give_u32(count: &AtomicU32) {
    // Never below zero, whatever a bug elsewhere might do: a count that wrapped would refuse
    // every new flow of the rule.
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

impl RuleLimits {
    /// The limits of rule `rule`, or None if it sets none.
    pub fn new(rule: u32, spec: &RuleSpec) -> Option<RuleLimits> {
        if !spec.has_limits() {
            return None;
        }
        Some(RuleLimits {
            rule,
            conn_max: spec.conn_max,
            embryonic_max: spec.embryonic_max,
            per_client_max: spec
                .per_client_max
                .map(|n| n.clamp(1, u32::from(u16::MAX)) as u16),
            action: match spec.limit_action() {
                LimitAction::Reset => BudgetAction::Reset,
                LimitAction::Bypass => BudgetAction::Bypass,
            },
            connections: AtomicU32::new(0),
            embryonic: AtomicU32::new(0),
            clients: spec.per_client_max.map(|_| ClientCounts::new()),
        })
    }

    /// Whether these are the limits `spec` sets, so that a new policy generation may carry
    /// the counts over.
    pub fn same_as(&self, spec: &RuleSpec) -> bool {
        self.conn_max == spec.conn_max
            && self.embryonic_max == spec.embryonic_max
            && self.per_client_max.map(u32::from) == spec.per_client_max
            && self.action
                == match spec.limit_action() {
                    LimitAction::Reset => BudgetAction::Reset,
                    LimitAction::Bypass => BudgetAction::Bypass,
                }
    }

    pub fn rule(&self) -> u32 {
        self.rule
    }

    /// What a new flow past a limit gets.
    pub fn action(&self) -> BudgetAction {
        self.action
    }

    /// Connections of the rule open now, over all workers.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Of those, the ones in their handshakes.
    pub fn embryonic(&self) -> u32 {
        self.embryonic.load(Ordering::Relaxed)
    }

    /// Connections open now from `client`'s bucket; None without `per_client_max`.
    pub fn client_connections(&self, client: IpAddr) -> Option<u16> {
        let clients = self.clients.as_ref()?;
        Some(clients.buckets[clients.bucket_of(client)].load(Ordering::Relaxed))
    }

    /// Admits a new embryonic connection from `client`, or says which limit it meets. The
    /// ticket releases what it took when it is dropped.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<LimitTicket, LimitHit> {
        if !take_u32(&self.connections, self.conn_max) {
            return Err(LimitHit::ConnMax);
        }
        if !take_u32(&self.embryonic, self.embryonic_max) {
            give_u32(&self.connections);
            return Err(LimitHit::EmbryonicMax);
        }
        let mut bucket = None;
        if let (Some(clients), Some(max)) = (&self.clients, self.per_client_max) {
            let b = clients.bucket_of(client);
            let taken = clients.buckets[b]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok();
            if !taken {
                give_u32(&self.embryonic);
                give_u32(&self.connections);
                return Err(LimitHit::PerClientMax);
            }
            bucket = Some(b);
        }
        Ok(LimitTicket {
            limits: Arc::clone(self),
            bucket,
            open: true,
            embryonic: true,
        })
    }

    /// The counters' gauges, read now (the hits are the workers').
    pub fn gauges(&self) -> LimitCounters {
        LimitCounters {
            connections: u64::from(self.connections()),
            embryonic: u64::from(self.embryonic()),
            ..LimitCounters::default()
        }
    }

    /// Each limit as it stands now for a new flow from `client`, for `explain`.
    pub fn now_for(&self, client: IpAddr) -> Vec<LimitNow> {
        let mut out = Vec::new();
        let mut push = |limit: LimitHit, max: Option<u32>, current: u32| {
            if let Some(max) = max {
                out.push(LimitNow {
                    limit: limit.name().into(),
                    max: u64::from(max),
                    current: u64::from(current),
                    reached: current >= max,
                });
            }
        };
        push(LimitHit::ConnMax, self.conn_max, self.connections());
        push(LimitHit::EmbryonicMax, self.embryonic_max, self.embryonic());
        push(
            LimitHit::PerClientMax,
            self.per_client_max.map(u32::from),
            self.client_connections(client).map_or(0, u32::from),
        );
        out
    }
}

/// One admitted connection's place in its rule's counts.
#[derive(Debug)]
pub struct LimitTicket {
    limits: Arc<RuleLimits>,
    bucket: Option<usize>,
    open: bool,
    embryonic: bool,
}

impl LimitTicket {
    /// Both handshakes are complete: the connection no longer counts as embryonic.
    pub fn established(&mut self) {
        if std::mem::take(&mut self.embryonic) {
            give_u32(&self.limits.embryonic);
        }
    }

    /// The connection is over for the limits (closed, reset, in TIME-WAIT or handed over).
    pub fn close(&mut self) {
        self.established();
        if std::mem::take(&mut self.open) {
            give_u32(&self.limits.connections);
            if let (Some(clients), Some(b)) = (&self.limits.clients, self.bucket) {
                let _ =
                    clients.buckets[b]
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }
}

impl Drop for LimitTicket {
    fn drop(&mut self) {
        self.close();
    }
}

/// One connection limit of a rule, now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitNow {
    /// "conn-max", "embryonic-max" or "per-client-max".
    pub limit: String,
    pub max: u64,
    /// Connections it counts now: all of the rule's, those in their handshakes, or the
    /// client's (over every client whose address shares its bucket: see `per_client_max`).
    pub current: u64,
    /// Reached: a new flow of the rule would meet its `on_limit` action now.
    pub reached: bool,
}

/// A rule's connection limits (`conn_max`, `embryonic_max`, `per_client_max`) at work. The
/// gauges count the rule's proxied connections over all workers; the rest count up from start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitCounters {
    /// Gauge: the rule's connections open now: proxied, from the client's SYN until the
    /// connection closes (TIME-WAIT not counted), is reset or is handed over to pass-through.
    pub connections: u64,
    /// Gauge: of those, the ones in their handshakes.
    pub embryonic: u64,
    /// New flows that met a limit, by the limit: conn_max, embryonic_max, per_client_max...
    pub conn_max_hits: u64,
    pub embryonic_max_hits: u64,
    pub per_client_max_hits: u64,
    /// ...and by the rule's `on_limit` action: reset (refused with a RST, no entry kept) or
    /// bypassed (forwarded unproxied for their whole life; not counted as connections).
    pub limit_reset: u64,
    pub limit_bypassed: u64,
}

impl LimitCounters {
    /// Adds `o`'s counters (not its gauges, which are read whole, not summed).
    pub fn add_hits(&mut self, o: &LimitCounters) {
        let LimitCounters {
            connections: _,
            embryonic: _,
            conn_max_hits,
            embryonic_max_hits,
            per_client_max_hits,
            limit_reset,
            limit_bypassed,
        } = *o;
        self.conn_max_hits += conn_max_hits;
        self.embryonic_max_hits += embryonic_max_hits;
        self.per_client_max_hits += per_client_max_hits;
        self.limit_reset += limit_reset;
        self.limit_bypassed += limit_bypassed;
    }

    /// One line of the stats table and of `policy list`.
    pub fn describe(&self) -> String {
        let LimitCounters {
            connections,
            embryonic,
            conn_max_hits,
            embryonic_max_hits,
            per_client_max_hits,
            limit_reset,
            limit_bypassed,
        } = *self;
        format!(
            "{connections} connections open ({embryonic} embryonic); new flows past a limit: \
             {conn_max_hits} at conn-max, {embryonic_max_hits} at embryonic-max, \
             {per_client_max_hits} at per-client-max; {limit_reset} reset, {limit_bypassed} bypassed"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: &str) -> Arc<RuleLimits> {
        let spec: RuleSpec = serde_json::from_str(json).unwrap();
        spec.validate().unwrap();
        Arc::new(RuleLimits::new(7, &spec).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_rule_without_limits_has_none() {
        let spec: RuleSpec = serde_json::from_str(r#"{"action":"proxy"}"#).unwrap();
        assert!(RuleLimits::new(1, &spec).is_none());
    }

    #[test]
    fn conn_max_admits_up_to_its_bound_and_a_ticket_gives_its_place_back() {
        let l = limits(r#"{"action":"proxy","conn_max":2}"#);
        let a = l.admit(ip("198.18.0.1")).unwrap();
        let mut b = l.admit(ip("198.18.0.2")).unwrap();
        assert_eq!(l.admit(ip("198.18.0.3")).unwrap_err(), LimitHit::ConnMax);
        assert_eq!((l.connections(), l.embryonic()), (2, 2));
        b.established();
        assert_eq!((l.connections(), l.embryonic()), (2, 1));
        assert_eq!(l.admit(ip("198.18.0.3")).unwrap_err(), LimitHit::ConnMax);
        b.close();
        b.close();
        assert_eq!((l.connections(), l.embryonic()), (1, 1), "released once");
        let c = l.admit(ip("198.18.0.3")).unwrap();
        drop((a, b, c));
        assert_eq!((l.connections(), l.embryonic()), (0, 0));
    }

    #[test]
    fn embryonic_max_counts_handshakes_only() {
        let l = limits(r#"{"action":"proxy","embryonic_max":1,"on_limit":"bypass"}"#);
        assert_eq!(l.action(), BudgetAction::Bypass);
        let mut a = l.admit(ip("198.18.0.1")).unwrap();
        assert_eq!(
            l.admit(ip("198.18.0.1")).unwrap_err(),
            LimitHit::EmbryonicMax
        );
        assert_eq!(l.connections(), 1, "a refusal takes nothing");
        a.established();
        let _b = l.admit(ip("198.18.0.1")).unwrap();
        assert_eq!((l.connections(), l.embryonic()), (2, 1));
    }

    #[test]
    fn per_client_max_is_per_address_and_a_refusal_takes_nothing() {
        let l = limits(r#"{"action":"proxy","conn_max":100,"per_client_max":2}"#);
        let held: Vec<_> = (0..2).map(|_| l.admit(ip("198.18.0.1")).unwrap()).collect();
        assert_eq!(
            l.admit(ip("198.18.0.1")).unwrap_err(),
            LimitHit::PerClientMax
        );
        assert_eq!((l.connections(), l.embryonic()), (2, 2));
        assert_eq!(l.client_connections(ip("198.18.0.1")), Some(2));
        // Other clients (those not sharing the first one's bucket) are admitted.
        let others: Vec<IpAddr> = (2..=40u8)
            .map(|i| IpAddr::from([198, 18, 0, i]))
            .filter(|&a| l.client_connections(a) == Some(0))
            .collect();
        assert!(others.len() > 30);
        let more: Vec<_> = others.iter().map(|&a| l.admit(a).unwrap()).collect();
        let now = l.now_for(ip("198.18.0.1"));
        assert_eq!(now.len(), 2);
        assert_eq!(
            (now[1].limit.as_str(), now[1].current, now[1].reached),
            ("per-client-max", 2, true)
        );
        drop(held);
        assert_eq!(l.client_connections(ip("198.18.0.1")), Some(0));
        drop(more);
        assert_eq!(l.connections(), 0);
    }

    #[test]
    fn workers_admitting_at_once_never_pass_the_bound() {
        let l = limits(r#"{"action":"proxy","conn_max":1000}"#);
        let admitted: Vec<Vec<LimitTicket>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let l = Arc::clone(&l);
                    s.spawn(move || {
                        (0..1000)
                            .filter_map(|i| {
                                l.admit(IpAddr::from([198, 18, w, (i % 250) as u8])).ok()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(admitted.iter().map(Vec::len).sum::<usize>(), 1000);
        assert_eq!(l.connections(), 1000);
        drop(admitted);
        assert_eq!((l.connections(), l.embryonic()), (0, 0));
    }
}
