//! What the proxy counts, per worker, summed by the control plane.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// The TCP proxy's counters (issue 4). Gauges say so; everything else counts up from start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyCounters {
    /// Gauge: flows the proxy holds now (TIME-WAIT included).
    pub connections_active: u64,
    /// Gauge: of those, the ones not yet in TIME-WAIT (what a drain waits for).
    pub connections_open: u64,
    /// Client SYNs taken on by the proxy (a server leg opened for them).
    pub connections_opened: u64,
    /// Flows whose two handshakes both completed.
    pub connections_established: u64,
    /// The server refused our SYN; the client got the RST.
    pub connections_refused: u64,
    /// The server never answered our SYN.
    pub connect_timeouts: u64,
    /// A peer reset one leg, or stopped answering; the other leg was reset.
    pub connections_reset: u64,
    pub syn_cookies_sent: u64,
    /// Of those, the ones sent because their client's address had
    /// `proxy.max_embryonic_per_source` handshakes in progress (or had lately).
    pub syn_cookies_per_source: u64,
    /// Handshakes completed on a valid cookie (a proxy was created for them).
    pub syn_cookies_accepted: u64,
    /// Valid cookies whose handshake could not be rebuilt (options the proxy cannot take up);
    /// an ACK with no valid cookie is a flow picked up mid-stream (`midstream_passthrough`).
    pub syn_cookies_rejected: u64,
    /// ACKs that no cookie validates from an address sent cookies in the last 10 s: dropped,
    /// as a listener's cookie check drops them, since one may be a later segment of a client
    /// whose cookie-completing segments were lost, and passed to the server it would draw a
    /// RST that ends the client's connection. The client's retransmission completes the cookie.
    pub syn_cookies_invalid: u64,
    /// Segments the client leg sent again (RTO, fast retransmit, SACK recovery).
    pub retransmissions_client_leg: u64,
    pub retransmissions_server_leg: u64,
    /// Segments held above a hole and dropped when `proxy.out_of_order_timeout_ms` ran out
    /// (either leg), and their payload bytes: their sender sends them again.
    pub out_of_order_discarded: u64,
    pub out_of_order_discarded_bytes: u64,
    /// Stalls, by the `on-stall` action taken.
    pub stalls_wait: u64,
    pub stalls_reset: u64,
    pub stalls_bypass: u64,
    /// Flows handed over to pass-through (stall, policy or detection).
    pub handovers: u64,
    /// Payload bytes the proxy owed the endpoints at those handovers (acknowledged to their
    /// sender, not yet to their receiver), which it delivers itself afterwards...
    pub handover_owed_bytes: u64,
    /// ...its segments sent again for them (timeouts, zero-window probes not counted)...
    pub handover_retransmissions: u64,
    /// ...and how those deliveries ended: every owed byte acknowledged, or given up on (the
    /// connection was reset or expired, or the receiver stopped answering).
    pub handover_delivered: u64,
    pub handover_abandoned: u64,
    /// Segments of handed-over flows forwarded without the translation their flow needs: the
    /// proxy no longer held the flow, or could not read the segment's TCP header.
    pub handover_untranslated: u64,
    /// Signature matches that reset a flow.
    pub inspector_resets: u64,
    /// New flows the proxy could not take, by what was done with them (each condition's
    /// configured action)...
    pub budget_bypassed: u64,
    pub budget_reset: u64,
    /// ...and by the condition: `proxy.max_flows` reached, `proxy.memory_budget_mib` reached,
    /// packet buffers short.
    pub flow_limit_hits: u64,
    pub memory_budget_hits: u64,
    pub buffer_shortage_hits: u64,
    /// Gauge: payload bytes the proxy holds (send queues, out-of-order queues).
    pub buffered_bytes: u64,
    /// TCP flows in proxy mode seen without their handshake (picked up mid-stream, e.g. after
    /// a restart), each counted once: forwarded as pass-through, since there is nothing to
    /// proxy.
    pub midstream_passthrough: u64,
    /// Segments a leg did not accept, as any TCP would not: old duplicates (a peer
    /// retransmitting what was received, its ACK lost), beyond the window, RFC 5961 checks.
    /// Each is answered as RFC 9293 says (mostly with an ACK); none is forwarded.
    pub segments_rejected: u64,
    /// Of those, the ones carrying data, by the leg that refused them (beyond its window, its
    /// out-of-order queue full): never acknowledged, so a real TCP sends them again, and a
    /// peer that never retransmits (cTCP) loses them.
    pub data_rejected_client_leg: u64,
    pub data_rejected_server_leg: u64,
    /// Segments the proxy could not build (no mbuf free): its timers send them again.
    pub emit_failures: u64,
    /// Flows handed over to pass-through because their first payload showed IPsec over TCP,
    /// by how it showed: Cisco cTCP carrying IKE or ESP, RFC 8229's `IKETCP` prefix, RFC 8229
    /// framing without the prefix carrying IKE or ESP...
    pub detected_ctcp_ike: u64,
    pub detected_ctcp_esp: u64,
    pub detected_rfc8229: u64,
    pub detected_framed_ike: u64,
    pub detected_framed_esp: u64,
    /// ...and flows watched for it whose first payload showed something else (they stay
    /// proxied).
    pub detected_not_ipsec: u64,
    /// New flows forwarded unproxied because tollgate was draining (stopping on SIGTERM).
    pub drain_bypassed: u64,
    /// Legs (client and server counted apart) whose handshake set up ECN (RFC 3168)...
    pub ecn_legs: u64,
    /// ...segments they received marked Congestion Experienced...
    pub ecn_ce_received: u64,
    /// ...ACKs they received with ECE, and the congestion window reductions those caused
    /// (at most one a window).
    pub ecn_ece_received: u64,
    pub ecn_cwnd_reductions: u64,
}

