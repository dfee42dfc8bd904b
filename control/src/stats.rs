use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

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
        self.flow_capacity += o.flow_capacity;
        self.handoff_out += o.handoff_out;
        self.handoff_in += o.handoff_in;
        self.malformed_forwarded += o.malformed_forwarded;
        self.drops += o.drops;
    }
}

/// Hit counters of one policy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub action: String,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
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
    /// New-flow reports the split audit could not check (it was full).
    pub split_audit_unchecked: u64,
    pub mempool: MempoolStats,
    /// Policy rules in order, with their hit counters.
    #[serde(default)]
    pub rules: Vec<RuleStats>,
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
            "flows: {} active of {} capacity, {} found the table full, {} split across workers",
            self.totals.flows_active,
            self.totals.flow_capacity,
            self.totals.flows_table_full,
            self.flows_split_across_workers
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
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            action: "bypass".into(),
            flows: 1,
            packets: 99,
            bytes: 1234,
        });
        let t = s.render_table();
        assert!(t.contains("ctcp") && t.contains("99"), "{t}");
        assert!(t.contains("outside") && t.contains("42"));
        assert!(t.contains("table_full=5"));
        assert!(t.contains("tcp_truncated=2"));
    }
}
