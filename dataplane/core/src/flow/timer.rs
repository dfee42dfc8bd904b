//! A single-level timer wheel for idle expiry, one per worker.
//!
//! The wheel is lazy: a timer records roughly when its flow *might* be due, and
//! the owner checks the real deadline when the slot fires, then either ends the
//! timer or schedules it again. That is what lets an ordinary packet update
//! only its flow's `last_seen` and never touch the wheel.
//!
//! Timers are nodes of a preallocated pool, linked into one circular doubly
//! linked list per slot. Linking makes every operation O(1) without allocation
//! (a slot never grows a `Vec` on the packet path) and lets the owner cancel a
//! timer the moment its flow goes away, so no stale timer is left behind to
//! fire later on whatever flow reused the storage.

/// Marks a node on the free list (its `prev`), and the end of the free list.
const FREE: u32 = u32::MAX;

/// A timer in the wheel: a node index. It is only ever held by the one flow it
/// was started for, and cancelled when that flow is removed, so it cannot
/// outlive its flow and act on another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerHandle(u32);

impl TimerHandle {
    /// What a flow entry holds before the table gives it a timer.
    pub(crate) const UNSET: TimerHandle = TimerHandle(u32::MAX);
}

/// 16 bytes: four to a cache line. `payload` is whatever finds the timer's
/// owner again (the flow table stores the flow's hash).
#[derive(Clone, Copy, Debug)]
struct TimerNode {
    payload: u64,
    prev: u32,
    next: u32,
}

pub(crate) struct TimerWheel {
    tick_ms: u64,
    mask: u64,
    /// Absolute tick number of the next slot to fire.
    next_tick: u64,
    /// `[0, slots)`: one list head per slot; `slots`: the head of the firing
    /// list; after that, the timers.
    nodes: Vec<TimerNode>,
    free: u32,
}

impl TimerWheel {
    /// Upper bound on `timers`: node indices are `u32` and `FREE` is reserved.
    pub(crate) fn max_timers(slots: usize) -> usize {
        (FREE as usize).saturating_sub(slots.next_power_of_two() + 1)
    }

    /// `slots` is rounded up to a power of two (so a tick maps to its slot
    /// with a mask); `timers` nodes are reserved now and never grow.
    pub(crate) fn new(tick_ms: u64, slots: usize, timers: usize) -> Self {
        let slots = slots.max(1).next_power_of_two();
        let timers = timers.min(Self::max_timers(slots));
        let unused = TimerNode {
            payload: 0,
            prev: FREE,
            next: FREE,
        };
        let mut wheel = TimerWheel {
            tick_ms: tick_ms.max(1),
            mask: slots as u64 - 1,
            next_tick: 0,
            // Filled, not just reserved: the pages are touched now rather
            // than on the packet path as flows arrive.
            nodes: vec![unused; slots + 1 + timers],
            free: FREE,
        };
        wheel.clear();
        wheel
    }

    /// Forgets every timer; the pool and the slots are kept.
    pub(crate) fn clear(&mut self) {
        for head in 0..self.firing_head() as usize + 1 {
            self.nodes[head].prev = head as u32;
            self.nodes[head].next = head as u32;
        }
        self.free_all_timers();
    }

