//! The engine's own GEMM for convolutions: weights packed once at load time, the right-hand
//! side (im2col columns or 1×1 input) packed per call, and the conv epilogue (bias, residual,
//! activation) applied inside the micro-kernel's final store while the tile is in registers.
//!
//! Layouts (row-major logical matrices `A[m×k]`, `B[k×n]`, `C[m×n]`):
//! - [`PackedA`]: panels of [`MR`] rows; panel `p` is `k × MR` contiguous (`[k][MR]`), the last
//!   panel zero-padded. Built once per conv group from OIHW weights.
//! - packed B: panels of [`NR`] columns; panel `q` is `k × NR` contiguous, zero-padded, and
//!   made of three `k × SUB` sub-panels one after the other ([`packed_b_index`]). The conv
//!   code writes im2col rows straight into this layout ([`pack_b_segment`]).
//!
//! Blocking: K in the slices of `gemm::k_slice` (the crate path's, for the same rounding);
//! all rows of A (or [`MC`] when their K slice exceeds an L2 budget) are swept over one B
//! sub-panel while its `kc × 16` slice sits in L1. The AVX2 micro-kernel computes a `6 × 16`
//! tile (12 ymm accumulators, A packed with [`MR_AVX2`] = 6 rows per panel) and prefetches
//! the A panel, which streams from L2; the AVX-512 one an `8 × 48` tile from the three
//! sub-panels with 24 zmm accumulators (A packed with [`MR`] = 8); any other combination runs
//! a portable kernel over the same layouts (correct everywhere, slow).
//!
//! Status (2-core AMD EPYC, AVX2 only, 27 Nov): before the sub-panel layout (B panels read
//! with a 48-float stride) the AVX2 kernel took ~22% more CPU time than the `gemm` crate's
//! on Inception-v3 (`perf record` samples of `engine bench`); with it the two are at parity
//! within the noise of this shared machine (kernel samples 15.7 K vs 15.2 K; whole worker
//! thread, including im2col and packing, 24–27 K vs 25 K), so `super::conv` still defaults
//! to the `gemm` crate (`ENGINE_CONV_GEMM=packed` selects this one). The AVX-512 kernel could
//! not be run on this machine (no AVX-512): it is tested only where the CPU has AVX-512F.

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
/// Columns per B panel (the AVX-512 micro-tile width: three 16-float vectors).
pub const NR: usize = 48;
/// Columns per B sub-panel: a panel is three `k × SUB` sub-panels one after the other, so the
/// AVX2 kernel's `kc × 16` slice of B is contiguous (16 KiB at kc = 256: it stays in L1 while
/// the kernel sweeps every A panel of the row block).
pub const SUB: usize = 16;
/// Rows of A kept hot in L2 while sweeping B panels, when not all of them fit.
pub const MC: usize = 128;
/// L2 budget for the A rows swept over one B sub-panel (the machine measured has 512 KiB of
/// L2 per core; the rest holds packed B and the output tiles).
const A_BLOCK_BYTES: usize = 192 * 1024;

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

