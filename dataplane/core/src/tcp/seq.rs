//! Sequence numbers and ranges of them, with arithmetic modulo 2^32.
//!
//! TCP numbers bytes modulo 2^32 (RFC 9293 §3.4), so "before" and "after" only mean something
//! between numbers less than 2^31 apart: the comparison is the sign of the wrapping difference
//! (RFC 1982 serial-number arithmetic, the `before()`/`after()` of Linux's tcp.h). TCP keeps
//! every number it compares within one window of another (at most 2^30 with window scaling,
//! RFC 7323 §2.3), which is what makes this sound in practice.
//!
//! Time, where the engine needs it, is a plain `u64` of milliseconds from a monotonic clock that
//! the driver passes in; there is no clock type of its own.

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};

/// A TCP sequence (or acknowledgment) number.
///
/// `PartialOrd` compares by the sign of the wrapping difference, so it is **not a total order**:
/// it is not transitive across more than 2^31 (a < b < c < a is possible), and two numbers exactly
/// 2^31 apart are unordered (`partial_cmp` returns `None`, so both `<` and `>` are false). That is
/// why there is no `Ord` and why [`SeqNumber::max`]/[`SeqNumber::min`] are inherent methods:
/// sorting or a `BTreeMap` keyed by raw sequence numbers would be wrong. Sort by the distance from
/// a base (`seq - snd_una`) instead.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The signed distance from `other` to `self` (`self - other`), valid within 2^31.
    pub fn distance(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Bytes from `earlier` up to `self`, or 0 when `self` is not after `earlier`: the length of
    /// `[earlier, self)` for callers that keep their invariants in a window (flight size is
    /// `snd_nxt.since(snd_una)`).
    pub fn since(self, earlier: SeqNumber) -> usize {
        usize::try_from(self.distance(earlier)).unwrap_or(0)
    }

    /// The later of the two (`self` when they are unordered, as `core::cmp::max` would).
    pub fn max(self, other: SeqNumber) -> SeqNumber {
        if other > self {
            other
        } else {
            self
        }
    }

    /// The earlier of the two (`self` when they are unordered).
    pub fn min(self, other: SeqNumber) -> SeqNumber {
        if other < self {
            other
        } else {
            self
        }
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.0)
    }
}

impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &SeqNumber) -> Option<Ordering> {
        match self.distance(*other) {
            // Exactly half the space apart: "before" and "after" are equally true, so neither is.
            i32::MIN => None,
            d => Some(d.cmp(&0)),
        }
    }
}

// Lengths are bytes of payload or window, far below 2^31; the debug assertion catches a caller
// that passes a negative difference converted to usize, which would silently move backwards.
impl Add<usize> for SeqNumber {
    type Output = SeqNumber;

    fn add(self, rhs: usize) -> SeqNumber {
        debug_assert!(
            rhs <= i32::MAX as usize,
            "sequence step {rhs} is not below 2^31"
        );
        SeqNumber(self.0.wrapping_add(rhs as u32))
    }
}

impl AddAssign<usize> for SeqNumber {
    fn add_assign(&mut self, rhs: usize) {
        *self = *self + rhs;
    }
}

impl Sub<usize> for SeqNumber {
    type Output = SeqNumber;

    fn sub(self, rhs: usize) -> SeqNumber {
        debug_assert!(
            rhs <= i32::MAX as usize,
            "sequence step {rhs} is not below 2^31"
        );
        SeqNumber(self.0.wrapping_sub(rhs as u32))
    }
}

impl SubAssign<usize> for SeqNumber {
    fn sub_assign(&mut self, rhs: usize) {
        *self = *self - rhs;
    }
}

impl Sub<SeqNumber> for SeqNumber {
    type Output = i32;

    fn sub(self, rhs: SeqNumber) -> i32 {
        self.distance(rhs)
    }
}

/// The half-open range of sequence numbers `[start, end)`: a segment's payload, a SACK block
/// (RFC 2018 §3 blocks are half-open the same way: "Right Edge" is the number after the last
/// byte), a hole.
///
/// A range whose `end` is not after `start` is empty. Ranges longer than 2^31 cannot be
/// represented; TCP never needs one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqRange {
    pub start: SeqNumber,
    pub end: SeqNumber,
}

impl SeqRange {
    pub fn new(start: SeqNumber, end: SeqNumber) -> SeqRange {
        SeqRange { start, end }
    }

    /// `len` bytes from `start`.
    pub fn from_len(start: SeqNumber, len: usize) -> SeqRange {
        SeqRange {
            start,
            end: start + len,
        }
    }

