//! Selective acknowledgment, both ways: the blocks a receiver reports (RFC 2018, D-SACK per
//! RFC 2883) and the sender's scoreboard that drives SACK-based loss recovery (RFC 6675).
//!
//! Blocks are [`SeqRange`]s: RFC 2018 §3's left edge is `start`, its right edge ("the sequence
//! number immediately following the last sequence number of this block") is `end`.

use super::congestion::DUP_THRESH;
use super::seq::{SeqNumber, SeqRange};

/// The most SACK blocks that fit in the 40 bytes of TCP options (RFC 2018 §3: 2 + 8·n bytes).
pub const MAX_SACK_BLOCKS: usize = 4;

/// With timestamps (10 bytes, 12 with padding) only three blocks fit beside them.
pub const MAX_SACK_BLOCKS_WITH_TIMESTAMPS: usize = 3;

/// The blocks of one SACK option, in the order they go on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [SeqRange; MAX_SACK_BLOCKS],
    len: u8,
    dsack: bool,
}

impl SackBlocks {
    pub fn as_slice(&self) -> &[SeqRange] {
        &self.blocks[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the first block is a D-SACK (RFC 2883) rather than data held out of order.
    pub fn has_dsack(&self) -> bool {
        self.dsack
    }

    fn is_full(&self, limit: usize) -> bool {
        self.len() >= limit.min(MAX_SACK_BLOCKS)
    }

    fn push(&mut self, block: SeqRange) {
        if self.len() < MAX_SACK_BLOCKS {
            self.blocks[self.len()] = block;
            self.len += 1;
        }
    }

    /// Blocks that report held data (not the D-SACK one).
    fn data_blocks(&self) -> &[SeqRange] {
        &self.as_slice()[usize::from(self.dsack)..]
    }

    fn reports(&self, block: &SeqRange) -> bool {
        self.data_blocks().iter().any(|b| b.contains_range(block))
    }
}

/// The receive side: chooses the blocks of each ACK's SACK option.
///
/// RFC 2018 §4: the first block holds the segment that triggered the ACK, and the rest repeat the
/// most recently reported blocks, so that a block survives the loss of a few ACKs. Only those
/// recent blocks are remembered (at most four ranges); what the receiver actually holds comes in
/// with each call, so a block is never reported after the data it names is gone or delivered.
#[derive(Clone, Debug)]
pub struct SackGenerator {
    max_blocks: u8,
    recent: [SeqRange; MAX_SACK_BLOCKS],
    recent_len: u8,
}

impl SackGenerator {
    /// `timestamps`: whether the connection carries RFC 7323 timestamps, which leave room for
    /// three blocks instead of four.
    pub fn new(timestamps: bool) -> SackGenerator {
        let max_blocks = if timestamps {
            MAX_SACK_BLOCKS_WITH_TIMESTAMPS
        } else {
            MAX_SACK_BLOCKS
        };
        SackGenerator {
            max_blocks: max_blocks as u8,
            recent: [SeqRange::default(); MAX_SACK_BLOCKS],
            recent_len: 0,
        }
    }

    pub fn max_blocks(&self) -> usize {
        usize::from(self.max_blocks)
    }

    /// Forget what was reported (connection reset, or SACK no longer in use).
    pub fn clear(&mut self) {
        self.recent_len = 0;
    }

    /// The SACK option for the ACK about to be sent.
    ///
    /// - `rcv_nxt`: the ACK's acknowledgment number.
    /// - `out_of_order`: the ranges held above `rcv_nxt`, including the segment just received, in
    ///   any order; adjacent or overlapping ranges are reported as one block.
    /// - `trigger`: the segment that caused this ACK, if any; when it advanced `rcv_nxt` it is no
    ///   longer held out of order and is simply not reported.
    /// - `duplicate`: the part of the triggering segment that had already been received, to be
    ///   reported first as a D-SACK (RFC 2883 §4), whether below `rcv_nxt` or inside held data.
    pub fn blocks(
        &mut self,
        rcv_nxt: SeqNumber,
        out_of_order: &[SeqRange],
        trigger: Option<SeqRange>,
        duplicate: Option<SeqRange>,
    ) -> SackBlocks {
        let limit = self.max_blocks();
        let mut out = SackBlocks::default();

        if let Some(dup) = duplicate.filter(|d| !d.is_empty()) {
            out.push(dup);
            out.dsack = true;
            // RFC 2883 §4 (2): a duplicate inside held data is followed by the block holding it,
            // so the sender learns both that it retransmitted needlessly and what is held.
            if let Some(block) = containing_block(rcv_nxt, out_of_order, &dup) {
                out.push(block);
            }
        }

        // RFC 2018 §4: the block holding the most recently received segment comes first.
        if let Some(block) = trigger.and_then(|t| containing_block(rcv_nxt, out_of_order, &t)) {
            if !out.is_full(limit) && !out.reports(&block) {
                out.push(block);
            }
        }

        // Then the most recently reported blocks, as they stand now (merged with what arrived
        // since, dropped once delivered).
        for i in 0..usize::from(self.recent_len) {
            if out.is_full(limit) {
                break;
            }
            let recent = self.recent[i];
            if let Some(block) = containing_block(rcv_nxt, out_of_order, &recent) {
                if !out.reports(&block) {
                    out.push(block);
                }
            }
        }

        // RFC 2018 §4 asks for as many distinct blocks as fit: fill from the lowest, whose
        // holes the sender most needs to repair.
        while !out.is_full(limit) {
            let lowest = out_of_order
                .iter()
                .filter(|r| !r.is_empty() && r.end > rcv_nxt && !out.reports(r))
                .min_by_key(|r| r.start.since(rcv_nxt));
            let Some(block) = lowest.and_then(|r| containing_block(rcv_nxt, out_of_order, r))
            else {
                break;
            };
            out.push(block);
        }

        let reported = out.data_blocks();
        self.recent[..reported.len()].copy_from_slice(reported);
        self.recent_len = reported.len() as u8;
        out
    }
}

/// The maximal run of `held` ranges (merged where they overlap or touch) that shares a byte with
/// `seed`, cut at `rcv_nxt`; `None` when `seed` overlaps nothing held above `rcv_nxt`.
///
/// A fixed-point over an unordered slice: each pass absorbs every range touching the block, and
/// the loop ends when a pass absorbs nothing. Sorted input settles in two passes.
fn containing_block(rcv_nxt: SeqNumber, held: &[SeqRange], seed: &SeqRange) -> Option<SeqRange> {
    let above = |r: &SeqRange| -> Option<SeqRange> {
        if r.is_empty() || r.end <= rcv_nxt {
            None
        } else {
            Some(SeqRange::new(r.start.max(rcv_nxt), r.end))
        }
    };
    let mut block = held.iter().filter_map(above).find(|r| r.overlaps(seed))?;
    loop {
        let mut grew = false;
        for r in held.iter().filter_map(above) {
            if r.touches(&block) && !block.contains_range(&r) {
                block = block.hull(&r);
                grew = true;
            }
        }
        if !grew {
            return Some(block);
        }
    }
}

/// The most ranges the scoreboard keeps.
///
/// Past it, the highest range is forgotten (the incoming one, if it would be the highest): the
/// holes nearest SND.UNA are the ones recovery repairs first, and forgetting SACKed data is safe
/// where inventing it is not (merging two ranges across a gap would mark unsent-to-the-peer data
/// as delivered and stall the connection). What is forgotten may be retransmitted needlessly, or
/// relearned from a later ACK: receivers repeat blocks (RFC 2018 §4). [`SackScoreboard::forgotten`]
/// counts it. 32 ranges is 256 bytes, allocated only while SACK information exists.
pub const MAX_SCOREBOARD_RANGES: usize = 32;

/// What one ACK's SACK option changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SackUpdate {
    /// Bytes SACKed by this ACK that were not SACKed before: RFC 6675 §2 counts an ACK as a
    /// duplicate only when it SACKs new data.
    pub newly_sacked: usize,
    /// The first block when it was a D-SACK (RFC 2883 §4): the peer received this twice. For
    /// the endpoint's spurious-retransmission accounting; it does not enter the scoreboard.
    pub dsack: Option<SeqRange>,
    /// Blocks ignored as invalid: empty, entirely at or below SND.UNA (and not D-SACK), or
    /// reaching beyond SND.NXT (data we never sent: a broken or lying peer).
    pub invalid: u8,
}

/// The sender's scoreboard (RFC 6675 §3): which outstanding bytes the peer has SACKed.
///
/// Ranges are kept sorted, disjoint and merged where they touch, all within [SND.UNA, SND.NXT);
/// comparisons between them are therefore safe across the 2^32 wrap. Every call that takes
/// `snd_una` expects the value last given to [`record`](Self::record) or
/// [`on_cumulative_ack`](Self::on_cumulative_ack); `snd_nxt` is the highest sequence number sent
/// plus one (SND.MAX if the endpoint rewinds SND.NXT after a timeout).
#[derive(Clone, Debug)]
pub struct SackScoreboard {
    ranges: Vec<SeqRange>,
    smss: usize,
    /// RFC 6675 RescueRxt: the rescue retransmission of this recovery has been sent.
    rescue_rxt: Option<SeqNumber>,
    forgotten: u32,
}

/// RFC 6675 NextSeg's answer: what to send next during SACK-based recovery, at most one SMSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextSeg {
    /// Rule (1): the lowest lost, unSACKed bytes not yet retransmitted.
    Lost(SeqRange),
    /// Rule (2): new data from SND.NXT.
    New(SeqRange),
    /// Rule (3): unSACKed bytes below the highest SACK, not yet deemed lost, not retransmitted.
    Unsacked(SeqRange),
    /// Rule (4): the one rescue retransmission per recovery, ending at the highest outstanding
    /// unSACKed byte. Call [`SackScoreboard::on_rescue_sent`] once it is sent.
    Rescue(SeqRange),
}

