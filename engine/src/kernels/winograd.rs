//! Winograd convolution F(m×m, 3×3) for 2-D, stride-1, dilation-1, ungrouped 3×3 convs.
//!
//! Why: a 3×3 conv spends 9·Cin MACs per output value; Winograd computes an `m×m` output tile
//! from an `(m+2)×(m+2)` input tile with `(m+2)²` element-wise products per (Cin, Cout) pair:
//! 36 per 16 outputs for F(4×4) (4× fewer multiplies), 16 per 4 for F(2×2) (2.25× fewer). The
//! element-wise products summed over channels are `(m+2)²` independent GEMMs
//! `M[ξ] = U[ξ]·V[ξ]` (`Cout×Cin` times `Cin×tiles`), run as one grouped 1×1 conv on
//! [`super::pointwise_conv`] with `U` packed at load.
//!
//! Steps per image (each a parallel loop; results do not depend on the thread count because
//! every value is computed by one task with a fixed order):
//! 1. input transform `V = Bᵀ d B` per channel and tile, layout `[c][ξ][tile]` (one task per
//!    channel); tiles of one tile row are transformed 8 at a time across SIMD-friendly lanes;
//! 2. the GEMMs into `M[ξ][co][tile]` (the 1×1 kernel's items: ξ × tile blocks × rows);
//! 3. output transform `Y = Aᵀ M A` per output channel, with bias, residual and activation
//!    applied while the tile is in registers, clipped at the image's right/bottom edges.
//!
//! Accuracy (conv.rs tests, max error vs float64): F(2×2) measured at or below im2col's
//! error; F(4×4) ~12× im2col's (larger transform constants), so it is opt-in only. The weight transform `G g Gᵀ` is done
//! in f64 at load.

use super::conv::ConvGeometry;
use super::cpu_features::{detected_simd_level, simd_level, SimdLevel};
use super::elementwise::bias_residual_activation_with;
use super::pointwise_conv::{self, pointwise_with_layout, InputLayout};
use crate::ir::Activation;
use rayon::prelude::*;

/// Tiles transformed together (one f32 per lane of an AVX2 vector).
const LANES: usize = 8;

/// Which output tile size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WinogradTile {
    /// F(2×2, 3×3): 16 products per 4 outputs.
    F2,
    /// F(4×4, 3×3): 36 products per 16 outputs.
    F4,
}

impl WinogradTile {
    /// Output tile side `m`.
    pub fn m(self) -> usize {
        match self {
            WinogradTile::F2 => 2,
            WinogradTile::F4 => 4,
        }
    }
    /// Input tile side `m + 2`.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }
}

const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const AT2: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

const BT4: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
const AT4: [[f32; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// Transformed weights `U[ξ][co][ci]` (`ξ` over the `alpha²` tile positions), packed for the
/// element-wise GEMMs: they run as one `alpha²`-group 1×1 conv on [`super::pointwise_conv`]
/// (weights packed here, once, instead of by a crate GEMM on every call).
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    pub tile: WinogradTile,
    pub cout: usize,
    pub cin: usize,
    packed: Vec<f32>,
    /// The GEMMs' bias (none: the conv's bias is added by the output transform).
    zeros: Vec<f32>,
    /// The GEMMs' geometry for the tile count of the first call (a node always has the same
    /// shape), kept so that a run allocates nothing (a `ConvGeometry` holds vectors).
    gemm: std::sync::OnceLock<(usize, ConvGeometry)>,
}

impl WinogradWeights {
    /// Transforms OIHW 3×3 `weights` (`cout × cin × 9`).
    ///
    /// # Panics
    /// If `weights.len() != cout·cin·9`.
    pub fn new(tile: WinogradTile, cout: usize, cin: usize, weights: &[f32]) -> WinogradWeights {
        assert_eq!(weights.len(), cout * cin * 9, "winograd: bad weight length");
        let a = tile.alpha();
        let g: &[[f64; 3]] = match tile {
            WinogradTile::F2 => &G2,
            WinogradTile::F4 => &G4,
        };
        let mut u = vec![0.0f32; a * a * cout * cin];
        for co in 0..cout {
            for ci in 0..cin {
                let w = &weights[(co * cin + ci) * 9..(co * cin + ci + 1) * 9];
                // t = G·w (a×3), then u = t·Gᵀ (a×a), in f64.
                let mut t = [[0.0f64; 3]; 6];
                for (i, gi) in g.iter().enumerate() {
                    for j in 0..3 {
                        t[i][j] = (0..3).map(|k| gi[k] * w[k * 3 + j] as f64).sum();
                    }
                }
                for i in 0..a {
                    for (j, gj) in g.iter().enumerate() {
                        let v: f64 = (0..3).map(|k| t[i][k] * gj[k]).sum();
                        u[((i * a + j) * cout + co) * cin + ci] = v as f32;
                    }
                }
            }
        }
        let g = gemm_geometry(a * a, cout, cin, 1);
        WinogradWeights {
            tile,
            cout,
            cin,
            packed: pointwise_conv::pack_weights(&g, &u),
            zeros: vec![0.0; a * a * cout],
            gemm: std::sync::OnceLock::new(),
        }
    }

    /// The element-wise GEMMs' geometry over `tiles` positions: the kept one when the tile
    /// count is the first call's, otherwise built anew.
    fn gemm(&self, tiles: usize) -> std::borrow::Cow<'_, ConvGeometry> {
        let aa = self.tile.alpha() * self.tile.alpha();
        let kept = self
            .gemm
            .get_or_init(|| (tiles, gemm_geometry(aa, self.cout, self.cin, tiles)));
        if kept.0 == tiles {
            std::borrow::Cow::Borrowed(&kept.1)
        } else {
            std::borrow::Cow::Owned(gemm_geometry(aa, self.cout, self.cin, tiles))
        }
    }

    /// Bytes held by the transformed weights.
    pub fn bytes(&self) -> usize {
        (self.packed.len() + self.zeros.len()) * 4
    }
}

