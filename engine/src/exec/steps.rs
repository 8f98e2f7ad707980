//! The hot ops of the CPU executor: what each node runs when a fast kernel covers it.
//!
//! [`prepare`] looks at a node once at session creation and returns a [`Step`] holding
//! everything that depends only on shapes and constants (conv geometry and packed weights,
//! BatchNormalization scale/shift, a Gemm's right-hand matrix transposed and scaled). At run
//! time [`Step::run`] works on slices of the arena with no allocation. Nodes no kernel covers
//! get `None` and run through the reference evaluator.

use std::borrow::Cow;

use crate::ir::{Activation, ConvAttrs, Graph, Node, Op, PoolAttrs, ValueId};
use crate::kernels::conv::{conv, conv_scratch_len, ConvGeometry, PackedConvWeights};
use crate::kernels::elementwise::{
    activation_inplace, batch_norm_scale_shift, binary, binary_inplace, channel_affine_inplace,
    BinOp,
};
use crate::kernels::gemm::{sgemm, GemmBackend};
use crate::kernels::pointwise_group::{can_join, Member, PointwiseGroup, MAX_MEMBERS};
use crate::kernels::pool::{global_pool, PoolGeometry, PoolKind, PreparedPool};
use crate::kernels::simd_level;
use crate::kernels::vec_mat::{vec_mat, vec_mat_scratch_len};
use crate::kernels::KernelError;
use crate::tensor::DType;

/// An f32 activation's place in the arena (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

impl Span {
    fn end(self) -> usize {
        self.start + self.len
    }
}

/// How the second operand of a binary op is laid out.
#[derive(Debug)]
pub enum Operand {
    /// An activation of the output's shape.
    Same(Span),
    /// A constant of the output's shape.
    SameConst(Vec<f32>),
    /// A constant broadcast per channel (`[C,1,..]` against `[N,C,...]`) or a scalar (one
    /// channel covering everything): `(values, channels, inner)`.
    Channel(Vec<f32>, usize, usize),
}

/// One prepared kernel call.
#[derive(Debug)]
pub enum Kind {
    Conv {
        geom: ConvGeometry,
        weights: Box<PackedConvWeights>,
        residual: Option<Span>,
        act: Activation,
    },
    Pool(Box<PreparedPool>),
    GlobalPool {
        planes: usize,
        plane: usize,
        max: bool,
    },
    /// `out = act(in)`.
    Activation(Activation),
    /// `out = in · scale[c] + shift[c]` (BatchNormalization).
    Affine {
        channels: usize,
        inner: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    /// `out = a op b`.
    Binary {
        op: BinOp,
        b: Operand,
    },
    /// `out[m×n] = bias + a[m×k] · b[k×n]` with `b` (and alpha) prepared at load.
    Gemm {
        m: usize,
        n: usize,
        k: usize,
        b: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// Same data, new shape (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout).
    Copy,
    /// Sibling 1×1 convs of one input run as one kernel call (see
    /// [`crate::kernels::pointwise_group`]), at the first sibling's step: member `m` writes
    /// `outputs[m]`. `members` lists each member's node and multiply-adds, so that a profiled
    /// run can split the call's time between them.
    PointwiseGroup {
        group: Box<PointwiseGroup>,
        outputs: Vec<Span>,
        members: Vec<(usize, u64)>,
    },
    /// A sibling whose output its group's first step already wrote: nothing to run.
    InGroup,
    /// Concatenation: `outer` blocks, each made of every input's `inner_len` run in order.
    /// Parts planned inside the output (`None`: the producer already wrote them there) are
    /// skipped.
    Concat {
        outer: usize,
        parts: Vec<(Option<Span>, usize)>,
    },
}

/// A node prepared for a kernel: its main input and output places and what to run.
#[derive(Debug)]
pub struct Step {
    pub input: Option<Span>,
    pub output: Span,
    pub kind: Kind,
    /// Multiply-accumulates the kernel performs per run.
    pub macs: u64,
    /// Scratch floats the kernel wants (conv im2col blocks), for all threads.
    pub scratch: usize,
}

/// Splits the arena into (before, output, after) so inputs can be read while the output is
/// written, without unsafe code: an input must lie entirely before or after the output.
fn split(arena: &mut [f32], out: Span) -> (&[f32], &mut [f32], &[f32]) {
    let (left, rest) = arena.split_at_mut(out.start);
    let (mid, right) = rest.split_at_mut(out.len);
    (left, mid, right)
}

fn read<'a>(
    left: &'a [f32],
    right: &'a [f32],
    out: Span,
    s: Span,
) -> Result<&'a [f32], KernelError> {
    if s.end() <= out.start {
        Ok(&left[s.start..s.end()])
    } else if s.start >= out.end() {
        Ok(&right[s.start - out.end()..s.end() - out.end()])
    } else {
        Err(KernelError(format!("input {s:?} overlaps output {out:?}")))
    }
}

