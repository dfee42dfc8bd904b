use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

pub use tollgate_core::ip_reassembly::ReassemblyCounters;
pub use tollgate_core::proxy::{LimitCounters, ProxyCounters};

/// Device counters of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Frames the NIC dropped because no RX descriptor was free (the workers
    /// did not keep up).
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Frames dropped because the mbuf pool was empty.
    pub rx_nombuf: u64,
}

/// One worker's counters (or their sum, with `id` and `core` absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub core: Option<usize>,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub non_ip: u64,
    pub flows_active: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    pub flows_table_full: u64,
    /// TCP RSTs of no known flow: handled by their policy, no entry made for them.
    #[serde(default)]
    pub flows_untracked_rst: u64,
    pub flow_capacity: u64,
    pub handoff_out: u64,
    pub handoff_in: u64,
    pub malformed_forwarded: u64,
    pub drops: u64,
}

impl WorkerStats {
    pub fn add(&mut self, o: &WorkerStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.non_ip += o.non_ip;
        self.flows_active += o.flows_active;
        self.flows_created += o.flows_created;
        self.flows_expired += o.flows_expired;
        self.flows_table_full += o.flows_table_full;
        self.flows_untracked_rst += o.flows_untracked_rst;
        self.flow_capacity += o.flow_capacity;
        self.handoff_out += o.handoff_out;
        self.handoff_in += o.handoff_in;
        self.malformed_forwarded += o.malformed_forwarded;
        self.drops += o.drops;
    }
}

/// Hit counters of one policy rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: crate::policy::Action,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The rule's connection limits at work, for a rule that sets any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitCounters>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolStats {
    pub size: u64,
    pub in_use: u64,
    pub available: u64,
}

/// Everything an operator reads to see whether tollgate is healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub version: String,
    pub uptime_secs: u64,
    /// How flows reach their worker: "symmetric-rss" or "software".
    pub steering: String,
    pub ports: BTreeMap<String, PortCounters>,
    pub workers: Vec<WorkerStats>,
    pub totals: WorkerStats,
    /// Frames dropped by tollgate, by reason; all zero in a healthy run.
    pub drops: BTreeMap<String, u64>,
    /// Frames that failed parsing, by reason (forwarded or dropped per config).
    pub malformed: BTreeMap<String, u64>,
    /// Flows seen on more than one worker: must stay 0.
    pub flows_split_across_workers: u64,
    /// New flows the split audit could not check: its table was full, or a worker found its
    /// channel full and could not report them.
    pub split_audit_unchecked: u64,
    pub mempool: MempoolStats,
    /// Policy rules in order, with their hit counters.
    #[serde(default)]
    pub rules: Vec<RuleStats>,
    /// The TCP proxy's counters, summed over workers.
    #[serde(default)]
    pub proxy: ProxyCounters,
    /// Per inspection signature (`[[proxy.signature]]` in the config): connections reset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signature_hits: BTreeMap<String, u64>,
    /// IP reassembly of TCP fragments, summed over workers.
    #[serde(default)]
    pub reassembly: ReassemblyCounters,
    /// The control socket's connections: what it holds now, and every connection it refused
    /// or closed on its own, by why.
    #[serde(default)]
    pub control_socket: ControlSocketCounters,
}

/// The control socket's counters. Gauges say so; everything else counts up from start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlSocketCounters {
    /// Gauge: connections open now (at most `control.max_clients`).
    pub connections: u64,
    /// Gauge: of those, the ones with a request arriving or being answered.
    pub requests_in_progress: u64,
    pub connections_accepted: u64,
    /// Refused because every connection was taken: for root, by requests in progress (nothing
    /// idle to close); for other users, up to the slots `control.reserved_for_root` keeps.
    pub refused_full: u64,
    /// Refused because the user already had `control.max_clients_per_uid` connections open.
    pub refused_uid_limit: u64,
    /// Refused because the user is neither root nor in the control group.
    pub refused_not_permitted: u64,
    /// Idle connections closed to make room for root (the longest idle first).
    pub evicted_idle: u64,
    /// Closed after `control.idle_timeout_secs` without a request.
    pub idle_timeouts: u64,
    /// Closed because a request begun did not arrive whole within
    /// `control.request_timeout_secs`.
    pub request_timeouts: u64,
    /// Closed because the client did not read its reply in time.
    pub write_timeouts: u64,
    /// Closed because a request was longer than the protocol allows.
    pub requests_too_large: u64,
}

