//! The engine's own GEMM for convolutions: weights packed once at load time, the right-hand
//! side (im2col columns or 1×1 input) packed per call, and the conv epilogue (bias, residual,
//! activation) applied inside the micro-kernel's final store while the tile is in registers.
//!
//! Layouts (row-major logical matrices `A[m×k]`, `B[k×n]`, `C[m×n]`):
//! - [`PackedA`]: panels of [`MR`] rows; panel `p` is `k × MR` contiguous (`[k][MR]`), the last
//!   panel zero-padded. Built once per conv group from OIHW weights.
//! - packed B: panels of [`NR`] columns; panel `q` is `k × NR` contiguous, zero-padded. The
//!   im2col routine writes this layout directly (see [`super::im2col`]).
//!
//! Blocking: K in [`KC`]-deep slices; up to [`MC`] rows of A (`MC×KC`, 128 KiB) stay in L2
//! while B panels stream through. The AVX-512 micro-kernel computes an `8 × 48` tile with 24
//! zmm accumulators (A packed with [`MR`] = 8 rows per panel); the AVX2 one a `6 × 48` tile as
//! three `6 × 16` register tiles (A packed with [`MR_AVX2`] = 6); any other combination runs a
//! portable kernel over the same layouts (correct everywhere, slow).
//!
//! Status (measured on a 2-core AMD EPYC with AVX2 only, see benches/benches/kernels.rs): the
//! AVX2 kernel reaches ~65–70 GFLOP/s on ResNet-50 1×1 convs, ~80% of the `gemm` crate's
//! ~80, so `super::conv` defaults to the `gemm` crate. The AVX-512 kernel could not be run on
//! this machine (no AVX-512): it is tested only where the CPU has AVX-512F.

use super::cpu_features::{detected_simd_level, simd_level, SimdLevel};
use super::elementwise::activation_inplace;
use crate::ir::Activation;

/// Rows per A panel (micro-tile height) for the AVX-512 and portable kernels.
pub const MR: usize = 8;
/// Rows per A panel for the AVX2 kernel (6×16 tiles: 12 of the 16 ymm registers).
pub const MR_AVX2: usize = 6;

/// The panel height the kernels for `level` want.
pub fn mr_for(level: SimdLevel) -> usize {
    if level == SimdLevel::Avx2 {
        MR_AVX2
    } else {
        MR
    }
}
/// Columns per B panel (micro-tile width: three 16-float AVX-512 vectors).
pub const NR: usize = 48;
/// Depth of one K slice.
pub const KC: usize = 256;
/// Rows of A kept hot in L2 while sweeping B panels.
pub const MC: usize = 128;

/// A left-hand matrix packed into [`MR`]-row panels (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    /// Rows per panel ([`MR`] or [`MR_AVX2`]), fixed at packing for the SIMD level then.
    pub mr: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the row-major `m×k` matrix `a` (row stride `lda`).
    ///
    /// # Panics
    /// If `a` is too short for `m`, `k`, `lda`.
    pub fn pack(m: usize, k: usize, a: &[f32], lda: usize) -> PackedA {
        PackedA::pack_with_mr(mr_for(simd_level()), m, k, a, lda)
    }

    /// Packs with an explicit panel height in `1..=MR`. Any height runs at any level; the SIMD
    /// kernels need [`MR`] (AVX-512) or [`MR_AVX2`] (AVX2), others use the portable kernel.
    ///
    /// # Panics
    /// If `a` is too short or `mr` is not in `1..=MR`.
    pub fn pack_with_mr(mr: usize, m: usize, k: usize, a: &[f32], lda: usize) -> PackedA {
        assert!((1..=MR).contains(&mr), "panel height must be 1..=MR");
        assert!(a.len() >= super::gemm::required_len(m, k, lda));
        let panels = m.div_ceil(mr);
        let mut data = vec![0.0f32; panels * k * mr];
        for p in 0..panels {
            let dst = &mut data[p * k * mr..(p + 1) * k * mr];
            for r in 0..mr.min(m - p * mr) {
                let row = &a[(p * mr + r) * lda..(p * mr + r) * lda + k];
                for (kk, v) in row.iter().enumerate() {
                    dst[kk * mr + r] = *v;
                }
            }
        }
        PackedA { m, k, mr, data }
    }

    /// The packed values (`ceil(m/MR) · k · MR` floats).
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

