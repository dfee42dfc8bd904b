//! The buffer trait the TCP engine is generic over.
//!
//! The proxy relays payload without copying it (issue 4, "zero-copy relay"): a received mbuf is
//! kept, refcounted, until the far leg's peer acknowledges it, and the engine only ever narrows
//! it. Everything the engine does to payload is therefore `slice` and `clone`; tests use
//! [`TestBytes`], the data plane an mbuf wrapper.

use std::rc::Rc;

/// Bytes the engine holds without copying: in the data plane an mbuf (refcounted), in tests plain bytes.
pub trait Payload: Clone {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sub-range [start, end) sharing the same storage (an mbuf clone with an offset).
    ///
    /// Callers keep `start <= end <= self.len()`; the engine checks this before every call, so an
    /// implementation may panic on a violation (it is a bug, never packet input).
    fn slice(&self, start: usize, end: usize) -> Self;

    /// The bytes, for inspection and for copying into a frame.
    fn bytes(&self) -> &[u8];
}

/// Plain bytes behind an `Rc`, narrowed by a range: cloning and slicing share the storage,
/// as an mbuf clone does, so tests can check that the engine never copies.
#[derive(Clone)]
pub struct TestBytes {
    storage: Rc<[u8]>,
    start: usize,
    end: usize,
}

impl TestBytes {
    /// True when both views share one allocation, the test for "sliced, not copied".
    pub fn shares_storage_with(&self, other: &TestBytes) -> bool {
        Rc::ptr_eq(&self.storage, &other.storage)
    }

    /// Where this view starts within its storage.
    pub fn storage_offset(&self) -> usize {
        self.start
    }

    /// How many views (clones and slices) of the storage exist, this one included; a test can
    /// check that the engine released everything it held.
    pub fn storage_refs(&self) -> usize {
        Rc::strong_count(&self.storage)
    }
}

impl Payload for TestBytes {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn slice(&self, start: usize, end: usize) -> Self {
        assert!(
            start <= end && end <= self.len(),
            "slice {start}..{end} of a {}-byte payload",
            self.len()
        );
        TestBytes {
            storage: Rc::clone(&self.storage),
            start: self.start + start,
            end: self.start + end,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }
}

impl From<&[u8]> for TestBytes {
    fn from(bytes: &[u8]) -> Self {
        TestBytes {
            storage: Rc::from(bytes),
            start: 0,
            end: bytes.len(),
        }
    }
}

impl From<Vec<u8>> for TestBytes {
    fn from(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        TestBytes {
            storage: Rc::from(bytes),
            start: 0,
            end,
        }
    }
}

impl<const N: usize> From<&[u8; N]> for TestBytes {
    fn from(bytes: &[u8; N]) -> Self {
        TestBytes::from(&bytes[..])
    }
}

impl std::fmt::Debug for TestBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBytes")
            .field("range", &(self.start..self.end))
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// Equal when the bytes are equal, wherever they are stored.
impl PartialEq for TestBytes {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for TestBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_storage() {
        let whole = TestBytes::from(b"hello world");
        let world = whole.slice(6, 11);
        assert_eq!(world.bytes(), b"world");
        assert_eq!(world.len(), 5);
        assert!(world.shares_storage_with(&whole));
        assert_eq!(world.bytes().as_ptr(), whole.bytes()[6..].as_ptr());
        let orl = world.slice(1, 4);
        assert_eq!(orl.bytes(), b"orl");
        assert_eq!(orl.storage_offset(), 7);
        assert_eq!(whole.storage_refs(), 3);
        drop(orl);
        assert_eq!(whole.storage_refs(), 2);
        assert!(whole.slice(3, 3).is_empty());
    }

    #[test]
    fn equal_by_content() {
        let a = TestBytes::from(vec![1, 2, 3]);
        let b = TestBytes::from(&[0, 1, 2, 3][..]).slice(1, 4);
        assert_eq!(a, b);
        assert!(!a.shares_storage_with(&b));
    }

    #[test]
    #[should_panic(expected = "slice 2..5")]
    fn slice_past_the_end_is_a_bug() {
        TestBytes::from(b"abcd").slice(2, 5);
    }
}