/// The element-wise GEMMs `M[ξ] = U[ξ]·V[ξ]` as one 1×1 conv with a group per ξ over a
/// "plane" of `tiles` positions.
fn gemm_geometry(elements: usize, cout: usize, cin: usize, tiles: usize) -> ConvGeometry {
    ConvGeometry::new(
        1,
        elements * cin,
        &[tiles],
        elements * cout,
        &[1],
        &[1],
        &[1],
        &[0],
        &[0],
        elements,
    )
    .expect("a 1×1 conv geometry with whole groups is valid")
}

/// Image and tile dimensions of one call.
#[derive(Debug, Clone, Copy)]
pub struct WinogradShape {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl WinogradShape {
    fn tiles(&self, tile: WinogradTile) -> (usize, usize) {
        let m = tile.m();
        (self.out_h.div_ceil(m), self.out_w.div_ceil(m))
    }
    /// Floats per channel of the transformed input: `alpha²·tiles` plus a padded strip of
    /// `alpha` input rows used to gather tiles without bounds checks, rounded up to whole
    /// 64-byte lines so that every channel's rows start on a line: the GEMMs' 16-float loads
    /// then never split over two lines (ResNet-50 at 1 thread, per node: the F(2×2) convs at
    /// 56×56, read in place, 0.92–0.95× the time; at 28×28, packed, 0.95–0.98×; 14×14 and 7×7
    /// 0.98–1.02×).
    fn v_stride(&self, tile: WinogradTile) -> usize {
        let (th, tw) = self.tiles(tile);
        let a = tile.alpha();
        (a * a * th * tw + a * self.strip_w(tile)).next_multiple_of(16)
    }
    /// Floats per strip row: every group of [`LANES`] tiles, the last one included, reads a
    /// full window (zeros past the image).
    fn strip_w(&self, tile: WinogradTile) -> usize {
        let (_, tw) = self.tiles(tile);
        tw.div_ceil(LANES) * LANES * tile.m() + 2
    }
}

/// Scratch floats needed by [`winograd_conv`] on `threads` threads (with less, down to the
/// one-thread size, fewer GEMM items run at once).
pub fn winograd_scratch_len(w: &WinogradWeights, s: &WinogradShape, threads: usize) -> usize {
    let (th, tw) = s.tiles(w.tile);
    let a = w.tile.alpha();
    let g = w.gemm(th * tw);
    w.cin * s.v_stride(w.tile) + a * a * w.cout * th * tw + pointwise_conv::scratch_len(&g, threads)
}

/// Multiplies (MACs) the element-wise GEMMs execute for one call (transforms not counted; they
/// are additions plus a few multiplies by small constants per tile).
pub fn winograd_macs(w: &WinogradWeights, s: &WinogradShape) -> u64 {
    let (th, tw) = s.tiles(w.tile);
    let a = w.tile.alpha();
    (s.batch * a * a * th * tw) as u64 * (w.cout * w.cin) as u64
}

/// `output = act(conv3x3(input) + bias + residual)` for NCHW `input` (`batch×cin×in_h×in_w`)
/// and `output` (`batch×cout×out_h×out_w`). The caller (conv.rs) has checked every length and
/// that the geometry is a stride-1, dilation-1, 3×3, ungrouped 2-D conv whose output fits
/// `in + pads − 2` (so the bottom/right pads are implied by `out_h`, `out_w`).
///
/// # Panics
/// If `scratch` is shorter than [`winograd_scratch_len`] or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub fn winograd_conv(
    w: &WinogradWeights,
    s: &WinogradShape,
    input: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    winograd_conv_with(
        simd_level(),
        w,
        s,
        input,
        bias,
        residual,
        act,
        output,
        scratch,
    )
}

