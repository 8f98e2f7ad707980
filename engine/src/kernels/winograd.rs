//! Winograd convolution F(m×m, 3×3) for 2-D, stride-1, dilation-1, ungrouped 3×3 convs.
//!
//! Why: a 3×3 conv spends 9·Cin MACs per output value; Winograd computes an `m×m` output tile
//! from an `(m+2)×(m+2)` input tile with `(m+2)²` element-wise products per (Cin, Cout) pair:
//! 36 per 16 outputs for F(4×4) (4× fewer multiplies), 16 per 4 for F(2×2) (2.25× fewer). The
//! element-wise products summed over channels are `(m+2)²` independent GEMMs
//! `M[ξ] = U[ξ]·V[ξ]` (`Cout×Cin` times `Cin×tiles`), run by the `gemm` crate.
//!
//! Steps per image (each a parallel loop; results do not depend on the thread count because
//! every value is computed by one task with a fixed order):
//! 1. input transform `V = Bᵀ d B` per channel and tile, layout `[c][ξ][tile]` (one task per
//!    channel); tiles of one tile row are transformed 8 at a time across SIMD-friendly lanes;
//! 2. one GEMM per ξ into `M[ξ][co][tile]` (one task per ξ, each single-threaded);
//! 3. output transform `Y = Aᵀ M A` per output channel, with bias, residual and activation
//!    applied while the tile is in registers, clipped at the image's right/bottom edges.
//!
//! Accuracy (conv.rs tests, max error vs float64): F(2×2) measured at or below im2col's
//! error; F(4×4) ~12× im2col's (larger transform constants), so it is opt-in only. The weight transform `G g Gᵀ` is done
//! in f64 at load.

use super::gemm::{sgemm_crate_raw, GemmBackend};
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

/// Transformed weights `U[ξ][co][ci]` (`ξ` over the `alpha²` tile positions).
#[derive(Debug, Clone)]
pub struct WinogradWeights {
    pub tile: WinogradTile,
    pub cout: usize,
    pub cin: usize,
    u: Vec<f32>,
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
        WinogradWeights { tile, cout, cin, u }
    }

    /// Bytes held by the transformed weights.
    pub fn bytes(&self) -> usize {
        self.u.len() * 4
    }
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
    /// `alpha` input rows used to gather tiles without bounds checks.
    fn v_stride(&self, tile: WinogradTile) -> usize {
        let (th, tw) = self.tiles(tile);
        let a = tile.alpha();
        a * a * th * tw + a * self.strip_w(tile)
    }
    fn strip_w(&self, tile: WinogradTile) -> usize {
        let (_, tw) = self.tiles(tile);
        tw * tile.m() + 2
    }
}

