//! The daemon's side of the control protocol. Requests arrive from the socket
//! server's threads and are served one at a time on the main thread, which
//! owns the policy set: changes are serialised, saved before they are
//! published, and answered once every worker runs them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use tollgate_control::persist;
use tollgate_control::policy::{LimitAction, PolicyError, PolicySet, Rule, RuleSpec};
use tollgate_control::protocol::{
    ErrorCode, ExplainQuery, ExplainReply, FlowView, FlowsClearReply, FlowsListReply, HealthReply,
    HealthStatus, Op, PolicyChangeReply, PolicyCheckReply, PolicyDefaults, PolicyListReply, Reply,
    Request, Response, RuleHits, RuleView, VersionReply, MAX_PAGE_SIZE, PROTOCOL_VERSION,
};

use crate::daemon::Dataplane;
use crate::worker::WorkerCommand;
use tollgate_core::pipeline::PortSide;
use tollgate_core::policy::{action_of, CompiledPolicy};
use tollgate_core::proxy::ClearAction;

/// How long a policy change may take to reach every worker before the
/// control plane reports the workers as unresponsive.
const IN_FORCE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the control plane waits for workers to answer a query.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ControlPlane {
    set: PolicySet,
    defaults: PolicyDefaults,
    state_file: Option<PathBuf>,
    generation: u64,
    /// The control socket's own counters, once it serves.
    socket: Option<tollgate_control::server::ServerCounters>,
}

fn invalid(e: PolicyError) -> Response {
    match e {
        PolicyError::NoSuchRule(_) => Response::error(None, ErrorCode::NotFound, e.to_string()),
        other => Response::error(None, ErrorCode::Invalid, other.to_string()),
    }
}

impl ControlPlane {
    /// Restores the saved policy set, if there is one. A corrupt state file
    /// is an error: starting with no rules would silently drop the
    /// operator's bypass policies.
    pub fn restore(
        defaults: PolicyDefaults,
        state_file: Option<PathBuf>,
    ) -> anyhow::Result<ControlPlane> {
        let set = match &state_file {
            Some(path) => persist::load(path)?.unwrap_or_default(),
            None => PolicySet::default(),
        };
        Ok(ControlPlane {
            set,
            defaults,
            state_file,
            generation: 1,
            socket: None,
        })
    }

    /// Makes the control socket's counters part of the stats.
    pub fn count_socket(&mut self, counters: tollgate_control::server::ServerCounters) {
        self.socket = Some(counters);
    }

    pub fn policy_set(&self) -> &PolicySet {
        &self.set
    }

    /// The policy workers start with.
    pub fn compiled(&self) -> CompiledPolicy {
        CompiledPolicy::compile(&self.set, self.defaults, self.generation)
    }

    /// The policy after a change, the rules that stay keeping their connection counts.
    fn compiled_after(&self, previous: &CompiledPolicy) -> CompiledPolicy {
        CompiledPolicy::compile_after(&self.set, self.defaults, self.generation, Some(previous))
    }