/// [`winograd_conv`] with the transforms compiled for a forced SIMD level (tests check that
/// every level gives the same values).
#[allow(clippy::too_many_arguments)]
pub fn winograd_conv_with(
    level: SimdLevel,
    w: &WinogradWeights,
    s: &WinogradShape,
    input: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    match w.tile {
        WinogradTile::F2 => run::<2, 4>(w, s, input, bias, residual, act, output, scratch, level),
        WinogradTile::F4 => run::<4, 6>(w, s, input, bias, residual, act, output, scratch, level),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<const M: usize, const A: usize>(
    w: &WinogradWeights,
    s: &WinogradShape,
    input: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
    level: SimdLevel,
) {
    let (cin, cout) = (w.cin, w.cout);
    let (th, tw) = s.tiles(w.tile);
    let tiles = th * tw;
    let aa = A * A;
    let vs = s.v_stride(w.tile);
    let (ip, op) = (s.in_h * s.in_w, s.out_h * s.out_w);
    assert!(
        scratch.len() >= winograd_scratch_len(w, s, 1),
        "winograd: scratch too short"
    );
    assert!(input.len() >= s.batch * cin * ip && output.len() >= s.batch * cout * op);
    assert!(bias.len() >= cout);
    let (vbuf, rest) = scratch.split_at_mut(cin * vs);
    let (mbuf, gemm_scratch) = rest.split_at_mut(aa * cout * tiles);
    let g = w.gemm(tiles);
    // V[ξ] row c (channel c of group ξ) starts at c·vs + ξ·tiles.
    let layout = InputLayout {
        image: 0,
        group: tiles,
        channel: vs,
    };
    for n in 0..s.batch {
        let img = &input[n * cin * ip..(n + 1) * cin * ip];
        // 1. Input transform, one task per channel.
        vbuf.par_chunks_mut(vs).enumerate().for_each(|(c, vc)| {
            input_channel_dispatch::<M, A>(level, s, &img[c * ip..(c + 1) * ip], vc)
        });
        // 2. The element-wise GEMMs M[ξ] (cout×tiles) = U[ξ] (cout×cin) · V[ξ], as one
        // grouped 1×1 conv into M[ξ][co][tile]. It runs at the machine's level, not the
        // transforms' `level`, so every transform level gives the same values.
        pointwise_with_layout(
            simd_level(),
            &g,
            vbuf,
            layout,
            &w.packed,
            &w.zeros,
            None,
            Activation::None,
            mbuf,
            gemm_scratch,
        );
        // 3. Output transform + epilogue, one task per output channel.
        let mref: &[f32] = mbuf;
        let out_img = &mut output[n * cout * op..(n + 1) * cout * op];
        let res_img = residual.map(|r| &r[n * cout * op..(n + 1) * cout * op]);
        out_img.par_chunks_mut(op).enumerate().for_each(|(co, y)| {
            let res = res_img.map(|r| &r[co * op..(co + 1) * op]);
            let mco = OutChannel {
                m: mref,
                cout,
                co,
                tiles,
                bias: bias[co],
                residual: res,
                act,
            };
            output_channel_dispatch::<M, A>(level, s, &mco, y)
        });
    }
}

/// Step 1 for one input channel: `plane` (`in_h×in_w`) into `vc` (`[ξ][tile]`, then the strip).
///
/// Always inlined into a baseline and an AVX2+FMA copy ([`input_channel_dispatch`]): the
/// transform is plain Rust over `LANES`-wide arrays, which LLVM turns into one 256-bit vector
/// per row when AVX2 is enabled (4-wide SSE otherwise). No FMA contraction happens (Rust does not
/// fuse `a*b+c`), so both copies compute bit-identical values.
#[inline(always)]
fn input_channel<const M: usize, const A: usize>(s: &WinogradShape, plane: &[f32], vc: &mut [f32]) {
    let tile = if M == 2 {
        WinogradTile::F2
    } else {
        WinogradTile::F4
    };
    let (th, tw) = s.tiles(tile);
    let tiles = th * tw;
    let sw = s.strip_w(tile);
    let (v, strip) = vc.split_at_mut(A * A * tiles);
    for ty in 0..th {
        // Rows ty·M − pad_top .. + A of the input, zero-padded, into the strip.
        for k in 0..A {
            let row = &mut strip[k * sw..(k + 1) * sw];
            let iy = (ty * M + k) as isize - s.pad_top as isize;
            if iy < 0 || iy >= s.in_h as isize {
                row.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * s.in_w..(iy as usize + 1) * s.in_w];
            let x0 = s.pad_left.min(sw);
            zero_short(&mut row[..x0]);
            let len = s.in_w.min(sw - x0);
            row[x0..x0 + len].copy_from_slice(&src[..len]);
            zero_short(&mut row[x0 + len..]);
        }
        let mut tx0 = 0;
        while tx0 < tw {
            // A ragged last group computes all lanes from the strip's zero tail (see
            // `strip_w`) and stores its `nl`.
            let nl = LANES.min(tw - tx0);
            let t0 = ty * tw + tx0;
            let x = tx0 * M;
            if M == 2 {
                let win = |k: usize| -> &[f32; 2 * LANES + 2] {
                    strip[k * sw + x..k * sw + x + 2 * LANES + 2]
                        .try_into()
                        .expect("window inside the strip")
                };
                let t = input_group_f2([win(0), win(1), win(2), win(3)]);
                for (xi, txi) in t.iter().flatten().enumerate() {
                    store_lanes(&mut v[xi * tiles + t0..xi * tiles + t0 + nl], txi);
                }
            } else {
                let mut d = [[[0.0f32; LANES]; A]; A];
                for (k, dk) in d.iter_mut().enumerate() {
                    // Fixed-size window: bounds checked once, gathers become shuffles.
                    let win = &strip[k * sw + x..k * sw + x + (LANES - 1) * M + A];
                    for (j, dkj) in dk.iter_mut().enumerate() {
                        for (l, x) in dkj.iter_mut().enumerate() {
                            *x = win[l * M + j];
                        }
                    }
                }
                let t = input_transform::<M, A>(&d);
                for (xi, txi) in t.iter().flatten().enumerate() {
                    store_lanes(&mut v[xi * tiles + t0..xi * tiles + t0 + nl], txi);
                }
            }
            tx0 += nl;
        }
    }
}

/// `dst = src[..dst.len()]` (`dst` at most [`LANES`] long): one vector store for a full group.
#[inline(always)]
fn store_lanes(dst: &mut [f32], src: &[f32; LANES]) {
    if let Ok(full) = <&mut [f32; LANES]>::try_from(&mut *dst) {
        *full = *src;
    } else {
        let n = dst.len();
        copy_short(dst, &src[..n]);
    }
}

/// F(2×2)'s input transform of [`LANES`] tiles side by side, straight from the strip: `rows[k]`
/// holds row `k` of the tiles from the first tile's first column (tile `l` starts `2l`
/// further). Each row's columns are combined first (`Bᵀ` rows: `d0 − d2`, `d1 + d2`,
/// `d2 − d1`, `d1 − d3`), then the rows; returns `r[i][j]` (`ξ = 4i + j`) per lane. Written
/// out so that the values stay in registers: the generic gather-then-transform kept its
/// arrays on the stack and took a third of a 64-channel 56×56 conv's time.
#[inline(always)]
fn input_group_f2(rows: [&[f32; 2 * LANES + 2]; 4]) -> [[[f32; LANES]; 4]; 4] {
    let mut h = [[[0.0f32; LANES]; 4]; 4];
    for (w, hk) in rows.iter().zip(h.iter_mut()) {
        let mut c = [[0.0f32; LANES]; 4];
        for (j, cj) in c.iter_mut().enumerate() {
            for (l, x) in cj.iter_mut().enumerate() {
                *x = w[2 * l + j];
            }
        }
        *hk = [
            sub(&c[0], &c[2]),
            add(&c[1], &c[2]),
            sub(&c[2], &c[1]),
            sub(&c[1], &c[3]),
        ];
    }
    let mut r = [[[0.0f32; LANES]; 4]; 4];
    for j in 0..4 {
        r[0][j] = sub(&h[0][j], &h[2][j]);
        r[1][j] = add(&h[1][j], &h[2][j]);
        r[2][j] = sub(&h[2][j], &h[1][j]);
        r[3][j] = sub(&h[1][j], &h[3][j]);
    }
    r
}

/// Runs [`input_channel`] compiled for the best SIMD level `level` allows on this CPU.
fn input_channel_dispatch<const M: usize, const A: usize>(
    level: SimdLevel,
    s: &WinogradShape,
    plane: &[f32],
    vc: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must support AVX2 and FMA (the caller checks `level` against run-time
        /// detection); the body is safe code compiled with those features enabled.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<const M: usize, const A: usize>(
            s: &WinogradShape,
            plane: &[f32],
            vc: &mut [f32],
        ) {
            input_channel::<M, A>(s, plane, vc)
        }
        if level.min(detected_simd_level()) >= SimdLevel::Avx2 {
            // SAFETY: the level is clamped to what the CPU reported at run time, so AVX2 and
            // FMA are present; the body is safe Rust (bounds-checked slices).
            unsafe { avx2::<M, A>(s, plane, vc) };
            return;
        }
    }
    input_channel::<M, A>(s, plane, vc)
}

/// What step 3 needs to produce one output channel.
struct OutChannel<'a> {
    /// All `M[ξ][co][tile]` products.
    m: &'a [f32],
    cout: usize,
    co: usize,
    tiles: usize,
    bias: f32,
    residual: Option<&'a [f32]>,
    act: Activation,
}

