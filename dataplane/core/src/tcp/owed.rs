//! What a flow handed over to pass-through still owes one real endpoint.
//!
//! At a hand-over the proxy holds bytes that one endpoint was told had arrived (its leg
//! acknowledged them) and that the other endpoint has not acknowledged yet: the far leg's send
//! queue, what was received and not yet relayed, out-of-order data held above a hole, and a FIN.
//! Their sender will never send them again, so they are the proxy's to deliver until the
//! receiver acknowledges them. An [`OwedStream`] is a small TCP sender for those bytes alone:
//! - it sends within the receiver's window, as the receiver advertises it in the segments it sends
//!   through the pass-through, and within a congestion window that restarts at one segment
//!   after a timeout;
//! - it keeps the payloads' boundaries (a peer speaking cTCP reads one datagram per segment), and
//!   cuts a payload only at the MSS or when the window can never take it whole;
//! - it retransmits on a timer with exponential backoff until the receiver's cumulative ACK
//!   covers everything owed, and probes a zero window with a pure ACK below `SND.UNA`, which a
//!   receiver must answer with its window (RFC 9293 section 3.8.6.1);
//! - what lies between two owed payloads is a hole the proxy never received: the real sender
//!   still owes it and repairs it through the pass-through;
//! - it gives up when either endpoint resets the connection, or after [`GIVE_UP_TIMEOUTS`]
//!   timeouts in a row without progress.
//!
//! The fields it writes besides the data are the receiver's own view: the ACK and window the
//! other endpoint last sent it (translated), and timestamps that never run ahead of the other
//! endpoint's (so its later segments pass the receiver's PAWS test) and echo the receiver's latest.

use std::collections::VecDeque;

use super::endpoint::Transmit;
use super::payload::Payload;
use super::segment::{Ecn, SackList, SegmentHeader, TcpFlags, TcpOptions};
use super::seq::{SeqNumber, SeqRange};

/// Timeouts in a row without the receiver acknowledging anything new before an owed stream is
/// abandoned: with the backoff from a 200 ms RTO capped at 60 s, about eight minutes, longer
/// than the endpoints' own retransmission limits.
pub const GIVE_UP_TIMEOUTS: u32 = 15;

/// The longest retransmission timeout (RFC 6298 allows a cap of at least 60 s).
const MAX_RTO_MS: u64 = 60_000;

/// The shortest retransmission timeout used, whatever the leg measured.
const MIN_RTO_MS: u64 = 200;

/// Where an owed stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwedState {
    /// Bytes or a FIN are still unacknowledged.
    Sending,
    /// The receiver acknowledged everything owed.
    Delivered,
    /// The connection was reset, or the receiver stopped answering: nothing more is sent.
    Abandoned,
}

/// Counters of one owed stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwedStats {
    /// Payload bytes owed at the hand-over.
    pub bytes: u64,
    /// Segments sent, first transmissions and retransmissions.
    pub segments_sent: u64,
    pub retransmissions: u64,
    pub window_probes: u64,
}

/// How the receiver's leg stood at the hand-over: where its numbers and its window were.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverView {
    pub local_port: u16,
    pub remote_port: u16,
    /// The receiver's cumulative ACK.
    pub snd_una: SeqNumber,
    /// What the leg had sent at least once: sent data is in flight, not due at once.
    pub snd_nxt: SeqNumber,
    /// The receiver's window, in bytes from `snd_una`.
    pub snd_wnd: usize,
    /// The shift the receiver applies to the windows it advertises.
    pub snd_wscale: u8,
    /// Payload bytes per segment, options left out.
    pub mss: usize,
    pub cwnd: usize,
    pub rto_ms: u64,
    /// The ACK and raw window field the leg last sent the receiver.
    pub ack: SeqNumber,
    pub window: u16,
    /// `(TSval, TSecr)` for the next segment, when the leg uses timestamps.
    pub timestamps: Option<(u32, u32)>,
}

