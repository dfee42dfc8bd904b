//! The flow table's index: from a hash to the slab positions of the entries
//! that may hold it, in one cache line per probe.
//!
//! Open addressing over a power-of-two array of buckets, each one cache line
//! of eight (tag, position) slots. A hash starts at the bucket its low bits
//! name and moves on bucket by bucket; the tag is 16 other bits of the hash
//! (never 0, which marks a vacant slot), so a key comparison happens on
//! another flow's entry in about one lookup in 16,000.
//!
//! # Deletion without tombstones
//!
//! Each bucket counts the entries that had to pass it because it was full
//! when they went in (F14's "outbound overflow" count). A lookup that finds
//! nothing in a bucket whose count is zero knows the key is absent; removing
//! an entry decrements the counts along the path it took. The counts stay
//! exact however long the table churns: no tombstones pile up, no rehash is
//! ever needed, and no operation allocates after construction.
//!
//! # Why one line per bucket
//!
//! At a million flows none of this stays in cache. Because a bucket is one
//! line, the worker can prefetch it from the hash alone, and, once it has
//! arrived, prefetch the entry its first matching tag points at; a burst's
//! frames then wait for memory together instead of one after another.

/// Slots per bucket: eight 16-bit tags, eight 32-bit positions and the
/// overflow count fill 52 bytes of the line.
pub(crate) const SLOTS: usize = 8;

/// A vacant slot's tag; `tag` never returns it.
const VACANT: u16 = 0;

/// One in each tag's lowest bit, and in its highest.
const TAG_LOW: u128 = u128::MAX / 0xffff;
const TAG_HIGH: u128 = TAG_LOW << 15;

#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket {
    /// Slot `i`'s tag in bits `16 i..16 i + 16`. One integer, so that a
    /// lookup compares all eight in a dozen word operations: the compiler
    /// will not turn a loop over an array of tags into a vector compare and
    /// a mask move, and the intrinsics that would are `unsafe`.
    tags: u128,
    positions: [u32; SLOTS],
    /// Entries stored beyond this bucket whose probe passed it: while it is
    /// not zero, a lookup that misses here has to go on.
    overflow: u32,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: 0,
        positions: [0; SLOTS],
        overflow: 0,
    };

    /// The top bit of every slot whose tag is `tag` (bit `16 i + 15` for slot
    /// `i`), and no other bit.
    #[inline(always)]
    fn matching(&self, tag: u16) -> u128 {
        let x = self.tags ^ (TAG_LOW * u128::from(tag));
        // A lane's top bit in `nonzero` is set exactly when some bit of the
        // lane is: the low 15 bits carry into it, and no lane carries into
        // the next (0x7fff + 0x7fff < 0x10000).
        let nonzero = ((x & !TAG_HIGH) + !TAG_HIGH) | x;
        !nonzero & TAG_HIGH
    }

    #[inline(always)]
    fn set_tag(&mut self, lane: usize, tag: u16) {
        let shift = 16 * lane;
        self.tags = (self.tags & !(0xffff << shift)) | u128::from(tag) << shift;
    }

    #[inline(always)]
    fn tag(&self, lane: usize) -> u16 {
        (self.tags >> (16 * lane)) as u16
    }
}

/// The slot of the lowest bit of a `Bucket::matching` mask.
#[inline(always)]
fn first_lane(matches: u128) -> usize {
    matches.trailing_zeros() as usize / 16
}

/// Where an entry's position is stored in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Fits: there are fewer buckets than positions.
    bucket: u32,
    lane: u32,
    /// The slab position stored there.
    pub(crate) position: u32,
}

impl Slot {
    fn new(bucket: usize, lane: usize, position: u32) -> Slot {
        Slot {
            bucket: bucket as u32,
            lane: lane as u32,
            position,
        }
    }
}

pub(crate) struct FlowIndex {
    buckets: Vec<Bucket>,
    mask: usize,
}

impl FlowIndex {
    /// An index for up to `entries` entries, at most 3/5 full then: at that
    /// load about one entry in twenty lives outside its home bucket, and
    /// probes rarely go further than the line next door.
    pub(crate) fn new(entries: usize) -> FlowIndex {
        let buckets = entries
            .saturating_mul(5)
            .div_ceil(3 * SLOTS)
            .max(1)
            .next_power_of_two();
        FlowIndex {
            // Filled, not just reserved: the pages are touched now rather
            // than on the packet path as flows arrive.
            buckets: vec![Bucket::EMPTY; buckets],
            mask: buckets - 1,
        }
    }

