//! Reference evaluation of every IR op on [`Tensor`]s: simple, obviously correct code used for
//! constant folding, for ops that are never hot, and as the oracle in kernel tests.
//!
//! Every op follows the newest ONNX opset semantics (the importer rewrites older attribute forms
//! into inputs). Floating-point ops compute in f64 and round once to the output type, so the
//! reference is at least as accurate as any f32 kernel tested against it. Nothing here panics on
//! bad data: wrong input counts, dtypes, ranks or out-of-range indices are `Error::Node`.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};
use crate::ir::{Graph, Node, Op, ValueId};
use crate::tensor::{DType, Tensor};

mod conv;
mod elementwise;
mod matmul;
mod normalization;
mod pool;
mod reduce;
mod shape_ops;

#[cfg(test)]
mod tests;

/// Evaluates one node. `inputs[i]` is `None` for an omitted optional input.
///
/// Returns one tensor per entry of `node.outputs` (at least one when the node lists none, as
/// hand-built test nodes may).
pub fn eval(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let cx = Ctx { node, inputs };
    let mut out = match &node.op {
        Op::Conv(attrs) => conv::conv(&cx, attrs, crate::ir::Activation::None, false)?,
        Op::FusedConv {
            conv: attrs,
            activation,
            has_residual,
        } => conv::conv(&cx, attrs, *activation, *has_residual)?,
        Op::BatchNormalization { epsilon } => normalization::batch_norm(&cx, *epsilon)?,
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => normalization::lrn(&cx, *size, *alpha, *beta, *bias)?,
        Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid => elementwise::unary(&cx)?,
        Op::Clip => elementwise::clip(&cx)?,
        Op::Add | Op::Sub | Op::Mul | Op::Div => elementwise::binary(&cx)?,
        Op::Sum => elementwise::sum(&cx)?,
        Op::MaxPool(attrs) => pool::max_pool(&cx, attrs)?,
        Op::AveragePool(attrs) => pool::average_pool(&cx, attrs)?,
        Op::GlobalAveragePool => reduce::global_pool(&cx, false)?,
        Op::GlobalMaxPool => reduce::global_pool(&cx, true)?,
        Op::ReduceMean {
            keepdims,
            noop_with_empty_axes,
        } => reduce::reduce_mean(&cx, *keepdims, *noop_with_empty_axes)?,
        Op::Softmax { axis, legacy } => reduce::softmax(&cx, *axis, *legacy)?,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => matmul::gemm(&cx, *alpha, *beta, *trans_a, *trans_b)?,
        Op::MatMul => matmul::matmul(&cx)?,
        Op::Concat { axis } => shape_ops::concat(&cx, *axis)?,
        Op::Flatten { axis } => shape_ops::flatten(&cx, *axis)?,
        Op::Reshape { allowzero } => shape_ops::reshape(&cx, *allowzero)?,
        Op::Transpose { perm } => shape_ops::transpose(&cx, perm.as_deref())?,
        Op::Squeeze => shape_ops::squeeze(&cx)?,
        Op::Unsqueeze => shape_ops::unsqueeze(&cx)?,
        Op::Identity => shape_ops::identity(&cx)?,
        Op::Dropout => shape_ops::dropout(&cx)?,
        Op::ConstantOfShape { value } => shape_ops::constant_of_shape(&cx, value)?,
        Op::Shape { start, end } => shape_ops::shape(&cx, *start, *end)?,
        Op::Gather { axis } => shape_ops::gather(&cx, *axis)?,
        Op::Slice => shape_ops::slice(&cx)?,
        Op::Cast { to } => shape_ops::cast(&cx, *to)?,
        Op::Pad { mode } => shape_ops::pad(&cx, *mode)?,
    };
    if !node.outputs.is_empty() {
        if out.len() < node.outputs.len() {
            return Err(cx.err(format!(
                "node declares {} outputs, the op produces {}",
                node.outputs.len(),
                out.len()
            )));
        }
        out.truncate(node.outputs.len());
    }
    Ok(out)
}

