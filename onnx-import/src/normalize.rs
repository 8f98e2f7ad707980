//! Opset normalisation: rewrite the attribute forms of older opsets into the newest input
//! form, so that the engine implements one form per operator.
//!
//! Attribute values that became inputs are stored as new initializers named
//! `{node_name}::{attribute}`; [`denormalize`] does the inverse for the writer, so that a model
//! held in the newest form can be saved for an older opset (e.g. ReduceMean at opset 17).
//! Only default-domain nodes are touched. `OnnxModel::opset` keeps the file's opset: a few
//! semantics still depend on it (Softmax before 13 flattens the input at `axis`).

use std::collections::{HashMap, HashSet};

use crate::model::*;
use crate::Error;

/// Rewrites `model.graph` in place for `model.opset`. `label` names the file in errors.
pub fn normalize(model: &mut OnnxModel, label: &str) -> Result<(), Error> {
    let opset = model.opset;
    let ranks = known_ranks(&model.graph);
    let init_index: HashMap<String, usize> = model
        .graph
        .initializers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let mut new_inits: Vec<TensorData> = Vec::new();
    let graph = &mut model.graph;
    for node in graph.nodes.iter_mut() {
        if !node.domain.is_empty() {
            continue;
        }
        let mut rw = Rewriter {
            node,
            new_inits: &mut new_inits,
            label,
        };
        match rw.node.op_type.as_str() {
            "Clip" if opset < 11 => {
                rw.drop_attrs(&["consumed_inputs"]);
                let min = rw.take_float("min")?;
                let max = rw.take_float("max")?;
                rw.set_input(1, min.map(|v| ("min", scalar_f32(v))));
                rw.set_input(2, max.map(|v| ("max", scalar_f32(v))));
            }
            "Squeeze" | "Unsqueeze" if opset < 13 => {
                if let Some(axes) = rw.take_ints("axes")? {
                    rw.set_input(1, Some(("axes", ints_1d(axes))));
                }
            }
            "Pad" if opset < 11 => {
                let pads = match rw.take_ints("pads")? {
                    Some(p) => Some(p),
                    None => rw.take_ints("paddings")?,
                };
                let Some(pads) = pads else {
                    return Err(rw.err("expected attribute 'pads' (opset < 11), found none"));
                };
                let value = rw.take_float("value")?;
                rw.set_input(1, Some(("pads", ints_1d(pads))));
                rw.set_input(2, value.map(|v| ("value", scalar_f32(v))));
            }
            "Slice" if opset < 10 => {
                let (Some(starts), Some(ends)) = (rw.take_ints("starts")?, rw.take_ints("ends")?)
                else {
                    return Err(rw.err("expected attributes 'starts' and 'ends' (opset < 10)"));
                };
                let axes = rw.take_ints("axes")?;
                rw.set_input(1, Some(("starts", ints_1d(starts))));
                rw.set_input(2, Some(("ends", ints_1d(ends))));
                rw.set_input(3, axes.map(|a| ("axes", ints_1d(a))));
            }
            "Reshape" if opset < 5 => {
                rw.drop_attrs(&["consumed_inputs"]);
                let Some(shape) = rw.take_ints("shape")? else {
                    return Err(rw.err("expected attribute 'shape' (opset < 5), found none"));
                };
                rw.set_input(1, Some(("shape", ints_1d(shape))));
            }
            "ReduceMean" if opset < 18 => {
                if let Some(axes) = rw.take_ints("axes")? {
                    rw.set_input(1, Some(("axes", ints_1d(axes))));
                }
            }
            "Dropout" if opset < 12 => {
                rw.drop_attrs(&["is_test", "consumed_inputs"]);
                let ratio = rw.take_float("ratio")?;
                rw.set_input(1, ratio.map(|v| ("ratio", scalar_f32(v))));
            }
            "BatchNormalization" => rw.drop_attrs(&["spatial", "is_test", "consumed_inputs"]),
            "Gemm" if opset < 7 => rw.drop_attrs(&["broadcast"]),
            "Add" | "Mul" | "Sub" | "Div" if opset < 7 => {
                rw.drop_attrs(&["consumed_inputs"]);
                legacy_broadcast(&mut rw, &ranks, &init_index, &graph.initializers)?;
            }
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                rw.node
                    .attributes
                    .entry("axis".into())
                    .or_insert(Attribute::Int(if opset < 13 { 1 } else { -1 }));
            }
            _ => {}
        }
    }
    graph.initializers.extend(new_inits);
    Ok(())
}

