//! Elementwise ops: broadcasting binary arithmetic, variadic Sum, activations and Clip.

use ndarray::{ArrayD, IxDyn, Zip};

use super::{broadcast_shapes, with_num_dtype, Ctx, Elem, Num};
use crate::error::Result;
use crate::ir::Op;
use crate::tensor::Tensor;

#[derive(Clone, Copy)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Applies `op` to two arrays with numpy broadcasting.
fn broadcast_apply<T: Num>(cx: &Ctx, a: &ArrayD<T>, b: &ArrayD<T>, op: BinOp) -> Result<ArrayD<T>> {
    let shape = broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
        cx.err(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        ))
    })?;
    let av = a
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| cx.err(format!("cannot broadcast {:?} to {shape:?}", a.shape())))?;
    let bv = b
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| cx.err(format!("cannot broadcast {:?} to {shape:?}", b.shape())))?;
    if let BinOp::Div = op {
        if T::zero().div(T::zero()).is_none() && bv.iter().any(|&v| v == T::zero()) {
            return Err(cx.err("integer division by zero"));
        }
    }
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| match op {
        BinOp::Add => x.add(y),
        BinOp::Sub => x.sub(y),
        BinOp::Mul => x.mul(y),
        // Integer zero divisors were rejected above.
        BinOp::Div => x.div(y).unwrap_or_default(),
    }))
}

fn binary_tensors(cx: &Ctx, a: &Tensor, b: &Tensor, op: BinOp) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(cx.err(format!(
            "inputs have different types: {} and {}",
            a.dtype(),
            b.dtype()
        )));
    }
    with_num_dtype!(a.dtype(), T => {
        let (Some(x), Some(y)) = (T::view(a), T::view(b)) else {
            return Err(cx.err("internal: dtype mismatch"));
        };
        Ok(T::wrap(broadcast_apply(cx, x, y, op)?))
    }, bool => Err(cx.err("arithmetic on bool tensors is not defined")))
}

/// Add, Sub, Mul, Div with numpy broadcasting (F32, F64, I64, I32, U8).
pub(super) fn binary(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(2, 2)?;
    let op = match cx.node.op {
        Op::Add => BinOp::Add,
        Op::Sub => BinOp::Sub,
        Op::Mul => BinOp::Mul,
        _ => BinOp::Div,
    };
    Ok(vec![binary_tensors(cx, cx.input(0)?, cx.input(1)?, op)?])
}

/// Variadic Sum with broadcasting across all inputs.
pub(super) fn sum(cx: &Ctx) -> Result<Vec<Tensor>> {
    if cx.inputs.is_empty() {
        return Err(cx.err("expected at least 1 input, got 0"));
    }
    let mut acc = cx.input(0)?.clone();
    if acc.dtype() == crate::tensor::DType::Bool {
        return Err(cx.err("Sum of bool tensors is not defined"));
    }
    for i in 1..cx.inputs.len() {
        acc = binary_tensors(cx, &acc, cx.input(i)?, BinOp::Add)?;
    }
    Ok(vec![acc])
}

/// Relu (any numeric type), LeakyRelu and Sigmoid (float types).
pub(super) fn unary(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let x = cx.input(0)?;
    let out = match cx.node.op {
        Op::Relu => with_num_dtype!(x.dtype(), T => {
            let a = cx.array::<T>(0)?;
            T::wrap(a.mapv(|v| if v < T::zero() { T::zero() } else { v }))
        }, bool => return Err(cx.err("Relu of a bool tensor is not defined"))),
        Op::LeakyRelu { alpha } => {
            let (data, shape, dtype) = cx.floats(0)?;
            let alpha = alpha as f64;
            let y = data
                .into_iter()
                .map(|v| if v < 0.0 { v * alpha } else { v })
                .collect();
            cx.float_out(dtype, &shape, y)?
        }
        _ => {
            let (data, shape, dtype) = cx.floats(0)?;
            let y = data.into_iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
            cx.float_out(dtype, &shape, y)?
        }
    };
    Ok(vec![out])
}

/// Reads Clip's optional scalar bound.
fn bound<T: Elem>(cx: &Ctx, i: usize) -> Result<Option<T>> {
    let Some(t) = cx.opt(i) else { return Ok(None) };
    let a = T::view(t).ok_or_else(|| {
        cx.err(format!(
            "input {i}: expected {} bound, got {}",
            T::DTYPE,
            t.dtype()
        ))
    })?;
    if a.len() != 1 {
        return Err(cx.err(format!(
            "input {i}: bound must be a scalar, got shape {:?}",
            a.shape()
        )));
    }
    Ok(a.iter().next().copied())
}

/// Clip with optional min/max inputs, numpy order (`min(max(x, lo), hi)`: when lo > hi every
/// value becomes hi); NaN passes through.
pub(super) fn clip(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(1, 3)?;
    let x = cx.input(0)?;
    let out = with_num_dtype!(x.dtype(), T => {
        let a = cx.array::<T>(0)?;
        let lo = bound::<T>(cx, 1)?;
        let hi = bound::<T>(cx, 2)?;
        T::wrap(a.mapv(|v| {
            let v = match lo { Some(l) if v < l => l, _ => v };
            match hi { Some(h) if v > h => h, _ => v }
        }))
    }, bool => return Err(cx.err("Clip of a bool tensor is not defined")));
    Ok(vec![out])
}
