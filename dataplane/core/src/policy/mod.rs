//! The policy as workers use it: the compiled classifier plus the protocol
//! defaults, and how a new one reaches every worker.
//!
//! Publishing is a pointer swap: the control plane puts a new
//! `Arc<CompiledPolicy>` in the slot and bumps the generation. Each worker
//! compares the generation with its own between bursts (one plain load, no
//! read-modify-write, no lock) and only when it moved takes the new `Arc`
//! with a `try_lock` that never waits; the old policy is freed when the last
//! worker lets go of it. Each worker then records the generation it runs, so
//! the control plane knows when a change is in force everywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod classifier;
mod rules;

pub use classifier::Classifier;
pub use rules::*;

use crate::flow::FlowMode;
use crate::proxy::limits::RuleLimits;
use crate::proxy::RuleOptions;
use crate::tcp::proxy::OnStall;

/// What the policy decided for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub mode: FlowMode,
    /// The matching rule's id; 0 when the protocol default applied.
    pub rule: u32,
    /// The rule's idle timeout in seconds; 0 for the protocol's.
    pub idle_timeout_s: u32,
}

pub fn mode_of(action: Action) -> FlowMode {
    match action {
        Action::Proxy => FlowMode::Proxy,
        Action::Bypass => FlowMode::Bypass,
        Action::Drop => FlowMode::Drop,
    }
}

pub fn action_of(mode: FlowMode) -> Action {
    match mode {
        FlowMode::Proxy => Action::Proxy,
        FlowMode::Bypass => Action::Bypass,
        FlowMode::Drop => Action::Drop,
    }
}

/// A rule's `on-stall` as the proxy engine takes it.
pub fn stall_of(action: StallAction) -> OnStall {
    match action {
        StallAction::Wait => OnStall::Wait,
        StallAction::Reset => OnStall::Reset,
        StallAction::Bypass => OnStall::Bypass,
    }
}

/// One immutable generation of the policy.
pub struct CompiledPolicy {
    pub generation: u64,
    pub classifier: Classifier,
    pub defaults: PolicyDefaults,
    /// One more than the highest rule id: the size of per-rule hit arrays.
    pub rule_slots: usize,
    /// Each rule's `on_stall`, `detect` and connection limits, indexed by rule id
    /// (`rule_slots` long).
    on_stall: Vec<Option<StallAction>>,
    detect: Vec<Option<Detect>>,
    limits: Vec<Option<Arc<RuleLimits>>>,
}

impl CompiledPolicy {
    pub fn compile(set: &PolicySet, defaults: PolicyDefaults, generation: u64) -> CompiledPolicy {
        Self::compile_after(set, defaults, generation, None)
    }

    /// A new generation after `previous`: rules that stay keep their connection limits'
    /// counts (their live connections still hold places in them).
    pub fn compile_after(
        set: &PolicySet,
        defaults: PolicyDefaults,
        generation: u64,
        previous: Option<&CompiledPolicy>,
    ) -> CompiledPolicy {
        let rule_slots = set
            .rules
            .iter()
            .map(|r| r.id as usize + 1)
            .max()
            .unwrap_or(1);
        let mut on_stall = vec![None; rule_slots];
        let mut detect = vec![None; rule_slots];
        let mut limits = vec![None; rule_slots];
        for r in &set.rules {
            on_stall[r.id as usize] = r.spec.on_stall;
            detect[r.id as usize] = r.spec.detect;
            limits[r.id as usize] = previous
                .and_then(|p| p.limits(r.id))
                .filter(|l| l.same_as(&r.spec))
                .cloned()
                .or_else(|| RuleLimits::new(r.id, &r.spec).map(Arc::new));
        }
        CompiledPolicy {
            generation,
            classifier: Classifier::compile(set),
            defaults,
            rule_slots,
            on_stall,
            detect,
            limits,
        }
    }

    /// The connection limits of rule `rule`, None as for [`CompiledPolicy::on_stall`].
    #[inline]
    pub fn limits(&self, rule: u32) -> Option<&Arc<RuleLimits>> {
        self.limits.get(rule as usize).and_then(Option::as_ref)
    }

    /// Every rule's connection limits, for the counters.
    pub fn all_limits(&self) -> impl Iterator<Item = &Arc<RuleLimits>> {
        self.limits.iter().flatten()
    }