impl Step {
    /// Bytes of constants this step holds in its own layout (packed weights, Gemm B, bias).
    pub fn packed_bytes(&self) -> usize {
        4 * match &self.kind {
            Kind::Conv { weights, .. } => weights.packed_floats(),
            Kind::PointwiseGroup { group, .. } => group.packed_floats(),
            Kind::Gemm { b, bias, .. } => b.len() + bias.as_ref().map_or(0, Vec::len),
            Kind::Affine { scale, shift, .. } => scale.len() + shift.len(),
            Kind::Binary {
                b: Operand::SameConst(v) | Operand::Channel(v, ..),
                ..
            } => v.len(),
            _ => 0,
        }
    }

    /// Runs the step on the arena. `scratch` holds at least `self.scratch` floats.
    pub fn run(&self, arena: &mut [f32], scratch: &mut [f32]) -> Result<(), KernelError> {
        match &self.kind {
            Kind::InGroup => return Ok(()),
            Kind::PointwiseGroup { group, outputs, .. } => {
                let x = self
                    .input
                    .ok_or_else(|| KernelError("pointwise group without input".into()))?;
                return run_group(group, arena, x, outputs, &mut scratch[..self.scratch]);
            }
            _ => {}
        }
        let out = self.output;
        let in_place = self.input == Some(out);
        let (left, dst, right) = split(arena, out);
        let src = |s: Span| read(left, right, out, s);
        match &self.kind {
            Kind::Conv {
                geom,
                weights,
                residual,
                act,
            } => {
                let x = src(self
                    .input
                    .ok_or_else(|| KernelError("conv without input".into()))?)?;
                let r = match residual {
                    Some(r) => Some(src(*r)?),
                    None => None,
                };
                conv(geom, x, weights, r, *act, dst, &mut scratch[..self.scratch])
            }
            Kind::Pool(p) => {
                let x = src(self
                    .input
                    .ok_or_else(|| KernelError("pool without input".into()))?)?;
                p.run(x, dst)
            }
            Kind::GlobalPool { planes, plane, max } => {
                let x = src(self
                    .input
                    .ok_or_else(|| KernelError("pool without input".into()))?)?;
                global_pool(x, *planes, *plane, *max, dst)
            }
            Kind::Activation(act) => {
                if !in_place {
                    dst.copy_from_slice(src(self
                        .input
                        .ok_or_else(|| KernelError("no input".into()))?)?);
                }
                activation_inplace(dst, *act);
                Ok(())
            }
            Kind::Affine {
                channels,
                inner,
                scale,
                shift,
            } => {
                if !in_place {
                    dst.copy_from_slice(src(self
                        .input
                        .ok_or_else(|| KernelError("no input".into()))?)?);
                }
                channel_affine_inplace(
                    dst,
                    *channels,
                    *inner,
                    Some(scale),
                    Some(shift),
                    Activation::None,
                );
                Ok(())
            }
            Kind::Binary { op, b } => {
                let a = if in_place {
                    None
                } else {
                    Some(src(self
                        .input
                        .ok_or_else(|| KernelError("no input".into()))?)?)
                };
                match b {
                    Operand::Same(bs) => {
                        let bv = src(*bs)?;
                        match a {
                            Some(a) => binary(*op, a, bv, dst, Activation::None),
                            None => binary_inplace(*op, dst, bv, Activation::None),
                        }
                    }
                    Operand::SameConst(bv) => match a {
                        Some(a) => binary(*op, a, bv, dst, Activation::None),
                        None => binary_inplace(*op, dst, bv, Activation::None),
                    },
                    Operand::Channel(v, channels, inner) => {
                        if let Some(a) = a {
                            dst.copy_from_slice(a);
                        }
                        match op {
                            BinOp::Add => channel_affine_inplace(
                                dst,
                                *channels,
                                *inner,
                                None,
                                Some(v),
                                Activation::None,
                            ),
                            BinOp::Mul => channel_affine_inplace(
                                dst,
                                *channels,
                                *inner,
                                Some(v),
                                None,
                                Activation::None,
                            ),
                            // `prepare` only builds Channel operands for Add and Mul (Sub is
                            // turned into Add of the negated constant).
                            BinOp::Sub | BinOp::Div => {
                                return Err(KernelError(
                                    "per-channel operand only for Add/Mul".into(),
                                ))
                            }
                        }
                    }
                }
                Ok(())
            }
            Kind::Gemm { m, n, k, b, bias } => {
                let a = src(self.input.ok_or_else(|| KernelError("no input".into()))?)?;
                if let Some(bias) = bias {
                    dst.copy_from_slice(bias);
                }
                if *m == 1 {
                    // One row: stream B once (see kernels::vec_mat; scratch from
                    // `gemm_scratch_len`).
                    vec_mat(
                        simd_level(),
                        &a[..*k],
                        b,
                        *n,
                        *n,
                        dst,
                        bias.is_some(),
                        &mut scratch[..self.scratch],
                    );
                    return Ok(());
                }
                sgemm(
                    GemmBackend::Gemm,
                    *m,
                    *n,
                    *k,
                    a,
                    *k,
                    b,
                    *n,
                    dst,
                    *n,
                    bias.is_some(),
                    rayon::current_num_threads(),
                );
                Ok(())
            }
            Kind::Copy => {
                if !in_place {
                    dst.copy_from_slice(src(self
                        .input
                        .ok_or_else(|| KernelError("no input".into()))?)?);
                }
                Ok(())
            }
            Kind::PointwiseGroup { .. } | Kind::InGroup => Err(KernelError(
                "pointwise group step run as a single output".into(),
            )),
            Kind::Concat { outer, parts } => {
                let total: usize = parts.iter().map(|p| p.1).sum();
                let mut offset = 0;
                for &(s, inner) in parts {
                    if let Some(s) = s {
                        let x = src(s)?;
                        for o in 0..*outer {
                            dst[o * total + offset..o * total + offset + inner]
                                .copy_from_slice(&x[o * inner..(o + 1) * inner]);
                        }
                    }
                    offset += inner;
                }
                Ok(())
            }
        }
    }
}