impl ControlSocketCounters {
    /// The control socket's line of the stats table.
    fn render(&self, out: &mut String) {
        // Destructured, so a counter added later fails to compile until it is shown here.
        let ControlSocketCounters {
            connections,
            requests_in_progress,
            connections_accepted,
            refused_full,
            refused_uid_limit,
            refused_not_permitted,
            evicted_idle,
            idle_timeouts,
            request_timeouts,
            write_timeouts,
            requests_too_large,
        } = *self;
        let _ = writeln!(
            out,
            "control socket: {connections} connections ({requests_in_progress} with a request in progress), \
             {connections_accepted} accepted; refused: {refused_full} full, {refused_uid_limit} at the \
             per-uid limit, {refused_not_permitted} not permitted; closed: {evicted_idle} idle to make \
             room for root, {idle_timeouts} idle timeouts, {request_timeouts} request timeouts, \
             {write_timeouts} write timeouts, {requests_too_large} requests too large"
        );
    }
}

impl StatsSnapshot {
    /// The counters as a table a person can read at a glance.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tollgate {}  uptime {}s  steering {}",
            self.version, self.uptime_secs, self.steering
        );
        let _ = writeln!(
            out,
            "{:<8} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9} {:>10}",
            "port",
            "ipackets",
            "opackets",
            "ibytes",
            "obytes",
            "imissed",
            "ierrors",
            "oerrors",
            "rx_nombuf"
        );
        for (name, p) in &self.ports {
            let _ = writeln!(
                out,
                "{:<8} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9} {:>10}",
                name,
                p.ipackets,
                p.opackets,
                p.ibytes,
                p.obytes,
                p.imissed,
                p.ierrors,
                p.oerrors,
                p.rx_nombuf
            );
        }
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>12} {:>12} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}",
            "worker",
            "core",
            "rx",
            "tx",
            "flows",
            "created",
            "expired",
            "handoff>",
            ">handoff",
            "drops"
        );
        let row = |out: &mut String, name: String, core: String, w: &WorkerStats| {
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>12} {:>12} {:>9} {:>9} {:>9} {:>10} {:>10} {:>8}",
                name,
                core,
                w.rx_packets,
                w.tx_packets,
                w.flows_active,
                w.flows_created,
                w.flows_expired,
                w.handoff_out,
                w.handoff_in,
                w.drops
            );
        };
        for w in &self.workers {
            let id = w.id.map(|i| i.to_string()).unwrap_or_default();
            let core = w.core.map(|c| c.to_string()).unwrap_or_default();
            row(&mut out, id, core, w);
        }
        row(&mut out, "total".into(), String::new(), &self.totals);
        let _ = writeln!(
            out,
            "flows: {} active of {} capacity, {} found the table full, {} split across workers, \
             {} RSTs of no known flow left untracked",
            self.totals.flows_active,
            self.totals.flow_capacity,
            self.totals.flows_table_full,
            self.flows_split_across_workers,
            self.totals.flows_untracked_rst
        );
        let _ = writeln!(
            out,
            "mbufs: {} in use, {} available of {}",
            self.mempool.in_use, self.mempool.available, self.mempool.size
        );
        for r in &self.rules {
            let _ = writeln!(
                out,
                "rule {:<5} {:<7} {:<24} flows {:>10} packets {:>12} bytes {:>14}",
                r.id,
                r.action,
                r.name.as_deref().unwrap_or("-"),
                r.flows,
                r.packets,
                r.bytes
            );
            if let Some(limits) = &r.limits {
                let _ = writeln!(out, "rule {:<5} limits: {}", r.id, limits.describe());
            }
        }
        self.proxy.render(&mut out);
        self.reassembly.render(&mut out);
        self.control_socket.render(&mut out);
        let drops: Vec<String> = self.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "drops: {}", drops.join(" "));
        let malformed: Vec<String> = self
            .malformed
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "malformed: {} ({} forwarded)",
            if malformed.is_empty() {
                "none".to_string()
            } else {
                malformed.join(" ")
            },
            self.totals.malformed_forwarded
        );
        out
    }
}