impl NextSeg {
    pub fn range(&self) -> SeqRange {
        match *self {
            NextSeg::Lost(r) | NextSeg::New(r) | NextSeg::Unsacked(r) | NextSeg::Rescue(r) => r,
        }
    }
}

impl SackScoreboard {
    /// `smss` in bytes: IsLost's byte criterion and NextSeg's segment size.
    pub fn new(smss: usize) -> SackScoreboard {
        SackScoreboard {
            ranges: Vec::new(),
            smss: smss.max(1),
            rescue_rxt: None,
            forgotten: 0,
        }
    }

    /// The SACKed ranges, lowest first.
    pub fn ranges(&self) -> &[SeqRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes SACKed above SND.UNA.
    pub fn sacked_bytes(&self) -> usize {
        self.ranges.iter().map(SeqRange::len).sum()
    }

    /// Ranges dropped at [`MAX_SCOREBOARD_RANGES`] over the scoreboard's life.
    pub fn forgotten(&self) -> u32 {
        self.forgotten
    }

    /// Forget all SACK information, e.g. after a timeout if the endpoint suspects the receiver
    /// reneged (RFC 2018 §8; RFC 6675 §5.1 allows keeping it, as Linux does).
    pub fn clear(&mut self) {
        self.ranges = Vec::new();
        self.rescue_rxt = None;
    }

    /// Fold in the SACK blocks of an ACK, in the order they came in the option. `snd_una` is
    /// SND.UNA once this ACK's cumulative acknowledgment is applied: the ACK's own number, unless
    /// the ACK was overtaken by a later one, in which case a stale first block below SND.UNA is
    /// reported as a D-SACK (it adds nothing to the scoreboard either way). Prunes below
    /// `snd_una` first, as [`on_cumulative_ack`](Self::on_cumulative_ack) does.
    pub fn record(
        &mut self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        blocks: &[SeqRange],
    ) -> SackUpdate {
        self.on_cumulative_ack(snd_una);
        let before = self.sacked_bytes();
        let mut update = SackUpdate::default();

        let mut blocks = blocks;
        if let Some(first) = blocks.first() {
            // RFC 2883 §4: a first block below the cumulative ACK, or inside the second block,
            // reports a duplicate, not held data (Linux's tcp_check_dsack tests the same).
            let below_ack = first.start < snd_una;
            let inside_second = blocks.get(1).is_some_and(|second| {
                !first.is_empty() && second.start <= first.start && first.end <= second.end
            });
            if !first.is_empty() && (below_ack || inside_second) {
                update.dsack = Some(*first);
                blocks = &blocks[1..];
            }
        }

        for block in blocks {
            // Data at or below SND.UNA is acknowledged already; a block that also covers newer
            // bytes (an ACK overtaken by a later one) still tells about those.
            if block.is_empty() || block.end <= snd_una || block.end > snd_nxt {
                update.invalid = update.invalid.saturating_add(1);
                continue;
            }
            self.insert(SeqRange::new(block.start.max(snd_una), block.end));
        }

        update.newly_sacked = self.sacked_bytes().saturating_sub(before);
        update
    }

    /// Insert keeping the ranges sorted, disjoint and merged, within the bound.
    fn insert(&mut self, block: SeqRange) {
        let first = self.ranges.partition_point(|r| r.end < block.start);
        let mut last = first;
        let mut merged = block;
        while last < self.ranges.len() && self.ranges[last].start <= merged.end {
            merged = merged.hull(&self.ranges[last]);
            last += 1;
        }
        if first == last && self.ranges.len() >= MAX_SCOREBOARD_RANGES {
            // A new, separate range with no room: see MAX_SCOREBOARD_RANGES for why the
            // highest one goes.
            self.forgotten = self.forgotten.saturating_add(1);
            if first == self.ranges.len() {
                return;
            }
            self.ranges.pop();
        }
        self.ranges.drain(first..last);
        self.ranges.insert(first, merged);
    }

    /// SND.UNA advanced to `snd_una`: drop what it covers (RFC 6675 §5: a cumulative ACK
    /// supersedes SACK information below it).
    pub fn on_cumulative_ack(&mut self, snd_una: SeqNumber) {
        let covered = self.ranges.partition_point(|r| r.end <= snd_una);
        self.ranges.drain(..covered);
        if let Some(first) = self.ranges.first_mut() {
            first.start = first.start.max(snd_una);
        } else {
            // Give the allocation back: an idle connection holds no scoreboard memory.
            self.ranges = Vec::new();
        }
        if self.rescue_rxt.is_some_and(|rescue| snd_una > rescue) {
            // RFC 6675 NextSeg (4): once HighACK passes RescueRxt, another rescue is allowed;
            // forgetting the point says the same and cannot go stale across the wrap.
            self.rescue_rxt = None;
        }
    }

    /// True when every byte of `range` has been SACKed (an empty range is not).
    pub fn is_sacked(&self, range: SeqRange) -> bool {
        !range.is_empty() && self.ranges.iter().any(|r| r.contains_range(&range))
    }

    /// The end of the highest SACKed range (RFC 6675 HighSACK plus one), if any.
    pub fn high_sacked(&self) -> Option<SeqNumber> {
        self.ranges.last().map(|r| r.end)
    }

    /// RFC 6675 IsLost: DupThresh discontiguous SACKed ranges above `seq`, or more than
    /// (DupThresh − 1)·SMSS SACKed bytes above it. A SACKed byte is never lost.
    ///
    /// The scoreboard knows ranges, not segments, so "discontiguous SACKed sequences" counts
    /// ranges: three SACKed segments in a row count once by number, but (being three full
    /// segments) satisfy the byte rule.
    pub fn is_lost(&self, seq: SeqNumber) -> bool {
        if self.ranges.iter().any(|r| r.contains(seq)) {
            return false;
        }
        let mut count = 0;
        let mut bytes = 0;
        for r in self.ranges.iter().rev().take_while(|r| r.start > seq) {
            count += 1;
            bytes += r.len();
        }
        self.lost_by(count, bytes)
    }

    fn lost_by(&self, ranges_above: u32, bytes_above: usize) -> bool {
        ranges_above >= DUP_THRESH || bytes_above > (DUP_THRESH as usize - 1) * self.smss
    }

    /// IsLost is monotone (what is lost has at least as much SACKed above it as anything higher),
    /// so one point splits the unSACKed bytes: those below it are lost, none above. That point is
    /// the start of a range; `None` when nothing is lost.
    fn loss_boundary(&self) -> Option<SeqNumber> {
        let mut count = 0;
        let mut bytes = 0;
        for r in self.ranges.iter().rev() {
            count += 1;
            bytes += r.len();
            if self.lost_by(count, bytes) {
                return Some(r.start);
            }
        }
        None
    }

    /// The unSACKed ranges of [snd_una, snd_nxt), lowest first.
    fn holes(&self, snd_una: SeqNumber, snd_nxt: SeqNumber) -> impl Iterator<Item = SeqRange> + '_ {
        let starts = core::iter::once(snd_una).chain(self.ranges.iter().map(|r| r.end));
        let ends = self
            .ranges
            .iter()
            .map(|r| r.start)
            .chain(core::iter::once(snd_nxt));
        starts
            .zip(ends)
            .map(move |(start, end)| SeqRange::new(start.max(snd_una), end.min(snd_nxt)))
            .filter(|hole| !hole.is_empty())
    }

