//! Direct kernel for grouped 2-D convolutions with few channels per group (ResNeXt's 3×3
//! convs: 32 groups of 4..32 channels).
//!
//! Why not im2col + GEMM: with `cout/group` = 4..32 the GEMM's M is tiny, so every im2col
//! column is written once and read by only a few rows of weights; measured 6–22 GFLOP/s.
//! Here each work item (image, group, block of output rows) copies the input rows it needs
//! into scratch once — zero-padded left/right and, for stride `s > 1`, split into `s` phases
//! (`phase[φ][i] = padded[φ + s·i]`) so that every tap reads 8 consecutive floats — and a
//! register block of 2 output channels × 6 vectors of 8 output pixels (vectors run along
//! output rows and continue on the next row) accumulates over all taps
//! (`cin/group × kh × kw`) with the weights pre-packed at load as
//! `[group][block of 2 output channels][tap][2]`, so the broadcasts of a tap are contiguous.
//! Bias, residual and Relu are applied in the block's store (other activations after it).
//! Measured (1 thread, ResNeXt-50's shapes, noisy shared machine): 2.5–4× faster than
//! im2col + GEMM.
//!
//! Summation order: per output, taps in (input channel, ky, kx) order, in K slices of
//! [`k_slice`] depth added one after another — the same slicing the im2col path's `gemm`
//! crate calls use, which keeps the float32 error of long-K convs at the level of that path.
//! The order is fixed per output whatever the thread count or the work split, so results are
//! bit-identical for any number of threads.

use super::conv::ConvGeometry;
use super::cpu_features::{detected_simd_level, simd_level, SimdLevel};
use super::elementwise::activation_inplace;
use super::gemm::{k_slice, SendPtr};
use super::worker_items::for_each_item_init;
use crate::ir::Activation;

/// Most input or output channels per group this kernel takes; above that the GEMM's blocks
/// are big enough for im2col + GEMM to be efficient.
pub const MAX_CHANNELS_PER_GROUP: usize = 64;
/// Output channels per register block (weights are packed, zero-padded, in blocks of this).
const CB: usize = 2;
/// Vectors of output pixels per register block (2 × 6 accumulators + 2 broadcasts + 1 load
/// fit the 16 AVX2 registers; 4 × 3 measured slower: its 17th register spilled an
/// accumulator).
const NV: usize = 6;
/// Floats per vector (AVX2).
const LANES: usize = 8;
/// Most output channels of one register block: blocks of 1 or 2 positions (a row's or an
/// item's tail) take 4 or 2 channel blocks at once, so that enough independent accumulator
/// chains (8) hide the FMA latency; each output keeps its own tap order.
const CMAX: usize = 8;
/// Target size, in floats, of one work item's input copy (24 KiB: most of L1 with the kh
/// rows a block of positions reads, the rest streamed from L2).
const BUF_BUDGET: usize = 6 * 1024;

/// Whether [`grouped_conv`] computes `g`: 2-D, several groups (depthwise — one channel per
/// group — has its own kernel and is excluded by the caller's order of checks), at most
/// [`MAX_CHANNELS_PER_GROUP`] channels per group.
pub fn applies(g: &ConvGeometry) -> bool {
    g.in_spatial.len() == 2
        && g.group > 1
        && g.cin_per_group() <= MAX_CHANNELS_PER_GROUP
        && g.cout_per_group() <= MAX_CHANNELS_PER_GROUP
        && g.out_spatial.iter().all(|&o| o >= 1)
}

/// Whether the kernel may be chosen at load: `ENGINE_GROUPED_CONV=off` (or `0`) and
/// `ENGINE_CONV_ALGO=im2col` turn it off, for A/B measurements against im2col + GEMM.
pub fn enabled() -> bool {
    let off = |k: &str, vals: &[&str]| {
        std::env::var(k)
            .ok()
            .is_some_and(|v| vals.contains(&v.trim().to_ascii_lowercase().as_str()))
    };
    !(off("ENGINE_GROUPED_CONV", &["off", "0", "false"]) || off("ENGINE_CONV_ALGO", &["im2col"]))
}

/// Repacks OIHW weights (`out_channels × cin/group × kh × kw`) into
/// `[group][ceil(cout_g / 4)][tap = (ci·kh + ky)·kw + kx][4]`, output channels beyond
/// `cout_g` in the last block zero. `w.len()` must be `g.weight_len()` (checked by the caller).
pub fn pack_weights(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let (cout_g, kg) = (g.cout_per_group(), g.cin_per_group() * g.kernel_size());
    let nblk = cout_g.div_ceil(CB);
    let mut p = vec![0.0f32; g.group * nblk * kg * CB];
    for grp in 0..g.group {
        for co in 0..cout_g {
            let (b, c) = (co / CB, co % CB);
            let src = &w[(grp * cout_g + co) * kg..][..kg];
            let dst = &mut p[(grp * nblk + b) * kg * CB..][..kg * CB];
            for (t, &v) in src.iter().enumerate() {
                dst[t * CB + c] = v;
            }
        }
    }
    p
}

/// Sizes derived from the geometry (see the module docs for the scratch layout).
struct Plan {
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    ph: usize,
    pw: usize,
    cin_g: usize,
    cout_g: usize,
    kg: usize,
    /// Vectors per output row.
    nvec: usize,
    /// Floats per phase of a copied input row.
    wph: usize,
    /// Floats per copied input row (`sw` phases).
    row_len: usize,
    /// Most output rows per work item.
    rows_max: usize,
}

