//! Convolutions on small maps (7×7, 8×8 outputs) as the im2col matrix of the whole image fed
//! to the engine's 1×1 kernels.
//!
//! Why: on maps this small the direct kernel has too few position tiles (an 8×8 map is four)
//! for its weights, streamed cold once per tile strip, to pay off, and im2col with the crate
//! GEMM re-packs the weights (2–9 MiB at these layers) on every call and runs the epilogue as a
//! second pass. ResNet-50's 512-channel 3×3/2 conv to 7×7 and Inception-v3's 384-channel
//! 3×1 / 1×3 convs at 8×8 ran there at 60–72 GFLOP/s against ONNX Runtime's 75–93, while
//! the 1×1 kernels reach 88–98 GFLOP/s on 1×1 convs of the same sizes.
//!
//! A conv `C[cout × P] = W[cout × K] · cols[K × P]` (`K = cin·∏kernel`, `P` output
//! positions) is exactly a 1×1 conv with `K` input channels on the output's grid: the OIHW
//! weights already are its `cout × K` matrix. So the weights are packed once, at load, for
//! that 1×1 conv ([`super::pointwise_channels`] where it is the better tile, 7×7 maps;
//! otherwise [`super::pointwise_conv`]), and each call writes one image's `cols` (at most
//! [`MAX_COLS`] floats) into scratch and runs the 1×1 kernel on it, epilogue fused.
//! The 1×1 kernels sum K in the blocked order of the GEMM path, so the results do not depend on
//! the thread count.

use super::conv::ConvGeometry;
use super::cpu_features::SimdLevel;
use super::im2col::im2col_row;
use super::{pointwise_channels, pointwise_conv};
use crate::ir::Activation;
use rayon::prelude::*;

/// Largest output plane [`worth_it`] picks this path for (8×8 maps; 17×17 ones run on the
/// direct kernel).
const MAX_PLANE: usize = 64;

/// Most floats of one image's im2col matrix (4 MiB): the scratch stays small next to the
/// activations of the layers where this path runs (at most 512·9·49 ≈ 226 Ki floats there).
pub const MAX_COLS: usize = 1 << 20;

/// Whether [`unfolded_conv`] can compute `g`: one group, a kernel larger than 1×1 (those run
/// on the 1×1 kernels directly) and an im2col matrix of at most [`MAX_COLS`] floats.
pub fn applies(g: &ConvGeometry) -> bool {
    g.group == 1 && g.kernel_size() > 1 && cols_len(g) <= MAX_COLS
}

/// Whether this path should be the default for `g` (where the direct kernel and Winograd were
/// not chosen): it [`applies`] and the output plane has at most `MAX_PLANE` (64) positions.
pub fn worth_it(g: &ConvGeometry) -> bool {
    applies(g) && g.out_plane() <= MAX_PLANE
}

/// Floats of one image's im2col matrix.
fn cols_len(g: &ConvGeometry) -> usize {
    g.in_channels
        .saturating_mul(g.kernel_size())
        .saturating_mul(g.out_plane())
}

/// The 1×1 conv on one image's im2col matrix: `cin·∏kernel` channels on the output's grid.
fn unfolded(g: &ConvGeometry) -> ConvGeometry {
    let nd = g.out_spatial.len();
    let (ones, zeros) = (vec![1; nd], vec![0; nd]);
    ConvGeometry::new(
        1,
        g.in_channels * g.kernel_size(),
        &g.out_spatial,
        g.out_channels,
        &ones,
        &ones,
        &ones,
        &zeros,
        &zeros,
        1,
    )
    .expect("a 1×1 unpadded geometry over a valid output grid is valid")
}

/// Whether the unfolded 1×1 conv runs on the channel-wide tile.
fn channel_tile(u: &ConvGeometry) -> bool {
    pointwise_channels::worth_it(u)
}

/// Packs OIHW weights for the unfolded 1×1 conv (for `g` where [`applies`]).
pub fn pack_weights(g: &ConvGeometry, weights: &[f32]) -> Vec<f32> {
    let u = unfolded(g);
    if channel_tile(&u) {
        pointwise_channels::pack_weights(&u, weights)
    } else {
        pointwise_conv::pack_weights(&u, weights)
    }
}

/// Scratch floats [`unfolded_conv`] needs for `threads` workers: one im2col matrix, then the
/// 1×1 kernel's scratch.
pub fn scratch_len(g: &ConvGeometry, threads: usize) -> usize {
    let u = unfolded(g);
    let inner = if channel_tile(&u) {
        pointwise_channels::scratch_len(&u, threads)
    } else {
        pointwise_conv::scratch_len(&u, threads)
    };
    cols_len(g) + inner
}