    /// What rule `rule` says about proxying a flow. The connection limits are looked up only
    /// for a frame that may open a connection (`may_open`): the other frames of a proxied
    /// flow need not pay for the `Arc`.
    #[inline]
    pub fn rule_options(&self, rule: u32, may_open: bool) -> RuleOptions {
        RuleOptions {
            on_stall: self.on_stall(rule).map(stall_of),
            detect: self.detect(rule).map(|d| d == Detect::IpsecOverTcp),
            limits: if may_open {
                self.limits(rule).cloned()
            } else {
                None
            },
        }
    }

    /// The `on_stall` of rule `rule` (a [`Decision::rule`]): None when the
    /// rule leaves it to the daemon's default, for rule 0 (the protocol
    /// default) and for ids not in this policy.
    #[inline]
    pub fn on_stall(&self, rule: u32) -> Option<StallAction> {
        self.on_stall.get(rule as usize).copied().flatten()
    }

    /// The `detect` of rule `rule`, None as for [`CompiledPolicy::on_stall`].
    #[inline]
    pub fn detect(&self, rule: u32) -> Option<Detect> {
        self.detect.get(rule as usize).copied().flatten()
    }

    pub fn default_action(&self, proto: u8) -> Action {
        match proto {
            6 => self.defaults.tcp,
            17 => self.defaults.udp,
            _ => self.defaults.other,
        }
    }

    #[inline]
    pub fn decide(&self, flow: &FlowFields) -> Decision {
        match self.classifier.lookup(flow) {
            Some(index) => {
                let rule = self.classifier.rule(index);
                Decision {
                    mode: mode_of(rule.spec.action),
                    rule: rule.id,
                    idle_timeout_s: rule
                        .spec
                        .idle_timeout_secs
                        .map_or(0, |s| s.min(u32::MAX as u64) as u32),
                }
            }
            None => Decision {
                mode: mode_of(self.default_action(flow.proto)),
                rule: 0,
                idle_timeout_s: 0,
            },
        }
    }
}

/// Where the control plane publishes policies and workers pick them up.
pub struct PolicyBoard {
    generation: AtomicU64,
    current: Mutex<Arc<CompiledPolicy>>,
    /// The generation each worker runs.
    in_use: Vec<AtomicU64>,
}

impl PolicyBoard {
    pub fn new(initial: CompiledPolicy, workers: usize) -> PolicyBoard {
        let generation = initial.generation;
        PolicyBoard {
            generation: AtomicU64::new(generation),
            current: Mutex::new(Arc::new(initial)),
            in_use: (0..workers).map(|_| AtomicU64::new(generation)).collect(),
        }
    }

    pub fn current(&self) -> Arc<CompiledPolicy> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Swaps in a new policy. Workers pick it up between bursts.
    pub fn publish(&self, policy: CompiledPolicy) {
        let generation = policy.generation;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        self.generation.store(generation, Ordering::Release);
    }

