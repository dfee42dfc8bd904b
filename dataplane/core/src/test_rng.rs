//! A deterministic pseudo-random generator for tests (xorshift64*): a failing
//! case reproduces from its seed, and no test depends on a crate for it.

pub struct TestRng(u64);

impl TestRng {
    /// A zero seed would stay zero forever; it is taken as one.
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform enough below `n` (which must not be zero).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
