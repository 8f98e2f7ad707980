//! Per-op shape and dtype inference on fixed shapes.
//!
//! Each op family has one function. Inputs that decide an output's shape (Reshape's `shape`,
//! Slice's `starts`...) must be constants by the time inference sees them; [`super::bind`]
//! folds exporter shape chains first, so in practice they are. Errors say what was expected
//! and what was found, naming the input values.

use super::geometry::{effective_kernel, pool_output_len, resolve_auto_pad};
use crate::error::{Error, Result};
use crate::ir::{AutoPad, ConvAttrs, Node, Op, PoolAttrs};
use crate::tensor::{DType, Tensor};

/// What inference knows about one (present) input of a node.
#[derive(Debug, Clone, Copy)]
pub struct Fact<'a> {
    /// The value's name, for error messages.
    pub name: &'a str,
    pub dtype: DType,
    pub shape: &'a [usize],
    /// The contents, when the value is a constant. Needed for shape-like inputs.
    pub value: Option<&'a Tensor>,
}

/// Inferred dtype and shape of one output.
pub type OutFact = (DType, Vec<usize>);

/// Numpy-style broadcasting of two shapes (align right; each pair equal or one of them 1).
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

fn fmt_shape(s: &[usize]) -> String {
    format!("{s:?}")
}

/// Node-local helpers for reading inputs and building errors.
struct Ctx<'a, 'b> {
    node: &'a Node,
    inputs: &'a [Option<Fact<'b>>],
}

impl<'a, 'b> Ctx<'a, 'b> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::node(&self.node.name, self.node.op.type_name(), message)
    }

    fn opt(&self, i: usize) -> Option<Fact<'b>> {
        self.inputs.get(i).copied().flatten()
    }

    fn input(&self, i: usize, what: &str) -> Result<Fact<'b>> {
        self.opt(i)
            .ok_or_else(|| self.err(format!("missing required input {i} ({what})")))
    }

    /// An integer input that must be constant (shape-like); `None` when omitted.
    fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        let Some(f) = self.opt(i) else {
            return Ok(None);
        };
        let Some(t) = f.value else {
            return Err(self.err(format!(
                "input '{}' ({what}) must be a constant after constant folding, but it is computed at run time",
                f.name
            )));
        };
        if f.shape.len() > 1 {
            return Err(self.err(format!(
                "input '{}' ({what}) must be 1-D, got shape {}",
                f.name,
                fmt_shape(f.shape)
            )));
        }
        t.to_i64_vec().map(Some).ok_or_else(|| {
            self.err(format!(
                "input '{}' ({what}) must hold integers, got {}",
                f.name, f.dtype
            ))
        })
    }

    /// Normalises an axis in `[-rank, rank)` to `[0, rank)`.
    fn axis(&self, axis: i64, rank: usize, what: &str) -> Result<usize> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.err(format!(
                "{what} {axis} is out of range for rank {rank} (expected {} to {})",
                -r,
                r - 1
            )));
        }
        Ok(if axis < 0 {
            (axis + r) as usize
        } else {
            axis as usize
        })
    }

    fn same_dtype(&self, a: &Fact, b: &Fact) -> Result<()> {
        if a.dtype != b.dtype {
            return Err(self.err(format!(
                "input '{}' is {} but input '{}' is {}",
                a.name, a.dtype, b.name, b.dtype
            )));
        }
        Ok(())
    }

    fn float_input(&self, f: &Fact) -> Result<()> {
        if !matches!(f.dtype, DType::F32 | DType::F64) {
            return Err(self.err(format!(
                "input '{}' must be float32 or float64, got {}",
                f.name, f.dtype
            )));
        }
        Ok(())
    }
}

