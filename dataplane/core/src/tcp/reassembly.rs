//! The receive side's out-of-order queue: turns segments that arrive in any order, duplicated or
//! overlapping, into the in-order byte stream from `RCV.NXT`, without copying a byte.
//!
//! Data is only ever narrowed with [`Payload::slice`]: where a segment overlaps data already
//! held, the overlap is cut off one of them, never copied into a contiguous buffer as a
//! socket's receive buffer would (smoltcp's `Assembler` tracks ranges over such a buffer; this
//! keeps the payloads themselves instead). The queue is bounded in segments and bytes, like the
//! ASA's tcp-map `queue-limit`, because it is what a peer that never fills a hole (the cTCP case
//! in ARCHITECTURE.md) makes grow; and in time, like that `queue-limit`'s `timeout`: the owner
//! calls [`Reassembly::expire_held`] at [`Reassembly::expiry_ms`].
//!
//! Held data is a `VecDeque` sorted by sequence number, disjoint, with no entry starting at
//! `RCV.NXT`. Finding a segment's place is a binary search (O(log n)); inserting or removing
//! shifts entries (O(n)), with n bounded by `max_segments`, a few dozen in practice.

use std::collections::VecDeque;

use super::payload::Payload;
use super::segment::SackList;
use super::seq::{SeqNumber, SeqRange};

/// The largest window TCP can advertise (65535 << 14, RFC 7323 section 2.3). Larger values are
/// clamped so that everything held stays well within 2^31 of `RCV.NXT`, where sequence
/// comparison is sound.
pub const MAX_WINDOW: usize = 65535 << 14;

/// How much out-of-order data one direction of a flow may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Held segments, which bounds both the work per insert and the metadata a peer can pin.
    pub max_segments: usize,
    /// Held payload bytes; mbufs are pinned whole, so the engine's global budget also counts
    /// them (issue 4, "bounded per flow and direction").
    pub max_bytes: usize,
    /// How long out-of-order data may wait above a hole before it is all discarded
    /// ([`Reassembly::expire_held`]); `None` keeps it until the hole is filled or the
    /// connection ends.
    ///
    /// Measured on the hole's clock ([`Reassembly::held_since_ms`]): from the arrival of the
    /// first segment held above the hole, dated anew whenever `RCV.NXT` advances and data stays
    /// held. That is the ASA's "not put in order and passed on within the timeout" for a sender
    /// that repairs nothing, without punishing one that is repairing several losses in turn,
    /// and it needs one timestamp per direction rather than one per segment.
    pub timeout_ms: Option<u64>,
}

impl Default for ReassemblyLimits {
    /// 256 segments and 256 KiB, the per-flow default buffer of issue 4, held for at most 10 s.
    /// A 256 KiB window is about 180 full-sized segments: all of them can arrive above one hole,
    /// and a smaller count would drop (and have resent) what the window let the peer send.
    ///
    /// 10 s is within the ASA's 1 to 20 s range (its default is 4 s) and deliberately past the
    /// proxy's stall detection, which runs on the same hole clock and fires max(3 RTOs, 1 s)
    /// after it, about 1 s at usual RTOs: a stall handed over to pass-through
    /// (`OnStall::Bypass`) then still finds the held data to flush to the far side. Only a leg
    /// whose RTO has backed off past 3.3 s, or a configured stall time past 10 s, sees the
    /// discard first (see `tcp::proxy`).
    fn default() -> ReassemblyLimits {
        ReassemblyLimits {
            max_segments: 256,
            max_bytes: 256 * 1024,
            timeout_ms: Some(10_000),
        }
    }
}

/// What became of an inserted segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// `RCV.NXT` advanced: new in-order data (and possibly held data it made contiguous) is
    /// ready to be taken. If out-of-order data was held before, the segment filled (part of) a
    /// hole, which RFC 5681 section 4.2 says to acknowledge at once.
    InOrder,
    /// New data above a hole was held; RFC 5681 section 4.2 asks for an immediate duplicate ACK.
    Queued,
    /// Nothing new: every byte was already received or held (RFC 2883 would report it as a
    /// D-SACK).
    Duplicate,
    Dropped(DropReason),
}

/// Why a segment carrying new data was refused. Both are counted conditions; the sender will
/// retransmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Holding it would pass `max_segments` or `max_bytes`.
    QueueFull,
    /// None of its new data lies in the receive window (RFC 9293 section 3.10.7.4), or it lies
    /// beyond a FIN already received.
    OutOfWindow,
}

struct Held<P> {
    seq: SeqNumber,
    payload: P,
    /// Insertion order, so that SACK can report the most recent block first (RFC 2018 section 4).
    arrival: u64,
}

/// The receive side of one TCP connection, from `RCV.NXT` up to the right window edge.
pub struct Reassembly<P: Payload> {
    rcv_nxt: SeqNumber,
    /// In-order data not taken yet, oldest first.
    ready: VecDeque<P>,
    ready_bytes: usize,
    /// Out-of-order data; see the module comment for the invariants.
    held: VecDeque<Held<P>>,
    held_bytes: usize,
    limits: ReassemblyLimits,
    arrivals: u64,
    hole_since_ms: Option<u64>,
    /// When the out-of-order data now held began waiting; see `ReassemblyLimits::timeout_ms`.
    held_since_ms: Option<u64>,
    /// Held data expired since `RCV.NXT` last advanced: the peer sent beyond the hole, so the
    /// hole is still open (and its clock running) though nothing is held above it.
    reneged: bool,
    /// Sequence number of the FIN, once one has arrived (RFC 9293 section 3.10.7.4, eighth step).
    fin: Option<SeqNumber>,
    fin_received: bool,
}