impl Plan {
    fn new(g: &ConvGeometry) -> Plan {
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let (sh, sw) = (g.strides[0], g.strides[1]);
        let (dh, dw) = (g.dilations[0], g.dilations[1]);
        let ow = g.out_spatial[1];
        let nvec = ow.div_ceil(LANES);
        // Lane i of vector v at tap kx reads phase (kx·dw) % sw, index v·8 + i + (kx·dw) / sw.
        let wph = nvec * LANES + (kw - 1) * dw / sw;
        let row_len = sw * wph;
        let cin_g = g.cin_per_group();
        let oh = g.out_spatial[0];
        let per_row = (cin_g * sh * row_len).max(1);
        let rows_max = (BUF_BUDGET / per_row).clamp(1, oh.max(1));
        // Equal blocks: no short last block.
        let rows_max = oh.div_ceil(oh.div_ceil(rows_max)).max(1);
        Plan {
            ih: g.in_spatial[0],
            iw: g.in_spatial[1],
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            ph: g.pads_begin[0],
            pw: g.pads_begin[1],
            cin_g,
            cout_g: g.cout_per_group(),
            kg: cin_g * kh * kw,
            nvec,
            wph,
            row_len,
            rows_max,
        }
    }

    /// Input rows needed for `rows` output rows.
    fn in_rows(&self, rows: usize) -> usize {
        (rows - 1) * self.sh + (self.kh - 1) * self.dh + 1
    }

    /// Floats of one channel's input copy for `rows` output rows.
    fn chan_len(&self, rows: usize) -> usize {
        self.in_rows(rows) * self.row_len
    }
}

/// Scratch floats one work slot needs (the input copy of the largest work item plus one
/// zero-padded input row).
pub fn slot_len(g: &ConvGeometry) -> usize {
    let p = Plan::new(g);
    p.cin_g * p.chan_len(p.rows_max) + p.row_len
}

/// Grouped convolution of NCHW `input` with weights packed by [`pack_weights`]:
/// `output = act(conv + bias + residual)`. Lengths and geometry are checked by
/// [`super::conv::conv`], the entry point; `scratch` holds at least one [`slot_len`].
#[allow(clippy::too_many_arguments)]
pub fn grouped_conv(
    g: &ConvGeometry,
    input: &[f32],
    packed: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    grouped_conv_with(
        simd_level(),
        g,
        input,
        packed,
        bias,
        residual,
        act,
        output,
        scratch,
    )
}

/// Most taps per group whose offsets a call lists on the stack (ResNeXt-50's widest group,
/// 32 channels × 3×3, has 288).
const OFFS_ON_STACK: usize = 1024;

/// One unit of parallel work: image `n`, group `grp`, output rows `oy0..oy0 + rows`.
#[derive(Clone, Copy)]
struct Item {
    n: usize,
    grp: usize,
    oy0: usize,
    rows: usize,
}

