//! Analytic cost model: what each node of a shape-bound graph must compute and move, from
//! shapes alone (no timing).
//!
//! # Counting conventions
//!
//! A MAC is one multiply-accumulate; FLOPs count multiplies, adds, compares, divides,
//! exponentials... each as one. `out` is the number of output elements.
//!
//! | op | MACs | FLOPs |
//! |---|---|---|
//! | Conv (N-d) | N·Cout·∏out_spatial·(Cin/group)·∏kernel | 2·MACs, + out if a bias is present |
//! | Gemm | M·N·K | 2·MACs, + M·N if C is present (+ M·N more if α ≠ 1 or β ∉ {0, 1}) |
//! | MatMul | batch·M·N·K (broadcast batch) | 2·MACs |
//! | FusedConv | the head conv's MACs | the sum of the originals (see below) |
//! | BatchNormalization | 0 | 2·out (inference: one scale, one shift per element) |
//! | Add, Sub, Mul, Div | 0 | out |
//! | Sum of k inputs | 0 | (k−1)·out |
//! | Relu, LeakyRelu, Clip | 0 | out |
//! | Sigmoid | 0 | 4·out (negate, exp, add, divide) |
//! | MaxPool | 0 | (window − 1)·out comparisons (window = ∏kernel) |
//! | AveragePool | 0 | window·out (window − 1 adds + 1 divide) |
//! | GlobalAveragePool | 0 | ∏in_spatial·out ((H·W − 1) adds + 1 divide) |
//! | GlobalMaxPool | 0 | (∏in_spatial − 1)·out |
//! | LRN (size n) | 0 | (2n + 3)·out (n squares, n−1 adds, scale, bias, pow, divide) |
//! | Softmax | 0 | 5·out (max, subtract, exp, sum, divide) |
//! | ReduceMean | 0 | input elements (adds) + out (divides) |
//! | data movement (Flatten, Reshape, Transpose, Concat, Slice, Pad, Gather, Squeeze, Unsqueeze, Identity, Dropout, Cast, Shape, ConstantOfShape) | 0 | 0 |
//!
//! A FusedConv costs the sum of the nodes it stands for (its `origin` list): the conv
//! (2·MACs, plus `out` for a bias the original conv had), 2·out per BatchNormalization folded in,
//! `out` for the residual Add and `out` for the activation (4·out for Sigmoid). When the origin
//! list holds a BatchNormalization, the fused bias is the folded BN shift and is not counted again.
//! Its `params` are the constants it actually reads (folded weights and bias), so a folded
//! model has 3·C fewer parameters per folded BN (mean, var, scale disappear into weights/bias).
//!
//! `params` counts elements of constant inputs a node reads (weights, bias, BN scale, shift,
//! mean and var; also shape/axes constants of Reshape, Slice...). `bytes_read` = bytes of the
//! non-constant inputs + `param_bytes`; `bytes_written` = `output_bytes`. Arithmetic intensity
//! = FLOPs / (bytes_read + bytes_written): each tensor touched once, no caches — the roofline
//! model's compulsory traffic.
//!
//! Nodes whose shapes are not fixed (the graph was not bound) count zero for what they cannot
//! know. [`CostTotals::macs_conv_fc_only`] sums the MACs of Conv, FusedConv, Gemm and MatMul
//! only: the number papers and `torchvision` model cards quote (e.g. 4,089,184,256 for
//! ResNet-50 at 224×224).

use serde::Serialize;

use crate::ir::{Activation, Graph, Node, Op, ValueId};

/// What one node computes and moves.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeCost {
    pub macs: u64,
    pub flops: u64,
    /// Elements of constant inputs read.
    pub params: u64,
    pub param_bytes: u64,
    pub output_elems: u64,
    pub output_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// FLOPs per byte moved (0 when nothing moves).
    pub arithmetic_intensity: f64,
}

/// Whole-graph sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostTotals {
    pub macs: u64,
    pub flops: u64,
    /// Sum of `params` over nodes (a constant read by two nodes counts twice).
    pub params: u64,
    pub param_bytes: u64,
    /// Sum of output elements over nodes (every intermediate feature map once).
    pub output_elems: u64,
    pub output_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub arithmetic_intensity: f64,
    /// MACs of Conv, FusedConv, Gemm and MatMul only (the figure papers quote).
    pub macs_conv_fc_only: u64,
}

