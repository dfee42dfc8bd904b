//! Per-worker counters: plain integers owned by one worker (no atomics on the
//! per-packet path), copied out between bursts for the control plane.

use crate::wire::Malformed;

/// Why tollgate dropped a frame. Every drop has one, and each is a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The frame failed parsing and `malformed.action` is drop.
    Malformed,
    /// A new flow found the table full and `flows.on_full` is drop.
    TableFull,
    /// The driver refused the frame `ports.tx_retries` times.
    TxFull,
    /// The ring to the worker that owns the flow was full.
    HandoffFull,
    /// The flow's policy says drop.
    Policy,
    /// A segment of a proxied flow with a wrong TCP checksum: the proxy acknowledges what it
    /// accepts, so it must not accept a corrupted segment (its sender will retransmit).
    TcpChecksum,
    /// A frame of a proxied flow the proxy cannot take: an IP fragment (with `[reassembly]`
    /// off or under a NIC's hash), unreadable TCP options, more than two VLAN tags, or a frame
    /// spread over several buffers.
    ProxyUnusable,
    /// The first packet of a TCP flow under proxy policy was not a SYN (a flow picked up
    /// mid-stream, or an ACK flood) and `proxy.on_midstream` is drop: the ASA's `tcp-not-syn`.
    TcpNotSyn,
    /// An IP fragment of a TCP datagram that reassembly gave up on (timed out, overlapping,
    /// over a bound, a tiny first fragment: `reassembly` in the stats says which).
    Fragment,
}

impl DropReason {
    pub const COUNT: usize = 9;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::TableFull,
        DropReason::TxFull,
        DropReason::HandoffFull,
        DropReason::Policy,
        DropReason::TcpChecksum,
        DropReason::ProxyUnusable,
        DropReason::TcpNotSyn,
        DropReason::Fragment,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::TableFull => "table_full",
            DropReason::TxFull => "tx_full",
            DropReason::HandoffFull => "handoff_full",
            DropReason::Policy => "policy",
            DropReason::TcpChecksum => "tcp_checksum",
            DropReason::ProxyUnusable => "proxy_unusable",
            DropReason::TcpNotSyn => "tcp_not_syn",
            DropReason::Fragment => "fragment",
        }
    }

    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    /// ARP, LLDP and every other non-IP frame, passed through.
    pub non_ip: u64,
    pub flows_created: u64,
    pub flows_expired: u64,
    /// New flows that found the table full (forwarded untracked or dropped).
    pub flows_table_full: u64,
    /// TCP RSTs of no known flow, handled by their policy without an entry: a RST ends
    /// whatever it belongs to, so there is nothing to track.
    pub flows_untracked_rst: u64,
    /// Frames sent to the worker that owns their flow (software steering).
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// Malformed frames forwarded anyway (`malformed.action = forward`).
    pub malformed_forwarded: u64,
    pub malformed: [u64; Malformed::COUNT],
    pub drops: [u64; DropReason::COUNT],
    /// New flows the split audit never heard of: its channel was full when the worker
    /// published (the main thread was behind).
    pub split_audit_unsent: u64,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            non_ip: 0,
            flows_created: 0,
            flows_expired: 0,
            flows_table_full: 0,
            flows_untracked_rst: 0,
            handoff_out: 0,
            handoff_in: 0,
            malformed_forwarded: 0,
            malformed: [0; Malformed::COUNT],
            drops: [0; DropReason::COUNT],
            split_audit_unsent: 0,
        }
    }
}

impl WorkerCounters {
    #[inline(always)]
    pub fn drop(&mut self, reason: DropReason, frames: u64) {
        self.drops[reason.index()] += frames;
    }

    /// Frames dropped because something was wrong or full: every reason but
    /// a policy's own drops (a drop rule, `proxy.on_midstream = "drop"`), which
    /// are the operator's intent.
    pub fn total_drops(&self) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| !matches!(r, DropReason::Policy | DropReason::TcpNotSyn))
            .map(|r| self.drops[r.index()])
            .sum()
    }
}
