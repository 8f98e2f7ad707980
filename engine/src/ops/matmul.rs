//! Gemm and MatMul.

use ndarray::IxDyn;

use super::{broadcast_shapes, flat, next_index, with_num_dtype, Ctx, Elem, Num};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// `Y = alpha * op(A) @ op(B) + beta * C`, C broadcast to (M, N); float types, f64 sums.
pub(super) fn gemm(
    cx: &Ctx,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<Vec<Tensor>> {
    cx.check_count(2, 3)?;
    let (a, ash, dtype) = cx.floats(0)?;
    let (b, bsh, bd) = cx.floats(1)?;
    if bd != dtype {
        return Err(cx.err(format!("B type {bd} differs from A type {dtype}")));
    }
    if ash.len() != 2 || bsh.len() != 2 {
        return Err(cx.err(format!("A and B must be 2-D, got {ash:?} and {bsh:?}")));
    }
    let (m, k) = if trans_a {
        (ash[1], ash[0])
    } else {
        (ash[0], ash[1])
    };
    let (kb, n) = if trans_b {
        (bsh[1], bsh[0])
    } else {
        (bsh[0], bsh[1])
    };
    if k != kb {
        return Err(cx.err(format!(
            "inner dimensions differ: A {ash:?} (transA={trans_a}), B {bsh:?} (transB={trans_b})"
        )));
    }
    let at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            y[i * n + j] = alpha as f64 * s;
        }
    }
    if cx.opt(2).is_some() {
        let (c, cs, cd) = cx.floats(2)?;
        if cd != dtype {
            return Err(cx.err(format!("C type {cd} differs from A type {dtype}")));
        }
        let ca = cx.make(&cs, c)?;
        let cv = ca.broadcast(IxDyn(&[m, n])).ok_or_else(|| {
            cx.err(format!(
                "C of shape {cs:?} does not broadcast to [{m}, {n}]"
            ))
        })?;
        for (v, c) in y.iter_mut().zip(cv.iter()) {
            *v += beta as f64 * c;
        }
    }
    Ok(vec![cx.float_out(dtype, &[m, n], y)?])
}

/// Batched matrix product with numpy semantics on logical-order data; returns data and shape.
fn matmul_core<T: Num>(
    cx: &Ctx,
    a: &[T],
    ash: &[usize],
    b: &[T],
    bsh: &[usize],
) -> Result<(Vec<T>, Vec<usize>)> {
    if ash.is_empty() || bsh.is_empty() {
        return Err(cx.err("MatMul inputs must have rank at least 1"));
    }
    // 1-D promotion: A gains a leading 1, B a trailing 1; both are removed from the result.
    let mut ash2 = ash.to_vec();
    let mut bsh2 = bsh.to_vec();
    if ash.len() == 1 {
        ash2.insert(0, 1);
    }
    if bsh.len() == 1 {
        bsh2.push(1);
    }
    let (m, k) = (ash2[ash2.len() - 2], ash2[ash2.len() - 1]);
    let (kb, n) = (bsh2[bsh2.len() - 2], bsh2[bsh2.len() - 1]);
    if k != kb {
        return Err(cx.err(format!("inner dimensions differ: {ash:?} @ {bsh:?}")));
    }
    let abatch = &ash2[..ash2.len() - 2];
    let bbatch = &bsh2[..bsh2.len() - 2];
    let batch = broadcast_shapes(abatch, bbatch).ok_or_else(|| {
        cx.err(format!(
            "batch dimensions of {ash:?} and {bsh:?} do not broadcast"
        ))
    })?;
    // Row-major offset of a (broadcast) batch index into an operand's batch dims.
    let offset = |idx: &[usize], dims: &[usize]| -> usize {
        let skip = idx.len() - dims.len();
        let mut off = 0;
        for (d, &size) in dims.iter().enumerate() {
            let i = if size == 1 { 0 } else { idx[skip + d] };
            off = off * size + i;
        }
        off
    };
    let nb: usize = batch.iter().product();
    let mut y = Vec::with_capacity(nb * m * n);
    if nb > 0 {
        let mut idx = vec![0usize; batch.len()];
        loop {
            let ao = offset(&idx, abatch) * m * k;
            let bo = offset(&idx, bbatch) * k * n;
            for i in 0..m {
                for j in 0..n {
                    let mut s = T::zero();
                    for p in 0..k {
                        s = s.add(a[ao + i * k + p].mul(b[bo + p * n + j]));
                    }
                    y.push(s);
                }
            }
            if !next_index(&mut idx, &batch) {
                break;
            }
        }
    }
    let mut shape = batch;
    if ash.len() > 1 {
        shape.push(m);
    }
    if bsh.len() > 1 {
        shape.push(n);
    }
    Ok((y, shape))
}

/// MatMul with numpy semantics: floats sum in f64, integers wrap.
pub(super) fn matmul(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(2, 2)?;
    let (ta, tb) = (cx.input(0)?, cx.input(1)?);
    if ta.dtype() != tb.dtype() {
        return Err(cx.err(format!(
            "inputs have different types: {} and {}",
            ta.dtype(),
            tb.dtype()
        )));
    }
    match ta.dtype() {
        DType::F32 | DType::F64 => {
            let (a, ash, dtype) = cx.floats(0)?;
            let (b, bsh, _) = cx.floats(1)?;
            let (y, shape) = matmul_core(cx, &a, &ash, &b, &bsh)?;
            Ok(vec![cx.float_out(dtype, &shape, y)?])
        }
        dt => with_num_dtype!(dt, T => {
            let (a, b) = (cx.array::<T>(0)?, cx.array::<T>(1)?);
            let (y, shape) = matmul_core(cx, &flat(a), a.shape(), &flat(b), b.shape())?;
            Ok(vec![T::wrap(cx.make(&shape, y)?)])
        }, bool => Err(cx.err("MatMul of bool tensors is not defined"))),
    }
}