    pub fn handle(&mut self, request: Request, uid: u32, dp: &Dataplane) -> Response {
        let seq = request.seq;
        let kind = request.op.reply_kind();
        let mut response = match request.op {
            Op::PolicyAdd {
                rule,
                position,
                apply_existing,
            } => self.change(dp, uid, apply_existing, |set| {
                let id = match position {
                    Some(p) => set.insert(p, rule.clone())?,
                    None => set.add(rule.clone())?,
                };
                Ok((Some(id), format!("rule {id} added ({})", describe(&rule))))
            }),
            Op::PolicyDelete { id } => self.change(dp, uid, false, |set| {
                let rule = set.delete(id)?;
                Ok((
                    None,
                    format!("rule {id} deleted ({})", describe(&rule.spec)),
                ))
            }),
            Op::PolicyReplace {
                rules,
                apply_existing,
            } => self.change(dp, uid, apply_existing, |set| {
                let n = rules.len();
                set.replace(rules.clone())?;
                Ok((None, format!("policy replaced: {n} rules")))
            }),
            Op::PolicyCheck { rules } => match PolicySet::check(&rules) {
                Ok(()) => Response::ok(None, PolicyCheckReply { rules: rules.len() }),
                Err(e) => invalid(e),
            },
            Op::PolicyList {} => {
                publish_first(dp);
                self.list(dp)
            }
            Op::Explain(query) => self.explain(dp, &query),
            Op::FlowsList {
                filter,
                page,
                page_size,
            } => {
                if let Err(e) = filter.check() {
                    Response::error(None, ErrorCode::Invalid, e.to_string())
                } else if page_size == 0 || page_size > MAX_PAGE_SIZE {
                    Response::error(
                        None,
                        ErrorCode::Invalid,
                        format!("page_size must be 1..={MAX_PAGE_SIZE}"),
                    )
                } else {
                    self.flows_list(dp, filter, page, page_size)
                }
            }
            Op::FlowsClear { filter, hand_over } => match filter.check() {
                Ok(()) => self.flows_clear(dp, uid, filter, hand_over),
                Err(e) => Response::error(None, ErrorCode::Invalid, e.to_string()),
            },
            Op::Stats {} => {
                publish_first(dp);
                Response::ok(None, self.stats(dp))
            }
            Op::Health {} => {
                let answered = dp
                    .ask_workers(WORKER_TIMEOUT, |reply| WorkerCommand::Ping { reply })
                    .iter()
                    .filter(|r| r.is_some())
                    .count();
                let links: Vec<(String, bool)> = PortSide::BOTH
                    .iter()
                    .map(|s| (s.name().to_string(), dp.port(*s).link().up))
                    .collect();
                let healthy = answered == dp.workers() && links.iter().all(|(_, up)| *up);
                Response::ok(
                    None,
                    HealthReply {
                        status: if healthy {
                            HealthStatus::Ok
                        } else {
                            HealthStatus::Degraded
                        },
                        workers: dp.workers(),
                        workers_responding: answered,
                        links_up: links,
                        uptime_secs: dp.uptime().as_secs(),
                    },
                )
            }
            Op::Version {} => Response::ok(
                None,
                VersionReply {
                    tollgate: env!("CARGO_PKG_VERSION").into(),
                    protocol: PROTOCOL_VERSION,
                    dpdk: dpdk::Eal::version(),
                },
            ),
        };
        // Each operation's reply type is declared once (`Op::reply_kind`); clients read it so.
        debug_assert!(
            !response.ok || Reply::read(kind, response.result.clone().unwrap_or_default()).is_ok(),
            "a reply that is not the {kind:?} its operation gets"
        );
        response.seq = seq;
        response
    }

    /// Applies a change to a copy of the set, saves it, publishes it, and
    /// waits until every worker runs it. Nothing changes if any step before
    /// publishing fails.
    fn change(
        &mut self,
        dp: &Dataplane,
        uid: u32,
        apply_existing: bool,
        edit: impl FnOnce(&mut PolicySet) -> Result<(Option<u32>, String), PolicyError>,
    ) -> Response {
        let mut next = self.set.clone();
        let (id, what) = match edit(&mut next) {
            Ok(done) => done,
            Err(e) => return invalid(e),
        };
        if let Some(path) = &self.state_file {
            if let Err(e) = persist::save(path, &next) {
                return Response::error(
                    None,
                    ErrorCode::Internal,
                    format!("policy not changed: {e}"),
                );
            }
        }
        self.set = next;
        self.generation += 1;
        let generation = self.generation;
        dp.board()
            .publish(self.compiled_after(&dp.board().current()));
        let Some(took) = dp.board().wait_in_force(generation, IN_FORCE_TIMEOUT) else {
            tracing::warn!(
                uid,
                generation,
                "control: {what}; saved but not confirmed by every worker"
            );
            return Response::error(None, ErrorCode::Unavailable, format!("{what}, saved and published as generation {generation}, but not every worker confirmed it within {IN_FORCE_TIMEOUT:?}"));
        };
        let mut switched = None;
        if apply_existing {
            let replies =
                dp.ask_workers(WORKER_TIMEOUT, |reply| WorkerCommand::Reclassify { reply });
            let answered = replies.iter().filter(|r| r.is_some()).count();
            let n: u64 = replies.into_iter().flatten().sum();
            if answered < dp.workers() {
                return Response::error(None, ErrorCode::Unavailable, format!("{what}; {} workers did not re-classify live flows in time ({n} switched on the others)", dp.workers() - answered));
            }
            switched = Some(n);
        }
        match switched {
            Some(flows_switched) => tracing::info!(
                uid,
                generation,
                in_force_us = took.as_micros() as u64,
                flows_switched,
                "control: {what}"
            ),
            None => tracing::info!(
                uid,
                generation,
                in_force_us = took.as_micros() as u64,
                "control: {what}"
            ),
        }
        Response::ok(
            None,
            PolicyChangeReply {
                id,
                generation,
                in_force_us: took.as_micros() as u64,
                flows_switched: switched,
            },
        )
    }

