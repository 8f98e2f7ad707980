//! Separable 2-D max / average pooling (NCHW), the fast path of [`super::pool::pool`].
//!
//! A window reduction over `kh × kw` taps is done in two passes per `(n, c)` plane:
//! 1. horizontal: every input row `iy` is reduced over the `kw` column taps into a row `h[iy]`
//!    of `ow` values (`h[iy][ox] = ⊕_kx x[iy][ox·sw + kx·dw − pw]`);
//! 2. vertical: every output row is reduced over the valid `h` rows of its window
//!    (`y[oy][ox] = ⊕_ky h[oy·sh + ky·dh − ph][ox]`), then divided for averages.
//!
//! That is `kw + kh` operations per output instead of `kw · kh`, and both passes are plain
//! stripes over the output width, which AVX2 does 8 at a time (stride 1: shifted unaligned
//! loads; stride 2: two loads deinterleaved with one shuffle, the lane order fixed once per
//! block). `h` rows are computed when the first window needs them into a ring of
//! `(kh − 1)·dh + 1` rows, so they are still in L1 when the vertical pass reads them.
//!
//! Padding: a row that needs padded columns is first copied into a buffer whose pad cells hold
//! the neutral value (`-inf` for max, `0` for sums), so no tap needs a bounds check; rows of an
//! unpadded pool whose windows all fit are read in place. Padded rows are skipped (neutral).
//!
//! Semantics match the generic walk in `pool.rs`: max ignores NaN inputs (`x > acc ? x : acc`
//! from `acc = -inf`, the `maxps` rule), so an all-NaN window gives `-inf`; averages divide
//! by (valid or padded rows) × (valid or padded columns), 0 when that is 0. Sums are taken in
//! a fixed order per output (columns of one row, then rows), identical at every SIMD level
//! and thread count.

use super::cpu_features::{detected_simd_level, SimdLevel};
use super::pool::{PoolGeometry, PoolKind};
use rayon::prelude::*;

/// The input rows of one output row's window.
#[derive(Debug, Clone, Copy)]
struct RowWin {
    /// `max(y0, 0)` for the window's first tap row `y0`: windows only move down, so rows above
    /// it are never needed again (with dilation the first *valid* row can move up by a phase).
    start: usize,
    /// First valid input row.
    first: usize,
    /// Valid rows, `dh` apart (0: the window is all padding).
    n: usize,
    /// Average divisor factor: valid (or padded, with `count_include_pad`) rows; 0 → 1.
    div: f32,
}

/// Everything about a 2-D pool that does not depend on the plane.
struct Plan {
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pw: usize,
    is_max: bool,
    /// Length of an `h` row: `ow` rounded up to a multiple of 8 (whole SIMD blocks).
    hs: usize,
    /// The ring holds `ring_mask + 1` rows (a power of two ≥ the window's span
    /// `(kh − 1)·dh + 1`); row `iy` lives in slot `iy & ring_mask`.
    ring_mask: usize,
    /// Rows are read in place (no left pad, every window fits, `ow ≥ 8` for whole blocks);
    /// otherwise they are copied into a padded row of `plen` values first.
    direct: bool,
    plen: usize,
    /// Average column divisor factor per output column (`hs` long, 0 replaced by 1: such a
    /// column's sum is exactly 0, and 0/1 gives the reference's 0).
    col_div: Vec<f32>,
    wins: Vec<RowWin>,
    /// Tables of the flat path, when it applies (SIMD levels only).
    flat: Option<Flat>,
    level: SimdLevel,
}

/// The flat path: a stride-1 pool whose output plane has the input's shape (pads sum to the
/// window span on both axes, e.g. 3×3 pad 1) over a small plane treats the whole plane as one
/// stripe of `ih·iw` values, so there is no per-row loop overhead (which dominates for
/// 8×8–35×35 planes). Row-pass taps that would cross a row border are masked to the neutral
/// value; the column pass reads an `h` plane framed by neutral rows.
struct Flat {
    /// Per column tap: flat offset `k·dw − pw`, and when some columns see that tap outside
    /// their row, a blend mask per plane position (all bits set where inside).
    taps: Vec<(isize, Option<Vec<f32>>)>,
    /// Average divisor per plane position (row factor × column factor); empty for max.
    div: Vec<f32>,
    /// Neutral rows above the `h` plane (`ph`); the frame has `(kh − 1)·dh` rows in all.
    top: usize,
}

/// Planes of at least this many values (16 KiB: two rows of them exceed L1 per window)
/// prefetch the next window's rows in the fused path.
const PREFETCH_MIN_PLANE: usize = 4096;

/// Planes up to this many values take the flat path (its tables are `kw + 1` planes).
const FLAT_MAX_PLANE: usize = 16384;

