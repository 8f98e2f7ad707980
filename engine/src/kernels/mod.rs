//! Fast f32 kernels: GEMM, convolution, pooling and SIMD elementwise operations.
//!
//! Everything here is a pure function over `f32` slices in NCHW (NC + spatial) layout and knows
//! nothing of ONNX or of the graph: the executor (`exec/`) checks shapes, plans buffers and calls
//! these. Work that depends only on weights (packing, choosing an algorithm) is done once at load
//! time ([`conv::PackedConvWeights::new`]); scratch memory is provided by the caller, sized by
//! [`conv::conv_scratch_len`], so the executor's memory plan covers it.
//!
//! SIMD: kernels dispatch at run time on [`cpu_features::simd_level`] (AVX-512F, AVX2+FMA or
//! scalar), which can be lowered with `ENGINE_SIMD=scalar|avx2|avx512`.
//!
//! Threads: kernels parallelise with rayon over `rayon::current_num_threads()` workers of the
//! pool they are called in; results do not depend on the thread count beyond float rounding.
//! The convolution kernels hand their work items out through `worker_items`: each worker
//! keeps its own scratch slot and starts on its own contiguous share of the items.

pub mod conv;
pub mod cpu_features;
pub mod depthwise;
pub mod direct_channels;
pub mod direct_conv;
pub mod elementwise;
pub mod gemm;
pub mod grouped_conv;
pub mod im2col;
pub mod packed_gemm;
pub mod pointwise_channels;
pub mod pointwise_conv;
pub mod pointwise_group;
pub mod pool;
mod pool2d;
pub mod unfolded_conv;
pub mod vec_mat;
pub mod winograd;
mod worker_items;

pub use conv::{conv, conv_scratch_len, ConvAlgo, ConvGeometry, PackedConvWeights};
pub use cpu_features::{detected_simd_level, set_max_simd_level, simd_level, SimdLevel};
pub use gemm::{sgemm, sgemm_strided, GemmBackend, MatRef};

/// A kernel precondition that does not hold (bad geometry, wrong slice length). The executor
/// wraps it into `engine::Error::Node` with the node's name and op type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(pub String);

/// Returns `Err(KernelError)` with a formatted message when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::kernels::KernelError(format!($($arg)*)));
        }
    };
}
pub(crate) use ensure;

#[cfg(test)]
pub(crate) mod test_util {
    /// Deterministic pseudo-random values in [-1, 1) (xorshift; no dependency needed).
    pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // NaN-propagating (f32::max would hide an unwritten NaN-initialised output).
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
    }

    /// Runs `f` inside a dedicated rayon pool of `n` threads.
    pub fn with_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("test pool")
            .install(f)
    }

    /// Best wall time (seconds) of each variant over 8 interleaved rounds of 5 calls of
    /// `run(variant)` on `threads` workers: the dev timing helpers' loop (the host is shared
    /// and noisy, so the variants alternate and each keeps its best).
    pub fn interleaved_best<T: Sync>(
        threads: usize,
        variants: &[T],
        mut run: impl FnMut(&T) + Send,
    ) -> Vec<f64> {
        let mut best = vec![f64::MAX; variants.len()];
        with_threads(threads, || {
            for _ in 0..8 {
                for (v, b) in variants.iter().zip(best.iter_mut()) {
                    for _ in 0..5 {
                        let t = std::time::Instant::now();
                        run(v);
                        *b = b.min(t.elapsed().as_secs_f64());
                    }
                }
            }
        });
        best
    }
}