/// Infers the dtype and shape of every output of `node` from its inputs (`None` entries are
/// omitted optional inputs). Conv/pool attributes may be in any form (auto_pad, empty strides);
/// they are resolved the same way [`canonical_op`] does.
pub fn infer_node(node: &Node, inputs: &[Option<Fact>]) -> Result<Vec<OutFact>> {
    let c = Ctx { node, inputs };
    let outs = match &node.op {
        Op::Conv(a) => vec![conv(&c, &resolve_conv(&c, a)?, false)?],
        Op::FusedConv {
            conv: a,
            has_residual,
            ..
        } => vec![conv(&c, &resolve_conv(&c, a)?, *has_residual)?],
        Op::MaxPool(p) => vec![pool(&c, &resolve_pool(&c, p)?, false)?],
        Op::AveragePool(p) => vec![pool(&c, &resolve_pool(&c, p)?, true)?],
        Op::GlobalAveragePool | Op::GlobalMaxPool => vec![global_pool(&c)?],
        Op::BatchNormalization { .. } => vec![batch_norm(&c)?],
        Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::Clip
        | Op::Identity
        | Op::Lrn { .. } => {
            vec![unary(&c)?]
        }
        Op::Softmax { axis, .. } => {
            let x = c.input(0, "input")?;
            c.axis(*axis, x.shape.len(), "axis")?;
            c.float_input(&x)?;
            vec![(x.dtype, x.shape.to_vec())]
        }
        Op::Dropout => {
            let (dt, s) = unary(&c)?;
            let mut v = vec![(dt, s.clone())];
            if node.outputs.len() > 1 {
                v.push((DType::Bool, s));
            }
            v
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Sum => vec![elementwise(&c)?],
        Op::Concat { axis } => vec![concat(&c, *axis)?],
        Op::Gemm {
            trans_a, trans_b, ..
        } => vec![gemm(&c, *trans_a, *trans_b)?],
        Op::MatMul => vec![matmul(&c)?],
        Op::Flatten { axis } => vec![flatten(&c, *axis)?],
        Op::Reshape { allowzero } => vec![reshape(&c, *allowzero)?],
        Op::Transpose { perm } => vec![transpose(&c, perm.as_deref())?],
        Op::Squeeze => vec![squeeze(&c)?],
        Op::Unsqueeze => vec![unsqueeze(&c)?],
        Op::ConstantOfShape { value } => vec![constant_of_shape(&c, value)?],
        Op::Shape { start, end } => {
            let x = c.input(0, "data")?;
            let (s, e) = shape_range(x.shape.len(), *start, *end);
            vec![(DType::I64, vec![e - s])]
        }
        Op::Gather { axis } => vec![gather(&c, *axis)?],
        Op::Slice => vec![slice(&c)?],
        Op::Cast { to } => {
            let x = c.input(0, "input")?;
            vec![(*to, x.shape.to_vec())]
        }
        Op::Pad { mode } => vec![pad(&c, *mode)?],
        Op::ReduceMean {
            keepdims,
            noop_with_empty_axes,
        } => vec![reduce(&c, *keepdims, *noop_with_empty_axes)?],
    };
    if outs.len() < node.outputs.len() {
        return Err(c.err(format!(
            "has {} outputs but the op produces {}",
            node.outputs.len(),
            outs.len()
        )));
    }
    Ok(outs)
}

/// The `[start, end)` range of dimensions a `Shape` node reports, clamped per the ONNX spec
/// (negative values count from the end; out-of-range values clamp to `[0, rank]`).
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let norm = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = norm(start);
    let e = norm(end.unwrap_or(r));
    (s, e.max(s))
}

/// `op` with conv/pool attributes in canonical form for these inputs: `auto_pad = NotSet`,
/// explicit `pads` (begins then ends), `kernel_shape` filled (from the weight for Conv) and
/// `strides`/`dilations` of full length. Other ops are returned unchanged.
pub fn canonical_op(node: &Node, inputs: &[Option<Fact>]) -> Result<Op> {
    let c = Ctx { node, inputs };
    Ok(match &node.op {
        Op::Conv(a) => Op::Conv(resolve_conv(&c, a)?),
        Op::FusedConv {
            conv,
            activation,
            has_residual,
        } => Op::FusedConv {
            conv: resolve_conv(&c, conv)?,
            activation: *activation,
            has_residual: *has_residual,
        },
        Op::MaxPool(p) => Op::MaxPool(resolve_pool(&c, p)?),
        Op::AveragePool(p) => Op::AveragePool(resolve_pool(&c, p)?),
        other => other.clone(),
    })
}

