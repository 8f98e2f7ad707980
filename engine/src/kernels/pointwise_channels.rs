//! 1×1 convolutions on small maps (ResNet's 7×7 stage and its 14×14→7×7 shortcut), with the
//! register tile spanning output channels instead of positions.
//!
//! Why: [`super::pointwise_conv`]'s tile is 16 positions wide, so a 7×7 map (49 positions)
//! runs three full tiles and a fourth for one position, and the weights, 1–8 MiB per conv at
//! that stage, are reused by only four tiles each: ResNet-50's 7×7 1×1 convs ran there at
//! 73 GFLOP/s alone against 80–87 on larger maps. Here a tile is [`PR`] positions (broadcast
//! from the packed input) × [`CR`] output channels (two vectors of weights packed at load):
//! only the last position tile is ragged, and it is computed at its own width.
//!
//! For a conv `C[cout × P] = W[cout × K] · X[K × P]` (`K` = input channels per group):
//! - the weights are packed once, at load, into panels of [`CR`] output channels, `[K][CR]`;
//! - each call packs the input of every image and group into tiles of [`PR`] positions,
//!   `[K][PR]` (strided convs gather their positions here), once, shared by all workers;
//! - a work item is one panel of one image and group. For each K slice (`gemm::k_slice`, the
//!   blocked summation of the other conv paths) the panel's slice of weights stays in L1
//!   while every position tile sums it; the running totals of the panel (`[positions][CR]`,
//!   a few KiB) stay in L1 in the worker's scratch;
//! - after the last slice the totals are transposed (8×8 blocks, in registers) to output rows
//!   with bias, residual and activation added on the way, so each output is written once.
//!
//! Each output is the same slice sums added in the same order whatever the split, so results
//! are bit-identical across thread counts.

use super::conv::ConvGeometry;
use super::cpu_features::{detected_simd_level, SimdLevel};
use super::elementwise::activation_inplace_with;
use super::gemm::{k_slice, SendPtr};
use super::pointwise_conv::{strided_input_index, without_inputs};
use super::worker_items::for_each_item;
use crate::ir::Activation;
use rayon::prelude::*;

/// Positions per register tile (the broadcast operand, from the packed input).
pub const PR: usize = 6;
/// Output channels per register tile (two AVX2 vectors of packed weights).
pub const CR: usize = 16;

/// Largest output plane [`worth_it`] picks this kernel for: 7×7 maps gain; 14×14 maps tie
/// (see [`worth_it`]).
const MAX_PLANE: usize = 64;

/// Whether [`pointwise_channels_conv`] computes `g`: every kernel dim 1 and no padding (any
/// stride, any spatial rank, any group count), as for [`super::pointwise_conv`].
pub fn applies(g: &ConvGeometry) -> bool {
    super::pointwise_conv::applies(g)
}

/// Whether this kernel applies to `g` and is its default: small maps whose
/// positions do not fill whole 16-wide tiles of [`super::pointwise_conv`] (its last tile
/// then wastes lanes, and its weights are reused by few tiles). Measured per conv alone
/// (`time_pointwise_gemms`, best of 60, time against the position-wide kernel at 1 / 2
/// threads): 512→2048 and 2048→512 at 7×7 0.88 / 0.90 and 0.87 / 0.89; the 1024→2048
/// shortcut from 14×14 to 7×7 1.03 / 0.87; 14×14 maps 1.0 / 0.93–1.0, 17×17 1.0 / 0.97,
/// 8×8 (four full tiles) 1.05 / 1.08. In ResNet-50 (6 interleaved runs per node) stage 4's
/// 1×1 convs took 0.91–1.04× the position-wide kernel's time, stage 3's 0.96–1.06×, all
/// 1×1 convs together the same time within 0.3%: 14×14 maps stay on the other kernel.
pub fn worth_it(g: &ConvGeometry) -> bool {
    let plane = g.out_plane();
    applies(g)
        && plane <= MAX_PLANE
        && !plane.is_multiple_of(super::pointwise_conv::NR)
        && g.cout_per_group() >= CR
}