/// Runs a sibling group: carves the arena into the input (read) and each member's output
/// (written) without unsafe code; every place must be disjoint from the others.
fn run_group(
    group: &PointwiseGroup,
    arena: &mut [f32],
    input: Span,
    outputs: &[Span],
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    const N: usize = MAX_MEMBERS + 1;
    if outputs.len() > MAX_MEMBERS {
        return Err(KernelError("pointwise group: too many outputs".into()));
    }
    // Places in arena order: (start, len, which: 0 = input, m + 1 = output m).
    let mut places = [(0usize, 0usize, 0usize); N];
    places[0] = (input.start, input.len, 0);
    for (m, o) in outputs.iter().enumerate() {
        places[m + 1] = (o.start, o.len, m + 1);
    }
    let places = &mut places[..outputs.len() + 1];
    places.sort_unstable();
    let mut x: &[f32] = &[];
    let mut outs: [&mut [f32]; MAX_MEMBERS] = Default::default();
    let mut rest = arena;
    let mut at = 0;
    for &(start, len, which) in places.iter() {
        if start < at || start + len > at + rest.len() {
            return Err(KernelError(
                "pointwise group: overlapping or misplaced buffers".into(),
            ));
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
        let (piece, tail) = tail.split_at_mut(len);
        rest = tail;
        at = start + len;
        match which {
            0 => x = piece,
            m => outs[m - 1] = piece,
        }
    }
    group.run(simd_level(), x, &mut outs[..outputs.len()], scratch)
}

/// Merges runs of consecutive steps that are 1×1 convs of the same input (the graph rewrite
/// `fuse::cluster_sibling_pointwise` puts siblings next to each other) into one
/// [`Kind::PointwiseGroup`] step at the first; the others become [`Kind::InGroup`]. Writing
/// the later siblings' outputs early is safe because nothing but the shared input (read by
/// all of them, so alive until the last) dies or is produced between them.
pub fn group_siblings(steps: &mut [Option<Step>], threads: usize) {
    let joinable = |s: &Option<Step>| -> Option<Span> {
        let s = s.as_ref()?;
        match &s.kind {
            Kind::Conv {
                geom,
                weights,
                residual: None,
                act,
            } if weights.pointwise_parts().is_some() && can_join(geom, *act) => s.input,
            _ => None,
        }
    };
    let mut i = 0;
    while i < steps.len() {
        let Some(x) = joinable(&steps[i]) else {
            i += 1;
            continue;
        };
        let mut end = i + 1;
        while end < steps.len() && end - i < MAX_MEMBERS && joinable(&steps[end]) == Some(x) {
            end += 1;
        }
        if end - i >= 2 {
            let group = {
                let members: Vec<Member> = steps[i..end]
                    .iter()
                    .flatten()
                    .filter_map(|s| match &s.kind {
                        Kind::Conv {
                            geom, weights, act, ..
                        } => {
                            let (packed, bias) = weights.pointwise_parts()?;
                            Some(Member {
                                geom,
                                packed,
                                bias,
                                act: *act,
                            })
                        }
                        _ => None,
                    })
                    .collect();
                PointwiseGroup::new(&members)
            };
            // Siblings the kernel cannot merge (not expected after the graph pass) stay apart.
            if let Ok(group) = group {
                let outputs: Vec<Span> = steps[i..end].iter().flatten().map(|s| s.output).collect();
                let members: Vec<(usize, u64)> = steps[i..end]
                    .iter()
                    .flatten()
                    .zip(i..end)
                    .map(|(s, node)| (node, s.macs))
                    .collect();
                let scratch = group.scratch_len(threads);
                for s in steps[i + 1..end].iter_mut().flatten() {
                    s.kind = Kind::InGroup;
                    s.scratch = 0;
                }
                if let Some(first) = steps[i].as_mut() {
                    first.kind = Kind::PointwiseGroup {
                        group: Box::new(group),
                        outputs,
                        members,
                    };
                    first.scratch = scratch;
                }
            }
        }
        i = end;
    }
}

/// What `prepare` needs to know about values.
pub struct Ctx<'a> {
    pub graph: &'a Graph,
    /// Arena place of each value (f32 activations only).
    pub spans: &'a [Option<Span>],
    pub threads: usize,
}