/// Floats needed to hold `nb` columns of a `k`-row B in packed panels.
pub fn packed_b_len(k: usize, nb: usize) -> usize {
    k * nb.next_multiple_of(NR)
}

/// Packs columns `0..nb` of the row-major `k×nb` matrix `b` (row stride `ldb`) into `out`.
///
/// # Panics
/// If `out` is shorter than [`packed_b_len`] or `b` too short.
pub fn pack_b(k: usize, nb: usize, b: &[f32], ldb: usize, out: &mut [f32]) {
    assert!(b.len() >= super::gemm::required_len(k, nb, ldb));
    assert!(out.len() >= packed_b_len(k, nb));
    for kk in 0..k {
        pack_b_row(k, kk, &b[kk * ldb..kk * ldb + nb], out);
    }
}

/// Writes one logical row `kk` (all `row.len()` columns) of B into the packed panels `out`.
#[inline]
pub fn pack_b_row(k: usize, kk: usize, row: &[f32], out: &mut [f32]) {
    for (q, chunk) in row.chunks(NR).enumerate() {
        let base = q * k * NR + kk * NR;
        out[base..base + chunk.len()].copy_from_slice(chunk);
        out[base + chunk.len()..base + NR].fill(0.0);
    }
}

/// What happens to each output value at the final store: `act(acc + bias[row] + residual)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per row of C (output channel), indexed from the first row of the call.
    pub bias: Option<&'a [f32]>,
    /// Same layout as C (row stride `ldc`), added before the activation.
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

/// `C[rows×nb] = A[row0.., ..] · Bpacked` followed by the epilogue.
///
/// `row0` must be a multiple of `a.mr` (a panel boundary); `rows` rows of C are written,
/// `c` is row-major with stride `ldc`, `bp` holds `nb` packed columns of depth `a.k`.
///
/// # Panics
/// If any slice is too short for the requested tile or `row0` is not panel-aligned.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    a: &PackedA,
    row0: usize,
    rows: usize,
    bp: &[f32],
    nb: usize,
    c: &mut [f32],
    ldc: usize,
    epi: Epilogue<'_>,
) {
    gemm_packed_with(simd_level(), a, row0, rows, bp, nb, c, ldc, epi)
}

/// [`gemm_packed`] at a forced SIMD level.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_with(
    level: SimdLevel,
    a: &PackedA,
    row0: usize,
    rows: usize,
    bp: &[f32],
    nb: usize,
    c: &mut [f32],
    ldc: usize,
    epi: Epilogue<'_>,
) {
    let k = a.k;
    assert!(
        row0.is_multiple_of(a.mr) && row0 + rows <= a.m,
        "gemm_packed: bad row range"
    );
    assert!(
        bp.len() >= packed_b_len(k, nb),
        "gemm_packed: packed B too short"
    );
    assert!(
        ldc >= nb && c.len() >= super::gemm::required_len(rows, nb, ldc),
        "gemm_packed: C too short"
    );
    if let Some(b) = epi.bias {
        assert!(b.len() >= rows, "gemm_packed: bias too short");
    }
    if let Some(r) = epi.residual {
        assert!(
            r.len() >= super::gemm::required_len(rows, nb, ldc),
            "gemm_packed: residual too short"
        );
    }
    // SAFETY: the asserts above prove the tile (rows × nb at stride ldc) lies inside `c` and
    // `residual`, and `c` is borrowed mutably for the whole call.
    unsafe { gemm_packed_raw(level, a, row0, rows, bp, nb, c.as_mut_ptr(), ldc, epi) }
}