/// Prometheus text exposition (format 0.0.4) of a snapshot: what `tollgatectl stats
/// --prometheus` prints and the daemon's optional HTTP endpoint serves.
///
/// Every counter of the JSON snapshot is here, named `tollgate_<group>_<field>` with `_total`
/// on counters; the port, worker, reason, rule and signature are labels. Counter groups whose
/// fields are plain counts (ports, workers, the proxy) are walked through their JSON form, so a
/// counter added to one of them is exported without another line here.
pub struct Prometheus<'a>(pub &'a StatsSnapshot);

/// Fields of the walked groups that are gauges (a level now), not counters.
const GAUGES: &[&str] = &[
    "connections",
    "requests_in_progress",
    "embryonic",
    "connections_open",
    "flows_active",
    "flow_capacity",
    "connections_active",
    "buffered_bytes",
];

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Samples of one metric family, written with its HELP and TYPE lines once.
struct Family {
    name: String,
    help: String,
    gauge: bool,
    samples: Vec<(String, u64)>,
}

impl Family {
    fn new(name: String, help: impl Into<String>, gauge: bool) -> Family {
        Family {
            name,
            help: help.into(),
            gauge,
            samples: Vec::new(),
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect::<Vec<_>>()
            .join(",");
        self.samples.push((labels, value));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let kind = if self.gauge { "gauge" } else { "counter" };
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        for (labels, value) in &self.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {value}", self.name);
            } else {
                let _ = writeln!(out, "{}{{{labels}}} {value}", self.name);
            }
        }
    }
}

/// Families in the order they were first named.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn get(&mut self, name: String, help: &str, gauge: bool) -> &mut Family {
        match self.0.iter().position(|f| f.name == name) {
            Some(i) => &mut self.0[i],
            None => {
                self.0.push(Family::new(name, help, gauge));
                self.0.last_mut().expect("just pushed")
            }
        }
    }

    /// Each numeric field of `group` (serialized) as `tollgate_<prefix>_<field>[_total]`.
    fn walk(&mut self, prefix: &str, what: &str, group: &impl Serialize, labels: &[(&str, &str)]) {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(group) else {
            return;
        };
        for (field, value) in fields {
            let (Some(value), false) = (value.as_u64(), field == "id" || field == "core") else {
                continue;
            };
            let gauge = GAUGES.contains(&field.as_str());
            let name = if gauge {
                format!("tollgate_{prefix}_{field}")
            } else {
                format!("tollgate_{prefix}_{field}_total")
            };
            let help = format!(
                "{what}: {} (see tollgatectl stats)",
                field.replace('_', " ")
            );
            self.get(name, &help, gauge).sample(labels, value);
        }
    }
}

