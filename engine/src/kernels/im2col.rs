//! im2col: unfolds the receptive fields of a convolution into matrix columns so the
//! convolution becomes one GEMM, `W[cout_g × (cin_g·∏kernel)] · cols[(cin_g·∏kernel) × ∏out]`.
//!
//! Row `r = c·∏kernel + kernel_index` (kernel index row-major over the kernel dims, the same
//! order as OIHW weights), column `j` = output position (row-major over output dims). Values
//! that fall in the padding are 0. Rows are produced one at a time for a block of columns, so
//! the caller can place them in any layout (row-major, or packed GEMM panels) and keep its
//! scratch bounded by blocking over columns.

use super::conv::ConvGeometry;

/// Writes row `r` of the im2col matrix of one image's channel group, for columns
/// `j0..j0 + out.len()`, into `out`.
///
/// `input` holds the group's `cin_g` channels of one image (`cin_g · ∏in_spatial` floats,
/// channel-major). 2-D geometries (and 1-D, which is 2-D with height 1) take a fast path that
/// copies contiguous runs; other ranks use a generic index walk.
pub fn im2col_row(g: &ConvGeometry, input: &[f32], r: usize, j0: usize, out: &mut [f32]) {
    let kk: usize = g.kernel.iter().product();
    let c = r / kk;
    let kidx = r % kk;
    let in_plane: usize = g.in_spatial.iter().product();
    let chan = &input[c * in_plane..(c + 1) * in_plane];
    match g.in_spatial.len() {
        1 => row_2d(
            chan,
            [1, g.in_spatial[0]],
            [1, g.out_spatial[0]],
            [0, kidx],
            [1, g.strides[0]],
            [1, g.dilations[0]],
            [0, g.pads_begin[0]],
            j0,
            out,
        ),
        2 => {
            let kw = g.kernel[1];
            row_2d(
                chan,
                [g.in_spatial[0], g.in_spatial[1]],
                [g.out_spatial[0], g.out_spatial[1]],
                [kidx / kw, kidx % kw],
                [g.strides[0], g.strides[1]],
                [g.dilations[0], g.dilations[1]],
                [g.pads_begin[0], g.pads_begin[1]],
                j0,
                out,
            )
        }
        _ => row_nd(g, chan, kidx, j0, out),
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn row_2d(
    chan: &[f32],
    [ih, iw]: [usize; 2],
    [_oh, ow]: [usize; 2],
    [ky, kx]: [usize; 2],
    [sh, sw]: [usize; 2],
    [dh, dw]: [usize; 2],
    [ph, pw]: [usize; 2],
    j0: usize,
    out: &mut [f32],
) {
    let end = j0 + out.len();
    // Output x range whose input x = ox·sw + kx·dw − pw lies inside [0, iw).
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
    let mut j = j0;
    let mut pos = 0;
    while j < end {
        let oy = j / ow;
        let x0 = j % ow;
        let x1 = ow.min(x0 + (end - j));
        let len = x1 - x0;
        let dst = &mut out[pos..pos + len];
        let iy = (oy * sh + ky * dh) as isize - ph as isize;
        if iy < 0 || iy >= ih as isize {
            dst.fill(0.0);
        } else {
            let src = &chan[iy as usize * iw..(iy as usize + 1) * iw];
            let a = lo.clamp(x0, x1);
            let b = hi.clamp(a, x1);
            dst[..a - x0].fill(0.0);
            dst[b - x0..].fill(0.0);
            if a < b {
                let start = (a * sw) as isize + off;
                let d = &mut dst[a - x0..b - x0];
                if sw == 1 {
                    d.copy_from_slice(&src[start as usize..start as usize + (b - a)]);
                } else {
                    for (i, v) in d.iter_mut().enumerate() {
                        *v = src[start as usize + i * sw];
                    }
                }
            }
        }
        pos += len;
        j += len;
    }
}

fn row_nd(g: &ConvGeometry, chan: &[f32], kidx: usize, j0: usize, out: &mut [f32]) {
    let nd = g.in_spatial.len();
    let mut kpos = vec![0usize; nd];
    let mut rem = kidx;
    for d in (0..nd).rev() {
        kpos[d] = rem % g.kernel[d];
        rem /= g.kernel[d];
    }
    let mut opos = vec![0usize; nd];
    for (i, v) in out.iter_mut().enumerate() {
        let mut rem = j0 + i;
        for d in (0..nd).rev() {
            opos[d] = rem % g.out_spatial[d];
            rem /= g.out_spatial[d];
        }
        let mut flat = 0usize;
        let mut inside = true;
        for d in 0..nd {
            let x = (opos[d] * g.strides[d] + kpos[d] * g.dilations[d]) as isize
                - g.pads_begin[d] as isize;
            if x < 0 || x >= g.in_spatial[d] as isize {
                inside = false;
                break;
            }
            flat = flat * g.in_spatial[d] + x as usize;
        }
        *v = if inside { chan[flat] } else { 0.0 };
    }
}