/// The bytes one endpoint is owed after a hand-over; see the module documentation.
#[derive(Debug, Clone)]
pub struct OwedStream<P: Payload> {
    /// In the receiver's numbering, in order, without overlaps; gaps are the real sender's.
    pieces: VecDeque<(SeqNumber, P)>,
    fin: Option<SeqNumber>,
    /// Past the last owed byte and the FIN.
    end: SeqNumber,
    snd_una: SeqNumber,
    /// Everything owed below it has been sent since the last timeout.
    snd_nxt: SeqNumber,
    /// Past the highest byte ever sent: what is sent again below it is a retransmission.
    sent_high: SeqNumber,
    wnd: usize,
    wscale: u8,
    mss: usize,
    cwnd: usize,
    base_rto_ms: u64,
    rto_ms: u64,
    timeouts: u32,
    rtx_at: Option<u64>,
    probe_due: bool,
    /// Duplicate ACKs in a row: the third sends the first unacknowledged segment again at once
    /// (fast retransmit, RFC 5681 section 3.2).
    dup_acks: u32,
    /// While recovering from a loss: past what was sent when it began. An ACK below it that
    /// moves `snd_una` shows the next loss (NewReno's partial ACK, RFC 6582).
    recover: Option<SeqNumber>,
    fast_retransmit_due: bool,
    /// The receiver's latest SACK blocks: owed payloads they cover are not sent again.
    sacked: SackList,
    local_port: u16,
    remote_port: u16,
    ack: SeqNumber,
    window: u16,
    timestamps: Option<(u32, u32)>,
    state: OwedState,
    stats: OwedStats,
}

impl<P: Payload> OwedStream<P> {
    /// `pieces` in the receiver's numbering and in sequence order; `fin` the sequence number of a
    /// FIN owed after them. What the receiver acknowledged already is left out.
    pub fn new(
        pieces: impl IntoIterator<Item = (SeqNumber, P)>,
        fin: Option<SeqNumber>,
        view: ReceiverView,
        now: u64,
    ) -> OwedStream<P> {
        let snd_una = view.snd_una;
        let mut kept: VecDeque<(SeqNumber, P)> = VecDeque::new();
        let mut covered = snd_una;
        for (seq, payload) in pieces {
            let end = seq + payload.len();
            // Nothing below what is kept already, nor what the receiver has.
            if end <= covered {
                continue;
            }
            let skip = if seq < covered { covered.since(seq) } else { 0 };
            let piece = if skip > 0 {
                payload.slice(skip, payload.len())
            } else {
                payload
            };
            kept.push_back((seq + skip, piece));
            covered = end;
        }
        let fin = fin.filter(|&fin| fin >= snd_una);
        let end = match fin {
            Some(fin) => (fin + 1).max(covered),
            None => covered,
        };
        let mss = view.mss.max(1);
        let base_rto_ms = view.rto_ms.clamp(MIN_RTO_MS, MAX_RTO_MS);
        let snd_nxt = view.snd_nxt.max(snd_una).min(end);
        let bytes = kept.iter().map(|(_, p)| p.len() as u64).sum();
        let mut owed = OwedStream {
            pieces: kept,
            fin,
            end,
            snd_una,
            snd_nxt,
            sent_high: snd_nxt,
            wnd: view.snd_wnd,
            wscale: view.snd_wscale,
            mss,
            cwnd: view.cwnd.max(4 * mss),
            base_rto_ms,
            rto_ms: base_rto_ms,
            timeouts: 0,
            rtx_at: None,
            probe_due: false,
            dup_acks: 0,
            recover: None,
            fast_retransmit_due: false,
            sacked: SackList::default(),
            local_port: view.local_port,
            remote_port: view.remote_port,
            ack: view.ack,
            window: view.window,
            timestamps: view.timestamps,
            state: OwedState::Sending,
            stats: OwedStats {
                bytes,
                ..OwedStats::default()
            },
        };
        if owed.end <= owed.snd_una {
            owed.state = OwedState::Delivered;
        } else if owed.snd_nxt > owed.snd_una {
            owed.rtx_at = Some(now + owed.rto_ms);
        }
        owed
    }

    pub fn state(&self) -> OwedState {
        self.state
    }

    /// Owed payload bytes not yet acknowledged.
    pub fn outstanding_bytes(&self) -> usize {
        self.pieces.iter().map(|(_, p)| p.len()).sum()
    }

    pub fn stats(&self) -> OwedStats {
        self.stats
    }