/// Fills a per-spatial-axis attribute (empty = ONNX default) and checks its length.
fn full_len(c: &Ctx, v: &[usize], n: usize, default: usize, what: &str) -> Result<Vec<usize>> {
    if v.is_empty() {
        Ok(vec![default; n])
    } else if v.len() == n {
        Ok(v.to_vec())
    } else {
        Err(c.err(format!(
            "{what} has {} entries but the input has {n} spatial dimensions",
            v.len()
        )))
    }
}

/// Checks the data input of a conv/pool: rank >= 3 and no zero-size dimension.
fn spatial_input<'b>(c: &Ctx<'_, 'b>) -> Result<Fact<'b>> {
    let x = c.input(0, "X")?;
    if x.shape.len() < 3 {
        return Err(c.err(format!(
            "input '{}' must have at least 3 dimensions (N, C, spatial...), got shape {}",
            x.name,
            fmt_shape(x.shape)
        )));
    }
    if x.shape.contains(&0) {
        return Err(c.err(format!(
            "input '{}' has shape {} with a zero-size dimension: there is nothing to compute",
            x.name,
            fmt_shape(x.shape)
        )));
    }
    Ok(x)
}

/// Resolves padding for every spatial axis, returning `(pads, auto_pad = NotSet)` form.
fn resolve_pads(
    c: &Ctx,
    auto_pad: AutoPad,
    spatial: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> Result<Vec<usize>> {
    let n = spatial.len();
    let explicit = if pads.is_empty() {
        vec![0; 2 * n]
    } else if pads.len() == 2 * n {
        pads.to_vec()
    } else {
        return Err(c.err(format!(
            "pads has {} entries but the input has {n} spatial dimensions (expected {})",
            pads.len(),
            2 * n
        )));
    };
    let mut out = vec![0; 2 * n];
    for i in 0..n {
        let (b, e) = resolve_auto_pad(
            auto_pad,
            spatial[i],
            kernel[i],
            strides[i],
            dilations[i],
            (explicit[i], explicit[i + n]),
        )
        .ok_or_else(|| {
            c.err(format!(
                "cannot resolve padding on spatial axis {i} (overflow)"
            ))
        })?;
        out[i] = b;
        out[i + n] = e;
    }
    Ok(out)
}

fn resolve_conv(c: &Ctx, a: &ConvAttrs) -> Result<ConvAttrs> {
    let x = spatial_input(c)?;
    let w = c.input(1, "W")?;
    if w.shape.len() != x.shape.len() {
        return Err(c.err(format!(
            "weight '{}' has shape {} but must have the input's rank {} (M, C/group, kernel...)",
            w.name,
            fmt_shape(w.shape),
            x.shape.len()
        )));
    }
    let n = x.shape.len() - 2;
    let kernel = w.shape[2..].to_vec();
    if let Some(k) = &a.kernel_shape {
        if *k != kernel {
            return Err(c.err(format!(
                "kernel_shape {} disagrees with weight '{}' of shape {}",
                fmt_shape(k),
                w.name,
                fmt_shape(w.shape)
            )));
        }
    }
    let strides = full_len(c, &a.strides, n, 1, "strides")?;
    let dilations = full_len(c, &a.dilations, n, 1, "dilations")?;
    let pads = resolve_pads(
        c,
        a.auto_pad,
        &x.shape[2..],
        &kernel,
        &strides,
        &dilations,
        &a.pads,
    )?;
    Ok(ConvAttrs {
        kernel_shape: Some(kernel),
        strides,
        pads,
        dilations,
        group: a.group,
        auto_pad: AutoPad::NotSet,
    })
}

fn resolve_pool(c: &Ctx, p: &PoolAttrs) -> Result<PoolAttrs> {
    let x = spatial_input(c)?;
    let n = x.shape.len() - 2;
    if p.kernel_shape.len() != n {
        return Err(c.err(format!(
            "kernel_shape {} has {} entries but input '{}' of shape {} has {n} spatial dimensions",
            fmt_shape(&p.kernel_shape),
            p.kernel_shape.len(),
            x.name,
            fmt_shape(x.shape)
        )));
    }
    let strides = full_len(c, &p.strides, n, 1, "strides")?;
    let dilations = full_len(c, &p.dilations, n, 1, "dilations")?;
    let pads = resolve_pads(
        c,
        p.auto_pad,
        &x.shape[2..],
        &p.kernel_shape,
        &strides,
        &dilations,
        &p.pads,
    )?;
    Ok(PoolAttrs {
        strides,
        pads,
        dilations,
        auto_pad: AutoPad::NotSet,
        ..p.clone()
    })
}

/// Output spatial sizes of a window op with canonical attributes.
#[allow(clippy::too_many_arguments)]
fn window_outputs(
    c: &Ctx,
    x: &Fact,
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
    ceil_mode: bool,
    is_pool: bool,
) -> Result<Vec<usize>> {
    let n = kernel.len();
    let spatial = &x.shape[2..];
    (0..n)
        .map(|i| {
            let (pb, pe) = (pads[i], pads[i + n]);
            // Pooling windows made only of padding have no defined value (ONNX Runtime refuses
            // them too); convolutions just see zeros there.
            if is_pool && pb.max(pe) >= effective_kernel(kernel[i], dilations[i]).unwrap_or(usize::MAX) {
                return Err(c.err(format!(
                    "padding ({pb}, {pe}) on spatial axis {i} must be smaller than the kernel ({})",
                    kernel[i]
                )));
            }
            pool_output_len(spatial[i], kernel[i], strides[i], dilations[i], pb, pe, ceil_mode).ok_or_else(|| {
                c.err(format!(
                    "the kernel ({} with dilation {}) does not fit in input '{}' along spatial axis {i}: length {} padded by {pb}+{pe}",
                    kernel[i], dilations[i], x.name, spatial[i]
                ))
            })
        })
        .collect()
}

fn conv(c: &Ctx, a: &ConvAttrs, has_residual: bool) -> Result<OutFact> {
    let x = spatial_input(c)?;
    let w = c.input(1, "W")?;
    c.same_dtype(&x, &w)?;
    c.float_input(&x)?;
    if w.shape.contains(&0) {
        return Err(c.err(format!(
            "weight '{}' has shape {} with a zero-size dimension: there is nothing to compute",
            w.name,
            fmt_shape(w.shape)
        )));
    }
    let g = a.group;
    let (m, cpg) = (w.shape[0], w.shape[1]);
    let channels = x.shape[1];
    if cpg.checked_mul(g) != Some(channels) {
        return Err(c.err(format!(
            "weight '{}' expects {cpg} input channels per group (group {g}) but input '{}' has {channels} channels",
            w.name, x.name
        )));
    }
    if m % g != 0 {
        return Err(c.err(format!(
            "weight '{}' has {m} output channels, not divisible by group {g}",
            w.name
        )));
    }
    if let Some(b) = c.opt(2) {
        if b.shape != [m] {
            return Err(c.err(format!(
                "bias '{}' must have shape [{m}], got {}",
                b.name,
                fmt_shape(b.shape)
            )));
        }
    }
    let kernel = a
        .kernel_shape
        .clone()
        .unwrap_or_else(|| w.shape[2..].to_vec());
    let mut shape = vec![x.shape[0], m];
    shape.extend(window_outputs(
        c,
        &x,
        &kernel,
        &a.strides,
        &a.dilations,
        &a.pads,
        false,
        false,
    )?);
    if has_residual {
        let r = c.input(3, "residual")?;
        if r.shape != shape.as_slice() {
            return Err(c.err(format!(
                "residual '{}' has shape {} but the convolution produces {}",
                r.name,
                fmt_shape(r.shape),
                fmt_shape(&shape)
            )));
        }
    }
    Ok((x.dtype, shape))
}

fn pool(c: &Ctx, p: &PoolAttrs, average: bool) -> Result<OutFact> {
    let x = spatial_input(c)?;
    if average {
        c.float_input(&x)?;
    }
    let mut shape = x.shape[..2].to_vec();
    shape.extend(window_outputs(
        c,
        &x,
        &p.kernel_shape,
        &p.strides,
        &p.dilations,
        &p.pads,
        p.ceil_mode,
        true,
    )?);
    Ok((x.dtype, shape))
}

fn global_pool(c: &Ctx) -> Result<OutFact> {
    let x = spatial_input(c)?;
    let mut shape = x.shape[..2].to_vec();
    shape.resize(x.shape.len(), 1);
    Ok((x.dtype, shape))
}

fn batch_norm(c: &Ctx) -> Result<OutFact> {
    let x = c.input(0, "X")?;
    c.float_input(&x)?;
    if x.shape.len() < 2 {
        return Err(c.err(format!(
            "input '{}' must have at least 2 dimensions (N, C, ...), got shape {}",
            x.name,
            fmt_shape(x.shape)
        )));
    }
    let ch = x.shape[1];
    for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
        let p = c.input(i, what)?;
        if p.shape != [ch] {
            return Err(c.err(format!(
                "{what} '{}' must have shape [{ch}] (the channels of input '{}'), got {}",
                p.name,
                x.name,
                fmt_shape(p.shape)
            )));
        }
    }
    Ok((x.dtype, x.shape.to_vec()))
}

