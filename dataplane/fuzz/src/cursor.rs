//! Reading a fuzz input as a stream of small numbers.
//!
//! An exhausted input reads as zeros rather than failing, so every prefix of an input is a
//! valid input and libFuzzer's truncations and insertions keep the rest meaningful; each
//! encoding is chosen so that zero is the most ordinary value.

pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&first, rest)) => {
                self.rest = rest;
                first
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `len` bytes, fewer at the end of the input.
    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zeros_past_the_end() {
        let mut cursor = Cursor::new(&[1, 2, 3]);
        assert_eq!(cursor.u16(), 0x0102);
        assert_eq!(cursor.u32(), 0x0300_0000);
        assert!(cursor.is_empty());
        assert_eq!(cursor.bytes(4), &[] as &[u8]);
    }
}
