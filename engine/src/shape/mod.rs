//! Binding symbolic dimensions, per-op shape inference and constant folding.
//!
//! [`bind`] turns an imported graph (symbolic batch, conv attributes as written, exporter
//! shape chains such as `Shape → Gather → Unsqueeze → Concat → Reshape`) into the fixed-shape
//! graph every later stage works on.
//!
//! # Canonical form after `bind`
//!
//! * Every value has `dtype: Some(..)` and a shape made only of `Dim::Fixed`.
//! * Every `Conv`, `FusedConv`, `MaxPool` and `AveragePool` has `auto_pad = AutoPad::NotSet`,
//!   explicit `pads` of length `2 * spatial` (all begins, then all ends), `kernel_shape` filled
//!   (`Some(weight spatial dims)` for convolutions) and `strides`/`dilations` of length
//!   `spatial`.
//! * Nodes whose inputs are all constants, and every `Shape` node, are replaced by constants;
//!   nodes no graph output depends on are removed; `constants` holds only tensors that a node
//!   or a graph output reads. A graph output may therefore be a constant.
//! * Value ids are renumbered densely (the returned graph is a new graph).
//! * No value has more than `max_elements` elements (checked before anything is allocated).

mod geometry;
mod infer;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

pub use geometry::{conv_output_len, effective_kernel, pool_output_len, resolve_auto_pad};
pub use infer::{
    broadcast_shapes, canonical_op, infer_node, shape_range, slice_len, Fact, OutFact,
};

use crate::error::{Error, Result};
use crate::ir::{Dim, Graph, Node, Op, ValueId, ValueInfo};
use crate::tensor::{DType, Tensor};

/// How to fix the free dimensions of a graph's inputs.
#[derive(Debug, Clone, Default)]
pub struct BindSpec {
    /// Value for a symbolic *leading* dimension of the inputs (default 1). When no input has a
    /// symbolic leading dimension, an explicit batch replaces a fixed leading 1 (exports with
    /// batch 1 baked in), provided every graph output then leads with the batch too.
    pub batch: Option<usize>,
    /// Explicit shapes by input name; they win over declared shapes (fixed dims included).
    pub shapes: HashMap<String, Vec<usize>>,
    /// Refuse any value with more elements than this (`Error::MemoryLimit`), before allocating.
    pub max_elements: Option<u128>,
    /// Inputs whose *values* are fixed now, by name. Shapes, axes, pads and the like often
    /// arrive as graph inputs (ONNX node tests, some exporters), but every later stage needs
    /// them known; a bound input becomes a constant (and is folded), gives its own shape, and
    /// is no longer an input of the returned graph.
    pub values: HashMap<String, Tensor>,
}

/// Binds input shapes, infers every value's dtype and shape, folds constants and removes dead
/// nodes. See the module docs for the form of the returned graph.
pub fn bind(graph: &Graph, spec: &BindSpec) -> Result<Graph> {
    // A bound value fixes its input's shape: fold it into `shapes` so the symbol binding below
    // sees it like any explicit shape.
    let with_values;
    let spec = if spec.values.is_empty() {
        spec
    } else {
        let mut s = spec.clone();
        let mut names: Vec<&String> = spec.values.keys().collect();
        names.sort();
        for name in names {
            let shape = spec.values[name].shape().to_vec();
            match s.shapes.get(name) {
                Some(given) if *given != shape => {
                    return Err(Error::Input {
                        name: name.clone(),
                        message: format!(
                            "given shape {given:?} but the value bound to it has shape {shape:?}"
                        ),
                    })
                }
                _ => {
                    s.shapes.insert(name.clone(), shape);
                }
            }
        }
        with_values = s;
        &with_values
    };
    let inputs = bind_inputs(graph, spec)?;
    let overridden = inputs.overridden.clone();
    bind_bound(graph, spec, inputs).map_err(|e| match e {
        // Point at the likely cause: a batch-1 export that bakes the batch into a node.
        Error::Node { node, op, message } if !overridden.is_empty() => Error::Node {
            node,
            op,
            message: format!(
                "{message} (the model was exported with batch 1 and input '{}' was given batch {}; the model probably hard-codes its batch size: export it with a dynamic batch axis)",
                overridden[0],
                spec.batch.unwrap_or(1)
            ),
        },
        other => other,
    })
}