fn unary(c: &Ctx) -> Result<OutFact> {
    let x = c.input(0, "input")?;
    match c.node.op {
        Op::Lrn { .. } if x.shape.len() < 3 => {
            return Err(c.err(format!(
                "input '{}' must have at least 3 dimensions (N, C, spatial...), got shape {}",
                x.name,
                fmt_shape(x.shape)
            )))
        }
        Op::Clip => {
            for i in [1, 2] {
                if let Some(b) = c.opt(i) {
                    if b.shape.iter().product::<usize>() != 1 {
                        return Err(c.err(format!(
                            "bound '{}' must be a scalar, got shape {}",
                            b.name,
                            fmt_shape(b.shape)
                        )));
                    }
                    c.same_dtype(&x, &b)?;
                }
            }
        }
        _ => {}
    }
    Ok((x.dtype, x.shape.to_vec()))
}

fn elementwise(c: &Ctx) -> Result<OutFact> {
    let first = c.input(0, "A")?;
    if matches!(c.node.op, Op::Add | Op::Sub | Op::Mul | Op::Div) {
        c.input(1, "B")?;
    }
    let mut shape = first.shape.to_vec();
    for f in c.inputs.iter().skip(1).flatten() {
        c.same_dtype(&first, f)?;
        shape = broadcast_shapes(&shape, f.shape).ok_or_else(|| {
            c.err(format!(
                "cannot broadcast input '{}' of shape {} with shape {}",
                f.name,
                fmt_shape(f.shape),
                fmt_shape(&shape)
            ))
        })?;
    }
    Ok((first.dtype, shape))
}