    /// The data plane's counters with the policy rules' hits.
    pub fn stats(&self, dp: &Dataplane) -> tollgate_control::StatsSnapshot {
        let mut snap = dp.snapshot_now();
        let hits = dp.rule_hits();
        let limits = dp.limit_counters();
        snap.rules = self
            .set
            .rules
            .iter()
            .map(|r| {
                let h = hits.get(r.id as usize).copied().unwrap_or_default();
                tollgate_control::RuleStats {
                    id: r.id,
                    name: r.spec.name.clone(),
                    action: r.spec.action,
                    flows: h.flows,
                    packets: h.packets,
                    bytes: h.bytes,
                    limits: limits.get(&r.id).copied(),
                }
            })
            .collect();
        if let Some(socket) = &self.socket {
            snap.control_socket = socket.snapshot();
        }
        snap
    }

    fn list(&self, dp: &Dataplane) -> Response {
        let hits = dp.rule_hits();
        let limits = dp.limit_counters();
        let rules = self
            .set
            .rules
            .iter()
            .map(|r| RuleView {
                rule: r.clone(),
                hits: hits
                    .get(r.id as usize)
                    .copied()
                    .unwrap_or(RuleHits::default()),
                limit_counters: limits.get(&r.id).copied(),
            })
            .collect();
        Response::ok(
            None,
            PolicyListReply {
                generation: self.generation,
                rules,
                defaults: self.defaults,
            },
        )
    }

    fn explain(&self, dp: &Dataplane, q: &ExplainQuery) -> Response {
        if q.src.is_ipv4() != q.dst.is_ipv4() {
            return Response::error(
                None,
                ErrorCode::Invalid,
                "src and dst are of different address families",
            );
        }
        let fields = q.flow_fields();
        let policy = dp.board().current();
        let decision = policy.decide(&fields);
        let action = action_of(decision.mode);
        let rule: Option<Rule> = self
            .set
            .rules
            .iter()
            .find(|r| r.id == decision.rule && decision.rule != 0)
            .cloned();
        let limits = match policy.limits(decision.rule) {
            Some(l) if rule.is_some() => l.now_for(q.src.ip()),
            _ => Vec::new(),
        };
        let mut explanation = match &rule {
            Some(r) => format!("{} matches: {action}", rule_label(r)),
            None => format!("no rule matches: the default for {} is {action}", q.proto),
        };
        let reached: Vec<String> = limits
            .iter()
            .filter(|l| l.reached)
            .map(|l| format!("{} {}", l.limit, l.max))
            .collect();
        if let (Some(r), false) = (&rule, reached.is_empty()) {
            let _ = write!(
                explanation,
                "; {} reached: a new flow would be {}",
                reached.join(" and "),
                match r.spec.limit_action() {
                    LimitAction::Reset => "reset",
                    LimitAction::Bypass => "bypassed (forwarded unproxied)",
                }
            );
        }
        Response::ok(
            None,
            ExplainReply {
                action,
                rule,
                explanation,
                limits,
            },
        )
    }

