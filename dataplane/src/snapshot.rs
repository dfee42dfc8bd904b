//! Turning worker reports, device counters and the split audit into the
//! snapshot operators read.

use tollgate_control::{MempoolStats, PortCounters, StatsSnapshot, WorkerStats};

use crate::worker::WorkerReport;
use tollgate_core::counters::DropReason;
use tollgate_core::wire::Malformed;

pub struct SnapshotInputs<'a> {
    pub uptime_secs: u64,
    pub steering: String,
    pub ports: [(&'static str, PortCounters); 2],
    pub workers: &'a [(usize, Option<usize>, WorkerReport)],
    pub split_flows: u64,
    pub split_unchecked: u64,
    pub mempool: MempoolStats,
    /// The proxy's inspection signatures, in configuration order.
    pub signature_names: &'a [String],
}

pub fn port_counters(s: &dpdk::PortStats) -> PortCounters {
    PortCounters {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

/// Folds a reading of a port's counters into what was reported before,
/// counter by counter, keeping the larger.
///
/// Tollgate never resets a port's counters, so none of them should fall; on
/// some devices they do while the port has no peer. memif sums the rings of
/// its current connection, so it reads zero from the moment Pktgen or a
/// neighbouring process disconnects, while its queues keep their counts for
/// the next connection. Without the latch the final counters of a lab run
/// would show ports that never received a frame.
pub fn latch_port_counters(seen: &mut PortCounters, reading: &PortCounters) {
    // Destructured so that a counter added to PortCounters cannot be missed here.
    let PortCounters {
        ipackets,
        opackets,
        ibytes,
        obytes,
        imissed,
        ierrors,
        oerrors,
        rx_nombuf,
    } = *reading;
    seen.ipackets = seen.ipackets.max(ipackets);
    seen.opackets = seen.opackets.max(opackets);
    seen.ibytes = seen.ibytes.max(ibytes);
    seen.obytes = seen.obytes.max(obytes);
    seen.imissed = seen.imissed.max(imissed);
    seen.ierrors = seen.ierrors.max(ierrors);
    seen.oerrors = seen.oerrors.max(oerrors);
    seen.rx_nombuf = seen.rx_nombuf.max(rx_nombuf);
}

pub fn snapshot(inputs: SnapshotInputs<'_>) -> StatsSnapshot {
    let mut snap = StatsSnapshot {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: inputs.uptime_secs,
        steering: inputs.steering,
        flows_split_across_workers: inputs.split_flows,
        split_audit_unchecked: inputs.split_unchecked,
        mempool: inputs.mempool,
        ..Default::default()
    };
    for (name, counters) in inputs.ports {
        snap.ports.insert(name.to_string(), counters);
    }
    // New flows the audit did not check: those it had no room to remember, and those the
    // workers could not even report to it.
    snap.split_audit_unchecked += inputs
        .workers
        .iter()
        .map(|(_, _, report)| report.counters.split_audit_unsent)
        .sum::<u64>();
    let mut drops = [0u64; DropReason::COUNT];
    let mut malformed = [0u64; Malformed::COUNT];
    for (id, core, report) in inputs.workers {
        let c = &report.counters;
        let w = WorkerStats {
            id: Some(*id as u16),
            core: *core,
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            non_ip: c.non_ip,
            flows_active: report.flows_active as u64,
            flows_created: c.flows_created,
            flows_expired: c.flows_expired,
            flows_table_full: c.flows_table_full,
            flows_untracked_rst: c.flows_untracked_rst,
            flow_capacity: report.flow_capacity as u64,
            handoff_out: c.handoff_out,
            handoff_in: c.handoff_in,
            malformed_forwarded: c.malformed_forwarded,
            drops: c.total_drops(),
        };
        snap.totals.add(&w);
        snap.workers.push(w);
        for (total, v) in drops.iter_mut().zip(c.drops) {
            *total += v;
        }
        for (total, v) in malformed.iter_mut().zip(c.malformed) {
            *total += v;
        }
        snap.proxy.add(&report.proxy);
        snap.reassembly.add(&report.reassembly);
        for (name, hits) in inputs.signature_names.iter().zip(&report.signature_hits) {
            *snap.signature_hits.entry(name.clone()).or_default() += hits;
        }
    }
    for reason in DropReason::ALL {
        snap.drops
            .insert(reason.name().to_string(), drops[reason.index()]);
    }
    for reason in Malformed::ALL {
        snap.malformed
            .insert(reason.name().to_string(), malformed[reason.index()]);
    }
    snap
}

/// Writes the snapshot as JSON, atomically (a reader never sees half a file).
pub fn write_file(path: &std::path::Path, snap: &StatsSnapshot) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(snap).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchecked_flows_count_both_the_audits_and_the_workers_unsent_reports() {
        let mut reports = Vec::new();
        for (id, unsent) in [(0usize, 3u64), (1, 4)] {
            let mut report = WorkerReport::default();
            report.counters.split_audit_unsent = unsent;
            reports.push((id, None, report));
        }
        let snap = snapshot(SnapshotInputs {
            uptime_secs: 1,
            steering: "software".into(),
            ports: [
                ("inside", PortCounters::default()),
                ("outside", PortCounters::default()),
            ],
            workers: &reports,
            split_flows: 0,
            split_unchecked: 5,
            mempool: MempoolStats::default(),
            signature_names: &[],
        });
        assert_eq!(snap.split_audit_unchecked, 12);
    }

    #[test]
    fn a_port_read_while_its_peer_is_away_keeps_its_counts() {
        let reading = |packets: u64, nombuf: u64| PortCounters {
            ipackets: packets,
            opackets: packets / 2,
            ibytes: packets * 64,
            obytes: packets * 32,
            imissed: packets / 4,
            ierrors: 1,
            oerrors: 2,
            rx_nombuf: nombuf,
        };
        let mut seen = PortCounters::default();
        latch_port_counters(&mut seen, &reading(1000, 3));
        assert_eq!(seen, reading(1000, 3));
        // The peer left: memif reads zero, but the frames were received.
        latch_port_counters(&mut seen, &PortCounters::default());
        assert_eq!(seen, reading(1000, 3));
        // It came back; its queues had kept their counts and go on from them.
        latch_port_counters(&mut seen, &reading(1500, 3));
        assert_eq!(seen, reading(1500, 3));
        // Each counter is kept on its own: one that grew is taken even when
        // others read lower.
        latch_port_counters(&mut seen, &reading(0, 9));
        assert_eq!(seen, reading(1500, 9));
    }
}
