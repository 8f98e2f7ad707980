//! Receptive fields of every value of a shape-bound graph, exact through multi-path graphs.
//!
//! For each feature map (a 4-D `[N, C, H, W]` value, and the 2-D values that follow a global
//! pool or flatten) [`analyze`] gives, per spatial axis (H then W):
//! - `size`: how many input pixels the window of one output position spans;
//! - `stride` ("jump"): how far that window moves, in input pixels, per output step;
//! - `offset`: the centre of the *first* output position's window in input pixel coordinates
//!   (pixel 0's centre is 0; padding makes it negative-leaning, e.g. a 3×3 pad-1 conv has
//!   offset 0 and its window starts at −1).
//!
//! The standard recurrence, per layer with kernel k, dilation d, stride s and begin pad p,
//! with k_eff = d·(k−1)+1:
//! `size_out = size_in + (k_eff−1)·jump_in`, `jump_out = jump_in·s`,
//! `start_out = start_in − p·jump_in`, and `offset = start + (size−1)/2`.
//!
//! Where paths meet (Add, Sub, Mul, Div, Sum, Concat on channels, a FusedConv's residual)
//! the window of the result is the *union* of the inputs' windows: it starts at the smallest
//! start and ends at the largest end. `aligned` says whether all paths agreed — same stride and
//! the same centre; when they do not, the union still covers every path, but the window is no
//! longer symmetric around the paths' centres (and with different strides the union is exact
//! for the first output position only, and the stride reported is the largest).
//!
//! Elementwise ops, BatchNormalization, activations, LRN, channel softmax, Dropout, Identity and
//! Cast keep the receptive field. A global pool (and a Flatten of a map larger than 1×1) is a
//! kernel as large as its input: the result sees the whole input (its size is the theoretical
//! one, which reaches past the image borders into the padding). Gemm/MatMul after such a value
//! keep it. Ops whose spatial meaning is not tracked (Reshape of a spatial map, Transpose,
//! Slice, Gather...) give `None`.

use crate::error::{Error, Result};
use crate::ir::{AutoPad, Graph, Node, Op, ValueId};
use crate::tensor::Tensor;

/// Receptive field of one value (axes H, W).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rf {
    pub size: [u64; 2],
    pub stride: [u64; 2],
    /// Centre of the first output position's window, in input pixel coordinates.
    pub offset: [f64; 2],
    /// False when the paths merged into this value had different strides or centres.
    pub aligned: bool,
}

impl Rf {
    /// The receptive field of a graph input: each pixel sees itself.
    pub fn identity() -> Rf {
        Rf {
            size: [1, 1],
            stride: [1, 1],
            offset: [0.0, 0.0],
            aligned: true,
        }
    }

    /// First input pixel of the first output position's window (may be negative: padding).
    pub fn start(&self, axis: usize) -> f64 {
        self.offset[axis] - (self.size[axis] as f64 - 1.0) / 2.0
    }

    /// Applies a window op (kernel, stride, dilation, begin pad) along both axes.
    fn window(self, k: [u64; 2], s: [u64; 2], d: [u64; 2], pad_begin: [u64; 2]) -> Rf {
        let mut r = self;
        for a in 0..2 {
            let k_eff = d[a] * (k[a].max(1) - 1) + 1;
            let start = self.start(a) - pad_begin[a] as f64 * self.stride[a] as f64;
            r.size[a] = self.size[a] + (k_eff - 1) * self.stride[a];
            r.stride[a] = self.stride[a] * s[a].max(1);
            r.offset[a] = start + (r.size[a] as f64 - 1.0) / 2.0;
        }
        r
    }

    /// Union of the windows of several paths (see the module docs).
    fn union(rs: &[Rf]) -> Option<Rf> {
        let first = *rs.first()?;
        let mut out = first;
        for a in 0..2 {
            let lo = rs.iter().map(|r| r.start(a)).fold(f64::INFINITY, f64::min);
            let hi = rs
                .iter()
                .map(|r| r.start(a) + r.size[a] as f64 - 1.0)
                .fold(f64::NEG_INFINITY, f64::max);
            out.size[a] = (hi - lo + 1.0).round() as u64;
            out.offset[a] = lo + (out.size[a] as f64 - 1.0) / 2.0;
            out.stride[a] = rs.iter().map(|r| r.stride[a]).max().unwrap_or(1);
        }
        out.aligned = rs.iter().all(|r| {
            r.aligned
                && r.stride == first.stride
                && (0..2).all(|a| (r.offset[a] - first.offset[a]).abs() < 1e-9)
        });
        Some(out)
    }
}

