//! MaxPool and AveragePool over any number of spatial dimensions.

use super::conv::{geometry, out_size};
use super::{next_index, strides_of, with_num_dtype, Ctx, Elem};
use crate::error::Result;
use crate::ir::PoolAttrs;
use crate::tensor::{DType, Tensor};

/// Window geometry of one pooling node: for every output position and kernel tap, the flat
/// input offset read (or `usize::MAX` outside the input), and how many taps fall inside the
/// input grown by the explicit pads (the divisor when `count_include_pad`).
struct Windows {
    out_shape: Vec<usize>,
    taps: usize,
    /// `offsets[p * taps + t]`
    offsets: Vec<usize>,
    padded_counts: Vec<usize>,
}

fn windows(cx: &Ctx, attrs: &PoolAttrs, ins: &[usize]) -> Result<Windows> {
    let k = ins.len();
    let kernel = &attrs.kernel_shape;
    if kernel.len() != k {
        return Err(cx.err(format!(
            "kernel_shape {kernel:?} does not match {k} spatial dims"
        )));
    }
    let g = geometry(
        cx,
        ins,
        kernel,
        &attrs.strides,
        &attrs.dilations,
        &attrs.pads,
        attrs.auto_pad,
    )?;
    let mut outs = Vec::with_capacity(k);
    for d in 0..k {
        outs.push(out_size(
            cx,
            ins[d],
            kernel[d],
            g.strides[d],
            g.dilations[d],
            g.pads[d],
            g.pads[k + d],
            attrs.ceil_mode,
        )?);
    }
    let taps: usize = kernel.iter().product();
    let s_out: usize = outs.iter().product();
    let in_strides = strides_of(ins);
    let mut offsets = vec![usize::MAX; s_out * taps];
    let mut padded_counts = vec![0usize; s_out];
    if s_out > 0 {
        let mut oidx = vec![0usize; k];
        let mut p = 0;
        loop {
            let mut kidx = vec![0usize; k];
            let mut t = 0;
            loop {
                let mut off = 0usize;
                let mut inside = true;
                let mut inside_padded = true;
                for d in 0..k {
                    let pos = (oidx[d] * g.strides[d] + kidx[d] * g.dilations[d]) as i64
                        - g.pads[d] as i64;
                    if pos < 0 || pos >= ins[d] as i64 {
                        inside = false;
                    } else {
                        off += pos as usize * in_strides[d];
                    }
                    if pos < -(g.pads[d] as i64) || pos >= (ins[d] + g.pads[k + d]) as i64 {
                        inside_padded = false;
                    }
                }
                if inside {
                    offsets[p * taps + t] = off;
                }
                if inside_padded {
                    padded_counts[p] += 1;
                }
                t += 1;
                if !next_index(&mut kidx, kernel) {
                    break;
                }
            }
            p += 1;
            if !next_index(&mut oidx, &outs) {
                break;
            }
        }
    }
    Ok(Windows {
        out_shape: outs,
        taps,
        offsets,
        padded_counts,
    })
}

/// Splits an (N, C, spatial...) float input.
/// MaxPool also accepts integer inputs (values widened to f64, exact up to 2^53).
fn pool_input(cx: &Ctx, ints: bool) -> Result<(Vec<f64>, Vec<usize>, DType)> {
    cx.check_count(1, 1)?;
    let t = cx.input(0)?;
    let (x, xs, dtype) = match t.dtype() {
        DType::U8 | DType::I32 | DType::I64 if ints => {
            (t.to_f64_vec(), t.shape().to_vec(), t.dtype())
        }
        _ => cx.floats(0)?,
    };
    if xs.len() < 3 {
        return Err(cx.err(format!(
            "input must be (N, C, spatial...), got shape {xs:?}"
        )));
    }
    Ok((x, xs, dtype))
}

/// MaxPool; a second output (when the node has two) holds the flat row-major input index of
/// each maximum (storage_order 0), first occurrence on ties.
pub(super) fn max_pool(cx: &Ctx, attrs: &PoolAttrs) -> Result<Vec<Tensor>> {
    let (x, xs, dtype) = pool_input(cx, true)?;
    let w = windows(cx, attrs, &xs[2..])?;
    let planes = xs[0] * xs[1];
    let s_in: usize = xs[2..].iter().product();
    let s_out: usize = w.out_shape.iter().product();
    let mut y = Vec::with_capacity(planes * s_out);
    let mut idx = Vec::with_capacity(planes * s_out);
    for plane in 0..planes {
        let xb = &x[plane * s_in..(plane + 1) * s_in];
        for p in 0..s_out {
            let mut best = f64::NEG_INFINITY;
            let mut best_i = -1i64;
            for &off in &w.offsets[p * w.taps..(p + 1) * w.taps] {
                if off == usize::MAX {
                    continue;
                }
                // NaN never wins (like `f32::max`); an all-NaN window yields -inf.
                if best_i < 0 || xb[off] > best {
                    best_i = (plane * s_in + off) as i64;
                }
                if xb[off] > best {
                    best = xb[off];
                }
            }
            y.push(best);
            idx.push(best_i);
        }
    }
    let mut shape = xs[..2].to_vec();
    shape.extend_from_slice(&w.out_shape);
    let values = match dtype {
        DType::F32 | DType::F64 => cx.float_out(dtype, &shape, y)?,
        dt => with_num_dtype!(dt, T => {
            T::wrap(cx.make(&shape, y.into_iter().map(T::from_f64).collect())?)
        }, bool => return Err(cx.err("MaxPool of a bool tensor is not defined"))),
    };
    let mut out = vec![values];
    if cx.n_outputs() > 1 {
        out.push(Tensor::I64(cx.make(&shape, idx)?));
    }
    Ok(out)
}

/// AveragePool; the divisor counts the explicit pads when `count_include_pad`, never the extra
/// cells a ceil-mode window reaches past them.
pub(super) fn average_pool(cx: &Ctx, attrs: &PoolAttrs) -> Result<Vec<Tensor>> {
    let (x, xs, dtype) = pool_input(cx, false)?;
    let w = windows(cx, attrs, &xs[2..])?;
    let planes = xs[0] * xs[1];
    let s_in: usize = xs[2..].iter().product();
    let s_out: usize = w.out_shape.iter().product();
    let mut y = Vec::with_capacity(planes * s_out);
    for plane in 0..planes {
        let xb = &x[plane * s_in..(plane + 1) * s_in];
        for p in 0..s_out {
            let mut sum = 0.0;
            let mut valid = 0usize;
            for &off in &w.offsets[p * w.taps..(p + 1) * w.taps] {
                if off != usize::MAX {
                    sum += xb[off];
                    valid += 1;
                }
            }
            let count = if attrs.count_include_pad {
                w.padded_counts[p]
            } else {
                valid
            };
            y.push(if count == 0 { 0.0 } else { sum / count as f64 });
        }
    }
    let mut shape = xs[..2].to_vec();
    shape.extend_from_slice(&w.out_shape);
    Ok(vec![cx.float_out(dtype, &shape, y)?])
}