impl Ctx<'_> {
    fn span(&self, id: Option<ValueId>) -> Option<Span> {
        id.and_then(|id| self.spans[id.0])
    }
    fn shape(&self, id: ValueId) -> Option<Vec<usize>> {
        self.graph.value(id).fixed_shape()
    }
    fn const_f32(&self, id: Option<ValueId>) -> Option<Vec<f32>> {
        Some(self.const_f32_ref(id)?.into_owned())
    }
    /// A constant's f32 values, borrowed when contiguous: conv weights are copied once, into
    /// the packed layout, not first into a temporary as well.
    fn const_f32_ref(&self, id: Option<ValueId>) -> Option<Cow<'_, [f32]>> {
        let a = self.graph.constants.get(&id?)?.as_f32()?;
        Some(match a.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(a.iter().copied().collect()),
        })
    }
}

fn conv_geometry(attrs: &ConvAttrs, x: &[usize], w: &[usize]) -> Option<ConvGeometry> {
    let nd = x.len().checked_sub(2)?;
    if w.len() != nd + 2 {
        return None;
    }
    let kernel = attrs
        .kernel_shape
        .clone()
        .unwrap_or_else(|| w[2..].to_vec());
    let ones = vec![1; nd];
    let strides = if attrs.strides.is_empty() {
        ones.clone()
    } else {
        attrs.strides.clone()
    };
    let dil = if attrs.dilations.is_empty() {
        ones
    } else {
        attrs.dilations.clone()
    };
    let pads = if attrs.pads.is_empty() {
        vec![0; 2 * nd]
    } else {
        attrs.pads.clone()
    };
    if pads.len() != 2 * nd || attrs.auto_pad != crate::ir::AutoPad::NotSet {
        return None;
    }
    ConvGeometry::new(
        x[0],
        x[1],
        &x[2..],
        w[0],
        &kernel,
        &strides,
        &dil,
        &pads[..nd],
        &pads[nd..],
        attrs.group.max(1),
    )
    .ok()
}