fn fixed(graph: &Graph, id: ValueId) -> Option<Vec<usize>> {
    if let Some(t) = graph.constants.get(&id) {
        return Some(t.shape().to_vec());
    }
    graph.value(id).fixed_shape()
}

fn two(v: &[usize], default: u64) -> [u64; 2] {
    match v {
        [a, b, ..] => [*a as u64, *b as u64],
        _ => [default, default],
    }
}

/// Begin pads along H, W: explicit pads, or derived from shapes for `auto_pad` SAME_*.
fn begin_pads(
    graph: &Graph,
    node: &Node,
    pads: &[usize],
    auto: AutoPad,
    k_eff: [u64; 2],
    s: [u64; 2],
) -> Option<[u64; 2]> {
    match auto {
        AutoPad::NotSet => Some(if pads.len() >= 4 {
            [pads[0] as u64, pads[1] as u64]
        } else {
            [0, 0]
        }),
        AutoPad::Valid => Some([0, 0]),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let inp = fixed(graph, node.inputs.first().copied().flatten()?)?;
            let out = fixed(graph, *node.outputs.first()?)?;
            if inp.len() != 4 || out.len() != 4 {
                return None;
            }
            let mut p = [0u64; 2];
            for a in 0..2 {
                let total = ((out[2 + a] as i64 - 1) * s[a] as i64 + k_eff[a] as i64
                    - inp[2 + a] as i64)
                    .max(0) as u64;
                p[a] = if auto == AutoPad::SameUpper {
                    total / 2
                } else {
                    total - total / 2
                };
            }
            Some(p)
        }
    }
}

/// Receptive field of every value (indexed by `ValueId.0`); `None` for values that are not
/// spatial feature maps derived from a graph input (constants, shapes, untracked ops).
pub fn analyze(graph: &Graph) -> Vec<Option<Rf>> {
    propagate(graph, false)
}

/// The quick textbook estimate that follows only the downsampling layers (stride > 1 convs and
/// pools, and global pools): every stride-1 layer is treated as if it were not there, so
/// `size = 1 + Σ_{l downsampling} (k_eff,l − 1)·∏_{i<l} s_i`, multi-path graphs taking the
/// widest path. It is what one gets by tracking "the resolution drops" on paper; comparing it
/// with [`analyze`] shows how much the stride-1 3×3 convolutions actually contribute (for
/// ResNet-50 at the global pool: 67 by the shortcut, 427 exactly). Offsets are not meaningful
/// for this estimate.
pub fn shortcut_estimate(graph: &Graph) -> Vec<Option<Rf>> {
    propagate(graph, true)
}

fn propagate(graph: &Graph, downsampling_only: bool) -> Vec<Option<Rf>> {
    let mut rf: Vec<Option<Rf>> = vec![None; graph.values.len()];
    for &i in &graph.inputs {
        if fixed(graph, i).is_some_and(|s| s.len() == 4)
            || graph.value(i).shape.as_ref().is_some_and(|s| s.len() == 4)
        {
            rf[i.0] = Some(Rf::identity());
        }
    }
    for node in &graph.nodes {
        let r = node_rf(graph, node, &rf, downsampling_only);
        for &o in &node.outputs {
            rf[o.0] = r;
        }
        // Dropout's mask and other secondary outputs carry no spatial meaning of their own.
        if node.outputs.len() > 1 {
            for &o in &node.outputs[1..] {
                rf[o.0] = None;
            }
        }
    }
    rf
}