fn concat(c: &Ctx, axis: i64) -> Result<OutFact> {
    let first = c.input(0, "inputs")?;
    let r = first.shape.len();
    let ax = c.axis(axis, r, "axis")?;
    let mut shape = first.shape.to_vec();
    shape[ax] = 0;
    for f in c.inputs.iter().flatten() {
        c.same_dtype(&first, f)?;
        let compatible =
            f.shape.len() == r && (0..r).all(|i| i == ax || f.shape[i] == first.shape[i]);
        if !compatible {
            return Err(c.err(format!(
                "input '{}' has shape {} but input '{}' has {}; all dimensions except axis {ax} must match",
                f.name,
                fmt_shape(f.shape),
                first.name,
                fmt_shape(first.shape)
            )));
        }
        shape[ax] += f.shape[ax];
    }
    Ok((first.dtype, shape))
}

fn gemm(c: &Ctx, trans_a: bool, trans_b: bool) -> Result<OutFact> {
    let a = c.input(0, "A")?;
    let b = c.input(1, "B")?;
    c.same_dtype(&a, &b)?;
    for f in [&a, &b] {
        if f.shape.len() != 2 {
            return Err(c.err(format!(
                "input '{}' must be 2-D, got shape {}",
                f.name,
                fmt_shape(f.shape)
            )));
        }
    }
    let (m, k) = if trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return Err(c.err(format!(
            "inner dimensions differ: A '{}' {} (transA {}) gives K={k} but B '{}' {} (transB {}) gives K={k2}",
            a.name,
            fmt_shape(a.shape),
            trans_a as u8,
            b.name,
            fmt_shape(b.shape),
            trans_b as u8
        )));
    }
    if let Some(cc) = c.opt(2) {
        c.same_dtype(&a, &cc)?;
        if broadcast_shapes(cc.shape, &[m, n]).as_deref() != Some(&[m, n][..]) {
            return Err(c.err(format!(
                "C '{}' of shape {} does not broadcast to [{m}, {n}]",
                cc.name,
                fmt_shape(cc.shape)
            )));
        }
    }
    Ok((a.dtype, vec![m, n]))
}