/// [`grouped_conv`] at a forced SIMD level (tests check every level).
#[allow(clippy::too_many_arguments)]
pub fn grouped_conv_with(
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
    let p = Plan::new(g);
    let slot = slot_len(g);
    assert!(
        scratch.len() >= slot
            && input.len() == g.input_len()
            && output.len() == g.output_len()
            && packed.len() == g.group * p.cout_g.div_ceil(CB) * p.kg * CB
            && bias.len() == g.out_channels
            && residual.is_none_or(|r| r.len() == output.len()),
        "grouped_conv: buffer lengths do not match the geometry"
    );
    let threads = rayon::current_num_threads().max(1);
    // Enough items for every thread to get a few (batch 1 with few groups): split rows finer.
    let base = g.batch * g.group;
    let blocks =
        p.oh.div_ceil(p.rows_max)
            .max((2 * threads).div_ceil(base).min(p.oh));
    let rows_per = p.oh.div_ceil(blocks);
    let chan_len = p.chan_len(rows_per);
    // Tap offsets into an item's input copy, in the packed weights' tap order: on the stack
    // (a run allocates nothing) unless the group's taps outnumber it.
    let mut offs_stack = [0usize; OFFS_ON_STACK];
    let mut offs_heap = Vec::new();
    let offs: &mut [usize] = if p.kg <= OFFS_ON_STACK {
        &mut offs_stack[..p.kg]
    } else {
        offs_heap.resize(p.kg, 0);
        &mut offs_heap
    };
    let mut taps = offs.iter_mut();
    for ci in 0..p.cin_g {
        for ky in 0..p.kh {
            for kx in 0..p.kw {
                let (phase, shift) = ((kx * p.dw) % p.sw, (kx * p.dw) / p.sw);
                if let Some(o) = taps.next() {
                    *o = ci * chan_len + ky * p.dh * p.row_len + phase * p.wph + shift;
                }
            }
        }
    }
    let offs: &[usize] = offs;
    let slice = k_slice(p.kg).max(1);
    // Items: (image, group, block of `rows_per` output rows), in that order.
    let row_blocks = p.oh.div_ceil(rows_per);
    let item_count = base * row_blocks;
    let item = |i: usize| -> Item {
        let (ng, b) = (i / row_blocks, i % row_blocks);
        let oy0 = b * rows_per;
        Item {
            n: ng / g.group,
            grp: ng % g.group,
            oy0,
            rows: rows_per.min(p.oh - oy0),
        }
    };
    let (in_plane, out_plane) = (p.ih * p.iw, p.oh * p.ow);
    let nblk = p.cout_g.div_ceil(CB);
    let out_ptr = SendPtr(output.as_mut_ptr());
    // None and Relu are applied in the register block's store; other activations after it.
    let relu = act == Activation::Relu;
    let post_act = !matches!(act, Activation::None | Activation::Relu);
    let run_item = |it: &Item, buf: &mut [f32]| {
        let (buf, tmp) = buf[..slot].split_at_mut(slot - p.row_len);
        let img =
            &input[(it.n * g.in_channels + it.grp * p.cin_g) * in_plane..][..p.cin_g * in_plane];
        fill_input(level, &p, img, it.oy0, it.rows, chan_len, buf, tmp);
        let co0 = it.grp * p.cout_g;
        let out_base = (it.n * g.out_channels + co0) * out_plane;
        let c = { out_ptr }.0;
        let res = residual.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // Positions (row r, vector v) in row-major order, NV at a time; for each such block
        // every channel block of the group. Positions outside, channels inside: the input of
        // one position block (all channels, kh rows) stays in L1 while the group's weights
        // stream (2 floats per tap); the other order re-reads the whole input copy, which
        // need not fit L1, once per channel block.
        let (mut r, mut v) = (0, 0);
        while r < it.rows {
            let mut t = Tile {
                nv: 0,
                inp_off: [0; NV],
                out_off: [0; NV],
                lanes: [0; NV],
                nc: CB,
                plane: out_plane,
                wstride: p.kg * CB,
                bias: [0.0; CMAX],
                relu,
            };
            while t.nv < NV && r < it.rows {
                t.inp_off[t.nv] = r * p.sh * p.row_len + v * LANES;
                t.out_off[t.nv] = out_base + (it.oy0 + r) * p.ow + v * LANES;
                t.lanes[t.nv] = LANES.min(p.ow - v * LANES);
                t.nv += 1;
                v += 1;
                if v == p.nvec {
                    (r, v) = (r + 1, 0);
                }
            }
            // Channel blocks taken together (see CMAX): only whole blocks.
            let group_blocks = match t.nv {
                1 => 4,
                2 => 2,
                _ => 1,
            };
            let mut b = 0;
            while b < nblk {
                let gb = if (b + group_blocks) * CB <= p.cout_g {
                    group_blocks
                } else {
                    1
                };
                let nc = (gb * CB).min(p.cout_g - b * CB);
                let w = &packed[(it.grp * nblk + b) * p.kg * CB..][..gb * p.kg * CB];
                t.nc = nc;
                t.bias[..nc].copy_from_slice(&bias[co0 + b * CB..][..nc]);
                let chans = b * CB * out_plane;
                b += gb;
                // SAFETY: every tap read `inp_off[i] + offs[t] + 0..8` stays inside `buf`
                // (the copy spans `in_rows(rows_per)` rows of `row_len` per channel and `wph`
                // covers the last vector's lanes plus the widest tap shift); the writes (and
                // residual reads) are `lanes[i]` floats of rows `oy0..oy0+rows` of channels
                // `co0 + b·CB + c < co0 + cout_g` of image n, inside `output` (and `residual`,
                // same length, checked above), written by this item alone (items are
                // disjoint), and `output` outlives the parallel scope.
                unsafe {
                    block(
                        level,
                        w,
                        offs,
                        slice,
                        buf.as_ptr(),
                        c.add(chans),
                        if res.is_null() { res } else { res.add(chans) },
                        &t,
                    )
                };
            }
        }
        if post_act {
            for co in 0..p.cout_g {
                let off = out_base + co * out_plane + it.oy0 * p.ow;
                // SAFETY: rows oy0..oy0+rows of channel co0 + co of image n: inside `output`,
                // written only by this item (see above).
                let rows = unsafe { std::slice::from_raw_parts_mut(c.add(off), it.rows * p.ow) };
                activation_inplace(rows, act);
            }
        }
    };
    // The input copies' padding columns (and the stride-split temporary row) are zeroed once
    // per call and slot here; `fill_input` writes only the data columns and zeroes whole pad
    // rows.
    for_each_item_init(
        item_count,
        scratch,
        slot,
        |buf| buf.fill(0.0),
        |i, buf| run_item(&item(i), buf),
    );
}

/// Copies the input rows of output rows `oy0..oy0 + rows` of one group (`img`: `cin_g` planes)
/// into `buf`: per channel `chan_len` floats, per input row `sw` phases of `wph` floats,
/// zero outside the input. `tmp` (one `row_len`) holds a zero-padded row before the split.
/// Only the data columns of `buf` and `tmp` are written (and whole rows above/below the
/// input zeroed): the caller zeroes both once per call, which keeps the padding columns zero.
#[allow(clippy::too_many_arguments)]
fn fill_input(
    level: SimdLevel,
    p: &Plan,
    img: &[f32],
    oy0: usize,
    rows: usize,
    chan_len: usize,
    buf: &mut [f32],
    tmp: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if level.min(detected_simd_level()) >= SimdLevel::Avx2 {
        // SAFETY: the level is clamped to what the CPU reported, so AVX2 is present.
        return unsafe { avx2::fill_input(p, img, oy0, rows, chan_len, buf, tmp) };
    }
    fill_input_body(
        p,
        img,
        oy0,
        rows,
        chan_len,
        buf,
        tmp,
        |d, s| copy_row(level, d, s),
        |s, tmp, d| {
            let x0 = p.pw.min(p.row_len);
            copy_row(level, &mut tmp[x0..x0 + s.len()], s);
            deinterleave(level, p.sw, p.wph, tmp, d)
        },
    )
}