fn pool_geometry(attrs: &PoolAttrs, x: &[usize], y: &[usize]) -> Option<PoolGeometry> {
    let nd = x.len().checked_sub(2)?;
    let ones = vec![1; nd];
    let strides = if attrs.strides.is_empty() {
        ones.clone()
    } else {
        attrs.strides.clone()
    };
    let dil = if attrs.dilations.is_empty() {
        ones
    } else {
        attrs.dilations.clone()
    };
    let pads = if attrs.pads.is_empty() {
        vec![0; 2 * nd]
    } else {
        attrs.pads.clone()
    };
    if pads.len() != 2 * nd
        || attrs.kernel_shape.len() != nd
        || attrs.auto_pad != crate::ir::AutoPad::NotSet
    {
        return None;
    }
    let g = PoolGeometry {
        batch: x[0],
        channels: x[1],
        in_spatial: x[2..].to_vec(),
        kernel: attrs.kernel_shape.clone(),
        strides,
        dilations: dil,
        pads_begin: pads[..nd].to_vec(),
        pads_end: pads[nd..].to_vec(),
        out_spatial: y.get(2..)?.to_vec(),
    };
    g.validate().ok().map(|_| g)
}

/// A constant activation bound of Clip (`None` input: unbounded).
fn clip_bound(cx: &Ctx, id: Option<ValueId>, default: f32) -> Option<f32> {
    match id {
        None => Some(default),
        Some(_) => {
            let v = cx.const_f32(id)?;
            (v.len() == 1).then(|| v[0])
        }
    }
}