fn matmul(c: &Ctx) -> Result<OutFact> {
    let a = c.input(0, "A")?;
    let b = c.input(1, "B")?;
    c.same_dtype(&a, &b)?;
    if a.shape.is_empty() || b.shape.is_empty() {
        return Err(c.err("MatMul inputs must have at least 1 dimension"));
    }
    let a2: Vec<usize> = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.to_vec()
    };
    let b2: Vec<usize> = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(c.err(format!(
            "inner dimensions differ: '{}' {} has K={k} but '{}' {} has K={k2}",
            a.name,
            fmt_shape(a.shape),
            b.name,
            fmt_shape(b.shape)
        )));
    }
    let mut shape =
        broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).ok_or_else(|| {
            c.err(format!(
                "batch dimensions of '{}' {} and '{}' {} do not broadcast",
                a.name,
                fmt_shape(a.shape),
                b.name,
                fmt_shape(b.shape)
            ))
        })?;
    if a.shape.len() > 1 {
        shape.push(m);
    }
    if b.shape.len() > 1 {
        shape.push(n);
    }
    Ok((a.dtype, shape))
}

fn flatten(c: &Ctx, axis: i64) -> Result<OutFact> {
    let x = c.input(0, "input")?;
    let r = x.shape.len() as i64;
    if axis < -r || axis > r {
        return Err(c.err(format!(
            "axis {axis} is out of range for rank {r} (expected {} to {r})",
            -r
        )));
    }
    let ax = if axis < 0 { axis + r } else { axis } as usize;
    let outer: usize = x.shape[..ax].iter().product();
    let inner: usize = x.shape[ax..].iter().product();
    Ok((x.dtype, vec![outer, inner]))
}

fn reshape(c: &Ctx, allowzero: bool) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let spec = c
        .const_ints(1, "shape")?
        .ok_or_else(|| c.err("missing required input 1 (shape)"))?;
    let total: u128 = x.shape.iter().map(|&d| d as u128).product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    let mut known: u128 = 1;
    for (i, &s) in spec.iter().enumerate() {
        let d = match s {
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err(c.err(format!("shape {spec:?} has more than one -1")));
                }
                out.push(0);
                continue;
            }
            0 if !allowzero => *x.shape.get(i).ok_or_else(|| {
                c.err(format!(
                    "shape {spec:?} copies dimension {i} (0) but input '{}' has rank {}",
                    x.name,
                    x.shape.len()
                ))
            })?,
            s if s < 0 => return Err(c.err(format!("shape {spec:?} has invalid entry {s}"))),
            s => usize::try_from(s).map_err(|_| c.err(format!("shape entry {s} is too large")))?,
        };
        known = known.saturating_mul(d as u128);
        out.push(d);
    }
    if let Some(i) = infer_at {
        if allowzero && spec.contains(&0) {
            return Err(c.err(format!("shape {spec:?} has both 0 and -1 with allowzero=1")));
        }
        if known == 0 || !total.is_multiple_of(known) {
            return Err(c.err(format!(
                "cannot reshape input '{}' of shape {} ({total} elements) to {spec:?}",
                x.name,
                fmt_shape(x.shape)
            )));
        }
        out[i] = (total / known) as usize;
    } else if known != total {
        return Err(c.err(format!(
            "cannot reshape input '{}' of shape {} ({total} elements) to {} ({known} elements)",
            x.name,
            fmt_shape(x.shape),
            fmt_shape(&out)
        )));
    }
    Ok((x.dtype, out))
}