    fn free_all_timers(&mut self) {
        // Lowest index first out, so a lightly loaded table keeps its timers
        // near the front of the pool.
        self.free = FREE;
        for index in (self.firing_head() as usize + 1..self.nodes.len()).rev() {
            self.nodes[index] = TimerNode {
                payload: 0,
                prev: FREE,
                next: self.free,
            };
            self.free = index as u32;
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.mask as usize + 1
    }

    fn firing_head(&self) -> u32 {
        self.slots() as u32
    }

    /// Takes a timer from the pool, not yet scheduled; `None` when the pool
    /// is exhausted.
    pub(crate) fn allocate(&mut self, payload: u64) -> Option<TimerHandle> {
        if self.free == FREE {
            return None;
        }
        let index = self.free;
        let node = &mut self.nodes[index as usize];
        self.free = node.next;
        *node = TimerNode {
            payload,
            prev: index,
            next: index,
        };
        Some(TimerHandle(index))
    }

    pub(crate) fn payload(&self, handle: TimerHandle) -> u64 {
        self.nodes[handle.0 as usize].payload
    }

    /// Moves the timer to the slot of `deadline_ms`. A deadline beyond the
    /// horizon lands in the slot it maps to modulo the wheel and simply fires
    /// early, once per revolution, until the owner finds it really due. A
    /// deadline already past fires at the next tick.
    pub(crate) fn schedule(&mut self, handle: TimerHandle, deadline_ms: u64) {
        if self.is_free(handle) {
            return;
        }
        self.unlink(handle.0);
        let due = deadline_ms.div_ceil(self.tick_ms).max(self.next_tick);
        // Truncation is the point: the mask keeps only the slot bits.
        let slot = (due & self.mask) as u32;
        self.link_last(slot, handle.0);
    }

    /// Returns the timer to the pool. Cancelling twice is harmless.
    pub(crate) fn cancel(&mut self, handle: TimerHandle) {
        if self.is_free(handle) {
            return;
        }
        self.unlink(handle.0);
        let node = &mut self.nodes[handle.0 as usize];
        node.prev = FREE;
        node.next = self.free;
        self.free = handle.0;
    }

    fn is_free(&self, handle: TimerHandle) -> bool {
        self.nodes[handle.0 as usize].prev == FREE
    }

    /// The next timer whose slot has come up by `now_ms`, taken out of the
    /// wheel. The caller must either `schedule` it again or `cancel` it.
    ///
    /// A slot is moved whole onto a separate firing list before its timers are
    /// handed out, so a timer scheduled again into the same slot (one whole
    /// revolution later) is not seen twice, and a caller that stops part-way
    /// picks up where it left off on the next call.
    pub(crate) fn next_fired(&mut self, now_ms: u64) -> Option<TimerHandle> {
        let firing = self.firing_head();
        let now_tick = now_ms / self.tick_ms;
        loop {
            let first = self.nodes[firing as usize].next;
            if first != firing {
                self.unlink(first);
                return Some(TimerHandle(first));
            }
            if self.next_tick > now_tick {
                return None;
            }
            // After a pause longer than a revolution, one pass over every slot
            // still finds every timer (each is checked against the real
            // time), so the ticks before that pass need no visit.
            let slots = self.mask + 1;
            if now_tick - self.next_tick >= slots {
                self.next_tick = now_tick + 1 - slots;
            }
            let slot = (self.next_tick & self.mask) as u32;
            self.next_tick += 1;
            self.move_to_firing(slot);
        }
    }

    fn link_last(&mut self, head: u32, index: u32) {
        let last = self.nodes[head as usize].prev;
        self.nodes[index as usize].prev = last;
        self.nodes[index as usize].next = head;
        self.nodes[last as usize].next = index;
        self.nodes[head as usize].prev = index;
    }

    /// Leaves the node linked to itself, which is what "in no list" means.
    fn unlink(&mut self, index: u32) {
        let TimerNode { prev, next, .. } = self.nodes[index as usize];
        self.nodes[prev as usize].next = next;
        self.nodes[next as usize].prev = prev;
        self.nodes[index as usize].prev = index;
        self.nodes[index as usize].next = index;
    }

    /// Splices the whole list of `slot` onto the (empty) firing list in O(1).
    fn move_to_firing(&mut self, slot: u32) {
        let firing = self.firing_head();
        let TimerNode {
            prev: last,
            next: first,
            ..
        } = self.nodes[slot as usize];
        if first == slot {
            return;
        }
        self.nodes[firing as usize].next = first;
        self.nodes[firing as usize].prev = last;
        self.nodes[first as usize].prev = firing;
        self.nodes[last as usize].next = firing;
        self.nodes[slot as usize].prev = slot;
        self.nodes[slot as usize].next = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(wheel: &mut TimerWheel, payload: u64, deadline_ms: u64) -> Option<TimerHandle> {
        let handle = wheel.allocate(payload)?;
        wheel.schedule(handle, deadline_ms);
        Some(handle)
    }

    fn drain(wheel: &mut TimerWheel, now_ms: u64) -> Vec<u64> {
        let mut fired = Vec::new();
        while let Some(handle) = wheel.next_fired(now_ms) {
            fired.push(wheel.payload(handle));
            wheel.cancel(handle);
        }
        fired
    }

    #[test]
    fn fires_at_the_tick_of_its_deadline_and_not_before() {
        let mut wheel = TimerWheel::new(100, 64, 4);
        start(&mut wheel, 7, 1_050).unwrap();
        assert!(drain(&mut wheel, 1_099).is_empty());
        assert_eq!(drain(&mut wheel, 1_100), vec![7]);
        assert!(drain(&mut wheel, 10_000).is_empty());
    }

    #[test]
    fn beyond_the_horizon_fires_early_once_per_revolution() {
        // 8 slots of 10 ms: an 80 ms horizon.
        let mut wheel = TimerWheel::new(10, 8, 1);
        let handle = start(&mut wheel, 1, 250).unwrap();
        let mut early = 0;
        let mut now = 0;
        loop {
            now += 10;
            if let Some(fired) = wheel.next_fired(now) {
                assert_eq!(fired, handle);
                if now >= 250 {
                    break;
                }
                early += 1;
                wheel.schedule(fired, 250);
            }
        }
        assert_eq!(now, 250);
        assert_eq!(
            early, 3,
            "slot 25 mod 8 comes up at ticks 1, 9 and 17 first"
        );
    }

    #[test]
    fn pool_is_fixed_and_cancelled_timers_are_reused() {
        let mut wheel = TimerWheel::new(100, 16, 2);
        let a = start(&mut wheel, 1, 100).unwrap();
        let _b = start(&mut wheel, 2, 100).unwrap();
        assert!(start(&mut wheel, 3, 100).is_none());
        wheel.cancel(a);
        wheel.cancel(a);
        let c = start(&mut wheel, 3, 500).unwrap();
        assert!(
            start(&mut wheel, 4, 100).is_none(),
            "double cancel freed one node once"
        );
        assert_eq!(drain(&mut wheel, 100), vec![2]);
        assert_eq!(wheel.payload(c), 3);
    }

    #[test]
    fn a_long_pause_visits_each_slot_once() {
        let mut wheel = TimerWheel::new(1, 16, 3);
        start(&mut wheel, 1, 5).unwrap();
        start(&mut wheel, 2, 1_000_000).unwrap();
        start(&mut wheel, 3, 2_000_000_000).unwrap();
        let mut fired = drain(&mut wheel, 1_500_000);
        fired.sort_unstable();
        // Every timer is handed out for its owner to judge; none twice.
        assert_eq!(fired, vec![1, 2, 3]);
    }

    #[test]
    fn stopping_part_way_resumes_the_same_slot() {
        let mut wheel = TimerWheel::new(10, 8, 3);
        for payload in 0..3 {
            start(&mut wheel, payload, 10).unwrap();
        }
        let first = wheel.next_fired(10).unwrap();
        wheel.cancel(first);
        // Scheduled again while its slot fires: it goes to a later tick, not
        // back into this pass.
        let second = wheel.next_fired(10).unwrap();
        wheel.schedule(second, 10);
        let third = wheel.next_fired(10).unwrap();
        wheel.cancel(third);
        assert!(wheel.next_fired(10).is_none());
        assert_eq!(wheel.next_fired(20), Some(second));
    }
}
