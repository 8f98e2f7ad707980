//! Row-major f32 matrix products behind one small switch ([`GemmBackend`]).
//!
//! `C[m×n] (+)= A[m×k] · B[k×n]`, every matrix row-major with its own row stride (`lda`,
//! `ldb`, `ldc` in elements), so callers can multiply sub-blocks of bigger buffers (one group of
//! a grouped convolution, a column block of an im2col matrix) without copying.
//!
//! Two third-party backends are wrapped: the `gemm` crate (with its `x86-v4` AVX-512 kernels)
//! and `matrixmultiply` (with its `avx512` feature). `gemm` measured faster on every
//! convolution shape of ResNet-50 on this machine (see `benches/benches/kernels.rs`), so it is
//! the default. Products with `m == 1` or `n == 1` (fully connected layers at batch 1) are
//! memory-bound and both crates are slow there (~4–14 GFLOP/s for 1000×2048×1), so
//! [`sgemm`] routes them to the simple SIMD GEMV kernels below.

use super::cpu_features::{simd_level, SimdLevel};
use super::vec_mat::{vec_mat, vec_mat_scratch_len};
use rayon::prelude::*;

/// Which general-matrix-multiply implementation [`sgemm`] uses for `m, n > 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmBackend {
    /// The `gemm` crate (AVX-512 through its `x86-v4` feature; threads via `Parallelism::Rayon`).
    #[default]
    Gemm,
    /// The `matrixmultiply` crate (AVX-512 kernels; threads by splitting N with rayon).
    MatrixMultiply,
}

impl GemmBackend {
    /// All backends, for benchmarks and tests.
    pub const ALL: [GemmBackend; 2] = [GemmBackend::Gemm, GemmBackend::MatrixMultiply];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            GemmBackend::Gemm => "gemm",
            GemmBackend::MatrixMultiply => "matrixmultiply",
        }
    }
}

/// Smallest slice length that holds a `rows×cols` row-major matrix with row stride `ld`.
#[inline]
pub fn required_len(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// A raw pointer that may cross threads; each user documents why the accesses are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: the pointer is only a token; every dereference site proves that threads write
// disjoint elements and that the buffer outlives the parallel region.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

/// `C = A·B` (or `C += A·B` when `accumulate`), row-major with strides.
///
/// `threads` is how many rayon workers to spread the product over (1 = the calling thread
/// only); pass `rayon::current_num_threads()` to use the whole pool the executor runs in.
/// Results do not depend on `threads` except through float rounding order in the `gemm` crate.
/// The `gemm` backend sums K in slices (see [`k_slice`]).
///
/// # Panics
/// If a slice is too short for its dimensions and stride, or a stride is smaller than the row
/// length (programming errors: the executor sizes every buffer from the shapes it checked).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    backend: GemmBackend,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "sgemm: stride shorter than a row"
    );
    assert!(a.len() >= required_len(m, k, lda), "sgemm: A too short");
    assert!(b.len() >= required_len(k, n, ldb), "sgemm: B too short");
    assert!(c.len() >= required_len(m, n, ldc), "sgemm: C too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let threads = threads.max(1);
    if n == 1 {
        // C[m×1] = A[m×k] · b: dot products of A's rows with b's (strided) column.
        let bcol: Vec<f32>;
        let bv: &[f32] = if ldb == 1 {
            &b[..k]
        } else {
            bcol = (0..k).map(|i| b[i * ldb]).collect();
            &bcol
        };
        gemv_rows(m, k, a, lda, bv, c, ldc, accumulate, threads);
        return;
    }
    if m == 1 {
        // c[1×n] = a[1×k] · B[k×n]: a weighted sum of B's rows. Its partial sums are
        // allocated here; the executor's classifier step calls `vec_mat` with planned
        // scratch instead.
        let mut parts = vec![0.0f32; vec_mat_scratch_len(k, n)];
        vec_mat(
            simd_level(),
            &a[..k],
            b,
            ldb,
            n,
            &mut c[..n],
            accumulate,
            &mut parts,
        );
        return;
    }
    match backend {
        GemmBackend::Gemm => {
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: the asserts above prove every (row, col) the crate touches lies inside
            // `a`, `b`, `c`; `c` is borrowed mutably so nothing aliases it.
            unsafe {
                gemm_sliced(
                    m,
                    n,
                    k,
                    a,
                    lda,
                    b,
                    ldb,
                    c.as_mut_ptr(),
                    ldc,
                    accumulate,
                    par,
                )
            }
        }
        GemmBackend::MatrixMultiply => {
            let beta = if accumulate { 1.0 } else { 0.0 };
            // Split N into per-thread column blocks (multiples of 16 columns); matrixmultiply's
            // own threading splits M in 64-row blocks, which does nothing for M = 64.
            let blocks = if threads > 1 && m * n * k >= 1 << 20 {
                threads.min(n.div_ceil(16))
            } else {
                1
            };
            let chunk = n.div_ceil(blocks).next_multiple_of(16).min(n);
            let cp = SendPtr(c.as_mut_ptr());
            let run = |j0: usize| {
                let nb = chunk.min(n - j0);
                // SAFETY: asserts above bound every access; each block writes only columns
                // j0..j0+nb of C, disjoint between blocks, and `c` outlives the scope.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        nb,
                        1.0,
                        a.as_ptr(),
                        lda as isize,
                        1,
                        b.as_ptr().add(j0),
                        ldb as isize,
                        1,
                        beta,
                        { cp }.0.add(j0),
                        ldc as isize,
                        1,
                    )
                }
            };
            if blocks == 1 {
                run(0);
            } else {
                (0..n)
                    .step_by(chunk)
                    .collect::<Vec<_>>()
                    .into_par_iter()
                    .for_each(run);
            }
        }
    }
}

