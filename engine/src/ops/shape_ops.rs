//! Data-movement ops: Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Gather, Slice,
//! Pad, Shape, ConstantOfShape, Cast, Identity, Dropout. All dtypes unless stated.

use ndarray::{ArrayD, Axis, IxDyn};

use super::{flat, next_index, strides_of, with_dtype, Ctx, Elem};
use crate::error::{Error, Result, UnsupportedNode};
use crate::ir::PadMode;
use crate::tensor::{DType, Tensor};

/// The same elements (logical order) under a new shape.
fn with_shape(cx: &Ctx, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if shape.iter().product::<usize>() != t.len() {
        return Err(cx.err(format!(
            "cannot view {} elements of shape {:?} as {shape:?}",
            t.len(),
            t.shape()
        )));
    }
    with_dtype!(t.dtype(), T => {
        let a = T::view(t).ok_or_else(|| cx.err("internal: dtype mismatch"))?;
        Ok(T::wrap(cx.make(shape, flat(a))?))
    })
}

/// Reshape: 0 copies the input dim at that index (a literal 0 with `allowzero`), one -1 is
/// inferred from the element count.
pub(super) fn reshape(cx: &Ctx, allowzero: bool) -> Result<Vec<Tensor>> {
    cx.check_count(2, 2)?;
    let x = cx.input(0)?;
    let spec = cx.ints(1)?;
    if cx.input(1)?.shape().len() != 1 {
        return Err(cx.err(format!(
            "shape input must be 1-D, got shape {:?}",
            cx.input(1)?.shape()
        )));
    }
    let xs = x.shape();
    let mut shape = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(cx.err(format!("more than one -1 in shape {spec:?}")));
                }
                shape.push(1);
            }
            0 if !allowzero => {
                let v = xs.get(i).copied().ok_or_else(|| {
                    cx.err(format!(
                        "shape {spec:?} copies dim {i} (0) but the input {xs:?} has rank {}",
                        xs.len()
                    ))
                })?;
                shape.push(v);
            }
            d if d < 0 => return Err(cx.err(format!("invalid dimension {d} in shape {spec:?}"))),
            d => shape.push(d as usize),
        }
    }
    if let Some(i) = infer {
        if allowzero && spec.contains(&0) {
            return Err(cx.err(format!("shape {spec:?} has both -1 and 0 with allowzero")));
        }
        let known: usize = shape
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &d)| d)
            .product();
        if known == 0 || x.len() % known != 0 {
            return Err(cx.err(format!(
                "cannot infer -1 in {spec:?} for {} elements ({xs:?})",
                x.len()
            )));
        }
        shape[i] = x.len() / known;
    }
    Ok(vec![with_shape(cx, x, &shape)?])
}

/// Flatten to 2-D at `axis` (negative counts from the end; 0 gives (1, all)).
pub(super) fn flatten(cx: &Ctx, axis: i64) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let x = cx.input(0)?;
    let r = x.shape().len() as i64;
    if axis < -r || axis > r {
        return Err(cx.err(format!("axis {axis} is out of range for rank {r}")));
    }
    let a = if axis < 0 { axis + r } else { axis } as usize;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a..].iter().product();
    Ok(vec![with_shape(cx, x, &[outer, inner])?])
}

/// Transpose by `perm` (default: reverse the axes).
pub(super) fn transpose(cx: &Ctx, perm: Option<&[usize]>) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let x = cx.input(0)?;
    let rank = x.shape().len();
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(cx.err(format!("perm {perm:?} is not a permutation of {rank} axes")));
    }
    let out = with_dtype!(x.dtype(), T => {
        let a = T::view(x).ok_or_else(|| cx.err("internal: dtype mismatch"))?;
        T::wrap(a.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned())
    });
    Ok(vec![out])
}

/// Squeeze the listed axes (which must have size 1), or every size-1 axis when none is given.
pub(super) fn squeeze(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(1, 2)?;
    let x = cx.input(0)?;
    let xs = x.shape();
    let rank = xs.len();
    let mut drop = vec![false; rank];
    match cx.opt_ints(1)? {
        Some(axes) => {
            for a in axes {
                let d = cx.axis(a, rank)?;
                if xs[d] != 1 {
                    return Err(cx.err(format!(
                        "cannot squeeze axis {a} of size {} in {xs:?}",
                        xs[d]
                    )));
                }
                drop[d] = true;
            }
        }
        None => (0..rank).for_each(|d| drop[d] = xs[d] == 1),
    }
    let shape: Vec<usize> = (0..rank).filter(|&d| !drop[d]).map(|d| xs[d]).collect();
    Ok(vec![with_shape(cx, x, &shape)?])
}

