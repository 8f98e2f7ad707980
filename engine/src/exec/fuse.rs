//! Graph rewrites on a bound graph before planning: fewer nodes, fewer passes over memory.
//!
//! - Identity and Dropout (inference) disappear: readers are rewired to their input.
//! - BatchNormalization after a Conv with constant weights folds into the Conv's weights and
//!   bias (one pass over the weights at session creation instead of one pass over the
//!   activations per run).
//! - Conv [+ Add of a same-shape residual] [+ Relu | Clip | LeakyRelu] becomes one
//!   [`Op::FusedConv`], so the epilogue happens while the conv output is still in cache.
//!
//! - 1×1 convs that read the same input (Inception's branch heads) are moved next to each
//!   other, right after the first of them, so that the executor can run them as one kernel
//!   call ([`crate::kernels::pointwise_group`]). Only the order changes.
//!
//! Graph input and output *names* never change; fused nodes keep the original ONNX nodes in
//! `origin` (head first) so per-node reports can name them.

use std::collections::HashMap;

use ndarray::ArrayD;

use crate::error::{Error, Result};
use crate::ir::{Activation, Graph, Node, Op, ValueId};
use crate::tensor::Tensor;

/// Applies all fusions. The input must be bound (fixed shapes), the result is bound too.
pub fn optimize(graph: &Graph) -> Result<Graph> {
    let mut g = graph.clone();
    remove_identities(&mut g);
    fold_batchnorm(&mut g)?;
    fuse_conv_epilogues(&mut g);
    cluster_sibling_pointwise(&mut g);
    drop_unused_constants(&mut g);
    Ok(g)
}

/// Readers of each value: (node index, input slot).
fn readers(g: &Graph) -> Vec<Vec<(usize, usize)>> {
    let mut r = vec![Vec::new(); g.values.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        for (j, id) in node.inputs.iter().enumerate() {
            if let Some(id) = id {
                r[id.0].push((i, j));
            }
        }
    }
    r
}

fn producers(g: &Graph) -> HashMap<ValueId, usize> {
    let mut p = HashMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        for &o in &node.outputs {
            p.insert(o, i);
        }
    }
    p
}

fn replace_uses(g: &mut Graph, from: ValueId, to: ValueId) {
    for node in &mut g.nodes {
        for id in node.inputs.iter_mut().flatten() {
            if *id == from {
                *id = to;
            }
        }
    }
}

/// The input a node reads and its strides, as a candidate sibling 1×1 conv: an unpadded 1×1
/// conv with one group, constant weights (and bias), no residual and an activation the 1×1
/// kernel's tile applies. Siblings share both (ResNet's stride-1 conv1 and stride-2 shortcut
/// of one input are not siblings); the executor checks the rest (shapes, its kernel chosen).
fn sibling_pointwise_input(g: &Graph, node: &Node) -> Option<(ValueId, Vec<usize>)> {
    let (attrs, act) = match &node.op {
        Op::Conv(a) => (a, Activation::None),
        Op::FusedConv {
            conv,
            activation,
            has_residual: false,
        } => (conv, *activation),
        _ => return None,
    };
    let tile_act = matches!(
        act,
        Activation::None | Activation::Relu | Activation::Clip(..)
    );
    let w = node.inputs.get(1).copied().flatten()?;
    let w_shape = g.value(w).fixed_shape()?;
    let one_by_one = w_shape.len() >= 3 && w_shape[2..].iter().all(|&k| k == 1);
    let unpadded = attrs.pads.iter().all(|&p| p == 0)
        && matches!(
            attrs.auto_pad,
            crate::ir::AutoPad::NotSet | crate::ir::AutoPad::Valid
        );
    let consts = node.inputs[1..]
        .iter()
        .flatten()
        .all(|&id| g.is_constant(id));
    let x = node.inputs.first().copied().flatten()?;
    // Omitted strides are 1.
    let strides: Vec<usize> = (0..w_shape.len() - 2)
        .map(|d| attrs.strides.get(d).copied().unwrap_or(1))
        .collect();
    (tile_act && one_by_one && unpadded && attrs.group == 1 && consts && !g.is_constant(x))
        .then_some((x, strides))
}