impl std::fmt::Display for Prometheus<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        let mut fam = Families::default();
        fam.get(
            "tollgate_info".into(),
            "Version and flow steering of the daemon",
            true,
        )
        .sample(&[("version", &s.version), ("steering", &s.steering)], 1);
        fam.get(
            "tollgate_uptime_seconds".into(),
            "Seconds since the daemon started",
            true,
        )
        .sample(&[], s.uptime_secs);
        for (port, counters) in &s.ports {
            fam.walk(
                "port",
                "Device counter of the port",
                counters,
                &[("port", port)],
            );
        }
        for w in &s.workers {
            let id = w.id.map(|i| i.to_string()).unwrap_or_default();
            let core = w.core.map(|c| c.to_string()).unwrap_or_default();
            fam.walk(
                "worker",
                "Worker counter",
                w,
                &[("worker", &id), ("core", &core)],
            );
        }
        let drops = fam.get(
            "tollgate_drops_total".into(),
            "Frames tollgate dropped, by reason",
            false,
        );
        for (reason, n) in &s.drops {
            drops.sample(&[("reason", reason)], *n);
        }
        let malformed = fam.get(
            "tollgate_malformed_total".into(),
            "Frames that failed parsing, by reason (forwarded or dropped per config)",
            false,
        );
        for (reason, n) in &s.malformed {
            malformed.sample(&[("reason", reason)], *n);
        }
        fam.get(
            "tollgate_flows_split_across_workers_total".into(),
            "Flows seen on more than one worker (must stay 0)",
            false,
        )
        .sample(&[], s.flows_split_across_workers);
        fam.get(
            "tollgate_split_audit_unchecked_total".into(),
            "New flows the split audit could not check (its table or its channel was full)",
            false,
        )
        .sample(&[], s.split_audit_unchecked);
        let m = &s.mempool;
        fam.get(
            "tollgate_mempool_mbufs".into(),
            "Packet buffers of the pool, by state",
            true,
        )
        .sample(&[("state", "in_use")], m.in_use);
        fam.get("tollgate_mempool_mbufs".into(), "", true)
            .sample(&[("state", "available")], m.available);
        fam.get(
            "tollgate_mempool_size".into(),
            "Packet buffers in the pool",
            true,
        )
        .sample(&[], m.size);
        for r in &s.rules {
            let id = r.id.to_string();
            let name = r.name.clone().unwrap_or_default();
            let labels = [
                ("rule", id.as_str()),
                ("name", name.as_str()),
                ("action", r.action.name()),
            ];
            fam.walk("rule", "Policy rule counter", r, &labels);
            if let Some(limits) = &r.limits {
                fam.walk("rule", "Policy rule connection limits", limits, &labels);
            }
        }
        fam.walk("proxy", "TCP proxy counter", &s.proxy, &[]);
        fam.walk("reassembly", "IP reassembly counter", &s.reassembly, &[]);
        fam.walk(
            "control_socket",
            "Control socket counter",
            &s.control_socket,
            &[],
        );
        let hits = fam.get(
            "tollgate_signature_hits_total".into(),
            "Proxied connections reset by an inspection signature",
            false,
        );
        for (signature, n) in &s.signature_hits {
            hits.sample(&[("signature", signature)], *n);
        }
        let mut out = String::new();
        for family in fam.0.iter().filter(|f| !f.samples.is_empty()) {
            family.write(&mut out);
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the exposition format as a scraper reads it: HELP and TYPE once per family,
    /// before its samples; sample lines `name{labels} value`; counters end in `_total`.
    fn check_exposition(text: &str) -> BTreeMap<String, String> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name.to_string()), "HELP twice: {line}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(matches!(kind, "counter" | "gauge"), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(
                    types.insert(name.into(), kind.into()).is_none(),
                    "TYPE twice: {line}"
                );
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                value
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("value of {line}"));
                let name = series.split('{').next().unwrap();
                assert!(types.contains_key(name), "sample before its TYPE: {line}");
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                if series.contains('{') {
                    assert!(series.ends_with('}'), "{line}");
                }
            }
        }
        types
    }

    #[test]
    fn prometheus_exposition_has_every_counter_labelled() {
        let mut s = StatsSnapshot {
            version: "0.1.0".into(),
            uptime_secs: 42,
            steering: "software".into(),
            ..Default::default()
        };
        s.ports.insert(
            "inside".into(),
            PortCounters {
                ipackets: 5,
                imissed: 1,
                ..Default::default()
            },
        );
        s.ports.insert("outside".into(), PortCounters::default());
        s.workers.push(WorkerStats {
            id: Some(1),
            core: Some(3),
            flows_active: 7,
            rx_packets: 9,
            ..Default::default()
        });
        s.drops.insert("tx_full".into(), 3);
        s.malformed.insert("truncated".into(), 2);
        s.rules.push(RuleStats {
            id: 1,
            name: Some("ctcp \"vpn\"\\1".into()),
            action: crate::policy::Action::Bypass,
            flows: 1,
            packets: 11,
            bytes: 1_100,
            limits: None,
        });
        s.rules.push(RuleStats {
            id: 2,
            name: None,
            action: crate::policy::Action::Proxy,
            flows: 5,
            packets: 50,
            bytes: 5_000,
            limits: Some(LimitCounters {
                connections: 3,
                embryonic: 1,
                conn_max_hits: 2,
                embryonic_max_hits: 4,
                per_client_max_hits: 6,
                limit_reset: 7,
                limit_bypassed: 5,
            }),
        });
        s.proxy.detected_ctcp_ike = 2;
        s.proxy.connections_active = 4;
        s.signature_hits.insert("exfil".into(), 6);
        s.control_socket.connections = 3;
        s.control_socket.evicted_idle = 8;
        let text = Prometheus(&s).to_string();
        let types = check_exposition(&text);
        for line in [
            "tollgate_info{version=\"0.1.0\",steering=\"software\"} 1",
            "tollgate_uptime_seconds 42",
            "tollgate_port_ipackets_total{port=\"inside\"} 5",
            "tollgate_port_imissed_total{port=\"inside\"} 1",
            "tollgate_port_ipackets_total{port=\"outside\"} 0",
            "tollgate_worker_rx_packets_total{worker=\"1\",core=\"3\"} 9",
            "tollgate_worker_flows_active{worker=\"1\",core=\"3\"} 7",
            "tollgate_drops_total{reason=\"tx_full\"} 3",
            "tollgate_malformed_total{reason=\"truncated\"} 2",
            "tollgate_flows_split_across_workers_total 0",
            "tollgate_mempool_mbufs{state=\"in_use\"} 0",
            "tollgate_rule_packets_total{rule=\"1\",name=\"ctcp \\\"vpn\\\"\\\\1\",action=\"bypass\"} 11",
            "tollgate_rule_flows_total{rule=\"2\",name=\"\",action=\"proxy\"} 5",
            "tollgate_rule_connections{rule=\"2\",name=\"\",action=\"proxy\"} 3",
            "tollgate_rule_embryonic{rule=\"2\",name=\"\",action=\"proxy\"} 1",
            "tollgate_rule_conn_max_hits_total{rule=\"2\",name=\"\",action=\"proxy\"} 2",
            "tollgate_rule_per_client_max_hits_total{rule=\"2\",name=\"\",action=\"proxy\"} 6",
            "tollgate_rule_limit_reset_total{rule=\"2\",name=\"\",action=\"proxy\"} 7",
            "tollgate_proxy_detected_ctcp_ike_total 2",
            "tollgate_proxy_connections_active 4",
            "tollgate_signature_hits_total{signature=\"exfil\"} 6",
            "tollgate_control_socket_connections 3",
            "tollgate_control_socket_evicted_idle_total 8",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert_eq!(types["tollgate_proxy_connections_active"], "gauge");
        assert_eq!(types["tollgate_worker_flow_capacity"], "gauge");
        // Every rule counter is exported, one family each, with a sample per rule that has it.
        let rule = serde_json::to_value(&s.rules[1]).unwrap();
        let limits = serde_json::to_value(s.rules[1].limits).unwrap();
        let rule_families: Vec<&String> = types
            .keys()
            .filter(|n| n.starts_with("tollgate_rule_"))
            .collect();
        // The rule's own counters (not its id, name, action or the nested limits)...
        let own = rule
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v.is_u64())
            .count()
            - 1;
        assert_eq!(rule_families.len(), own + limits.as_object().unwrap().len());
        assert_eq!(types["tollgate_rule_connections"], "gauge");
        assert_eq!(types["tollgate_rule_embryonic"], "gauge");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("tollgate_rule_limit_bypassed_total{"))
                .count(),
            1,
            "limit counters only for the rule with limits"
        );
        // Every proxy counter is exported, one family each.
        let proxy = serde_json::to_value(s.proxy).unwrap();
        assert_eq!(
            types
                .keys()
                .filter(|n| n.starts_with("tollgate_proxy_"))
                .count(),
            proxy.as_object().unwrap().len()
        );
        assert_eq!(
            types["tollgate_control_socket_requests_in_progress"],
            "gauge"
        );
        let control = serde_json::to_value(s.control_socket).unwrap();
        assert_eq!(
            types
                .keys()
                .filter(|n| n.starts_with("tollgate_control_socket_"))
                .count(),
            control.as_object().unwrap().len()
        );
    }

    #[test]
    fn a_snapshot_round_trips_through_json() {
        let mut s = StatsSnapshot {
            version: "0.1.0".into(),
            steering: "software".into(),
            ..Default::default()
        };
        s.ports.insert(
            "inside".into(),
            PortCounters {
                ipackets: 7,
                ..Default::default()
            },
        );
        s.drops.insert("tx_full".into(), 3);
        s.workers.push(WorkerStats {
            id: Some(0),
            core: Some(1),
            rx_packets: 7,
            ..Default::default()
        });
        let json = serde_json::to_string(&s).unwrap();
        let back: StatsSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(json.contains("\"flows_split_across_workers\":0"));
    }

    #[test]
    fn the_table_shows_ports_workers_and_drops() {
        let mut s = StatsSnapshot::default();
        s.ports.insert(
            "outside".into(),
            PortCounters {
                opackets: 42,
                ..Default::default()
            },
        );
        s.drops.insert("table_full".into(), 5);
        s.malformed.insert("tcp_truncated".into(), 2);
        s.rules.push(RuleStats {
            id: 4,
            name: Some("ctcp".into()),
            action: crate::policy::Action::Bypass,
            flows: 1,
            packets: 99,
            bytes: 1234,
            limits: Some(LimitCounters {
                connections: 3,
                embryonic: 1,
                conn_max_hits: 2,
                embryonic_max_hits: 0,
                per_client_max_hits: 4,
                limit_reset: 6,
                limit_bypassed: 0,
            }),
        });
        let t = s.render_table();
        assert!(t.contains("ctcp") && t.contains("99"), "{t}");
        assert!(
            t.contains("\nrule 4     limits: 3 connections open (1 embryonic); new flows past a limit: 2 at conn-max, 0 at embryonic-max, 4 at per-client-max; 6 reset, 0 bypassed\n"),
            "{t}"
        );
        assert!(t.contains("outside") && t.contains("42"));
        assert!(t.contains("table_full=5"));
        assert!(t.contains("tcp_truncated=2"));
        assert!(
            t.contains("\nproxy: no proxied connections since start\n"),
            "{t}"
        );
    }

    #[test]
    fn the_table_shows_every_proxy_counter() {
        let s = StatsSnapshot {
            proxy: ProxyCounters {
                connections_active: 101,
                connections_opened: 102,
                connections_established: 103,
                connections_refused: 104,
                connect_timeouts: 105,
                connections_reset: 106,
                syn_cookies_sent: 107,
                syn_cookies_per_source: 134,
                syn_cookies_accepted: 108,
                syn_cookies_rejected: 109,
                syn_cookies_invalid: 147,
                retransmissions_client_leg: 110,
                retransmissions_server_leg: 111,
                stalls_wait: 112,
                stalls_reset: 113,
                stalls_bypass: 114,
                handovers: 115,
                inspector_resets: 116,
                budget_bypassed: 117,
                budget_reset: 118,
                flow_limit_hits: 123,
                memory_budget_hits: 124,
                buffer_shortage_hits: 125,
                buffered_bytes: 119,
                midstream_passthrough: 120,
                segments_rejected: 121,
                data_rejected_client_leg: 139,
                data_rejected_server_leg: 140,
                emit_failures: 122,
                detected_ctcp_ike: 126,
                detected_ctcp_esp: 127,
                detected_rfc8229: 128,
                detected_framed_ike: 129,
                detected_framed_esp: 130,
                detected_not_ipsec: 131,
                connections_open: 132,
                drain_bypassed: 133,
                handover_owed_bytes: 135,
                handover_retransmissions: 136,
                handover_delivered: 137,
                handover_abandoned: 138,
                handover_untranslated: 148,
                out_of_order_discarded: 141,
                out_of_order_discarded_bytes: 142,
                ecn_legs: 143,
                ecn_ce_received: 144,
                ecn_ece_received: 145,
                ecn_cwnd_reductions: 146,
            },
            ..Default::default()
        };
        let t = s.render_table();
        for n in 101..=148 {
            assert!(t.contains(&n.to_string()), "{n} missing from:\n{t}");
        }
        assert!(!t.contains("no proxied connections"), "{t}");
        for line in [
            "proxy connections: 101 active (132 open), 102 opened, 103 established, 104 refused by the server, 105 connect timeouts, 106 reset\n",
            "proxy syn cookies: 107 sent (134 past the per-source bound), 108 accepted, 109 rejected, 147 invalid ACKs dropped\n",
            "proxy retransmissions: 110 on client legs, 111 on server legs\n",
            "proxy stalls: 112 waited, 113 reset, 114 bypassed; 115 handovers to pass-through, 116 inspector resets\n",
            "proxy handovers: 135 bytes owed, 136 segments sent again; 137 delivered, 138 abandoned; 148 segments passed untranslated\n",
            "proxy budget: 119 bytes buffered now; new flows not proxied: 123 at the flow limit, 124 at the memory budget, 125 short of packet buffers; 117 bypassed, 118 reset; 133 bypassed while draining\n",
            "proxy segments: 120 flows picked up mid-stream (passed through), 121 segments rejected (139 with data on client legs, 140 on server legs), 122 emit failures (no mbuf), 141 held out of order dropped at the timeout (142 bytes)
",
            "proxy detection: 640 flows of ipsec-over-tcp passed through (ctcp-ike 126, ctcp-esp 127, rfc8229 128, framed-ike 129, framed-esp 130), 131 watched and kept proxied\n",
            "proxy ecn: 143 legs negotiated it, 144 congestion marks (CE) received, 145 echoes (ECE) received, 146 congestion window reductions for them\n",
        ] {
            assert!(t.contains(line), "{line:?} missing from:\n{t}");
        }
        let t = StatsSnapshot {
            control_socket: ControlSocketCounters {
                connections: 201,
                requests_in_progress: 202,
                connections_accepted: 203,
                refused_full: 204,
                refused_uid_limit: 205,
                refused_not_permitted: 206,
                evicted_idle: 207,
                idle_timeouts: 208,
                request_timeouts: 209,
                write_timeouts: 210,
                requests_too_large: 211,
            },
            ..Default::default()
        }
        .render_table();
        assert!(t.contains("control socket: 201 connections (202 with a request in progress), 203 accepted; refused: 204 full, 205 at the per-uid limit, 206 not permitted; closed: 207 idle to make room for root, 208 idle timeouts, 209 request timeouts, 210 write timeouts, 211 requests too large\n"), "{t}");
        // One non-zero counter is enough for the full section.
        let one = StatsSnapshot {
            proxy: ProxyCounters {
                emit_failures: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(one.render_table().contains("proxy connections: 0 active"));
    }
}