    /// Slots in all: the most entries the index could hold.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    /// Bytes of index memory.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        // Truncation is the point: the mask keeps the low bits.
        hash as usize & self.mask
    }

    /// Bits 32..48: independent of the home bucket for any index below
    /// 2^32 buckets, and of the worker (see `FlowTable::shard_of`).
    #[inline(always)]
    fn tag(hash: u64) -> u16 {
        ((hash >> 32) as u16).max(1)
    }

    #[inline(always)]
    fn next(&self, bucket: usize) -> usize {
        (bucket + 1) & self.mask
    }

    /// Starts loading the line a lookup of `hash` reads first.
    #[inline(always)]
    pub(crate) fn prefetch(&self, hash: u64) {
        hw::prefetch(self.buckets.as_ptr().wrapping_add(self.home(hash)));
    }

    /// The first slot of `hash`'s home bucket with a matching tag, if any:
    /// the one a lookup will almost certainly find. Reads one line.
    #[inline(always)]
    pub(crate) fn first_candidate(&self, hash: u64) -> Option<Slot> {
        let home = self.home(hash);
        let bucket = &self.buckets[home];
        let matches = bucket.matching(Self::tag(hash));
        (matches != 0).then(|| {
            let lane = first_lane(matches);
            Slot::new(home, lane, bucket.positions[lane])
        })
    }

    /// Whether `slot` holds its position under `hash`'s tag: true of any
    /// slot `find` or `first_candidate` returned for `hash` until that
    /// entry is removed, and the index holds only live positions.
    #[inline(always)]
    pub(crate) fn holds(&self, hash: u64, slot: Slot) -> bool {
        self.buckets.get(slot.bucket as usize).is_some_and(|b| {
            let lane = slot.lane as usize;
            lane < SLOTS && b.tag(lane) == Self::tag(hash) && b.positions[lane] == slot.position
        })
    }

    /// The slot of the first position with `hash`'s tag that `is_it`
    /// accepts.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, mut is_it: impl FnMut(u32) -> bool) -> Option<Slot> {
        let tag = Self::tag(hash);
        let mut bucket = self.home(hash);
        // Bounded by the bucket count, though a zero count ends the probe
        // long before: the index is never more than 3/5 full.
        for _ in 0..self.buckets.len() {
            let b = &self.buckets[bucket];
            let mut matches = b.matching(tag);
            while matches != 0 {
                let lane = first_lane(matches);
                matches &= matches - 1;
                if is_it(b.positions[lane]) {
                    return Some(Slot::new(bucket, lane, b.positions[lane]));
                }
            }
            if b.overflow == 0 {
                return None;
            }
            bucket = self.next(bucket);
        }
        None
    }

    /// Stores `position` under `hash`, in the first bucket of its probe with a
    /// vacant slot. The caller has checked that it is not there already.
    /// `None` only if every slot is taken, which a caller that keeps within
    /// the capacity it asked for never sees.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, position: u32) -> Option<Slot> {
        let home = self.home(hash);
        let mut bucket = home;
        let mut passed = 0;
        let lane = loop {
            let vacant = self.buckets[bucket].matching(VACANT);
            if vacant != 0 {
                break first_lane(vacant);
            }
            passed += 1;
            if passed == self.buckets.len() {
                return None;
            }
            bucket = self.next(bucket);
        };
        let mut b = home;
        for _ in 0..passed {
            // At most one count per entry, and entries fit in a u32.
            let count = &mut self.buckets[b].overflow;
            *count = count.wrapping_add(1);
            b = self.next(b);
        }
        let target = &mut self.buckets[bucket];
        target.set_tag(lane, Self::tag(hash));
        target.positions[lane] = position;
        Some(Slot::new(bucket, lane, position))
    }

    /// Vacates `slot`, which `find` or `insert` returned for `hash` and
    /// nothing has moved since (entries never move).
    #[inline]
    pub(crate) fn remove(&mut self, hash: u64, slot: Slot) {
        let bucket = slot.bucket as usize;
        self.buckets[bucket].set_tag(slot.lane as usize, VACANT);
        let mut b = self.home(hash);
        while b != bucket {
            let count = &mut self.buckets[b].overflow;
            *count = count.wrapping_sub(1);
            b = self.next(b);
        }
    }

    /// Every stored position, in bucket order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets.iter().flat_map(|b| {
            let mut occupied = !b.matching(VACANT) & TAG_HIGH;
            std::iter::from_fn(move || {
                if occupied == 0 {
                    return None;
                }
                let lane = first_lane(occupied);
                occupied &= occupied - 1;
                Some(b.positions[lane])
            })
        })
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.fill(Bucket::EMPTY);
    }

    /// Every count equals the entries whose probe passed its bucket.
    #[cfg(test)]
    fn counts_are_exact(&self, hash_of: impl Fn(u32) -> u64) -> bool {
        let mut expected = vec![0u32; self.buckets.len()];
        for (bucket, b) in self.buckets.iter().enumerate() {
            for lane in 0..SLOTS {
                if b.tag(lane) == VACANT {
                    continue;
                }
                let mut at = self.home(hash_of(b.positions[lane]));
                while at != bucket {
                    expected[at] += 1;
                    at = self.next(at);
                }
            }
        }
        self.buckets
            .iter()
            .zip(&expected)
            .all(|(b, &n)| b.overflow == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng;

    /// Hashes with the same low bits (one home bucket) and distinct tags.
    fn same_home(home: u64, n: u64) -> Vec<u64> {
        (0..n).map(|i| home | (i + 1) << 40).collect()
    }

    fn find(index: &FlowIndex, hash: u64, position: u32) -> Option<Slot> {
        index.find(hash, |p| p == position)
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    /// The word-parallel compare against a lane-by-lane one, on the values
    /// where carries and borrows would show.
    #[test]
    fn matching_marks_exactly_the_equal_tags() {
        let edges = [0, 1, 2, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff];
        let mut rng = TestRng::new(7);
        for round in 0..20_000 {
            let mut bucket = Bucket::EMPTY;
            for lane in 0..SLOTS {
                let tag = if round % 2 == 0 {
                    edges[rng.index(edges.len())]
                } else {
                    rng.u32() as u16
                };
                bucket.set_tag(lane, tag);
            }
            for probe in edges.into_iter().chain([bucket.tag(rng.index(SLOTS))]) {
                let expected = (0..SLOTS)
                    .filter(|&lane| bucket.tag(lane) == probe)
                    .fold(0u128, |m, lane| m | 1 << (16 * lane + 15));
                assert_eq!(
                    bucket.matching(probe),
                    expected,
                    "{:032x} {probe:#x}",
                    bucket.tags
                );
            }
        }
    }

    #[test]
    fn sized_for_at_most_three_fifths_load() {
        for entries in [0, 1, 7, 100, 1_000, 65_536, 1_000_000] {
            let index = FlowIndex::new(entries);
            assert!(index.slots() * 3 >= entries * 5, "{entries}");
            assert!(index.buckets.len().is_power_of_two());
        }
        assert_eq!(FlowIndex::new(1_000_000).bytes(), 16 << 20);
    }

    #[test]
    fn probes_go_on_past_full_buckets_and_stop_at_a_zero_count() {
        let mut index = FlowIndex::new(100);
        let buckets = index.buckets.len() as u64;
        assert!(buckets >= 4);
        // Three buckets' worth from one home: it spills into the next two.
        let hashes = same_home(1, 3 * SLOTS as u64);
        for (p, &h) in hashes.iter().enumerate() {
            let slot = index.insert(h, p as u32).unwrap();
            assert_eq!(slot.bucket as usize, 1 + p / SLOTS);
        }
        assert_eq!(index.buckets[1].overflow, 2 * SLOTS as u32);
        assert_eq!(index.buckets[2].overflow, SLOTS as u32);
        assert_eq!(index.buckets[3].overflow, 0);
        for (p, &h) in hashes.iter().enumerate() {
            assert_eq!(find(&index, h, p as u32).unwrap().position, p as u32);
        }
        // A hash homed in a spill-over bucket goes past it too.
        let other = 2 | 0xabcd << 32;
        let slot = index.insert(other, 99).unwrap();
        assert_eq!(slot.bucket, 4);
        assert_eq!(index.buckets[2].overflow, SLOTS as u32 + 1);
        assert_eq!(index.buckets[3].overflow, 1);
        assert_eq!(find(&index, other, 99), Some(slot));
        // Absent: the probe reads buckets 1 to 4, and stops at 4's zero count.
        let mut compared = 0;
        let absent = same_home(1, 4 * SLOTS as u64)[3 * SLOTS + 1];
        assert!(index
            .find(absent, |_| {
                compared += 1;
                false
            })
            .is_none());
        assert_eq!(compared, 0, "no tag matched, so no key was compared");
        assert!(index.counts_are_exact(|p| if p == 99 { other } else { hashes[p as usize] }));
    }

    #[test]
    fn the_probe_wraps_around_the_last_bucket() {
        let mut index = FlowIndex::new(100);
        let last = index.mask as u64;
        let hashes = same_home(last, SLOTS as u64 + 2);
        for (p, &h) in hashes.iter().enumerate() {
            index.insert(h, p as u32).unwrap();
        }
        assert_eq!(
            find(&index, hashes[SLOTS + 1], SLOTS as u32 + 1)
                .unwrap()
                .bucket,
            0
        );
        for (p, &h) in hashes.iter().enumerate() {
            let slot = find(&index, h, p as u32).unwrap();
            index.remove(h, slot);
        }
        assert!(index.buckets.iter().all(|b| b.overflow == 0));
        assert_eq!(index.positions().count(), 0);
    }

    #[test]
    fn removing_an_entry_keeps_the_ones_that_passed_it_findable() {
        let mut index = FlowIndex::new(100);
        let hashes = same_home(5, 2 * SLOTS as u64 + 3);
        for (p, &h) in hashes.iter().enumerate() {
            index.insert(h, p as u32).unwrap();
        }
        // Empty the home bucket: the spilled entries are still found, and the
        // vacated slots are reused before the probe goes further.
        for (p, &h) in hashes.iter().enumerate().take(SLOTS) {
            let slot = find(&index, h, p as u32).unwrap();
            index.remove(h, slot);
        }
        for (p, &h) in hashes.iter().enumerate().skip(SLOTS) {
            assert!(find(&index, h, p as u32).is_some(), "{p}");
        }
        for (p, &h) in hashes.iter().enumerate().take(SLOTS) {
            assert!(find(&index, h, p as u32).is_none());
        }
        let again = index.insert(hashes[0], 0).unwrap();
        assert_eq!(again.bucket, 5);
        assert!(index.counts_are_exact(|p| hashes[p as usize]));
        // Remove the spilled entries: the counts go back to what is left.
        for (p, &h) in hashes.iter().enumerate().skip(SLOTS) {
            let slot = find(&index, h, p as u32).unwrap();
            index.remove(h, slot);
        }
        assert!(index.buckets.iter().all(|b| b.overflow == 0));
        assert_eq!(index.positions().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_full_index_refuses_and_changes_nothing() {
        let mut index = FlowIndex::new(1);
        assert_eq!(index.buckets.len(), 1);
        for p in 0..SLOTS as u32 {
            index.insert(u64::from(p) << 33, p).unwrap();
        }
        assert!(index.insert(7 << 33, 7).is_none());
        assert_eq!(index.buckets[0].overflow, 0);
        assert_eq!(index.positions().count(), SLOTS);
    }

    /// A million replacements at the highest load the sizing allows (3/5):
    /// the counts stay exact, every live entry is found, no removed one is,
    /// and nothing grows.
    #[test]
    fn a_million_insert_remove_cycles_at_full_load() {
        const LIVE: usize = 8_192 * SLOTS * 3 / 5;
        let mut index = FlowIndex::new(LIVE);
        let buckets = index.buckets.len();
        assert_eq!(buckets, 8_192, "sized to the brim");
        let mut rng = TestRng::new(0x5eed);
        // Slab position p holds hash hashes[p]; a replacement reuses p.
        let mut hashes: Vec<u64> = (0..LIVE).map(|_| rng.next_u64()).collect();
        let mut slots: Vec<Slot> = hashes
            .iter()
            .enumerate()
            .map(|(p, &h)| index.insert(h, p as u32).unwrap())
            .collect();
        let mut longest = 0;
        for round in 0..1_000_000 {
            let p = rng.below(LIVE as u64) as usize;
            assert_eq!(find(&index, hashes[p], p as u32), Some(slots[p]));
            index.remove(hashes[p], slots[p]);
            let old = hashes[p];
            assert!(find(&index, old, p as u32).is_none(), "round {round}");
            hashes[p] = rng.next_u64();
            slots[p] = index.insert(hashes[p], p as u32).unwrap();
            let distance =
                (slots[p].bucket as usize).wrapping_sub(index.home(hashes[p])) & index.mask;
            longest = longest.max(distance);
        }
        assert_eq!(index.buckets.len(), buckets);
        assert!(longest < 16, "an insert probed {longest} buckets");
        assert!(index.counts_are_exact(|p| hashes[p as usize]));
        for (p, &h) in hashes.iter().enumerate() {
            assert_eq!(find(&index, h, p as u32), Some(slots[p]));
        }
        let mut stored: Vec<u32> = index.positions().collect();
        stored.sort_unstable();
        assert!(stored.iter().copied().eq(0..LIVE as u32));
    }
}