/// The rank of every value whose rank the file states (declared shapes, initializers).
fn known_ranks(g: &OnnxGraph) -> HashMap<String, usize> {
    let mut r = HashMap::new();
    for v in g.inputs.iter().chain(&g.outputs).chain(&g.value_info) {
        if let Some(s) = &v.shape {
            r.insert(v.name.clone(), s.len());
        }
    }
    for t in &g.initializers {
        r.insert(t.name.clone(), t.dims.len());
    }
    r
}

/// Opset < 7 `broadcast`/`axis` on Add/Mul/Sub/Div. Without `axis` the old rule is suffix
/// alignment, which is numpy's. With `axis`, B's dims line up with A's starting at `axis`;
/// that is numpy-compatible when B ends at A's last dim or B is all ones. When B is an
/// initializer and A's rank is known, B is reshaped (trailing 1s) into a new initializer;
/// otherwise the node is refused rather than silently computing something else.
fn legacy_broadcast(
    rw: &mut Rewriter<'_>,
    ranks: &HashMap<String, usize>,
    init_index: &HashMap<String, usize>,
    inits: &[TensorData],
) -> Result<(), Error> {
    let broadcast = match rw.node.attributes.remove("broadcast") {
        None => 0,
        Some(Attribute::Int(b)) => b,
        Some(other) => {
            return Err(rw.err(format!(
                "attribute 'broadcast' must be an int, found {other:?}"
            )))
        }
    };
    let axis = match rw.node.attributes.remove("axis") {
        None => None,
        Some(Attribute::Int(a)) => Some(a),
        Some(other) => {
            return Err(rw.err(format!("attribute 'axis' must be an int, found {other:?}")))
        }
    };
    let (Some(axis), true) = (axis, broadcast != 0) else {
        return Ok(());
    };
    let a = rw.node.inputs.first().cloned().unwrap_or_default();
    let b = rw.node.inputs.get(1).cloned().unwrap_or_default();
    let b_init = init_index.get(&b).and_then(|i| inits.get(*i));
    if let Some(t) = b_init {
        if t.dims.iter().all(|d| *d == 1) {
            return Ok(());
        }
    }
    let (Some(&ra), Some(&rb)) = (ranks.get(&a), ranks.get(&b)) else {
        return Err(rw.unsupported(format!(
            "legacy broadcast=1 with axis={axis} needs the ranks of '{a}' and '{b}', which the file does not declare"
        )));
    };
    let axis_n = if axis < 0 { axis + ra as i64 } else { axis };
    if axis_n < 0 || axis_n as usize + rb > ra {
        return Err(rw.err(format!(
            "legacy broadcast axis={axis} does not fit input ranks {ra} ('{a}') and {rb} ('{b}')"
        )));
    }
    let trailing = ra - axis_n as usize - rb;
    if trailing == 0 {
        return Ok(());
    }
    let Some(t) = b_init else {
        return Err(rw.unsupported(format!(
            "legacy broadcast=1 with axis={axis} aligns '{b}' (rank {rb}) {trailing} dim(s) before the end of '{a}' (rank {ra}), \
             which numpy broadcasting cannot express, and '{b}' is not an initializer that could be reshaped"
        )));
    };
    let mut dims = t.dims.clone();
    dims.extend(std::iter::repeat_n(1, trailing));
    rw.set_input(1, Some(("B", (dims, t.values.clone()))));
    Ok(())
}

fn scalar_f32(v: f32) -> (Vec<usize>, TensorValues) {
    (vec![], TensorValues::F32(vec![v]))
}

fn ints_1d(v: Vec<i64>) -> (Vec<usize>, TensorValues) {
    (vec![v.len()], TensorValues::I64(v))
}

struct Rewriter<'a> {
    node: &'a mut OnnxNode,
    new_inits: &'a mut Vec<TensorData>,
    label: &'a str,
}