impl<P: Payload> Reassembly<P> {
    /// Starts receiving at `rcv_nxt`, the peer's initial sequence number plus one for its SYN.
    pub fn new(rcv_nxt: SeqNumber, limits: ReassemblyLimits) -> Reassembly<P> {
        Reassembly {
            rcv_nxt,
            ready: VecDeque::new(),
            ready_bytes: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            limits,
            arrivals: 0,
            hole_since_ms: None,
            held_since_ms: None,
            reneged: false,
            fin: None,
            fin_received: false,
        }
    }

    /// The next sequence number expected: what an ACK acknowledges. It counts data still in
    /// the ready queue (received is not the same as relayed) and a FIN once reached.
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }

    pub fn limits(&self) -> ReassemblyLimits {
        self.limits
    }

    /// Position of `seq` relative to `RCV.NXT`, negative for old data.
    fn offset(&self, seq: SeqNumber) -> i64 {
        i64::from(seq.distance(self.rcv_nxt))
    }

    fn held_range(&self, held: &Held<P>) -> (i64, i64) {
        let start = self.offset(held.seq);
        (start, start + held.payload.len() as i64)
    }

    /// Takes in a segment's payload starting at `seq`. `rcv_wnd` is the receive window the
    /// engine offers now; data beyond `RCV.NXT + rcv_wnd` is cut off and data entirely beyond it
    /// is refused (RFC 9293 section 3.10.7.4: only the part in the window is kept). `now_ms`
    /// dates a newly opened hole for [`oldest_hole_since_ms`](Self::oldest_hole_since_ms).
    ///
    /// An empty payload is a `Duplicate`: the engine handles ACK-only segments itself.
    pub fn insert(&mut self, seq: SeqNumber, payload: P, rcv_wnd: usize, now_ms: u64) -> Insert {
        if payload.is_empty() {
            return Insert::Duplicate;
        }
        let start = self.offset(seq);
        let end = start + i64::try_from(payload.len()).unwrap_or(i64::MAX);
        if end <= 0 {
            return Insert::Duplicate;
        }
        // Nothing is accepted past the window, nor past a FIN (RFC 9293 section 3.10.7.4: data
        // after the FIN is not part of the stream).
        let mut limit = rcv_wnd.min(MAX_WINDOW) as i64;
        if let Some(fin) = self.fin {
            limit = limit.min(self.offset(fin));
        }
        let lo = start.max(0);
        let hi = end.min(limit);
        if hi <= lo {
            return Insert::Dropped(DropReason::OutOfWindow);
        }
        let payload = if (lo, hi) == (start, end) {
            payload
        } else {
            payload.slice((lo - start) as usize, (hi - start) as usize)
        };
        let result = if lo == 0 {
            self.insert_in_order(payload);
            Insert::InOrder
        } else {
            self.insert_out_of_order(lo, payload)
        };
        self.update_hole_clock(result == Insert::InOrder, now_ms);
        result
    }

    /// `payload` starts at `RCV.NXT`.
    fn insert_in_order(&mut self, payload: P) {
        let mut end = payload.len() as i64;
        // Held data the new segment covers is dropped (the new payload carries it); held data it
        // runs into keeps its bytes, and the new payload stops where it starts.
        while let Some(first) = self.held.front() {
            let (first_start, first_end) = self.held_range(first);
            if first_end <= end {
                self.remove_front_held();
            } else {
                if first_start < end {
                    end = first_start;
                }
                break;
            }
        }
        let payload = if end as usize == payload.len() {
            payload
        } else {
            payload.slice(0, end as usize)
        };
        self.push_ready(payload);
        while self
            .held
            .front()
            .is_some_and(|first| first.seq == self.rcv_nxt)
        {
            if let Some(first) = self.remove_front_held() {
                self.push_ready(first.payload);
            }
        }
        if self.fin == Some(self.rcv_nxt) && !self.fin_received {
            self.consume_fin();
        }
    }

    /// `payload` starts at `lo` bytes past `RCV.NXT`, `lo > 0`.
    fn insert_out_of_order(&mut self, lo: i64, payload: P) -> Insert {
        let hi = lo + payload.len() as i64;
        // Held entries ending after `lo` start here; those starting before `hi` overlap.
        let first = self
            .held
            .partition_point(|held| self.held_range(held).1 <= lo);
        let mut last = first;
        while last < self.held.len() && self.held_range(&self.held[last]).0 < hi {
            last += 1;
        }
        let (mut new_lo, mut new_hi) = (lo, hi);
        let mut remove = first..last;
        if first < last {
            let (first_start, first_end) = self.held_range(&self.held[first]);
            if first_start <= lo && first_end >= hi {
                return Insert::Duplicate;
            }
            if first_start < lo {
                new_lo = first_end;
                remove.start += 1;
            }
            let (last_start, last_end) = self.held_range(&self.held[last - 1]);
            if last_end > hi && last > remove.start {
                new_hi = last_start;
                remove.end -= 1;
            }
        }
        if new_hi <= new_lo {
            return Insert::Duplicate;
        }
        let removed_bytes: usize = self
            .held
            .range(remove.clone())
            .map(|held| held.payload.len())
            .sum();
        let new_len = (new_hi - new_lo) as usize;
        let segments_after = self.held.len() - remove.len() + 1;
        let bytes_after = self.held_bytes - removed_bytes + new_len;
        if segments_after > self.limits.max_segments || bytes_after > self.limits.max_bytes {
            return Insert::Dropped(DropReason::QueueFull);
        }
        let payload = if (new_lo, new_hi) == (lo, hi) {
            payload
        } else {
            payload.slice((new_lo - lo) as usize, (new_hi - lo) as usize)
        };
        let at = remove.start;
        self.held.drain(remove);
        self.held.insert(
            at,
            Held {
                seq: self.rcv_nxt + new_lo as usize,
                payload,
                arrival: self.arrivals,
            },
        );
        self.arrivals += 1;
        self.held_bytes = bytes_after;
        Insert::Queued
    }

    fn remove_front_held(&mut self) -> Option<Held<P>> {
        let held = self.held.pop_front()?;
        self.held_bytes -= held.payload.len();
        Some(held)
    }

    fn push_ready(&mut self, payload: P) {
        self.rcv_nxt += payload.len();
        self.ready_bytes += payload.len();
        self.ready.push_back(payload);
    }

    fn consume_fin(&mut self) {
        // The FIN occupies one sequence number (RFC 9293 section 3.4).
        self.rcv_nxt += 1;
        self.fin_received = true;
    }

    fn has_hole(&self) -> bool {
        !self.held.is_empty() || (self.fin.is_some() && !self.fin_received) || self.reneged
    }

    /// A hole is dated from the arrival of the first data above it. When `RCV.NXT` advances and
    /// data is still held, the remaining hole is dated anew: the sender is demonstrably repairing
    /// losses, and a stall (issue 4, point 5) is a hole nobody fills, not a slow recovery from
    /// several losses. The held data's own clock runs the same way, but only while data is held
    /// (a FIN alone pins no memory, and data that came after an expiry starts afresh).
    fn update_hole_clock(&mut self, progressed: bool, now_ms: u64) {
        if progressed {
            self.reneged = false;
        }
        self.hole_since_ms = match self.hole_since_ms {
            _ if !self.has_hole() => None,
            Some(since) if !progressed => Some(since),
            _ => Some(now_ms),
        };
        self.held_since_ms = match self.held_since_ms {
            _ if self.held.is_empty() => None,
            Some(since) if !progressed => Some(since),
            _ => Some(now_ms),
        };
    }

    /// Records the FIN at `fin_seq` (the segment's sequence number plus its payload length).
    /// `Insert::InOrder` when it is reached at once (`RCV.NXT` then counts it), `Queued` when data
    /// before it is still missing, `Duplicate` for a FIN already known, and `OutOfWindow` for one
    /// beyond the window or below data already held (a peer cannot end the stream before bytes
    /// it already sent). A FIN at the right window edge is accepted, as Linux does for bare FINs
    /// against a zero window.
    pub fn insert_fin(&mut self, fin_seq: SeqNumber, rcv_wnd: usize, now_ms: u64) -> Insert {
        if self.fin.is_some() {
            return Insert::Duplicate;
        }
        let at = self.offset(fin_seq);
        if at < 0 {
            return Insert::Duplicate;
        }
        let held_end = self.held.back().map_or(0, |last| self.held_range(last).1);
        if at > rcv_wnd.min(MAX_WINDOW) as i64 || at < held_end {
            return Insert::Dropped(DropReason::OutOfWindow);
        }
        self.fin = Some(fin_seq);
        let result = if at == 0 {
            self.consume_fin();
            Insert::InOrder
        } else {
            Insert::Queued
        };
        self.update_hole_clock(result == Insert::InOrder, now_ms);
        result
    }

    /// True once every byte before the peer's FIN and the FIN itself have arrived: the peer's
    /// half of the connection is closed (CLOSE-WAIT and its kin).
    pub fn fin_received(&self) -> bool {
        self.fin_received
    }

    /// The next piece of in-order data, oldest first, as a slice of a received payload.
    pub fn pop_ready(&mut self) -> Option<P> {
        let payload = self.ready.pop_front()?;
        self.ready_bytes -= payload.len();
        Some(payload)
    }

    /// The piece [`pop_ready`](Self::pop_ready) would return, for a caller that may be unable to
    /// take it (the far leg's send queue is full).
    pub fn peek_ready(&self) -> Option<&P> {
        self.ready.front()
    }

    /// In-order bytes received but not taken.
    pub fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// Out-of-order bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Out-of-order segments held.
    pub fn held_segments(&self) -> usize {
        self.held.len()
    }

    /// Everything this side holds: ready and out-of-order bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.ready_bytes + self.held_bytes
    }

    /// When the hole at `RCV.NXT` opened, if there is one: the time passed to the insert that
    /// first put data (or a FIN) above it, or that last advanced `RCV.NXT` while data stayed held.
    /// The stall detector compares it with an RTO-scale limit.
    ///
    /// After [`expire_held`](Self::expire_held) the hole stays open, and this date with it, until
    /// `RCV.NXT` next advances: the peer still owes the bytes it had sent beyond the hole, so a
    /// peer that never fills it is still seen to stall.
    pub fn oldest_hole_since_ms(&self) -> Option<u64> {
        self.hole_since_ms
    }

    /// When the out-of-order data held now began waiting, if any is held: the clock
    /// [`ReassemblyLimits::timeout_ms`] runs on. It is the hole's clock except that it starts
    /// only with held data and starts again after an expiry.
    pub fn held_since_ms(&self) -> Option<u64> {
        self.held_since_ms
    }

    /// When the held data expires, if any is held and a timeout is set.
    pub fn expiry_ms(&self) -> Option<u64> {
        let timeout = self.limits.timeout_ms?;
        Some(self.held_since_ms?.saturating_add(timeout))
    }

    /// In-order data not taken yet, oldest first, with the sequence number of its first byte.
    pub fn ready_data(&self) -> impl Iterator<Item = (SeqNumber, &P)> + '_ {
        // The ready data ends at RCV.NXT, before the FIN's sequence number once that is reached.
        let mut seq = self.rcv_nxt - (self.ready_bytes + usize::from(self.fin_received));
        self.ready.iter().map(move |payload| {
            let at = seq;
            seq += payload.len();
            (at, payload)
        })
    }

    /// Out-of-order data held, in sequence order, segment by segment as stored.
    pub fn held_data(&self) -> impl Iterator<Item = (SeqNumber, &P)> + '_ {
        self.held.iter().map(|held| (held.seq, &held.payload))
    }

    /// Held out-of-order data as contiguous ranges (adjacent segments merged), in sequence order.
    pub fn ranges(&self) -> impl Iterator<Item = SeqRange> + '_ {
        self.ranges_with_arrival().map(|(range, _)| range)
    }

    fn ranges_with_arrival(&self) -> impl Iterator<Item = (SeqRange, u64)> + '_ {
        let mut next = 0;
        std::iter::from_fn(move || {
            let first = self.held.get(next)?;
            let mut range = SeqRange::from_len(first.seq, first.payload.len());
            let mut arrival = first.arrival;
            next += 1;
            while let Some(held) = self.held.get(next) {
                if held.seq != range.end {
                    break;
                }
                range.end = held.seq + held.payload.len();
                arrival = arrival.max(held.arrival);
                next += 1;
            }
            Some((range, arrival))
        })
    }

    /// Up to `max` SACK blocks (RFC 2018), the range holding the most recently received segment
    /// first and the others by decreasing recency of their newest segment. Pass 3 when the
    /// segment also carries timestamps, 4 otherwise.
    ///
    /// RFC 2018 section 4 asks for the remaining blocks to repeat the most recently *reported*
    /// ones; recency of arrival approximates that without remembering what was sent.
    pub fn sack_blocks(&self, max: usize) -> SackList {
        let max = max.min(SackList::CAPACITY);
        let mut best: [(SeqRange, u64); SackList::CAPACITY] =
            [(SeqRange::default(), 0); SackList::CAPACITY];
        let mut count = 0;
        for (range, arrival) in self.ranges_with_arrival() {
            // Insertion into a list of at most four kept in decreasing arrival order.
            let mut at = count;
            while at > 0 && best[at - 1].1 < arrival {
                at -= 1;
            }
            if at >= max {
                continue;
            }
            let keep = count.min(max - 1);
            best.copy_within(at..keep, at + 1);
            best[at] = (range, arrival);
            count = keep + 1;
        }
        let mut blocks = SackList::new();
        for (range, _) in &best[..count] {
            blocks.push(range.start, range.end);
        }
        blocks
    }

    /// Gives back the memory the queues no longer need (a connection in TIME-WAIT holds no
    /// buffers beyond data not yet taken).
    pub fn shrink_to_fit(&mut self) {
        self.ready.shrink_to_fit();
        self.held.shrink_to_fit();
    }

    /// Drops every out-of-order segment and returns the bytes freed: for a queue timeout or
    /// memory pressure. RFC 2018 section 8 lets a receiver renege on SACKed data; the sender
    /// keeps it until cumulatively acknowledged and will send it again.
    pub fn discard_held(&mut self) -> usize {
        let freed = self.held_bytes;
        self.held.clear();
        self.held_bytes = 0;
        self.held_since_ms = None;
        self.reneged = false;
        if !self.has_hole() {
            self.hole_since_ms = None;
        }
        freed
    }

    /// The timeout ([`expiry_ms`](Self::expiry_ms)): drops every out-of-order segment, as
    /// [`discard_held`](Self::discard_held) does, and returns the segments and bytes dropped.
    /// Unlike it, the hole stays open on its clock until `RCV.NXT` advances (see
    /// [`oldest_hole_since_ms`](Self::oldest_hole_since_ms)). The dropped ranges are no longer
    /// in [`ranges`](Self::ranges) or [`sack_blocks`](Self::sack_blocks), and the same bytes
    /// sent again are new data.
    pub fn expire_held(&mut self) -> (usize, usize) {
        let dropped = (self.held.len(), self.held_bytes);
        if dropped.0 > 0 {
            self.held.clear();
            self.held_bytes = 0;
            self.reneged = true;
        }
        self.held_since_ms = None;
        dropped
    }
}

