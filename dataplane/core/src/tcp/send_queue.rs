//! The send side's retransmission queue: data accepted from the other leg, from `SND.UNA` to
//! the end, waiting to be sent or acknowledged.
//!
//! Payloads stay as they arrived (issue 4: "segment boundaries are preserved where the far leg's
//! MSS allows"): a segment is one payload or a piece of one, never two joined, since joining
//! would mean copying. Each queued entry is either wholly sent or wholly unsent and carries its
//! own send times, retransmission count and SACK mark, which is what Karn's rule (RFC 6298
//! section 3) and the SACK scoreboard (RFC 6675) need. An entry is split only where the engine
//! asks for a shorter segment (MSS, a window edge), so a peer cannot make the queue fragment.
//!
//! Entries are a `VecDeque` in sequence order: appending and freeing acknowledged data are O(1)
//! per entry, lookups by sequence number are binary searches, and a split shifts entries (O(n),
//! n bounded by `max_bytes` over the smallest payload, a few hundred in practice).

use std::collections::VecDeque;

use super::payload::Payload;
use super::seq::{SeqNumber, SeqRange};

/// Send history of one queued segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentMeta {
    pub first_sent_ms: u64,
    pub last_sent_ms: u64,
    /// Times sent again after the first; any makes its acknowledgment useless as an RTT sample.
    pub retransmits: u32,
    /// Every byte of it is covered by a SACK block the peer sent (RFC 6675 section 2,
    /// "SACKed").
    pub sacked: bool,
}

/// A sent segment as the scoreboard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentSegment {
    pub seq: SeqNumber,
    pub len: usize,
    pub meta: SentMeta,
}

impl SentSegment {
    pub fn range(&self) -> SeqRange {
        SeqRange::from_len(self.seq, self.len)
    }
}

/// What one cumulative acknowledgment freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckedInfo {
    /// Data bytes newly acknowledged (the FIN is not counted).
    pub bytes: usize,
    /// Queued segments freed entirely.
    pub segments: usize,
    /// Round trip of the oldest newly acknowledged segment, unless any acknowledged segment
    /// was retransmitted (Karn's rule, RFC 6298 section 3): the ACK may then answer either
    /// transmission. Segments SACKed before are skipped, since they reached the peer earlier.
    pub rtt_sample_ms: Option<u64>,
    /// This acknowledgment covers our FIN.
    pub fin_acked: bool,
}

/// An acknowledgment the queue refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// RFC 9293 section 3.10.7.4: an ACK for something not yet sent is answered with an ACK
    /// and the segment dropped.
    #[error("acknowledgment {ack} is beyond SND.NXT {snd_nxt}: it acknowledges data never sent")]
    AcksUnsent { ack: SeqNumber, snd_nxt: SeqNumber },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    None,
    Queued,
    Sent(SentMeta),
    Acked,
}

struct Entry<P> {
    seq: SeqNumber,
    payload: P,
    /// Meaningful once sent (the entry's index is below `unsent_from`).
    meta: SentMeta,
}

impl<P: Payload> Entry<P> {
    fn end(&self) -> SeqNumber {
        self.seq + self.payload.len()
    }
}

/// The data one TCP endpoint has to deliver, from `SND.UNA` onwards.
pub struct SendQueue<P: Payload> {
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    /// From `SND.UNA`, contiguous: each entry starts where the previous one ends.
    entries: VecDeque<Entry<P>>,
    /// Index of the first entry not sent yet; entries before it are sent.
    unsent_from: usize,
    /// Data bytes held (sent and unsent).
    bytes: usize,
    sacked_bytes: usize,
    max_bytes: usize,
    fin: Fin,
}

impl<P: Payload> SendQueue<P> {
    /// An empty queue whose first byte will be `snd_una`: the initial send sequence number plus
    /// one for the SYN. `max_bytes` bounds the data held (issue 4's per-flow, per-direction
    /// buffer).
    pub fn new(snd_una: SeqNumber, max_bytes: usize) -> SendQueue<P> {
        SendQueue {
            snd_una,
            snd_nxt: snd_una,
            entries: VecDeque::new(),
            unsent_from: 0,
            bytes: 0,
            sacked_bytes: 0,
            max_bytes,
            fin: Fin::None,
        }
    }