/// Unsqueeze: insert size-1 axes at `axes`, given relative to the output rank.
pub(super) fn unsqueeze(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(2, 2)?;
    let x = cx.input(0)?;
    let axes = cx.ints(1)?;
    let out_rank = x.shape().len() + axes.len();
    let mut ins = vec![false; out_rank];
    for &a in &axes {
        let d = cx.axis(a, out_rank)?;
        if std::mem::replace(&mut ins[d], true) {
            return Err(cx.err(format!("axis {a} repeated in {axes:?}")));
        }
    }
    let mut src = x.shape().iter();
    let shape: Vec<usize> = ins
        .iter()
        .map(|&i| {
            if i {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Ok(vec![with_shape(cx, x, &shape)?])
}

/// Concat along `axis` (negative counts from the end); all inputs share dtype and other dims.
pub(super) fn concat(cx: &Ctx, axis: i64) -> Result<Vec<Tensor>> {
    if cx.inputs.is_empty() {
        return Err(cx.err("expected at least 1 input, got 0"));
    }
    let first = cx.input(0)?;
    let rank = first.shape().len();
    let ax = cx.axis(axis, rank)?;
    let mut tensors = Vec::with_capacity(cx.inputs.len());
    for i in 0..cx.inputs.len() {
        let t = cx.input(i)?;
        let ok = t.dtype() == first.dtype()
            && t.shape().len() == rank
            && (0..rank).all(|d| d == ax || t.shape()[d] == first.shape()[d]);
        if !ok {
            return Err(cx.err(format!(
                "input {i} ({} {:?}) does not match input 0 ({} {:?}) outside axis {ax}",
                t.dtype(),
                t.shape(),
                first.dtype(),
                first.shape()
            )));
        }
        tensors.push(t);
    }
    let out = with_dtype!(first.dtype(), T => {
        let views: Vec<_> = tensors.iter().filter_map(|t| T::view(t).map(|a| a.view())).collect();
        T::wrap(ndarray::concatenate(Axis(ax), &views).map_err(|e| cx.err(format!("concatenate failed: {e}")))?)
    });
    Ok(vec![out])
}

/// Gather along `axis`: output shape is data[..axis] ++ indices ++ data[axis+1..]; negative
/// indices count from the end, out-of-range ones are an error.
pub(super) fn gather(cx: &Ctx, axis: i64) -> Result<Vec<Tensor>> {
    cx.check_count(2, 2)?;
    let x = cx.input(0)?;
    let xs = x.shape();
    let ax = cx.axis(axis, xs.len())?;
    let idx_t = cx.input(1)?;
    let raw = cx.ints(1)?;
    let dim = xs[ax];
    let mut idx = Vec::with_capacity(raw.len());
    for &i in &raw {
        let j = if i < 0 { i + dim as i64 } else { i };
        if j < 0 || j >= dim as i64 {
            return Err(cx.err(format!(
                "index {i} is out of range for axis {ax} of size {dim}"
            )));
        }
        idx.push(j as usize);
    }
    let outer: usize = xs[..ax].iter().product();
    let inner: usize = xs[ax + 1..].iter().product();
    let mut shape = xs[..ax].to_vec();
    shape.extend_from_slice(idx_t.shape());
    shape.extend_from_slice(&xs[ax + 1..]);
    let out = with_dtype!(x.dtype(), T => {
        let a = T::view(x).ok_or_else(|| cx.err("internal: dtype mismatch"))?;
        let data = flat(a);
        let mut y = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &j in &idx {
                let base = (o * dim + j) * inner;
                y.extend_from_slice(&data[base..base + inner]);
            }
        }
        T::wrap(cx.make(&shape, y)?)
    });
    Ok(vec![out])
}

/// Selects, per axis, the listed input indices (the general form of Slice).
fn select_axes(cx: &Ctx, x: &Tensor, lists: &[Option<Vec<usize>>]) -> Result<Tensor> {
    Ok(with_dtype!(x.dtype(), T => {
        let mut a: ArrayD<T> = T::view(x).ok_or_else(|| cx.err("internal: dtype mismatch"))?.clone();
        for (d, list) in lists.iter().enumerate() {
            if let Some(list) = list {
                a = a.select(Axis(d), list);
            }
        }
        T::wrap(a.as_standard_layout().into_owned())
    }))
}

/// Slice: data, starts, ends, [axes], [steps]. Starts/ends count from the end when negative
/// and are clamped (to [0, dim] for positive steps, [-1, dim-1] for negative), so INT64
/// max/min sentinels mean "to the end/beginning".
pub(super) fn slice(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(3, 5)?;
    let x = cx.input(0)?;
    let xs = x.shape();
    let rank = xs.len();
    let starts = cx.ints(1)?;
    let ends = cx.ints(2)?;
    let n = starts.len();
    let axes = cx.opt_ints(3)?.unwrap_or_else(|| (0..n as i64).collect());
    let steps = cx.opt_ints(4)?.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(cx.err(format!(
            "starts, ends, axes, steps lengths differ: {}, {}, {}, {}",
            n,
            ends.len(),
            axes.len(),
            steps.len()
        )));
    }
    let mut lists: Vec<Option<Vec<usize>>> = vec![None; rank];
    for i in 0..n {
        let d = cx.axis(axes[i], rank)?;
        if lists[d].is_some() {
            return Err(cx.err(format!("axis {} repeated in {axes:?}", axes[i])));
        }
        let step = steps[i] as i128;
        if step == 0 {
            return Err(cx.err("slice step must not be 0"));
        }
        let dim = xs[d] as i128;
        let fix = |v: i64| if v < 0 { v as i128 + dim } else { v as i128 };
        let (mut s, mut e) = (fix(starts[i]), fix(ends[i]));
        if step > 0 {
            s = s.clamp(0, dim);
            e = e.clamp(0, dim);
        } else {
            s = s.clamp(0, (dim - 1).max(0));
            e = e.clamp(-1, dim - 1);
        }
        let mut list = Vec::new();
        let mut j = if dim == 0 { e } else { s };
        while (step > 0 && j < e) || (step < 0 && j > e) {
            list.push(j as usize);
            j += step;
        }
        lists[d] = Some(list);
    }
    Ok(vec![select_axes(cx, x, &lists)?])
}

/// Pad: data, pads (begins then ends, per listed axis), [constant_value], [axes]. Negative
/// pads crop. Reflect mirrors without repeating the edge; Edge repeats it.
pub(super) fn pad(cx: &Ctx, mode: PadMode) -> Result<Vec<Tensor>> {
    cx.check_count(2, 4)?;
    let x = cx.input(0)?;
    let xs = x.shape().to_vec();
    let rank = xs.len();
    let pads = cx.ints(1)?;
    let axes: Vec<usize> = match cx.opt_ints(3)? {
        Some(a) => a.iter().map(|&v| cx.axis(v, rank)).collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    let k = axes.len();
    if pads.len() != 2 * k {
        return Err(cx.err(format!(
            "pads has {} entries, expected {} (2 per axis)",
            pads.len(),
            2 * k
        )));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (i, &d) in axes.iter().enumerate() {
        begin[d] = pads[i];
        end[d] = pads[k + i];
    }
    // For every axis, the input index each output index reads (None: the constant).
    let mut maps: Vec<Vec<Option<usize>>> = Vec::with_capacity(rank);
    for d in 0..rank {
        let dim = xs[d] as i64;
        let size = dim + begin[d] + end[d];
        if size < 0 {
            return Err(cx.err(format!(
                "pads {pads:?} crop axis {d} of size {dim} below zero"
            )));
        }
        let mut map = Vec::with_capacity(size as usize);
        for o in 0..size {
            let src = o - begin[d];
            let v = if (0..dim).contains(&src) {
                Some(src as usize)
            } else {
                match mode {
                    PadMode::Constant => None,
                    _ if dim == 0 => {
                        return Err(cx.err(format!("cannot {mode:?}-pad axis {d} of size 0")))
                    }
                    PadMode::Edge => Some(src.clamp(0, dim - 1) as usize),
                    PadMode::Reflect => {
                        if dim == 1 {
                            Some(0)
                        } else {
                            let period = 2 * (dim - 1);
                            let r = src.rem_euclid(period);
                            Some(if r < dim { r } else { period - r } as usize)
                        }
                    }
                }
            };
            map.push(v);
        }
        maps.push(map);
    }
    let shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let in_strides = strides_of(&xs);
    let out = with_dtype!(x.dtype(), T => {
        let a = T::view(x).ok_or_else(|| cx.err("internal: dtype mismatch"))?;
        let fill: T = match cx.opt(2) {
            None => T::default(),
            Some(t) => {
                let v = T::view(t).ok_or_else(|| {
                    cx.err(format!("constant_value must be {}, got {}", T::DTYPE, t.dtype()))
                })?;
                match v.len() {
                    0 => T::default(),
                    1 => v.iter().next().copied().unwrap_or_default(),
                    _ => return Err(cx.err(format!("constant_value must be a scalar, got {:?}", v.shape()))),
                }
            }
        };
        let data = flat(a);
        let total: usize = shape.iter().product();
        let mut y = Vec::with_capacity(total);
        if total > 0 {
            let mut idx = vec![0usize; rank];
            loop {
                let mut off = Some(0usize);
                for d in 0..rank {
                    off = match (off, maps[d][idx[d]]) {
                        (Some(o), Some(s)) => Some(o + s * in_strides[d]),
                        _ => None,
                    };
                }
                y.push(off.map_or(fill, |o| data[o]));
                if !next_index(&mut idx, &shape) {
                    break;
                }
            }
        }
        T::wrap(cx.make(&shape, y)?)
    });
    Ok(vec![out])
}

/// Shape of the input as int64, sliced by `start`/`end` (negative from the end, clamped).
pub(super) fn shape(cx: &Ctx, start: i64, end: Option<i64>) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let xs = cx.input(0)?.shape();
    let r = xs.len() as i64;
    let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = fix(start);
    let e = fix(end.unwrap_or(r));
    let dims: Vec<i64> = if s < e {
        xs[s..e].iter().map(|&d| d as i64).collect()
    } else {
        Vec::new()
    };
    Ok(vec![Tensor::I64(cx.make(&[dims.len()], dims)?)])
}

/// A tensor of the shape given by the 1-D input, filled with the one-element `value`.
pub(super) fn constant_of_shape(cx: &Ctx, value: &Tensor) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let dims = cx.ints(0)?;
    if cx.input(0)?.shape().len() > 1 {
        return Err(cx.err(format!(
            "shape input must be 1-D, got shape {:?}",
            cx.input(0)?.shape()
        )));
    }
    if value.len() != 1 {
        return Err(cx.err(format!(
            "value must have one element, got shape {:?}",
            value.shape()
        )));
    }
    let mut shape = Vec::with_capacity(dims.len());
    for &d in &dims {
        if d < 0 {
            return Err(cx.err(format!("negative dimension in shape {dims:?}")));
        }
        shape.push(d as usize);
    }
    let out = with_dtype!(value.dtype(), T => {
        let v = T::view(value).and_then(|a| a.iter().next().copied()).unwrap_or_default();
        T::wrap(ArrayD::from_elem(IxDyn(&shape), v))
    });
    Ok(vec![out])
}

fn cast_from<S: Elem>(a: &ArrayD<S>, to: DType) -> Tensor {
    let is_float = matches!(S::DTYPE, DType::F32 | DType::F64);
    let is_bool = S::DTYPE == DType::Bool;
    with_dtype!(to, T => {
        T::wrap(a.mapv(|v| {
            if is_bool {
                T::from_bool(v.to_bool())
            } else if is_float {
                T::from_f64(v.to_f64())
            } else {
                T::from_i64(v.to_i64())
            }
        }))
    })
}

/// Cast among F32/F64/I64/I32/Bool/U8: float → int truncates toward zero (saturating),
/// anything → bool is "non-zero", bool → number is 0/1, int → int wraps like C.
pub(super) fn cast(cx: &Ctx, to: DType) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    let x = cx.input(0)?;
    let out = with_dtype!(x.dtype(), S => {
        let a = S::view(x).ok_or_else(|| cx.err("internal: dtype mismatch"))?;
        cast_from(a, to)
    });
    Ok(vec![out])
}