fn elems(graph: &Graph, id: ValueId) -> Option<u64> {
    graph
        .value(id)
        .fixed_shape()
        .map(|s| s.iter().product::<usize>() as u64)
}

fn dtype_size(graph: &Graph, id: ValueId) -> u64 {
    if let Some(t) = graph.constants.get(&id) {
        return t.dtype().size_of() as u64;
    }
    graph
        .value(id)
        .dtype
        .map(|d| d.size_of() as u64)
        .unwrap_or(4)
}

fn shape(graph: &Graph, id: Option<ValueId>) -> Option<Vec<usize>> {
    let id = id?;
    if let Some(t) = graph.constants.get(&id) {
        return Some(t.shape().to_vec());
    }
    graph.value(id).fixed_shape()
}

fn input(node: &Node, i: usize) -> Option<ValueId> {
    node.inputs.get(i).copied().flatten()
}

/// Conv MACs from the weight shape `[Cout, Cin/group, k...]` and output shape `[N, Cout, o...]`.
fn conv_macs(graph: &Graph, node: &Node) -> u64 {
    let (Some(w), Some(out)) = (
        shape(graph, input(node, 1)),
        shape(graph, node.outputs.first().copied()),
    ) else {
        return 0;
    };
    if out.len() < 2 || w.len() < 2 {
        return 0;
    }
    let out_elems: u64 = out.iter().product::<usize>() as u64;
    let per_output: u64 = w[1..].iter().product::<usize>() as u64;
    out_elems * per_output
}

fn gemm_mnk(graph: &Graph, node: &Node, trans_a: bool) -> Option<(u64, u64, u64)> {
    let a = shape(graph, input(node, 0))?;
    let y = shape(graph, node.outputs.first().copied())?;
    if a.len() != 2 || y.len() != 2 {
        return None;
    }
    let k = if trans_a { a[0] } else { a[1] };
    Some((y[0] as u64, y[1] as u64, k as u64))
}

fn matmul_macs(graph: &Graph, node: &Node) -> u64 {
    let (Some(a), Some(y)) = (
        shape(graph, input(node, 0)),
        shape(graph, node.outputs.first().copied()),
    ) else {
        return 0;
    };
    // K is A's last dimension; every output element takes K MACs (1-D operands included).
    let k = a.last().copied().unwrap_or(1) as u64;
    y.iter().product::<usize>() as u64 * k
}

fn window(kernel: &[usize]) -> u64 {
    kernel.iter().product::<usize>() as u64
}

fn activation_flops(a: Activation) -> u64 {
    match a {
        Activation::None => 0,
        Activation::Sigmoid => 4,
        Activation::Relu | Activation::LeakyRelu(_) | Activation::Clip(..) => 1,
    }
}

fn op_flops_per_elem(op_type: &str) -> u64 {
    match op_type {
        "BatchNormalization" => 2,
        "Sigmoid" => 4,
        "Add" | "Sub" | "Mul" | "Div" | "Relu" | "LeakyRelu" | "Clip" => 1,
        _ => 0,
    }
}