/// A read-only matrix view with arbitrary (non-negative) row and column strides, so
/// transposed operands (ONNX Gemm's `transA`/`transB`) need no copy: the transpose of a
/// row-major `r×c` matrix with row stride `ld` is `MatRef { rs: 1, cs: ld, .. }`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    /// Elements between consecutive rows.
    pub rs: usize,
    /// Elements between consecutive columns.
    pub cs: usize,
}

impl MatRef<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `C = A·B` (or `C += A·B`) for any strides (`A: m×k`, `B: k×n`, `C: m×n` with row stride
/// `c_rs` and column stride `c_cs`), for ONNX Gemm/MatMul with transposed operands.
///
/// Matrix–vector cases go to the GEMV kernels when the vector side allows it (`n == 1` with
/// A's rows contiguous: a fully connected layer `yᵀ = W · xᵀ` with W stored `[out × in]`, i.e.
/// ONNX `Gemm(x, W, transB=1)` at batch 1 is `m = out, n = 1, A = W, B = xᵀ`).
///
/// # Panics
/// If a view is too small for its dimensions, or `c`'s row/column strides could make two
/// output elements share an address (`c_rs == c_cs` with m, n > 1).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    backend: GemmBackend,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    c_rs: usize,
    c_cs: usize,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n),
        "sgemm_strided: operand too small"
    );
    let c_fits = m == 0 || n == 0 || (m - 1) * c_rs + (n - 1) * c_cs < c.len();
    assert!(c_fits, "sgemm_strided: C too small");
    // Distinct output elements must have distinct addresses.
    assert!(
        m <= 1 || n <= 1 || (c_rs >= n * c_cs || c_cs >= m * c_rs),
        "sgemm_strided: overlapping output strides"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * c_rs + j * c_cs] = 0.0;
                }
            }
        }
        return;
    }
    if a.cs == 1 && b.cs == 1 && c_cs == 1 && a.rs >= k && b.rs >= n && c_rs >= n {
        sgemm(
            backend, m, n, k, a.data, a.rs, b.data, b.rs, c, c_rs, accumulate, threads,
        );
        return;
    }
    if n == 1 && a.cs == 1 && a.rs >= k && c_rs >= 1 {
        let x: Vec<f32> = (0..k).map(|p| b.data[p * b.rs]).collect();
        gemv_rows(m, k, a.data, a.rs, &x, c, c_rs, accumulate, threads);
        return;
    }
    let threads = threads.max(1);
    match backend {
        GemmBackend::Gemm => {
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: `fits` checks above bound every element the crate reads or writes; the
            // stride assert keeps output elements distinct; `c` is borrowed mutably.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    c_cs as isize,
                    c_rs as isize,
                    accumulate,
                    a.data.as_ptr(),
                    a.cs as isize,
                    a.rs as isize,
                    b.data.as_ptr(),
                    b.cs as isize,
                    b.rs as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    par,
                )
            }
        }
        GemmBackend::MatrixMultiply => {
            let beta = if accumulate { 1.0 } else { 0.0 };
            // SAFETY: as above.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.data.as_ptr(),
                    a.rs as isize,
                    a.cs as isize,
                    b.data.as_ptr(),
                    b.rs as isize,
                    b.cs as isize,
                    beta,
                    c.as_mut_ptr(),
                    c_rs as isize,
                    c_cs as isize,
                )
            }
        }
    }
}