impl<P: Payload> std::fmt::Debug for Reassembly<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembly")
            .field("rcv_nxt", &self.rcv_nxt)
            .field("ready_bytes", &self.ready_bytes)
            .field("held", &self.ranges().collect::<Vec<_>>())
            .field("held_bytes", &self.held_bytes)
            .field("held_since_ms", &self.held_since_ms)
            .field("fin", &self.fin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::payload::TestBytes;

    const WINDOW: usize = 1 << 20;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    /// A stream of recognisable bytes; segments are slices of it, so a delivered payload's
    /// storage offset says which stream bytes it is.
    fn stream(len: usize) -> TestBytes {
        TestBytes::from(
            (0..len)
                .map(|i| (i * 7 + i / 256) as u8)
                .collect::<Vec<u8>>(),
        )
    }

    /// Reassembly whose `RCV.NXT` is stream offset 0 at sequence number `base`.
    fn at(base: u32) -> Reassembly<TestBytes> {
        Reassembly::new(s(base), ReassemblyLimits::default())
    }

    /// Inserts stream bytes [a, b) with `base` as the sequence number of stream offset 0.
    fn put(
        r: &mut Reassembly<TestBytes>,
        data: &TestBytes,
        base: u32,
        a: usize,
        b: usize,
    ) -> Insert {
        r.insert(s(base) + a, data.slice(a, b), WINDOW, 0)
    }

    /// Everything ready, as (stream offset, length) pieces; checks that each piece is the
    /// stream's own storage (zero copy) and that they are contiguous.
    fn take(r: &mut Reassembly<TestBytes>, data: &TestBytes) -> Vec<(usize, usize)> {
        let mut pieces = Vec::new();
        while let Some(piece) = r.pop_ready() {
            assert!(piece.shares_storage_with(data), "delivered a copy");
            if let Some(&(start, len)) = pieces.last() {
                assert_eq!(piece.storage_offset(), start + len, "not contiguous");
            }
            pieces.push((piece.storage_offset(), piece.len()));
        }
        pieces
    }

    fn held(r: &Reassembly<TestBytes>, base: u32) -> Vec<(u32, u32)> {
        r.held
            .iter()
            .map(|h| {
                let start = h.seq.0.wrapping_sub(base);
                (start, start + h.payload.len() as u32)
            })
            .collect()
    }

    #[test]
    fn in_order_data_is_delivered_as_is() {
        let data = stream(100);
        let mut r = at(1000);
        assert_eq!(put(&mut r, &data, 1000, 0, 40), Insert::InOrder);
        assert_eq!(put(&mut r, &data, 1000, 40, 100), Insert::InOrder);
        assert_eq!(r.rcv_nxt(), s(1100));
        assert_eq!(r.ready_bytes(), 100);
        assert_eq!(r.peek_ready().map(Payload::len), Some(40));
        assert_eq!(take(&mut r, &data), [(0, 40), (40, 60)]);
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.oldest_hole_since_ms(), None);
    }

    #[test]
    fn out_of_order_data_waits_for_the_hole() {
        let data = stream(300);
        let mut r = at(0);
        assert_eq!(put(&mut r, &data, 0, 200, 300), Insert::Queued);
        assert_eq!(put(&mut r, &data, 0, 100, 200), Insert::Queued);
        assert_eq!(r.ready_bytes(), 0);
        assert_eq!(r.held_bytes(), 200);
        assert_eq!(r.held_segments(), 2);
        assert_eq!(
            r.ranges().collect::<Vec<_>>(),
            [SeqRange::new(s(100), s(300))]
        );
        assert_eq!(put(&mut r, &data, 0, 0, 100), Insert::InOrder);
        assert_eq!(take(&mut r, &data), [(0, 100), (100, 100), (200, 100)]);
        assert_eq!(r.rcv_nxt(), s(300));
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn old_and_exact_duplicates() {
        let data = stream(300);
        let mut r = at(0);
        put(&mut r, &data, 0, 0, 100);
        assert_eq!(put(&mut r, &data, 0, 0, 100), Insert::Duplicate);
        assert_eq!(put(&mut r, &data, 0, 50, 100), Insert::Duplicate);
        assert_eq!(put(&mut r, &data, 0, 200, 250), Insert::Queued);
        assert_eq!(put(&mut r, &data, 0, 200, 250), Insert::Duplicate);
        assert_eq!(
            put(&mut r, &data, 0, 210, 240),
            Insert::Duplicate,
            "covered"
        );
        assert_eq!(held(&r, 0), [(200, 250)]);
        assert_eq!(take(&mut r, &data), [(0, 100)]);
    }

    #[test]
    fn partially_old_segment_is_trimmed() {
        let data = stream(300);
        let mut r = at(0);
        put(&mut r, &data, 0, 0, 100);
        assert_eq!(put(&mut r, &data, 0, 60, 150), Insert::InOrder);
        assert_eq!(take(&mut r, &data), [(0, 100), (100, 50)]);
    }

    #[test]
    fn new_segment_covering_held_ones_replaces_them() {
        let data = stream(300);
        let mut r = at(0);
        put(&mut r, &data, 0, 120, 140);
        put(&mut r, &data, 0, 160, 180);
        assert_eq!(put(&mut r, &data, 0, 100, 200), Insert::Queued);
        assert_eq!(held(&r, 0), [(100, 200)]);
        assert_eq!(r.held_bytes(), 100);
        put(&mut r, &data, 0, 0, 100);
        assert_eq!(take(&mut r, &data), [(0, 100), (100, 100)]);
    }

    #[test]
    fn left_and_right_overlaps_keep_held_bytes() {
        let data = stream(300);
        let mut r = at(0);
        put(&mut r, &data, 0, 100, 120);
        // Overlaps the held segment's right end: only [120, 150) is new.
        assert_eq!(put(&mut r, &data, 0, 110, 150), Insert::Queued);
        // Overlaps the held data's left end: only [80, 100) is new.
        assert_eq!(put(&mut r, &data, 0, 80, 105), Insert::Queued);
        assert_eq!(held(&r, 0), [(80, 100), (100, 120), (120, 150)]);
        assert_eq!(r.held_bytes(), 70);
        put(&mut r, &data, 0, 0, 80);
        assert_eq!(
            take(&mut r, &data),
            [(0, 80), (80, 20), (100, 20), (120, 30)]
        );
    }

    #[test]
    fn segment_spanning_several_held_ones() {
        let data = stream(300);
        let mut r = at(0);
        put(&mut r, &data, 0, 10, 20);
        put(&mut r, &data, 0, 30, 40);
        put(&mut r, &data, 0, 50, 60);
        put(&mut r, &data, 0, 70, 80);
        // Starts inside the first, ends inside the last: the ones between go.
        assert_eq!(put(&mut r, &data, 0, 15, 75), Insert::Queued);
        assert_eq!(held(&r, 0), [(10, 20), (20, 70), (70, 80)]);
        assert_eq!(r.held_bytes(), 70);
        // Exactly between two adjacent held segments' insides: nothing new.
        assert_eq!(put(&mut r, &data, 0, 15, 25), Insert::Duplicate);
        assert_eq!(put(&mut r, &data, 0, 0, 10), Insert::InOrder);
        assert_eq!(take(&mut r, &data), [(0, 10), (10, 10), (20, 50), (70, 10)]);
    }

    #[test]
    fn in_order_segment_running_into_held_data() {
        let data = stream(300);
        let mut r = at(0);
        put(&mut r, &data, 0, 20, 30);
        put(&mut r, &data, 0, 40, 60);
        // Covers [20, 30), runs into [40, 60): delivered up to 40, then the held segment.
        assert_eq!(put(&mut r, &data, 0, 0, 50), Insert::InOrder);
        assert_eq!(take(&mut r, &data), [(0, 40), (40, 20)]);
        assert_eq!(r.held_segments(), 0);
        // Covering everything held.
        put(&mut r, &data, 0, 80, 90);
        assert_eq!(put(&mut r, &data, 0, 60, 100), Insert::InOrder);
        assert_eq!(take(&mut r, &data), [(60, 40)]);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn receive_window_bounds_what_is_accepted() {
        let data = stream(300);
        let mut r = at(0);
        let insert = |r: &mut Reassembly<TestBytes>, a: usize, b: usize, wnd| {
            r.insert(s(a as u32), data.slice(a, b), wnd, 0)
        };
        assert_eq!(
            insert(&mut r, 100, 110, 100),
            Insert::Dropped(DropReason::OutOfWindow)
        );
        assert_eq!(
            insert(&mut r, 0, 10, 0),
            Insert::Dropped(DropReason::OutOfWindow)
        );
        // Straddling the right edge: the part inside is kept.
        assert_eq!(insert(&mut r, 90, 120, 100), Insert::Queued);
        assert_eq!(held(&r, 0), [(90, 100)]);
        // In order and covering the held piece: the new payload carries it.
        assert_eq!(insert(&mut r, 0, 150, 100), Insert::InOrder);
        assert_eq!(take(&mut r, &data), [(0, 100)]);
        // Old data is a duplicate even with the window closed.
        assert_eq!(insert(&mut r, 50, 100, 0), Insert::Duplicate);
    }

    #[test]
    fn queue_limits_refuse_new_out_of_order_data() {
        let data = stream(1000);
        let mut r: Reassembly<TestBytes> = Reassembly::new(
            s(0),
            ReassemblyLimits {
                max_segments: 2,
                max_bytes: 100,
                timeout_ms: None,
            },
        );
        assert_eq!(put(&mut r, &data, 0, 100, 150), Insert::Queued);
        assert_eq!(put(&mut r, &data, 0, 200, 240), Insert::Queued);
        assert_eq!(
            put(&mut r, &data, 0, 300, 301),
            Insert::Dropped(DropReason::QueueFull)
        );
        // Replacing both with one segment fits the segment bound but not the byte bound...
        assert_eq!(
            put(&mut r, &data, 0, 100, 240),
            Insert::Dropped(DropReason::QueueFull)
        );
        // ...and within both bounds it is taken.
        assert_eq!(put(&mut r, &data, 0, 100, 160), Insert::Queued);
        assert_eq!(held(&r, 0), [(100, 160), (200, 240)]);
        // In-order data never waits on the queue bound.
        assert_eq!(put(&mut r, &data, 0, 0, 100), Insert::InOrder);
        assert_eq!(put(&mut r, &data, 0, 160, 200), Insert::InOrder);
        assert_eq!(r.rcv_nxt(), s(240));
        assert_eq!(r.held_segments(), 0);
    }

    #[test]
    fn wraps_at_2_32() {
        let base = u32::MAX - 99;
        let data = stream(400);
        let mut r = at(base);
        assert_eq!(put(&mut r, &data, base, 150, 250), Insert::Queued);
        assert_eq!(put(&mut r, &data, base, 50, 120), Insert::Queued);
        assert_eq!(
            r.ranges().collect::<Vec<_>>(),
            [
                SeqRange::new(s(base) + 50, s(20)),
                SeqRange::new(s(50), s(150)),
            ]
        );
        assert_eq!(put(&mut r, &data, base, 100, 160), Insert::Queued);
        assert_eq!(held(&r, base), [(50, 120), (120, 150), (150, 250)]);
        assert_eq!(put(&mut r, &data, base, 0, 60), Insert::InOrder);
        assert_eq!(
            take(&mut r, &data),
            [(0, 50), (50, 70), (120, 30), (150, 100)]
        );
        assert_eq!(r.rcv_nxt(), s(150));
    }

    #[test]
    fn hole_clock() {
        let data = stream(500);
        let mut r = at(0);
        r.insert(s(0), data.slice(0, 10), WINDOW, 5);
        assert_eq!(r.oldest_hole_since_ms(), None);
        r.insert(s(100), data.slice(100, 110), WINDOW, 10);
        assert_eq!(r.oldest_hole_since_ms(), Some(10));
        r.insert(s(200), data.slice(200, 210), WINDOW, 20);
        r.insert(s(50), data.slice(50, 60), WINDOW, 25);
        assert_eq!(
            r.oldest_hole_since_ms(),
            Some(10),
            "more data above the same hole"
        );
        r.insert(s(10), data.slice(10, 20), WINDOW, 30);
        assert_eq!(
            r.oldest_hole_since_ms(),
            Some(30),
            "progress dates the remaining hole"
        );
        r.insert(s(20), data.slice(20, 50), WINDOW, 40);
        assert_eq!(r.rcv_nxt(), s(60));
        assert_eq!(r.oldest_hole_since_ms(), Some(40));
        r.insert(s(60), data.slice(60, 300), WINDOW, 50);
        assert_eq!(r.oldest_hole_since_ms(), None);
        r.insert(s(400), data.slice(400, 410), WINDOW, 60);
        assert_eq!(r.oldest_hole_since_ms(), Some(60));
        assert_eq!(r.discard_held(), 10);
        assert_eq!(r.oldest_hole_since_ms(), None);
        assert_eq!(r.held_segments(), 0);
    }

    #[test]
    fn held_data_expires_on_the_hole_clock() {
        let data = stream(500);
        let mut r: Reassembly<TestBytes> = Reassembly::new(
            s(0),
            ReassemblyLimits {
                timeout_ms: Some(100),
                ..ReassemblyLimits::default()
            },
        );
        r.insert(s(0), data.slice(0, 10), WINDOW, 5);
        assert_eq!(r.expiry_ms(), None, "nothing held");
        r.insert(s(100), data.slice(100, 110), WINDOW, 10);
        r.insert(s(200), data.slice(200, 210), WINDOW, 50);
        assert_eq!(
            (r.held_since_ms(), r.expiry_ms()),
            (Some(10), Some(110)),
            "from the first segment held above the hole"
        );
        r.insert(s(10), data.slice(10, 20), WINDOW, 60);
        assert_eq!(r.expiry_ms(), Some(160), "progress dates it anew");
        assert_eq!(r.expire_held(), (2, 20));
        assert_eq!(r.ranges().count(), 0);
        assert!(r.sack_blocks(4).is_empty(), "no longer reported");
        assert_eq!(r.expiry_ms(), None);
        assert_eq!(
            r.oldest_hole_since_ms(),
            Some(60),
            "the hole itself stays open for the stall detector"
        );
        // Data after the expiry waits on a fresh clock; the hole keeps its own.
        assert_eq!(
            r.insert(s(300), data.slice(300, 310), WINDOW, 160),
            Insert::Queued
        );
        r.insert(s(400), data.slice(400, 410), WINDOW, 170);
        assert_eq!(r.expiry_ms(), Some(260));
        assert_eq!(r.oldest_hole_since_ms(), Some(60));
        assert_eq!(r.expire_held(), (2, 20));
        // What expired is new data when it comes again, and the stream is whole.
        assert_eq!(put(&mut r, &data, 0, 100, 110), Insert::Queued);
        assert_eq!(put(&mut r, &data, 0, 20, 100), Insert::InOrder);
        assert_eq!(r.oldest_hole_since_ms(), None, "progress closes it");
        assert_eq!(put(&mut r, &data, 0, 110, 500), Insert::InOrder);
        assert_eq!(
            take(&mut r, &data),
            [(0, 10), (10, 10), (20, 80), (100, 10), (110, 390)]
        );
        assert_eq!(r.expire_held(), (0, 0));

        // `None` never expires; a FIN alone pins nothing and has no expiry.
        let mut r: Reassembly<TestBytes> = Reassembly::new(
            s(0),
            ReassemblyLimits {
                timeout_ms: None,
                ..ReassemblyLimits::default()
            },
        );
        put(&mut r, &data, 0, 100, 110);
        assert_eq!(r.held_since_ms(), Some(0));
        assert_eq!(r.expiry_ms(), None);
        let mut r = at(0);
        assert_eq!(r.insert_fin(s(50), WINDOW, 7), Insert::Queued);
        assert_eq!(r.expiry_ms(), None);
        assert_eq!(r.oldest_hole_since_ms(), Some(7));
    }

    #[test]
    fn sack_blocks_most_recent_first() {
        let data = stream(1000);
        let mut r = at(0);
        for (a, b) in [(100, 110), (300, 310), (500, 510), (700, 710), (900, 910)] {
            put(&mut r, &data, 0, a, b);
        }
        let blocks = |r: &Reassembly<TestBytes>, max| {
            r.sack_blocks(max)
                .iter()
                .map(|(l, rt)| (l.0, rt.0))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            blocks(&r, 4),
            [(900, 910), (700, 710), (500, 510), (300, 310)]
        );
        assert_eq!(blocks(&r, 3), [(900, 910), (700, 710), (500, 510)]);
        // A segment extending an old block makes that whole block the most recent.
        put(&mut r, &data, 0, 110, 120);
        assert_eq!(blocks(&r, 3), [(100, 120), (900, 910), (700, 710)]);
        assert_eq!(blocks(&r, 9).len(), 4);
        assert!(r.sack_blocks(0).is_empty());
    }

    #[test]
    fn fin_ends_the_stream() {
        let data = stream(100);
        let mut r = at(0);
        assert_eq!(put(&mut r, &data, 0, 50, 100), Insert::Queued);
        assert_eq!(
            r.insert_fin(s(40), WINDOW, 0),
            Insert::Dropped(DropReason::OutOfWindow),
            "below held data"
        );
        assert_eq!(r.insert_fin(s(100), WINDOW, 1), Insert::Queued);
        assert_eq!(r.insert_fin(s(100), WINDOW, 1), Insert::Duplicate);
        assert!(!r.fin_received());
        // Data beyond the FIN is not part of the stream.
        assert_eq!(
            r.insert(s(100), TestBytes::from(b"late"), WINDOW, 2),
            Insert::Dropped(DropReason::OutOfWindow)
        );
        assert_eq!(put(&mut r, &data, 0, 0, 50), Insert::InOrder);
        assert!(r.fin_received());
        assert_eq!(r.rcv_nxt(), s(101));
        assert_eq!(r.oldest_hole_since_ms(), None);
        assert_eq!(take(&mut r, &data), [(0, 50), (50, 50)]);

        // A bare FIN at RCV.NXT, even against a zero window.
        let mut r = at(7);
        assert_eq!(r.insert_fin(s(7), 0, 0), Insert::InOrder);
        assert_eq!(r.rcv_nxt(), s(8));
        let mut r = at(7);
        assert_eq!(
            r.insert_fin(s(100), 50, 0),
            Insert::Dropped(DropReason::OutOfWindow)
        );
        assert_eq!(r.insert_fin(s(6), 50, 0), Insert::Duplicate);
    }

    #[test]
    fn empty_payload_is_nothing_new() {
        let mut r = at(0);
        assert_eq!(
            r.insert(s(0), TestBytes::from(b""), WINDOW, 0),
            Insert::Duplicate
        );
        assert_eq!(r.rcv_nxt(), s(0));
    }

    #[test]
    fn releases_every_payload() {
        let data = stream(100);
        let mut r = at(0);
        put(&mut r, &data, 0, 50, 60);
        put(&mut r, &data, 0, 0, 10);
        assert!(data.storage_refs() > 1);
        drop(r);
        assert_eq!(data.storage_refs(), 1);
    }

    use crate::test_rng::TestRng as Rng;

    /// Random segments of one stream (reordered, duplicated, overlapping, partly old, some beyond
    /// the window, with small queue bounds), then every segment in order: the delivered bytes
    /// are exactly the stream, each piece a slice of it, and the bounds always hold.
    #[test]
    fn random_arrivals_deliver_the_stream_exactly() {
        for round in 0..200u64 {
            let mut rng = Rng::new(round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let len = 1 + rng.index(5000);
            let data = stream(len);
            let base = if round % 2 == 0 {
                u32::MAX - 1000
            } else {
                rng.next_u64() as u32
            };
            let limits = ReassemblyLimits {
                max_segments: 1 + rng.index(10),
                max_bytes: 1 + rng.index(3000),
                timeout_ms: Some(50),
            };
            let mut r: Reassembly<TestBytes> = Reassembly::new(s(base), limits);
            let mut delivered = 0usize;
            let drain = |r: &mut Reassembly<TestBytes>, delivered: &mut usize| {
                while let Some(piece) = r.pop_ready() {
                    assert!(piece.shares_storage_with(&data));
                    assert_eq!(piece.storage_offset(), *delivered);
                    *delivered += piece.len();
                }
            };
            for step in 0..300 {
                let a = rng.index(len);
                let b = (a + 1 + rng.index(600)).min(len);
                let wnd = if step % 7 == 0 { rng.index(800) } else { 3000 };
                let before = r.rcv_nxt();
                let result = r.insert(s(base) + a, data.slice(a, b), wnd, step);
                assert!(r.held_segments() <= limits.max_segments);
                assert!(r.held_bytes() <= limits.max_bytes);
                assert_eq!(
                    r.held_bytes(),
                    r.held.iter().map(|h| h.payload.len()).sum::<usize>()
                );
                assert_eq!(
                    result == Insert::InOrder,
                    r.rcv_nxt() != before,
                    "{result:?}"
                );
                // Held data is sorted, disjoint and above RCV.NXT.
                let mut floor = 1i64;
                for h in &r.held {
                    let (start, end) = r.held_range(h);
                    assert!(start >= floor && end > start);
                    floor = end;
                }
                if step % 3 == 0 {
                    drain(&mut r, &mut delivered);
                }
                // The timeout, as the endpoint drives it: never before the held data's deadline.
                if r.expiry_ms().is_some_and(|at| at <= step) {
                    let (segments, bytes) = r.expire_held();
                    assert!(segments > 0 && bytes > 0);
                    assert_eq!((r.held_segments(), r.held_bytes()), (0, 0));
                    assert_eq!(r.expiry_ms(), None);
                    assert!(r.oldest_hole_since_ms().is_some(), "the hole stays open");
                }
            }
            let mut a = 0;
            while a < len {
                let b = (a + 1 + rng.index(700)).min(len);
                r.insert(s(base) + a, data.slice(a, b), WINDOW, 1000);
                a = b;
            }
            drain(&mut r, &mut delivered);
            assert_eq!(delivered, len);
            assert_eq!(r.rcv_nxt(), s(base) + len);
            assert_eq!(r.buffered_bytes(), 0);
            assert_eq!(r.oldest_hole_since_ms(), None);
        }
    }
}