/// [`fill_input`] with the row copy and the phase split passed in (inlined into the AVX2
/// copy, where per-row calls would cost as much as these short rows' copies).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fill_input_body(
    p: &Plan,
    img: &[f32],
    oy0: usize,
    rows: usize,
    chan_len: usize,
    buf: &mut [f32],
    tmp: &mut [f32],
    copy: impl Fn(&mut [f32], &[f32]),
    split: impl Fn(&[f32], &mut [f32], &mut [f32]),
) {
    let nrows = p.in_rows(rows);
    let in_plane = p.ih * p.iw;
    // Columns of the padded row that hold input: px in pw..pw+iw, clipped to the copy.
    let (x0, x1) = (p.pw.min(p.row_len), (p.pw + p.iw).min(p.row_len));
    for ci in 0..p.cin_g {
        let plane = &img[ci * in_plane..][..in_plane];
        for r in 0..nrows {
            let dst = &mut buf[ci * chan_len + r * p.row_len..][..p.row_len];
            let iy = (oy0 * p.sh + r) as isize - p.ph as isize;
            if iy < 0 || iy >= p.ih as isize {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * p.iw..][..x1 - x0];
            if p.sw == 1 {
                copy(&mut dst[x0..x1], src);
            } else {
                split(src, tmp, dst);
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for short rows (7..56 floats), where libc's memcpy call costs
/// more than the copy itself.
fn copy_row(level: SimdLevel, dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    if level.min(detected_simd_level()) >= SimdLevel::Avx2 {
        // SAFETY: the level is clamped to what the CPU reported, so AVX2 is present.
        return unsafe { avx2::copy_row(dst, src) };
    }
    let _ = level;
    dst.copy_from_slice(src);
}

/// `dst[φ·wph + i] = src[φ + s·i]` for φ < s, i < wph.
fn deinterleave(level: SimdLevel, s: usize, wph: usize, src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if s == 2 && level.min(detected_simd_level()) >= SimdLevel::Avx2 {
        // SAFETY: the level is clamped to what the CPU reported, so AVX2 is present.
        return unsafe { avx2::deinterleave2(wph, src, dst) };
    }
    let _ = level;
    for (i, chunk) in src[..s * wph].chunks_exact(s).enumerate() {
        for (ph, &v) in chunk.iter().enumerate() {
            dst[ph * wph + i] = v;
        }
    }
}

/// Where one register block reads and writes, and its epilogue.
#[derive(Clone, Copy)]
struct Tile {
    /// Positions used (1..=NV).
    nv: usize,
    /// Per position: offset of its first input float in the copy.
    inp_off: [usize; NV],
    /// Per position: offset of its first output float (channel 0 of the block) in the output
    /// and residual.
    out_off: [usize; NV],
    /// Per position: output floats to store (≤ 8; fewer at a row's end).
    lanes: [usize; NV],
    /// Channels of the block to store (≤ CMAX; channel c's weights are those of channel
    /// block c / CB, `wstride` floats apart).
    nc: usize,
    /// Floats between consecutive output channels.
    plane: usize,
    /// Floats between consecutive channel blocks' packed weights.
    wstride: usize,
    bias: [f32; CMAX],
    /// Apply Relu after bias and residual.
    relu: bool,
}

/// One register block: `t.nv` vectors of output pixels × [`CB`] output channels over all
/// taps, then `v = acc + bias (+ residual)`, optional Relu, stored.
///
/// # Safety
/// For every position `i < t.nv` and tap `k`, `inp + t.inp_off[i] + offs[k] + 0..8` must be
/// readable; for every channel `c < t.nc`, `out + t.out_off[i] + c·t.plane + 0..t.lanes[i]`
/// (`lanes` ≤ 8) must be writable with no concurrent access and, when `res` is not null,
/// `res` + the same offsets readable. `w` holds `offs.len() × CB` floats.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    level: SimdLevel,
    w: &[f32],
    offs: &[usize],
    slice: usize,
    inp: *const f32,
    out: *mut f32,
    res: *const f32,
    t: &Tile,
) {
    debug_assert!(
        w.len() >= (t.nc.div_ceil(CB) - 1) * t.wstride + offs.len() * CB
            && (1..=NV).contains(&t.nv)
            && t.nc <= CMAX
    );
    #[cfg(target_arch = "x86_64")]
    if level.min(detected_simd_level()) >= SimdLevel::Avx2 {
        // SAFETY: AVX2+FMA are present (level clamped to the detected one); the memory
        // contract is the caller's.
        unsafe {
            match (t.nv, t.nc.div_ceil(CB)) {
                (6, _) => avx2::block::<6, CB>(w, offs, slice, inp, out, res, t),
                (5, _) => avx2::block::<5, CB>(w, offs, slice, inp, out, res, t),
                (4, _) => avx2::block::<4, CB>(w, offs, slice, inp, out, res, t),
                (3, _) => avx2::block::<3, CB>(w, offs, slice, inp, out, res, t),
                (2, 1) => avx2::block::<2, CB>(w, offs, slice, inp, out, res, t),
                (2, _) => avx2::block::<2, { 2 * CB }>(w, offs, slice, inp, out, res, t),
                (_, 1) => avx2::block::<1, CB>(w, offs, slice, inp, out, res, t),
                _ => avx2::block::<1, { 4 * CB }>(w, offs, slice, inp, out, res, t),
            }
        }
        return;
    }
    let _ = level;
    // SAFETY: the caller's contract.
    unsafe { block_scalar(w, offs, slice, inp, out, res, t) }
}

/// Portable [`block`]: same tap order and K slices; products rounded before the add (no FMA).
///
/// # Safety
/// As [`block`].
#[allow(clippy::needless_range_loop)]
unsafe fn block_scalar(
    w: &[f32],
    offs: &[usize],
    slice: usize,
    inp: *const f32,
    out: *mut f32,
    res: *const f32,
    t: &Tile,
) {
    let kg = offs.len();
    let mut tot = [[[0.0f32; LANES]; NV]; CMAX];
    let mut k0 = 0;
    while k0 < kg {
        let k1 = (k0 + slice).min(kg);
        let mut acc = [[[0.0f32; LANES]; NV]; CMAX];
        for k in k0..k1 {
            for i in 0..t.nv {
                // SAFETY: readable per the contract.
                let x =
                    unsafe { std::slice::from_raw_parts(inp.add(t.inp_off[i] + offs[k]), LANES) };
                for c in 0..t.nc {
                    let wv = w[(c / CB) * t.wstride + k * CB + c % CB];
                    for l in 0..LANES {
                        acc[c][i][l] += wv * x[l];
                    }
                }
            }
        }
        for c in 0..t.nc {
            for i in 0..t.nv {
                for l in 0..LANES {
                    tot[c][i][l] = if k0 == 0 {
                        acc[c][i][l]
                    } else {
                        tot[c][i][l] + acc[c][i][l]
                    };
                }
            }
        }
        k0 = k1;
    }
    for c in 0..t.nc {
        for i in 0..t.nv {
            let off = t.out_off[i] + c * t.plane;
            for l in 0..t.lanes[i] {
                let mut v = tot[c][i][l];
                v += if res.is_null() {
                    t.bias[c]
                } else {
                    // SAFETY: readable per the contract.
                    t.bias[c] + unsafe { *res.add(off + l) }
                };
                if t.relu && v < 0.0 {
                    v = 0.0;
                }
                // SAFETY: writable per the contract.
                unsafe { *out.add(off + l) = v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, CB, LANES};
    use std::arch::x86_64::*;

    /// AVX2+FMA register block of `N` vectors × [`CB`] channels (see [`super::block`]):
    /// per tap `CB` broadcasts, then per vector one load and `CB` FMAs (2 × 6 accumulators +
    /// 2 broadcasts + 1 load stay within the 16 registers: no spills).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; memory as in [`super::block`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub(super) unsafe fn block<const N: usize, const C: usize>(
        w: &[f32],
        offs: &[usize],
        slice: usize,
        inp: *const f32,
        out: *mut f32,
        res: *const f32,
        t: &Tile,
    ) {
        let kg = offs.len();
        let wp = w.as_ptr();
        let mut base = [inp; N];
        for i in 0..N {
            // SAFETY: an offset inside the input copy (caller's contract).
            base[i] = unsafe { inp.add(t.inp_off[i]) };
        }
        let mut tot = [[_mm256_setzero_ps(); N]; C];
        let mut k0 = 0;
        while k0 < kg {
            let k1 = (k0 + slice).min(kg);
            let mut acc = [[_mm256_setzero_ps(); N]; C];
            for k in k0..k1 {
                // SAFETY: k < kg = offs.len(); the reads are inside the copy and `w` holds
                // C / CB channel blocks of kg·CB floats, `wstride` apart (caller's contract).
                unsafe {
                    let o = *offs.get_unchecked(k);
                    if C == CB {
                        // CB broadcasts, then one load + CB FMAs per position (2 × 6
                        // accumulators + 2 broadcasts + 1 load: no spills).
                        let mut b = [_mm256_setzero_ps(); C];
                        for c in 0..C {
                            b[c] = _mm256_broadcast_ss(&*wp.add(k * CB + c));
                        }
                        for i in 0..N {
                            let x = _mm256_loadu_ps(base[i].add(o));
                            for c in 0..C {
                                acc[c][i] = _mm256_fmadd_ps(b[c], x, acc[c][i]);
                            }
                        }
                    } else {
                        // Few positions, many channels: loads first, one broadcast at a time.
                        let mut x = [_mm256_setzero_ps(); N];
                        for i in 0..N {
                            x[i] = _mm256_loadu_ps(base[i].add(o));
                        }
                        for c in 0..C {
                            let b = _mm256_broadcast_ss(
                                &*wp.add((c / CB) * t.wstride + k * CB + c % CB),
                            );
                            for i in 0..N {
                                acc[c][i] = _mm256_fmadd_ps(b, x[i], acc[c][i]);
                            }
                        }
                    }
                }
            }
            if k0 == 0 {
                tot = acc;
            } else {
                for c in 0..C {
                    for i in 0..N {
                        tot[c][i] = _mm256_add_ps(tot[c][i], acc[c][i]);
                    }
                }
            }
            k0 = k1;
        }
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let zero = _mm256_setzero_ps();
        for i in 0..N {
            let full = t.lanes[i] >= LANES;
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(t.lanes[i] as i32), idx);
            for c in 0..t.nc.min(C) {
                let off = t.out_off[i] + c * t.plane;
                let bias = _mm256_set1_ps(t.bias[c]);
                // SAFETY: `lanes[i]` floats at `off` are writable in `out` (and readable in
                // `res` when not null) per the caller's contract; the masked load and store
                // touch only those.
                unsafe {
                    let add = if res.is_null() {
                        bias
                    } else if full {
                        _mm256_add_ps(bias, _mm256_loadu_ps(res.add(off)))
                    } else {
                        _mm256_add_ps(bias, _mm256_maskload_ps(res.add(off), mask))
                    };
                    let mut v = _mm256_add_ps(tot[c][i], add);
                    if t.relu {
                        // maxps returns its second operand for NaN: Relu keeps NaN.
                        v = _mm256_max_ps(zero, v);
                    }
                    let d = out.add(off);
                    if full {
                        _mm256_storeu_ps(d, v);
                    } else {
                        _mm256_maskstore_ps(d, mask, v);
                    }
                }
            }
        }
    }

    /// [`super::fill_input`] with the AVX2 row copy and stride-2 split inlined.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn fill_input(
        p: &super::Plan,
        img: &[f32],
        oy0: usize,
        rows: usize,
        chan_len: usize,
        buf: &mut [f32],
        tmp: &mut [f32],
    ) {
        let (wph, sw, pw) = (p.wph, p.sw, p.pw);
        super::fill_input_body(
            p,
            img,
            oy0,
            rows,
            chan_len,
            buf,
            tmp,
            // SAFETY: this function's own contract (AVX2 present).
            |d, s| unsafe { copy_row(d, s) },
            |s, tmp, d| {
                if sw == 2 {
                    // SAFETY: as above.
                    unsafe { split2(s, d, wph, pw) }
                } else {
                    let x0 = pw.min(p.row_len);
                    // SAFETY: as above.
                    unsafe { copy_row(&mut tmp[x0..x0 + s.len()], s) };
                    super::deinterleave(super::SimdLevel::Scalar, sw, wph, tmp, d)
                }
            },
        )
    }

    /// Splits src[2j..2j + 16] into evens/odds[j..j + 8].
    ///
    /// # Safety
    /// AVX2; 2j + 16 ≤ src.len(), j + 8 ≤ evens.len(), odds.len().
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn step8(src: &[f32], evens: &mut [f32], odds: &mut [f32], j: usize) {
        // SAFETY: the bounds are the caller's contract.
        unsafe {
            let a = _mm256_loadu_ps(src.as_ptr().add(2 * j));
            let b = _mm256_loadu_ps(src.as_ptr().add(2 * j + LANES));
            // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then 64-bit blocks 0, 2, 1, 3.
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
            let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
            _mm256_storeu_ps(evens.as_mut_ptr().add(j), e);
            _mm256_storeu_ps(odds.as_mut_ptr().add(j), o);
        }
    }

    /// Stride-2 phase split of one input row straight from the input (no padded temporary:
    /// reading it back right after the shifted copy stalled on store forwarding). Input
    /// `src[x]` sits at padded column `x + pw`, i.e. phase `(x + pw) % 2`, index
    /// `(x + pw) / 2`: the even-x floats go to one phase and the odd-x ones to the other.
    /// Only those positions are written; the rest of `dst` keeps its zeros (see
    /// [`super::fill_input`]).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn split2(src: &[f32], dst: &mut [f32], wph: usize, pw: usize) {
        let n = src.len();
        let (pe, ie) = (pw % 2, pw / 2);
        let io = pw.div_ceil(2);
        let (ne, no) = (n.div_ceil(2), n / 2);
        assert!(ie + ne <= wph && io + no <= wph && dst.len() >= 2 * wph);
        let (evens, odds) = if pe == 0 {
            let (a, b) = dst.split_at_mut(wph);
            (&mut a[ie..ie + ne], &mut b[io..io + no])
        } else {
            let (a, b) = dst.split_at_mut(wph);
            (&mut b[ie..ie + ne], &mut a[io..io + no])
        };
        /// Splits src[2j..2j + 8] into evens/odds[j..j + 4].
        ///
        /// # Safety
        /// AVX2; 2j + 8 ≤ src.len(), j + 4 ≤ evens.len(), odds.len().
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn step4(src: &[f32], evens: &mut [f32], odds: &mut [f32], j: usize) {
            // SAFETY: the bounds are the caller's contract.
            unsafe {
                let a = _mm_loadu_ps(src.as_ptr().add(2 * j));
                let b = _mm_loadu_ps(src.as_ptr().add(2 * j + 4));
                _mm_storeu_ps(
                    evens.as_mut_ptr().add(j),
                    _mm_shuffle_ps::<0b10_00_10_00>(a, b),
                );
                _mm_storeu_ps(
                    odds.as_mut_ptr().add(j),
                    _mm_shuffle_ps::<0b11_01_11_01>(a, b),
                );
            }
        }
        // Pairs (src[2j], src[2j + 1]) for j < half, in vector steps; the last step overlaps
        // the previous one (rewriting the same values) instead of a scalar tail.
        let half = n / 2;
        let mut j = 0;
        // SAFETY (all steps): 2j + 16 (or + 8) ≤ 2·half ≤ n and j + 8 (or + 4) ≤ half ≤
        // no ≤ ne = the lengths of odds and evens; AVX2 is this function's contract.
        unsafe {
            if half >= 2 * 4 {
                while j + LANES <= half {
                    step8(src, evens, odds, j);
                    j += LANES;
                }
                if j < half {
                    step8(src, evens, odds, half - LANES);
                }
                j = half;
            } else if half >= 4 {
                step4(src, evens, odds, 0);
                if half > 4 {
                    step4(src, evens, odds, half - 4);
                }
                j = half;
            }
        }
        while j < half {
            evens[j] = src[2 * j];
            odds[j] = src[2 * j + 1];
            j += 1;
        }
        if n % 2 == 1 {
            evens[half] = src[n - 1];
        }
    }

    /// [`super::copy_row`] with 8-float loads/stores, the last chunk overlapping the previous
    /// one. `black_box` on the index keeps LLVM from turning the loops back into a memcpy call.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn copy_row(dst: &mut [f32], src: &[f32]) {
        let n = src.len().min(dst.len());
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        if n < LANES {
            for j in 0..n {
                let j = std::hint::black_box(j);
                dst[j] = src[j];
            }
            return;
        }
        let mut j = 0;
        while j + LANES < n {
            // SAFETY: j + 8 < n: in bounds of both slices.
            unsafe { _mm256_storeu_ps(d.add(j), _mm256_loadu_ps(s.add(j))) };
            j = std::hint::black_box(j + LANES);
        }
        // SAFETY: n ≥ 8: the last 8 floats are in bounds of both slices.
        unsafe { _mm256_storeu_ps(d.add(n - LANES), _mm256_loadu_ps(s.add(n - LANES))) };
    }

    /// `dst[i] = src[2i]`, `dst[wph + i] = src[2i + 1]` for `i < wph`.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn deinterleave2(wph: usize, src: &[f32], dst: &mut [f32]) {
        assert!(src.len() >= 2 * wph && dst.len() >= 2 * wph);
        let (even, odd) = dst.split_at_mut(wph);
        let mut i = 0;
        while i + LANES <= wph {
            // SAFETY: src[2i..2i + 16] and even/odd[i..i + 8] are in bounds (i + 8 ≤ wph and
            // the lengths asserted above).
            unsafe { step8(src, even, odd, i) };
            i += LANES;
        }
        for j in i..wph {
            even[j] = src[2 * j];
            odd[j] = src[2 * j + 1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{conv, conv_scratch_len, ConvAlgo, ConvGemm, PackedConvWeights};
    use crate::kernels::gemm::GemmBackend;
    use crate::kernels::test_util::{rand_vec, with_threads};

    /// Float64 grouped 2-D convolution with bias (the reference).
    fn conv_ref_2d(g: &ConvGeometry, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f64> {
        let (cin_g, cout_g) = (g.cin_per_group(), g.cout_per_group());
        let (ih, iw, oh, ow) = (
            g.in_spatial[0],
            g.in_spatial[1],
            g.out_spatial[0],
            g.out_spatial[1],
        );
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let mut y = vec![0.0f64; g.output_len()];
        for n in 0..g.batch {
            for co in 0..g.out_channels {
                let grp = co / cout_g;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = b[co] as f64;
                        for ci in 0..cin_g {
                            for ky in 0..kh {
                                let iy = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                    - g.pads_begin[0] as isize;
                                if iy < 0 || iy >= ih as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                        - g.pads_begin[1] as isize;
                                    if ix < 0 || ix >= iw as isize {
                                        continue;
                                    }
                                    let xv = x[((n * g.in_channels + grp * cin_g + ci) * ih
                                        + iy as usize)
                                        * iw
                                        + ix as usize]
                                        as f64;
                                    let wv = w[((co * cin_g + ci) * kh + ky) * kw + kx] as f64;
                                    s += xv * wv;
                                }
                            }
                        }
                        y[((n * g.out_channels + co) * oh + oy) * ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    /// (batch, channels in, in h, in w, channels out, kernel, stride, dilation, pads begin,
    /// pads end, group)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
    );

    fn cases() -> Vec<Case> {
        vec![
            // ResNeXt-like: 32 groups of 4/8/16/32 channels, stride 1 and 2, pad 1.
            (
                1,
                128,
                11,
                13,
                128,
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1],
                [1, 1],
                32,
            ),
            (
                1,
                256,
                12,
                9,
                256,
                [3, 3],
                [2, 2],
                [1, 1],
                [1, 1],
                [1, 1],
                32,
            ),
            (
                2,
                512,
                7,
                7,
                512,
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1],
                [1, 1],
                32,
            ),
            (
                1,
                1024,
                7,
                8,
                1024,
                [3, 3],
                [2, 2],
                [1, 1],
                [1, 1],
                [1, 1],
                32,
            ),
            (
                1,
                1024,
                5,
                5,
                1024,
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1],
                [1, 1],
                32,
            ),
            // Odd sizes, channel counts not a multiple of 4, asymmetric pads, dilation,
            // rectangular kernels, stride 3, wide rows (several vectors and a ragged tail).
            (1, 8, 9, 8, 12, [3, 3], [1, 1], [2, 2], [2, 1], [0, 2], 4),
            (2, 6, 10, 21, 9, [3, 2], [1, 2], [1, 1], [0, 1], [2, 0], 3),
            (1, 10, 13, 37, 6, [5, 3], [3, 1], [1, 2], [2, 2], [1, 2], 2),
            (1, 4, 6, 5, 8, [1, 1], [2, 2], [1, 1], [0, 0], [0, 0], 2),
            (1, 12, 8, 30, 12, [3, 3], [2, 3], [1, 1], [1, 0], [0, 1], 4),
            (1, 8, 9, 17, 8, [3, 5], [2, 2], [1, 1], [1, 2], [1, 2], 2),
            (
                1,
                64,
                14,
                14,
                64,
                [3, 3],
                [2, 2],
                [1, 1],
                [1, 1],
                [1, 1],
                32,
            ),
        ]
    }

    fn geom(c: &Case) -> ConvGeometry {
        let &(b, cin, h, w, cout, k, s, d, pb, pe, grp) = c;
        ConvGeometry::new(b, cin, &[h, w], cout, &k, &s, &d, &pb, &pe, grp).expect("valid case")
    }

    /// Runs `grouped_conv_with` at `level` on `threads` threads.
    #[allow(clippy::too_many_arguments)]
    fn run(
        level: SimdLevel,
        threads: usize,
        g: &ConvGeometry,
        x: &[f32],
        packed: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
        act: Activation,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; g.output_len()];
        let mut scratch = vec![f32::NAN; slot_len(g) * threads];
        with_threads(threads, || {
            grouped_conv_with(level, g, x, packed, bias, res, act, &mut out, &mut scratch)
        });
        out
    }

    fn max_err(out: &[f32], want: &[f64], res: Option<&[f32]>, act: Activation) -> f64 {
        out.iter()
            .enumerate()
            .map(|(i, &o)| {
                let e = want[i] + res.map_or(0.0, |r| r[i] as f64);
                let e = act.apply(e as f32) as f64;
                (o as f64 - e).abs()
            })
            .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m })
    }

    #[test]
    fn matches_f64_reference_every_level_threads_bit_identical() {
        for (ci, c) in cases().iter().enumerate() {
            let g = geom(c);
            assert!(applies(&g), "case {ci}");
            let x = rand_vec(g.input_len(), 1 + ci as u64);
            let w = rand_vec(g.weight_len(), 100 + ci as u64);
            let bias = rand_vec(g.out_channels, 200 + ci as u64);
            let res = rand_vec(g.output_len(), 300 + ci as u64);
            let want = conv_ref_2d(&g, &x, &w, &bias);
            let packed = pack_weights(&g, &w);
            let kg = (g.cin_per_group() * g.kernel_size()) as f64;
            let tol = 2e-6 * kg.sqrt() * 8.0 + 1e-5;
            for level in SimdLevel::available() {
                for (res, act) in [
                    (None, Activation::None),
                    (Some(&res[..]), Activation::Relu),
                    (Some(&res[..]), Activation::LeakyRelu(0.1)),
                ] {
                    let one = run(level, 1, &g, &x, &packed, &bias, res, act);
                    let err = max_err(&one, &want, res, act);
                    assert!(
                        err < tol,
                        "case {ci} {level:?} {act:?}: err {err} tol {tol}"
                    );
                    let two = run(level, 2, &g, &x, &packed, &bias, res, act);
                    assert!(
                        one.iter()
                            .zip(&two)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "case {ci} {level:?}: 1 and 2 threads differ"
                    );
                }
            }
        }
    }

    /// Through `conv()`: the algorithm is chosen for grouped convs (not for depthwise or
    /// group 1), scratch from `conv_scratch_len`, error vs float64 within that of im2col +
    /// GEMM on the same data (also on positive data with long K, where float32 sums lose most).
    #[test]
    fn conv_entry_chooses_grouped_and_error_within_im2col() {
        let mut worst = (0.0f64, 0.0f64);
        for (ci, c) in cases().iter().enumerate() {
            let g = geom(c);
            for positive in [false, true] {
                let pos = |v: Vec<f32>| {
                    if positive {
                        v.into_iter().map(f32::abs).collect()
                    } else {
                        v
                    }
                };
                let x = pos(rand_vec(g.input_len(), 11 + ci as u64));
                let w = pos(rand_vec(g.weight_len(), 12 + ci as u64));
                let bias = rand_vec(g.out_channels, 13 + ci as u64);
                let want = conv_ref_2d(&g, &x, &w, &bias);
                let gemm = ConvGemm::Crate(GemmBackend::Gemm);
                let direct = PackedConvWeights::with_gemm(&g, &w, Some(&bias), gemm).expect("pack");
                assert_eq!(direct.algo(), ConvAlgo::Grouped, "case {ci}");
                assert_eq!(direct.macs_executed(&g), g.macs());
                let im2col = PackedConvWeights::with_gemm_no_grouped(&g, &w, Some(&bias), gemm)
                    .expect("pack");
                assert_eq!(im2col.algo(), ConvAlgo::Im2col);
                let mut errs = [0.0f64; 2];
                for (k, pw) in [&direct, &im2col].into_iter().enumerate() {
                    let mut out = vec![f32::NAN; g.output_len()];
                    let mut scratch = vec![f32::NAN; conv_scratch_len(&g, pw, 2)];
                    with_threads(2, || {
                        conv(&g, &x, pw, None, Activation::None, &mut out, &mut scratch)
                    })
                    .expect("conv runs");
                    // Relative to the largest output (positive data: sums grow with K).
                    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    errs[k] = max_err(&out, &want, None, Activation::None) / scale;
                }
                worst.0 = worst.0.max(errs[0]);
                worst.1 = worst.1.max(errs[1]);
            }
        }
        eprintln!(
            "max relative error vs f64: grouped {:e}, im2col {:e}",
            worst.0, worst.1
        );
        assert!(worst.1 > 0.0);
        assert!(
            worst.0 <= worst.1,
            "grouped error {:e} above im2col's {:e}",
            worst.0,
            worst.1
        );
        // Not chosen for depthwise, group 1 or wide groups.
        for (cin, cout, grp) in [(16, 16, 16), (16, 16, 1), (256, 256, 2)] {
            let g = ConvGeometry::new(
                1,
                cin,
                &[8, 8],
                cout,
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                grp,
            )
            .expect("valid");
            let pw = PackedConvWeights::with_gemm(
                &g,
                &vec![0.5; g.weight_len()],
                None,
                ConvGemm::Crate(GemmBackend::Gemm),
            )
            .expect("pack");
            assert_ne!(pw.algo(), ConvAlgo::Grouped, "{cin} {cout} {grp}");
        }
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::kernels::test_util::{rand_vec, with_threads};

    /// Timing of ResNeXt-50's grouped convs on 1 thread (`cargo test --release -p engine --lib
    /// grouped_conv::bench -- --ignored --nocapture`); prints GFLOP/s, asserts nothing.
    #[test]
    #[ignore = "dev timing helper: prints GFLOP/s of the ResNeXt-50 shapes, asserts nothing"]
    fn resnext50_shapes() {
        for (c, h, s) in [
            (128, 56, 1),
            (256, 56, 2),
            (256, 28, 1),
            (512, 28, 2),
            (512, 14, 1),
            (1024, 14, 2),
            (1024, 7, 1),
        ] {
            // GC_BENCH=<c>-<h>-<s> runs one shape (for profiling).
            if std::env::var("GC_BENCH").is_ok_and(|v| v != format!("{c}-{h}-{s}")) {
                continue;
            }
            let g = ConvGeometry::new(
                1,
                c,
                &[h, h],
                c,
                &[3, 3],
                &[s, s],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                32,
            )
            .expect("valid");
            let x = rand_vec(g.input_len(), 1);
            let w = pack_weights(&g, &rand_vec(g.weight_len(), 2));
            let b = vec![0.0; c];
            let mut out = vec![0.0; g.output_len()];
            let mut scratch = vec![0.0; slot_len(&g)];
            let mut best = f64::MAX;
            with_threads(1, || {
                let iters = std::env::var("GC_ITERS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30);
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    grouped_conv(
                        &g,
                        &x,
                        &w,
                        &b,
                        None,
                        Activation::Relu,
                        &mut out,
                        &mut scratch,
                    );
                    best = best.min(t.elapsed().as_secs_f64());
                }
            });
            eprintln!(
                "c {c} h {h} s {s}: {:.3} ms, {:.1} GFLOP/s",
                best * 1e3,
                2.0 * g.macs() as f64 / best / 1e9
            );
        }
    }
}