impl Plan {
    fn new(g: &PoolGeometry, kind: PoolKind, level: SimdLevel) -> Plan {
        let (ih, iw) = (g.in_spatial[0], g.in_spatial[1]);
        let (oh, ow) = (g.out_spatial[0], g.out_spatial[1]);
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let (sh, sw) = (g.strides[0], g.strides[1]);
        let (dh, dw) = (g.dilations[0], g.dilations[1]);
        let (ph, pw) = (g.pads_begin[0], g.pads_begin[1]);
        let is_max = kind == PoolKind::Max;
        let count_include_pad = matches!(
            kind,
            PoolKind::Avg {
                count_include_pad: true
            }
        );
        let hs = ow.div_ceil(8) * 8;
        // One past the last source index a row of `n` outputs reads.
        let reach = |n: usize| (n - 1) * sw + (kw - 1) * dw + 1;
        let direct = pw == 0 && ow >= 8 && reach(ow) <= iw;
        let plen = (pw + iw).max(reach(hs));
        let padded_w = iw + pw + g.pads_end[1];
        let col_div: Vec<f32> = (0..hs)
            .map(|ox| {
                let c = if ox >= ow {
                    1
                } else if count_include_pad {
                    padded_count(ox, kw, sw, dw, padded_w)
                } else {
                    valid_count(ox, kw, sw, dw, pw, iw)
                };
                c.max(1) as f32
            })
            .collect();
        let padded_h = ih + ph + g.pads_end[0];
        let wins: Vec<RowWin> = (0..oh)
            .map(|oy| {
                // Window rows: iy = y0 + ky·dh for ky in [ky_lo, ky_hi).
                let y0 = (oy * sh) as isize - ph as isize;
                let ky_lo = if y0 >= 0 {
                    0
                } else {
                    ((-y0) as usize).div_ceil(dh)
                };
                let ky_hi = if y0 >= ih as isize {
                    0
                } else {
                    ((ih as isize - y0) as usize).div_ceil(dh).min(kh)
                };
                let n = ky_hi.saturating_sub(ky_lo);
                let rows = if count_include_pad {
                    padded_count(oy, kh, sh, dh, padded_h)
                } else {
                    n
                };
                RowWin {
                    start: y0.max(0) as usize,
                    first: (y0 + (ky_lo * dh) as isize).max(0) as usize,
                    n,
                    div: rows.max(1) as f32,
                }
            })
            .collect();
        let plane = ih * iw;
        let flat = (level >= SimdLevel::Avx2
            && sh == 1
            && sw == 1
            && (oh, ow) == (ih, iw)
            && ph + g.pads_end[0] == (kh - 1) * dh
            && pw + g.pads_end[1] == (kw - 1) * dw
            && (8..=FLAT_MAX_PLANE).contains(&plane))
        .then(|| {
            let taps = (0..kw)
                .map(|k| {
                    let off = (k * dw) as isize - pw as isize;
                    let inside = |col: usize| (0..iw as isize).contains(&(col as isize + off));
                    let mask = (!(0..iw).all(inside)).then(|| {
                        (0..plane)
                            .map(|i| {
                                if inside(i % iw) {
                                    f32::from_bits(u32::MAX)
                                } else {
                                    0.0
                                }
                            })
                            .collect()
                    });
                    (off, mask)
                })
                .collect();
            let div = if is_max {
                Vec::new()
            } else {
                (0..plane)
                    .map(|i| wins[i / iw].div * col_div[i % iw])
                    .collect()
            };
            Flat { taps, div, top: ph }
        });
        Plan {
            ih,
            iw,
            oh,
            ow,
            kh,
            kw,
            sw,
            dh,
            dw,
            pw,
            is_max,
            hs,
            ring_mask: ((kh - 1) * dh + 1).next_power_of_two() - 1,
            direct,
            plen,
            col_div,
            wins,
            flat,
            level,
        }
    }

    fn neutral(&self) -> f32 {
        if self.is_max {
            f32::NEG_INFINITY
        } else {
            0.0
        }
    }
}

/// Taps of a window along one axis inside `[0, padded_len)` (input plus both pads).
fn padded_count(o: usize, k: usize, s: usize, d: usize, padded_len: usize) -> usize {
    (0..k).filter(|t| o * s + t * d < padded_len).count()
}

/// Taps of a window along one axis inside the input `[pad, pad + len)` of the padded axis.
fn valid_count(o: usize, k: usize, s: usize, d: usize, pad: usize, len: usize) -> usize {
    (0..k)
        .filter(|t| {
            let p = o * s + t * d;
            p >= pad && p < pad + len
        })
        .count()
}

/// Per-task scratch: the padded row, the ring of `h` rows and one window's ring offsets.
struct Scratch {
    prow: Vec<f32>,
    /// The flat path's `h` plane, framed by `(kh − 1)·dh` neutral rows.
    hplane: Vec<f32>,
    ring: Vec<f32>,
}

/// Most window rows the SIMD path lists on the stack (windows of more than 3 rows).
const MAX_STACK_ROWS: usize = 16;

impl Scratch {
    fn new(p: &Plan) -> Scratch {
        Scratch {
            // Pad cells hold the neutral value for good; only the input part is rewritten.
            prow: vec![p.neutral(); if p.direct { 0 } else { p.plen }],
            ring: vec![0.0; (p.ring_mask + 1) * p.hs],
            hplane: match p.flat {
                Some(_) => vec![p.neutral(); (p.ih + (p.kh - 1) * p.dh) * p.iw],
                None => Vec::new(),
            },
        }
    }
}

/// Whether the fast path takes `g` (2 spatial dims): every window spans at most twice its
/// axis plus 16. Its plan and scratch grow with the span (a padded row of
/// `(kw − 1)·dw + ow·sw` values, a ring of `(kh − 1)·dh + 1` rows, the flat path's per-tap
/// masks), while taps beyond the input are all padding: a fuzzed MaxPool 2 × 67 108 862 over a
/// 32×32 image with SAME pads asked for gigabytes at load. Such windows take the generic walk,
/// which allocates nothing for them. Real models' windows are at most their input (a pool over
/// a whole 8×8 map spans 8).
pub(super) fn takes(g: &PoolGeometry) -> bool {
    g.in_spatial.len() == 2
        && (0..2).all(|a| {
            let span = (g.kernel[a].saturating_sub(1)).saturating_mul(g.dilations[a]);
            span < g.in_spatial[a].saturating_mul(2).saturating_add(16)
        })
}

