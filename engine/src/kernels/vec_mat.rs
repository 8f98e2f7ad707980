//! `y (+)= x · B` for one row `x` (`k` values) and a row-major `k × n` matrix `B`: the
//! classifier (ONNX `Gemm`) of a batch of one.
//!
//! Why not the crate GEMM: with one row there is nothing to reuse, and the time is that of
//! streaming `B` (8 MiB for ResNet-50's 2048 → 1000 layer) once. Here each task takes one K
//! slice of `B`'s rows, a contiguous run of memory read front to back, into its own partial
//! sums; the partials are then added in slice order.

use super::cpu_features::{detected_simd_level, SimdLevel};
use super::elementwise::multiversion;
use super::gemm::k_slice;
use rayon::prelude::*;

/// Scratch floats [`vec_mat`] needs: one partial row of `n` sums per K slice.
pub fn vec_mat_scratch_len(k: usize, n: usize) -> usize {
    k.div_ceil(k_slice(k).max(1)) * n
}

/// `y = x·B` (or `y += x·B` when `accumulate`) with `x` of `k` floats, `B` row-major `k × n`
/// and `y` of `n` floats. K is summed in the slices of [`k_slice`] (each slice's sum added to
/// the earlier ones in order, the blocked summation of the GEMM paths), so the result does not
/// depend on the thread count.
///
/// # Panics
/// If `b` has fewer than `k·n` floats, `y` fewer than `n` or `scratch` fewer than
/// [`vec_mat_scratch_len`].
pub fn vec_mat(
    level: SimdLevel,
    x: &[f32],
    b: &[f32],
    n: usize,
    y: &mut [f32],
    accumulate: bool,
    scratch: &mut [f32],
) {
    let k = x.len();
    assert!(b.len() >= k * n && y.len() >= n, "vec_mat: slice too short");
    assert!(
        scratch.len() >= vec_mat_scratch_len(k, n),
        "vec_mat: scratch too short"
    );
    if n == 0 {
        return;
    }
    let slice = k_slice(k).max(1);
    let parts = &mut scratch[..vec_mat_scratch_len(k, n)];
    parts
        .par_chunks_mut(n)
        .zip(x.par_chunks(slice))
        .enumerate()
        .for_each(|(s, (part, xs))| slice_sums(level, xs, &b[s * slice * n..], n, part));
    let y = &mut y[..n];
    if k == 0 {
        // The product is zero.
        if !accumulate {
            y.fill(0.0);
        }
        return;
    }
    add_partials(level, y, parts, n, accumulate);
}

multiversion!(
    /// `part = xs · B[rows of this slice]`, compiled per SIMD level (no FMA contraction in
    /// Rust, so every level computes the same values).
    pub fn slice_sums(xs: &[f32], b: &[f32], n: usize, part: &mut [f32]) => slice_sums_body
);

#[inline(always)]
fn slice_sums_body(xs: &[f32], b: &[f32], n: usize, part: &mut [f32]) {
    part.fill(0.0);
    for (row, &xv) in b.chunks_exact(n).zip(xs) {
        for (p, &bv) in part.iter_mut().zip(row) {
            *p += xv * bv;
        }
    }
}

multiversion!(
    /// `y (+)= ((p0 + p1) + p2) + ..` over the partial rows in `parts`.
    pub fn add_partials(y: &mut [f32], parts: &[f32], n: usize, accumulate: bool) => add_partials_body
);

#[inline(always)]
fn add_partials_body(y: &mut [f32], parts: &[f32], n: usize, accumulate: bool) {
    // Columns in blocks that stay in L1 while every partial row is added.
    const BLOCK: usize = 256;
    let mut total = [0.0f32; BLOCK];
    let mut c0 = 0;
    while c0 < n {
        let w = BLOCK.min(n - c0);
        let t = &mut total[..w];
        for (s, part) in parts.chunks_exact(n).enumerate() {
            let p = &part[c0..c0 + w];
            if s == 0 {
                t.copy_from_slice(p);
            } else {
                for (tv, &pv) in t.iter_mut().zip(p) {
                    *tv += pv;
                }
            }
        }
        let yc = &mut y[c0..c0 + w];
        if accumulate {
            for (o, &tv) in yc.iter_mut().zip(t.iter()) {
                *o += tv;
            }
        } else {
            yc.copy_from_slice(t);
        }
        c0 += w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{rand_vec, with_threads};

    #[test]
    fn matches_f64_reference_every_level_and_thread_count() {
        // K with one slice, several equal slices; n with a ragged last chunk and under one.
        for (k, n) in [(64, 10), (2048, 1000), (300, 129), (1, 3), (0, 4)] {
            let x = rand_vec(k, 1);
            let b = rand_vec(k * n, 2);
            let bias = rand_vec(n, 3);
            let want: Vec<f64> = (0..n)
                .map(|j| {
                    bias[j] as f64
                        + (0..k)
                            .map(|kk| x[kk] as f64 * b[kk * n + j] as f64)
                            .sum::<f64>()
                })
                .collect();
            let tol = 1e-6 * (k as f64).sqrt() * 4.0 + 1e-6;
            let mut first: Option<Vec<f32>> = None;
            for level in SimdLevel::available() {
                for threads in [1, 2, 3] {
                    let mut y = bias.clone();
                    let mut scratch = vec![f32::NAN; vec_mat_scratch_len(k, n)];
                    with_threads(threads, || {
                        vec_mat(level, &x, &b, n, &mut y, true, &mut scratch)
                    });
                    for (j, (&got, &w)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (got as f64 - w).abs() <= tol * (1.0 + w.abs()),
                            "k {k} n {n} col {j}: {got} vs {w}"
                        );
                    }
                    match &first {
                        None => first = Some(y),
                        Some(f) => assert_eq!(f, &y, "k {k} n {n} {level:?} t{threads}"),
                    }
                    // Overwrite mode: the same sums without the bias.
                    let mut z = vec![f32::NAN; n];
                    with_threads(threads, || {
                        vec_mat(level, &x, &b, n, &mut z, false, &mut scratch)
                    });
                    for (j, &v) in z.iter().enumerate() {
                        let w = want[j] - bias[j] as f64;
                        assert!((v as f64 - w).abs() <= tol * (1.0 + w.abs()), "col {j}");
                    }
                }
            }
        }
    }
}