    /// The oldest unacknowledged sequence number (RFC 9293 `SND.UNA`).
    pub fn snd_una(&self) -> SeqNumber {
        self.snd_una
    }

    /// The next sequence number to send (RFC 9293 `SND.NXT`), counting a sent FIN. It never moves
    /// back: retransmissions go through [`retransmit`](Self::retransmit).
    pub fn snd_nxt(&self) -> SeqNumber {
        self.snd_nxt
    }

    /// Where sent data ends, before any FIN.
    fn sent_end(&self) -> SeqNumber {
        self.entries
            .get(self.unsent_from)
            .map_or(self.data_end(), |first_unsent| first_unsent.seq)
    }

    /// The sequence number after the last data byte queued; where a FIN goes.
    fn data_end(&self) -> SeqNumber {
        self.snd_una + self.bytes
    }

    /// Data bytes held, sent or not: what counts against `max_bytes`.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes [`push`](Self::push) will still accept: what the other leg may be offered as
    /// receive window, so that back-pressure reaches its sender.
    pub fn free_space(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// Data bytes queued and not sent yet.
    pub fn unsent(&self) -> usize {
        self.data_end().since(self.sent_end())
    }

    /// Sequence space sent and not acknowledged, a sent FIN included (RFC 5681's FlightSize
    /// before SACK is taken into account).
    pub fn in_flight(&self) -> usize {
        self.snd_nxt.since(self.snd_una)
    }

    /// Sent bytes the peer has SACKed but not cumulatively acknowledged.
    pub fn sacked_bytes(&self) -> usize {
        self.sacked_bytes
    }

    /// True when nothing (data or FIN) waits to be sent or acknowledged.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && matches!(self.fin, Fin::None | Fin::Acked)
    }

    /// Appends a payload to be sent after everything queued. When the queue holds `max_bytes`
    /// already, or a FIN has been queued, the payload comes back: the caller keeps it and stops
    /// reading the other leg (back-pressure). A payload is always taken into an empty queue, so
    /// one larger than `max_bytes` cannot wedge the flow.
    pub fn push(&mut self, payload: P) -> Result<(), P> {
        if self.fin != Fin::None {
            return Err(payload);
        }
        if payload.is_empty() {
            return Ok(());
        }
        if self.bytes != 0 && payload.len() > self.free_space() {
            return Err(payload);
        }
        self.entries.push_back(Entry {
            seq: self.data_end(),
            payload,
            meta: SentMeta::default(),
        });
        self.bytes += self.entries.back().map_or(0, |entry| entry.payload.len());
        Ok(())
    }

    /// Queues a FIN after the data: the other leg closed its half. It takes one sequence number
    /// (RFC 9293 section 3.4). False when one is already queued.
    pub fn push_fin(&mut self) -> bool {
        if self.fin != Fin::None {
            return false;
        }
        self.fin = Fin::Queued;
        true
    }

    /// Sequence number of the FIN, once queued.
    pub fn fin_seq(&self) -> Option<SeqNumber> {
        match self.fin {
            Fin::None => None,
            // Once acknowledged, the FIN sits just before SND.UNA.
            Fin::Acked => Some(self.snd_una - 1),
            Fin::Queued | Fin::Sent(_) => Some(self.data_end()),
        }
    }

    pub fn fin_sent(&self) -> bool {
        matches!(self.fin, Fin::Sent(_) | Fin::Acked)
    }

    pub fn fin_acked(&self) -> bool {
        self.fin == Fin::Acked
    }

    /// The next segment of unsent data: the next queued payload, or its first `max_len` bytes
    /// when it is longer (the rest stays queued as its own segment). Marks it sent at `now_ms`.
    /// Two payloads are never joined, so a segment may be shorter than `max_len`.
    pub fn next_segment(&mut self, max_len: usize, now_ms: u64) -> Option<(SeqNumber, P)> {
        if max_len == 0 {
            return None;
        }
        let index = self.unsent_from;
        if self.entries.get(index)?.payload.len() > max_len {
            self.split(index, max_len);
        }
        let entry = self.entries.get_mut(index)?;
        entry.meta = SentMeta {
            first_sent_ms: now_ms,
            last_sent_ms: now_ms,
            retransmits: 0,
            sacked: false,
        };
        let segment = (entry.seq, entry.payload.clone());
        self.unsent_from += 1;
        self.snd_nxt = self.sent_end();
        Some(segment)
    }