/// Moves every candidate sibling 1×1 conv (see [`sibling_pointwise_input`]) of an input, with
/// the same strides, up to just after the previous one, so siblings run back to back. A
/// sibling reads only that input (produced before the first sibling) and constants, so the
/// order stays topological; its output is produced earlier, which keeps it alive a little
/// longer (Inception-v3: the branch heads' outputs, 35×35 or smaller).
fn cluster_sibling_pointwise(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        let Some(key) = sibling_pointwise_input(g, &g.nodes[i]) else {
            i += 1;
            continue;
        };
        let mut last = i;
        let mut k = i + 1;
        while k < g.nodes.len() {
            if sibling_pointwise_input(g, &g.nodes[k]).as_ref() == Some(&key) {
                let node = g.nodes.remove(k);
                g.nodes.insert(last + 1, node);
                last += 1;
            }
            k += 1;
        }
        i = last + 1;
    }
}

/// Removes Identity and Dropout nodes whose extra outputs (Dropout's mask) nobody reads.
fn remove_identities(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        let node = &g.nodes[i];
        let removable = match node.op {
            Op::Identity => true,
            Op::Dropout => dropout_is_identity(g, node),
            _ => false,
        } && !node.outputs.is_empty();
        if !removable {
            i += 1;
            continue;
        }
        let (Some(Some(input)), Some(&output)) =
            (node.inputs.first().copied(), node.outputs.first())
        else {
            i += 1;
            continue;
        };
        let counts = g.consumer_counts();
        if node.outputs[1..].iter().any(|o| counts[o.0] > 0) {
            i += 1;
            continue;
        }
        let output_is_graph_output = g.outputs.contains(&output);
        if !output_is_graph_output {
            replace_uses(g, output, input);
            g.nodes.remove(i);
            continue;
        }
        // The output name must survive: make the producer of `input` write `output` directly,
        // which is only possible when `input` is an ordinary intermediate.
        let prod = producers(g);
        let movable = !g.is_constant(input)
            && !g.inputs.contains(&input)
            && !g.outputs.contains(&input)
            && prod.contains_key(&input);
        if movable {
            let p = prod[&input];
            for o in g.nodes[p].outputs.iter_mut() {
                if *o == input {
                    *o = output;
                }
            }
            replace_uses(g, input, output);
            g.nodes.remove(i);
            continue;
        }
        i += 1;
    }
}

/// Whether a Dropout node is the inference identity: its `training_mode` input is absent or a
/// constant false. (A true or run-time flag is left to the reference evaluator, which refuses
/// training mode with a clear error instead of silently computing something else.)
pub(crate) fn dropout_is_identity(g: &Graph, node: &Node) -> bool {
    match node.inputs.get(2).copied().flatten() {
        None => true,
        Some(id) => g
            .constants
            .get(&id)
            .is_some_and(|t| t.len() == 1 && t.to_f64_vec().first() == Some(&0.0)),
    }
}

fn const_f32(g: &Graph, id: Option<ValueId>) -> Option<&ArrayD<f32>> {
    id.and_then(|id| g.constants.get(&id))
        .and_then(Tensor::as_f32)
}