fn node_rf(graph: &Graph, node: &Node, rf: &[Option<Rf>], shortcut: bool) -> Option<Rf> {
    let in_rf = |i: usize| {
        node.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|id| rf[id.0])
    };
    let x = in_rf(0);
    let rank_out = node
        .outputs
        .first()
        .and_then(|&o| fixed(graph, o))
        .map(|s| s.len());
    match &node.op {
        Op::Conv(c) | Op::FusedConv { conv: c, .. } => {
            let x = x?;
            let k = match &c.kernel_shape {
                Some(k) => two(k, 1),
                None => {
                    let w = fixed(graph, node.inputs.get(1).copied().flatten()?)?;
                    two(w.get(2..)?, 1)
                }
            };
            let s = two(&c.strides, 1);
            let d = two(&c.dilations, 1);
            let k_eff = [d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1];
            let p = begin_pads(graph, node, &c.pads, c.auto_pad, k_eff, s)?;
            let y = if shortcut && s == [1, 1] {
                x
            } else {
                x.window(k, s, d, p)
            };
            match (&node.op, in_rf(3)) {
                (
                    Op::FusedConv {
                        has_residual: true, ..
                    },
                    Some(res),
                ) => Rf::union(&[y, res]),
                _ => Some(y),
            }
        }
        Op::MaxPool(p) | Op::AveragePool(p) => {
            let x = x?;
            let k = two(&p.kernel_shape, 1);
            let s = two(&p.strides, 1);
            let d = two(&p.dilations, 1);
            let k_eff = [d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1];
            let pb = begin_pads(graph, node, &p.pads, p.auto_pad, k_eff, s)?;
            if shortcut && s == [1, 1] {
                Some(x)
            } else {
                Some(x.window(k, s, d, pb))
            }
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => whole(graph, node, x?),
        Op::Flatten { .. } => {
            let x = x?;
            let inp = fixed(graph, node.inputs.first().copied().flatten()?)?;
            if inp.len() == 4 && inp[2] * inp[3] > 1 {
                whole(graph, node, x)
            } else {
                Some(x)
            }
        }
        Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze => {
            // Only the harmless case: dropping/adding 1-sized dims of a value with no spatial
            // extent left (after a global pool), e.g. [N, C, 1, 1] → [N, C].
            let inp = fixed(graph, node.inputs.first().copied().flatten()?)?;
            let spatial_one = inp.len() <= 2 || inp[2..].iter().all(|&d| d == 1);
            if spatial_one && rank_out.is_some_and(|r| r <= 4) {
                x
            } else {
                None
            }
        }
        Op::Gemm { .. } | Op::MatMul => x,
        Op::BatchNormalization { .. }
        | Op::Relu
        | Op::LeakyRelu { .. }
        | Op::Sigmoid
        | Op::Clip
        | Op::Lrn { .. }
        | Op::Identity
        | Op::Dropout
        | Op::Cast { .. } => x,
        Op::Softmax { axis, .. } => {
            let rank = rank_out? as i64;
            let ax = if *axis < 0 { axis + rank } else { *axis };
            if ax == 1 || rank == 2 {
                x
            } else {
                None
            }
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Sum => {
            let rs: Vec<Rf> = (0..node.inputs.len()).filter_map(in_rf).collect();
            Rf::union(&rs)
        }
        Op::Concat { axis } => {
            let rank = rank_out? as i64;
            let ax = if *axis < 0 { axis + rank } else { *axis };
            if ax != 1 {
                return None;
            }
            let rs: Vec<Rf> = (0..node.inputs.len()).filter_map(in_rf).collect();
            Rf::union(&rs)
        }
        Op::Pad { .. } => {
            let x = x?;
            if node.inputs.get(3).copied().flatten().is_some() {
                return None;
            }
            let pads = graph
                .constants
                .get(&node.inputs.get(1).copied().flatten()?)?
                .to_i64_vec()?;
            if pads.len() != 8 || pads.iter().any(|&p| p < 0) {
                return None;
            }
            let mut r = x;
            for a in 0..2 {
                r.offset[a] -= pads[2 + a] as f64 * x.stride[a] as f64;
            }
            Some(r)
        }
        _ => None,
    }
}

/// A kernel as large as the input's spatial extent (global pooling).
fn whole(graph: &Graph, node: &Node, x: Rf) -> Option<Rf> {
    let inp = fixed(graph, node.inputs.first().copied().flatten()?)?;
    if inp.len() != 4 {
        return None;
    }
    Some(x.window([inp[2] as u64, inp[3] as u64], [1, 1], [1, 1], [0, 0]))
}

/// A receptive field measured by running the model (see [`empirical`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EmpiricalRf {
    /// Target position (H, W) in the measured value.
    pub position: [usize; 2],
    /// First and last input rows/columns (H, W) that change the target position.
    pub first: [usize; 2],
    pub last: [usize; 2],
    /// `last − first + 1`.
    pub size: [u64; 2],
    /// True on an axis where the window reached an input border, so the true (theoretical)
    /// receptive field may be larger than what the image can show.
    pub clipped: [bool; 2],
    /// Model runs used.
    pub runs: usize,
}