/// Pools every `(n, c)` plane of `input` into `output` (geometry already validated, 2 spatial
/// dims, lengths checked by the caller). `level` is clamped to the hardware.
pub(super) fn pool_2d(
    g: &PoolGeometry,
    kind: PoolKind,
    level: SimdLevel,
    input: &[f32],
    output: &mut [f32],
) {
    Prepared::new(g, kind, level, 0).run(input, output);
}

/// A 2-D pool prepared once (at model load): its plan (row windows, divisors, the flat path's
/// masks) and one scratch per worker, so that a run allocates nothing. Building them on every
/// call took ~8% of an Inception-v3 3×3 average pool's time (35×35×192, alone).
pub(super) struct Prepared {
    plan: Plan,
    /// One scratch per worker of the pool the executor runs kernels in (indexed by rayon's
    /// thread index); a worker locks only its own, so the locks are never contended there.
    slots: Vec<std::sync::Mutex<Scratch>>,
}

impl Prepared {
    /// Plans `g` for `kind` at `level` (clamped to the hardware), with scratch for `threads`
    /// workers (0: none kept; every task then allocates its own).
    pub(super) fn new(g: &PoolGeometry, kind: PoolKind, level: SimdLevel, threads: usize) -> Self {
        let plan = Plan::new(g, kind, level.min(detected_simd_level()));
        let slots = (0..threads)
            .map(|_| std::sync::Mutex::new(Scratch::new(&plan)))
            .collect();
        Prepared { plan, slots }
    }

    /// Pools every `(n, c)` plane of `input` into `output` (lengths checked by the caller).
    pub(super) fn run(&self, input: &[f32], output: &mut [f32]) {
        let p = &self.plan;
        let (ip, op) = (p.ih * p.iw, p.oh * p.ow);
        if op == 0 {
            return;
        }
        // Enough planes per task that task hand-off is small next to the work; the split never
        // changes a plane's result.
        let per_task = (8192 / op).max(1);
        output
            .par_chunks_mut(op * per_task)
            .enumerate()
            .for_each(|(t, outs)| {
                let x = &input[t * per_task * ip..];
                let mut planes = |s: &mut Scratch| {
                    for (i, out) in outs.chunks_exact_mut(op).enumerate() {
                        plane_2d(p, &x[i * ip..(i + 1) * ip], out, s);
                    }
                };
                let slot = rayon::current_thread_index()
                    .filter(|_| !self.slots.is_empty())
                    .map(|i| &self.slots[i % self.slots.len()]);
                match slot {
                    // A scratch left by a panicked task is still valid: pad cells are never
                    // written, and every other value is rewritten before it is read.
                    Some(m) => planes(&mut m.lock().unwrap_or_else(|e| e.into_inner())),
                    None => planes(&mut Scratch::new(p)),
                }
            });
    }
}

