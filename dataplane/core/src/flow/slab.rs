//! Where the flow entries live: a fixed array of them and a free list, so an
//! entry stays at one position for its whole life and the index can name it
//! with a `u32`.

/// Positions are `u32`; the owner keeps within `capacity`, which fits.
pub(crate) struct Slab<T> {
    /// Grows by `push` up to `capacity`, which is reserved up front, so it
    /// never reallocates; a freed position keeps its stale value until reused.
    items: Vec<T>,
    /// Freed positions, reused last freed first: that entry's lines are the
    /// likeliest to still be in cache.
    free: Vec<u32>,
    capacity: usize,
}

impl<T: Clone> Slab<T> {
    pub(crate) fn new(capacity: usize) -> Slab<T> {
        let capacity = capacity.min(u32::MAX as usize);
        Slab {
            items: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Positions in use.
    pub(crate) fn len(&self) -> usize {
        self.items.len() - self.free.len()
    }

    /// The position the next `insert` will use; `None` when full.
    #[inline]
    pub(crate) fn next_position(&self) -> Option<u32> {
        match self.free.last() {
            Some(&p) => Some(p),
            None if self.items.len() < self.capacity => Some(self.items.len() as u32),
            None => None,
        }
    }

    /// Stores `item` at `next_position`; `None` when full.
    #[inline]
    pub(crate) fn insert(&mut self, item: T) -> Option<u32> {
        if let Some(p) = self.free.pop() {
            self.items[p as usize] = item;
            return Some(p);
        }
        if self.items.len() == self.capacity {
            return None;
        }
        self.items.push(item);
        Some(self.items.len() as u32 - 1)
    }

    /// Frees `position` (which must be in use) and returns a copy of its item.
    pub(crate) fn remove(&mut self, position: u32) -> T {
        self.free.push(position);
        self.items[position as usize].clone()
    }

    /// The item at `position`, or at a freed position its stale value: the
    /// owner only asks for positions it holds.
    #[inline(always)]
    pub(crate) fn get(&self, position: u32) -> &T {
        &self.items[position as usize]
    }

    #[inline(always)]
    pub(crate) fn get_mut(&mut self, position: u32) -> &mut T {
        &mut self.items[position as usize]
    }

    /// Whether `position` has ever been handed out (it may be free again).
    pub(crate) fn contains(&self, position: u32) -> bool {
        (position as usize) < self.items.len()
    }

    /// Starts loading the first `lines` cache lines of the item at
    /// `position`.
    #[inline(always)]
    pub(crate) fn prefetch(&self, position: u32, lines: usize) {
        let item = self.items.as_ptr().wrapping_add(position as usize) as *const u8;
        for line in 0..lines {
            hw::prefetch(item.wrapping_add(64 * line));
        }
    }

    /// Frees every position; the memory stays reserved.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.free.clear();
    }

    /// Reserved items: never more than asked for, never reallocated.
    #[cfg(test)]
    pub(crate) fn reserved(&self) -> usize {
        self.items.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_reused_last_freed_first_and_capacity_is_a_hard_limit() {
        let mut slab = Slab::new(3);
        assert_eq!(slab.next_position(), Some(0));
        assert_eq!(slab.insert('a'), Some(0));
        assert_eq!(slab.insert('b'), Some(1));
        assert_eq!(slab.insert('c'), Some(2));
        assert_eq!(slab.next_position(), None);
        assert_eq!(slab.insert('d'), None);
        assert_eq!(slab.remove(0), 'a');
        assert_eq!(slab.remove(2), 'c');
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.next_position(), Some(2));
        assert_eq!(slab.insert('e'), Some(2));
        assert_eq!(slab.insert('f'), Some(0));
        assert_eq!((*slab.get(0), *slab.get(1), *slab.get(2)), ('f', 'b', 'e'));
        assert_eq!(slab.reserved(), 3);
        slab.clear();
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.insert('g'), Some(0));
    }
}