/// Scratch floats needed by [`winograd_conv`] (independent of the thread count).
pub fn winograd_scratch_len(w: &WinogradWeights, s: &WinogradShape) -> usize {
    let (th, tw) = s.tiles(w.tile);
    let a = w.tile.alpha();
    w.cin * s.v_stride(w.tile) + a * a * w.cout * th * tw
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
    match w.tile {
        WinogradTile::F2 => run::<2, 4>(
            w, s, &BT2, &AT2, input, bias, residual, act, output, scratch,
        ),
        WinogradTile::F4 => run::<4, 6>(
            w, s, &BT4, &AT4, input, bias, residual, act, output, scratch,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<const M: usize, const A: usize>(
    w: &WinogradWeights,
    s: &WinogradShape,
    bt: &[[f32; A]; A],
    at: &[[f32; A]; M],
    input: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) {
    let (cin, cout) = (w.cin, w.cout);
    let (th, tw) = s.tiles(w.tile);
    let tiles = th * tw;
    let aa = A * A;
    let vs = s.v_stride(w.tile);
    let sw = s.strip_w(w.tile);
    let (ip, op) = (s.in_h * s.in_w, s.out_h * s.out_w);
    assert!(
        scratch.len() >= winograd_scratch_len(w, s),
        "winograd: scratch too short"
    );
    assert!(input.len() >= s.batch * cin * ip && output.len() >= s.batch * cout * op);
    assert!(bias.len() >= cout);
    let (vbuf, rest) = scratch.split_at_mut(cin * vs);
    let mbuf = &mut rest[..aa * cout * tiles];
    for n in 0..s.batch {
        let img = &input[n * cin * ip..(n + 1) * cin * ip];
        // 1. Input transform, one task per channel.
        vbuf.par_chunks_mut(vs).enumerate().for_each(|(c, vc)| {
            let plane = &img[c * ip..(c + 1) * ip];
            let (v, strip) = vc.split_at_mut(aa * tiles);
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
                    row[..x0].fill(0.0);
                    let len = s.in_w.min(sw - x0);
                    row[x0..x0 + len].copy_from_slice(&src[..len]);
                    row[x0 + len..].fill(0.0);
                }
                let mut tx0 = 0;
                while tx0 < tw {
                    let nl = LANES.min(tw - tx0);
                    let mut d = [[[0.0f32; LANES]; A]; A];
                    for (k, dk) in d.iter_mut().enumerate() {
                        let row = &strip[k * sw..(k + 1) * sw];
                        for (j, dkj) in dk.iter_mut().enumerate() {
                            for (l, x) in dkj.iter_mut().enumerate().take(nl) {
                                *x = row[(tx0 + l) * M + j];
                            }
                        }
                    }
                    let t = input_transform::<A>(bt, &d);
                    let t0 = ty * tw + tx0;
                    for (xi, txi) in t.iter().flatten().enumerate() {
                        v[xi * tiles + t0..xi * tiles + t0 + nl].copy_from_slice(&txi[..nl]);
                    }
                    tx0 += nl;
                }
            }
        });
        // 2. One GEMM per tile position ξ: M[ξ] (cout×tiles) = U[ξ] (cout×cin) · V[ξ].
        let vref: &[f32] = vbuf;
        mbuf.par_chunks_mut(cout * tiles)
            .enumerate()
            .for_each(|(xi, mx)| {
                let u = &w.u[xi * cout * cin..(xi + 1) * cout * cin];
                let b = &vref[xi * tiles..];
                // SAFETY: `mx` is this task's exclusive cout×tiles block (stride tiles); `u` is
                // cout×cin (stride cin); `b` holds cin rows of `tiles` values at stride `vs`
                // (row c of V[ξ] starts at c·vs + ξ·tiles, inside vbuf); lengths asserted in
                // sgemm_crate_raw.
                unsafe {
                    sgemm_crate_raw(
                        GemmBackend::Gemm,
                        cout,
                        tiles,
                        cin,
                        u,
                        cin,
                        b,
                        vs,
                        mx.as_mut_ptr(),
                        tiles,
                    )
                };
            });
        // 3. Output transform + epilogue, one task per output channel.
        let mref: &[f32] = mbuf;
        let out_img = &mut output[n * cout * op..(n + 1) * cout * op];
        let res_img = residual.map(|r| &r[n * cout * op..(n + 1) * cout * op]);
        out_img.par_chunks_mut(op).enumerate().for_each(|(co, y)| {
            let res = res_img.map(|r| &r[co * op..(co + 1) * op]);
            let b = bias[co];
            for ty in 0..th {
                let mut tx0 = 0;
                while tx0 < tw {
                    let nl = LANES.min(tw - tx0);
                    let t0 = ty * tw + tx0;
                    let mut mm = [[[0.0f32; LANES]; A]; A];
                    for (i, mi) in mm.iter_mut().enumerate() {
                        for (j, mij) in mi.iter_mut().enumerate() {
                            let src = (((i * A + j) * cout) + co) * tiles + t0;
                            mij[..nl].copy_from_slice(&mref[src..src + nl]);
                        }
                    }
                    let o = output_transform::<M, A>(at, &mm);
                    for (i, oi) in o.iter().enumerate() {
                        let oy = ty * M + i;
                        if oy >= s.out_h {
                            break;
                        }
                        for l in 0..nl {
                            let ox0 = (tx0 + l) * M;
                            for (j, oij) in oi.iter().enumerate() {
                                let ox = ox0 + j;
                                if ox >= s.out_w {
                                    break;
                                }
                                let idx = oy * s.out_w + ox;
                                let mut val = oij[l] + b;
                                if let Some(r) = res {
                                    val += r[idx];
                                }
                                y[idx] = act.apply(val);
                            }
                        }
                    }
                    tx0 += nl;
                }
            }
        });
    }
}

/// `Bᵀ d B` on `LANES` tiles at once; returns the `A×A` transformed values (`ξ = i·A + j`).
#[inline(always)]
fn input_transform<const A: usize>(
    bt: &[[f32; A]; A],
    d: &[[[f32; LANES]; A]; A],
) -> [[[f32; LANES]; A]; A] {
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
    at: &[[f32; A]; M],
    m: &[[[f32; LANES]; A]; A],
) -> [[[f32; LANES]; M]; M] {
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