    /// A segment from the receiver, as it sent it: its ACK, window, SACK blocks and timestamp.
    pub fn on_receiver_segment(&mut self, hdr: &SegmentHeader, now: u64) {
        if self.state != OwedState::Sending {
            return;
        }
        if hdr.flags.contains(TcpFlags::RST) {
            self.state = OwedState::Abandoned;
            return;
        }
        if let (Some((tsval, _)), Some((_, tsecr))) =
            (hdr.options.timestamps, self.timestamps.as_mut())
        {
            if SeqNumber(tsval) >= SeqNumber(*tsecr) {
                *tsecr = tsval;
            }
        }
        if !hdr.flags.contains(TcpFlags::ACK) || hdr.flags.contains(TcpFlags::SYN) {
            return;
        }
        // A receiver cannot hold owed bytes that were never sent to it: their real sender was
        // told they arrived and will not send them. An ACK past them speaks for the other
        // bytes only (a peer that acknowledges the highest byte it saw, as cTCP peers do, or
        // the real sender's retransmissions filling a gap below them).
        let unsent = self
            .pieces
            .iter()
            .find(|(seq, p)| *seq + p.len() > self.sent_high)
            .map(|(seq, _)| (*seq).max(self.sent_high))
            .or(self.fin.filter(|&fin| fin >= self.sent_high));
        let ack = match unsent {
            Some(unsent) => hdr.ack.min(unsent),
            None => hdr.ack,
        };
        if ack < self.snd_una {
            return;
        }
        let wnd = usize::from(hdr.window) << self.wscale;
        if ack == self.snd_una && self.snd_nxt > self.snd_una && wnd == self.wnd {
            self.dup_acks += 1;
            if self.dup_acks == 3 && self.recover.is_none() {
                self.recover = Some(self.snd_nxt);
                self.fast_retransmit_due = true;
            }
        } else if ack > self.snd_una {
            self.dup_acks = 0;
        }
        self.wnd = wnd;
        self.sacked = hdr.options.sack;
        if ack >= self.end {
            self.snd_una = self.end;
            self.pieces.clear();
            self.rtx_at = None;
            self.state = OwedState::Delivered;
            return;
        }
        if ack > self.snd_una {
            let acked = ack.since(self.snd_una);
            self.snd_una = ack;
            self.snd_nxt = self.snd_nxt.max(ack);
            self.timeouts = 0;
            self.rto_ms = self.base_rto_ms;
            self.cwnd += acked.min(self.mss);
            self.trim_acked();
            self.rtx_at = (self.snd_nxt > self.snd_una).then_some(now + self.rto_ms);
            match self.recover {
                Some(recover) if ack < recover => self.fast_retransmit_due = true,
                Some(_) => self.recover = None,
                None => {}
            }
        }
        if self.fin.is_none()
            && self
                .pieces
                .iter()
                .all(|(seq, p)| self.is_sacked(*seq, p.len()))
        {
            // What is left unacknowledged is the real sender's hole: the receiver holds the
            // rest, and its cumulative ACK moves on once the sender repairs the hole.
            self.rtx_at = None;
            self.state = OwedState::Delivered;
            return;
        }
        if self.rtx_at.is_none() && self.wnd == 0 {
            // The persist timer: the window may open without a segment to say so.
            self.rtx_at = Some(now + self.rto_ms);
        }
    }

    /// A segment from the other endpoint on its way to the receiver, as translated: the ACK,
    /// window and TSval the receiver now knows, for the owed segments to carry.
    pub fn on_sender_segment(&mut self, hdr: &SegmentHeader) {
        if self.state != OwedState::Sending {
            return;
        }
        if hdr.flags.contains(TcpFlags::RST) {
            self.state = OwedState::Abandoned;
            return;
        }
        if hdr.flags.contains(TcpFlags::ACK) {
            if hdr.ack > self.ack {
                self.ack = hdr.ack;
            }
            self.window = hdr.window;
        }
        if let (Some((tsval, _)), Some((ours, _))) =
            (hdr.options.timestamps, self.timestamps.as_mut())
        {
            if SeqNumber(tsval) > SeqNumber(*ours) {
                *ours = tsval;
            }
        }
    }

    pub fn poll_at(&self) -> Option<u64> {
        if self.state == OwedState::Sending {
            self.rtx_at
        } else {
            None
        }
    }