    /// Sends the FIN if it is queued and every data byte has been sent; returns its sequence
    /// number, to go on the last data segment (when it ends there) or alone. `SND.NXT` then
    /// counts it.
    pub fn send_fin(&mut self, now_ms: u64) -> Option<SeqNumber> {
        if self.fin != Fin::Queued || self.unsent() != 0 {
            return None;
        }
        self.fin = Fin::Sent(SentMeta {
            first_sent_ms: now_ms,
            last_sent_ms: now_ms,
            retransmits: 0,
            sacked: false,
        });
        let fin_seq = self.data_end();
        self.snd_nxt = fin_seq + 1;
        Some(fin_seq)
    }

    /// Records a retransmission of the FIN (alone, or with the last data segment); false when no
    /// FIN is outstanding.
    pub fn retransmit_fin(&mut self, now_ms: u64) -> bool {
        let Fin::Sent(meta) = &mut self.fin else {
            return false;
        };
        meta.retransmits += 1;
        meta.last_sent_ms = now_ms;
        true
    }

    /// Position of `seq` among the entries: the index of the entry holding it and the offset
    /// within it. None outside `[SND.UNA, end of data)`.
    fn locate(&self, seq: SeqNumber) -> Option<(usize, usize)> {
        let offset = usize::try_from(seq.distance(self.snd_una)).ok()?;
        if offset >= self.bytes {
            return None;
        }
        let index = self
            .entries
            .partition_point(|entry| entry.end().since(self.snd_una) <= offset);
        let entry = self.entries.get(index)?;
        Some((index, seq.since(entry.seq)))
    }

    /// Splits entry `index` into `[0, at)` and the rest, both keeping its send history.
    fn split(&mut self, index: usize, at: usize) {
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        let len = entry.payload.len();
        if at == 0 || at >= len {
            return;
        }
        let tail = Entry {
            seq: entry.seq + at,
            payload: entry.payload.slice(at, len),
            meta: entry.meta,
        };
        entry.payload = entry.payload.slice(0, at);
        self.entries.insert(index + 1, tail);
        if index < self.unsent_from {
            self.unsent_from += 1;
        }
    }

    /// The queued data starting at `seq`, up to `max_len` bytes and no further than the end of
    /// the payload holding it: for looking at what a retransmission would carry. None when `seq`
    /// is not held (acknowledged already, or past the data).
    pub fn segment_at(&self, seq: SeqNumber, max_len: usize) -> Option<(SeqNumber, P)> {
        let (index, offset) = self.locate(seq)?;
        let payload = &self.entries[index].payload;
        let end = payload.len().min(offset.saturating_add(max_len));
        if end <= offset {
            return None;
        }
        Some((seq, payload.slice(offset, end)))
    }

    /// Sends again the sent data starting at `seq` (up to `max_len` bytes, within one payload),
    /// recording the retransmission in its history. The queued entry is split at the returned
    /// segment's edges so that the history describes exactly what went out. None when `seq` is
    /// not sent-and-unacknowledged data.
    pub fn retransmit(
        &mut self,
        seq: SeqNumber,
        max_len: usize,
        now_ms: u64,
    ) -> Option<(SeqNumber, P)> {
        if max_len == 0 || seq.distance(self.sent_end()) >= 0 {
            return None;
        }
        let (mut index, offset) = self.locate(seq)?;
        if offset > 0 {
            self.split(index, offset);
            index += 1;
        }
        self.split(index, max_len);
        let entry = self.entries.get_mut(index)?;
        entry.meta.retransmits += 1;
        entry.meta.last_sent_ms = now_ms;
        Some((entry.seq, entry.payload.clone()))
    }