/// Folds BatchNormalization into the Conv feeding it when the Conv's weights (and bias) are
/// constants and the BN is the Conv output's only reader.
fn fold_batchnorm(g: &mut Graph) -> Result<()> {
    let mut i = 0;
    while i < g.nodes.len() {
        let Op::BatchNormalization { epsilon } = g.nodes[i].op else {
            i += 1;
            continue;
        };
        let bn = g.nodes[i].clone();
        let Some(Some(x)) = bn.inputs.first().copied() else {
            i += 1;
            continue;
        };
        let prod = producers(g);
        let counts = g.consumer_counts();
        let Some(&c) = prod.get(&x) else {
            i += 1;
            continue;
        };
        let conv = &g.nodes[c];
        if !matches!(conv.op, Op::Conv(_)) || counts[x.0] != 1 || bn.outputs.len() != 1 {
            i += 1;
            continue;
        }
        let input = |k: usize| bn.inputs.get(k).copied().flatten();
        let (Some(scale), Some(beta), Some(mean), Some(var)) = (
            const_f32(g, input(1)),
            const_f32(g, input(2)),
            const_f32(g, input(3)),
            const_f32(g, input(4)),
        ) else {
            i += 1;
            continue;
        };
        let w_id = conv.inputs.get(1).copied().flatten();
        let b_id = conv.inputs.get(2).copied().flatten();
        let Some(w) = const_f32(g, w_id) else {
            i += 1;
            continue;
        };
        if b_id.is_some() && const_f32(g, b_id).is_none() {
            i += 1;
            continue;
        }
        let m = w.shape().first().copied().unwrap_or(0);
        if [scale.len(), beta.len(), mean.len(), var.len()]
            .iter()
            .any(|&l| l != m)
            || m == 0
        {
            return Err(Error::node(
                &bn.name,
                "BatchNormalization",
                format!(
                    "per-channel parameters must have {m} entries (the conv's output channels)"
                ),
            ));
        }
        let per = w.len() / m;
        let scale_v: Vec<f32> = scale.iter().copied().collect();
        let beta_v: Vec<f32> = beta.iter().copied().collect();
        let mean_v: Vec<f32> = mean.iter().copied().collect();
        let var_v: Vec<f32> = var.iter().copied().collect();
        // In float64, rounded once to float32 at the end: computing the factor in float32 and
        // then multiplying rounds every folded weight twice (and `var + eps`, the square root
        // and the division once more each).
        let factors: Vec<f64> = (0..m)
            .map(|k| scale_v[k] as f64 / (var_v[k] as f64 + epsilon as f64).sqrt())
            .collect();
        let w_new: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(e, &v)| (v as f64 * factors[e / per]) as f32)
            .collect();
        let b_old: Vec<f32> = match const_f32(g, b_id) {
            Some(b) => b.iter().copied().collect(),
            None => vec![0.0; m],
        };
        if b_old.len() != m {
            return Err(Error::node(
                &conv.name,
                "Conv",
                format!("bias must have {m} entries"),
            ));
        }
        let b_new: Vec<f32> = (0..m)
            .map(|k| ((b_old[k] as f64 - mean_v[k] as f64) * factors[k] + beta_v[k] as f64) as f32)
            .collect();
        let w_shape = w.shape().to_vec();
        let conv_name = conv.name.clone();
        let w_tensor = Tensor::from_f32(&w_shape, w_new)
            .ok_or_else(|| Error::node(&conv_name, "Conv", "folded weight shape mismatch"))?;
        let b_tensor = Tensor::from_f32(&[m], b_new)
            .ok_or_else(|| Error::node(&conv_name, "Conv", "folded bias shape mismatch"))?;
        let w_new_id = g.add_constant(format!("{conv_name}.folded_weight"), w_tensor);
        let b_new_id = g.add_constant(format!("{conv_name}.folded_bias"), b_tensor);
        let out = bn.outputs[0];
        let conv = &mut g.nodes[c];
        conv.inputs.resize(3, None);
        conv.inputs[1] = Some(w_new_id);
        conv.inputs[2] = Some(b_new_id);
        conv.outputs[0] = out;
        conv.origin.extend(bn.origin.iter().cloned());
        g.nodes.remove(i);
    }
    Ok(())
}

/// The activation a node applies, when it is one the fused epilogue supports.
fn epilogue_activation(g: &Graph, node: &Node) -> Option<Activation> {
    match node.op {
        Op::Relu => Some(Activation::Relu),
        Op::LeakyRelu { alpha } => Some(Activation::LeakyRelu(alpha)),
        Op::Clip => {
            let bound = |k: usize, default: f32| -> Option<f32> {
                match node.inputs.get(k).copied().flatten() {
                    None => Some(default),
                    Some(id) => {
                        let t = g.constants.get(&id)?.as_f32()?;
                        (t.len() == 1).then(|| t.iter().copied().next()).flatten()
                    }
                }
            };
            Some(Activation::Clip(
                bound(1, f32::NEG_INFINITY)?,
                bound(2, f32::INFINITY)?,
            ))
        }
        _ => None,
    }
}