    /// RFC 6675 SetPipe: the sender's estimate of bytes in the network. Every unSACKed byte in
    /// [snd_una, snd_nxt) counts once if not lost (the original may still arrive) and once more if
    /// retransmitted (the copy is in flight). `retransmitted` lists the ranges retransmitted and
    /// not yet acknowledged, disjoint; it stands in for RFC 6675's HighRxt, and is exact where a
    /// single HighRxt is not (the rescue retransmission, retransmissions out of order).
    pub fn pipe(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        retransmitted: &[SeqRange],
    ) -> usize {
        let boundary = self.loss_boundary();
        self.holes(snd_una, snd_nxt)
            .map(|hole| {
                let lost = boundary.is_some_and(|b| hole.end <= b);
                let original = if lost { 0 } else { hole.len() };
                let copies: usize = retransmitted
                    .iter()
                    .filter_map(|r| r.intersect(&hole))
                    .map(|r| r.len())
                    .sum();
                original + copies
            })
            .sum()
    }

    /// RFC 6675 NextSeg: what to send when cwnd − pipe allows a segment during SACK-based
    /// recovery. `retransmitted` as for [`pipe`](Self::pipe) (rule (1.a)'s "greater than
    /// HighRxt" becomes "not retransmitted yet"); `new_data` is how many unsent bytes are
    /// available and allowed by the peer's receive window, for rule (2).
    pub fn next_seg(
        &self,
        snd_una: SeqNumber,
        snd_nxt: SeqNumber,
        retransmitted: &[SeqRange],
        new_data: usize,
    ) -> Option<NextSeg> {
        let boundary = self.loss_boundary();
        let below_high_sacked = |hole: &SeqRange| self.high_sacked().is_some_and(|h| hole.end <= h);

        // (1) The lowest lost byte below HighSACK that was not retransmitted.
        if let Some(b) = boundary {
            let lost = self
                .holes(snd_una, snd_nxt)
                .take_while(|hole| hole.end <= b)
                .find_map(|hole| self.unretransmitted(hole, retransmitted));
            if let Some(range) = lost {
                return Some(NextSeg::Lost(range));
            }
        }

        // (2) New data.
        if new_data > 0 {
            return Some(NextSeg::New(SeqRange::from_len(
                snd_nxt,
                new_data.min(self.smss),
            )));
        }

        // (3) As (1), without requiring the loss to be established.
        let unsacked = self
            .holes(snd_una, snd_nxt)
            .take_while(below_high_sacked)
            .find_map(|hole| self.unretransmitted(hole, retransmitted));
        if let Some(range) = unsacked {
            return Some(NextSeg::Unsacked(range));
        }

        // (4) One rescue retransmission per recovery, of the highest outstanding unSACKed data,
        // so a loss at the tail (nothing above it to SACK) does not have to wait for the RTO.
        if self.rescue_rxt.is_none() {
            if let Some(top) = self.holes(snd_una, snd_nxt).last() {
                let start = top.start.max(top.end - self.smss);
                return Some(NextSeg::Rescue(SeqRange::new(start, top.end)));
            }
        }
        None
    }