/// Step 3 for one output channel into `y` (`out_h×out_w`): the output transform of each tile
/// row written straight into the output rows, then bias, residual and activation over those
/// rows while they are in L1 (one vectorised epilogue call per row instead of a branchy scalar
/// store per value). Inlined into a baseline and an AVX2+FMA copy like [`input_channel`].
#[inline(always)]
fn output_channel<const M: usize, const A: usize>(
    s: &WinogradShape,
    oc: &OutChannel,
    y: &mut [f32],
    level: SimdLevel,
) {
    let tile = if M == 2 {
        WinogradTile::F2
    } else {
        WinogradTile::F4
    };
    let (th, tw) = s.tiles(tile);
    let (tiles, cout, co) = (oc.tiles, oc.cout, oc.co);
    let ow = s.out_w;
    // The F(2×2) groups' 16-float row segments take the epilogue as they are stored (the
    // activations `epilogue_in_registers` reproduces); the rest of each row afterwards.
    let fused = M == 2 && epilogue_in_registers(oc.act);
    for ty in 0..th {
        let rows_here = M.min(s.out_h - ty * M);
        let band = &mut y[ty * M * ow..(ty * M + rows_here) * ow];
        // Columns from 0 whose epilogue is done (the same in every row of the band).
        let mut done = 0;
        let mut tx0 = 0;
        while tx0 < tw {
            let nl = LANES.min(tw - tx0);
            let t0 = ty * tw + tx0;
            let x0 = tx0 * M;
            if M == 2 && nl == LANES {
                let mut m = [&[0.0f32; LANES]; 16];
                for (xi, mx) in m.iter_mut().enumerate() {
                    let src = (xi * cout + co) * tiles + t0;
                    *mx = oc.m[src..src + LANES].try_into().expect("LANES-long slice");
                }
                let o = output_group_f2(m);
                let fuse_here = fused && x0 + 2 * LANES <= ow && done == x0;
                for (i, oi) in o.iter().enumerate().take(rows_here) {
                    let row = &mut band[i * ow..(i + 1) * ow];
                    let n = (2 * LANES).min(ow - x0);
                    if let Ok(seg) = <&mut [f32; 2 * LANES]>::try_from(&mut row[x0..x0 + n]) {
                        if fuse_here {
                            let at = (ty * M + i) * ow + x0;
                            let res = oc.residual.map(|r| &r[at..at + 2 * LANES]);
                            epilogue_segment(seg, oi, oc.bias, res, oc.act);
                        } else {
                            *seg = *oi;
                        }
                    } else {
                        row[x0..x0 + n].copy_from_slice(&oi[..n]);
                    }
                }
                if fuse_here {
                    done = x0 + 2 * LANES;
                }
                tx0 += nl;
                continue;
            }
            let mut mm = [[[0.0f32; LANES]; A]; A];
            for (i, mi) in mm.iter_mut().enumerate() {
                for (j, mij) in mi.iter_mut().enumerate() {
                    let src = (((i * A + j) * cout) + co) * tiles + t0;
                    if nl == LANES {
                        let s: &[f32; LANES] =
                            oc.m[src..src + LANES].try_into().expect("LANES-long slice");
                        *mij = *s;
                    } else {
                        copy_short(&mut mij[..nl], &oc.m[src..src + nl]);
                    }
                }
            }
            let o = output_transform::<M, A>(&mm);
            for (i, oi) in o.iter().enumerate().take(rows_here) {
                let row = &mut band[i * ow..(i + 1) * ow];
                if nl == LANES && x0 + LANES * M <= ow {
                    let seg = &mut row[x0..x0 + LANES * M];
                    for l in 0..LANES {
                        for (j, oij) in oi.iter().enumerate() {
                            seg[l * M + j] = oij[l];
                        }
                    }
                } else {
                    for l in 0..nl {
                        for (j, oij) in oi.iter().enumerate() {
                            let ox = x0 + l * M + j;
                            if ox < ow {
                                row[ox] = oij[l];
                            }
                        }
                    }
                }
            }
            tx0 += nl;
        }
        if done < ow {
            for i in 0..rows_here {
                let oy = ty * M + i;
                let res = oc.residual.map(|r| &r[oy * ow + done..(oy + 1) * ow]);
                bias_residual_activation_with(
                    level,
                    &mut band[i * ow + done..(i + 1) * ow],
                    oc.bias,
                    res,
                    oc.act,
                );
            }
        }
    }
}