/// Evaluates a graph whose shapes are bound, node by node, and returns its outputs in
/// `graph.outputs` order. Tests use it as the whole-graph oracle.
pub fn run_reference(graph: &Graph, feeds: &[(ValueId, Tensor)]) -> Result<Vec<Tensor>> {
    let mut values: HashMap<ValueId, Tensor> = HashMap::new();
    for (id, t) in feeds {
        values.insert(*id, t.clone());
    }
    for id in &graph.inputs {
        if !values.contains_key(id) && !graph.constants.contains_key(id) {
            let name = graph
                .values
                .get(id.0)
                .map(|v| v.name.clone())
                .unwrap_or_default();
            return Err(Error::Input {
                name,
                message: "graph input was not fed".into(),
            });
        }
    }
    for node in &graph.nodes {
        let mut ins: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
        for id in &node.inputs {
            match id {
                None => ins.push(None),
                Some(id) => {
                    let t = values
                        .get(id)
                        .or_else(|| graph.constants.get(id))
                        .ok_or_else(|| {
                            let name = graph
                                .values
                                .get(id.0)
                                .map(|v| v.name.as_str())
                                .unwrap_or("?");
                            Error::Model(format!(
                                "node '{}' reads value '{}' before anything produced it",
                                node.name, name
                            ))
                        })?;
                    ins.push(Some(t));
                }
            }
        }
        let outs = eval(node, &ins)?;
        for (id, t) in node.outputs.iter().zip(outs) {
            values.insert(*id, t);
        }
    }
    graph
        .outputs
        .iter()
        .map(|id| {
            values
                .get(id)
                .or_else(|| graph.constants.get(id))
                .cloned()
                .ok_or_else(|| {
                    let name = graph
                        .values
                        .get(id.0)
                        .map(|v| v.name.as_str())
                        .unwrap_or("?");
                    Error::Model(format!("graph output '{name}' is never produced"))
                })
        })
        .collect()
}

/// A node and its inputs, with the accessors every op uses to fetch and check them.
pub(crate) struct Ctx<'a> {
    pub node: &'a Node,
    pub inputs: &'a [Option<&'a Tensor>],
}

impl<'a> Ctx<'a> {
    /// An `Error::Node` for this node.
    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::node(&self.node.name, self.node.op.type_name(), message)
    }

    /// Number of outputs the node asks for (at least one).
    pub fn n_outputs(&self) -> usize {
        self.node.outputs.len().max(1)
    }

    /// Checks the number of inputs given (trailing omitted ones count as given).
    pub fn check_count(&self, min: usize, max: usize) -> Result<()> {
        let n = self.inputs.len();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(format!("expected {want} inputs, got {n}")));
        }
        Ok(())
    }

    /// A required input.
    pub fn input(&self, i: usize) -> Result<&'a Tensor> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.err(format!("input {i} is required but missing")))
    }

    /// An optional input (absent when beyond the list or omitted).
    pub fn opt(&self, i: usize) -> Option<&'a Tensor> {
        self.inputs.get(i).copied().flatten()
    }

    /// A required input as an array of element type `T`.
    pub fn array<T: Elem>(&self, i: usize) -> Result<&'a ArrayD<T>> {
        let t = self.input(i)?;
        T::view(t).ok_or_else(|| {
            self.err(format!(
                "input {i}: expected {} tensor, got {}",
                T::DTYPE,
                t.dtype()
            ))
        })
    }

    /// The contents of an integer input (shapes, axes, indices, pads).
    pub fn ints(&self, i: usize) -> Result<Vec<i64>> {
        let t = self.input(i)?;
        match t {
            Tensor::I64(_) | Tensor::I32(_) => Ok(t.to_i64_vec().unwrap_or_default()),
            _ => Err(self.err(format!(
                "input {i}: expected an int64 or int32 tensor, got {}",
                t.dtype()
            ))),
        }
    }

    /// An optional integer input.
    pub fn opt_ints(&self, i: usize) -> Result<Option<Vec<i64>>> {
        match self.opt(i) {
            None => Ok(None),
            Some(_) => self.ints(i).map(Some),
        }
    }

    /// A float (F32/F64) input widened to f64 in logical order, with its shape and dtype.
    pub fn floats(&self, i: usize) -> Result<(Vec<f64>, Vec<usize>, DType)> {
        let t = self.input(i)?;
        match t {
            Tensor::F32(a) => Ok((
                a.iter().map(|&v| v as f64).collect(),
                a.shape().to_vec(),
                DType::F32,
            )),
            Tensor::F64(a) => Ok((a.iter().copied().collect(), a.shape().to_vec(), DType::F64)),
            _ => Err(self.err(format!(
                "input {i}: expected a float32 or float64 tensor, got {}",
                t.dtype()
            ))),
        }
    }

    /// Normalises a possibly negative axis against `rank` (valid range `-rank..rank`).
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.err(format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(if axis < 0 { axis + r } else { axis } as usize)
    }

    /// Builds an f64-computed float result in the given float dtype.
    pub fn float_out(&self, dtype: DType, shape: &[usize], data: Vec<f64>) -> Result<Tensor> {
        match dtype {
            DType::F32 => self
                .make(shape, data.into_iter().map(|v| v as f32).collect())
                .map(Tensor::F32),
            DType::F64 => self.make(shape, data).map(Tensor::F64),
            other => Err(self.err(format!("internal: {other} is not a float type"))),
        }
    }

    /// An array from logical-order data; a length mismatch is an internal error, not a panic.
    pub fn make<T>(&self, shape: &[usize], data: Vec<T>) -> Result<ArrayD<T>> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| self.err(format!("internal: cannot build a {shape:?} array: {e}")))
    }
}

