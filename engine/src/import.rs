//! ONNX model ([`onnx_import::OnnxModel`]) → engine IR ([`crate::ir::Graph`]).
//!
//! Attributes are parsed here, once, with the ONNX defaults, so nothing downstream ever reads
//! an attribute map. Every node the engine cannot run is collected and reported together in a
//! single [`Error::Unsupported`], so a user learns the whole list at once instead of one node
//! per attempt. Structural problems (dangling names, duplicate producers, cycles, graph outputs
//! nothing defines) are [`Error::Model`] errors that name the nodes and values involved.
//!
//! Before [`crate::shape::bind`] runs, conv/pool attributes are kept as written: `strides`,
//! `dilations` and `pads` may be empty (meaning the ONNX defaults: all ones / all zeros) and
//! `auto_pad` may be set. `bind` resolves them into a canonical explicit form.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, IxDyn};
use onnx_import::{Attribute, DimDecl, ElemType, OnnxModel, OnnxNode, TensorData, TensorValues};

use crate::error::{Error, Result, UnsupportedNode};
use crate::ir::{
    AutoPad, ConvAttrs, Dim, Graph, Node, Op, OriginNode, PadMode, PoolAttrs, ValueId,
};
use crate::tensor::{DType, Tensor};

/// Converts an imported ONNX model into the engine's IR graph.
///
/// Nodes come out topologically sorted (stable: file order is kept where dependencies allow),
/// initializers become `graph.constants`, and unknown dimensions of inputs become symbols named
/// `unk_{input}_{axis}` so that [`crate::shape::bind`] can report them by name.
pub fn graph_from_onnx(model: &OnnxModel) -> Result<Graph> {
    convert(model, model.graph.initializers.iter().map(Cow::Borrowed))
}

/// [`graph_from_onnx`] consuming the model: initializer values move into the graph instead of
/// being copied, so a large model's weights are not held twice while it is imported.
pub fn graph_from_onnx_owned(mut model: OnnxModel) -> Result<Graph> {
    let initializers = std::mem::take(&mut model.graph.initializers);
    convert(&model, initializers.into_iter().map(Cow::Owned))
}

