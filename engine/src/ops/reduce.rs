//! Reductions: GlobalAveragePool, GlobalMaxPool, ReduceMean, Softmax.

use super::{next_index, strides_of, Ctx};
use crate::error::Result;
use crate::tensor::Tensor;

/// Mean or max over all spatial axes of (N, C, spatial...), keeping them as size 1.
pub(super) fn global_pool(cx: &Ctx, max: bool) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let (x, xs, dtype) = cx.floats(0)?;
    if xs.len() < 2 {
        return Err(cx.err(format!(
            "input must be (N, C, spatial...), got shape {xs:?}"
        )));
    }
    let inner: usize = xs[2..].iter().product();
    let planes = xs[0] * xs[1];
    let y: Vec<f64> = (0..planes)
        .map(|p| {
            let s = &x[p * inner..(p + 1) * inner];
            if max {
                s.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            } else if inner == 0 {
                f64::NAN
            } else {
                s.iter().sum::<f64>() / inner as f64
            }
        })
        .collect();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    Ok(vec![cx.float_out(dtype, &shape, y)?])
}

/// ReduceMean over the `axes` input (all axes when absent/empty, unless
/// `noop_with_empty_axes`, which makes it the identity). Float types.
pub(super) fn reduce_mean(
    cx: &Ctx,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<Vec<Tensor>> {
    cx.check_count(1, 2)?;
    let (x, xs, dtype) = cx.floats(0)?;
    let axes = cx.opt_ints(1)?.unwrap_or_default();
    let rank = xs.len();
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(vec![cx.input(0)?.clone()]);
    }
    let mut reduce = vec![axes.is_empty(); rank];
    for &a in &axes {
        let a = cx.axis(a, rank)?;
        if reduce[a] {
            return Err(cx.err(format!("axis {a} listed twice in {axes:?}")));
        }
        reduce[a] = true;
    }
    let kept: Vec<usize> = (0..rank)
        .map(|d| if reduce[d] { 1 } else { xs[d] })
        .collect();
    let kept_strides = strides_of(&kept);
    let count: usize = (0..rank).filter(|&d| reduce[d]).map(|d| xs[d]).product();
    let mut sums = vec![0.0f64; kept.iter().product()];
    if !x.is_empty() {
        let mut idx = vec![0usize; rank];
        let mut i = 0;
        loop {
            let o: usize = (0..rank)
                .map(|d| {
                    if reduce[d] {
                        0
                    } else {
                        idx[d] * kept_strides[d]
                    }
                })
                .sum();
            sums[o] += x[i];
            i += 1;
            if !next_index(&mut idx, &xs) {
                break;
            }
        }
    }
    let y = sums.into_iter().map(|s| s / count as f64).collect();
    let shape: Vec<usize> = if keepdims {
        kept
    } else {
        (0..rank).filter(|&d| !reduce[d]).map(|d| xs[d]).collect()
    };
    Ok(vec![cx.float_out(dtype, &shape, y)?])
}

/// Numerically stable softmax of a strided row in place.
fn softmax_row(v: &mut [f64], start: usize, len: usize, stride: usize) {
    let max = (0..len)
        .map(|i| v[start + i * stride])
        .fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for i in 0..len {
        let e = (v[start + i * stride] - max).exp();
        v[start + i * stride] = e;
        sum += e;
    }
    for i in 0..len {
        v[start + i * stride] /= sum;
    }
}

/// Softmax along `axis` (opset 13+), or with `legacy` (opset < 13) over the whole trailing
/// block from `axis` on, as if the input were flattened to 2-D there.
pub(super) fn softmax(cx: &Ctx, axis: i64, legacy: bool) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let (mut x, xs, dtype) = cx.floats(0)?;
    let rank = xs.len();
    if legacy {
        // Opset < 13 allows axis == rank (an empty trailing block of size 1).
        let r = rank as i64;
        if axis < -r || axis > r {
            return Err(cx.err(format!("axis {axis} is out of range for rank {rank}")));
        }
        let a = if axis < 0 { axis + r } else { axis } as usize;
        let inner: usize = xs[a..].iter().product();
        for row in 0..x.len().checked_div(inner).unwrap_or(0) {
            softmax_row(&mut x, row * inner, inner, 1);
        }
    } else {
        if rank == 0 {
            return Err(cx.err("Softmax needs rank at least 1"));
        }
        let a = cx.axis(axis, rank)?;
        let len = xs[a];
        let inner: usize = xs[a + 1..].iter().product();
        let outer: usize = xs[..a].iter().product();
        for o in 0..outer {
            for i in 0..inner {
                softmax_row(&mut x, o * len * inner + i, len, inner);
            }
        }
    }
    Ok(vec![cx.float_out(dtype, &xs, x)?])
}