    fn flows_clear(
        &self,
        dp: &Dataplane,
        uid: u32,
        filter: tollgate_control::protocol::FlowFilter,
        hand_over: bool,
    ) -> Response {
        let action = if hand_over {
            ClearAction::HandOver
        } else {
            ClearAction::Reset
        };
        let replies = dp.ask_workers(WORKER_TIMEOUT, |reply| WorkerCommand::ClearFlows {
            filter: filter.clone(),
            action,
            reply,
        });
        let answered = replies.iter().filter(|r| r.is_some()).count();
        let mut all = FlowsClearReply::default();
        for reply in replies.into_iter().flatten() {
            all.absorb(reply);
        }
        let (p, b, d) = (all.proxy, all.bypass, all.drop);
        if answered < dp.workers() {
            return Response::error(
                None,
                ErrorCode::Unavailable,
                format!(
                    "{} of {} workers did not answer; on the others {} flows cleared ({} proxied connections reset, {} handed over)",
                    dp.workers() - answered,
                    dp.workers(),
                    all.cleared,
                    p.reset,
                    p.handed_over
                ),
            );
        }
        tracing::info!(
            uid,
            cleared = all.cleared,
            proxy_reset = p.reset,
            proxy_handed_over = p.handed_over,
            proxy_forgotten = p.forgotten,
            proxy_kept = p.kept,
            bypass_forgotten = b.forgotten,
            bypass_kept = b.kept,
            drop_forgotten = d.forgotten,
            "control: flows cleared"
        );
        Response::ok(None, all)
    }

    fn flows_list(
        &self,
        dp: &Dataplane,
        filter: tollgate_control::protocol::FlowFilter,
        page: u32,
        page_size: u32,
    ) -> Response {
        let want = (page as usize + 1) * page_size as usize;
        let replies = dp.ask_workers(WORKER_TIMEOUT, |reply| WorkerCommand::ListFlows {
            filter: filter.clone(),
            limit: want,
            reply,
        });
        if replies.iter().any(Option::is_none) {
            let missing = replies.iter().filter(|r| r.is_none()).count();
            return Response::error(
                None,
                ErrorCode::Unavailable,
                format!(
                    "{missing} of {} workers did not answer in time",
                    dp.workers()
                ),
            );
        }
        let mut total = 0;
        let mut flows: Vec<FlowView> = Vec::new();
        for (n, mut f) in replies.into_iter().flatten() {
            total += n;
            flows.append(&mut f);
        }
        let mut flows: Vec<FlowView> = flows
            .into_iter()
            .skip(page as usize * page_size as usize)
            .take(page_size as usize)
            .collect();
        for f in &mut flows {
            f.reason = match f
                .rule
                .and_then(|id| self.set.rules.iter().find(|r| r.id == id))
            {
                Some(r) => rule_label(r),
                None if f.rule.is_some() => format!("rule {} (since deleted)", f.rule.unwrap_or(0)),
                None => format!("default for {}", f.proto),
            };
        }
        Response::ok(
            None,
            FlowsListReply {
                total,
                page,
                page_size,
                flows,
            },
        )
    }
}

/// Before counters are read for an operator: what a worker did before the request is in the
/// reply, so a check that reads once after causing something sees it.
fn publish_first(dp: &Dataplane) {
    let published = dp.publish_now(WORKER_TIMEOUT);
    if published < dp.workers() {
        tracing::warn!(
            "control: {} of {} workers did not publish their counters within {WORKER_TIMEOUT:?}; theirs are as last published",
            dp.workers() - published,
            dp.workers()
        );
    }
}

fn rule_label(r: &Rule) -> String {
    match &r.spec.name {
        Some(name) => format!("rule {} ({name})", r.id),
        None => format!("rule {}", r.id),
    }
}

/// A rule in one line, for logs.
fn describe(spec: &RuleSpec) -> String {
    match &spec.name {
        Some(name) => format!("{} {} name {name:?}", spec.action, spec.matches),
        None => format!("{} {}", spec.action, spec.matches),
    }
}

/// Forwards requests from the socket server's threads to the main thread.
pub struct ToMainThread {
    pub requests: crossbeam::channel::Sender<(Request, u32, crossbeam::channel::Sender<Response>)>,
}

impl tollgate_control::server::Handler for ToMainThread {
    fn handle(&self, request: Request, peer: &tollgate_control::server::Peer) -> Response {
        let seq = request.seq;
        let (tx, rx) = crossbeam::channel::bounded(1);
        if self
            .requests
            .send_timeout((request, peer.uid, tx), Duration::from_secs(5))
            .is_err()
        {
            return Response::error(
                seq,
                ErrorCode::Unavailable,
                "the daemon is busy or stopping; try again",
            );
        }
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                Response::error(
                    seq,
                    ErrorCode::Unavailable,
                    "the daemon did not answer in time",
                )
            })
    }
}

pub type RequestQueue =
    crossbeam::channel::Receiver<(Request, u32, crossbeam::channel::Sender<Response>)>;