/// `output = act(W ⊛ input + bias + residual)` for `g` ([`applies`]) with weights from
/// [`pack_weights`] and at least `scratch_len(g, 1)` floats of scratch.
///
/// # Panics
/// If a slice is shorter than the geometry needs.
#[allow(clippy::too_many_arguments)]
pub fn unfolded_conv(
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
    assert!(applies(g), "unfolded_conv: geometry not supported");
    let u = unfolded(g);
    let (k, plane) = (u.in_channels, g.out_plane());
    let (cols, inner) = scratch.split_at_mut(k * plane);
    let (in_img, out_img) = (g.in_channels * g.in_plane(), g.out_channels * plane);
    for n in 0..g.batch {
        let img = &input[n * in_img..(n + 1) * in_img];
        // Rows in parallel when there are enough of them to share (512·9 rows of 49 at
        // ResNet-50's 3×3/2 to 7×7); each row is written by one worker.
        let rows_per_task = (16 * 1024 / plane.max(1)).max(1);
        if plane > 0 {
            cols.par_chunks_mut(rows_per_task * plane)
                .enumerate()
                .for_each(|(t, chunk)| {
                    for (i, row) in chunk.chunks_exact_mut(plane).enumerate() {
                        im2col_row(g, img, t * rows_per_task + i, 0, row);
                    }
                });
        }
        let out = &mut output[n * out_img..(n + 1) * out_img];
        let res = residual.map(|r| &r[n * out_img..(n + 1) * out_img]);
        if channel_tile(&u) {
            pointwise_channels::pointwise_channels_conv(
                level, &u, cols, packed, bias, res, act, out, inner,
            );
        } else {
            pointwise_conv::pointwise_conv(level, &u, cols, packed, bias, res, act, out, inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{conv, conv_scratch_len, ConvAlgo, ConvGemm, PackedConvWeights};
    use crate::kernels::gemm::GemmBackend;
    use crate::kernels::test_util::{rand_vec, with_threads};

    /// (batch, cin, side, cout, kernel, stride, pad): Inception's 3×1 / 1×3 at 8×8 (scaled
    /// down), ResNet's 3×3/2 to 7×7 (the channel-wide tile), a 5×5 with a ragged plane.
    type Case = (usize, usize, usize, usize, [usize; 2], usize, [usize; 2]);
    const CASES: [Case; 5] = [
        (1, 40, 8, 24, [3, 1], 1, [1, 0]),
        (2, 24, 8, 17, [1, 3], 1, [0, 1]),
        (1, 48, 14, 40, [3, 3], 2, [1, 1]),
        (2, 70, 7, 33, [3, 3], 1, [1, 1]),
        (1, 9, 6, 7, [5, 5], 1, [2, 2]),
    ];

    #[test]
    fn matches_im2col_with_the_crate_gemm_at_every_thread_count() {
        for (ci, &(batch, cin, side, cout, kernel, stride, pad)) in CASES.iter().enumerate() {
            let g = ConvGeometry::new(
                batch,
                cin,
                &[side, side],
                cout,
                &kernel,
                &[stride, stride],
                &[1, 1],
                &pad,
                &pad,
                1,
            )
            .expect("geometry");
            assert!(worth_it(&g), "case {ci}");
            let x = rand_vec(g.input_len(), 1 + ci as u64);
            let w = rand_vec(g.weight_len(), 2 + ci as u64);
            let b = rand_vec(cout, 3);
            let res = rand_vec(g.output_len(), 4);
            let reference = {
                let p = PackedConvWeights::with_gemm(
                    &g,
                    &w,
                    Some(&b),
                    ConvGemm::Crate(GemmBackend::Gemm),
                )
                .expect("pack");
                assert_eq!(p.algo(), ConvAlgo::Im2col);
                let mut out = vec![0.0; g.output_len()];
                let mut s = vec![0.0; conv_scratch_len(&g, &p, 1)];
                conv(&g, &x, &p, Some(&res), Activation::Relu, &mut out, &mut s).expect("conv");
                out
            };
            let p = PackedConvWeights::with_unfolded(&g, &w, Some(&b)).expect("pack");
            assert_eq!(p.algo(), ConvAlgo::Unfolded);
            let mut first: Option<Vec<f32>> = None;
            for threads in [1, 2, 3] {
                let mut out = vec![f32::NAN; g.output_len()];
                let mut s = vec![0.0; conv_scratch_len(&g, &p, threads)];
                with_threads(threads, || {
                    conv(&g, &x, &p, Some(&res), Activation::Relu, &mut out, &mut s)
                })
                .expect("conv");
                let k = (cin * kernel[0] * kernel[1]) as f32;
                for (i, (a, r)) in out.iter().zip(&reference).enumerate() {
                    assert!(
                        (a - r).abs() <= 1e-5 * k.sqrt() * (1.0 + r.abs()),
                        "case {ci} t{threads} [{i}]: {a} vs {r}"
                    );
                }
                match &first {
                    None => first = Some(out),
                    Some(f) => assert!(
                        f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "case {ci}: {threads} threads changed the result"
                    ),
                }
            }
        }
    }

    #[test]
    fn picks_small_maps_only() {
        let geom = |side, k: [usize; 2], s, p: [usize; 2], group| {
            ConvGeometry::new(
                1,
                64,
                &[side, side],
                64,
                &k,
                &[s, s],
                &[1, 1],
                &p,
                &p,
                group,
            )
            .expect("geom")
        };
        assert!(worth_it(&geom(8, [3, 1], 1, [1, 0], 1)));
        assert!(worth_it(&geom(14, [3, 3], 2, [1, 1], 1)));
        // 17×17 outputs (289 positions) stay on the direct kernel.
        assert!(!worth_it(&geom(17, [3, 3], 1, [1, 1], 1)));
        // Grouped and 1×1 convs have their own kernels.
        assert!(!applies(&geom(8, [3, 3], 1, [1, 1], 2)));
        assert!(!applies(&geom(8, [1, 1], 1, [0, 0], 1)));
    }
}