/// Single-threaded `C = A·B` through a crate backend, without [`sgemm`]'s GEMV routing for
/// `m == 1` / `n == 1` (benchmarks compare the crates against the GEMV kernels with it).
///
/// # Panics
/// If a slice is too short for its dimensions and stride.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_crate(
    backend: GemmBackend,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(
        ldc >= n && c.len() >= required_len(m, n, ldc),
        "sgemm_crate: C too short"
    );
    // SAFETY: C's tile is inside `c` (asserted) and `c` is borrowed mutably for the call.
    unsafe { sgemm_crate_raw(backend, m, n, k, a, lda, b, ldb, c.as_mut_ptr(), ldc) }
}

/// Single-threaded `C = A·B` through a crate backend on a raw output pointer (no GEMV routing),
/// for callers whose threads write disjoint tiles of one buffer.
///
/// # Safety
/// `c` must be valid for writes of the `m × n` tile at row stride `ldc ≥ n`, with no other
/// access to those elements during the call; `a` and `b` must hold `m×k` / `k×n` at their
/// strides (checked).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_crate_raw(
    backend: GemmBackend,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    assert!(a.len() >= required_len(m, k, lda) && b.len() >= required_len(k, n, ldb));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for r in 0..m {
            // SAFETY: row r of the tile is valid by the contract.
            std::slice::from_raw_parts_mut(c.add(r * ldc), n).fill(0.0);
        }
        return;
    }
    match backend {
        // SAFETY: bounds of a and b asserted above, c's tile valid by the contract.
        GemmBackend::Gemm => gemm_sliced(
            m,
            n,
            k,
            a,
            lda,
            b,
            ldb,
            c,
            ldc,
            false,
            gemm::Parallelism::None,
        ),
        // SAFETY: as above.
        GemmBackend::MatrixMultiply => matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            ldb as isize,
            1,
            0.0,
            c,
            ldc as isize,
            1,
        ),
    }
}

/// `C (+)= A·B` through the `gemm` crate in K slices of [`k_slice`] depth, each slice's
/// product added into C. The slices and their order depend only on `k`.
///
/// # Safety
/// `c` must be valid for reads and writes of the `m × n` tile at row stride `ldc`, with no
/// other access during the call; `a`, `b` must hold `m×k` / `k×n` at their strides.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_sliced(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    debug_assert!(a.len() >= required_len(m, k, lda) && b.len() >= required_len(k, n, ldb));
    let ks = k_slice(k);
    let mut k0 = 0;
    while k0 < k {
        let kc = ks.min(k - k0);
        // SAFETY: columns k0..k0+kc of A and rows k0..k0+kc of B lie inside `a` and `b`
        // (caller's contract), C's tile is valid by the contract. dst = alpha·dst + beta·A·B
        // with alpha = 1 and read_dst for every slice after the first (or all when
        // accumulating) gives C (+)= Σ slices.
        gemm::gemm(
            m,
            n,
            kc,
            c,
            1,
            ldc as isize,
            accumulate || k0 > 0,
            a.as_ptr().add(k0),
            1,
            lda as isize,
            b.as_ptr().add(k0 * ldb),
            1,
            ldb as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
        k0 += kc;
    }
}