impl Rewriter<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Node {
            path: self.label.to_string(),
            node: self.node.name.clone(),
            op_type: self.node.op_type.clone(),
            message: message.into(),
        }
    }

    fn unsupported(&self, message: impl Into<String>) -> Error {
        Error::UnsupportedNode {
            path: self.label.to_string(),
            node: self.node.name.clone(),
            op_type: self.node.op_type.clone(),
            message: message.into(),
        }
    }

    fn drop_attrs(&mut self, names: &[&str]) {
        for n in names {
            self.node.attributes.remove(*n);
        }
    }

    fn take_float(&mut self, name: &str) -> Result<Option<f32>, Error> {
        match self.node.attributes.remove(name) {
            None => Ok(None),
            Some(Attribute::Float(f)) => Ok(Some(f)),
            Some(Attribute::Int(i)) => Ok(Some(i as f32)),
            Some(other) => Err(self.err(format!(
                "attribute '{name}' must be a float, found {other:?}"
            ))),
        }
    }

    fn take_ints(&mut self, name: &str) -> Result<Option<Vec<i64>>, Error> {
        match self.node.attributes.remove(name) {
            None => Ok(None),
            Some(Attribute::Ints(v)) => Ok(Some(v)),
            Some(Attribute::Int(i)) => Ok(Some(vec![i])),
            Some(other) => Err(self.err(format!(
                "attribute '{name}' must be a list of ints, found {other:?}"
            ))),
        }
    }

    /// Puts a new constant at input `index` (padding skipped inputs with `""`), or, for
    /// `None`, leaves that input omitted. Trailing omitted inputs are trimmed.
    fn set_input(&mut self, index: usize, value: Option<(&str, (Vec<usize>, TensorValues))>) {
        let inputs = &mut self.node.inputs;
        if inputs.len() <= index {
            inputs.resize(index + 1, String::new());
        }
        if let Some((attr, (dims, values))) = value {
            let name = format!("{}::{attr}", self.node.name);
            self.new_inits.push(TensorData {
                name: name.clone(),
                dims,
                values,
            });
            if let Some(slot) = inputs.get_mut(index) {
                *slot = name;
            }
        }
        while inputs.last().is_some_and(|s| s.is_empty()) {
            inputs.pop();
        }
    }
}

/// The inverse of [`normalize`] for a target opset: constant inputs that older opsets take as
/// attributes are moved back into attributes. Used by the writer so that a model held in the
/// newest form is valid for its `opset`. Inputs that are not initializers are left alone
/// (such a model cannot be expressed at that opset; the writer does not invent one).
pub fn denormalize(model: &OnnxModel) -> OnnxModel {
    let mut out = model.clone();
    let opset = out.opset;
    let inits: HashMap<String, TensorData> = model
        .graph
        .initializers
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let mut moved: HashSet<String> = HashSet::new();
    for node in out.graph.nodes.iter_mut() {
        if !node.domain.is_empty() {
            continue;
        }
        // (input index, attribute name, as float scalar?)
        let plan: &[(usize, &str, bool)] = match node.op_type.as_str() {
            "Clip" if opset < 11 => &[(1, "min", true), (2, "max", true)],
            "Squeeze" | "Unsqueeze" if opset < 13 => &[(1, "axes", false)],
            "Pad" if opset < 11 => &[(1, "pads", false), (2, "value", true)],
            "Slice" if opset < 10 => {
                &[(1, "starts", false), (2, "ends", false), (3, "axes", false)]
            }
            "Reshape" if opset < 5 => &[(1, "shape", false)],
            "ReduceMean" if opset < 18 => &[(1, "axes", false)],
            "Dropout" if opset < 12 => &[(1, "ratio", true)],
            _ => &[],
        };
        if plan.is_empty() {
            continue;
        }
        if node.inputs.len() > plan.len() + 1 {
            continue;
        }
        let mut attrs = Vec::new();
        let mut names = Vec::new();
        let mut ok = true;
        for (i, attr, float) in plan {
            let Some(name) = node.inputs.get(*i).filter(|n| !n.is_empty()) else {
                continue;
            };
            let value = inits.get(name).and_then(|t| match (&t.values, float) {
                (TensorValues::F32(v), true) if v.len() == 1 => {
                    v.first().map(|x| Attribute::Float(*x))
                }
                (TensorValues::F64(v), true) if v.len() == 1 => {
                    v.first().map(|x| Attribute::Float(*x as f32))
                }
                (TensorValues::I64(v), false) => Some(Attribute::Ints(v.clone())),
                (TensorValues::I32(v), false) => {
                    Some(Attribute::Ints(v.iter().map(|x| *x as i64).collect()))
                }
                _ => None,
            });
            match value {
                Some(v) => {
                    attrs.push(((*attr).to_string(), v));
                    names.push(name.clone());
                }
                None => ok = false,
            }
        }
        if !ok {
            // Not a constant of the expected kind: this node has no form at `opset`; leave it.
            continue;
        }
        node.attributes.extend(attrs);
        moved.extend(names);
        node.inputs.truncate(1);
    }
    // Drop moved constants nothing else reads.
    let still_used: HashSet<&str> = out
        .graph
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(|s| s.as_str()))
        .chain(out.graph.outputs.iter().map(|v| v.name.as_str()))
        .collect();
    let keep: Vec<bool> = out
        .graph
        .initializers
        .iter()
        .map(|t| !moved.contains(&t.name) || still_used.contains(t.name.as_str()))
        .collect();
    let mut it = keep.iter();
    out.graph
        .initializers
        .retain(|_| it.next().copied().unwrap_or(true));
    out
}
