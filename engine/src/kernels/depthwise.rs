//! Direct depthwise convolution (group == in channels == out channels), 1-D and 2-D.
//!
//! Depthwise convs do `∏kernel` MACs per output, far too few for a GEMM to pay off; a direct
//! loop over output rows, with the valid x-range per tap computed once so the inner loop is a
//! branch-free, vectorisable `acc[ox] += w · in[ox·stride + off]`, is memory-bound and fast.
//! Parallel over (image, channel) planes.

use super::conv::ConvGeometry;
use super::elementwise::bias_residual_activation;
use crate::ir::Activation;
use rayon::prelude::*;

/// Depthwise conv over NC(H)W input, `w` in OIHW (`C × 1 × kh × kw`), one bias per channel.
/// `geom` must satisfy group == in_channels == out_channels with 1 or 2 spatial dims; lengths
/// are checked by [`super::conv::conv`], which is the entry point.
pub(crate) fn depthwise_conv(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
) {
    let (ih, iw, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw) = if g.in_spatial.len() == 2 {
        (
            g.in_spatial[0],
            g.in_spatial[1],
            g.out_spatial[0],
            g.out_spatial[1],
            g.kernel[0],
            g.kernel[1],
            g.strides[0],
            g.strides[1],
            g.dilations[0],
            g.dilations[1],
            g.pads_begin[0],
            g.pads_begin[1],
        )
    } else {
        (
            1,
            g.in_spatial[0],
            1,
            g.out_spatial[0],
            1,
            g.kernel[0],
            1,
            g.strides[0],
            1,
            g.dilations[0],
            0,
            g.pads_begin[0],
        )
    };
    let (ip, op) = (ih * iw, oh * ow);
    let c = g.in_channels;
    // Valid ox range per kx: input x = ox·sw + kx·dw − pw within [0, iw).
    let ranges: Vec<(usize, usize, isize)> = (0..kw)
        .map(|kx| {
            let off = (kx * dw) as isize - pw as isize;
            let lo = if off >= 0 {
                0
            } else {
                ((-off) as usize).div_ceil(sw)
            };
            let hi = if (iw as isize) <= off {
                0
            } else {
                ((iw as isize - off) as usize).div_ceil(sw)
            }
            .min(ow);
            (lo.min(hi), hi, off)
        })
        .collect();
    output
        .par_chunks_mut(op)
        .enumerate()
        .for_each(|(plane, out)| {
            let ch = plane % c;
            let x = &input[plane * ip..(plane + 1) * ip];
            let wk = &w[ch * kh * kw..(ch + 1) * kh * kw];
            for oy in 0..oh {
                let acc = &mut out[oy * ow..(oy + 1) * ow];
                acc.fill(0.0);
                for ky in 0..kh {
                    let iy = (oy * sh + ky * dh) as isize - ph as isize;
                    if iy < 0 || iy >= ih as isize {
                        continue;
                    }
                    let row = &x[iy as usize * iw..(iy as usize + 1) * iw];
                    for (kx, &(lo, hi, off)) in ranges.iter().enumerate() {
                        let wv = wk[ky * kw + kx];
                        if lo >= hi {
                            continue;
                        }
                        let start = (lo * sw) as isize + off;
                        let start = start as usize;
                        if sw == 1 {
                            let src = &row[start..start + (hi - lo)];
                            for (a, s) in acc[lo..hi].iter_mut().zip(src) {
                                *a += wv * s;
                            }
                        } else {
                            for (i, a) in acc[lo..hi].iter_mut().enumerate() {
                                *a += wv * row[start + i * sw];
                            }
                        }
                    }
                }
                let res = residual.map(|r| &r[plane * op + oy * ow..plane * op + (oy + 1) * ow]);
                bias_residual_activation(acc, bias[ch], res, act);
            }
        });
}