/// Depth of the K slices the `gemm` backend ([`sgemm`] and the convolutions) cuts a product
/// into when `k` is at most [`K_SLICE_SPLIT`] (see [`k_slice`]).
pub const K_SLICE_SHORT: usize = 128;
/// Slice depth for `k` above [`K_SLICE_SPLIT`].
pub const K_SLICE_LONG: usize = 256;
/// Largest `k` sliced at [`K_SLICE_SHORT`].
pub const K_SLICE_SPLIT: usize = 576;

/// Depth of the equal K slices (all but the last exactly this deep) a `k`-deep product is
/// computed in, each slice's result added into C.
///
/// Why: the `gemm` crate accumulates up to 512 products per output in one register before
/// adding into C, and a float32 running sum of `k` products gains rounding error roughly in
/// proportion to `k` (each add rounds at the size of the sum so far). Slicing K into `s`-deep
/// pieces makes that roughly `k/s + s`. Measured on the full models (docs/correctness.md):
/// without slicing Inception-v3's error was 2.28× ONNX Runtime's; the early 3×3 convolutions
/// with K = 288 on 147×147 maps dominate it (their error is amplified by every later layer),
/// and slicing them at ≤ 128 brought the model to ~1.3×. Deeper slices for long K keep the
/// calls large: `gemm` loses throughput on shallow calls (measured 1x1 convs with K = 768 and
/// 2048: 128-deep slices cost 4–9%, 256-deep ones ~0), while short-K slicing cost ≤ 3% on the
/// Inception-v3 shapes and ~1.5% on the whole model at 1 thread.
pub fn k_slice(k: usize) -> usize {
    let target = if k <= K_SLICE_SPLIT {
        K_SLICE_SHORT
    } else {
        K_SLICE_LONG
    };
    if k == 0 {
        return 0;
    }
    // Equal slices: no short tail that adds a nearly empty call.
    k.div_ceil(k.div_ceil(target.min(k)))
}

/// `y[i] (+)= dot(A[i, ..k], x)` for `i < m` with `y[i]` at `y[i * ldy]`.
#[allow(clippy::too_many_arguments)]
pub fn gemv_rows(
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    x: &[f32],
    y: &mut [f32],
    ldy: usize,
    accumulate: bool,
    threads: usize,
) {
    assert!(a.len() >= required_len(m, k, lda) && x.len() >= k);
    assert!(y.len() >= required_len(m, 1, ldy));
    let level = simd_level();
    let one = |i: usize| dot(level, &a[i * lda..i * lda + k], &x[..k]);
    if threads > 1 && m * k >= 1 << 16 {
        let vals: Vec<f32> = (0..m).into_par_iter().map(one).collect();
        for (i, v) in vals.into_iter().enumerate() {
            y[i * ldy] = if accumulate { y[i * ldy] + v } else { v };
        }
    } else {
        for i in 0..m {
            let v = one(i);
            y[i * ldy] = if accumulate { y[i * ldy] + v } else { v };
        }
    }
}

/// Dot product with the given SIMD level (levels above the hardware's are clamped).
pub fn dot(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let level = level.min(super::cpu_features::detected_simd_level());
    #[cfg(target_arch = "x86_64")]
    {
        if level == SimdLevel::Avx512 {
            // SAFETY: AVX-512F availability checked by the clamp above.
            return unsafe { x86::dot_avx512(&a[..n], &b[..n]) };
        }
        if level == SimdLevel::Avx2 {
            // SAFETY: AVX2+FMA availability checked by the clamp above.
            return unsafe { x86::dot_avx2(&a[..n], &b[..n]) };
        }
    }
    let _ = level;
    dot_scalar(&a[..n], &b[..n])
}