/// Runs [`output_channel`] compiled for the best SIMD level `level` allows on this CPU.
fn output_channel_dispatch<const M: usize, const A: usize>(
    level: SimdLevel,
    s: &WinogradShape,
    oc: &OutChannel,
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must support AVX2 and FMA (the caller checks `level` against run-time
        /// detection); the body is safe code compiled with those features enabled.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<const M: usize, const A: usize>(
            s: &WinogradShape,
            oc: &OutChannel,
            y: &mut [f32],
            level: SimdLevel,
        ) {
            output_channel::<M, A>(s, oc, y, level)
        }
        if level.min(detected_simd_level()) >= SimdLevel::Avx2 {
            // SAFETY: the level is clamped to what the CPU reported at run time, so AVX2 and
            // FMA are present; the body is safe Rust (bounds-checked slices).
            unsafe { avx2::<M, A>(s, oc, y, level) };
            return;
        }
    }
    output_channel::<M, A>(s, oc, y, level)
}

/// Whether [`epilogue_segment`] gives `bias_residual_activation`'s values for `act` (its
/// sigmoid is an approximation that stays in the row pass).
#[inline(always)]
fn epilogue_in_registers(act: Activation) -> bool {
    matches!(
        act,
        Activation::None | Activation::Relu | Activation::LeakyRelu(_) | Activation::Clip(..)
    )
}