/// Prepares `node` for a kernel, or `None` when the reference evaluator must run it.
pub fn prepare(cx: &Ctx, node: &Node) -> Result<Option<Step>, KernelError> {
    // Every kernel reads and writes f32 activations in the arena; one output only.
    let [out_id] = node.outputs[..] else {
        // Dropout's unused mask: treated as a single-output Copy below when nobody reads it.
        return Ok(None);
    };
    let Some(output) = cx.span(Some(out_id)) else {
        return Ok(None);
    };
    if cx.graph.value(out_id).dtype != Some(DType::F32) {
        return Ok(None);
    }
    let inp = |k: usize| node.inputs.get(k).copied().flatten();
    let input = cx.span(inp(0));
    let Some(out_shape) = cx.shape(out_id) else {
        return Ok(None);
    };
    let step = |input: Option<Span>, kind: Kind, macs: u64, scratch: usize| {
        Ok(Some(Step {
            input,
            output,
            kind,
            macs,
            scratch,
        }))
    };
    match &node.op {
        Op::Conv(attrs) | Op::FusedConv { conv: attrs, .. } => {
            let (act, has_res) = match &node.op {
                Op::FusedConv {
                    activation,
                    has_residual,
                    ..
                } => (*activation, *has_residual),
                _ => (Activation::None, false),
            };
            let Some(x) = input else { return Ok(None) };
            let (Some(xs), Some(w_id)) = (cx.shape(inp(0).unwrap_or(out_id)), inp(1)) else {
                return Ok(None);
            };
            let (Some(w), Some(ws)) = (cx.const_f32_ref(Some(w_id)), cx.shape(w_id)) else {
                return Ok(None);
            };
            let bias = match inp(2) {
                None => None,
                Some(b) => match cx.const_f32_ref(Some(b)) {
                    Some(b) => Some(b),
                    None => return Ok(None),
                },
            };
            let residual = if has_res {
                match cx.span(inp(3)) {
                    Some(r) if r.len == output.len => Some(r),
                    _ => return Ok(None),
                }
            } else {
                None
            };
            let Some(geom) = conv_geometry(attrs, &xs, &ws) else {
                return Ok(None);
            };
            if geom.output_len() != output.len || geom.out_spatial[..] != out_shape[2..] {
                return Ok(None);
            }
            let weights = PackedConvWeights::new(&geom, &w, bias.as_deref())?;
            let scratch = conv_scratch_len(&geom, &weights, cx.threads);
            let macs = weights.macs_executed(&geom);
            step(
                Some(x),
                Kind::Conv {
                    geom,
                    weights: Box::new(weights),
                    residual,
                    act,
                },
                macs,
                scratch,
            )
        }
        Op::MaxPool(a) | Op::AveragePool(a) => {
            let (Some(x), Some(xs)) = (input, inp(0).and_then(|i| cx.shape(i))) else {
                return Ok(None);
            };
            let Some(geom) = pool_geometry(a, &xs, &out_shape) else {
                return Ok(None);
            };
            let kind = match node.op {
                Op::MaxPool(_) => PoolKind::Max,
                _ => PoolKind::Avg {
                    count_include_pad: a.count_include_pad,
                },
            };
            let pool = PreparedPool::new(geom, kind, cx.threads)?;
            step(Some(x), Kind::Pool(Box::new(pool)), 0, 0)
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let (Some(x), Some(xs)) = (input, inp(0).and_then(|i| cx.shape(i))) else {
                return Ok(None);
            };
            if xs.len() < 2 {
                return Ok(None);
            }
            let planes = xs[0] * xs[1];
            let plane = xs[2..].iter().product();
            step(
                Some(x),
                Kind::GlobalPool {
                    planes,
                    plane,
                    max: matches!(node.op, Op::GlobalMaxPool),
                },
                0,
                0,
            )
        }
        Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid | Op::Clip => {
            let Some(x) = input else { return Ok(None) };
            if x.len != output.len {
                return Ok(None);
            }
            let act = match node.op {
                Op::Relu => Activation::Relu,
                Op::LeakyRelu { alpha } => Activation::LeakyRelu(alpha),
                Op::Sigmoid => Activation::Sigmoid,
                _ => match (
                    clip_bound(cx, inp(1), f32::NEG_INFINITY),
                    clip_bound(cx, inp(2), f32::INFINITY),
                ) {
                    (Some(lo), Some(hi)) => Activation::Clip(lo, hi),
                    _ => return Ok(None),
                },
            };
            step(Some(x), Kind::Activation(act), 0, 0)
        }
        Op::BatchNormalization { epsilon } => {
            let (Some(x), Some(xs)) = (input, inp(0).and_then(|i| cx.shape(i))) else {
                return Ok(None);
            };
            let p: Option<Vec<Vec<f32>>> = (1..5).map(|k| cx.const_f32(inp(k))).collect();
            let Some(p) = p else { return Ok(None) };
            if xs.len() < 2 || p.iter().any(|v| v.len() != xs[1]) || x.len != output.len {
                return Ok(None);
            }
            let (scale, shift) = batch_norm_scale_shift(&p[0], &p[1], &p[2], &p[3], *epsilon);
            let inner = xs[2..].iter().product();
            step(
                Some(x),
                Kind::Affine {
                    channels: xs[1],
                    inner,
                    scale,
                    shift,
                },
                0,
                0,
            )
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (Some(x), Some(xs), Some(b_id)) = (input, inp(0).and_then(|i| cx.shape(i)), inp(1))
            else {
                return Ok(None);
            };
            if xs != out_shape {
                return Ok(None);
            }
            let op = match node.op {
                Op::Add => BinOp::Add,
                Op::Sub => BinOp::Sub,
                Op::Mul => BinOp::Mul,
                _ => BinOp::Div,
            };
            let Some(bs) = cx.shape(b_id) else {
                return Ok(None);
            };
            let operand = if let Some(s) = cx.span(Some(b_id)) {
                if bs != out_shape || Some(b_id) == inp(0) {
                    return Ok(None);
                }
                Operand::Same(s)
            } else if let Some(v) = cx.const_f32(Some(b_id)) {
                if bs == out_shape {
                    Operand::SameConst(v)
                } else {
                    let Some((channels, inner)) = channel_broadcast(&bs, &out_shape) else {
                        return Ok(None);
                    };
                    match op {
                        BinOp::Add | BinOp::Mul => Operand::Channel(v, channels, inner),
                        // a − b = a + (−b) exactly.
                        BinOp::Sub => return step_binary_sub(x, output, v, channels, inner),
                        BinOp::Div => return Ok(None),
                    }
                }
            } else {
                return Ok(None);
            };
            step(Some(x), Kind::Binary { op, b: operand }, 0, 0)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a: false,
            trans_b,
        } => {
            let (Some(a), Some(as_)) = (input, inp(0).and_then(|i| cx.shape(i))) else {
                return Ok(None);
            };
            let (Some(b), Some(bs)) = (cx.const_f32(inp(1)), inp(1).and_then(|i| cx.shape(i)))
            else {
                return Ok(None);
            };
            if as_.len() != 2 || bs.len() != 2 || out_shape.len() != 2 {
                return Ok(None);
            }
            let (m, k) = (as_[0], as_[1]);
            let (kb, n) = if *trans_b {
                (bs[1], bs[0])
            } else {
                (bs[0], bs[1])
            };
            if kb != k || out_shape != [m, n] {
                return Ok(None);
            }
            // B as k×n row-major, times alpha (exact when alpha is 1).
            let mut bt = vec![0.0f32; k * n];
            for r in 0..k {
                for c in 0..n {
                    let v = if *trans_b { b[c * k + r] } else { b[r * n + c] };
                    bt[r * n + c] = if *alpha == 1.0 { v } else { alpha * v };
                }
            }
            let bias = match inp(2) {
                None => None,
                Some(c_id) => {
                    let (Some(c), Some(cs)) = (cx.const_f32(Some(c_id)), cx.shape(c_id)) else {
                        return Ok(None);
                    };
                    let Some(full) = broadcast_2d(&c, &cs, m, n) else {
                        return Ok(None);
                    };
                    Some(
                        full.into_iter()
                            .map(|v| if *beta == 1.0 { v } else { beta * v })
                            .collect(),
                    )
                }
            };
            let macs = (m * n * k) as u64;
            step(
                Some(a),
                Kind::Gemm {
                    m,
                    n,
                    k,
                    b: bt,
                    bias,
                },
                macs,
                gemm_scratch_len(m, k, n),
            )
        }
        Op::MatMul => {
            let (Some(a), Some(as_)) = (input, inp(0).and_then(|i| cx.shape(i))) else {
                return Ok(None);
            };
            let (Some(b), Some(bs)) = (cx.const_f32(inp(1)), inp(1).and_then(|i| cx.shape(i)))
            else {
                return Ok(None);
            };
            if as_.len() < 2 || bs.len() != 2 || as_[as_.len() - 1] != bs[0] {
                return Ok(None);
            }
            let (k, n) = (bs[0], bs[1]);
            let m = as_[..as_.len() - 1].iter().product::<usize>();
            if output.len != m * n {
                return Ok(None);
            }
            step(
                Some(a),
                Kind::Gemm {
                    m,
                    n,
                    k,
                    b,
                    bias: None,
                },
                (m * n * k) as u64,
                gemm_scratch_len(m, k, n),
            )
        }
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Identity
        | Op::Dropout => {
            let Some(x) = input else { return Ok(None) };
            if matches!(node.op, Op::Dropout) && !super::fuse::dropout_is_identity(cx.graph, node) {
                return Ok(None);
            }
            if x.len != output.len {
                return Ok(None);
            }
            step(Some(x), Kind::Copy, 0, 0)
        }
        Op::Concat { axis } => {
            let rank = out_shape.len() as i64;
            let ax = if *axis < 0 { axis + rank } else { *axis };
            if ax < 0 || ax >= rank {
                return Ok(None);
            }
            let ax = ax as usize;
            let outer: usize = out_shape[..ax].iter().product();
            let mut parts = Vec::new();
            let mut at = output.start;
            for id in &node.inputs {
                let (Some(s), Some(sh)) = (cx.span(*id), id.and_then(|i| cx.shape(i))) else {
                    return Ok(None);
                };
                let inner = sh[ax..].iter().product::<usize>();
                // The memory plan put this part where the Concat would copy it.
                let planned_inside = outer == 1 && s.start == at && s.len == inner;
                if !planned_inside && s.start < output.end() && output.start < s.end() {
                    return Ok(None);
                }
                parts.push(((!planned_inside).then_some(s), inner));
                at += inner;
            }
            if outer * parts.iter().map(|p| p.1).sum::<usize>() != output.len {
                return Ok(None);
            }
            step(None, Kind::Concat { outer, parts }, 0, 0)
        }
        _ => Ok(None),
    }
}