fn convert<'a>(
    model: &OnnxModel,
    initializers: impl Iterator<Item = Cow<'a, TensorData>>,
) -> Result<Graph> {
    let g = &model.graph;
    let mut graph = Graph {
        name: g.name.clone(),
        ..Graph::default()
    };
    let mut by_name: HashMap<String, ValueId> = HashMap::new();

    // Initializers first: an input that is also an initializer is a constant here (the engine
    // does not support overriding initializers at run time).
    for init in initializers {
        if by_name.contains_key(&init.name) {
            return Err(Error::Model(format!(
                "initializer '{}' is defined twice",
                init.name
            )));
        }
        let name = init.name.clone();
        let tensor = match init {
            Cow::Borrowed(t) => tensor_from_data(t)?,
            Cow::Owned(t) => tensor_from_owned_data(t)?,
        };
        let id = graph.add_constant(name.clone(), tensor);
        by_name.insert(name, id);
    }

    for decl in &g.inputs {
        if by_name.contains_key(&decl.name) {
            if graph.is_constant(by_name[&decl.name]) {
                continue;
            }
            return Err(Error::Model(format!(
                "graph input '{}' is declared twice",
                decl.name
            )));
        }
        let dtype = match decl.elem_type {
            None => None,
            Some(e) => Some(dtype_of(e).ok_or_else(|| Error::Input {
                name: decl.name.clone(),
                message: format!("element type {} is not supported (the engine computes in float32/float64/int64/int32/bool/uint8)", elem_name(e)),
            })?),
        };
        let shape = decl.shape.as_ref().map(|dims| {
            dims.iter()
                .enumerate()
                .map(|(axis, d)| match d {
                    DimDecl::Fixed(n) => Dim::Fixed(*n),
                    DimDecl::Symbolic(s) => Dim::Symbol(s.clone()),
                    DimDecl::Unknown => Dim::Symbol(format!("unk_{}_{}", decl.name, axis)),
                })
                .collect()
        });
        let id = graph.add_value(decl.name.clone(), dtype, shape);
        by_name.insert(decl.name.clone(), id);
        graph.inputs.push(id);
    }

    // Parse every node's op, collecting all unsupported nodes before failing.
    let mut unsupported = Vec::new();
    // Per ONNX node: Some(op) for a regular node, None for a `Constant` turned into a constant.
    let mut ops: Vec<Option<Op>> = Vec::with_capacity(g.nodes.len());
    let mut constant_values: Vec<Option<Tensor>> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let domain_ok = node.domain.is_empty() || node.domain == "ai.onnx";
        if !domain_ok {
            unsupported.push(unsupported_node(
                model,
                node,
                Some(format!(
                    "operators of domain '{}' are not supported",
                    node.domain
                )),
            ));
            ops.push(None);
            constant_values.push(None);
            continue;
        }
        if node.op_type == "Constant" {
            match constant_node_value(node) {
                Ok(t) => constant_values.push(Some(t)),
                Err(Fail::Unsupported(r)) => {
                    unsupported.push(unsupported_node(model, node, Some(r)));
                    constant_values.push(None);
                }
                Err(Fail::Invalid(m)) => return Err(Error::node(&node.name, &node.op_type, m)),
            }
            ops.push(None);
            continue;
        }
        constant_values.push(None);
        match parse_op(model, node) {
            Ok(op) => ops.push(Some(op)),
            Err(Fail::Unsupported(r)) => {
                unsupported.push(unsupported_node(
                    model,
                    node,
                    if r.is_empty() { None } else { Some(r) },
                ));
                ops.push(None);
            }
            Err(Fail::Invalid(m)) => return Err(Error::node(&node.name, &node.op_type, m)),
        }
    }
    if !unsupported.is_empty() {
        return Err(Error::Unsupported(unsupported));
    }

    // Allocate every node output before resolving inputs, so file order does not matter.
    let mut producer: HashMap<String, usize> = HashMap::new();
    let mut node_outputs: Vec<Vec<ValueId>> = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let keep = node
            .outputs
            .iter()
            .rposition(|o| !o.is_empty())
            .map_or(0, |p| p + 1);
        let mut outs = Vec::with_capacity(keep);
        for (k, out) in node.outputs[..keep].iter().enumerate() {
            if out.is_empty() {
                // An omitted optional output in the middle: give it a private, unnamed value.
                outs.push(graph.add_value(format!("{}:unused_output_{k}", node.name), None, None));
                continue;
            }
            if let Some(&other) = producer.get(out) {
                return Err(Error::Model(format!(
                    "value '{out}' is produced by two nodes: '{}' ({}) and '{}' ({})",
                    g.nodes[other].name, g.nodes[other].op_type, node.name, node.op_type
                )));
            }
            if let Some(&id) = by_name.get(out) {
                let what = if graph.is_constant(id) {
                    "an initializer"
                } else {
                    "a graph input"
                };
                return Err(Error::Model(format!(
                    "node '{}' ({}) outputs '{out}', which is already {what}",
                    node.name, node.op_type
                )));
            }
            producer.insert(out.clone(), i);
            let id = match &constant_values[i] {
                Some(t) => graph.add_constant(out.clone(), t.clone()),
                None => graph.add_value(out.clone(), None, None),
            };
            by_name.insert(out.clone(), id);
            outs.push(id);
        }
        node_outputs.push(outs);
    }

    // Resolve inputs; collect every dangling name so one error lists them all.
    let mut dangling = Vec::new();
    let mut node_inputs: Vec<Vec<Option<ValueId>>> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let mut ins = Vec::with_capacity(node.inputs.len());
        for name in &node.inputs {
            if name.is_empty() {
                ins.push(None);
            } else if let Some(&id) = by_name.get(name) {
                ins.push(Some(id));
            } else {
                dangling.push(format!(
                    "'{}' (input of node '{}' ({}))",
                    name, node.name, node.op_type
                ));
                ins.push(None);
            }
        }
        node_inputs.push(ins);
    }
    if !dangling.is_empty() {
        return Err(Error::Model(format!(
            "{} value(s) are read but never defined by a graph input, initializer or node: {}",
            dangling.len(),
            dangling.join(", ")
        )));
    }

    let order = topo_order(g, &producer)?;
    for i in order {
        let Some(op) = ops[i].take() else { continue };
        let node = &g.nodes[i];
        graph.nodes.push(Node {
            name: node.name.clone(),
            op,
            inputs: std::mem::take(&mut node_inputs[i]),
            outputs: std::mem::take(&mut node_outputs[i]),
            origin: vec![OriginNode {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
            }],
        });
    }

    if g.outputs.is_empty() {
        return Err(Error::Model(
            "the graph has no outputs (nothing to compute)".into(),
        ));
    }
    for decl in &g.outputs {
        let Some(&id) = by_name.get(&decl.name) else {
            return Err(Error::Model(format!(
                "graph output '{}' is not produced by any node, input or initializer",
                decl.name
            )));
        };
        if graph.outputs.contains(&id) {
            return Err(Error::Model(format!(
                "graph output '{}' is listed twice",
                decl.name
            )));
        }
        // Declared element types help before shapes are bound; bind recomputes them anyway.
        let v = graph.value_mut(id);
        if v.dtype.is_none() {
            v.dtype = decl.elem_type.and_then(dtype_of);
        }
        graph.outputs.push(id);
    }
    Ok(graph)
}