/// `seg = act(vals + bias [+ residual])` with `bias_residual_activation`'s operation order
/// (`v + (bias + r)`; `v + bias` only for a non-zero bias), for one stored segment of an
/// output row: the separate pass over every row, while the rows were still in L1, took a
/// twelfth of a 64-channel 56×56 conv's time in its call overhead and reloads. (Not the row
/// pass's own body, `elementwise::epilogue_body`: over a slice of run-time length the conv
/// took 1.08–1.09× this fixed-length copy's time.)
#[inline(always)]
fn epilogue_segment(
    seg: &mut [f32; 2 * LANES],
    vals: &[f32; 2 * LANES],
    bias: f32,
    residual: Option<&[f32]>,
    act: Activation,
) {
    let mut v = *vals;
    match residual {
        Some(r) => {
            let r: &[f32; 2 * LANES] = r.try_into().expect("a 16-float residual segment");
            for (x, &r) in v.iter_mut().zip(r) {
                *x += bias + r;
            }
        }
        None if bias != 0.0 => v.iter_mut().for_each(|x| *x += bias),
        None => {}
    }
    match act {
        Activation::Relu => v
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x }),
        Activation::LeakyRelu(a) => v
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { *x * a } else { *x }),
        Activation::Clip(lo, hi) => v.iter_mut().for_each(|x| *x = x.max(lo).min(hi)),
        Activation::None | Activation::Sigmoid => {}
    }
    *seg = v;
}

/// `Bᵀ` for tile side `M` as a value the compiler sees whole: inlined into the transforms, the
/// loops over it unroll and its 0 and ±1 entries fold into plain adds. (Passed as a run-time
/// reference, every term cost a zero test and a multiply: the input transform took a third
/// of ResNet-50's 64-channel 56×56 Winograd conv.)
#[inline(always)]
fn bt_matrix<const M: usize, const A: usize>() -> [[f32; A]; A] {
    let mut m = [[0.0f32; A]; A];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if M == 2 { BT2[i][j] } else { BT4[i][j] };
        }
    }
    m
}

/// `Aᵀ` for tile side `M` (see [`bt_matrix`]).
#[inline(always)]
fn at_matrix<const M: usize, const A: usize>() -> [[f32; A]; M] {
    let mut m = [[0.0f32; A]; M];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if M == 2 { AT2[i][j] } else { AT4[i][j] };
        }
    }
    m
}

/// `dst = src` for the few floats of a ragged lane group or a pad: as constant-length copies,
/// not the memcpy call an unknown length compiles to (which, 16 per ragged group, took a
/// tenth of the input transform's time).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    macro_rules! fixed {
        ($($n:literal)*) => {
            match src.len() {
                $($n => dst[..$n].copy_from_slice(&src[..$n]),)*
                _ => dst.copy_from_slice(src),
            }
        };
    }
    fixed!(0 1 2 3 4 5 6 7 8)
}

