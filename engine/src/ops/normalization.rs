//! BatchNormalization (inference) and LRN.

use super::Ctx;
use crate::error::Result;
use crate::tensor::Tensor;

/// `y = (x - mean) / sqrt(var + eps) * scale + B` per channel (axis 1). Extra outputs, when the
/// node lists them, are the running mean and variance, which inference leaves unchanged.
pub(super) fn batch_norm(cx: &Ctx, epsilon: f32) -> Result<Vec<Tensor>> {
    cx.check_count(5, 5)?;
    if cx.n_outputs() > 3 {
        return Err(cx.err(format!(
            "inference mode has at most 3 outputs, node has {}",
            cx.n_outputs()
        )));
    }
    let (x, xs, dtype) = cx.floats(0)?;
    if xs.len() < 2 {
        return Err(cx.err(format!("input must be (N, C, ...), got shape {xs:?}")));
    }
    let c = xs[1];
    let mut params = Vec::with_capacity(4);
    for i in 1..5 {
        let (p, ps, pd) = cx.floats(i)?;
        if pd != dtype || p.len() != c || ps.len() != 1 {
            return Err(cx.err(format!(
                "input {i} must be {dtype} of shape [{c}], got {pd} {ps:?}"
            )));
        }
        params.push(p);
    }
    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let inner: usize = xs[2..].iter().product();
    let eps = epsilon as f64;
    let y: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner.max(1)) % c;
            (v - mean[ch]) / (var[ch] + eps).sqrt() * scale[ch] + bias[ch]
        })
        .collect();
    let mut out = vec![cx.float_out(dtype, &xs, y)?];
    for i in 1..cx.n_outputs() {
        out.push(cx.input(2 + i)?.clone());
    }
    Ok(out)
}

/// Local response normalisation across channels: the square sum runs over
/// `floor((size-1)/2)` channels before and `ceil((size-1)/2)` after (clipped to the tensor),
/// and `y = x / (bias + alpha / size * sum)^beta`.
pub(super) fn lrn(cx: &Ctx, size: usize, alpha: f32, beta: f32, bias: f32) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    if size == 0 {
        return Err(cx.err("size must be positive"));
    }
    let (x, xs, dtype) = cx.floats(0)?;
    if xs.len() < 2 {
        return Err(cx.err(format!("input must be (N, C, ...), got shape {xs:?}")));
    }
    let (n, c) = (xs[0], xs[1]);
    let inner: usize = xs[2..].iter().product();
    let before = (size - 1) / 2;
    let after = (size - 1).div_ceil(2);
    let (alpha, beta, bias) = (alpha as f64, beta as f64, bias as f64);
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            for s in 0..inner {
                let sq: f64 = (lo..=hi).map(|j| x[(b * c + j) * inner + s].powi(2)).sum();
                let i = (b * c + ch) * inner + s;
                y[i] = x[i] / (bias + alpha / size as f64 * sq).powf(beta);
            }
        }
    }
    Ok(vec![cx.float_out(dtype, &xs, y)?])
}