/// Scalar dot product with 8 independent partial sums (the order the SIMD versions use).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let n8 = a.len() / 8 * 8;
    for i in (0..n8).step_by(8) {
        for l in 0..8 {
            acc[l] += a[i + l] * b[i + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in n8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `y += alpha · x` with the given SIMD level.
pub fn axpy(level: SimdLevel, alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let level = level.min(super::cpu_features::detected_simd_level());
    #[cfg(target_arch = "x86_64")]
    {
        if level == SimdLevel::Avx512 {
            // SAFETY: AVX-512F availability checked by the clamp above; lengths equalised.
            unsafe { x86::axpy_avx512(alpha, &x[..n], &mut y[..n]) };
            return;
        }
        if level == SimdLevel::Avx2 {
            // SAFETY: AVX2+FMA availability checked by the clamp above; lengths equalised.
            unsafe { x86::axpy_avx2(alpha, &x[..n], &mut y[..n]) };
            return;
        }
    }
    let _ = level;
    for (yv, xv) in y[..n].iter_mut().zip(&x[..n]) {
        *yv += alpha * *xv;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// Requires AVX-512F; `a.len() == b.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): i + 64 <= n / i + 16 <= n bound every unaligned load.
        while i + 64 <= n {
            for (u, accu) in acc.iter_mut().enumerate() {
                *accu = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * u)),
                    _mm512_loadu_ps(pb.add(i + 16 * u)),
                    *accu,
                );
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i)),
                _mm512_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 16;
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut total = _mm512_reduce_add_ps(s);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }

    /// # Safety
    /// Requires AVX2 and FMA; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (u, accu) in acc.iter_mut().enumerate() {
                *accu = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * u)),
                    _mm256_loadu_ps(pb.add(i + 8 * u)),
                    *accu,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut buf = [0.0f32; 8];
        _mm256_storeu_ps(buf.as_mut_ptr(), s);
        let mut total: f32 = buf.iter().sum();
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }

    /// # Safety
    /// Requires AVX-512F; `x.len() == y.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            let r = _mm512_fmadd_ps(va, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), r);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u32 << (n - i)).wrapping_sub(1) as __mmask16;
            let r = _mm512_fmadd_ps(
                va,
                _mm512_maskz_loadu_ps(mask, px.add(i)),
                _mm512_maskz_loadu_ps(mask, py.add(i)),
            );
            _mm512_mask_storeu_ps(py.add(i), mask, r);
        }
    }

    /// # Safety
    /// Requires AVX2 and FMA; `x.len() == y.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), r);
            i += 8;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{max_abs_diff, rand_vec};

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
    ) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    s += a[i * lda + p] as f64 * b[p * ldb + j] as f64;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn sgemm_matches_naive_all_backends_strides_threads() {
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (64, 49, 147),
            (17, 1, 300),
            (1, 33, 70),
            (1000, 1, 2048),
            (33, 65, 129),
            (3, 100, 0),
        ];
        for &(m, n, k) in &shapes {
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
            let a = rand_vec(m * lda, 1);
            let b = rand_vec(k.max(1) * ldb, 2);
            let want = naive(m, n, k, &a, lda, &b, ldb);
            for backend in GemmBackend::ALL {
                for threads in [1, 2] {
                    for accumulate in [false, true] {
                        let mut c = rand_vec(m * ldc, 3);
                        let before = c.clone();
                        sgemm(
                            backend, m, n, k, &a, lda, &b, ldb, &mut c, ldc, accumulate, threads,
                        );
                        let mut err = 0.0f64;
                        for i in 0..m {
                            for j in 0..n {
                                let base = if accumulate {
                                    before[i * ldc + j] as f64
                                } else {
                                    0.0
                                };
                                let d = (c[i * ldc + j] as f64 - base - want[i * n + j]).abs();
                                assert!(d.is_finite());
                                err = err.max(d);
                            }
                            // padding columns untouched
                            for j in n..ldc {
                                assert_eq!(c[i * ldc + j], before[i * ldc + j]);
                            }
                        }
                        let tol = 1e-5 * (k as f64 + 1.0).sqrt() * 4.0;
                        assert!(
                            err < tol,
                            "{backend:?} {m}x{n}x{k} t{threads} acc{accumulate}: {err}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn strided_gemm_handles_transposes() {
        // Y[2×5] = X[2×7] · Wᵀ with W stored [5×7] (ONNX Gemm transB=1), and the batch-1 FC
        // form yᵀ = W · xᵀ that goes to the GEMV kernel.
        let (bsz, inn, out) = (2, 7, 5);
        let x = rand_vec(bsz * inn, 8);
        let w = rand_vec(out * inn, 9);
        let mut want = vec![0.0f64; bsz * out];
        for i in 0..bsz {
            for j in 0..out {
                want[i * out + j] = (0..inn)
                    .map(|p| x[i * inn + p] as f64 * w[j * inn + p] as f64)
                    .sum();
            }
        }
        for backend in GemmBackend::ALL {
            for threads in [1, 2] {
                let mut y = vec![f32::NAN; bsz * out];
                let a = MatRef {
                    data: &x,
                    rs: inn,
                    cs: 1,
                };
                let bt = MatRef {
                    data: &w,
                    rs: 1,
                    cs: inn,
                };
                sgemm_strided(
                    backend, bsz, out, inn, a, bt, &mut y, out, 1, false, threads,
                );
                let err = y
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (*g as f64 - w).abs())
                    .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m });
                assert!(err < 1e-5, "{backend:?} t{threads}: {err}");
                // Batch 1 as yᵀ = W · xᵀ, with Cᵀ written column-wise (c_rs = 1).
                let mut y1 = vec![f32::NAN; out];
                let wa = MatRef {
                    data: &w,
                    rs: inn,
                    cs: 1,
                };
                let xt = MatRef {
                    data: &x[..inn],
                    rs: 1,
                    cs: 1,
                };
                sgemm_strided(backend, out, 1, inn, wa, xt, &mut y1, 1, 1, false, threads);
                let err = y1
                    .iter()
                    .zip(&want[..out])
                    .map(|(g, w)| (*g as f64 - w).abs())
                    .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m });
                assert!(err < 1e-5, "FC {backend:?} t{threads}: {err}");
                // Transposed output (C column-major).
                let mut yt = vec![f32::NAN; bsz * out];
                sgemm_strided(
                    backend, bsz, out, inn, a, bt, &mut yt, 1, bsz, false, threads,
                );
                for i in 0..bsz {
                    for j in 0..out {
                        assert!((yt[j * bsz + i] as f64 - want[i * out + j]).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn dot_and_axpy_every_level_match_scalar() {
        for n in [0, 1, 7, 16, 33, 100, 1031] {
            let a = rand_vec(n, 4);
            let b = rand_vec(n, 5);
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for level in SimdLevel::available() {
                let got = dot(level, &a, &b) as f64;
                assert!((got - want).abs() < 1e-4, "{level:?} n={n}");
                let mut y = b.clone();
                axpy(level, 0.75, &a, &mut y);
                let want_y: Vec<f32> = a.iter().zip(&b).map(|(x, y)| y + 0.75 * x).collect();
                assert!(max_abs_diff(&y, &want_y) < 1e-6, "{level:?} n={n}");
            }
        }
    }

    /// Both GEMM paths sum long K in slices: on positive data (where one float32 chain loses
    /// the most) their error against float64 stays well under one chain's, for the crate
    /// GEMM (m, n > 1) and the GEMV routes (m == 1 is the classifier at batch 1).
    #[test]
    fn long_k_error_well_below_one_accumulation_chain() {
        let k = 2048;
        for (m, n) in [(8, 24), (1, 40)] {
            let a: Vec<f32> = rand_vec(m * k, 3).into_iter().map(f32::abs).collect();
            let b: Vec<f32> = rand_vec(k * n, 4).into_iter().map(f32::abs).collect();
            let mut c = vec![0.0f32; m * n];
            sgemm(
                GemmBackend::Gemm,
                m,
                n,
                k,
                &a,
                k,
                &b,
                n,
                &mut c,
                n,
                false,
                1,
            );
            let (mut err, mut chain_err) = (0.0f64, 0.0f64);
            for i in 0..m {
                for j in 0..n {
                    let (mut s64, mut s32) = (0.0f64, 0.0f32);
                    for p in 0..k {
                        s64 += a[i * k + p] as f64 * b[p * n + j] as f64;
                        s32 = a[i * k + p].mul_add(b[p * n + j], s32);
                    }
                    err = err.max((c[i * n + j] as f64 - s64).abs() / s64);
                    chain_err = chain_err.max((s32 as f64 - s64).abs() / s64);
                }
            }
            assert!(
                err <= 0.2 * chain_err,
                "m {m} n {n}: error {err:e} vs one chain's {chain_err:e}"
            );
        }
    }
}