/// Cost of one node of `graph` (see the module docs for the conventions).
pub fn node_cost(graph: &Graph, node: &Node) -> NodeCost {
    let out_id = node.outputs.first().copied();
    let out = out_id.and_then(|o| elems(graph, o)).unwrap_or(0);
    let in0 = input(node, 0).and_then(|i| elems(graph, i)).unwrap_or(0);
    let mut macs = 0u64;
    let flops: u64 = match &node.op {
        Op::Conv(_) => {
            macs = conv_macs(graph, node);
            2 * macs + if input(node, 2).is_some() { out } else { 0 }
        }
        Op::FusedConv {
            activation,
            has_residual,
            ..
        } => {
            macs = conv_macs(graph, node);
            let has_bias = input(node, 2).is_some();
            if node.origin.len() > 1 {
                let bn_folded = node
                    .origin
                    .iter()
                    .any(|o| o.op_type == "BatchNormalization");
                let mut f = 2 * macs + if has_bias && !bn_folded { out } else { 0 };
                for o in node.origin.iter().skip(1) {
                    f += op_flops_per_elem(&o.op_type) * out;
                }
                f
            } else {
                2 * macs
                    + if has_bias { out } else { 0 }
                    + if *has_residual { out } else { 0 }
                    + activation_flops(*activation) * out
            }
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            ..
        } => {
            let (m, n, k) = gemm_mnk(graph, node, *trans_a).unwrap_or((0, 0, 0));
            macs = m * n * k;
            let mut f = 2 * macs;
            if input(node, 2).is_some() && *beta != 0.0 {
                f += m * n;
                if *beta != 1.0 {
                    f += m * n;
                }
            }
            if *alpha != 1.0 {
                f += m * n;
            }
            f
        }
        Op::MatMul => {
            macs = matmul_macs(graph, node);
            2 * macs
        }
        Op::BatchNormalization { .. } => 2 * out,
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Relu | Op::LeakyRelu { .. } | Op::Clip => out,
        Op::Sum => (node.inputs.iter().flatten().count().saturating_sub(1) as u64) * out,
        Op::Sigmoid => 4 * out,
        Op::MaxPool(p) => window(&p.kernel_shape).saturating_sub(1) * out,
        Op::AveragePool(p) => window(&p.kernel_shape) * out,
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let spatial = shape(graph, input(node, 0))
                .map(|s| s.iter().skip(2).product::<usize>() as u64)
                .unwrap_or(0);
            if matches!(node.op, Op::GlobalAveragePool) {
                spatial * out
            } else {
                spatial.saturating_sub(1) * out
            }
        }
        Op::Lrn { size, .. } => (2 * *size as u64 + 3) * out,
        Op::Softmax { .. } => 5 * out,
        Op::ReduceMean { .. } => in0 + out,
        Op::Concat { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Identity
        | Op::Dropout
        | Op::ConstantOfShape { .. }
        | Op::Shape { .. }
        | Op::Gather { .. }
        | Op::Slice
        | Op::Cast { .. }
        | Op::Pad { .. } => 0,
    };

    let mut params = 0u64;
    let mut param_bytes = 0u64;
    let mut act_bytes = 0u64;
    for id in node.inputs.iter().flatten() {
        if let Some(t) = graph.constants.get(id) {
            params += t.len() as u64;
            param_bytes += t.byte_len() as u64;
        } else if let Some(n) = elems(graph, *id) {
            act_bytes += n * dtype_size(graph, *id);
        }
    }
    let mut output_elems = 0u64;
    let mut output_bytes = 0u64;
    for &o in &node.outputs {
        if let Some(n) = elems(graph, o) {
            output_elems += n;
            output_bytes += n * dtype_size(graph, o);
        }
    }
    let bytes_read = act_bytes + param_bytes;
    let bytes_written = output_bytes;
    NodeCost {
        macs,
        flops,
        params,
        param_bytes,
        output_elems,
        output_bytes,
        bytes_read,
        bytes_written,
        arithmetic_intensity: intensity(flops, bytes_read + bytes_written),
    }
}

fn intensity(flops: u64, bytes: u64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        flops as f64 / bytes as f64
    }
}

fn is_conv_or_fc(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_) | Op::FusedConv { .. } | Op::Gemm { .. } | Op::MatMul
    )
}

/// Costs of every node (in `graph.nodes` order) and their sums.
pub fn graph_cost(graph: &Graph) -> (Vec<NodeCost>, CostTotals) {
    let costs: Vec<NodeCost> = graph.nodes.iter().map(|n| node_cost(graph, n)).collect();
    let mut t = CostTotals::default();
    for (n, c) in graph.nodes.iter().zip(&costs) {
        t.macs += c.macs;
        t.flops += c.flops;
        t.params += c.params;
        t.param_bytes += c.param_bytes;
        t.output_elems += c.output_elems;
        t.output_bytes += c.output_bytes;
        t.bytes_read += c.bytes_read;
        t.bytes_written += c.bytes_written;
        if is_conv_or_fc(&n.op) {
            t.macs_conv_fc_only += c.macs;
        }
    }
    t.arithmetic_intensity = intensity(t.flops, t.bytes_read + t.bytes_written);
    (costs, t)
}

#[cfg(test)]
mod tests;