/// Index in packed B of logical element (`kk`, `j`): panel `j / NR`, sub-panel
/// `(j % NR) / SUB`, lane `j % SUB`.
#[inline]
pub fn packed_b_index(k: usize, kk: usize, j: usize) -> usize {
    let (q, jj) = (j / NR, j % NR);
    q * k * NR + (jj / SUB) * k * SUB + kk * SUB + jj % SUB
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

/// Writes one logical row `kk` (all `row.len()` columns) of B into the packed panels `out`,
/// zero-filling the lanes of the last panel past the end of the row.
#[inline]
pub fn pack_b_row(k: usize, kk: usize, row: &[f32], out: &mut [f32]) {
    pack_b_segment(k, kk, 0, row, out);
    let end = row.len();
    let padded = end.next_multiple_of(NR);
    let mut j = end;
    while j < padded {
        let len = (SUB - j % SUB).min(padded - j);
        let base = packed_b_index(k, kk, j);
        out[base..base + len].fill(0.0);
        j += len;
    }
}

/// Writes `seg` as columns `j0..j0 + seg.len()` of logical row `kk` of packed B (lanes outside
/// the segment are left as they are).
#[inline]
pub fn pack_b_segment(k: usize, kk: usize, j0: usize, seg: &[f32], out: &mut [f32]) {
    let mut done = 0;
    while done < seg.len() {
        let j = j0 + done;
        let len = (SUB - j % SUB).min(seg.len() - done);
        let base = packed_b_index(k, kk, j);
        if len == SUB {
            // Whole lanes: a fixed-size copy the compiler turns into two vector moves instead
            // of a memmove call.
            let dst: &mut [f32; SUB] = (&mut out[base..base + SUB]).try_into().expect("SUB");
            let src: &[f32; SUB] = seg[done..done + SUB].try_into().expect("SUB");
            *dst = *src;
        } else {
            out[base..base + len].copy_from_slice(&seg[done..done + len]);
        }
        done += len;
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
    #[cfg(target_arch = "x86_64")]
    let avx2_tiles = level >= SimdLevel::Avx2 && mr == MR_AVX2;
    #[cfg(not(target_arch = "x86_64"))]
    let avx2_tiles = false;
    // The same K slices as the crate GEMM path (accuracy: see `gemm::k_slice`).
    let kc_max = super::gemm::k_slice(k);
    // Rows of A per block: all of them when their K slice fits the L2 budget (each B
    // sub-panel is then read from memory once), else MC.
    let mc_panels = if rows * kc_max * 4 <= A_BLOCK_BYTES {
        npanels_a
    } else {
        MC / mr
    };
    let mut k0 = 0;
    while k0 < k {
        let kc = kc_max.min(k - k0);
        let first = k0 == 0;
        let last = k0 + kc == k;
        let mut pa0 = 0;
        while pa0 < npanels_a {
            let pa1 = (pa0 + mc_panels).min(npanels_a);
            for q in 0..npanels_b {
                let cols = NR.min(nb - q * NR);
                let qbase = q * k * NR;
                let tile_at = |p: usize, c0: usize, ncols: usize| {
                    let r0 = p * mr;
                    let nrows = mr.min(rows - r0);
                    let coff = r0 * ldc + q * NR + c0;
                    let tile = Tile {
                        nrows,
                        ncols,
                        ldc,
                        first,
                        last,
                        bias: epi.bias.map(|b| &b[r0..r0 + nrows]),
                        residual: epi.residual.map(|x| &x[coff..]),
                        act: in_kernel_act,
                    };
                    (&apan(p)[k0 * mr..(k0 + kc) * mr], coff, tile)
                };
                if avx2_tiles {
                    // One 16-column sub-panel at a time, swept over every A panel of the
                    // block while its `kc × 16` slice sits in L1.
                    for sp in 0..NR / SUB {
                        let c0 = sp * SUB;
                        if c0 >= cols {
                            break;
                        }
                        let bsub = &bp[qbase + sp * k * SUB + k0 * SUB..][..kc * SUB];
                        for p in pa0..pa1 {
                            let (ap, coff, tile) = tile_at(p, c0, SUB.min(cols - c0));
                            #[cfg(target_arch = "x86_64")]
                            if p + 1 < npanels_a {
                                prefetch_tile(
                                    c.add(coff + mr * ldc),
                                    tile.residual.map(|r| r.as_ptr().add(mr * ldc)),
                                    mr.min(rows - (p + 1) * mr),
                                    ldc,
                                );
                            }
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: AVX2+FMA present (level clamped to the detected level
                            // above); `ap` holds kc×MR_AVX2 floats and `bsub` kc×SUB (slices
                            // checked by indexing); the tile lies in `c`/`residual` by this
                            // function's contract.
                            avx2::kernel_6x16(kc, ap.as_ptr(), bsub.as_ptr(), c.add(coff), &tile);
                            #[cfg(not(target_arch = "x86_64"))]
                            let _ = (ap, bsub, coff, tile);
                        }
                    }
                } else {
                    let bpan = &bp[qbase + k0 * SUB..qbase + k * NR];
                    for p in pa0..pa1 {
                        let (ap, coff, tile) = tile_at(p, 0, cols);
                        micro_kernel(level, mr, kc, ap, bpan, k * SUB, c.add(coff), &tile);
                    }
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

/// Asks for the output (and residual) rows of the next tile down: the sweep visits C one
/// 16-column slice of `nrows` rows at a time, rows `ldc` floats apart, a pattern the hardware
/// prefetchers do not follow, so without this every tile's first store and residual load
/// waits on memory (1×1 convs with a residual and short K measured ~1.5× slower).
///
/// # Safety
/// None beyond computing the addresses: prefetches never fault. `wrapping_add` keeps the
/// pointer arithmetic defined even where a row would lie past the allocation.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn prefetch_tile(c: *mut f32, residual: Option<*const f32>, nrows: usize, ldc: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for r in 0..nrows {
        let row = c.wrapping_add(r * ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(60));
        if let Some(res) = residual {
            let rrow = res.wrapping_add(r * ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(rrow);
            _mm_prefetch::<_MM_HINT_T0>(rrow.wrapping_add(60));
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
#[allow(clippy::too_many_arguments)]
/// One `mr × NR` tile for the AVX-512 and portable kernels. `bp` starts at the slice's first
/// row in sub-panel 0 of the B panel; sub-panel `s` starts `s · bstride` floats later.
///
/// # Safety
/// `c` must be valid for the `t.nrows × t.ncols` tile at stride `t.ldc` (see `gemm_packed_raw`).
unsafe fn micro_kernel(
    level: SimdLevel,
    mr: usize,
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    bstride: usize,
    c: *mut f32,
    t: &Tile<'_>,
) {
    assert!(ap.len() >= kc * mr && bp.len() >= (NR / SUB - 1) * bstride + kc * SUB);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx512 && mr == MR {
        // SAFETY: AVX-512F is present (level clamped to the detected level by the caller);
        // the asserted lengths cover kc×MR floats of A and kc rows of all three B
        // sub-panels; c and residual cover nrows rows of ncols at stride ldc.
        unsafe { avx512::kernel_8x48(kc, ap.as_ptr(), bp.as_ptr(), bstride, c, t) };
        return;
    }
    let _ = level;
    // SAFETY: forwarded contract of this function.
    unsafe { kernel_portable(mr, kc, ap, bp, bstride, c, t) };
}

/// Portable micro-kernel (the scalar level, and the reference the SIMD ones are tested against).
///
/// # Safety
/// `c` must be valid for the `t.nrows × t.ncols` tile at stride `t.ldc`.
unsafe fn kernel_portable(
    mr: usize,
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    bstride: usize,
    c: *mut f32,
    t: &Tile<'_>,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..kc {
        for sp in 0..NR / SUB {
            let bro = &bp[sp * bstride + kk * SUB..sp * bstride + kk * SUB + SUB];
            for r in 0..mr {
                let av = ap[kk * mr + r];
                for (x, b) in acc[r][sp * SUB..(sp + 1) * SUB].iter_mut().zip(bro) {
                    *x += av * b;
                }
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
    use super::{Tile, MR_AVX2, SUB};
    use crate::ir::Activation;
    use std::arch::x86_64::*;

    /// Tile computed in registers: 6 rows × 16 columns = 12 ymm accumulators, plus two B
    /// vectors and one broadcast (15 of 16 registers; 4×24 needs all 16 and LLVM then spills
    /// an accumulator inside the k loop, which halves the speed).
    const MR: usize = MR_AVX2;
    const SR: usize = MR_AVX2;
    const SC: usize = 16;
    const SV: usize = SC / 8;

    /// One 6×16 tile: `kc` steps of two B vectors times six broadcast A values.
    ///
    /// # Safety
    /// Requires AVX2 and FMA. `ap` points to `kc·MR_AVX2` floats (an A panel's K slice), `bp`
    /// to `kc·SUB` (a B sub-panel's K slice); `c` (and `t.residual`) cover `t.nrows ≤ 6` rows
    /// of `t.ncols ≤ 16` columns at stride `t.ldc`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16(
        kc: usize,
        ap: *const f32,
        bp: *const f32,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        let mut acc = [[_mm256_setzero_ps(); SV]; SR];
        let mut a = ap;
        let mut b = bp;
        for kk in 0..kc {
            // The A panel streams from L2 (the B sub-panel stays in L1): fetch 8 steps ahead.
            // Prefetches are hints and never fault, so running past the panel is harmless.
            if kk % 2 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(8 * MR) as *const i8);
            }
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r));
                accr[0] = _mm256_fmadd_ps(av, b0, accr[0]);
                accr[1] = _mm256_fmadd_ps(av, b1, accr[1]);
            }
            a = a.add(MR);
            b = b.add(SUB);
        }
        let zero = _mm256_setzero_ps();
        let (lo, hi) = match t.act {
            Activation::Clip(l, h) => (_mm256_set1_ps(l), _mm256_set1_ps(h)),
            _ => (zero, zero),
        };
        for (r, accr) in acc.iter().enumerate().take(t.nrows) {
            let crow = c.add(r * t.ldc);
            let bias = _mm256_set1_ps(t.bias.map_or(0.0, |bb| bb[r]));
            for (v, &accv) in accr.iter().enumerate() {
                let j = v * 8;
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
    use super::{Tile, MR, NR, SUB};
    use crate::ir::Activation;
    use std::arch::x86_64::*;

    const NV: usize = NR / SUB;

    /// # Safety
    /// Requires AVX-512F. `ap` points to `kc·MR` floats; `bp` to `kc·SUB` floats of sub-panel
    /// 0, with sub-panels 1 and 2 (as long) `bstride` and `2·bstride` floats later; `c` (and
    /// `t.residual`) cover `t.nrows` rows of `t.ncols ≤ NR` columns at stride `t.ldc`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_8x48(
        kc: usize,
        ap: *const f32,
        bp: *const f32,
        bstride: usize,
        c: *mut f32,
        t: &Tile<'_>,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let mut a = ap;
        let mut b = bp;
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(bstride));
            let b2 = _mm512_loadu_ps(b.add(2 * bstride));
            for (r, accr) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r));
                accr[0] = _mm512_fmadd_ps(av, b0, accr[0]);
                accr[1] = _mm512_fmadd_ps(av, b1, accr[1]);
                accr[2] = _mm512_fmadd_ps(av, b2, accr[2]);
            }
            a = a.add(MR);
            b = b.add(SUB);
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