/// Kahn's algorithm, always taking the lowest-index ready node so file order is preserved.
fn topo_order(g: &onnx_import::OnnxGraph, producer: &HashMap<String, usize>) -> Result<Vec<usize>> {
    let n = g.nodes.len();
    let mut indegree = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.nodes.iter().enumerate() {
        let mut seen = HashSet::new();
        for name in node.inputs.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(name) {
                if seen.insert(p) {
                    indegree[i] += 1;
                    users[p].push(i);
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < n {
        let stuck: Vec<String> = (0..n)
            .filter(|&i| indegree[i] > 0)
            .map(|i| format!("'{}' ({})", g.nodes[i].name, g.nodes[i].op_type))
            .collect();
        return Err(Error::Model(format!(
            "the graph has a cycle through node(s) {}",
            stuck.join(", ")
        )));
    }
    Ok(order)
}

/// The engine's element type for an ONNX one, when the engine computes with it.
pub fn dtype_of(e: ElemType) -> Option<DType> {
    match e {
        ElemType::Float => Some(DType::F32),
        ElemType::Double => Some(DType::F64),
        ElemType::Int64 => Some(DType::I64),
        ElemType::Int32 => Some(DType::I32),
        ElemType::Bool => Some(DType::Bool),
        ElemType::Uint8 => Some(DType::U8),
        _ => None,
    }
}

fn elem_name(e: ElemType) -> String {
    match e {
        ElemType::Float => "float32".into(),
        ElemType::Double => "float64".into(),
        ElemType::Int64 => "int64".into(),
        ElemType::Int32 => "int32".into(),
        ElemType::Bool => "bool".into(),
        ElemType::Uint8 => "uint8".into(),
        ElemType::Int8 => "int8".into(),
        ElemType::Int16 => "int16".into(),
        ElemType::Uint16 => "uint16".into(),
        ElemType::Float16 => "float16".into(),
        ElemType::String => "string".into(),
        ElemType::Other(c) => format!("ONNX type code {c}"),
    }
}

/// Converts decoded ONNX tensor data into a [`Tensor`], checking that the element count matches
/// the dimensions. Copies the values; [`tensor_from_owned_data`] moves them.
pub fn tensor_from_data(t: &TensorData) -> Result<Tensor> {
    tensor_from_owned_data(t.clone())
}

/// Converts decoded ONNX tensor data into a [`Tensor`] without copying the values, checking
/// that the element count matches the dimensions.
pub fn tensor_from_owned_data(t: TensorData) -> Result<Tensor> {
    let expected = t.dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(t.values.len()) {
        return Err(Error::Model(format!(
            "tensor '{}' has dims {:?} but {} element(s)",
            t.name,
            t.dims,
            t.values.len()
        )));
    }
    let s = IxDyn(&t.dims);
    let bad = |_| {
        Error::Model(format!(
            "tensor '{}': cannot shape its elements as {:?}",
            t.name, t.dims
        ))
    };
    Ok(match t.values {
        TensorValues::F32(v) => Tensor::F32(ArrayD::from_shape_vec(s, v).map_err(bad)?),
        TensorValues::F64(v) => Tensor::F64(ArrayD::from_shape_vec(s, v).map_err(bad)?),
        TensorValues::I64(v) => Tensor::I64(ArrayD::from_shape_vec(s, v).map_err(bad)?),
        TensorValues::I32(v) => Tensor::I32(ArrayD::from_shape_vec(s, v).map_err(bad)?),
        TensorValues::Bool(v) => Tensor::Bool(ArrayD::from_shape_vec(s, v).map_err(bad)?),
        TensorValues::U8(v) => Tensor::U8(ArrayD::from_shape_vec(s, v).map_err(bad)?),
    })
}

/// Why a node could not be converted.
enum Fail {
    /// The op or one of its attribute values is valid ONNX the engine does not run (listed).
    Unsupported(String),
    /// The node is malformed (wrong attribute type, missing required attribute...).
    Invalid(String),
}

fn unsupported_node(model: &OnnxModel, node: &OnnxNode, reason: Option<String>) -> UnsupportedNode {
    UnsupportedNode {
        name: node.name.clone(),
        op_type: node.op_type.clone(),
        domain: node.domain.clone(),
        opset: model.opset,
        reason,
    }
}

/// Typed attribute access with ONNX-style error messages.
struct Attrs<'a>(&'a OnnxNode);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&Attribute> {
        self.0.attributes.get(name)
    }

    fn wrong(&self, name: &str, want: &str) -> Fail {
        let got = match self.get(name) {
            Some(Attribute::Float(_)) => "a float",
            Some(Attribute::Int(_)) => "an int",
            Some(Attribute::String(_)) => "a string",
            Some(Attribute::Tensor(_)) => "a tensor",
            Some(Attribute::Floats(_)) => "a list of floats",
            Some(Attribute::Ints(_)) => "a list of ints",
            Some(Attribute::Strings(_)) => "a list of strings",
            Some(Attribute::Unsupported(k)) => {
                return Fail::Unsupported(format!("attribute '{name}' has kind {k}"))
            }
            None => "nothing",
        };
        Fail::Invalid(format!("attribute '{name}' should be {want}, got {got}"))
    }

    fn opt_int(&self, name: &str) -> Result<Option<i64>, Fail> {
        match self.get(name) {
            None => Ok(None),
            Some(Attribute::Int(v)) => Ok(Some(*v)),
            Some(_) => Err(self.wrong(name, "an int")),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64, Fail> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    fn req_int(&self, name: &str) -> Result<i64, Fail> {
        self.opt_int(name)?
            .ok_or_else(|| Fail::Invalid(format!("required attribute '{name}' is missing")))
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, Fail> {
        match self.int(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(Fail::Invalid(format!(
                "attribute '{name}' must be 0 or 1, got {v}"
            ))),
        }
    }

    fn float(&self, name: &str, default: f32) -> Result<f32, Fail> {
        match self.get(name) {
            None => Ok(default),
            Some(Attribute::Float(v)) => Ok(*v),
            Some(_) => Err(self.wrong(name, "a float")),
        }
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, Fail> {
        match self.get(name) {
            None => Ok(None),
            Some(Attribute::Ints(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong(name, "a list of ints")),
        }
    }

    /// A list of sizes that must each be at least `min`.
    fn sizes(&self, name: &str, min: i64) -> Result<Option<Vec<usize>>, Fail> {
        let Some(v) = self.ints(name)? else {
            return Ok(None);
        };
        v.iter()
            .map(|&x| {
                if x < min {
                    Err(Fail::Invalid(format!(
                        "attribute '{name}' must hold values >= {min}, got {v:?}"
                    )))
                } else {
                    usize::try_from(x).map_err(|_| {
                        Fail::Invalid(format!("attribute '{name}' value {x} is too large"))
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn string(&self, name: &str) -> Result<Option<&str>, Fail> {
        match self.get(name) {
            None => Ok(None),
            Some(Attribute::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.wrong(name, "a string")),
        }
    }

    fn tensor(&self, name: &str) -> Result<Option<&TensorData>, Fail> {
        match self.get(name) {
            None => Ok(None),
            Some(Attribute::Tensor(t)) => Ok(Some(t)),
            Some(_) => Err(self.wrong(name, "a tensor")),
        }
    }
}

fn parse_auto_pad(a: &Attrs) -> Result<AutoPad, Fail> {
    match a.string("auto_pad")? {
        None | Some("NOTSET") | Some("") => Ok(AutoPad::NotSet),
        Some("SAME_UPPER") => Ok(AutoPad::SameUpper),
        Some("SAME_LOWER") => Ok(AutoPad::SameLower),
        Some("VALID") => Ok(AutoPad::Valid),
        Some(other) => Err(Fail::Invalid(format!(
            "attribute 'auto_pad' must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '{other}'"
        ))),
    }
}

/// Checks that explicit pads come as begin/end pairs and that spatial attributes agree in length.
fn check_spatial(
    kernel: Option<&[usize]>,
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
) -> Result<(), Fail> {
    if !pads.len().is_multiple_of(2) {
        return Err(Fail::Invalid(format!(
            "attribute 'pads' must have an even length (begins then ends), got {pads:?}"
        )));
    }
    let lens = [
        kernel.map(|k| ("kernel_shape", k.len())),
        (!strides.is_empty()).then_some(("strides", strides.len())),
        (!pads.is_empty()).then_some(("pads (halved)", pads.len() / 2)),
        (!dilations.is_empty()).then_some(("dilations", dilations.len())),
    ];
    let present: Vec<(&str, usize)> = lens.into_iter().flatten().collect();
    if let Some(&(first, n)) = present.first() {
        if let Some(&(other, m)) = present.iter().find(|(_, m)| *m != n) {
            return Err(Fail::Invalid(format!(
                "spatial attributes disagree in rank: {first} has {n} entries but {other} has {m}"
            )));
        }
    }
    Ok(())
}

fn parse_conv(a: &Attrs) -> Result<ConvAttrs, Fail> {
    let kernel_shape = a.sizes("kernel_shape", 1)?;
    let strides = a.sizes("strides", 1)?.unwrap_or_default();
    let pads = a.sizes("pads", 0)?.unwrap_or_default();
    let dilations = a.sizes("dilations", 1)?.unwrap_or_default();
    let group = a.int("group", 1)?;
    if group < 1 {
        return Err(Fail::Invalid(format!(
            "attribute 'group' must be >= 1, got {group}"
        )));
    }
    check_spatial(kernel_shape.as_deref(), &strides, &pads, &dilations)?;
    Ok(ConvAttrs {
        kernel_shape,
        strides,
        pads,
        dilations,
        group: group as usize,
        auto_pad: parse_auto_pad(a)?,
    })
}

fn parse_pool(a: &Attrs, node: &OnnxNode, is_max: bool) -> Result<PoolAttrs, Fail> {
    let kernel_shape = a
        .sizes("kernel_shape", 1)?
        .ok_or_else(|| Fail::Invalid("required attribute 'kernel_shape' is missing".into()))?;
    let strides = a.sizes("strides", 1)?.unwrap_or_default();
    let pads = a.sizes("pads", 0)?.unwrap_or_default();
    let dilations = a.sizes("dilations", 1)?.unwrap_or_default();
    check_spatial(Some(&kernel_shape), &strides, &pads, &dilations)?;
    if is_max {
        if a.int("storage_order", 0)? != 0 {
            return Err(Fail::Unsupported(
                "storage_order=1 (column-major indices) is not supported".into(),
            ));
        }
        if node.outputs.get(1).is_some_and(|o| !o.is_empty()) {
            return Err(Fail::Unsupported(
                "the second output (Indices) is not supported".into(),
            ));
        }
    }
    Ok(PoolAttrs {
        kernel_shape,
        strides,
        pads,
        dilations,
        ceil_mode: a.bool("ceil_mode", false)?,
        auto_pad: parse_auto_pad(a)?,
        count_include_pad: if is_max {
            false
        } else {
            a.bool("count_include_pad", false)?
        },
    })
}

/// ONNX `TensorProto.DataType` code → engine dtype, or why not.
fn cast_target(code: i64) -> Result<DType, Fail> {
    let name = match code {
        1 => return Ok(DType::F32),
        2 => return Ok(DType::U8),
        6 => return Ok(DType::I32),
        7 => return Ok(DType::I64),
        9 => return Ok(DType::Bool),
        11 => return Ok(DType::F64),
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        8 => "string",
        10 => "float16",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17..=25 => "an 8-bit/4-bit float or int type",
        other => {
            return Err(Fail::Invalid(format!(
                "attribute 'to' has unknown type code {other}"
            )))
        }
    };
    Err(Fail::Unsupported(format!(
        "cast to {name} (type code {code}) is not supported"
    )))
}

fn tensor_attr(t: &TensorData) -> Result<Tensor, Fail> {
    tensor_from_data(t).map_err(|e| Fail::Invalid(e.to_string()))
}

/// The tensor a leftover `Constant` node stands for (its `value*` attribute).
fn constant_node_value(node: &OnnxNode) -> Result<Tensor, Fail> {
    let a = Attrs(node);
    if let Some(t) = a.tensor("value")? {
        return tensor_attr(t);
    }
    match (
        a.get("value_float"),
        a.get("value_floats"),
        a.get("value_int"),
        a.get("value_ints"),
    ) {
        (Some(Attribute::Float(v)), ..) => Ok(Tensor::scalar_f32(*v)),
        (_, Some(Attribute::Floats(v)), ..) => Ok(Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.clone())
                .map_err(|e| Fail::Invalid(e.to_string()))?,
        )),
        (_, _, Some(Attribute::Int(v)), _) => Ok(Tensor::I64(ArrayD::from_elem(IxDyn(&[]), *v))),
        (_, _, _, Some(Attribute::Ints(v))) => Ok(Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.clone())
                .map_err(|e| Fail::Invalid(e.to_string()))?,
        )),
        _ => {
            if node
                .attributes
                .keys()
                .any(|k| k.starts_with("value_string") || k == "sparse_value")
            {
                Err(Fail::Unsupported(
                    "string and sparse constants are not supported".into(),
                ))
            } else {
                Err(Fail::Invalid("Constant has no value attribute".into()))
            }
        }
    }
}

/// Parses one default-domain node into a typed op.
fn parse_op(model: &OnnxModel, node: &OnnxNode) -> Result<Op, Fail> {
    let a = Attrs(node);
    Ok(match node.op_type.as_str() {
        "Conv" => Op::Conv(parse_conv(&a)?),
        "BatchNormalization" => {
            if a.int("training_mode", 0)? != 0 {
                return Err(Fail::Unsupported(
                    "training_mode=1 is not supported (inference only)".into(),
                ));
            }
            if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err(Fail::Unsupported(
                    "running mean/variance outputs (training) are not supported".into(),
                ));
            }
            Op::BatchNormalization {
                epsilon: a.float("epsilon", 1e-5)?,
            }
        }
        "Relu" => Op::Relu,
        "LeakyRelu" => Op::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        },
        "Sigmoid" => Op::Sigmoid,
        "Clip" => Op::Clip,
        "MaxPool" => Op::MaxPool(parse_pool(&a, node, true)?),
        "AveragePool" => Op::AveragePool(parse_pool(&a, node, false)?),
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "LRN" => {
            let size = a.req_int("size")?;
            if size < 1 {
                return Err(Fail::Invalid(format!(
                    "attribute 'size' must be >= 1, got {size}"
                )));
            }
            Op::Lrn {
                size: size as usize,
                alpha: a.float("alpha", 1e-4)?,
                beta: a.float("beta", 0.75)?,
                bias: a.float("bias", 1.0)?,
            }
        }
        "Add" => Op::Add,
        "Sub" => Op::Sub,
        "Mul" => Op::Mul,
        "Div" => Op::Div,
        "Sum" => Op::Sum,
        "Concat" => Op::Concat {
            axis: a.req_int("axis")?,
        },
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.bool("transA", false)?,
            trans_b: a.bool("transB", false)?,
        },
        "MatMul" => Op::MatMul,
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1)?,
        },
        "Reshape" => Op::Reshape {
            allowzero: a.bool("allowzero", false)?,
        },
        "Transpose" => Op::Transpose {
            perm: a.sizes("perm", 0)?,
        },
        "Squeeze" => Op::Squeeze,
        "Unsqueeze" => Op::Unsqueeze,
        "Softmax" => {
            let legacy = model.opset < 13;
            Op::Softmax {
                axis: a.int("axis", if legacy { 1 } else { -1 })?,
                legacy,
            }
        }
        "Identity" => Op::Identity,
        "Dropout" => Op::Dropout,
        "ConstantOfShape" => {
            let value = match a.tensor("value")? {
                Some(t) => {
                    let v = tensor_attr(t)?;
                    if v.len() != 1 {
                        return Err(Fail::Invalid(format!(
                            "attribute 'value' must hold one element, got {}",
                            v.len()
                        )));
                    }
                    v
                }
                None => Tensor::F32(ArrayD::from_elem(IxDyn(&[1]), 0.0)),
            };
            Op::ConstantOfShape { value }
        }
        "Shape" => Op::Shape {
            start: a.int("start", 0)?,
            end: a.opt_int("end")?,
        },
        "Gather" => Op::Gather {
            axis: a.int("axis", 0)?,
        },
        "Slice" => Op::Slice,
        "Cast" => Op::Cast {
            to: cast_target(a.req_int("to")?)?,
        },
        "Pad" => {
            let mode = match a.string("mode")? {
                None | Some("constant") => PadMode::Constant,
                Some("reflect") => PadMode::Reflect,
                Some("edge") => PadMode::Edge,
                Some("wrap") => {
                    return Err(Fail::Unsupported("Pad mode 'wrap' is not supported".into()))
                }
                Some(other) => {
                    return Err(Fail::Invalid(format!(
                        "attribute 'mode' has unknown value '{other}'"
                    )))
                }
            };
            Op::Pad { mode }
        }
        "ReduceMean" => Op::ReduceMean {
            keepdims: a.bool("keepdims", true)?,
            noop_with_empty_axes: a.bool("noop_with_empty_axes", false)?,
        },
        _ => return Err(Fail::Unsupported(String::new())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_import::{OnnxGraph, ValueDecl};
    use std::collections::BTreeMap;

    fn node(
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attribute)>,
    ) -> OnnxNode {
        OnnxNode {
            name: name.into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attributes: attrs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn decl(name: &str, dims: Vec<DimDecl>) -> ValueDecl {
        ValueDecl {
            name: name.into(),
            elem_type: Some(ElemType::Float),
            shape: Some(dims),
        }
    }

    fn model(nodes: Vec<OnnxNode>, outputs: &[&str]) -> OnnxModel {
        OnnxModel {
            opset: 13,
            graph: OnnxGraph {
                name: "g".into(),
                inputs: vec![decl(
                    "x",
                    vec![
                        DimDecl::Symbolic("N".into()),
                        DimDecl::Fixed(3),
                        DimDecl::Unknown,
                        DimDecl::Fixed(8),
                    ],
                )],
                outputs: outputs
                    .iter()
                    .map(|o| ValueDecl {
                        name: o.to_string(),
                        elem_type: Some(ElemType::Float),
                        shape: None,
                    })
                    .collect(),
                initializers: vec![TensorData {
                    name: "w".into(),
                    dims: vec![4, 3, 3, 3],
                    values: TensorValues::F32(vec![0.5; 108]),
                }],
                nodes,
                ..OnnxGraph::default()
            },
            ..OnnxModel::default()
        }
    }

    fn only_op(m: &OnnxModel) -> Op {
        let g = graph_from_onnx(m).unwrap();
        g.nodes[0].op.clone()
    }

    #[test]
    fn conv_defaults_and_values() {
        let m = model(vec![node("c", "Conv", &["x", "w"], &["y"], vec![])], &["y"]);
        let g = graph_from_onnx(&m).unwrap();
        assert_eq!(
            g.nodes[0].op,
            Op::Conv(ConvAttrs {
                kernel_shape: None,
                strides: vec![],
                pads: vec![],
                dilations: vec![],
                group: 1,
                auto_pad: AutoPad::NotSet
            })
        );
        assert_eq!(
            g.nodes[0].origin,
            vec![OriginNode {
                name: "c".into(),
                op_type: "Conv".into()
            }]
        );
        assert_eq!(g.inputs.len(), 1);
        let x = g.value(g.inputs[0]);
        assert_eq!(
            x.shape,
            Some(vec![
                Dim::Symbol("N".into()),
                Dim::Fixed(3),
                Dim::Symbol("unk_x_2".into()),
                Dim::Fixed(8)
            ])
        );
        assert_eq!(x.dtype, Some(DType::F32));
        let w = g.find_value("w").unwrap();
        assert_eq!(g.constants[&w].shape(), &[4, 3, 3, 3]);
        assert_eq!(g.outputs, vec![g.find_value("y").unwrap()]);

        let m = model(
            vec![node(
                "c",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![
                    ("kernel_shape", Attribute::Ints(vec![3, 3])),
                    ("strides", Attribute::Ints(vec![2, 2])),
                    ("pads", Attribute::Ints(vec![1, 1, 0, 0])),
                    ("dilations", Attribute::Ints(vec![1, 2])),
                    ("group", Attribute::Int(1)),
                    ("auto_pad", Attribute::String("SAME_LOWER".into())),
                ],
            )],
            &["y"],
        );
        assert_eq!(
            only_op(&m),
            Op::Conv(ConvAttrs {
                kernel_shape: Some(vec![3, 3]),
                strides: vec![2, 2],
                pads: vec![1, 1, 0, 0],
                dilations: vec![1, 2],
                group: 1,
                auto_pad: AutoPad::SameLower
            })
        );
    }

    #[test]
    fn other_attribute_defaults() {
        let one = |op: &str, attrs: Vec<(&str, Attribute)>| {
            only_op(&model(vec![node("n", op, &["x"], &["y"], attrs)], &["y"]))
        };
        assert_eq!(
            one(
                "MaxPool",
                vec![("kernel_shape", Attribute::Ints(vec![2, 2]))]
            ),
            Op::MaxPool(PoolAttrs {
                kernel_shape: vec![2, 2],
                strides: vec![],
                pads: vec![],
                dilations: vec![],
                ceil_mode: false,
                auto_pad: AutoPad::NotSet,
                count_include_pad: false
            })
        );
        match one(
            "AveragePool",
            vec![
                ("kernel_shape", Attribute::Ints(vec![3])),
                ("ceil_mode", Attribute::Int(1)),
                ("count_include_pad", Attribute::Int(1)),
            ],
        ) {
            Op::AveragePool(p) => assert!(p.ceil_mode && p.count_include_pad),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            one("LRN", vec![("size", Attribute::Int(5))]),
            Op::Lrn {
                size: 5,
                alpha: 1e-4,
                beta: 0.75,
                bias: 1.0
            }
        );
        assert_eq!(
            one("Gemm", vec![("transB", Attribute::Int(1))]),
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true
            }
        );
        assert_eq!(
            one("Cast", vec![("to", Attribute::Int(7))]),
            Op::Cast { to: DType::I64 }
        );
        assert_eq!(
            one("Cast", vec![("to", Attribute::Int(1))]),
            Op::Cast { to: DType::F32 }
        );
        assert_eq!(
            one("ConstantOfShape", vec![]),
            Op::ConstantOfShape {
                value: Tensor::F32(ArrayD::from_elem(IxDyn(&[1]), 0.0))
            }
        );
        assert_eq!(
            one("Shape", vec![]),
            Op::Shape {
                start: 0,
                end: None
            }
        );
        assert_eq!(
            one(
                "Shape",
                vec![("start", Attribute::Int(-2)), ("end", Attribute::Int(3))]
            ),
            Op::Shape {
                start: -2,
                end: Some(3)
            }
        );
        assert_eq!(one("Gather", vec![]), Op::Gather { axis: 0 });
        assert_eq!(one("Flatten", vec![]), Op::Flatten { axis: 1 });
        assert_eq!(
            one("Softmax", vec![("axis", Attribute::Int(1))]),
            Op::Softmax {
                axis: 1,
                legacy: false
            }
        );
        assert_eq!(
            one(
                "Transpose",
                vec![("perm", Attribute::Ints(vec![0, 2, 3, 1]))]
            ),
            Op::Transpose {
                perm: Some(vec![0, 2, 3, 1])
            }
        );
        assert_eq!(one("Transpose", vec![]), Op::Transpose { perm: None });
        assert_eq!(one("Reshape", vec![]), Op::Reshape { allowzero: false });
        assert_eq!(
            one("Pad", vec![]),
            Op::Pad {
                mode: PadMode::Constant
            }
        );
        assert_eq!(
            one("Pad", vec![("mode", Attribute::String("reflect".into()))]),
            Op::Pad {
                mode: PadMode::Reflect
            }
        );
        assert_eq!(
            one("ReduceMean", vec![]),
            Op::ReduceMean {
                keepdims: true,
                noop_with_empty_axes: false
            }
        );
        assert_eq!(one("LeakyRelu", vec![]), Op::LeakyRelu { alpha: 0.01 });
        assert_eq!(
            one("BatchNormalization", vec![]),
            Op::BatchNormalization { epsilon: 1e-5 }
        );
        assert_eq!(one("Dropout", vec![]), Op::Dropout);

        let mut m = model(vec![node("s", "Softmax", &["x"], &["y"], vec![])], &["y"]);
        m.opset = 11;
        assert_eq!(
            only_op(&m),
            Op::Softmax {
                axis: 1,
                legacy: true
            }
        );
    }

    #[test]
    fn constant_node_becomes_constant() {
        let m = model(
            vec![
                node(
                    "k",
                    "Constant",
                    &[],
                    &["c"],
                    vec![("value_ints", Attribute::Ints(vec![1, -1]))],
                ),
                node("r", "Reshape", &["x", "c"], &["y"], vec![]),
            ],
            &["y"],
        );
        let g = graph_from_onnx(&m).unwrap();
        assert_eq!(g.nodes.len(), 1);
        let c = g.find_value("c").unwrap();
        assert_eq!(g.constants[&c].to_i64_vec(), Some(vec![1, -1]));
        assert_eq!(g.nodes[0].inputs, vec![g.find_value("x"), Some(c)]);
    }

    #[test]
    fn all_unsupported_nodes_listed_together() {
        let mut custom = node("m", "MyOp", &["x"], &["a"], vec![]);
        custom.domain = "com.example".into();
        let m = model(
            vec![
                node(
                    "p",
                    "Pad",
                    &["x"],
                    &["b"],
                    vec![("mode", Attribute::String("wrap".into()))],
                ),
                node(
                    "c",
                    "Cast",
                    &["x"],
                    &["d"],
                    vec![("to", Attribute::Int(10))],
                ),
                node(
                    "mp",
                    "MaxPool",
                    &["x"],
                    &["e", "idx"],
                    vec![("kernel_shape", Attribute::Ints(vec![2, 2]))],
                ),
                node("u", "Upsample", &["x"], &["f"], vec![]),
                custom,
                node("ok", "Relu", &["x"], &["g"], vec![]),
                node(
                    "so",
                    "MaxPool",
                    &["x"],
                    &["h"],
                    vec![
                        ("kernel_shape", Attribute::Ints(vec![2])),
                        ("storage_order", Attribute::Int(1)),
                    ],
                ),
                node(
                    "bn",
                    "BatchNormalization",
                    &["x"],
                    &["i"],
                    vec![("training_mode", Attribute::Int(1))],
                ),
            ],
            &["g"],
        );
        match graph_from_onnx(&m) {
            Err(Error::Unsupported(list)) => {
                let names: Vec<&str> = list.iter().map(|u| u.name.as_str()).collect();
                assert_eq!(names, vec!["p", "c", "mp", "u", "m", "so", "bn"]);
                assert!(list[0].reason.as_deref().unwrap().contains("wrap"));
                assert!(list[1].reason.as_deref().unwrap().contains("float16"));
                assert!(list[2].reason.as_deref().unwrap().contains("Indices"));
                assert_eq!(list[3].reason, None);
                assert_eq!(list[3].opset, 13);
                assert_eq!(list[4].domain, "com.example");
                let msg = Error::Unsupported(list).to_string();
                assert!(msg.starts_with("7 unsupported node(s):"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_attribute_is_node_error() {
        let m = model(
            vec![node(
                "c",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![("strides", Attribute::Int(2))],
            )],
            &["y"],
        );
        match graph_from_onnx(&m) {
            Err(Error::Node { node, op, message }) => {
                assert_eq!((node.as_str(), op.as_str()), ("c", "Conv"));
                assert!(message.contains("strides"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let m = model(
            vec![node(
                "c",
                "Conv",
                &["x", "w"],
                &["y"],
                vec![("pads", Attribute::Ints(vec![1, 1, 1]))],
            )],
            &["y"],
        );
        assert!(matches!(graph_from_onnx(&m), Err(Error::Node { .. })));
    }

    #[test]
    fn nodes_are_sorted_topologically() {
        let m = model(
            vec![
                node("b", "Relu", &["t"], &["y"], vec![]),
                node("a", "Sigmoid", &["x"], &["t"], vec![]),
            ],
            &["y"],
        );
        let g = graph_from_onnx(&m).unwrap();
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(g.nodes[1].inputs, vec![Some(g.nodes[0].outputs[0])]);
    }

    fn model_err(m: &OnnxModel) -> String {
        match graph_from_onnx(m) {
            Err(e @ Error::Model(_)) => e.to_string(),
            other => panic!("expected a model error, got {other:?}"),
        }
    }

    #[test]
    fn structural_errors() {
        let cyc = model(
            vec![
                node("a", "Relu", &["x"], &["p"], vec![]),
                node("b", "Add", &["p", "r"], &["q"], vec![]),
                node("c", "Relu", &["q"], &["r"], vec![]),
            ],
            &["q"],
        );
        let msg = model_err(&cyc);
        assert!(
            msg.contains("cycle")
                && msg.contains("'b'")
                && msg.contains("'c'")
                && !msg.contains("'a'"),
            "{msg}"
        );

        let dangling = model(
            vec![node("a", "Add", &["x", "nope"], &["y"], vec![])],
            &["y"],
        );
        let msg = model_err(&dangling);
        assert!(msg.contains("'nope'") && msg.contains("node 'a'"), "{msg}");

        let dup = model(
            vec![
                node("a", "Relu", &["x"], &["y"], vec![]),
                node("b", "Relu", &["x"], &["y"], vec![]),
            ],
            &["y"],
        );
        let msg = model_err(&dup);
        assert!(
            msg.contains("'y'") && msg.contains("'a'") && msg.contains("'b'"),
            "{msg}"
        );

        let clash = model(vec![node("a", "Relu", &["x"], &["w"], vec![])], &["w"]);
        let msg = model_err(&clash);
        assert!(msg.contains("initializer") && msg.contains("'w'"), "{msg}");

        let clash = model(vec![node("a", "Relu", &["x"], &["x"], vec![])], &["x"]);
        assert!(model_err(&clash).contains("graph input"));

        let no_out = model(vec![node("a", "Relu", &["x"], &["y"], vec![])], &["z"]);
        assert!(model_err(&no_out).contains("graph output 'z'"));
    }

    #[test]
    fn omitted_inputs_and_outputs() {
        let m = model(
            vec![
                node("d", "Dropout", &["x", "", ""], &["y", ""], vec![]),
                node("c", "Clip", &["y", "", "w"], &["z"], vec![]),
            ],
            &["z"],
        );
        let g = graph_from_onnx(&m).unwrap();
        assert_eq!(g.nodes[0].inputs, vec![g.find_value("x"), None, None]);
        assert_eq!(g.nodes[0].outputs.len(), 1);
        assert_eq!(
            g.nodes[1].inputs,
            vec![g.find_value("y"), None, g.find_value("w")]
        );
    }

    /// The consuming import moves the initializers and gives the same graph as the borrowing
    /// one (ResNet-18 from the zoo, exported to ONNX and back: convs, BN, Gemm, Flatten).
    #[test]
    fn owned_import_equals_borrowed_import() {
        let g = crate::zoo::build("zoo:resnet18:width=0.25,input=32").unwrap();
        let m = crate::zoo::to_onnx(&g);
        let borrowed = graph_from_onnx(&m).unwrap();
        let owned = graph_from_onnx_owned(m.clone()).unwrap();
        assert_eq!(owned, borrowed);
        let (params, bytes) = owned.parameter_totals();
        assert_eq!(params, g.parameter_totals().0);
        assert_eq!(bytes, 4 * params);
        // A tensor whose element count disagrees with its dims is refused either way.
        let mut bad = m;
        bad.graph.initializers[0].dims.push(2);
        assert!(graph_from_onnx(&bad).is_err());
        assert!(graph_from_onnx_owned(bad).is_err());
    }
}