fn step_binary_sub(
    x: Span,
    output: Span,
    v: Vec<f32>,
    channels: usize,
    inner: usize,
) -> Result<Option<Step>, KernelError> {
    let neg = v.into_iter().map(|a| -a).collect();
    Ok(Some(Step {
        input: Some(x),
        output,
        kind: Kind::Binary {
            op: BinOp::Add,
            b: Operand::Channel(neg, channels, inner),
        },
        macs: 0,
        scratch: 0,
    }))
}

/// `(channels, inner)` when `b` broadcasts over `out` as one value per channel of axis 1 (or a
/// single value: channels = 1).
fn channel_broadcast(b: &[usize], out: &[usize]) -> Option<(usize, usize)> {
    let total: usize = out.iter().product();
    if b.iter().product::<usize>() == 1 {
        return Some((1, total.max(1)));
    }
    if out.len() < 2 || b.len() > out.len() {
        return None;
    }
    // Right-align b against out: it must be [.., C, 1, 1..] with C on axis 1 and ones elsewhere.
    let pad = out.len() - b.len();
    for (i, &d) in out.iter().enumerate() {
        let bd = if i < pad { 1 } else { b[i - pad] };
        let want = if i == 1 { d } else { 1 };
        if bd != want {
            return None;
        }
    }
    Some((out[1], out[2..].iter().product::<usize>()))
}

/// Expands a Gemm bias `C` (scalar, `[n]`, `[1,n]`, `[m,1]` or `[m,n]`) to `m×n`.
fn broadcast_2d(c: &[f32], cs: &[usize], m: usize, n: usize) -> Option<Vec<f32>> {
    let (rm, rn) = match cs {
        [] => (1, 1),
        [a] => (1, *a),
        [a, b] => (*a, *b),
        _ => return None,
    };
    if !(rm == 1 || rm == m) || !(rn == 1 || rn == n) {
        return None;
    }
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(c[(if rm == 1 { 0 } else { i }) * rn + if rn == 1 { 0 } else { j }]);
        }
    }
    Some(out)
}

/// Scratch floats a `Kind::Gemm` step needs: the one-row path's partial sums
/// ([`vec_mat_scratch_len`]); the crate GEMM takes none.
fn gemm_scratch_len(m: usize, k: usize, n: usize) -> usize {
    if m == 1 {
        vec_mat_scratch_len(k, n)
    } else {
        0
    }
}