    /// Bytes in the range; 0 when `end` is not after `start`.
    pub fn len(&self) -> usize {
        self.end.since(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start || self.start.partial_cmp(&self.end).is_none()
    }

    pub fn contains(&self, seq: SeqNumber) -> bool {
        !self.is_empty() && self.start <= seq && seq < self.end
    }

    /// True when every byte of `other` is in `self` (an empty `other` is in any range).
    pub fn contains_range(&self, other: &SeqRange) -> bool {
        other.is_empty() || (self.start <= other.start && other.end <= self.end)
    }

    /// True when the two share at least one byte.
    pub fn overlaps(&self, other: &SeqRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }

    /// True when the two share a byte or one ends where the other starts: their union is one range.
    pub fn touches(&self, other: &SeqRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start <= other.end && other.start <= self.end
    }

    /// The bytes in both, if any.
    pub fn intersect(&self, other: &SeqRange) -> Option<SeqRange> {
        if !self.overlaps(other) {
            return None;
        }
        Some(SeqRange {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        })
    }

    /// The smallest range covering both. Only meaningful when they [`touch`](Self::touches);
    /// otherwise it also covers the gap between them.
    pub fn hull(&self, other: &SeqRange) -> SeqRange {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        SeqRange {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl fmt::Debug for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start.0, self.end.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    fn r(a: u32, b: u32) -> SeqRange {
        SeqRange::new(s(a), s(b))
    }

    #[test]
    fn add_and_sub_wrap_at_2_32() {
        assert_eq!(s(u32::MAX) + 1, s(0));
        assert_eq!(s(u32::MAX - 9) + 20, s(10));
        assert_eq!(s(5) - 10, s(u32::MAX - 4));
        let mut x = s(u32::MAX);
        x += 2;
        assert_eq!(x, s(1));
        x -= 3;
        assert_eq!(x, s(u32::MAX - 1));
    }

    #[test]
    fn difference_is_signed_across_the_wrap() {
        assert_eq!(s(10) - s(u32::MAX - 9), 20);
        assert_eq!(s(u32::MAX - 9) - s(10), -20);
        assert_eq!(s(7).distance(s(7)), 0);
        assert_eq!(s(10).since(s(u32::MAX - 9)), 20);
        assert_eq!(s(u32::MAX - 9).since(s(10)), 0, "not after: no bytes");
    }

    #[test]
    fn comparison_follows_the_wrap() {
        assert!(s(u32::MAX) < s(0));
        assert!(s(0) > s(u32::MAX));
        assert!(s(1) > s(u32::MAX - 100));
        assert!(s(100) < s(200));
        assert!(s(3) <= s(3) && s(3) >= s(3));
        // Just under half the space apart is still ordered...
        assert!(s(0) < s(0x7fff_ffff));
        assert!(s(0x7fff_ffff) > s(0));
        // ...and past half it flips: what lies 2^31 + 1 ahead is "before".
        assert!(s(0x8000_0001) < s(0));
    }

    #[test]
    fn exactly_half_the_space_apart_is_unordered() {
        let (a, b) = (s(0), s(0x8000_0000));
        assert_eq!(a.partial_cmp(&b), None);
        assert_eq!([a < b, a > b, a <= b, a >= b], [false; 4]);
        assert_ne!(a, b);
    }

    #[test]
    fn comparison_is_not_transitive_over_the_whole_space() {
        let (a, b, c) = (s(0), s(0x6000_0000), s(0xc000_0000));
        assert!(a < b && b < c && c < a);
    }

    #[test]
    fn max_and_min_across_the_wrap() {
        assert_eq!(s(u32::MAX).max(s(2)), s(2));
        assert_eq!(s(2).max(s(u32::MAX)), s(2));
        assert_eq!(s(u32::MAX).min(s(2)), s(u32::MAX));
        assert_eq!(s(2).min(s(u32::MAX)), s(u32::MAX));
        assert_eq!(s(4).max(s(4)), s(4));
    }

    #[test]
    fn range_len_and_contains_across_the_wrap() {
        let wrap = r(u32::MAX - 4, 5);
        assert_eq!(wrap.len(), 10);
        assert!(!wrap.is_empty());
        assert!(wrap.contains(s(u32::MAX)));
        assert!(wrap.contains(s(0)));
        assert!(wrap.contains(s(u32::MAX - 4)));
        assert!(!wrap.contains(s(5)), "half-open: end is outside");
        assert!(!wrap.contains(s(u32::MAX - 5)));
        assert_eq!(SeqRange::from_len(s(u32::MAX - 4), 10), wrap);
    }

    #[test]
    fn empty_and_backwards_ranges() {
        assert!(r(7, 7).is_empty());
        assert_eq!(r(7, 7).len(), 0);
        assert!(r(9, 7).is_empty());
        assert_eq!(r(9, 7).len(), 0);
        assert!(!r(7, 7).contains(s(7)));
        assert!(r(0, 0x8000_0000).is_empty(), "unordered ends make no range");
    }

    #[test]
    fn overlaps_touches_and_intersect() {
        let a = r(u32::MAX - 9, 10); // 20 bytes across the wrap
        let b = r(5, 30);
        let c = r(10, 30);
        assert!(a.overlaps(&b));
        assert_eq!(a.intersect(&b), Some(r(5, 10)));
        assert_eq!(b.intersect(&a), Some(r(5, 10)));
        assert!(!a.overlaps(&c), "adjacent ranges share no byte");
        assert_eq!(a.intersect(&c), None);
        assert!(a.touches(&c) && c.touches(&a));
        assert_eq!(a.hull(&c), r(u32::MAX - 9, 30));
        assert!(!a.touches(&r(11, 30)));
        assert!(!a.overlaps(&r(3, 3)), "an empty range overlaps nothing");
        assert_eq!(a.intersect(&r(u32::MAX - 5, 0)), Some(r(u32::MAX - 5, 0)));
    }

    #[test]
    fn contains_range() {
        let a = r(u32::MAX - 9, 10);
        assert!(a.contains_range(&r(u32::MAX, 3)));
        assert!(a.contains_range(&a));
        assert!(!a.contains_range(&r(5, 11)));
        assert!(
            a.contains_range(&r(100, 100)),
            "empty is contained anywhere"
        );
    }
}