    /// Waits until every worker runs `generation` (or `timeout` passes);
    /// returns how long that took, or None on timeout.
    pub fn wait_in_force(&self, generation: u64, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self
                .in_use
                .iter()
                .all(|g| g.load(Ordering::Acquire) >= generation)
            {
                return Some(start.elapsed());
            }
            if start.elapsed() > timeout {
                return None;
            }
            // Sleep rather than spin: where the control thread shares a core
            // with a worker, spinning would take the very CPU time the worker
            // needs to pick the policy up.
            std::thread::sleep(Duration::from_micros(5));
        }
    }

    /// Called by worker `worker` between bursts: the new policy if one was
    /// published since `running`, without ever waiting for a lock.
    #[inline]
    pub fn update(&self, worker: usize, running: u64) -> Option<Arc<CompiledPolicy>> {
        if self.generation.load(Ordering::Relaxed) == running {
            return None;
        }
        let fresh = self.current.try_lock().ok()?.clone();
        if let Some(g) = self.in_use.get(worker) {
            g.store(fresh.generation, Ordering::Release);
        }
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: PolicyDefaults = PolicyDefaults {
        tcp: Action::Proxy,
        udp: Action::Bypass,
        other: Action::Bypass,
    };

    fn add(set: &mut PolicySet, json: &str) -> u32 {
        set.add(serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn on_stall_is_looked_up_by_rule_id() {
        let mut set = PolicySet::default();
        let reset = add(
            &mut set,
            r#"{"match":{"proto":"tcp","dst_port":443},"action":"proxy","on_stall":"reset"}"#,
        );
        let plain = add(
            &mut set,
            r#"{"match":{"proto":"tcp","dst_port":80},"action":"proxy"}"#,
        );
        let gone = add(&mut set, r#"{"action":"proxy","on_stall":"wait"}"#);
        let bypass = add(
            &mut set,
            r#"{"match":{"proto":"tcp"},"action":"proxy","on_stall":"bypass","detect":"off"}"#,
        );
        set.delete(gone).unwrap();
        let p = CompiledPolicy::compile(&set, DEFAULTS, 1);
        assert_eq!(p.on_stall(reset), Some(StallAction::Reset));
        assert_eq!(p.on_stall(plain), None);
        assert_eq!(p.on_stall(bypass), Some(StallAction::Bypass));
        // A deleted rule, the protocol default (0) and ids past the end.
        assert_eq!(p.on_stall(gone), None);
        assert_eq!(p.on_stall(0), None);
        assert_eq!(p.on_stall(bypass + 1), None);
        assert_eq!(p.on_stall(u32::MAX), None);
        // `detect` is kept the same way.
        assert_eq!(p.detect(bypass), Some(Detect::Off));
        assert_eq!(p.detect(reset), None);
        assert_eq!(p.detect(0), None);
        assert_eq!(p.detect(u32::MAX), None);

        // What a worker does: the decision's rule id, then its on_stall.
        let flow = FlowFields {
            proto: 6,
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.19.0.1".parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            ingress: PortSide::Inside,
            vlan: None,
        };
        let d = p.decide(&flow);
        assert_eq!((d.mode, d.rule), (FlowMode::Proxy, reset));
        assert_eq!(p.on_stall(d.rule), Some(StallAction::Reset));
        let udp = FlowFields { proto: 17, ..flow };
        assert_eq!(p.on_stall(p.decide(&udp).rule), None);

        let empty = CompiledPolicy::compile(&PolicySet::default(), DEFAULTS, 1);
        assert_eq!(empty.on_stall(0), None);
        assert_eq!(empty.on_stall(1), None);
    }

    #[test]
    fn connection_limits_keep_their_counts_across_generations_of_their_rule() {
        let mut set = PolicySet::default();
        let limited = add(
            &mut set,
            r#"{"match":{"proto":"tcp","dst_port":80},"action":"proxy","conn_max":2}"#,
        );
        let plain = add(&mut set, r#"{"match":{"proto":"tcp"},"action":"proxy"}"#);
        let first = CompiledPolicy::compile(&set, DEFAULTS, 1);
        assert!(first.limits(plain).is_none());
        assert!(first.limits(0).is_none());
        assert!(first.limits(u32::MAX).is_none());
        let client = "198.18.0.1".parse().unwrap();
        let held = first.limits(limited).unwrap().admit(client).unwrap();
        assert_eq!(first.all_limits().count(), 1);
        // Options carry the limits for a new flow only.
        assert!(first.rule_options(limited, true).limits.is_some());
        assert!(first.rule_options(limited, false).limits.is_none());
        assert!(first.rule_options(plain, true).limits.is_none());

        // Another rule added: the limited rule's count goes on.
        let other = add(
            &mut set,
            r#"{"match":{"proto":"tcp","dst_port":443},"action":"proxy","conn_max":1}"#,
        );
        let second = CompiledPolicy::compile_after(&set, DEFAULTS, 2, Some(&first));
        assert_eq!(second.limits(limited).unwrap().connections(), 1);
        assert!(Arc::ptr_eq(
            second.limits(limited).unwrap(),
            first.limits(limited).unwrap()
        ));
        assert_eq!(second.limits(other).unwrap().connections(), 0);
        // Deleted and replaced: new rules start from zero; the old connection is released
        // from the count it was taken from.
        set.replace(vec![serde_json::from_str(
            r#"{"match":{"proto":"tcp","dst_port":80},"action":"proxy","conn_max":2}"#,
        )
        .unwrap()])
            .unwrap();
        let third = CompiledPolicy::compile_after(&set, DEFAULTS, 3, Some(&second));
        let new_id = set.rules[0].id;
        assert_ne!(new_id, limited);
        assert_eq!(third.limits(new_id).unwrap().connections(), 0);
        drop(held);
        assert_eq!(first.limits(limited).unwrap().connections(), 0);
    }
}