fn plane_2d(p: &Plan, x: &[f32], out: &mut [f32], s: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    if p.level >= SimdLevel::Avx512 && avx512::takes(p) {
        // SAFETY: AVX-512F is present (the level is clamped to the detected one) and the
        // plan is one `takes` accepts.
        unsafe { avx512::max_3_wide_stride_2(p, x, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if p.level >= SimdLevel::Avx2 && (p.sw == 1 || p.sw == 2) {
        // SAFETY: AVX2 and FMA are present (the level is clamped to the detected one).
        unsafe { avx2::plane(p, x, out, s) };
        return;
    }
    if p.is_max {
        plane_scalar::<true>(p, x, out, s);
    } else {
        plane_scalar::<false>(p, x, out, s);
    }
}

/// `x > acc ? x : acc`: the `maxps` rule, which skips a NaN `x` (and keeps `acc`).
#[inline(always)]
fn max_keep(x: f32, acc: f32) -> f32 {
    if x > acc {
        x
    } else {
        acc
    }
}

fn plane_scalar<const MAX: bool>(p: &Plan, x: &[f32], out: &mut [f32], s: &mut Scratch) {
    let h = |src: &[f32], n: usize, dst: &mut [f32]| {
        for (o, d) in dst[..n].iter_mut().enumerate() {
            let taps = (0..p.kw).map(|k| src[o * p.sw + k * p.dw]);
            *d = if MAX {
                taps.fold(f32::NEG_INFINITY, |a, v| max_keep(v, a))
            } else {
                taps.reduce(|a, v| a + v).unwrap_or(0.0)
            };
        }
    };
    let hs = p.hs;
    let mut next = 0usize;
    for (w, orow) in p.wins.iter().zip(out.chunks_exact_mut(p.ow)) {
        if w.n == 0 {
            orow.fill(p.neutral());
            continue;
        }
        let last = w.first + (w.n - 1) * p.dh;
        next = next.max(w.start);
        while next <= last {
            let slot = next & p.ring_mask;
            let row = &x[next * p.iw..(next + 1) * p.iw];
            let dst = &mut s.ring[slot * hs..(slot + 1) * hs];
            if p.direct {
                h(row, p.ow, dst);
            } else {
                s.prow[p.pw..p.pw + p.iw].copy_from_slice(row);
                h(&s.prow, hs, dst);
            }
            next += 1;
        }
        let ring = &s.ring;
        for (o, y) in orow.iter_mut().enumerate() {
            // h rows hold no NaN, so starting from the first row is the same as from -inf.
            let vals = (0..w.n).map(|j| ring[((w.first + j * p.dh) & p.ring_mask) * hs + o]);
            *y = if MAX {
                vals.reduce(|a, v| max_keep(v, a))
                    .unwrap_or(f32::NEG_INFINITY)
            } else {
                vals.reduce(|a, v| a + v).unwrap_or(0.0) / (w.div * p.col_div[o])
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{rows_ahead, Flat, Plan, Scratch, MAX_STACK_ROWS, PREFETCH_MIN_PLANE};
    use std::arch::x86_64::*;

    /// AVX2 plane: picks the stride (1 or 2) and a 3-tap unrolled or any-width row pass.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `p.sw` is 1 or 2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn plane(p: &Plan, x: &[f32], out: &mut [f32], s: &mut Scratch) {
        if let Some(f) = &p.flat {
            match (p.is_max, p.kw == 3 && p.kh == 3) {
                (true, true) => flat::<true, 3>(p, f, x, out, &mut s.hplane),
                (true, false) => flat::<true, 0>(p, f, x, out, &mut s.hplane),
                (false, true) => flat::<false, 3>(p, f, x, out, &mut s.hplane),
                (false, false) => flat::<false, 0>(p, f, x, out, &mut s.hplane),
            }
            return;
        }
        if p.direct {
            match (p.is_max, p.sw == 1, p.kw == 3) {
                (true, true, true) => fused::<true, 1, 3>(p, x, out),
                (true, true, false) => fused::<true, 1, 0>(p, x, out),
                (true, false, true) => fused::<true, 2, 3>(p, x, out),
                (true, false, false) => fused::<true, 2, 0>(p, x, out),
                (false, true, true) => fused::<false, 1, 3>(p, x, out),
                (false, true, false) => fused::<false, 1, 0>(p, x, out),
                (false, false, true) => fused::<false, 2, 3>(p, x, out),
                (false, false, false) => fused::<false, 2, 0>(p, x, out),
            }
            return;
        }
        match (p.is_max, p.sw == 1, p.kw == 3) {
            (true, true, true) => walk::<true, 1, 3>(p, x, out, s),
            (true, true, false) => walk::<true, 1, 0>(p, x, out, s),
            (true, false, true) => walk::<true, 2, 3>(p, x, out, s),
            (true, false, false) => walk::<true, 2, 0>(p, x, out, s),
            (false, true, true) => walk::<false, 1, 3>(p, x, out, s),
            (false, true, false) => walk::<false, 1, 0>(p, x, out, s),
            (false, false, true) => walk::<false, 2, 3>(p, x, out, s),
            (false, false, false) => walk::<false, 2, 0>(p, x, out, s),
        }
    }

    /// The row walk of `super::plane_scalar` with 8-wide passes. `S` is the column stride,
    /// `K` the kernel width when fixed at compile time (0: `p.kw`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `p.sw == S`, and `p.kw == K` unless `K == 0`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn walk<const MAX: bool, const S: usize, const K: usize>(
        p: &Plan,
        x: &[f32],
        out: &mut [f32],
        s: &mut Scratch,
    ) {
        let hs = p.hs;
        let kw = if K == 0 { p.kw } else { K };
        let reach = |n: usize| (n - 1) * S + (kw - 1) * p.dw + 1;
        // The bounds every raw access below relies on, checked once per plane.
        assert!(p.sw == S && kw == p.kw && hs >= 8 && hs >= p.ow && hs.is_multiple_of(8));
        assert!(x.len() == p.ih * p.iw && out.len() == p.oh * p.ow);
        assert!(s.ring.len() == (p.ring_mask + 1) * hs && p.col_div.len() == hs);
        if p.direct {
            assert!(p.ow >= 8 && reach(p.ow) <= p.iw);
        } else {
            assert!(s.prow.len() >= reach(hs) && s.prow.len() >= p.pw + p.iw);
        }
        let mut next = 0usize;
        for (w, orow) in p.wins.iter().zip(out.chunks_exact_mut(p.ow)) {
            if w.n == 0 {
                orow.fill(p.neutral());
                continue;
            }
            let last = w.first + (w.n - 1) * p.dh;
            next = next.max(w.start);
            while next <= last {
                let row = &x[next * p.iw..(next + 1) * p.iw];
                let dst = s.ring[(next & p.ring_mask) * hs..].as_mut_ptr();
                if p.direct {
                    // SAFETY: `row` holds iw ≥ reach(ow) values, `dst` hs ≥ ow (asserted).
                    hrow::<MAX, S, K>(row.as_ptr(), p.ow, kw, p.dw, dst);
                } else {
                    let prow = s.prow.as_mut_ptr();
                    // SAFETY: prow holds ≥ pw + iw values, `row` iw (asserted).
                    copy_row(row.as_ptr(), p.iw, prow.add(p.pw));
                    // SAFETY: prow holds ≥ reach(hs) values, `dst` hs (asserted).
                    hrow::<MAX, S, K>(prow, hs, kw, p.dw, dst);
                }
                next += 1;
            }
            // Ring offsets of the window's rows: each a ring row start (slot ≤ ring_mask), so
            // it and the following hs ≥ max(ow, 8) values are in the ring.
            let off = |j: usize| ((w.first + j * p.dh) & p.ring_mask) * hs;
            let rp = s.ring.as_ptr();
            let (cd, op) = (p.col_div.as_ptr(), orow.as_mut_ptr());
            // SAFETY (all arms): ring rows as above; col_div holds hs values; `orow` ow.
            match w.n {
                1 => vrow::<MAX, 1>([rp.add(off(0))], cd, w.div, op, p.ow),
                2 => vrow::<MAX, 2>([rp.add(off(0)), rp.add(off(1))], cd, w.div, op, p.ow),
                3 => vrow::<MAX, 3>(
                    [rp.add(off(0)), rp.add(off(1)), rp.add(off(2))],
                    cd,
                    w.div,
                    op,
                    p.ow,
                ),
                n if n <= MAX_STACK_ROWS => {
                    let mut rows = [std::ptr::null(); MAX_STACK_ROWS];
                    for (j, r) in rows[..n].iter_mut().enumerate() {
                        *r = rp.add(off(j));
                    }
                    vrow_any::<MAX>(&rows[..n], cd, w.div, op, p.ow);
                }
                n => {
                    // Taller windows than any model uses: their row list is allocated.
                    let rows: Vec<*const f32> = (0..n).map(|j| rp.add(off(j))).collect();
                    vrow_any::<MAX>(&rows, cd, w.div, op, p.ow);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn combine<const MAX: bool>(v: __m256, acc: __m256) -> __m256 {
        if MAX {
            // maxps returns its second operand when either is NaN: a NaN `v` is skipped.
            _mm256_max_ps(v, acc)
        } else {
            _mm256_add_ps(acc, v)
        }
    }

    /// Tap values `q[0], q[2], .., q[14]` of 8 stride-2 outputs, with the 64-bit pairs in the
    /// order 0, 2, 1, 3 (fixed by [`unshuffle`] after reducing: lane-wise ops commute with it).
    ///
    /// # Safety
    /// `q[0..15]` must be readable.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn even_taps(q: *const f32) -> __m256 {
        let lo = _mm256_loadu_ps(q);
        let hi = _mm256_loadu_ps(q.add(7));
        // Per 128-bit lane: [lo0, lo2, hi1, hi3] = q[0, 2, 8, 10] and q[4, 6, 12, 14].
        _mm256_shuffle_ps::<0b11_01_10_00>(lo, hi)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn unshuffle(v: __m256) -> __m256 {
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
    }

    /// Row-pass block at output column `b`: `⊕_k src[(b + l)·S + k·dw]` for lanes `l < 8`; for
    /// `S == 2` in the lane order of [`even_taps`] (to be [`unshuffle`]d).
    ///
    /// # Safety
    /// `src[b·S ..= (b + 7)·S + (kw−1)·dw]` readable (for `S == 2`: also one more value,
    /// `even_taps` reads 15).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn htaps<const MAX: bool, const S: usize, const K: usize>(
        src: *const f32,
        b: usize,
        kw: usize,
        dw: usize,
    ) -> __m256 {
        let kw = if K == 0 { kw } else { K };
        let load = |k: usize| {
            if S == 1 {
                _mm256_loadu_ps(src.add(b + k * dw))
            } else {
                even_taps(src.add(2 * b + k * dw))
            }
        };
        let mut acc = load(0);
        if MAX {
            // From -inf, so that a NaN first tap is skipped like any other.
            acc = _mm256_max_ps(acc, _mm256_set1_ps(f32::NEG_INFINITY));
        }
        for k in 1..kw {
            acc = combine::<MAX>(load(k), acc);
        }
        acc
    }

    /// `dst[o] = ⊕_k src[o·S + k·dw]` for `o < n`, 8 at a time (the last block overlaps the
    /// previous one when `n` is not a multiple of 8: it recomputes the same values).
    ///
    /// # Safety
    /// `n ≥ 8`; `src[..(n−1)·S + (kw−1)·dw + 1]` readable, `dst[..n]` writable.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hrow<const MAX: bool, const S: usize, const K: usize>(
        src: *const f32,
        n: usize,
        kw: usize,
        dw: usize,
        dst: *mut f32,
    ) {
        let mut o = 0;
        while o < n {
            let b = o.min(n - 8);
            // Reads up to (b + 7)·S + (kw−1)·dw (+1 for S = 2, at most 2(n−1) + (kw−1)·dw + 1
            // since b ≤ n − 8): in bounds.
            let mut acc = htaps::<MAX, S, K>(src, b, kw, dw);
            if S == 2 {
                acc = unshuffle(acc);
            }
            _mm256_storeu_ps(dst.add(b), acc);
            o += 8;
        }
    }

    /// Unpadded rows whose windows all fit (`p.direct`): each output block reduces its window
    /// rows straight from the input, in the order of the ring walk (row pass per row, then
    /// rows combined from the first), so the results are the same, without the ring.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `p.sw == S`, and `p.kw == K` unless `K == 0`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fused<const MAX: bool, const S: usize, const K: usize>(
        p: &Plan,
        x: &[f32],
        out: &mut [f32],
    ) {
        let kw = if K == 0 { p.kw } else { K };
        // The bounds every raw access below relies on, checked once per plane.
        assert!(p.sw == S && kw == p.kw && p.direct && p.ow >= 8 && p.hs >= p.ow);
        assert!((p.ow - 1) * S + (kw - 1) * p.dw < p.iw && p.col_div.len() >= p.hs);
        assert!(x.len() == p.ih * p.iw && out.len() == p.oh * p.ow);
        let (iw, ow) = (p.iw, p.ow);
        let prefetch = p.ih * iw >= PREFETCH_MIN_PLANE;
        for (w, orow) in p.wins.iter().zip(out.chunks_exact_mut(ow)) {
            if w.n == 0 {
                orow.fill(p.neutral());
                continue;
            }
            let ahead = rows_ahead(p, w, x);
            let divv = _mm256_set1_ps(w.div);
            let mut o = 0;
            while o < ow {
                let b = o.min(ow - 8);
                if prefetch {
                    for r in ahead {
                        // A hint only; the address is inside that input row (b·S < iw).
                        _mm_prefetch::<_MM_HINT_T0>(r.add(b * S) as *const i8);
                    }
                }
                let mut acc = _mm256_setzero_ps();
                for j in 0..w.n {
                    // SAFETY: the row is an input row (asserted above); the block reads at most
                    // (ow − 1)·S + (kw − 1)·dw + 1 ≤ iw values of it (asserted).
                    let src = x.as_ptr().add((w.first + j * p.dh) * iw);
                    let hv = htaps::<MAX, S, K>(src, b, kw, p.dw);
                    // h rows hold no NaN: starting from the first equals starting from -inf.
                    acc = if j == 0 { hv } else { combine::<MAX>(hv, acc) };
                }
                if S == 2 {
                    acc = unshuffle(acc);
                }
                if !MAX {
                    // SAFETY: b + 8 ≤ ow ≤ hs ≤ col_div.len().
                    let d = _mm256_mul_ps(divv, _mm256_loadu_ps(p.col_div.as_ptr().add(b)));
                    acc = _mm256_div_ps(acc, d);
                }
                // SAFETY: b + 8 ≤ ow = orow.len().
                _mm256_storeu_ps(orow.as_mut_ptr().add(b), acc);
                o += 8;
            }
        }
    }

    /// The flat path (see [`super::Flat`]): row pass over the whole plane as one stripe into
    /// the framed `h` plane, masked taps giving the neutral value, then the column pass over
    /// the whole output plane. Same operation order as the ring walk; only a zero's sign can
    /// differ (a padded row or column adds `+0` instead of nothing).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `p.kw == K` and `p.kh == K` unless `K == 0`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn flat<const MAX: bool, const K: usize>(
        p: &Plan,
        f: &Flat,
        x: &[f32],
        out: &mut [f32],
        hp: &mut [f32],
    ) {
        let (iw, n, dw) = (p.iw, p.ih * p.iw, p.dw);
        let (kw, kh) = if K == 0 { (p.kw, p.kh) } else { (K, K) };
        let rstep = p.dh * iw;
        // The bounds every raw access below relies on, checked once per plane.
        assert!(kw == p.kw && kh == p.kh && n >= 8 && x.len() == n && out.len() == n);
        assert!(hp.len() == n + (kh - 1) * rstep && f.top * iw <= (kh - 1) * rstep);
        assert!(f.taps.len() == kw && (MAX || f.div.len() == n));
        assert!(f
            .taps
            .iter()
            .all(|(_, m)| m.as_ref().is_none_or(|m| m.len() == n)));
        let neutral = _mm256_set1_ps(p.neutral());
        let xp = x.as_ptr();
        let h = hp.as_mut_ptr().add(f.top * iw);
        // Positions whose taps all read inside the plane: [pw, n − right reach). A window
        // wider than the plane (huge SAME pads) leaves none: everything goes the scalar way.
        let (lo, hi) = (p.pw, n.saturating_sub((kw - 1) * dw - p.pw));
        let tap = |i: usize, k: usize| {
            let (off, m) = &f.taps[k];
            let v = _mm256_loadu_ps(xp.offset(i as isize + off));
            match m {
                Some(m) => _mm256_blendv_ps(neutral, v, _mm256_loadu_ps(m.as_ptr().add(i))),
                None => v,
            }
        };
        let mut scalar_from = 0..n;
        if hi >= lo + 8 {
            let mut o = lo;
            while o < hi {
                let b = o.min(hi - 8);
                // SAFETY: lo ≤ b ≤ hi − 8, so tap k reads x[b + off_k ..+8] inside [0, n)
                // (off_k ≥ −pw = −lo, off_k ≤ (kw−1)·dw − pw = n − hi); masks hold n values.
                let mut acc = tap(b, 0);
                if MAX {
                    acc = _mm256_max_ps(acc, _mm256_set1_ps(f32::NEG_INFINITY));
                }
                for k in 1..kw {
                    acc = combine::<MAX>(tap(b, k), acc);
                }
                // SAFETY: b + 8 ≤ n, inside the h plane after its top frame.
                _mm256_storeu_ps(h.add(b), acc);
                o += 8;
            }
            scalar_from = 0..lo;
        }
        // The few positions at the plane's ends (or a plane too thin for a block), taps checked
        // against the row like the masks do.
        let scalar_tap = |i: usize, k: usize| {
            let off = f.taps[k].0;
            let c = (i % iw) as isize + off;
            if (0..iw as isize).contains(&c) {
                x[(i as isize + off) as usize]
            } else {
                p.neutral()
            }
        };
        let ends = if hi >= lo + 8 { hi..n } else { n..n };
        for i in scalar_from.chain(ends) {
            let mut acc = scalar_tap(i, 0);
            if MAX {
                acc = super::max_keep(acc, f32::NEG_INFINITY);
            }
            for k in 1..kw {
                let v = scalar_tap(i, k);
                acc = if MAX {
                    super::max_keep(v, acc)
                } else {
                    acc + v
                };
            }
            hp[f.top * iw + i] = acc;
        }
        // Column pass: output i reads h plane rows i + ky·dh·iw of the framed plane.
        let hp = hp.as_ptr();
        let mut o = 0;
        while o < n {
            let b = o.min(n - 8);
            // SAFETY: b + 8 + (kh−1)·rstep ≤ n + (kh−1)·rstep = hp.len() (asserted).
            let mut acc = _mm256_loadu_ps(hp.add(b));
            for ky in 1..kh {
                acc = combine::<MAX>(_mm256_loadu_ps(hp.add(b + ky * rstep)), acc);
            }
            if !MAX {
                // SAFETY: b + 8 ≤ n = div.len().
                acc = _mm256_div_ps(acc, _mm256_loadu_ps(f.div.as_ptr().add(b)));
            }
            // SAFETY: b + 8 ≤ n = out.len().
            _mm256_storeu_ps(out.as_mut_ptr().add(b), acc);
            o += 8;
        }
    }

    /// Copies `n` floats `src → dst` (8 at a time when `n ≥ 8`).
    ///
    /// # Safety
    /// `src[..n]` readable, `dst[..n]` writable, not overlapping.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn copy_row(src: *const f32, n: usize, dst: *mut f32) {
        if n < 8 {
            std::ptr::copy_nonoverlapping(src, dst, n);
            return;
        }
        let mut o = 0;
        while o < n {
            let b = o.min(n - 8);
            _mm256_storeu_ps(dst.add(b), _mm256_loadu_ps(src.add(b)));
            o += 8;
        }
    }

    /// One 8-wide block of the vertical pass at column `b`: `⊕_j rows[j][b..b + 8]`, divided
    /// by `div · col_div[b..b + 8]` for averages.
    ///
    /// # Safety
    /// `rows` not empty, each `rows[j][b..b + 8]` and `col_div[b..b + 8]` readable.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn vblock<const MAX: bool>(
        rows: &[*const f32],
        col_div: *const f32,
        div: __m256,
        b: usize,
    ) -> __m256 {
        // h rows hold no NaN, so starting from the first row equals starting from -inf.
        let mut acc = _mm256_loadu_ps(rows[0].add(b));
        for r in &rows[1..] {
            acc = combine::<MAX>(_mm256_loadu_ps(r.add(b)), acc);
        }
        if !MAX {
            acc = _mm256_div_ps(acc, _mm256_mul_ps(div, _mm256_loadu_ps(col_div.add(b))));
        }
        acc
    }

    /// `out[o] = ⊕_j rows[j][o]` for `o < n`, divided by `div · col_div[o]` for averages:
    /// `N` rows, fixed at compile time so the row loop unrolls.
    ///
    /// # Safety
    /// `N ≥ 1`; every `rows[j][..max(n, 8)]` and `col_div[..max(n, 8)]` readable, `out[..n]`
    /// writable.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn vrow<const MAX: bool, const N: usize>(
        rows: [*const f32; N],
        col_div: *const f32,
        div: f32,
        out: *mut f32,
        n: usize,
    ) {
        vrow_any::<MAX>(&rows, col_div, div, out, n);
    }

    /// [`vrow`] for any number of rows.
    ///
    /// # Safety
    /// As [`vrow`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn vrow_any<const MAX: bool>(
        rows: &[*const f32],
        col_div: *const f32,
        div: f32,
        out: *mut f32,
        n: usize,
    ) {
        let divv = _mm256_set1_ps(div);
        if n < 8 {
            let mut tmp = [0.0f32; 8];
            _mm256_storeu_ps(tmp.as_mut_ptr(), vblock::<MAX>(rows, col_div, divv, 0));
            for (i, t) in tmp[..n].iter().enumerate() {
                *out.add(i) = *t;
            }
            return;
        }
        let mut o = 0;
        while o < n {
            let b = o.min(n - 8);
            _mm256_storeu_ps(out.add(b), vblock::<MAX>(rows, col_div, divv, b));
            o += 8;
        }
    }
}