/// Packs OIHW 1×1 weights (`cout × cin/group`) per group into panels of [`CR`] output
/// channels, each `[K][CR]` (lanes past the group's last channel are zero).
pub fn pack_weights(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    super::pointwise_conv::pack_panels(g, weights, CR)
}

/// Floats [`pack_weights`] returns for `g`.
pub fn packed_len(g: &ConvGeometry) -> usize {
    g.group * g.cout_per_group().div_ceil(CR) * g.cin_per_group() * CR
}

/// Position tiles of one image's output plane.
fn tiles(g: &ConvGeometry) -> usize {
    g.out_plane().div_ceil(PR)
}

/// Floats of one worker's running totals: `[rows][CR]`, the rows rounded up to whole
/// 8-position blocks of the epilogue's transposes.
fn totals_len(g: &ConvGeometry) -> usize {
    (tiles(g) * PR).next_multiple_of(8) * CR
}

/// Floats of the packed input of every image and group.
fn packed_input_len(g: &ConvGeometry) -> usize {
    g.batch * g.group * tiles(g) * g.cin_per_group() * PR
}

/// Scratch floats [`pointwise_channels_conv`] needs to run on `threads` workers (less, down to
/// one worker's totals, runs fewer items at once).
pub fn scratch_len(g: &ConvGeometry, threads: usize) -> usize {
    packed_input_len(g) + totals_len(g) * threads.max(1)
}

/// `output = act(W ⊛ input + bias + residual)` for a 1×1 conv ([`applies`]) with weights from
/// [`pack_weights`] and at least `scratch_len(g, 1)` floats of scratch.
///
/// # Panics
/// If a slice is shorter than the geometry needs.
#[allow(clippy::too_many_arguments)]
pub fn pointwise_channels_conv(
    level: SimdLevel,
    g: &ConvGeometry,
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        applies(g),
        "pointwise_channels_conv: not a 1×1 unpadded conv"
    );
    assert!(scratch.len() >= scratch_len(g, 1), "scratch too short");
    assert!(input.len() >= g.input_len() && output.len() >= g.output_len());
    assert!(packed.len() >= packed_len(g) && bias.len() >= g.out_channels);
    if let Some(r) = residual {
        assert!(r.len() >= g.output_len());
    }
    let level = level.min(detected_simd_level());
    let (k, cout_g, plane) = (g.cin_per_group(), g.cout_per_group(), g.out_plane());
    if k == 0 || plane == 0 {
        without_inputs(g, bias, residual, act, output);
        return;
    }
    let tiles = tiles(g);
    let (xp, totals) = scratch.split_at_mut(packed_input_len(g));
    let in_plane = g.in_plane();
    xp.par_chunks_mut(k * PR).enumerate().for_each(|(i, dst)| {
        // Chunk i: tile i % tiles of image and group i / tiles.
        let (ng, t) = (i / tiles, i % tiles);
        let (n, grp) = (ng / g.group, ng % g.group);
        let x = &input[(n * g.in_channels + grp * k) * in_plane..][..k * in_plane];
        pack_input_tile(g, x, t, dst);
    });
    let xp: &[f32] = xp;

    let panels = cout_g.div_ceil(CR);
    let items = g.batch * g.group * panels;
    let kc = k_slice(k);
    let out_ptr = SendPtr(output.as_mut_ptr());
    let run = |i: usize, tot: &mut [f32]| {
        let (ng, b) = (i / panels, i % panels);
        let (n, grp) = (ng / g.group, ng % g.group);
        let x = &xp[ng * tiles * k * PR..][..tiles * k * PR];
        let w = &packed[(grp * panels + b) * k * CR..][..k * CR];
        let mut k0 = 0;
        while k0 < k {
            let depth = kc.min(k - k0);
            // The next slice's weights, fetched into L2 a few lines per tile while this slice
            // runs (they come cold from memory: 1–8 MiB per conv, each line used by few tiles).
            let next = &w[(k0 + depth) * CR..(k0 + depth + kc.min(k - k0 - depth)) * CR];
            let per_tile = next.len().div_ceil(tiles).next_multiple_of(16);
            for t in 0..tiles {
                super::direct_channels::prefetch_l2(
                    &next[(t * per_tile).min(next.len())..((t + 1) * per_tile).min(next.len())],
                );
                let width = PR.min(plane - t * PR);
                slice_sums(
                    level,
                    depth,
                    &w[k0 * CR..],
                    &x[(t * k + k0) * PR..],
                    width,
                    k0 == 0,
                    &mut tot[t * PR * CR..][..PR * CR],
                );
            }
            k0 += depth;
        }
        let rows = CR.min(cout_g - b * CR);
        let co0 = grp * cout_g + b * CR;
        let out0 = (n * g.out_channels + co0) * plane;
        // SAFETY: output channels co0..co0 + rows of image n are this item's alone (items are
        // disjoint (image, group, panel) triples); `output` outlives the parallel scope and
        // holds them (checked above).
        let out = unsafe { std::slice::from_raw_parts_mut({ out_ptr }.0.add(out0), rows * plane) };
        let res = residual.map(|r| &r[out0..out0 + rows * plane]);
        store_rows(
            level,
            tot,
            &bias[co0..co0 + rows],
            res,
            act,
            out,
            plane,
            plane,
        );
    };

    let tot_len = totals_len(g);
    for_each_item(items, totals, tot_len, run);
}