/// Turns Conv [+ Add] [+ activation] chains into FusedConv nodes placed at the chain's tail
/// (where every input, the residual included, is already computed).
fn fuse_conv_epilogues(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        let Op::Conv(attrs) = &g.nodes[i].op else {
            i += 1;
            continue;
        };
        let attrs = attrs.clone();
        let rd = readers(g);
        let single_reader = |g: &Graph, v: ValueId| -> Option<usize> {
            if g.outputs.contains(&v) || rd[v.0].len() != 1 {
                return None;
            }
            Some(rd[v.0][0].0)
        };
        let mut out = g.nodes[i].outputs[0];
        let mut removed: Vec<usize> = Vec::new();
        let mut residual: Option<ValueId> = None;
        let mut activation = Activation::None;
        let shape_of = |g: &Graph, v: ValueId| g.value(v).fixed_shape();
        // Add of a same-shape residual (either operand) computed by the graph. A constant
        // operand stays a separate Add (it has its own kernel): the conv kernels read the
        // residual from the activation arena, and a fused node without one would fall back to
        // the reference convolution (a 64→256 1×1 conv at 56×56 took 42 ms instead of 1).
        if let Some(r) = single_reader(g, out) {
            let add = &g.nodes[r];
            if matches!(add.op, Op::Add) && add.inputs.len() == 2 && add.outputs.len() == 1 {
                let other = if add.inputs[0] == Some(out) {
                    add.inputs[1]
                } else {
                    add.inputs[0]
                };
                if let Some(other) = other {
                    if other != out
                        && !g.is_constant(other)
                        && shape_of(g, other).is_some()
                        && shape_of(g, other) == shape_of(g, out)
                    {
                        residual = Some(other);
                        removed.push(r);
                        out = add.outputs[0];
                    }
                }
            }
        }
        if let Some(r) = single_reader(g, out) {
            let act_node = &g.nodes[r];
            if act_node.inputs.first() == Some(&Some(out)) && act_node.outputs.len() == 1 {
                if let Some(a) = epilogue_activation(g, act_node) {
                    activation = a;
                    removed.push(r);
                    out = act_node.outputs[0];
                }
            }
        }
        if removed.is_empty() {
            i += 1;
            continue;
        }
        let tail = *removed.iter().max().unwrap_or(&i);
        let mut fused = g.nodes[i].clone();
        fused.op = Op::FusedConv {
            conv: attrs,
            activation,
            has_residual: residual.is_some(),
        };
        if let Some(r) = residual {
            fused.inputs.resize(3, None);
            fused.inputs.push(Some(r));
        }
        fused.outputs = vec![out];
        for &r in &removed {
            fused.origin.extend(g.nodes[r].origin.iter().cloned());
        }
        g.nodes[tail] = fused;
        let mut gone: Vec<usize> = removed.iter().copied().filter(|&r| r != tail).collect();
        gone.push(i);
        gone.sort_unstable();
        for r in gone.into_iter().rev() {
            g.nodes.remove(r);
        }
        // The fused node now sits later; keep scanning from the same index.
    }
}

/// Removes constants no node reads any more (the weights BN folding replaced).
fn drop_unused_constants(g: &mut Graph) {
    let counts = g.consumer_counts();
    g.constants.retain(|id, _| counts[id.0] > 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::tests::{conv_attrs, Builder};

    /// BN folding rounds once: every folded weight and bias equals the float64 product rounded
    /// to float32 (a float32 factor would round twice and miss it for many of them).
    #[test]
    fn batchnorm_fold_rounds_once_from_float64() {
        let mut b = Builder::new();
        let x = b.input("x", &[1, 3, 5, 5]);
        let w = b.random("w", &[8, 3, 3, 3]);
        let bias = b.random("bias", &[8]);
        let c = b.node1(
            "conv",
            Op::Conv(conv_attrs(3, 1, 1)),
            &[x, w, bias],
            &[1, 8, 5, 5],
        );
        let (s, beta, mean) = (
            b.positive("s", &[8]),
            b.random("beta", &[8]),
            b.random("mean", &[8]),
        );
        let var = b.positive("var", &[8]);
        let eps = 1e-3f32;
        let y = b.node1(
            "bn",
            Op::BatchNormalization { epsilon: eps },
            &[c, s, beta, mean, var],
            &[1, 8, 5, 5],
        );
        b.g.outputs = vec![y];
        let vals = |id: ValueId| b.g.constants[&id].to_f64_vec();
        let (w0, b0, s0, beta0, m0, v0) = (
            vals(w),
            vals(bias),
            vals(s),
            vals(beta),
            vals(mean),
            vals(var),
        );
        let g = optimize(&b.g).expect("optimize");
        let conv = g
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Conv(_)))
            .expect("conv kept");
        assert!(
            !g.nodes
                .iter()
                .any(|n| matches!(n.op, Op::BatchNormalization { .. })),
            "BN folded away"
        );
        let wf = g.constants[&conv.inputs[1].expect("weight")].to_f64_vec();
        let bf = g.constants[&conv.inputs[2].expect("bias")].to_f64_vec();
        let per = w0.len() / 8;
        for k in 0..8 {
            let f = s0[k] / (v0[k] + eps as f64).sqrt();
            for e in k * per..(k + 1) * per {
                assert_eq!(wf[e], (w0[e] * f) as f32 as f64, "weight {e}");
            }
            let want = ((b0[k] - m0[k]) * f + beta0[k]) as f32 as f64;
            assert_eq!(bf[k], want, "bias {k}");
        }
    }
}