/// [`gemm_packed_with`] on a raw output pointer, for callers whose threads write disjoint tiles
/// of one output buffer (no `&mut` slices may overlap, so they cannot use the slice form).
///
/// # Safety
/// `c` must be valid for reads and writes of the `rows × nb` tile at row stride `ldc`, no other
/// thread may access those elements during the call, `epi.residual` (if any) must cover the
/// same tile, `epi.bias` at least `rows` values, `bp` at least `packed_b_len(a.k, nb)` floats,
/// and `row0` must be a multiple of `a.mr` with `row0 + rows <= a.m`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_packed_raw(
    level: SimdLevel,
    a: &PackedA,
    row0: usize,
    rows: usize,
    bp: &[f32],
    nb: usize,
    c: *mut f32,
    ldc: usize,
    epi: Epilogue<'_>,
) {
    let k = a.k;
    if rows == 0 || nb == 0 {
        return;
    }
    let level = level.min(detected_simd_level());
    // Activations the AVX-512 store handles in registers; the others run as a pass afterwards.
    let (in_kernel_act, post_act) = match epi.act {
        Activation::None | Activation::Relu | Activation::Clip(..) => (epi.act, Activation::None),
        other => (Activation::None, other),
    };
    if k == 0 {
        for r in 0..rows {
            // SAFETY: row r of the tile is inside `c` by the function's contract.
            let row = std::slice::from_raw_parts_mut(c.add(r * ldc), nb);
            row.fill(0.0);
            let res = epi.residual.map(|x| &x[r * ldc..r * ldc + nb]);
            super::elementwise::bias_residual_activation(
                row,
                epi.bias.map_or(0.0, |b| b[r]),
                res,
                epi.act,
            );
        }
        return;
    }
    let mr = a.mr;
    let panel0 = row0 / mr;
    let apan = |p: usize| &a.data[(panel0 + p) * k * mr..(panel0 + p + 1) * k * mr];
    let npanels_a = rows.div_ceil(mr);
    let npanels_b = nb.div_ceil(NR);
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let first = k0 == 0;
        let last = k0 + kc == k;
        let mut pa0 = 0;
        while pa0 < npanels_a {
            let pa1 = (pa0 + MC / mr).min(npanels_a);
            for q in 0..npanels_b {
                let cols = NR.min(nb - q * NR);
                let bpan = &bp[q * k * NR + k0 * NR..q * k * NR + (k0 + kc) * NR];
                for p in pa0..pa1 {
                    let r0 = p * mr;
                    let nrows = mr.min(rows - r0);
                    let ap = &apan(p)[k0 * mr..(k0 + kc) * mr];
                    let coff = r0 * ldc + q * NR;
                    let tile = Tile {
                        nrows,
                        ncols: cols,
                        ldc,
                        first,
                        last,
                        bias: epi.bias.map(|b| &b[r0..r0 + nrows]),
                        residual: epi.residual.map(|x| &x[coff..]),
                        act: in_kernel_act,
                    };
                    micro_kernel(level, mr, kc, ap, bpan, c.add(coff), &tile);
                }
            }
            pa0 = pa1;
        }
        k0 += kc;
    }
    if post_act != Activation::None {
        for r in 0..rows {
            // SAFETY: row r of the tile is inside `c` by the function's contract.
            activation_inplace(std::slice::from_raw_parts_mut(c.add(r * ldc), nb), post_act);
        }
    }
}

/// One micro-tile's store parameters.
struct Tile<'a> {
    nrows: usize,
    ncols: usize,
    ldc: usize,
    first: bool,
    last: bool,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    act: Activation,
}