    /// Frees what a cumulative acknowledgment covers (RFC 9293 section 3.10.7.4), slicing the
    /// payload it ends inside. An acknowledgment at or below `SND.UNA` frees nothing (whether it
    /// is a duplicate ACK is for the engine to judge, RFC 5681 section 2).
    pub fn on_ack(&mut self, ack: SeqNumber, now_ms: u64) -> Result<AckedInfo, AckError> {
        let mut info = AckedInfo::default();
        if ack.distance(self.snd_una) <= 0 {
            return Ok(info);
        }
        if ack.distance(self.snd_nxt) > 0 {
            return Err(AckError::AcksUnsent {
                ack,
                snd_nxt: self.snd_nxt,
            });
        }
        let fin_seq = self.data_end();
        // Data acknowledged is at most the data sent; the rest is the FIN.
        let data_acked = ack
            .since(self.snd_una)
            .min(self.sent_end().since(self.snd_una));
        let mut retransmitted = false;
        let mut oldest_sent: Option<u64> = None;
        let mut note = |meta: &SentMeta| {
            retransmitted |= meta.retransmits > 0;
            if !meta.sacked && oldest_sent.is_none() {
                oldest_sent = Some(meta.first_sent_ms);
            }
        };
        let mut left = data_acked;
        while left > 0 {
            let Some(entry) = self.entries.front_mut() else {
                break;
            };
            note(&entry.meta);
            let len = entry.payload.len();
            if len <= left {
                if entry.meta.sacked {
                    self.sacked_bytes -= len;
                }
                self.entries.pop_front();
                self.unsent_from -= 1;
                info.segments += 1;
                left -= len;
            } else {
                if entry.meta.sacked {
                    self.sacked_bytes -= left;
                }
                entry.payload = entry.payload.slice(left, len);
                entry.seq += left;
                left = 0;
            }
        }
        self.bytes -= data_acked;
        info.bytes = data_acked;
        if let Fin::Sent(meta) = self.fin {
            if ack == fin_seq + 1 {
                note(&meta);
                self.fin = Fin::Acked;
                info.fin_acked = true;
            }
        }
        self.snd_una = ack;
        if !retransmitted {
            info.rtt_sample_ms = oldest_sent.map(|sent| now_ms.saturating_sub(sent));
        }
        Ok(info)
    }

    /// Marks as SACKed every sent segment lying wholly inside `block` (RFC 2018; RFC 6675 counts
    /// SACKed segments, and a partly covered one is not delivered). Parts of the block below
    /// `SND.UNA` (a D-SACK, RFC 2883) or beyond what was sent are ignored. Returns the bytes newly
    /// marked.
    pub fn mark_sacked(&mut self, block: SeqRange) -> usize {
        let sent = SeqRange::new(self.snd_una, self.sent_end());
        let Some(block) = block.intersect(&sent) else {
            return 0;
        };
        let Some((mut index, offset)) = self.locate(block.start) else {
            return 0;
        };
        if offset > 0 {
            index += 1;
        }
        let mut marked = 0;
        while let Some(entry) = self.entries.get_mut(index) {
            if entry.end().distance(block.end) > 0 {
                break;
            }
            if !entry.meta.sacked {
                entry.meta.sacked = true;
                marked += entry.payload.len();
            }
            index += 1;
        }
        self.sacked_bytes += marked;
        marked
    }

    /// Forgets every SACK mark: after a retransmission timeout the sender must not rely on them,
    /// since the receiver may have reneged (RFC 2018 section 8).
    pub fn clear_sacked(&mut self) {
        for entry in self.entries.iter_mut() {
            entry.meta.sacked = false;
        }
        self.sacked_bytes = 0;
    }

    /// Gives back the memory of an emptied queue (a connection in TIME-WAIT holds no buffers).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Every queued payload, sent or not, from `SND.UNA` on, with the sequence number of its first
    /// byte: what a flow moved to pass-through must still deliver itself.
    pub fn iter(&self) -> impl Iterator<Item = (SeqNumber, &P)> + '_ {
        self.entries.iter().map(|entry| (entry.seq, &entry.payload))
    }

    /// The sent, unacknowledged segments in sequence order, with their history: the scoreboard
    /// that loss recovery (RFC 6675 `IsLost`, `NextSeg`) walks.
    pub fn sent_segments(&self) -> impl Iterator<Item = SentSegment> + '_ {
        self.entries
            .range(..self.unsent_from)
            .map(|entry| SentSegment {
                seq: entry.seq,
                len: entry.payload.len(),
                meta: entry.meta,
            })
    }
}

