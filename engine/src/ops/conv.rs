//! Direct convolution over any number of spatial dimensions, and the spatial-geometry helpers
//! (stride/dilation defaults, auto_pad resolution) shared with pooling.

use ndarray::IxDyn;

use super::{broadcast_shapes, next_index, strides_of, Ctx};
use crate::error::Result;
use crate::ir::{Activation, AutoPad, ConvAttrs};
use crate::tensor::Tensor;

/// Strides, dilations and explicit pads (begins then ends) for `k` spatial axes, with ONNX
/// defaults filled in and `auto_pad` resolved against the input size.
pub(super) struct Geometry {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
}

/// Fills defaults, validates lengths and resolves `auto_pad` per the ONNX spec: SAME_* pads so
/// that `out = ceil(in / stride)`, the odd pad going to the end (UPPER) or the begin (LOWER);
/// VALID means no padding.
pub(super) fn geometry(
    cx: &Ctx,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    auto_pad: AutoPad,
) -> Result<Geometry> {
    let k = input.len();
    let fill = |v: &[usize], what: &str| -> Result<Vec<usize>> {
        if v.is_empty() {
            return Ok(vec![1; k]);
        }
        if v.len() != k {
            return Err(cx.err(format!("{what} has {} entries, expected {k}", v.len())));
        }
        if v.contains(&0) {
            return Err(cx.err(format!("{what} must be positive, got {v:?}")));
        }
        Ok(v.to_vec())
    };
    let strides = fill(strides, "strides")?;
    let dilations = fill(dilations, "dilations")?;
    if kernel.len() != k {
        return Err(cx.err(format!(
            "kernel has {} spatial dims, input has {k}",
            kernel.len()
        )));
    }
    let pads = match auto_pad {
        AutoPad::NotSet => {
            if pads.is_empty() {
                vec![0; 2 * k]
            } else if pads.len() != 2 * k {
                return Err(cx.err(format!(
                    "pads has {} entries, expected {}",
                    pads.len(),
                    2 * k
                )));
            } else {
                pads.to_vec()
            }
        }
        AutoPad::Valid => vec![0; 2 * k],
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut p = vec![0; 2 * k];
            for d in 0..k {
                let out = input[d].div_ceil(strides[d]);
                let needed = (out.saturating_sub(1)) * strides[d]
                    + (kernel[d].saturating_sub(1)) * dilations[d]
                    + 1;
                let total = needed.saturating_sub(input[d]);
                let small = total / 2;
                let (b, e) = if auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                p[d] = b;
                p[k + d] = e;
            }
            p
        }
    };
    Ok(Geometry {
        strides,
        dilations,
        pads,
    })
}