/// Copies position tile `t` of one image and group (`x`: its `K` input rows) into `dst`,
/// `[K][PR]`, zero past the last position; strided convs gather their positions here.
fn pack_input_tile(g: &ConvGeometry, x: &[f32], t: usize, dst: &mut [f32]) {
    let (in_plane, plane) = (g.in_plane(), g.out_plane());
    let p0 = t * PR;
    let width = PR.min(plane - p0);
    let mut offsets = [0usize; PR];
    for (j, off) in offsets[..width].iter_mut().enumerate() {
        *off = strided_input_index(g, p0 + j);
    }
    let dense = g.strides.iter().all(|&s| s == 1);
    if dense && width == PR {
        // Whole dense tiles copy a fixed-size array per row: the slice copy below compiles
        // to a libc call per 6 floats, which took 6% of a 2048→512 conv at 7×7.
        for (row, d) in x.chunks_exact(in_plane).zip(dst.chunks_exact_mut(PR)) {
            let src: &[f32; PR] = row[p0..p0 + PR].try_into().expect("PR floats");
            let d: &mut [f32; PR] = d.try_into().expect("PR floats");
            *d = *src;
        }
        return;
    }
    for (row, d) in x.chunks_exact(in_plane).zip(dst.chunks_exact_mut(PR)) {
        if dense {
            d[..width].copy_from_slice(&row[p0..p0 + width]);
        } else {
            for (v, &o) in d.iter_mut().zip(&offsets[..width]) {
                *v = row[o];
            }
        }
        d[width..].fill(0.0);
    }
}

/// Sums one K slice of `depth` channels for one position tile (`width ≤ PR` positions) and
/// stores (`first`) or adds the sums into `tot` (`[PR][CR]`, the tile's running totals).
fn slice_sums(
    level: SimdLevel,
    depth: usize,
    w: &[f32],
    x: &[f32],
    width: usize,
    first: bool,
    tot: &mut [f32],
) {
    assert!(w.len() >= depth * CR && x.len() >= depth * PR && tot.len() >= PR * CR);
    assert!((1..=PR).contains(&width));
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        // SAFETY: AVX2+FMA present (level clamped to the detected one by the caller); the
        // slices were checked above.
        unsafe {
            avx2::slice_sums(
                depth,
                w.as_ptr(),
                x.as_ptr(),
                width,
                first,
                tot.as_mut_ptr(),
            )
        };
        return;
    }
    let _ = level;
    let mut part = [[0.0f32; CR]; PR];
    for (wr, xr) in w.chunks_exact(CR).zip(x.chunks_exact(PR)).take(depth) {
        for (pj, &xv) in part.iter_mut().zip(xr).take(width) {
            for (s, &wv) in pj.iter_mut().zip(wr) {
                *s = xv.mul_add(wv, *s);
            }
        }
    }
    merge_part_into_totals(&part, width, first, tot);
}