fn bind_bound(graph: &Graph, spec: &BindSpec, inputs: BoundInputs) -> Result<Graph> {
    let BoundInputs {
        shapes: input_shapes,
        overridden,
    } = inputs;

    // What is known per value id: dtype and fixed shape; constants hold their tensors.
    let mut known: Vec<Option<(DType, Vec<usize>)>> = vec![None; graph.values.len()];
    let mut consts: HashMap<ValueId, Tensor> = graph.constants.clone();
    for (id, t) in &consts {
        known[id.0] = Some((t.dtype(), t.shape().to_vec()));
    }
    for (&id, shape) in graph.inputs.iter().zip(input_shapes) {
        let v = graph.value(id);
        if let Some(t) = spec.values.get(&v.name) {
            if v.dtype.is_some_and(|d| d != t.dtype()) {
                return Err(Error::Input {
                    name: v.name.clone(),
                    message: format!(
                        "the value bound to it is {} but the model declares {}",
                        t.dtype(),
                        v.dtype.map_or("unknown".to_string(), |d| d.to_string())
                    ),
                });
            }
            known[id.0] = Some((t.dtype(), shape));
            consts.insert(id, t.clone());
            continue;
        }
        let dtype = v.dtype.unwrap_or(DType::F32);
        check_elements(spec, dtype, &shape, || format!("input '{}'", v.name))?;
        known[id.0] = Some((dtype, shape));
    }

    let mut nodes: Vec<Node> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let (node, outs, folded) = {
            let mut facts = Vec::with_capacity(node.inputs.len());
            for inp in &node.inputs {
                let Some(id) = *inp else {
                    facts.push(None);
                    continue;
                };
                let Some((dtype, shape)) = &known[id.0] else {
                    return Err(Error::Model(format!(
                        "value '{}' read by node '{}' ({}) is not produced by any earlier node",
                        graph.value(id).name,
                        node.name,
                        node.op.type_name()
                    )));
                };
                facts.push(Some(Fact {
                    name: &graph.value(id).name,
                    dtype: *dtype,
                    shape,
                    value: consts.get(&id),
                }));
            }
            let node = Node {
                op: canonical_op(node, &facts)?,
                ..node.clone()
            };
            let outs = infer_node(&node, &facts)?;
            for (k, &out) in node.outputs.iter().enumerate() {
                let (dtype, shape) = &outs[k];
                check_elements(spec, *dtype, shape, || {
                    format!(
                        "value '{}' (output of node '{}' ({}))",
                        graph.value(out).name,
                        node.name,
                        node.op.type_name()
                    )
                })?;
            }
            let all_const = node
                .inputs
                .iter()
                .flatten()
                .all(|id| consts.contains_key(id));
            let folded = if let Op::Shape { start, end } = node.op {
                let x = facts
                    .first()
                    .copied()
                    .flatten()
                    .map_or(&[][..], |f| f.shape);
                let (s, e) = shape_range(x.len(), start, end);
                let dims: Vec<i64> = x[s..e].iter().map(|&d| d as i64).collect();
                let t = Tensor::from_i64(&[dims.len()], dims).ok_or_else(|| {
                    Error::node(&node.name, "Shape", "internal: bad shape tensor")
                })?;
                Some(vec![t])
            } else if all_const {
                let tensors: Vec<Option<&Tensor>> = node
                    .inputs
                    .iter()
                    .map(|i| i.and_then(|id| consts.get(&id)))
                    .collect();
                Some(crate::ops::eval(&node, &tensors)?)
            } else {
                None
            };
            (node, outs, folded)
        };

        match folded {
            Some(tensors) => {
                if tensors.len() < node.outputs.len() {
                    return Err(Error::node(
                        &node.name,
                        node.op.type_name(),
                        format!(
                            "constant folding produced {} output(s), expected {}",
                            tensors.len(),
                            node.outputs.len()
                        ),
                    ));
                }
                for ((&out, t), (dtype, shape)) in node.outputs.iter().zip(tensors).zip(outs) {
                    if t.dtype() != dtype || t.shape() != shape.as_slice() {
                        return Err(Error::node(
                            &node.name,
                            node.op.type_name(),
                            format!(
                                "constant folding produced {} {:?} for '{}' but shape inference expects {} {:?}",
                                t.dtype(),
                                t.shape(),
                                graph.value(out).name,
                                dtype,
                                shape
                            ),
                        ));
                    }
                    known[out.0] = Some((dtype, shape));
                    consts.insert(out, t);
                }
            }
            None => {
                for (&out, fact) in node.outputs.iter().zip(outs) {
                    known[out.0] = Some(fact);
                }
                nodes.push(node);
            }
        }
    }

    // Keep the nodes some graph output depends on.
    let mut needed: HashSet<ValueId> = graph.outputs.iter().copied().collect();
    let mut live = vec![false; nodes.len()];
    for (i, node) in nodes.iter().enumerate().rev() {
        if node.outputs.iter().any(|o| needed.contains(o)) {
            live[i] = true;
            needed.extend(node.inputs.iter().flatten().copied());
        }
    }
    let nodes: Vec<Node> = nodes
        .into_iter()
        .zip(live)
        .filter_map(|(n, l)| l.then_some(n))
        .collect();

    // Renumber densely: inputs, read constants, node outputs, graph outputs.
    let mut out = Graph {
        name: graph.name.clone(),
        ..Graph::default()
    };
    let mut remap: HashMap<ValueId, ValueId> = HashMap::new();
    let mut map = |id: ValueId, out: &mut Graph| -> Result<ValueId> {
        if let Some(&n) = remap.get(&id) {
            return Ok(n);
        }
        let v = graph.value(id);
        let (dtype, shape) = known[id.0]
            .clone()
            .ok_or_else(|| Error::Model(format!("value '{}' is never computed", v.name)))?;
        let new = out.add_value(
            v.name.clone(),
            Some(dtype),
            Some(shape.into_iter().map(Dim::Fixed).collect()),
        );
        // Moved, not cloned: `consts` is not read after renumbering, and a copy here would
        // hold every weight a third time (model, `consts`, `out`) while a session is prepared.
        if let Some(t) = consts.remove(&id) {
            out.constants.insert(new, t);
        }
        remap.insert(id, new);
        Ok(new)
    };
    for &id in &graph.inputs {
        // Inputs bound to values are constants now (mapped below where something reads them).
        if spec.values.contains_key(&graph.value(id).name) {
            continue;
        }
        let n = map(id, &mut out)?;
        out.inputs.push(n);
    }
    for node in nodes {
        let inputs = node
            .inputs
            .iter()
            .map(|i| i.map(|id| map(id, &mut out)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let outputs = node
            .outputs
            .iter()
            .map(|&id| map(id, &mut out))
            .collect::<Result<Vec<_>>>()?;
        out.nodes.push(Node {
            inputs,
            outputs,
            ..node
        });
    }
    for &id in &graph.outputs {
        let n = map(id, &mut out)?;
        out.outputs.push(n);
    }
    if let (Some(b), Some(first)) = (spec.batch, overridden.first()) {
        // A model exported with batch 1 may hard-code it (a Reshape to [1, -1]...); then the
        // outputs silently stop carrying the batch. Refuse rather than profile a wrong model.
        for &o in &out.outputs {
            let v = out.value(o);
            let shape = v.fixed_shape().unwrap_or_default();
            if shape.first() != Some(&b) {
                return Err(Error::Input {
                    name: first.clone(),
                    message: format!(
                        "the model was exported with batch 1; running it with batch {b} gives output '{}' the shape {shape:?}, which does not lead with the batch, so the model hard-codes its batch size (export it with a dynamic batch axis)",
                        v.name
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// Refuses a value whose element count exceeds `spec.max_elements`, or whose byte size
/// overflows what one allocation can hold, before anything is allocated.
fn check_elements(
    spec: &BindSpec,
    dtype: DType,
    shape: &[usize],
    what: impl FnOnce() -> String,
) -> Result<()> {
    let size = dtype.size_of() as u128;
    let elements = shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    let bytes = elements.and_then(|n| n.checked_mul(size));
    let (Some(n), Some(b)) = (elements, bytes) else {
        return Err(Error::MemoryLimit {
            what: format!("{} with shape {shape:?}", what()),
            requested: u128::MAX,
            limit: isize::MAX as u128,
        });
    };
    if let Some(max) = spec.max_elements {
        if n > max {
            return Err(Error::MemoryLimit {
                what: format!("{} with shape {shape:?} ({n} {dtype} elements)", what()),
                requested: b,
                limit: max.saturating_mul(size),
            });
        }
    }
    if b > isize::MAX as u128 {
        return Err(Error::MemoryLimit {
            what: format!("{} with shape {shape:?} ({n} {dtype} elements)", what()),
            requested: b,
            limit: isize::MAX as u128,
        });
    }
    Ok(())
}

/// Fixed shapes for `graph.inputs`, in order.
///
/// Explicit shapes bind the symbols they cover (so `N` given for one input fixes `N` in every
/// other input); then a symbolic leading dimension takes `spec.batch` (default 1); any other
/// symbol left unbound is an error naming the input and the symbol.
fn bind_inputs(graph: &Graph, spec: &BindSpec) -> Result<BoundInputs> {
    let input_names: Vec<&str> = graph
        .inputs
        .iter()
        .map(|&id| graph.value(id).name.as_str())
        .collect();
    let mut unknown: Vec<&String> = spec
        .shapes
        .keys()
        .filter(|k| !input_names.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        return Err(Error::Input {
            name: name.to_string(),
            message: format!(
                "the model has no input of that name (its inputs are: {})",
                input_names.join(", ")
            ),
        });
    }

    let mut symbols: HashMap<&str, (usize, &str)> = HashMap::new();
    for &id in &graph.inputs {
        let v = graph.value(id);
        let (Some(given), Some(dims)) = (spec.shapes.get(&v.name), &v.shape) else {
            continue;
        };
        if given.len() != dims.len() {
            return Err(Error::Input {
                name: v.name.clone(),
                message: format!(
                    "given shape {given:?} has rank {} but the model declares rank {} ({})",
                    given.len(),
                    dims.len(),
                    fmt_dims(dims)
                ),
            });
        }
        for (d, &n) in dims.iter().zip(given) {
            if let Dim::Symbol(s) = d {
                match symbols.get(s.as_str()) {
                    Some(&(m, from)) if m != n => {
                        return Err(Error::Input {
                            name: v.name.clone(),
                            message: format!("symbol '{s}' is {n} here but {m} in the shape given for input '{from}'"),
                        })
                    }
                    _ => {
                        symbols.insert(s, (n, &v.name));
                    }
                }
            }
        }
    }

    let batch = spec.batch.unwrap_or(1);
    let mut batch_used = false;
    let mut overridden = Vec::new();
    for &id in &graph.inputs {
        let v = graph.value(id);
        if spec.shapes.contains_key(&v.name) {
            continue;
        }
        if let Some(Dim::Symbol(s)) = v.shape.as_ref().and_then(|d| d.first()) {
            batch_used = true;
            symbols.entry(s).or_insert((batch, "--batch"));
        }
    }

    let mut shapes = Vec::with_capacity(graph.inputs.len());
    for &id in &graph.inputs {
        let v = graph.value(id);
        if let Some(given) = spec.shapes.get(&v.name) {
            shapes.push(given.clone());
            continue;
        }
        let Some(dims) = &v.shape else {
            return Err(Error::Input {
                name: v.name.clone(),
                message: "the model declares no shape for this input; give one with --input-shape"
                    .into(),
            });
        };
        // Many exports fix the batch at 1. An explicit batch then overrides that leading 1
        // (checked against the outputs after inference, see `bind`); any other fixed leading
        // size is a real model constraint.
        let mut override_batch = None;
        if let (Some(b), false, Some(Dim::Fixed(f))) = (spec.batch, batch_used, dims.first()) {
            if *f == 1 && b != 1 {
                override_batch = Some(b);
                overridden.push(v.name.clone());
            } else if *f != b {
                return Err(Error::Input {
                    name: v.name.clone(),
                    message: format!(
                        "the model fixes the leading (batch) dimension to {f} ({}), so batch {b} cannot be applied; give a full shape with --input-shape to override",
                        fmt_dims(dims)
                    ),
                });
            }
        }
        let mut shape = Vec::with_capacity(dims.len());
        for (axis, d) in dims.iter().enumerate() {
            shape.push(match d {
                Dim::Fixed(n) => *n,
                Dim::Symbol(s) => match symbols.get(s.as_str()) {
                    Some(&(n, _)) => n,
                    None => {
                        return Err(Error::Input {
                            name: v.name.clone(),
                            message: format!(
                                "dimension {axis} is the free symbol '{s}' ({}); only a leading dimension takes the batch size, so give the full shape with --input-shape",
                                fmt_dims(dims)
                            ),
                        })
                    }
                },
            });
        }
        if let Some(b) = override_batch {
            shape[0] = b;
        }
        shapes.push(shape);
    }
    Ok(BoundInputs { shapes, overridden })
}

/// Result of binding the inputs.
struct BoundInputs {
    /// Fixed shapes for `graph.inputs`, in order.
    shapes: Vec<Vec<usize>>,
    /// Inputs whose fixed leading 1 was replaced by the requested batch.
    overridden: Vec<String>,
}

fn fmt_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s) => s.clone(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The fixed shape of a value after [`bind`], or an error naming it.
pub fn fixed_shape(info: &ValueInfo) -> Result<Vec<usize>> {
    info.fixed_shape().ok_or_else(|| {
        Error::Model(format!(
            "value '{}' has no fixed shape (run shape::bind first)",
            info.name
        ))
    })
}