fn transpose(c: &Ctx, perm: Option<&[usize]>) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let r = x.shape.len();
    let perm: Vec<usize> = perm.map_or_else(|| (0..r).rev().collect(), |p| p.to_vec());
    let mut seen = vec![false; r];
    let valid = perm.len() == r
        && perm
            .iter()
            .all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(c.err(format!(
            "perm {perm:?} is not a permutation of the {r} axes of input '{}'",
            x.name
        )));
    }
    Ok((x.dtype, perm.iter().map(|&p| x.shape[p]).collect()))
}

/// Normalised, de-duplicated axes (error on repeats).
fn axes_list(c: &Ctx, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = c.axis(a, rank, "axis")?;
        if out.contains(&n) {
            return Err(c.err(format!("axes {axes:?} repeat axis {n}")));
        }
        out.push(n);
    }
    Ok(out)
}

fn squeeze(c: &Ctx) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let shape = match c.const_ints(1, "axes")? {
        None => x.shape.iter().copied().filter(|&d| d != 1).collect(),
        Some(axes) => {
            let axes = axes_list(c, &axes, x.shape.len())?;
            if let Some(&a) = axes.iter().find(|&&a| x.shape[a] != 1) {
                return Err(c.err(format!(
                    "cannot squeeze axis {a} of input '{}' with shape {}: its size is {}, not 1",
                    x.name,
                    fmt_shape(x.shape),
                    x.shape[a]
                )));
            }
            x.shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    Ok((x.dtype, shape))
}

fn unsqueeze(c: &Ctx) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let axes = c
        .const_ints(1, "axes")?
        .ok_or_else(|| c.err("missing required input 1 (axes)"))?;
    let r = x.shape.len() + axes.len();
    let axes = axes_list(c, &axes, r)?;
    let mut src = x.shape.iter();
    let shape = (0..r)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Ok((x.dtype, shape))
}

fn constant_of_shape(c: &Ctx, value: &Tensor) -> Result<OutFact> {
    let spec = c
        .const_ints(0, "shape")?
        .ok_or_else(|| c.err("missing required input 0 (shape)"))?;
    let shape = spec
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| c.err(format!("shape {spec:?} has a negative dimension")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((value.dtype(), shape))
}

fn gather(c: &Ctx, axis: i64) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let idx = c.input(1, "indices")?;
    if !matches!(idx.dtype, DType::I64 | DType::I32) {
        return Err(c.err(format!(
            "indices '{}' must be int64 or int32, got {}",
            idx.name, idx.dtype
        )));
    }
    if x.shape.is_empty() {
        return Err(c.err(format!("data '{}' must have at least 1 dimension", x.name)));
    }
    let ax = c.axis(axis, x.shape.len(), "axis")?;
    let d = x.shape[ax] as i64;
    if let Some(v) = idx.value.and_then(|t| t.to_i64_vec()) {
        if let Some(bad) = v.iter().find(|&&i| i < -d || i >= d) {
            return Err(c.err(format!(
                "index {bad} is out of range for axis {ax} of size {d} in '{}'",
                x.name
            )));
        }
    }
    let mut shape = x.shape[..ax].to_vec();
    shape.extend_from_slice(idx.shape);
    shape.extend_from_slice(&x.shape[ax + 1..]);
    Ok((x.dtype, shape))
}