impl ProxyCounters {
    pub fn add(&mut self, o: &ProxyCounters) {
        let ProxyCounters {
            connections_active,
            connections_open,
            connections_opened,
            connections_established,
            connections_refused,
            connect_timeouts,
            connections_reset,
            syn_cookies_sent,
            syn_cookies_per_source,
            syn_cookies_accepted,
            syn_cookies_rejected,
            syn_cookies_invalid,
            retransmissions_client_leg,
            retransmissions_server_leg,
            out_of_order_discarded,
            out_of_order_discarded_bytes,
            stalls_wait,
            stalls_reset,
            stalls_bypass,
            handovers,
            handover_owed_bytes,
            handover_retransmissions,
            handover_delivered,
            handover_abandoned,
            handover_untranslated,
            inspector_resets,
            budget_bypassed,
            budget_reset,
            flow_limit_hits,
            memory_budget_hits,
            buffer_shortage_hits,
            buffered_bytes,
            midstream_passthrough,
            segments_rejected,
            data_rejected_client_leg,
            data_rejected_server_leg,
            emit_failures,
            detected_ctcp_ike,
            detected_ctcp_esp,
            detected_rfc8229,
            detected_framed_ike,
            detected_framed_esp,
            detected_not_ipsec,
            drain_bypassed,
            ecn_legs,
            ecn_ce_received,
            ecn_ece_received,
            ecn_cwnd_reductions,
        } = *o;
        self.connections_active += connections_active;
        self.connections_open += connections_open;
        self.connections_opened += connections_opened;
        self.connections_established += connections_established;
        self.connections_refused += connections_refused;
        self.connect_timeouts += connect_timeouts;
        self.connections_reset += connections_reset;
        self.syn_cookies_sent += syn_cookies_sent;
        self.syn_cookies_per_source += syn_cookies_per_source;
        self.syn_cookies_accepted += syn_cookies_accepted;
        self.syn_cookies_rejected += syn_cookies_rejected;
        self.syn_cookies_invalid += syn_cookies_invalid;
        self.retransmissions_client_leg += retransmissions_client_leg;
        self.retransmissions_server_leg += retransmissions_server_leg;
        self.out_of_order_discarded += out_of_order_discarded;
        self.out_of_order_discarded_bytes += out_of_order_discarded_bytes;
        self.stalls_wait += stalls_wait;
        self.stalls_reset += stalls_reset;
        self.stalls_bypass += stalls_bypass;
        self.handovers += handovers;
        self.handover_owed_bytes += handover_owed_bytes;
        self.handover_retransmissions += handover_retransmissions;
        self.handover_delivered += handover_delivered;
        self.handover_abandoned += handover_abandoned;
        self.handover_untranslated += handover_untranslated;
        self.inspector_resets += inspector_resets;
        self.budget_bypassed += budget_bypassed;
        self.budget_reset += budget_reset;
        self.flow_limit_hits += flow_limit_hits;
        self.memory_budget_hits += memory_budget_hits;
        self.buffer_shortage_hits += buffer_shortage_hits;
        self.buffered_bytes += buffered_bytes;
        self.midstream_passthrough += midstream_passthrough;
        self.segments_rejected += segments_rejected;
        self.data_rejected_client_leg += data_rejected_client_leg;
        self.data_rejected_server_leg += data_rejected_server_leg;
        self.emit_failures += emit_failures;
        self.detected_ctcp_ike += detected_ctcp_ike;
        self.detected_ctcp_esp += detected_ctcp_esp;
        self.detected_rfc8229 += detected_rfc8229;
        self.detected_framed_ike += detected_framed_ike;
        self.detected_framed_esp += detected_framed_esp;
        self.detected_not_ipsec += detected_not_ipsec;
        self.drain_bypassed += drain_bypassed;
        self.ecn_legs += ecn_legs;
        self.ecn_ce_received += ecn_ce_received;
        self.ecn_ece_received += ecn_ece_received;
        self.ecn_cwnd_reductions += ecn_cwnd_reductions;
    }
}

