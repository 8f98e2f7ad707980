//! Float buffers whose first element sits on a cache-line boundary.
//!
//! Why: the memory plan places every value at a multiple of [`super::plan::ALIGN`] bytes from
//! the arena's start so that the kernels' 32-byte vectors along a value's rows stay within
//! cache lines. A large
//! `Vec<f32>` from the system allocator starts 16 bytes past a page boundary (glibc's `mmap`
//! chunks), so every "aligned" value was 16 bytes off a line and half of the kernels' 32-byte
//! loads and stores split across two cache lines.

use std::ops::{Deref, DerefMut};

/// Floats per cache line (64 bytes).
const LINE_FLOATS: usize = 16;

/// A zero-initialised `[f32]` of fixed length starting on a 64-byte boundary.
#[derive(Debug, Clone)]
pub struct AlignedFloats {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl AlignedFloats {
    /// `len` zeros, the first on a cache-line boundary (at most 15 floats of slack).
    pub fn zeroed(len: usize) -> AlignedFloats {
        let buf = vec![0.0f32; len + LINE_FLOATS - 1];
        let addr = buf.as_ptr() as usize;
        let start = (64 - addr % 64) % 64 / 4;
        AlignedFloats { buf, start, len }
    }
}

impl Deref for AlignedFloats {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedFloats {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_whatever_the_length() {
        for len in [0, 1, 15, 16, 1000, 100_000, 3_000_000] {
            let b = AlignedFloats::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % 64, 0, "len {len}");
            assert!(b.iter().all(|&v| v == 0.0));
        }
    }
}