pub(super) fn identity(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(1, 1)?;
    Ok(vec![cx.input(0)?.clone()])
}

/// Inference Dropout: the identity, plus an all-true mask when the node has a second output.
///
/// Training mode drops a random subset, which no reference can reproduce; it is refused as
/// unsupported (`Error::Unsupported`), except with `ratio` 0, where it keeps everything and is
/// the identity too.
pub(super) fn dropout(cx: &Ctx) -> Result<Vec<Tensor>> {
    cx.check_count(1, 3)?;
    let x = cx.input(0)?;
    if let Some(t) = cx.opt(2) {
        if t.dtype() != DType::Bool || t.len() != 1 {
            return Err(cx.err(format!(
                "training_mode must be a single bool, got {} {:?}",
                t.dtype(),
                t.shape()
            )));
        }
        let training = t.to_f64_vec().first().is_some_and(|&v| v != 0.0);
        // ONNX's default ratio is 0.5.
        let ratio = match cx.opt(1) {
            Some(r) if r.len() == 1 => r.to_f64_vec().first().copied().unwrap_or(0.5),
            Some(r) => {
                return Err(cx.err(format!("ratio must be a scalar, got shape {:?}", r.shape())))
            }
            None => 0.5,
        };
        if !(0.0..1.0).contains(&ratio) {
            return Err(cx.err(format!("ratio must be in [0, 1), got {ratio}")));
        }
        if training && ratio != 0.0 {
            return Err(Error::Unsupported(vec![UnsupportedNode {
                name: cx.node.name.clone(),
                op_type: "Dropout".into(),
                domain: String::new(),
                // Not known once the graph is imported; the reason says what is refused.
                opset: 0,
                reason: Some(format!(
                    "training_mode=true with ratio {ratio}: random masks are not supported (inference only)"
                )),
            }]));
        }
    }
    let mut out = vec![x.clone()];
    if cx.n_outputs() > 1 {
        out.push(Tensor::Bool(ArrayD::from_elem(IxDyn(x.shape()), true)));
    }
    Ok(out)
}