/// An element type a [`Tensor`] can hold, with the conversions the reference ops need.
pub(crate) trait Elem:
    Copy + PartialEq + PartialOrd + Default + std::fmt::Debug + 'static
{
    const DTYPE: DType;
    fn view(t: &Tensor) -> Option<&ArrayD<Self>>;
    fn wrap(a: ArrayD<Self>) -> Tensor;
    fn to_f64(self) -> f64;
    fn to_i64(self) -> i64;
    fn to_bool(self) -> bool;
    /// Float → integer truncates toward zero (Rust `as`, saturating; NaN becomes 0).
    fn from_f64(v: f64) -> Self;
    fn from_i64(v: i64) -> Self;
    fn from_bool(b: bool) -> Self;
}

/// Arithmetic for the numeric element types (integers wrap instead of panicking on overflow).
pub(crate) trait Num: Elem {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `None` for an integer division by zero; integer division truncates toward zero.
    fn div(self, o: Self) -> Option<Self>;
    fn zero() -> Self;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident, float) => {
        impl_elem!(@base $t, $variant);
        impl Num for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Option<Self> { Some(self / o) }
            fn zero() -> Self { 0.0 }
        }
    };
    ($t:ty, $variant:ident, int) => {
        impl_elem!(@base $t, $variant);
        impl Num for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div(self, o: Self) -> Option<Self> { if o == 0 { None } else { Some(self.wrapping_div(o)) } }
            fn zero() -> Self { 0 }
        }
    };
    (@base $t:ty, $variant:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn view(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t { Tensor::$variant(a) => Some(a), _ => None }
            }
            fn wrap(a: ArrayD<Self>) -> Tensor { Tensor::$variant(a) }
            fn to_f64(self) -> f64 { self as f64 }
            fn to_i64(self) -> i64 { self as i64 }
            #[allow(clippy::float_cmp)]
            fn to_bool(self) -> bool { self != (0 as $t) }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i64(v: i64) -> Self { v as $t }
            fn from_bool(b: bool) -> Self { if b { 1 as $t } else { 0 as $t } }
        }
    };
}

impl_elem!(f32, F32, float);
impl_elem!(f64, F64, float);
impl_elem!(i64, I64, int);
impl_elem!(i32, I32, int);
impl_elem!(u8, U8, int);

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn view(t: &Tensor) -> Option<&ArrayD<Self>> {
        match t {
            Tensor::Bool(a) => Some(a),
            _ => None,
        }
    }
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::Bool(a)
    }
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn to_bool(self) -> bool {
        self
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn from_bool(b: bool) -> Self {
        b
    }
}

/// Runs `$body` with `$T` aliased to the element type of `$dt` (every dtype).
macro_rules! with_dtype {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            $crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::tensor::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::tensor::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::tensor::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::tensor::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}

/// Runs `$body` with `$T` aliased to the element type of `$dt` for numeric dtypes; `$other`
/// for Bool.
macro_rules! with_num_dtype {
    ($dt:expr, $T:ident => $body:expr, bool => $other:expr) => {
        match $dt {
            $crate::tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::tensor::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::tensor::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::tensor::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::tensor::DType::Bool => $other,
        }
    };
}

pub(crate) use with_dtype;
pub(crate) use with_num_dtype;

/// Row-major strides of a shape.
pub(crate) fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Advances a row-major multi-index; returns false after the last one.
pub(crate) fn next_index(idx: &mut [usize], shape: &[usize]) -> bool {
    for d in (0..shape.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return true;
        }
        idx[d] = 0;
    }
    false
}

/// Numpy broadcast of two shapes, `None` when incompatible.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Flat (logical-order) data of an array.
pub(crate) fn flat<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    a.iter().cloned().collect()
}