/// Output size of one spatial axis, floor or ceil division (ceil drops a last window that
/// would start inside the end padding, as ONNX Runtime and PyTorch do).
#[allow(clippy::too_many_arguments)]
pub(super) fn out_size(
    cx: &Ctx,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil: bool,
) -> Result<usize> {
    if kernel == 0 {
        return Err(cx.err("kernel size must be positive"));
    }
    let window = (kernel - 1) * dilation + 1;
    let padded = input + pad_begin + pad_end;
    if padded < window {
        return Err(cx.err(format!(
            "window of {window} (kernel {kernel}, dilation {dilation}) is larger than the padded input {padded}"
        )));
    }
    let span = padded - window;
    let mut out = if ceil {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    if ceil && out > 1 && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Ok(out)
}

fn activate(a: Activation, v: f64) -> f64 {
    match a {
        Activation::None => v,
        // NaN stays NaN, as in the unfused Relu (`f64::max` would map it to 0).
        Activation::Relu => {
            if v < 0.0 {
                0.0
            } else {
                v
            }
        }
        Activation::LeakyRelu(alpha) => {
            if v < 0.0 {
                v * alpha as f64
            } else {
                v
            }
        }
        Activation::Clip(lo, hi) => {
            let v = if v < lo as f64 { lo as f64 } else { v };
            if v > hi as f64 {
                hi as f64
            } else {
                v
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
    }
}

/// Conv (X, W, [B]) and FusedConv (X, W, [B], [residual]): naive direct convolution, f64
/// accumulation, then residual add and activation.
pub(super) fn conv(
    cx: &Ctx,
    attrs: &ConvAttrs,
    act: Activation,
    has_residual: bool,
) -> Result<Vec<Tensor>> {
    cx.check_count(2, if has_residual { 4 } else { 3 })?;
    let (x, xs, dtype) = cx.floats(0)?;
    let (w, ws, wdtype) = cx.floats(1)?;
    if wdtype != dtype {
        return Err(cx.err(format!(
            "weight type {wdtype} differs from input type {dtype}"
        )));
    }
    if xs.len() < 3 {
        return Err(cx.err(format!(
            "input must be (N, C, spatial...), got shape {xs:?}"
        )));
    }
    if ws.len() != xs.len() {
        return Err(cx.err(format!(
            "weight rank {} differs from input rank {}",
            ws.len(),
            xs.len()
        )));
    }
    let (n, c) = (xs[0], xs[1]);
    let (m, cg) = (ws[0], ws[1]);
    let group = attrs.group;
    if group == 0 || c != cg * group || m % group != 0 {
        return Err(cx.err(format!(
            "group {group} does not fit input channels {c}, weight shape {ws:?}"
        )));
    }
    let kernel = &ws[2..];
    if let Some(ks) = &attrs.kernel_shape {
        if ks.as_slice() != kernel {
            return Err(cx.err(format!(
                "kernel_shape {ks:?} differs from the weight's {kernel:?}"
            )));
        }
    }
    let ins = &xs[2..];
    let g = geometry(
        cx,
        ins,
        kernel,
        &attrs.strides,
        &attrs.dilations,
        &attrs.pads,
        attrs.auto_pad,
    )?;
    let k = ins.len();
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
            false,
        )?);
    }
    let bias = match cx.opt(2) {
        Some(_) => {
            let (b, bs, bd) = cx.floats(2)?;
            if bd != dtype || b.len() != m {
                return Err(cx.err(format!(
                    "bias must be {dtype} of {m} elements, got {bd} {bs:?}"
                )));
            }
            b
        }
        None => vec![0.0; m],
    };

    let s_in: usize = ins.iter().product();
    let s_out: usize = outs.iter().product();
    let kn: usize = kernel.iter().product();
    let in_strides = strides_of(ins);
    // map[kp * s_out + p]: flat input spatial offset read by kernel tap kp at output p.
    let mut map = vec![usize::MAX; kn * s_out];
    if s_out > 0 && kn > 0 {
        let mut kidx = vec![0usize; k];
        let mut kp = 0;
        loop {
            let mut oidx = vec![0usize; k];
            let mut p = 0;
            loop {
                let mut off = 0usize;
                let mut ok = true;
                for d in 0..k {
                    let pos = (oidx[d] * g.strides[d] + kidx[d] * g.dilations[d]) as i64
                        - g.pads[d] as i64;
                    if pos < 0 || pos >= ins[d] as i64 {
                        ok = false;
                        break;
                    }
                    off += pos as usize * in_strides[d];
                }
                if ok {
                    map[kp * s_out + p] = off;
                }
                p += 1;
                if !next_index(&mut oidx, &outs) {
                    break;
                }
            }
            kp += 1;
            if !next_index(&mut kidx, kernel) {
                break;
            }
        }
    }

    let mg = m / group;
    let mut y = vec![0.0f64; n * m * s_out];
    for b in 0..n {
        for oc in 0..m {
            let gi = oc / mg;
            let acc = &mut y[(b * m + oc) * s_out..(b * m + oc + 1) * s_out];
            acc.iter_mut().for_each(|v| *v = bias[oc]);
            for icg in 0..cg {
                let ic = gi * cg + icg;
                let xb = &x[(b * c + ic) * s_in..(b * c + ic + 1) * s_in];
                let wb = &w[(oc * cg + icg) * kn..(oc * cg + icg + 1) * kn];
                for (kp, &wv) in wb.iter().enumerate() {
                    let row = &map[kp * s_out..(kp + 1) * s_out];
                    for (a, &off) in acc.iter_mut().zip(row) {
                        if off != usize::MAX {
                            *a += wv * xb[off];
                        }
                    }
                }
            }
        }
    }

    let mut out_shape = vec![n, m];
    out_shape.extend_from_slice(&outs);
    if has_residual {
        let (r, rs, rd) = cx.floats(3)?;
        if rd != dtype || broadcast_shapes(&out_shape, &rs).as_deref() != Some(out_shape.as_slice())
        {
            return Err(cx.err(format!(
                "residual must be {dtype} broadcastable to {out_shape:?}, got {rd} {rs:?}"
            )));
        }
        let ra = cx.make(&rs, r)?;
        let rv = ra.broadcast(IxDyn(&out_shape)).ok_or_else(|| {
            cx.err(format!(
                "residual {rs:?} does not broadcast to {out_shape:?}"
            ))
        })?;
        for (v, r) in y.iter_mut().zip(rv.iter()) {
            *v += r;
        }
    }
    if act != Activation::None {
        y.iter_mut().for_each(|v| *v = activate(act, *v));
    }
    Ok(vec![cx.float_out(dtype, &out_shape, y)?])
}