#[inline]
/// # Safety
/// `c` must be valid for the `t.nrows × t.ncols` tile at stride `t.ldc` (see `gemm_packed_raw`).
unsafe fn micro_kernel(
    level: SimdLevel,
    mr: usize,
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    c: *mut f32,
    t: &Tile<'_>,
) {
    debug_assert!(ap.len() >= kc * mr && bp.len() >= kc * NR);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx512 && mr == MR {
        // SAFETY: AVX-512F is present (level clamped to the detected level by the caller);
        // the debug-asserted lengths are guaranteed by gemm_packed_with's asserts: ap holds
        // kc×MR, bp kc×NR, c and residual cover nrows rows of ncols at stride ldc.
        unsafe { avx512::kernel_8x48(kc, ap.as_ptr(), bp.as_ptr(), c, t) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 && mr == MR_AVX2 {
        // SAFETY: AVX2+FMA present (level clamped by the caller; the AVX-512 level implies
        // both); same bounds as above with panels of MR_AVX2 rows.
        unsafe { avx2::kernel_6x48(kc, ap.as_ptr(), bp.as_ptr(), c, t) };
        return;
    }
    let _ = level;
    // SAFETY: forwarded contract of this function.
    unsafe { kernel_portable(mr, kc, ap, bp, c, t) };
}

/// Portable micro-kernel (scalar/AVX2 levels and the reference the AVX-512 one is tested against).
///
/// # Safety
/// `c` must be valid for the `t.nrows × t.ncols` tile at stride `t.ldc`.
unsafe fn kernel_portable(mr: usize, kc: usize, ap: &[f32], bp: &[f32], c: *mut f32, t: &Tile<'_>) {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..kc {
        let bro = &bp[kk * NR..kk * NR + NR];
        for r in 0..mr {
            let av = ap[kk * mr + r];
            for (x, b) in acc[r].iter_mut().zip(bro) {
                *x += av * b;
            }
        }
    }
    for (r, accr) in acc.iter().enumerate().take(t.nrows) {
        for (j, &accv) in accr.iter().enumerate().take(t.ncols) {
            let idx = r * t.ldc + j;
            // SAFETY: (r, j) is inside the tile by the loop bounds and the contract.
            let cv = c.add(idx);
            let mut v = if t.first { accv } else { *cv + accv };
            if t.last {
                v += t.bias.map_or(0.0, |b| b[r]) + t.residual.map_or(0.0, |x| x[idx]);
                v = t.act.apply(v);
            }
            *cv = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, MR_AVX2, NR};
    use crate::ir::Activation;
    use std::arch::x86_64::*;

    /// Sub-tile computed in registers: 6 rows × 16 columns = 12 ymm accumulators, plus two B
    /// vectors and one broadcast (15 of 16 registers; 4×24 needs all 16 and LLVM then spills
    /// an accumulator inside the k loop, which halves the speed).
    const MR: usize = MR_AVX2;
    const SR: usize = MR_AVX2;
    const SC: usize = 16;
    const SV: usize = SC / 8;

    /// The 6×48 tile as three 6×16 sub-tiles (16 ymm registers cannot hold 6×48).
    ///
    /// # Safety
    /// Requires AVX2 and FMA. `ap` points to `kc·MR_AVX2` floats, `bp` to `kc·NR`; `c` (and
    /// `t.residual`) cover `t.nrows` rows of `t.ncols ≤ NR` columns at stride `t.ldc`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x48(
        kc: usize,
        ap: *const f32,
        bp: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        for ch in 0..NR / SC {
            let c0 = ch * SC;
            if c0 >= t.ncols {
                break;
            }
            sub_tile(kc, ap, bp.add(c0), c, t, 0, c0);
        }
    }

    /// # Safety
    /// Requires AVX2 and FMA; `ap`/`bp` point into the packed panels at the sub-tile's first
    /// row/column (panel strides MR and NR per k); `c` as in `kernel_6x48`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn sub_tile(
        kc: usize,
        ap: *const f32,
        bp: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
        r0: usize,
        c0: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); SV]; SR];
        let mut a = ap;
        let mut b = bp;
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r));
                accr[0] = _mm256_fmadd_ps(av, b0, accr[0]);
                accr[1] = _mm256_fmadd_ps(av, b1, accr[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let zero = _mm256_setzero_ps();
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (_mm256_set1_ps(l), _mm256_set1_ps(h)),
            _ => (zero, zero),
        };
        for (ri, accr) in acc.iter().enumerate() {
            let r = r0 + ri;
            if r >= t.nrows {
                break;
            }
            let crow = c.add(r * t.ldc);
            let bias = _mm256_set1_ps(t.bias.map_or(0.0, |bb| bb[r]));
            for (v, &accv) in accr.iter().enumerate() {
                let j = c0 + v * 8;
                if j >= t.ncols {
                    break;
                }
                let n = (t.ncols - j).min(8);
                // Partial vectors go through a stack buffer so no lane outside the tile is
                // read or written.
                let mut tmp = [0.0f32; 8];
                let load = |p: *const f32| -> __m256 {
                    if n == 8 {
                        _mm256_loadu_ps(p)
                    } else {
                        let mut buf = [0.0f32; 8];
                        std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
                        _mm256_loadu_ps(buf.as_ptr())
                    }
                };
                let mut x = accv;
                if !t.first {
                    x = _mm256_add_ps(x, load(crow.add(j)));
                }
                if t.last {
                    x = _mm256_add_ps(x, bias);
                    if let Some(res) = t.residual {
                        x = _mm256_add_ps(x, load(res.as_ptr().add(r * t.ldc + j)));
                    }
                    x = match t.act {
                        Activation::Relu => _mm256_max_ps(zero, x), // NaN in x passes through
                        Activation::Clip(..) => _mm256_min_ps(_mm256_max_ps(x, lo), hi),
                        _ => x,
                    };
                }
                if n == 8 {
                    _mm256_storeu_ps(crow.add(j), x);
                } else {
                    _mm256_storeu_ps(tmp.as_mut_ptr(), x);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), crow.add(j), n);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, MR, NR};
    use crate::ir::Activation;
    use std::arch::x86_64::*;

    const NV: usize = NR / 16;

    /// # Safety
    /// Requires AVX-512F. `ap` points to `kc·MR` floats, `bp` to `kc·NR`; `c` (and
    /// `t.residual`) cover `t.nrows` rows of `t.ncols ≤ NR` columns at stride `t.ldc`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x48(
        kc: usize,
        ap: *const f32,
        bp: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let mut a = ap;
        let mut b = bp;
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            let b2 = _mm512_loadu_ps(b.add(32));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r));
                accr[0] = _mm512_fmadd_ps(av, b0, accr[0]);
                accr[1] = _mm512_fmadd_ps(av, b1, accr[1]);
                accr[2] = _mm512_fmadd_ps(av, b2, accr[2]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let zero = _mm512_setzero_ps();
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (_mm512_set1_ps(l), _mm512_set1_ps(h)),
            _ => (zero, zero),
        };
        for (r, accr) in acc.iter().enumerate().take(t.nrows) {
            let crow = c.add(r * t.ldc);
            let bias = _mm512_set1_ps(t.bias.map_or(0.0, |bb| bb[r]));
            for (v, &accv) in accr.iter().enumerate() {
                let j = v * 16;
                if j >= t.ncols {
                    break;
                }
                let rem = t.ncols - j;
                let mask: __mmask16 = if rem >= 16 {
                    0xffff
                } else {
                    ((1u32 << rem) - 1) as __mmask16
                };
                let mut x = accv;
                if !t.first {
                    x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, crow.add(j)));
                }
                if t.last {
                    x = _mm512_add_ps(x, bias);
                    if let Some(res) = t.residual {
                        x = _mm512_add_ps(
                            x,
                            _mm512_maskz_loadu_ps(mask, res.as_ptr().add(r * t.ldc + j)),
                        );
                    }
                    x = match t.act {
                        Activation::Relu => _mm512_max_ps(zero, x), // NaN in x passes through
                        Activation::Clip(..) => _mm512_min_ps(_mm512_max_ps(x, lo), hi),
                        _ => x,
                    };
                }
                _mm512_mask_storeu_ps(crow.add(j), mask, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{max_abs_diff, rand_vec};

    #[test]
    fn packed_gemm_matches_naive_with_epilogue_every_level() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 48, 128),
            (13, 50, 300),
            (64, 97, 129),
            (17, 5, 3),
            (24, 200, 257),
        ] {
            let lda = k + 1;
            let ldc = n + 3;
            let a = rand_vec(m * lda, 1);
            let b = rand_vec(k * n, 2);
            let bias = rand_vec(m, 3);
            let res = rand_vec(m * ldc, 4);
            for mr in [MR, MR_AVX2, 3] {
                let pa = PackedA::pack_with_mr(mr, m, k, &a, lda);
                let mut bp = vec![f32::NAN; packed_b_len(k, n)];
                pack_b(k, n, &b, n, &mut bp);
                for act in [
                    Activation::None,
                    Activation::Relu,
                    Activation::Clip(-0.5, 0.5),
                    Activation::LeakyRelu(0.2),
                ] {
                    for with_res in [false, true] {
                        // Rows from panel 0 and, when there are several panels, from panel 1 on.
                        for row0 in [0, mr].into_iter().filter(|r| *r < m) {
                            let rows = m - row0;
                            let mut want = vec![0.0f32; rows * ldc];
                            for i in 0..rows {
                                for j in 0..n {
                                    let mut s = 0.0f64;
                                    for p in 0..k {
                                        s += a[(row0 + i) * lda + p] as f64 * b[p * n + j] as f64;
                                    }
                                    let r = if with_res {
                                        res[i * ldc + j] as f64
                                    } else {
                                        0.0
                                    };
                                    want[i * ldc + j] =
                                        act.apply((s + bias[row0 + i] as f64 + r) as f32);
                                }
                            }
                            for level in SimdLevel::available() {
                                let mut c = vec![0.0f32; rows * ldc];
                                let epi = Epilogue {
                                    bias: Some(&bias[row0..]),
                                    residual: if with_res { Some(&res[..]) } else { None },
                                    act,
                                };
                                gemm_packed_with(level, &pa, row0, rows, &bp, n, &mut c, ldc, epi);
                                let err = max_abs_diff(&c, &want);
                                assert!(
                                err < 1e-4,
                                "{m}x{n}x{k} mr{mr} {act:?} res{with_res} row0 {row0} {level:?}: {err}"
                            );
                            }
                        }
                    }
                }
            }
        }
    }
}
