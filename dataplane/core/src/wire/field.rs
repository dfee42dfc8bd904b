//! Network-byte-order fields at fixed offsets.
//!
//! Views check their lengths once, in `new_checked`; these reads then stay inside the checked
//! range, so the slicing below cannot fail for a view that exists.

/// `N` bytes starting at `at`, as an array so that `from_be_bytes` needs no copy loop.
#[inline(always)]
pub(crate) fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    // The slice is exactly N long, so the conversion cannot fail; the fallback keeps a panic
    // path out of the generated code.
    bytes[at..at + N].try_into().unwrap_or([0; N])
}

#[inline(always)]
pub(crate) fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array(bytes, at))
}

#[inline(always)]
pub(crate) fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(bytes, at))
}