impl<P: Payload> std::fmt::Debug for SendQueue<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("snd_una", &self.snd_una)
            .field("snd_nxt", &self.snd_nxt)
            .field("segments", &self.entries.len())
            .field("bytes", &self.bytes)
            .field("unsent", &self.unsent())
            .field("sacked_bytes", &self.sacked_bytes)
            .field("fin", &self.fin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::payload::TestBytes;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    fn bytes(len: usize, tag: u8) -> TestBytes {
        TestBytes::from((0..len).map(|i| tag ^ i as u8).collect::<Vec<u8>>())
    }

    fn queue(base: u32) -> SendQueue<TestBytes> {
        SendQueue::new(s(base), 256 * 1024)
    }

    #[test]
    fn segment_boundaries_are_preserved() {
        let mut q = queue(1000);
        let payloads = [bytes(100, 1), bytes(200, 2), bytes(50, 3)];
        for p in &payloads {
            q.push(p.clone()).unwrap();
        }
        assert_eq!(q.unsent(), 350);
        let mut seq = s(1000);
        for p in &payloads {
            let (at, segment) = q.next_segment(1460, 0).unwrap();
            assert_eq!(at, seq);
            // The very bytes pushed, not a copy and not joined with the next payload.
            assert_eq!(segment.bytes().as_ptr(), p.bytes().as_ptr());
            assert_eq!(segment.len(), p.len());
            seq += p.len();
        }
        assert!(q.next_segment(1460, 0).is_none());
        assert_eq!(q.snd_nxt(), s(1350));
        assert_eq!(q.in_flight(), 350);
        assert_eq!(q.unsent(), 0);
    }

    #[test]
    fn payloads_longer_than_the_segment_are_split() {
        let mut q = queue(0);
        let big = bytes(3000, 9);
        q.push(big.clone()).unwrap();
        let mut pieces = Vec::new();
        while let Some((seq, segment)) = q.next_segment(1460, 5) {
            assert!(segment.shares_storage_with(&big));
            assert_eq!(segment.storage_offset(), seq.0 as usize);
            pieces.push(segment.len());
        }
        assert_eq!(pieces, [1460, 1460, 80]);
        assert_eq!(q.sent_segments().count(), 3);
        assert!(q.next_segment(0, 5).is_none());
    }

    #[test]
    fn partial_acks_slice_the_head() {
        let mut q = queue(0);
        let first = bytes(100, 1);
        q.push(first.clone()).unwrap();
        q.push(bytes(100, 2)).unwrap();
        q.next_segment(1000, 10).unwrap();
        q.next_segment(1000, 10).unwrap();
        let acked = q.on_ack(s(30), 50).unwrap();
        assert_eq!(acked.bytes, 30);
        assert_eq!(acked.segments, 0);
        assert_eq!(acked.rtt_sample_ms, Some(40));
        assert_eq!(q.snd_una(), s(30));
        assert_eq!(q.buffered_bytes(), 170);
        let (seq, rest) = q.segment_at(s(30), 1000).unwrap();
        assert_eq!(seq, s(30));
        assert_eq!(rest.len(), 70);
        assert_eq!(rest.bytes().as_ptr(), first.bytes()[30..].as_ptr());
        let acked = q.on_ack(s(150), 60).unwrap();
        assert_eq!((acked.bytes, acked.segments), (120, 1));
        assert_eq!(q.in_flight(), 50);
        // Old and duplicate acknowledgments free nothing.
        assert_eq!(q.on_ack(s(150), 61).unwrap(), AckedInfo::default());
        assert_eq!(q.on_ack(s(20), 61).unwrap(), AckedInfo::default());
        assert_eq!(q.snd_una(), s(150));
    }

    #[test]
    fn acks_beyond_snd_nxt_are_refused() {
        let mut q = queue(0);
        q.push(bytes(100, 1)).unwrap();
        q.next_segment(60, 0).unwrap();
        assert_eq!(
            q.on_ack(s(61), 1),
            Err(AckError::AcksUnsent {
                ack: s(61),
                snd_nxt: s(60)
            })
        );
        assert_eq!(q.snd_una(), s(0));
        assert_eq!(q.on_ack(s(60), 1).unwrap().bytes, 60);
    }

    #[test]
    fn retransmission_lookups() {
        let mut q = queue(0);
        let a = bytes(1000, 1);
        q.push(a.clone()).unwrap();
        q.push(bytes(500, 2)).unwrap();
        q.next_segment(1460, 0).unwrap();
        // Looking does not change anything, and stops at the payload's end.
        let (seq, seg) = q.segment_at(s(400), 1460).unwrap();
        assert_eq!((seq, seg.len()), (s(400), 600));
        assert_eq!(seg.bytes().as_ptr(), a.bytes()[400..].as_ptr());
        assert_eq!(q.segment_at(s(400), 100).unwrap().1.len(), 100);
        assert_eq!(
            q.segment_at(s(1200), 1460).unwrap().1.len(),
            300,
            "unsent data too"
        );
        assert!(q.segment_at(s(1500), 1).is_none());
        assert!(q.segment_at(s(0), 0).is_none());

        // Retransmitting a middle piece (a smaller MSS) splits the entry around it.
        let (seq, seg) = q.retransmit(s(400), 300, 7).unwrap();
        assert_eq!((seq, seg.len()), (s(400), 300));
        let history: Vec<_> = q
            .sent_segments()
            .map(|sent| (sent.seq.0, sent.len, sent.meta.retransmits))
            .collect();
        assert_eq!(history, [(0, 400, 0), (400, 300, 1), (700, 300, 0)]);
        assert!(q.retransmit(s(1000), 100, 7).is_none(), "not sent yet");
        assert!(q.retransmit(s(400), 0, 7).is_none());
        // The split did not disturb what is unsent.
        assert_eq!(q.unsent(), 500);
        assert_eq!(q.next_segment(1460, 8).unwrap().0, s(1000));
        q.on_ack(s(500), 9).unwrap();
        assert!(q.segment_at(s(499), 10).is_none(), "acknowledged");
        assert!(q.retransmit(s(499), 10, 9).is_none());
    }

    #[test]
    fn karn_rule_for_rtt_samples() {
        let mut q = queue(0);
        for tag in 0..3 {
            q.push(bytes(100, tag)).unwrap();
        }
        q.next_segment(100, 100).unwrap();
        q.next_segment(100, 110).unwrap();
        q.next_segment(100, 120).unwrap();
        // The oldest newly acknowledged segment gives the sample.
        assert_eq!(q.on_ack(s(100), 150).unwrap().rtt_sample_ms, Some(50));
        q.retransmit(s(100), 100, 300).unwrap();
        // An ACK covering a retransmitted segment gives none, whichever copy it answers.
        let acked = q.on_ack(s(200), 320).unwrap();
        assert_eq!((acked.bytes, acked.rtt_sample_ms), (100, None));
        // A segment first SACKed gives none either: it arrived before this ACK.
        q.mark_sacked(SeqRange::new(s(200), s(300)));
        assert_eq!(q.on_ack(s(300), 400).unwrap().rtt_sample_ms, None);
    }

    #[test]
    fn fin_takes_one_sequence_number() {
        let mut q = queue(u32::MAX - 49);
        q.push(bytes(100, 1)).unwrap();
        assert!(q.push_fin());
        assert!(!q.push_fin());
        let late = bytes(10, 2);
        assert_eq!(q.push(late.clone()), Err(late), "nothing after the FIN");
        assert_eq!(q.fin_seq(), Some(s(50)));
        assert_eq!(q.send_fin(0), None, "data first");
        q.next_segment(60, 0).unwrap();
        assert_eq!(q.send_fin(0), None);
        q.next_segment(60, 0).unwrap();
        assert_eq!(q.send_fin(10), Some(s(50)));
        assert!(q.fin_sent());
        assert_eq!(q.send_fin(10), None, "once");
        assert_eq!(q.snd_nxt(), s(51));
        assert_eq!(q.in_flight(), 101);
        // Data acknowledged, FIN not yet.
        let acked = q.on_ack(s(50), 20).unwrap();
        assert_eq!((acked.bytes, acked.fin_acked), (100, false));
        assert!(!q.is_empty());
        assert!(q.retransmit_fin(30));
        let acked = q.on_ack(s(51), 40).unwrap();
        assert_eq!(
            (acked.bytes, acked.fin_acked, acked.rtt_sample_ms),
            (0, true, None)
        );
        assert!(q.fin_acked());
        assert!(q.is_empty());
        assert_eq!(q.fin_seq(), Some(s(50)));
        assert_eq!(q.in_flight(), 0);
        assert!(!q.retransmit_fin(50));
    }

    #[test]
    fn fin_alone_and_acked_with_data() {
        let mut q = queue(10);
        assert!(q.push_fin());
        assert_eq!(q.send_fin(5), Some(s(10)));
        let acked = q.on_ack(s(11), 25).unwrap();
        assert_eq!((acked.fin_acked, acked.rtt_sample_ms), (true, Some(20)));

        let mut q = queue(10);
        q.push(bytes(5, 1)).unwrap();
        q.push_fin();
        q.next_segment(100, 0).unwrap();
        q.send_fin(0).unwrap();
        let acked = q.on_ack(s(16), 3).unwrap();
        assert_eq!((acked.bytes, acked.segments, acked.fin_acked), (5, 1, true));
        assert_eq!(acked.rtt_sample_ms, Some(3));
    }

    #[test]
    fn back_pressure_bound() {
        let mut q: SendQueue<TestBytes> = SendQueue::new(s(0), 1000);
        q.push(bytes(600, 1)).unwrap();
        assert_eq!(q.free_space(), 400);
        let refused = bytes(401, 2);
        assert_eq!(q.push(refused.clone()), Err(refused));
        q.push(bytes(400, 3)).unwrap();
        assert_eq!(q.free_space(), 0);
        assert!(q.push(bytes(1, 4)).is_err());
        assert!(q.push(bytes(0, 4)).is_ok(), "nothing to hold");
        q.next_segment(1460, 0).unwrap();
        q.on_ack(s(600), 1).unwrap();
        assert_eq!(q.free_space(), 600);
        // An empty queue takes a payload larger than the bound rather than wedge.
        let mut q: SendQueue<TestBytes> = SendQueue::new(s(0), 100);
        assert!(q.push(bytes(150, 1)).is_ok());
        assert_eq!(q.free_space(), 0);
    }

    #[test]
    fn sack_marks_whole_segments_only() {
        let mut q = queue(0);
        for tag in 0..4 {
            q.push(bytes(100, tag)).unwrap();
        }
        for _ in 0..3 {
            q.next_segment(100, 0).unwrap();
        }
        // [150, 400): covers [200, 300) wholly, [100, 200) partly, [300, 400) is unsent.
        assert_eq!(q.mark_sacked(SeqRange::new(s(150), s(400))), 100);
        assert_eq!(
            q.mark_sacked(SeqRange::new(s(200), s(300))),
            0,
            "already marked"
        );
        assert_eq!(q.sacked_bytes(), 100);
        let sacked: Vec<_> = q.sent_segments().map(|seg| seg.meta.sacked).collect();
        assert_eq!(sacked, [false, false, true]);
        // Below SND.UNA (D-SACK) and empty blocks mark nothing.
        q.on_ack(s(100), 0).unwrap();
        assert_eq!(q.mark_sacked(SeqRange::new(s(0), s(100))), 0);
        assert_eq!(q.mark_sacked(SeqRange::new(s(120), s(120))), 0);
        q.clear_sacked();
        assert_eq!(q.sacked_bytes(), 0);
        assert_eq!(q.mark_sacked(SeqRange::new(s(100), s(300))), 200);
        // A partial ACK into a SACKed segment frees its SACKed bytes.
        q.on_ack(s(250), 0).unwrap();
        assert_eq!(q.sacked_bytes(), 50);
        q.on_ack(s(300), 0).unwrap();
        assert_eq!(q.sacked_bytes(), 0);
    }

    #[test]
    fn sequence_wrap() {
        let base = u32::MAX - 99;
        let mut q = queue(base);
        q.push(bytes(150, 1)).unwrap();
        q.push(bytes(150, 2)).unwrap();
        let (seq, _) = q.next_segment(120, 0).unwrap();
        assert_eq!(seq, s(base));
        let (seq, seg) = q.next_segment(120, 0).unwrap();
        assert_eq!((seq, seg.len()), (s(20), 30));
        assert_eq!(q.segment_at(s(5), 10).unwrap().1.len(), 10);
        assert_eq!(q.mark_sacked(SeqRange::new(s(20), s(50))), 30);
        let (seq, seg) = q.retransmit(s(u32::MAX), 10, 1).unwrap();
        assert_eq!((seq, seg.len()), (s(u32::MAX), 10));
        let acked = q.on_ack(s(10), 2).unwrap();
        assert_eq!(acked.bytes, 110);
        assert_eq!(q.snd_una(), s(10));
        assert_eq!(q.in_flight(), 40);
        assert_eq!(q.unsent(), 150);
    }

    #[test]
    fn releases_every_payload() {
        let data = bytes(1000, 1);
        let mut q = queue(0);
        q.push(data.slice(0, 500)).unwrap();
        q.push(data.slice(500, 1000)).unwrap();
        q.next_segment(300, 0);
        q.retransmit(s(100), 50, 1);
        assert!(data.storage_refs() > 1);
        q.on_ack(s(300), 2).unwrap();
        drop(q);
        assert_eq!(data.storage_refs(), 1);
    }

    use crate::test_rng::TestRng as Rng;

    /// Random pushes, sends, retransmissions, SACKs and ACKs over one stream: everything sent is
    /// a slice of a single pushed payload at its own sequence number, and the accounting adds up.
    #[test]
    fn random_operations_keep_the_books() {
        for round in 0..100u64 {
            let mut rng = Rng::new(round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let base = if round % 2 == 0 {
                u32::MAX - 2000
            } else {
                rng.next_u64() as u32
            };
            let stream = bytes(20_000, round as u8);
            let mut q: SendQueue<TestBytes> = SendQueue::new(s(base), 1 + rng.index(5000));
            // Offsets where pushed payloads start, so a segment can be checked not to span two.
            let mut boundaries = vec![0usize];
            let mut pushed = 0usize;
            let check = |seq: SeqNumber, seg: &TestBytes, boundaries: &[usize]| {
                let offset = seq.since(s(base));
                assert!(seg.shares_storage_with(&stream));
                assert_eq!(seg.storage_offset(), offset);
                let payload = boundaries.partition_point(|&b| b <= offset);
                assert!(boundaries
                    .get(payload)
                    .is_none_or(|&next| offset + seg.len() <= next));
            };
            for now in 0..500u64 {
                match rng.index(6) {
                    0 | 1 if pushed < stream.len() => {
                        let len = (1 + rng.index(1500)).min(stream.len() - pushed);
                        if q.push(stream.slice(pushed, pushed + len)).is_ok() {
                            pushed += len;
                            boundaries.push(pushed);
                        }
                    }
                    2 => {
                        if let Some((seq, seg)) = q.next_segment(1 + rng.index(1460), now) {
                            check(seq, &seg, &boundaries);
                        }
                    }
                    3 if q.in_flight() > 0 => {
                        let seq = q.snd_una() + rng.index(q.in_flight());
                        if let Some((at, seg)) = q.retransmit(seq, 1 + rng.index(1460), now) {
                            assert_eq!(at, seq);
                            check(at, &seg, &boundaries);
                        }
                    }
                    4 if q.in_flight() > 0 => {
                        let start = q.snd_una() + rng.index(q.in_flight());
                        q.mark_sacked(SeqRange::from_len(start, rng.index(3000)));
                    }
                    _ => {
                        let ack = q.snd_una() + rng.index(q.in_flight() + 1);
                        let before = q.snd_una();
                        let acked = q.on_ack(ack, now).unwrap();
                        assert_eq!(acked.bytes, ack.since(before));
                    }
                }
                let segments: Vec<_> = q.sent_segments().collect();
                let mut expected = q.snd_una();
                for segment in &segments {
                    assert_eq!(segment.seq, expected);
                    assert!(segment.len > 0);
                    expected += segment.len;
                }
                assert_eq!(expected, q.snd_nxt());
                assert_eq!(q.in_flight() + q.unsent(), q.buffered_bytes());
                assert_eq!(q.snd_una() + q.buffered_bytes(), s(base) + pushed);
                let sacked: usize = segments
                    .iter()
                    .filter(|seg| seg.meta.sacked)
                    .map(|seg| seg.len)
                    .sum();
                assert_eq!(sacked, q.sacked_bytes());
            }
        }
    }
}