impl ProxyCounters {
    pub fn is_zero(&self) -> bool {
        *self == ProxyCounters::default()
    }

    /// The proxy section of the stats table. Shown always, so an operator can
    /// tell "no proxied flows" from "a tollgate without these counters": one
    /// line while every counter is zero, eight once any is not.
    pub fn render(&self, out: &mut String) {
        if self.is_zero() {
            let _ = writeln!(out, "proxy: no proxied connections since start");
            return;
        }
        // Destructured, so a counter added later fails to compile until it
        // is shown here.
        let ProxyCounters {
            connections_active,
            connections_open,
            connections_opened,
            connections_established,
            connections_refused,
            connect_timeouts,
            connections_reset,
            syn_cookies_sent,
            syn_cookies_per_source,
            syn_cookies_accepted,
            syn_cookies_rejected,
            syn_cookies_invalid,
            retransmissions_client_leg,
            retransmissions_server_leg,
            out_of_order_discarded,
            out_of_order_discarded_bytes,
            stalls_wait,
            stalls_reset,
            stalls_bypass,
            handovers,
            handover_owed_bytes,
            handover_retransmissions,
            handover_delivered,
            handover_abandoned,
            handover_untranslated,
            inspector_resets,
            budget_bypassed,
            budget_reset,
            flow_limit_hits,
            memory_budget_hits,
            buffer_shortage_hits,
            buffered_bytes,
            midstream_passthrough,
            segments_rejected,
            data_rejected_client_leg,
            data_rejected_server_leg,
            emit_failures,
            detected_ctcp_ike,
            detected_ctcp_esp,
            detected_rfc8229,
            detected_framed_ike,
            detected_framed_esp,
            detected_not_ipsec,
            drain_bypassed,
            ecn_legs,
            ecn_ce_received,
            ecn_ece_received,
            ecn_cwnd_reductions,
        } = *self;
        let _ = writeln!(
            out,
            "proxy connections: {connections_active} active ({connections_open} open), {connections_opened} opened, \
             {connections_established} established, {connections_refused} refused by the server, \
             {connect_timeouts} connect timeouts, {connections_reset} reset"
        );
        let _ = writeln!(
            out,
            "proxy syn cookies: {syn_cookies_sent} sent ({syn_cookies_per_source} past the \
             per-source bound), {syn_cookies_accepted} accepted, {syn_cookies_rejected} rejected, \
             {syn_cookies_invalid} invalid ACKs dropped"
        );
        let _ = writeln!(
            out,
            "proxy retransmissions: {retransmissions_client_leg} on client legs, \
             {retransmissions_server_leg} on server legs"
        );
        let _ = writeln!(
            out,
            "proxy stalls: {stalls_wait} waited, {stalls_reset} reset, {stalls_bypass} bypassed; \
             {handovers} handovers to pass-through, {inspector_resets} inspector resets"
        );
        let _ = writeln!(
            out,
            "proxy handovers: {handover_owed_bytes} bytes owed, {handover_retransmissions} \
             segments sent again; {handover_delivered} delivered, {handover_abandoned} abandoned; \
             {handover_untranslated} segments passed untranslated"
        );
        let _ = writeln!(
            out,
            "proxy budget: {buffered_bytes} bytes buffered now; new flows not proxied: \
             {flow_limit_hits} at the flow limit, {memory_budget_hits} at the memory budget, \
             {buffer_shortage_hits} short of packet buffers; {budget_bypassed} bypassed, \
             {budget_reset} reset; {drain_bypassed} bypassed while draining"
        );
        let _ = writeln!(
            out,
            "proxy segments: {midstream_passthrough} flows picked up mid-stream (passed through), \
             {segments_rejected} segments rejected ({data_rejected_client_leg} with data on client \
             legs, {data_rejected_server_leg} on server legs), {emit_failures} emit failures (no mbuf), \
             {out_of_order_discarded} held out of order dropped at the timeout \
             ({out_of_order_discarded_bytes} bytes)"
        );
        let detected = detected_ctcp_ike
            + detected_ctcp_esp
            + detected_rfc8229
            + detected_framed_ike
            + detected_framed_esp;
        let _ = writeln!(
            out,
            "proxy detection: {detected} flows of ipsec-over-tcp passed through (ctcp-ike \
             {detected_ctcp_ike}, ctcp-esp {detected_ctcp_esp}, rfc8229 {detected_rfc8229}, \
             framed-ike {detected_framed_ike}, framed-esp {detected_framed_esp}), \
             {detected_not_ipsec} watched and kept proxied"
        );
        let _ = writeln!(
            out,
            "proxy ecn: {ecn_legs} legs negotiated it, {ecn_ce_received} congestion marks (CE) \
             received, {ecn_ece_received} echoes (ECE) received, {ecn_cwnd_reductions} congestion \
             window reductions for them"
        );
    }
}