/// Measures a receptive field by running the model.
///
/// `run` maps an input tensor of `input_shape` (`[N, C, H, W]`, f32) to the value to study
/// (4-D, or 2-D after a global pool, treated as a 1×1 map). The target is one output position
/// (`position`, default the centre) of batch item 0, all channels.
///
/// Method: a seeded N(0,1) base input, and perturbed copies whose rows `0..=r` (all columns,
/// channels) get a large shift (+(8 + |noise|), and if that changes nothing, the negative one). "The target changes" is monotone in `r` — it holds
/// exactly when `r` reaches the first row of the window — so a binary search finds the first
/// row in ⌈log₂ H⌉ runs; a suffix perturbation finds the last one, and the same for columns.
/// This measures the *support* of the dependence (any change counts), which is the theoretical
/// receptive field clipped to the image, not the "effective" (gradient-weighted) one. Perturbing
/// whole bands rather than single pixels, by large shifts of both signs, makes it unlikely that
/// ReLUs or max pools mask the change (with positive weights the positive shift always wins
/// every max); a masked edge would show up as a smaller measured size. A run-to-run noise floor (two runs of the base input) guards against
/// non-deterministic kernels.
pub fn empirical<F>(
    run: F,
    input_shape: &[usize],
    position: Option<[usize; 2]>,
    seed: u64,
) -> Result<EmpiricalRf>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    if input_shape.len() != 4 {
        return Err(Error::Input {
            name: "input".into(),
            message: format!(
                "receptive-field measurement needs a 4-D NCHW input, got shape {input_shape:?}"
            ),
        });
    }
    let mut rng = crate::zoo::SeedRng::new(seed);
    let n: usize = input_shape.iter().product();
    let base: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let noise: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 3.0).collect();
    let make = |data: Vec<f32>| {
        Tensor::from_f32(input_shape, data)
            .ok_or_else(|| Error::Model("internal: input length mismatch".into()))
    };
    let y0 = run(&make(base.clone())?)?;
    let y0b = run(&make(base.clone())?)?;
    let tshape = y0.shape().to_vec();
    let (th, tw) = match tshape.len() {
        4 => (tshape[2], tshape[3]),
        2 => (1, 1),
        _ => return Err(Error::Model(format!("receptive-field measurement: the target value has shape {tshape:?}; expected 4-D or 2-D"))),
    };
    let pos = position.unwrap_or([th / 2, tw / 2]);
    if pos[0] >= th || pos[1] >= tw {
        return Err(Error::Model(format!(
            "receptive-field measurement: position {pos:?} is outside the target map {th}x{tw}"
        )));
    }
    let pick = |t: &Tensor| -> Vec<f64> {
        let v = t.to_f64_vec();
        let c = if tshape.len() == 4 {
            tshape[1]
        } else {
            tshape[1].max(1)
        };
        (0..c)
            .map(|ch| {
                let idx = if tshape.len() == 4 {
                    (ch * th + pos[0]) * tw + pos[1]
                } else {
                    ch
                };
                v.get(idx).copied().unwrap_or(0.0)
            })
            .collect()
    };
    let ref0 = pick(&y0);
    let floor = ref0
        .iter()
        .zip(pick(&y0b))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let tol = if floor > 0.0 { floor * 10.0 } else { 0.0 };
    let (h, w) = (input_shape[2], input_shape[3]);
    let runs = std::cell::Cell::new(2usize);
    // Does perturbing rows (axis 0) / columns (axis 1) in lo..=hi change the target?
    let changes = |axis: usize, lo: usize, hi: usize| -> Result<bool> {
        let (nb, c) = (input_shape[0], input_shape[1]);
        for sign in [1.0f32, -1.0] {
            let mut data = base.clone();
            for b in 0..nb {
                for ch in 0..c {
                    for i in 0..h {
                        for j in 0..w {
                            let coord = if axis == 0 { i } else { j };
                            if coord >= lo && coord <= hi {
                                let idx = ((b * c + ch) * h + i) * w + j;
                                data[idx] += sign * (8.0 + noise[idx].abs());
                            }
                        }
                    }
                }
            }
            runs.set(runs.get() + 1);
            let y = pick(&run(&make(data)?)?);
            if y.iter()
                .zip(&ref0)
                .any(|(a, b)| (a - b).abs() > tol || (a.is_nan() != b.is_nan()))
            {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let mut first = [0usize; 2];
    let mut last = [0usize; 2];
    for axis in 0..2 {
        let len = if axis == 0 { h } else { w };
        if !changes(axis, 0, len - 1)? {
            return Err(Error::Model(
                "receptive-field measurement: the target does not depend on the input at all"
                    .into(),
            ));
        }
        // Smallest r with changes(0..=r).
        let (mut lo, mut hi) = (0usize, len - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if changes(axis, 0, mid)? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        first[axis] = lo;
        // Largest r with changes(r..=len-1).
        let (mut lo, mut hi) = (0usize, len - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if changes(axis, mid, len - 1)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        last[axis] = lo;
    }
    Ok(EmpiricalRf {
        position: pos,
        first,
        last,
        size: [
            (last[0] + 1).saturating_sub(first[0]) as u64,
            (last[1] + 1).saturating_sub(first[1]) as u64,
        ],
        clipped: [
            first[0] == 0 || last[0] == h - 1,
            first[1] == 0 || last[1] == w - 1,
        ],
        runs: runs.get(),
    })
}

#[cfg(test)]
mod tests;
