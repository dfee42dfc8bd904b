//! The sequence space one side has sent, to check that the proxy relays and acknowledges only
//! bytes that side really sent.

use tollgate_core::tcp::seq::SeqNumber;

/// Ranges of sequence numbers, kept as offsets from an anchor so that they order and merge
/// without modular comparisons; a range that wraps past the anchor is split in two.
#[derive(Debug, Clone)]
pub struct SeqCoverage {
    anchor: SeqNumber,
    /// Sorted, disjoint and not touching: `[start, end)` offsets from `anchor`.
    ranges: Vec<(u64, u64)>,
}

impl SeqCoverage {
    pub fn new(anchor: SeqNumber) -> SeqCoverage {
        SeqCoverage {
            anchor,
            ranges: Vec::new(),
        }
    }

    /// `(start, end)` offsets of `len` numbers from `start`, in at most two pieces.
    fn pieces(&self, start: SeqNumber, len: usize) -> [(u64, u64); 2] {
        let from = u64::from(start.0.wrapping_sub(self.anchor.0));
        let len = (len as u64).min(1 << 32);
        let to = from + len;
        if to <= 1 << 32 {
            [(from, to), (0, 0)]
        } else {
            [(from, 1 << 32), (0, to - (1 << 32))]
        }
    }

    pub fn insert(&mut self, start: SeqNumber, len: usize) {
        for (from, to) in self.pieces(start, len) {
            if from < to {
                self.insert_offsets(from, to);
            }
        }
    }

    fn insert_offsets(&mut self, mut from: u64, mut to: u64) {
        let first = self.ranges.partition_point(|&(_, end)| end < from);
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= to {
            from = from.min(self.ranges[last].0);
            to = to.max(self.ranges[last].1);
            last += 1;
        }
        self.ranges.splice(first..last, [(from, to)]);
    }

    /// True when all of `len` numbers from `start` were inserted.
    pub fn covers(&self, start: SeqNumber, len: usize) -> bool {
        self.pieces(start, len).into_iter().all(|(from, to)| {
            from >= to || {
                let at = self.ranges.partition_point(|&(_, end)| end <= from);
                self.ranges
                    .get(at)
                    .is_some_and(|&(start, end)| start <= from && to <= end)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_wraps() {
        let mut c = SeqCoverage::new(SeqNumber(100));
        c.insert(SeqNumber(110), 10);
        c.insert(SeqNumber(130), 10);
        assert!(c.covers(SeqNumber(110), 10));
        assert!(!c.covers(SeqNumber(110), 21));
        c.insert(SeqNumber(120), 10);
        assert!(c.covers(SeqNumber(110), 30));
        assert!(c.covers(SeqNumber(125), 0));
        assert!(!c.covers(SeqNumber(105), 10));
        // Across the anchor: the numbers just below it are the far end of the offsets.
        c.insert(SeqNumber(90), 20);
        assert!(c.covers(SeqNumber(95), 10));
        assert!(c.covers(SeqNumber(100), 5));
        assert!(c.covers(SeqNumber(95), 45));
        assert!(!c.covers(SeqNumber(85), 10));
    }
}