    pub fn on_timer(&mut self, now: u64) {
        if self.state != OwedState::Sending || self.rtx_at.is_none_or(|at| at > now) {
            return;
        }
        self.timeouts += 1;
        if self.timeouts > GIVE_UP_TIMEOUTS {
            self.state = OwedState::Abandoned;
            self.rtx_at = None;
            return;
        }
        self.rto_ms = (self.rto_ms * 2).min(MAX_RTO_MS);
        self.rtx_at = Some(now + self.rto_ms);
        self.recover = None;
        self.dup_acks = 0;
        if self.wnd == 0 {
            self.probe_due = true;
        } else {
            // Go back to the first unacknowledged byte, one segment at a time (RFC 5681
            // section 3.1: the loss window).
            self.snd_nxt = self.snd_una;
            self.cwnd = self.mss;
        }
    }

    /// The next owed segment due, if any.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Transmit<P>> {
        if self.state != OwedState::Sending {
            return None;
        }
        if std::mem::take(&mut self.probe_due) {
            self.stats.window_probes += 1;
            self.stats.segments_sent += 1;
            return Some(Transmit {
                header: self.header(self.snd_una - 1, TcpFlags::ACK),
                payload: None,
            });
        }
        if std::mem::take(&mut self.fast_retransmit_due) {
            if let Some(transmit) = self.retransmit_first(now) {
                return Some(transmit);
            }
        }
        let right = self.snd_una + self.wnd;
        let in_flight = self.snd_nxt > self.snd_una;
        let flight_end = self.snd_una + self.cwnd;
        let next = self
            .pieces
            .iter()
            .filter(|(seq, p)| *seq + p.len() > self.snd_nxt)
            .find(|(seq, p)| !self.is_sacked(*seq, p.len()))
            .map(|(seq, p)| (*seq, p.clone()));
        let Some((seq, payload)) = next else {
            return self.poll_fin(now);
        };
        let start = seq.max(self.snd_nxt);
        let offset = start.since(seq);
        let mut take = (payload.len() - offset).min(self.mss);
        if start + take > right {
            let room = if right > start { right.since(start) } else { 0 };
            if in_flight || room == 0 {
                // Window-limited: an ACK or the persist timer moves it.
                self.arm(now);
                return None;
            }
            // Nothing in flight and the window will never take this payload whole.
            take = room;
        }
        if in_flight && start + take > flight_end {
            return None;
        }
        let end = start + take;
        let mut flags = TcpFlags::ACK;
        if offset + take == payload.len() {
            flags |= TcpFlags::PSH;
        }
        if self.fin == Some(end) && self.pieces.back().is_some_and(|(s, p)| *s + p.len() == end) {
            flags |= TcpFlags::FIN;
        }
        if start < self.sent_high {
            self.stats.retransmissions += 1;
        }
        self.snd_nxt = end + usize::from(flags.contains(TcpFlags::FIN));
        self.sent_high = self.sent_high.max(self.snd_nxt);
        self.stats.segments_sent += 1;
        self.arm(now);
        Some(Transmit {
            header: self.header(start, flags),
            payload: Some(payload.slice(offset, offset + take)),
        })
    }

    /// A FIN after everything before it was sent: a receiver takes a bare FIN at `RCV.NXT`
    /// even into a zero window.
    fn poll_fin(&mut self, now: u64) -> Option<Transmit<P>> {
        let fin = self.fin?;
        if self.snd_nxt > fin {
            return None;
        }
        if fin < self.sent_high {
            self.stats.retransmissions += 1;
        }
        self.snd_nxt = fin + 1;
        self.sent_high = self.sent_high.max(self.snd_nxt);
        self.stats.segments_sent += 1;
        self.arm(now);
        Some(Transmit {
            header: self.header(fin, TcpFlags::FIN | TcpFlags::ACK),
            payload: None,
        })
    }

    /// The first owed segment at `SND.UNA` again, if it is ours to send (not the real sender's
    /// hole) and the window takes it.
    fn retransmit_first(&mut self, now: u64) -> Option<Transmit<P>> {
        let (seq, payload) = self.pieces.front()?;
        if *seq != self.snd_una {
            return None;
        }
        let take = payload.len().min(self.mss);
        if take > self.wnd {
            return None;
        }
        let end = *seq + take;
        let mut flags = TcpFlags::ACK;
        if take == payload.len() {
            flags |= TcpFlags::PSH;
            if self.fin == Some(end) && self.pieces.len() == 1 {
                flags |= TcpFlags::FIN;
            }
        }
        let transmit = Transmit {
            header: self.header(*seq, flags),
            payload: Some(payload.slice(0, take)),
        };
        self.stats.retransmissions += 1;
        self.stats.segments_sent += 1;
        self.rtx_at = Some(now + self.rto_ms);
        Some(transmit)
    }

    fn arm(&mut self, now: u64) {
        if self.rtx_at.is_none() {
            self.rtx_at = Some(now + self.rto_ms);
        }
    }

    fn is_sacked(&self, seq: SeqNumber, len: usize) -> bool {
        let piece = SeqRange::from_len(seq, len);
        self.sacked
            .iter()
            .any(|(left, right)| SeqRange::new(left, right).contains_range(&piece))
    }

    fn trim_acked(&mut self) {
        while let Some((seq, payload)) = self.pieces.front() {
            let end = *seq + payload.len();
            if end <= self.snd_una {
                self.pieces.pop_front();
            } else if *seq < self.snd_una {
                let skip = self.snd_una.since(*seq);
                let rest = payload.slice(skip, payload.len());
                self.pieces[0] = (self.snd_una, rest);
                break;
            } else {
                break;
            }
        }
    }

    fn header(&self, seq: SeqNumber, flags: TcpFlags) -> SegmentHeader {
        SegmentHeader {
            src_port: self.local_port,
            dst_port: self.remote_port,
            seq,
            ack: self.ack,
            flags,
            window: self.window,
            urgent: 0,
            options: TcpOptions {
                timestamps: self.timestamps,
                ..TcpOptions::default()
            },
            // What is owed was sent before, to the other leg: a retransmission, never ECN-capable
            // (RFC 3168 §6.1.5).
            ecn: Ecn::NotEct,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::payload::TestBytes;

    const MSS: usize = 1000;

    fn view(snd_una: u32, snd_wnd: usize) -> ReceiverView {
        ReceiverView {
            local_port: 10000,
            remote_port: 41000,
            snd_una: SeqNumber(snd_una),
            snd_nxt: SeqNumber(snd_una),
            snd_wnd,
            snd_wscale: 0,
            mss: MSS,
            cwnd: 10 * MSS,
            rto_ms: 300,
            ack: SeqNumber(77),
            window: 1000,
            timestamps: None,
        }
    }

    /// `count` payloads of `len` bytes from `first`, each filled with its index.
    fn pieces(first: u32, count: usize, len: usize) -> Vec<(SeqNumber, TestBytes)> {
        (0..count)
            .map(|i| {
                let bytes = vec![i as u8; len];
                (SeqNumber(first) + i * len, TestBytes::from(&bytes[..]))
            })
            .collect()
    }

    fn drain(owed: &mut OwedStream<TestBytes>, now: u64) -> Vec<Transmit<TestBytes>> {
        std::iter::from_fn(|| owed.poll_transmit(now)).collect()
    }

    fn ack(ack: u32, window: u16) -> SegmentHeader {
        SegmentHeader {
            src_port: 41000,
            dst_port: 10000,
            seq: SeqNumber(5),
            ack: SeqNumber(ack),
            flags: TcpFlags::ACK,
            window,
            urgent: 0,
            options: TcpOptions::default(),
            ecn: Ecn::NotEct,
        }
    }

    #[test]
    fn sends_within_the_window_keeping_boundaries_and_goes_on_as_acks_come() {
        let mut owed = OwedStream::new(pieces(1_000, 20, 300), None, view(1_000, 3_000), 0);
        let sent = drain(&mut owed, 0);
        assert_eq!(
            sent.len(),
            10,
            "3000 bytes of window: ten 300-byte payloads"
        );
        for (i, t) in sent.iter().enumerate() {
            assert_eq!(t.header.seq, SeqNumber(1_000) + i * 300);
            assert_eq!(t.payload.as_ref().unwrap().bytes(), &[i as u8; 300][..]);
            assert_eq!((t.header.ack, t.header.window), (SeqNumber(77), 1000));
        }
        owed.on_receiver_segment(&ack(4_000, 3_000), 10);
        let sent = drain(&mut owed, 10);
        assert_eq!(sent.len(), 10);
        assert_eq!(owed.state(), OwedState::Sending);
        owed.on_receiver_segment(&ack(7_000, 3_000), 20);
        assert_eq!(owed.state(), OwedState::Delivered);
        assert_eq!(owed.poll_at(), None);
    }

    #[test]
    fn an_ack_past_bytes_never_sent_does_not_deliver_them() {
        // A cTCP peer acknowledges the highest byte it saw: the real sender's, far above.
        let mut owed = OwedStream::new(pieces(5_000, 20, 300), None, view(2_000, 3_000), 0);
        assert_eq!(
            drain(&mut owed, 0).len(),
            0,
            "the window ends before the first"
        );
        owed.on_receiver_segment(&ack(900_000, 3_000), 10);
        let sent = drain(&mut owed, 10);
        assert_eq!(sent.first().unwrap().header.seq, SeqNumber(5_000));
        assert_eq!(sent.len(), 10);
        owed.on_receiver_segment(&ack(900_000, 3_000), 20);
        assert_eq!(drain(&mut owed, 20).len(), 10);
        owed.on_receiver_segment(&ack(900_000, 3_000), 30);
        assert_eq!(owed.state(), OwedState::Delivered);
    }

    #[test]
    fn what_is_lost_is_sent_again_after_a_timeout_one_segment_first() {
        let mut owed = OwedStream::new(pieces(0, 4, MSS), None, view(0, 10_000), 0);
        assert_eq!(drain(&mut owed, 0).len(), 4);
        let at = owed.poll_at().expect("a retransmission timer");
        assert_eq!(at, 300);
        owed.on_timer(at);
        let again = drain(&mut owed, at);
        assert_eq!(again.len(), 1, "the loss window is one segment");
        assert_eq!(again[0].header.seq, SeqNumber(0));
        assert_eq!(owed.stats().retransmissions, 1);
        assert_eq!(owed.poll_at(), Some(at + 600), "backed off");
        owed.on_receiver_segment(&ack(1_000, 10_000), at + 5);
        assert_eq!(drain(&mut owed, at + 5).len(), 2, "slow start: two more");
    }

    #[test]
    fn three_duplicate_acks_send_the_first_again_at_once() {
        let mut owed = OwedStream::new(pieces(0, 6, 500), None, view(0, 10_000), 0);
        assert_eq!(drain(&mut owed, 0).len(), 6);
        for _ in 0..3 {
            owed.on_receiver_segment(&ack(0, 10_000), 5);
        }
        let again = drain(&mut owed, 5);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].header.seq, SeqNumber(0));
        // A partial ACK shows the next loss.
        owed.on_receiver_segment(&ack(1_000, 10_000), 8);
        assert_eq!(drain(&mut owed, 8)[0].header.seq, SeqNumber(1_000));
    }

    #[test]
    fn a_zero_window_is_probed_with_a_pure_ack_below_snd_una() {
        let mut owed = OwedStream::new(pieces(100, 2, 500), None, view(100, 0), 0);
        assert!(drain(&mut owed, 0).is_empty());
        owed.on_receiver_segment(&ack(100, 0), 1);
        let at = owed.poll_at().expect("the persist timer");
        owed.on_timer(at);
        let probe = drain(&mut owed, at);
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].header.seq, SeqNumber(99));
        assert!(probe[0].payload.is_none());
        owed.on_receiver_segment(&ack(100, 2_000), at + 1);
        assert_eq!(drain(&mut owed, at + 1).len(), 2);
    }

    #[test]
    fn a_fin_follows_the_data_and_must_be_acknowledged_too() {
        let mut owed = OwedStream::new(pieces(0, 2, 100), Some(SeqNumber(200)), view(0, 10_000), 0);
        let sent = drain(&mut owed, 0);
        assert_eq!(sent.len(), 2);
        assert!(
            sent[1].header.flags.contains(TcpFlags::FIN),
            "on the last payload"
        );
        owed.on_receiver_segment(&ack(200, 10_000), 1);
        assert_eq!(owed.state(), OwedState::Sending);
        owed.on_receiver_segment(&ack(201, 10_000), 2);
        assert_eq!(owed.state(), OwedState::Delivered);
    }

    #[test]
    fn a_reset_from_either_endpoint_ends_it() {
        let mut owed = OwedStream::new(pieces(0, 2, 100), None, view(0, 10_000), 0);
        let mut rst = ack(0, 0);
        rst.flags = TcpFlags::RST;
        owed.on_sender_segment(&rst);
        assert_eq!(owed.state(), OwedState::Abandoned);
        assert!(owed.poll_transmit(0).is_none());
    }
}