/// Where the two input rows after window `w`'s last one start (clamped to the plane's last
/// row), after checking that the window's rows lie in the plane (`w.n > 0`). The fused paths
/// prefetch them while the current output row works, for planes from memory: three row
/// streams defeat the hardware prefetcher; small planes skip it (it costs more than it
/// saves).
fn rows_ahead(p: &Plan, w: &RowWin, x: &[f32]) -> [*const f32; 2] {
    let last = w.first + (w.n - 1) * p.dh;
    assert!(last < p.ih && x.len() == p.ih * p.iw);
    [last + 1, last + 2].map(|r| x[r.min(p.ih - 1) * p.iw..].as_ptr())
}

/// Whether a plan for `g` takes the AVX-512 rows-first max pool (on machines with AVX-512):
/// lets the tests check that their geometries reach it.
#[cfg(all(test, target_arch = "x86_64"))]
pub(super) fn rows_first_max(g: &PoolGeometry, kind: PoolKind) -> bool {
    avx512::takes(&Plan::new(g, kind, SimdLevel::Avx512))
}

/// Max pools 3 columns wide at column stride 2 (Inception-v3's 3×3/2 pools, ResNet's padded
/// 3×3/2 one), rows first: per 16 outputs, the window rows' maximum of 33
/// input columns (two vectors and one broadcast column), then the even, odd and next-even
/// columns picked out with two cross-lane permutes and one lane shift. The AVX2 path reduces
/// each window row over its three taps first, deinterleaving every tap's 16 columns: about
/// three times the instructions. Measured (29 Nov, Inception-v3, `engine profile`, fastest of
/// 6 alternating runs per node, against the AVX2 path): the 64-channel 147×147 pool alone 0.15
/// against 0.27 ms; in the model at 1 thread that pool 0.256 against 0.390 ms, Mixed_6a's
/// 0.060 against 0.088, the 192-channel 71×71 pool 0.218 against 0.235 (its input comes from
/// memory), at 2 threads the first pool 0.200 against 0.212; ResNet-50's padded 112×112 pool
/// (lane masks at the left edge) 0.121 against 0.200 ms at 1 thread, 0.065 against 0.117 at
/// 2. Max is exact and NaN inputs are skipped at every step (each
/// maximum starts from `-inf`), so the values are those of the other paths (up to the sign of
/// a zero, as between the other levels).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{rows_ahead, Plan, PREFETCH_MIN_PLANE};
    use std::arch::x86_64::*;

    /// Output columns per block (one 16-lane vector).
    const BLOCK: usize = 16;

    /// Whether [`max_3_wide_stride_2`] computes the plan's planes: max, windows 3 columns wide
    /// at stride 2 without dilation, and at least one whole block of outputs per row (padding
    /// is any: padded cells are skipped as the other paths skip them).
    pub(super) fn takes(p: &Plan) -> bool {
        p.is_max && p.kw == 3 && p.sw == 2 && p.dw == 1 && p.ow >= BLOCK
    }

    /// Lanes `l < n` whose column `c + l` lies in `0..iw`.
    fn inside(c: isize, n: usize, iw: usize) -> u16 {
        let lo = (-c).clamp(0, n as isize) as u32;
        let hi = (iw as isize - c).clamp(0, n as isize) as u32;
        let below = |k: u32| ((1u32 << k) - 1) as u16;
        below(hi) & !below(lo)
    }

    /// One plane (see the module's docs); the last block of a row overlaps the one before it
    /// when the width is not a multiple of 16, recomputing the same values. Blocks whose
    /// columns reach into the padding load through lane masks, `-inf` in the padded lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `takes(p)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_3_wide_stride_2(p: &Plan, x: &[f32], out: &mut [f32]) {
        let (iw, ow) = (p.iw, p.ow);
        assert!(takes(p) && x.len() == p.ih * iw && out.len() == p.oh * ow);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let prefetch = p.ih * iw >= PREFETCH_MIN_PLANE;
        for (w, orow) in p.wins.iter().zip(out.chunks_exact_mut(ow)) {
            if w.n == 0 {
                orow.fill(p.neutral());
                continue;
            }
            let ahead = rows_ahead(p, w, x);
            let mut o = 0;
            while o < ow {
                let b = o.min(ow - BLOCK);
                // The window of output b starts at column c (left of the row in its pad).
                let c = (2 * b) as isize - p.pw as isize;
                if prefetch {
                    for r in ahead {
                        // A hint only; the address is inside that input row (0 ≤ c' < iw).
                        let at = c.clamp(0, iw as isize - 1) as usize;
                        _mm_prefetch::<_MM_HINT_T0>(r.add(at) as *const i8);
                    }
                }
                let (mut lo, mut hi, mut next) = (ninf, ninf, ninf);
                if c >= 0 && c as usize + 2 * BLOCK < iw {
                    let c = c as usize;
                    for j in 0..w.n {
                        // SAFETY: an input row (asserted above); columns c ..= c + 32 < iw.
                        let row = x.as_ptr().add((w.first + j * p.dh) * iw + c);
                        // maxps keeps its second operand when either is NaN: NaNs are skipped.
                        lo = _mm512_max_ps(_mm512_loadu_ps(row), lo);
                        hi = _mm512_max_ps(_mm512_loadu_ps(row.add(BLOCK)), hi);
                        next = _mm512_max_ps(_mm512_set1_ps(*row.add(2 * BLOCK)), next);
                    }
                } else {
                    let (mlo, mhi) = (inside(c, BLOCK, iw), inside(c + BLOCK as isize, BLOCK, iw));
                    let last_in = (0..iw as isize).contains(&(c + 2 * BLOCK as isize));
                    for j in 0..w.n {
                        let row = x.as_ptr().add((w.first + j * p.dh) * iw);
                        // SAFETY: the masks select columns inside this input row only; masked
                        // lanes are not read (their addresses may lie outside the slice, so
                        // they are formed with wrapping offsets).
                        let at = |k: isize| row.wrapping_offset(c + k);
                        lo = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, mlo, at(0)), lo);
                        hi = _mm512_max_ps(_mm512_mask_loadu_ps(ninf, mhi, at(16)), hi);
                        if last_in {
                            next = _mm512_max_ps(_mm512_set1_ps(*at(32)), next);
                        }
                    }
                }
                // Columns c + 2l, c + 2l + 1 and c + 2l + 2 of lane l.
                let left = _mm512_permutex2var_ps(lo, even, hi);
                let mid = _mm512_permutex2var_ps(lo, odd, hi);
                let right = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                    _mm512_castps_si512(next),
                    _mm512_castps_si512(left),
                ));
                let m = _mm512_max_ps(_mm512_max_ps(left, mid), right);
                // SAFETY: b + 16 ≤ ow = orow.len().
                _mm512_storeu_ps(orow.as_mut_ptr().add(b), m);
                o += BLOCK;
            }
        }
    }
}