/// `dst = 0` for a few floats (see [`copy_short`]).
#[inline(always)]
fn zero_short(dst: &mut [f32]) {
    for chunk in dst.chunks_mut(LANES) {
        copy_short(chunk, &[0.0; LANES][..chunk.len()]);
    }
}

/// `a − b` and `a + b` lane by lane (one vector op each once inlined).
/// (Plain loops, not `array::from_fn` or `map`: their closures were not inlined into the
/// AVX2 copies, and every vector went through a call and the stack.)
#[inline(always)]
fn sub(a: &[f32; LANES], b: &[f32; LANES]) -> [f32; LANES] {
    let mut r = [0.0f32; LANES];
    for l in 0..LANES {
        r[l] = a[l] - b[l];
    }
    r
}
#[inline(always)]
fn add(a: &[f32; LANES], b: &[f32; LANES]) -> [f32; LANES] {
    let mut r = [0.0f32; LANES];
    for l in 0..LANES {
        r[l] = a[l] + b[l];
    }
    r
}

/// F(2×2)'s output transform of [`LANES`] tiles side by side: `m[ξ]` holds product `ξ`
/// (`ξ = 4i + j`) of each tile; returns the tiles' two output rows, tile `l`'s outputs at
/// `2l, 2l + 1`. Same operations in the same order as [`output_transform`] (rows of `m`
/// combined first), written out so that the values stay in registers.
#[inline(always)]
fn output_group_f2(m: [&[f32; LANES]; 16]) -> [[f32; 2 * LANES]; 2] {
    // t[i][j] = (Aᵀ m)[i][j]: m0j + m1j + m2j and m1j − m2j − m3j.
    let mut t = [[[0.0f32; LANES]; 4]; 2];
    for j in 0..4 {
        t[0][j] = add(&add(m[j], m[4 + j]), m[8 + j]);
        t[1][j] = sub(&sub(m[4 + j], m[8 + j]), m[12 + j]);
    }
    let mut out = [[0.0f32; 2 * LANES]; 2];
    for (ti, row) in t.iter().zip(out.iter_mut()) {
        let y0 = add(&add(&ti[0], &ti[1]), &ti[2]);
        let y1 = sub(&sub(&ti[1], &ti[2]), &ti[3]);
        for l in 0..LANES {
            row[2 * l] = y0[l];
            row[2 * l + 1] = y1[l];
        }
    }
    out
}

/// `Bᵀ d B` on `LANES` tiles at once; returns the `A×A` transformed values (`ξ = i·A + j`).
#[inline(always)]
fn input_transform<const M: usize, const A: usize>(
    d: &[[[f32; LANES]; A]; A],
) -> [[[f32; LANES]; A]; A] {
    let bt = bt_matrix::<M, A>();
    // t = Bᵀ d (A×A), then r = t B, i.e. r[i][j] = Σ_k t[i][k]·Bᵀ[j][k].
    let mut t = [[[0.0f32; LANES]; A]; A];
    for i in 0..A {
        for k in 0..A {
            let c = bt[i][k];
            if c == 0.0 {
                continue;
            }
            for j in 0..A {
                for l in 0..LANES {
                    t[i][j][l] += c * d[k][j][l];
                }
            }
        }
    }
    let mut r = [[[0.0f32; LANES]; A]; A];
    for i in 0..A {
        for j in 0..A {
            for k in 0..A {
                let c = bt[j][k];
                if c == 0.0 {
                    continue;
                }
                for l in 0..LANES {
                    r[i][j][l] += c * t[i][k][l];
                }
            }
        }
    }
    r
}