/// Number of elements `Slice` selects from a dimension of size `dim`, per the ONNX clamping
/// rules (negative start/end count from the end; the range is clamped to the dimension, and
/// for negative steps to `[-1, dim-1]` so a slice can run down to index 0).
pub fn slice_len(dim: usize, start: i64, end: i64, step: i64) -> usize {
    let d = dim as i128;
    let (mut s, mut e, st) = (start as i128, end as i128, step as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let n = if st > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        if e > s {
            (e - s + st - 1) / st
        } else {
            0
        }
    } else if st < 0 {
        if d == 0 {
            return 0;
        }
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        if s > e {
            (s - e + (-st) - 1) / (-st)
        } else {
            0
        }
    } else {
        0
    };
    n as usize
}

fn slice(c: &Ctx) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let starts = c
        .const_ints(1, "starts")?
        .ok_or_else(|| c.err("missing required input 1 (starts)"))?;
    let ends = c
        .const_ints(2, "ends")?
        .ok_or_else(|| c.err("missing required input 2 (ends)"))?;
    let r = x.shape.len();
    let axes = c
        .const_ints(3, "axes")?
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = c
        .const_ints(4, "steps")?
        .unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(c.err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have the same length"
        )));
    }
    let axes = axes_list(c, &axes, r)?;
    let mut shape = x.shape.to_vec();
    for (i, &a) in axes.iter().enumerate() {
        if steps[i] == 0 {
            return Err(c.err(format!("steps {steps:?} contain 0")));
        }
        shape[a] = slice_len(x.shape[a], starts[i], ends[i], steps[i]);
    }
    Ok((x.dtype, shape))
}

fn pad(c: &Ctx, mode: crate::ir::PadMode) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let pads = c
        .const_ints(1, "pads")?
        .ok_or_else(|| c.err("missing required input 1 (pads)"))?;
    let r = x.shape.len();
    let axes = match c.const_ints(3, "axes")? {
        Some(a) => axes_list(c, &a, r)?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(c.err(format!(
            "pads {pads:?} must have {} entries (begin and end for {} axes)",
            2 * axes.len(),
            axes.len()
        )));
    }
    if let Some(v) = c.opt(2) {
        if v.shape.iter().product::<usize>() != 1 {
            return Err(c.err(format!(
                "constant_value '{}' must be a scalar, got shape {}",
                v.name,
                fmt_shape(v.shape)
            )));
        }
    }
    let n = axes.len();
    let mut shape = x.shape.to_vec();
    for (i, &a) in axes.iter().enumerate() {
        let (b, e) = (pads[i], pads[i + n]);
        let d = x.shape[a] as i128;
        let len = d + b as i128 + e as i128;
        if len < 0 {
            return Err(c.err(format!(
                "pads ({b}, {e}) on axis {a} remove more than its {d} elements"
            )));
        }
        let grows = b > 0 || e > 0;
        match mode {
            crate::ir::PadMode::Reflect if grows && (b as i128 >= d || e as i128 >= d) => {
                return Err(c.err(format!(
                    "reflect pads ({b}, {e}) on axis {a} must be smaller than its size {d}"
                )));
            }
            crate::ir::PadMode::Edge if grows && d == 0 => {
                return Err(c.err(format!(
                    "edge padding axis {a} of size 0 has no edge to repeat"
                )));
            }
            _ => {}
        }
        shape[a] = usize::try_from(len)
            .map_err(|_| c.err(format!("padded size of axis {a} is too large")))?;
    }
    Ok((x.dtype, shape))
}

fn reduce(c: &Ctx, keepdims: bool, noop_with_empty_axes: bool) -> Result<OutFact> {
    let x = c.input(0, "data")?;
    let r = x.shape.len();
    let axes = c.const_ints(1, "axes")?.unwrap_or_default();
    if axes.is_empty() && noop_with_empty_axes {
        return Ok((x.dtype, x.shape.to_vec()));
    }
    let axes = if axes.is_empty() {
        (0..r).collect()
    } else {
        axes_list(c, &axes, r)?
    };
    let mut shape = Vec::with_capacity(r);
    for (i, &d) in x.shape.iter().enumerate() {
        if !axes.contains(&i) {
            shape.push(d);
        } else if keepdims {
            shape.push(1);
        }
    }
    Ok((x.dtype, shape))
}