/// Stores (`first`) or adds the first `width` positions of a tile's partial sums into `tot`
/// (`[positions][CR]`): the portable form of [`avx2::merge_into_totals`], shared with
/// [`super::direct_channels`].
pub(crate) fn merge_part_into_totals(
    part: &[[f32; CR]; PR],
    width: usize,
    first: bool,
    tot: &mut [f32],
) {
    for (pj, tj) in part.iter().zip(tot.chunks_exact_mut(CR)).take(width) {
        for (&s, t) in pj.iter().zip(tj) {
            *t = if first { s } else { *t + s };
        }
    }
}

/// Writes `rows` output rows of `count` positions, `ld` apart, from the totals
/// (`[positions][CR]`): `out[c·ld + p] = act(tot[p][c] + (bias[c] + residual[c·ld + p]))`,
/// the order of the other conv epilogues. Also the epilogue of
/// [`super::direct_channels`], whose totals cover a strip of an output plane.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_rows(
    level: SimdLevel,
    tot: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    out: &mut [f32],
    count: usize,
    ld: usize,
) {
    let rows = bias.len();
    let span = if rows == 0 {
        0
    } else {
        (rows - 1) * ld + count
    };
    assert!(rows <= CR && count <= ld && out.len() >= span);
    assert!(tot.len() >= count.next_multiple_of(8) * CR);
    if let Some(r) = residual {
        assert!(r.len() >= span);
    }
    #[cfg(target_arch = "x86_64")]
    if level >= SimdLevel::Avx2 {
        let (in_registers, after) = match act {
            Activation::None | Activation::Relu | Activation::Clip(..) => (act, Activation::None),
            other => (Activation::None, other),
        };
        // SAFETY: AVX2+FMA present; the lengths were checked above.
        unsafe {
            avx2::store_rows(
                tot.as_ptr(),
                rows,
                count,
                ld,
                bias.as_ptr(),
                residual.map_or(std::ptr::null(), |r| r.as_ptr()),
                in_registers,
                out.as_mut_ptr(),
            )
        };
        if after != Activation::None {
            for c in 0..rows {
                activation_inplace_with(level, &mut out[c * ld..c * ld + count], after);
            }
        }
        return;
    }
    for c in 0..rows {
        for (p, v) in out[c * ld..c * ld + count].iter_mut().enumerate() {
            let add = bias[c] + residual.map_or(0.0, |r| r[c * ld + p]);
            *v = act.apply(tot[p * CR + c] + add);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{CR, PR};
    use crate::ir::Activation;
    use crate::kernels::pointwise_conv::avx2::mask;
    use std::arch::x86_64::*;

    /// [`super::slice_sums`] in AVX2, the tile's width a const parameter so a ragged last
    /// tile does only its own positions' work.
    ///
    /// # Safety
    /// Requires AVX2 and FMA; `w` holds `depth·CR` floats, `x` `depth·PR`, `tot` `PR·CR`;
    /// `1 ≤ width ≤ PR`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn slice_sums(
        depth: usize,
        w: *const f32,
        x: *const f32,
        width: usize,
        first: bool,
        tot: *mut f32,
    ) {
        match width {
            // Narrow tails in several accumulator sets, so that about twelve FMA chains are
            // in flight (one position alone had two, each waiting out the FMA latency).
            1 => sums::<1, 6>(depth, w, x, first, tot),
            2 => sums::<2, 3>(depth, w, x, first, tot),
            3 => sums::<3, 2>(depth, w, x, first, tot),
            4 => sums::<4, 1>(depth, w, x, first, tot),
            5 => sums::<5, 1>(depth, w, x, first, tot),
            _ => sums::<PR, 1>(depth, w, x, first, tot),
        }
    }

    /// `NP` positions × 16 channels: `2·NP` accumulators per set (`S` sets, channels dealt
    /// round-robin, added at the end), two weight vectors per channel and one broadcast input
    /// value per position.
    ///
    /// # Safety
    /// As [`slice_sums`] with `NP ≤ PR`.
    #[inline(always)]
    unsafe fn sums<const NP: usize, const S: usize>(
        depth: usize,
        w: *const f32,
        x: *const f32,
        first: bool,
        tot: *mut f32,
    ) {
        #[inline(always)]
        unsafe fn step<const NP: usize>(acc: &mut [[__m256; 2]; NP], w: *const f32, x: *const f32) {
            let w0 = _mm256_loadu_ps(w);
            let w1 = _mm256_loadu_ps(w.add(8));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*x.add(j));
                a[0] = _mm256_fmadd_ps(b, w0, a[0]);
                a[1] = _mm256_fmadd_ps(b, w1, a[1]);
            }
        }
        let mut sets = [[[_mm256_setzero_ps(); 2]; NP]; S];
        let (mut w, mut x) = (w, x);
        for _ in 0..depth / S {
            for set in sets.iter_mut() {
                step::<NP>(set, w, x);
                w = w.add(CR);
                x = x.add(PR);
            }
        }
        for _ in 0..depth % S {
            step::<NP>(&mut sets[0], w, x);
            w = w.add(CR);
            x = x.add(PR);
        }
        merge_into_totals(&sets, first, tot);
    }

    /// Adds the `S` accumulator sets of an `NP`-position × 16-channel tile (in set order) and
    /// stores (`first`) or adds the sums into `tot` (`[positions][CR]`). Shared with
    /// [`crate::kernels::direct_channels`]'s tile.
    ///
    /// # Safety
    /// Requires AVX2 (inlined into AVX2 code); `tot` holds `NP·CR` floats.
    #[inline(always)]
    pub(crate) unsafe fn merge_into_totals<const NP: usize, const S: usize>(
        sets: &[[[__m256; 2]; NP]; S],
        first: bool,
        tot: *mut f32,
    ) {
        let mut acc = sets[0];
        for set in &sets[1..] {
            for (a, b) in acc.iter_mut().zip(set) {
                a[0] = _mm256_add_ps(a[0], b[0]);
                a[1] = _mm256_add_ps(a[1], b[1]);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            for (v, &s) in a.iter().enumerate() {
                let p = tot.add(j * CR + 8 * v);
                let y = if first {
                    s
                } else {
                    _mm256_add_ps(_mm256_loadu_ps(p), s)
                };
                _mm256_storeu_ps(p, y);
            }
        }
    }

    /// Transposes 8 rows of 8 floats: `out[i]` lane `j` = `r[j]` lane `i`.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// [`super::store_rows`] for the activations applied in registers (None, Relu, Clip):
    /// blocks of 8 positions × 8 channels are transposed, then each channel's 8 positions get
    /// bias, residual and activation and are stored (through a lane mask at the plane's end).
    ///
    /// # Safety
    /// Requires AVX2; `tot` holds `count.next_multiple_of(8)·CR` floats, `bias` `rows ≤ CR`,
    /// `out` (and `res` unless null) `(rows − 1)·ld + count`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn store_rows(
        tot: *const f32,
        rows: usize,
        count: usize,
        ld: usize,
        bias: *const f32,
        res: *const f32,
        act: Activation,
        out: *mut f32,
    ) {
        let zero = _mm256_setzero_ps();
        let (lo, hi) = match act {
            Activation::Clip(l, h) => (_mm256_set1_ps(l), _mm256_set1_ps(h)),
            _ => (zero, zero),
        };
        for c8 in (0..rows).step_by(8) {
            for p8 in (0..count).step_by(8) {
                let np = 8.min(count - p8);
                let m = mask(np);
                let mut r = [zero; 8];
                for (i, v) in r.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(tot.add((p8 + i) * CR + c8));
                }
                let cols = transpose8(r);
                for (ch, &sum) in cols.iter().enumerate().take(rows - c8) {
                    let c = c8 + ch;
                    let mut add = _mm256_set1_ps(*bias.add(c));
                    if !res.is_null() {
                        add = _mm256_add_ps(add, _mm256_maskload_ps(res.add(c * ld + p8), m));
                    }
                    let mut y = _mm256_add_ps(sum, add);
                    y = match act {
                        // max(0, NaN) is NaN: ONNX Relu keeps NaN.
                        Activation::Relu => _mm256_max_ps(zero, y),
                        Activation::Clip(..) => _mm256_min_ps(_mm256_max_ps(y, lo), hi),
                        _ => y,
                    };
                    let dst = out.add(c * ld + p8);
                    if np == 8 {
                        _mm256_storeu_ps(dst, y);
                    } else {
                        _mm256_maskstore_ps(dst, m, y);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pointwise_conv::tests::{check_kernel, geometry, Case};

    fn cases() -> Vec<Case> {
        let s1 = |n: usize| vec![1; n];
        vec![
            // ResNet-50's stage-4 shapes (scaled down in K where it only repeats slices).
            (1, 512, vec![7, 7], 64, 1, s1(2)),
            (1, 600, vec![7, 7], 40, 1, s1(2)),
            (1, 256, vec![14, 14], 48, 1, vec![2, 2]),
            // Batch, ragged panels (cout not a multiple of 16), one-position tiles.
            (2, 300, vec![5, 9], 13, 1, s1(2)),
            (1, 5, vec![1, 1], 7, 1, s1(2)),
            (3, 33, vec![7], 17, 1, s1(1)),
            // Two- and three-position tails, K not a multiple of their accumulator sets.
            (1, 37, vec![8], 20, 1, s1(1)),
            (2, 41, vec![9], 18, 1, s1(1)),
            (2, 12, vec![3, 4, 5], 9, 1, s1(3)),
            // Groups, other strides and ranks.
            (1, 8, vec![6, 6], 24, 2, s1(2)),
            (1, 16, vec![5, 7], 36, 4, vec![2, 1]),
            (1, 7, vec![20], 5, 1, vec![3]),
        ]
    }

    #[test]
    fn matches_f64_reference_every_level_and_thread_count() {
        let geometries: Vec<_> = cases().iter().map(geometry).collect();
        assert!(geometries.iter().all(applies));
        check_kernel(
            &geometries,
            110,
            pack_weights,
            scratch_len,
            pointwise_channels_conv,
            &[(1, 1), (2, 2), (2, 1), (3, 3)],
        );
    }

    #[test]
    fn picked_for_small_maps_only() {
        let geo = |cin: usize, hw: usize, cout: usize, s: usize| {
            ConvGeometry::new(
                1,
                cin,
                &[hw, hw],
                cout,
                &[1, 1],
                &[s, s],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                1,
            )
            .expect("valid")
        };
        // ResNet-50 stage 4: 2048→512 and 512→2048 at 7×7, the 1024→2048 shortcut from 14×14.
        assert!(worth_it(&geo(2048, 7, 512, 1)));
        assert!(worth_it(&geo(512, 7, 2048, 1)));
        assert!(worth_it(&geo(1024, 14, 2048, 2)));
        // Whole 16-wide tiles (8×8, 28×28) and large maps stay on the position-wide tile.
        assert!(!worth_it(&geo(2048, 8, 448, 1)));
        assert!(!worth_it(&geo(512, 28, 128, 1)));
        assert!(!worth_it(&geo(288, 35, 64, 1)));
        assert!(!worth_it(&geo(1024, 14, 256, 1)));
        assert!(!worth_it(&geo(768, 17, 192, 1)));
        // Too few output channels for one panel.
        assert!(!worth_it(&geo(512, 7, 8, 1)));
    }
}