/// `Aᵀ m A` on `LANES` tiles at once; returns the `M×M` output tile (per lane).
#[inline(always)]
fn output_transform<const M: usize, const A: usize>(
    m: &[[[f32; LANES]; A]; A],
) -> [[[f32; LANES]; M]; M] {
    let at = at_matrix::<M, A>();
    let mut t = [[[0.0f32; LANES]; A]; M];
    for i in 0..M {
        for k in 0..A {
            let c = at[i][k];
            if c == 0.0 {
                continue;
            }
            for j in 0..A {
                for l in 0..LANES {
                    t[i][j][l] += c * m[k][j][l];
                }
            }
        }
    }
    let mut r = [[[0.0f32; LANES]; M]; M];
    for i in 0..M {
        for j in 0..M {
            for k in 0..A {
                let c = at[j][k];
                if c == 0.0 {
                    continue;
                }
                for l in 0..LANES {
                    r[i][j][l] += c * t[i][k][l];
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{max_abs_diff, rand_vec};

    /// Naive f64 3×3 stride-1 conv with the same padding convention, plus bias and residual,
    /// before the activation (reference).
    fn reference(
        s: &WinogradShape,
        cin: usize,
        cout: usize,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
    ) -> Vec<f32> {
        let (ip, op) = (s.in_h * s.in_w, s.out_h * s.out_w);
        let mut y = vec![0.0f32; s.batch * cout * op];
        for n in 0..s.batch {
            for co in 0..cout {
                for oy in 0..s.out_h {
                    for ox in 0..s.out_w {
                        let mut acc = bias[co] as f64;
                        for ci in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (oy + ky) as isize - s.pad_top as isize;
                                    let ix = (ox + kx) as isize - s.pad_left as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= s.in_h as isize
                                        || ix >= s.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x
                                        [(n * cin + ci) * ip + iy as usize * s.in_w + ix as usize]
                                        as f64;
                                    acc += xv * w[((co * cin + ci) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                        let idx = (n * cout + co) * op + oy * s.out_w + ox;
                        y[idx] = (acc + res.map_or(0.0, |r| r[idx] as f64)) as f32;
                    }
                }
            }
        }
        y
    }

    /// Every SIMD level's transforms give the same values, close to the f64 reference, on
    /// shapes with full 8-tile lane groups, ragged right/bottom edges and asymmetric pads.
    #[test]
    fn simd_levels_agree_and_match_reference() {
        // (batch, cin, cout, in_h, in_w, out_h, out_w, pad_top, pad_left)
        let cases = [
            (1, 16, 8, 19, 19, 19, 19, 1, 1),
            (2, 8, 5, 37, 35, 37, 35, 1, 1),
            (1, 4, 3, 20, 41, 18, 40, 0, 1),
            // 16 tiles per row (two full lane groups, no ragged one): the last group's
            // F(2×2) output row is clipped at the odd width, its input window reads the
            // strip's zero tail.
            (1, 5, 7, 17, 31, 17, 31, 1, 1),
            // Tile counts that are whole 16-position vectors (F(2×2): 16 and 64, F(4×4): 16),
            // which the element GEMMs read in place on AVX-512 machines.
            (1, 12, 10, 8, 8, 8, 8, 1, 1),
            (2, 6, 13, 16, 16, 16, 16, 1, 1),
        ];
        for (ci, &(batch, cin, cout, in_h, in_w, out_h, out_w, pt, pl)) in cases.iter().enumerate()
        {
            let s = WinogradShape {
                batch,
                in_h,
                in_w,
                out_h,
                out_w,
                pad_top: pt,
                pad_left: pl,
            };
            let x = rand_vec(batch * cin * in_h * in_w, 11 + ci as u64);
            let wt = rand_vec(cout * cin * 9, 12 + ci as u64);
            let bias = rand_vec(cout, 13 + ci as u64);
            let res = rand_vec(batch * cout * out_h * out_w, 14 + ci as u64);
            // The epilogue runs in the output transform's stores for full F(2×2) lane groups
            // and as a row pass elsewhere: every activation, with and without a residual.
            let acts = [
                Activation::Relu,
                Activation::None,
                Activation::Clip(-0.3, 0.4),
                Activation::LeakyRelu(0.1),
                Activation::Sigmoid,
            ];
            for (ai, residual) in [Some(&res[..]), None].into_iter().enumerate() {
                let act = acts[(ci + 2 * ai) % acts.len()];
                let want: Vec<f32> = reference(&s, cin, cout, &x, &wt, &bias, residual)
                    .into_iter()
                    .map(|v| act.apply(v))
                    .collect();
                for tile in [WinogradTile::F2, WinogradTile::F4] {
                    let ww = WinogradWeights::new(tile, cout, cin, &wt);
                    let mut outs = Vec::new();
                    for level in [SimdLevel::Scalar, SimdLevel::Avx2] {
                        let mut out = vec![f32::NAN; want.len()];
                        let mut scratch = vec![f32::NAN; winograd_scratch_len(&ww, &s, 1)];
                        winograd_conv_with(
                            level,
                            &ww,
                            &s,
                            &x,
                            &bias,
                            residual,
                            act,
                            &mut out,
                            &mut scratch,
                        );
                        let err = max_abs_diff(&out, &want);
                        assert!(
                            err < 1e-3,
                            "case {ci} {tile:?} {level:?} {act:?}: error {err}"
                        );
                        outs.push(out);
                    }
                    // Same arithmetic in every copy (no FMA contraction): identical values.
                    let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&outs[0]),
                        bits(&outs[1]),
                        "case {ci} {tile:?}: levels differ"
                    );
                }
            }
        }
    }
}