    /// The rescue retransmission was sent; `recover` is the recovery point (RFC 6675 §4
    /// RecoveryPoint), which RescueRxt takes (NextSeg rule (4)).
    pub fn on_rescue_sent(&mut self, recover: SeqNumber) {
        self.rescue_rxt = Some(recover);
    }

    /// The first bytes of `hole`, at most one SMSS, that have not been retransmitted.
    fn unretransmitted(&self, hole: SeqRange, retransmitted: &[SeqRange]) -> Option<SeqRange> {
        let mut start = hole.start;
        // Skip over retransmitted ranges covering the start; each step moves `start` forward,
        // and leaving the hole ends the search.
        while start < hole.end {
            match retransmitted.iter().find(|r| r.contains(start)) {
                Some(r) => start = r.end,
                None => break,
            }
        }
        if start >= hole.end {
            return None;
        }
        let mut end = hole.end.min(start + self.smss);
        for r in retransmitted {
            if r.start > start && r.start < end {
                end = r.start;
            }
        }
        Some(SeqRange::new(start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1_000;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    fn r(a: u32, b: u32) -> SeqRange {
        SeqRange::new(s(a), s(b))
    }

    /// Ranges offset by `base`, for the same scenario across the 2^32 wrap.
    fn rb(base: u32, a: u32, b: u32) -> SeqRange {
        r(base.wrapping_add(a), base.wrapping_add(b))
    }

    // ---- receive side ----

    #[test]
    fn first_block_holds_the_segment_just_received() {
        let mut g = SackGenerator::new(false);
        let held = [r(200, 300), r(500, 600)];
        let out = g.blocks(s(100), &held, Some(r(500, 600)), None);
        assert_eq!(out.as_slice(), &[r(500, 600), r(200, 300)]);
        assert!(!out.has_dsack());

        let held = [r(200, 300), r(500, 600), r(800, 900)];
        let out = g.blocks(s(100), &held, Some(r(800, 900)), None);
        assert_eq!(out.as_slice(), &[r(800, 900), r(500, 600), r(200, 300)]);
    }

    #[test]
    fn repeats_recent_blocks_as_they_grew() {
        let mut g = SackGenerator::new(false);
        g.blocks(s(100), &[r(200, 300)], Some(r(200, 300)), None);
        g.blocks(s(100), &[r(200, 300), r(500, 600)], Some(r(500, 600)), None);
        let held = [r(200, 300), r(500, 600), r(800, 900)];
        g.blocks(s(100), &held, Some(r(800, 900)), None);
        // [600, 700) joins [500, 600): the merged block leads, the recent ones follow in the order
        // last reported, the one now inside the first is not repeated.
        let held = [r(200, 300), r(500, 600), r(600, 700), r(800, 900)];
        let out = g.blocks(s(100), &held, Some(r(600, 700)), None);
        assert_eq!(out.as_slice(), &[r(500, 700), r(800, 900), r(200, 300)]);
    }

    #[test]
    fn most_recent_first_even_when_not_the_highest() {
        let mut g = SackGenerator::new(false);
        let held = [r(200, 300), r(500, 600), r(800, 900)];
        g.blocks(s(100), &held, Some(r(800, 900)), None);
        let held = [r(200, 300), r(350, 400), r(500, 600), r(800, 900)];
        let out = g.blocks(s(100), &held, Some(r(350, 400)), None);
        assert_eq!(out.as_slice()[0], r(350, 400));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn three_blocks_with_timestamps_four_without() {
        let held = [
            r(200, 300),
            r(400, 500),
            r(600, 700),
            r(800, 900),
            r(1_000, 1_100),
        ];
        let mut ts = SackGenerator::new(true);
        let out = ts.blocks(s(100), &held, Some(r(1_000, 1_100)), None);
        assert_eq!(out.as_slice(), &[r(1_000, 1_100), r(200, 300), r(400, 500)]);
        let mut plain = SackGenerator::new(false);
        let out = plain.blocks(s(100), &held, Some(r(1_000, 1_100)), None);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn a_segment_that_fills_the_hole_is_not_reported() {
        let mut g = SackGenerator::new(false);
        g.blocks(s(100), &[r(200, 300), r(500, 600)], Some(r(500, 600)), None);
        // [100, 200) arrives: rcv_nxt moves to 300, [200, 300) is delivered.
        let out = g.blocks(s(300), &[r(500, 600)], Some(r(100, 200)), None);
        assert_eq!(out.as_slice(), &[r(500, 600)]);
        // Nothing held: no SACK option, and nothing remembered.
        let out = g.blocks(s(600), &[], Some(r(300, 500)), None);
        assert!(out.is_empty());
        assert_eq!(g.recent_len, 0);
    }

    #[test]
    fn dsack_below_the_cumulative_ack() {
        let mut g = SackGenerator::new(true);
        let out = g.blocks(
            s(1_000),
            &[r(2_000, 2_500)],
            Some(r(400, 500)),
            Some(r(400, 500)),
        );
        assert!(out.has_dsack());
        assert_eq!(out.as_slice(), &[r(400, 500), r(2_000, 2_500)]);
        // The D-SACK is said once; the next ACK carries only held data.
        let out = g.blocks(s(1_000), &[r(2_000, 2_500)], None, None);
        assert_eq!(out.as_slice(), &[r(2_000, 2_500)]);
    }

    #[test]
    fn dsack_inside_held_data_is_followed_by_its_block() {
        let mut g = SackGenerator::new(false);
        g.blocks(s(1_000), &[r(3_000, 3_500)], Some(r(3_000, 3_500)), None);
        let held = [r(2_000, 2_500), r(3_000, 3_500)];
        let out = g.blocks(
            s(1_000),
            &held,
            Some(r(2_100, 2_200)),
            Some(r(2_100, 2_200)),
        );
        assert_eq!(
            out.as_slice(),
            &[r(2_100, 2_200), r(2_000, 2_500), r(3_000, 3_500)]
        );
    }

    #[test]
    fn blocks_across_the_wrap() {
        let base = u32::MAX - 150;
        let mut g = SackGenerator::new(false);
        let held = [rb(base, 100, 200), rb(base, 200, 260), rb(base, 400, 500)];
        let out = g.blocks(s(base), &held, Some(rb(base, 200, 260)), None);
        assert_eq!(out.as_slice(), &[rb(base, 100, 260), rb(base, 400, 500)]);
        assert_eq!(out.as_slice()[0].len(), 160);
    }

    #[test]
    fn unordered_and_overlapping_held_ranges_merge() {
        let mut g = SackGenerator::new(false);
        let held = [r(700, 800), r(400, 550), r(500, 600), r(600, 700)];
        let out = g.blocks(s(100), &held, Some(r(700, 800)), None);
        assert_eq!(out.as_slice(), &[r(400, 800)]);
    }

    // ---- send side ----

    /// Ten 1000-byte segments outstanding from 0; segments 2, 3, 5, 6, 7 SACKed.
    fn worked_example(base: u32) -> SackScoreboard {
        let mut sb = SackScoreboard::new(MSS);
        let up = sb.record(
            s(base),
            s(base.wrapping_add(10_000)),
            &[rb(base, 5_000, 8_000), rb(base, 2_000, 4_000)],
        );
        assert_eq!(up.newly_sacked, 5_000);
        sb
    }

    #[test]
    fn scoreboard_holes_and_loss() {
        let sb = worked_example(0);
        assert_eq!(sb.ranges(), &[r(2_000, 4_000), r(5_000, 8_000)]);
        assert_eq!(sb.high_sacked(), Some(s(8_000)));
        assert!(sb.is_sacked(r(2_500, 3_500)));
        assert!(!sb.is_sacked(r(3_500, 4_500)));
        // 3000 bytes (> 2 SMSS) SACKed above 4000..5000 and above 0..2000: lost.
        assert!(sb.is_lost(s(0)));
        assert!(sb.is_lost(s(4_999)));
        assert!(!sb.is_lost(s(2_000)), "SACKed data is not lost");
        assert!(!sb.is_lost(s(8_000)), "nothing SACKed above the tail");
    }

    #[test]
    fn is_lost_by_count_of_discontiguous_ranges() {
        let mut sb = SackScoreboard::new(MSS);
        sb.record(
            s(0),
            s(10_000),
            &[r(1_000, 1_100), r(1_200, 1_300), r(1_400, 1_500)],
        );
        assert!(sb.is_lost(s(500)), "three ranges above");
        assert!(!sb.is_lost(s(1_150)), "two ranges, 200 bytes above");
        // Exactly 2 SMSS above is not "more than (DupThresh − 1)·SMSS".
        let mut sb = SackScoreboard::new(MSS);
        sb.record(s(0), s(10_000), &[r(1_000, 3_000)]);
        assert!(!sb.is_lost(s(0)));
        sb.record(s(0), s(10_000), &[r(3_000, 3_001)]);
        assert!(sb.is_lost(s(0)));
    }

    #[test]
    fn pipe_on_the_worked_example() {
        let sb = worked_example(0);
        // Holes: [0, 2000) lost, [4000, 5000) lost, [8000, 10000) not lost.
        assert_eq!(sb.pipe(s(0), s(10_000), &[]), 2_000);
        // One retransmission in flight adds its copy.
        assert_eq!(sb.pipe(s(0), s(10_000), &[r(0, 1_000)]), 3_000);
        // A retransmission of a not-lost byte counts twice: original and copy.
        assert_eq!(
            sb.pipe(s(0), s(10_000), &[r(0, 2_000), r(9_000, 10_000)]),
            5_000
        );
        // Retransmitted bytes that were SACKed since count for nothing.
        assert_eq!(sb.pipe(s(0), s(10_000), &[r(2_000, 4_000)]), 2_000);
        // New data sent during recovery is in flight.
        assert_eq!(sb.pipe(s(0), s(12_000), &[]), 4_000);
    }

    #[test]
    fn pipe_without_sack_information_is_flight_size() {
        let sb = SackScoreboard::new(MSS);
        assert_eq!(sb.pipe(s(100), s(5_100), &[]), 5_000);
        assert_eq!(sb.pipe(s(100), s(5_100), &[r(100, 1_100)]), 6_000);
    }

    #[test]
    fn next_seg_walks_the_rules() {
        let mut sb = worked_example(0);
        let (una, nxt) = (s(0), s(10_000));
        assert_eq!(
            sb.next_seg(una, nxt, &[], 5_000),
            Some(NextSeg::Lost(r(0, 1_000)))
        );
        let rtx = [r(0, 1_000)];
        assert_eq!(
            sb.next_seg(una, nxt, &rtx, 5_000),
            Some(NextSeg::Lost(r(1_000, 2_000)))
        );
        let rtx = [r(0, 2_000)];
        assert_eq!(
            sb.next_seg(una, nxt, &rtx, 5_000),
            Some(NextSeg::Lost(r(4_000, 5_000)))
        );
        // All lost bytes retransmitted: rule (2) sends new data, at most one SMSS.
        let rtx = [r(0, 2_000), r(4_000, 5_000)];
        assert_eq!(
            sb.next_seg(una, nxt, &rtx, 5_000),
            Some(NextSeg::New(r(10_000, 11_000)))
        );
        assert_eq!(
            sb.next_seg(una, nxt, &rtx, 300),
            Some(NextSeg::New(r(10_000, 10_300)))
        );
        // No new data, nothing unSACKed below HighSACK left: rule (4), the tail's last segment.
        assert_eq!(
            sb.next_seg(una, nxt, &rtx, 0),
            Some(NextSeg::Rescue(r(9_000, 10_000)))
        );
        sb.on_rescue_sent(nxt);
        assert_eq!(
            sb.next_seg(una, nxt, &rtx, 0),
            None,
            "one rescue per recovery"
        );
    }

    #[test]
    fn next_seg_rule_three_retransmits_holes_not_yet_lost() {
        let mut sb = SackScoreboard::new(MSS);
        sb.record(s(0), s(10_000), &[r(5_000, 6_000)]);
        assert!(!sb.is_lost(s(0)));
        assert_eq!(
            sb.next_seg(s(0), s(10_000), &[], 1_000),
            Some(NextSeg::New(r(10_000, 11_000))),
            "rule (2) comes before rule (3)"
        );
        assert_eq!(
            sb.next_seg(s(0), s(10_000), &[], 0),
            Some(NextSeg::Unsacked(r(0, 1_000)))
        );
        // A segment never extends into retransmitted or SACKed bytes.
        assert_eq!(
            sb.next_seg(s(0), s(10_000), &[r(0, 4_500)], 0),
            Some(NextSeg::Unsacked(r(4_500, 5_000)))
        );
        assert_eq!(
            sb.next_seg(s(0), s(10_000), &[r(0, 100), r(600, 700)], 0),
            Some(NextSeg::Unsacked(r(100, 600)))
        );
    }

    #[test]
    fn rescue_allowed_again_once_the_ack_passes_rescue_rxt() {
        let mut sb = SackScoreboard::new(MSS);
        sb.record(s(0), s(5_000), &[r(1_000, 2_000)]);
        let rtx = [r(0, 1_000), r(2_000, 4_000)];
        assert_eq!(
            sb.next_seg(s(0), s(5_000), &rtx, 0),
            Some(NextSeg::Rescue(r(4_000, 5_000)))
        );
        sb.on_rescue_sent(s(5_000));
        sb.on_cumulative_ack(s(5_000));
        assert_eq!(
            sb.next_seg(s(5_000), s(5_000), &[], 0),
            None,
            "nothing outstanding"
        );
        sb.on_cumulative_ack(s(5_001));
        assert_eq!(sb.rescue_rxt, None);
    }

    #[test]
    fn scoreboard_across_the_wrap() {
        let base = u32::MAX - 2_999;
        let sb = worked_example(base);
        assert_eq!(
            sb.ranges(),
            &[rb(base, 2_000, 4_000), rb(base, 5_000, 8_000)]
        );
        assert_eq!(sb.ranges()[0].start, s(u32::MAX - 999));
        assert_eq!(sb.ranges()[1].start, s(2_000));
        assert!(sb.is_lost(s(base)));
        assert!(sb.is_lost(s(1_500)));
        assert!(!sb.is_lost(s(5_500)));
        assert_eq!(sb.pipe(s(base), s(base.wrapping_add(10_000)), &[]), 2_000);
        assert_eq!(
            sb.next_seg(
                s(base),
                s(base.wrapping_add(10_000)),
                &[rb(base, 0, 2_000)],
                0
            ),
            Some(NextSeg::Lost(rb(base, 4_000, 5_000)))
        );
    }

    #[test]
    fn cumulative_ack_prunes_and_trims_and_frees() {
        let mut sb = worked_example(0);
        sb.on_cumulative_ack(s(3_000));
        assert_eq!(sb.ranges(), &[r(3_000, 4_000), r(5_000, 8_000)]);
        assert_eq!(sb.sacked_bytes(), 4_000);
        sb.on_cumulative_ack(s(8_000));
        assert!(sb.is_empty());
        assert_eq!(sb.ranges.capacity(), 0);
    }

    #[test]
    fn record_ignores_blocks_outside_the_window() {
        let mut sb = SackScoreboard::new(MSS);
        let up = sb.record(
            s(1_000),
            s(5_000),
            &[
                r(1_500, 2_000),
                r(4_000, 6_000),
                r(3_000, 3_000),
                r(200, 1_000),
            ],
        );
        assert_eq!(up.invalid, 3);
        assert_eq!(up.dsack, None);
        assert_eq!(sb.ranges(), &[r(1_500, 2_000)]);
        // A block from an overtaken ACK that straddles SND.UNA keeps its newer part.
        let up = sb.record(s(1_200), s(5_000), &[r(2_500, 3_000), r(900, 1_400)]);
        assert_eq!(up.invalid, 0);
        assert_eq!(
            sb.ranges(),
            &[r(1_200, 1_400), r(1_500, 2_000), r(2_500, 3_000)]
        );
    }

    #[test]
    fn record_recognises_dsack() {
        let mut sb = SackScoreboard::new(MSS);
        let up = sb.record(s(3_000), s(9_000), &[r(1_000, 1_500), r(4_000, 5_000)]);
        assert_eq!(up.dsack, Some(r(1_000, 1_500)));
        assert_eq!(up.newly_sacked, 1_000);
        assert_eq!(sb.ranges(), &[r(4_000, 5_000)]);

        let up = sb.record(s(3_000), s(9_000), &[r(4_200, 4_300), r(4_000, 5_000)]);
        assert_eq!(up.dsack, Some(r(4_200, 4_300)), "inside the second block");
        assert_eq!(up.newly_sacked, 0);

        let up = sb.record(s(3_000), s(9_000), &[r(6_000, 7_000), r(4_000, 5_000)]);
        assert_eq!(up.dsack, None);
        assert_eq!(up.newly_sacked, 1_000);
    }

    #[test]
    fn adjacent_blocks_merge() {
        let mut sb = SackScoreboard::new(MSS);
        sb.record(s(0), s(10_000), &[r(1_000, 2_000)]);
        sb.record(s(0), s(10_000), &[r(3_000, 4_000)]);
        sb.record(s(0), s(10_000), &[r(2_000, 3_000)]);
        assert_eq!(sb.ranges(), &[r(1_000, 4_000)]);
        sb.record(s(0), s(10_000), &[r(500, 1_500), r(3_500, 5_000)]);
        assert_eq!(sb.ranges(), &[r(500, 5_000)]);
    }

    #[test]
    fn bounded_at_32_ranges_keeping_the_lowest() {
        let mut sb = SackScoreboard::new(MSS);
        let nxt = s(100_000);
        for i in 0..40u32 {
            // Ranges of 10 bytes every 100, recorded highest first to exercise both paths.
            let start = (40 - i) * 100;
            sb.record(s(0), nxt, &[r(start, start + 10)]);
        }
        assert_eq!(sb.ranges().len(), MAX_SCOREBOARD_RANGES);
        assert_eq!(sb.forgotten(), 8);
        assert_eq!(sb.ranges()[0], r(100, 110));
        assert_eq!(sb.high_sacked(), Some(s(3_210)));
        // A new range above everything is the one forgotten.
        sb.record(s(0), nxt, &[r(50_000, 50_010)]);
        assert_eq!(sb.high_sacked(), Some(s(3_210)));
        assert_eq!(sb.forgotten(), 9);
        // Merging needs no room.
        sb.record(s(0), nxt, &[r(110, 200)]);
        assert_eq!(sb.ranges().len(), MAX_SCOREBOARD_RANGES - 1);
        assert_eq!(sb.ranges()[0], r(100, 210));
        assert!(sb.ranges.capacity() <= MAX_SCOREBOARD_RANGES);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut sb = worked_example(0);
        sb.on_rescue_sent(s(10_000));
        sb.clear();
        assert!(sb.is_empty());
        assert_eq!(sb.pipe(s(0), s(10_000), &[]), 10_000);
        assert_eq!(
            sb.next_seg(s(0), s(10_000), &[], 0),
            Some(NextSeg::Rescue(r(9_000, 10_000)))
        );
    }
}
