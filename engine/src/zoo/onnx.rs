//! IR graph → plain [`OnnxModel`] (opset 17), so built-in models can be written as `.onnx`
//! files and fed to other runtimes.

use std::collections::{BTreeMap, HashSet};

use onnx_import::{
    Attribute, DimDecl, ElemType, OnnxGraph, OnnxModel, OnnxNode, TensorData, TensorValues,
    ValueDecl,
};

use crate::ir::{Activation, AutoPad, ConvAttrs, Dim, Graph, Node, Op, PoolAttrs, ValueId};
use crate::tensor::{DType, Tensor};

/// The opset the export targets. IR version 8 is the one that introduced opset 17.
pub const EXPORT_OPSET: i64 = 17;

fn elem_type(d: DType) -> ElemType {
    match d {
        DType::F32 => ElemType::Float,
        DType::F64 => ElemType::Double,
        DType::I64 => ElemType::Int64,
        DType::I32 => ElemType::Int32,
        DType::Bool => ElemType::Bool,
        DType::U8 => ElemType::Uint8,
    }
}

/// ONNX `TensorProto.DataType` codes, for `Cast.to`.
fn onnx_type_code(d: DType) -> i64 {
    match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
        DType::F64 => 11,
    }
}

fn tensor_data(name: &str, t: &Tensor) -> TensorData {
    let values = match t {
        Tensor::F32(a) => TensorValues::F32(a.iter().copied().collect()),
        Tensor::F64(a) => TensorValues::F64(a.iter().copied().collect()),
        Tensor::I64(a) => TensorValues::I64(a.iter().copied().collect()),
        Tensor::I32(a) => TensorValues::I32(a.iter().copied().collect()),
        Tensor::Bool(a) => TensorValues::Bool(a.iter().copied().collect()),
        Tensor::U8(a) => TensorValues::U8(a.iter().copied().collect()),
    };
    TensorData {
        name: name.to_string(),
        dims: t.shape().to_vec(),
        values,
    }
}

fn ints(v: &[usize]) -> Attribute {
    Attribute::Ints(v.iter().map(|&x| x as i64).collect())
}

fn auto_pad_str(a: AutoPad) -> Option<&'static str> {
    match a {
        AutoPad::NotSet => None,
        AutoPad::SameUpper => Some("SAME_UPPER"),
        AutoPad::SameLower => Some("SAME_LOWER"),
        AutoPad::Valid => Some("VALID"),
    }
}

fn conv_attrs(c: &ConvAttrs) -> BTreeMap<String, Attribute> {
    let mut a = BTreeMap::new();
    if let Some(k) = &c.kernel_shape {
        a.insert("kernel_shape".into(), ints(k));
    }
    if !c.strides.is_empty() {
        a.insert("strides".into(), ints(&c.strides));
    }
    if !c.dilations.is_empty() {
        a.insert("dilations".into(), ints(&c.dilations));
    }
    a.insert("group".into(), Attribute::Int(c.group as i64));
    match auto_pad_str(c.auto_pad) {
        Some(s) => {
            a.insert("auto_pad".into(), Attribute::String(s.into()));
        }
        None if !c.pads.is_empty() => {
            a.insert("pads".into(), ints(&c.pads));
        }
        None => {}
    }
    a
}

fn pool_attrs(p: &PoolAttrs, average: bool) -> BTreeMap<String, Attribute> {
    let mut a = BTreeMap::new();
    a.insert("kernel_shape".into(), ints(&p.kernel_shape));
    if !p.strides.is_empty() {
        a.insert("strides".into(), ints(&p.strides));
    }
    // AveragePool gained `dilations` only in opset 19: emit it for MaxPool, and for
    // AveragePool only when it is not all ones (such a model then needs a newer runtime).
    if !p.dilations.is_empty() && (!average || p.dilations.iter().any(|&d| d != 1)) {
        a.insert("dilations".into(), ints(&p.dilations));
    }
    a.insert("ceil_mode".into(), Attribute::Int(p.ceil_mode as i64));
    if average {
        a.insert(
            "count_include_pad".into(),
            Attribute::Int(p.count_include_pad as i64),
        );
    }
    match auto_pad_str(p.auto_pad) {
        Some(s) => {
            a.insert("auto_pad".into(), Attribute::String(s.into()));
        }
        None if !p.pads.is_empty() => {
            a.insert("pads".into(), ints(&p.pads));
        }
        None => {}
    }
    a
}

struct Exporter<'g> {
    g: &'g Graph,
    nodes: Vec<OnnxNode>,
    extra_inits: Vec<TensorData>,
    used: HashSet<String>,
}

impl Exporter<'_> {
    fn name(&self, id: Option<ValueId>) -> String {
        id.map(|v| self.g.value(v).name.clone()).unwrap_or_default()
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut n = base.to_string();
        let mut i = 1;
        while self.used.contains(&n) {
            n = format!("{base}_{i}");
            i += 1;
        }
        self.used.insert(n.clone());
        n
    }

    fn push(
        &mut self,
        name: String,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attributes: BTreeMap<String, Attribute>,
    ) {
        self.nodes.push(OnnxNode {
            name,
            op_type: op_type.into(),
            domain: String::new(),
            inputs,
            outputs,
            attributes,
        });
    }

    /// A fused conv becomes Conv [+ Add] [+ activation], named after its origin nodes.
    fn fused(&mut self, node: &Node, conv: &ConvAttrs, act: Activation, has_residual: bool) {
        let ins: Vec<String> = node.inputs.iter().map(|&i| self.name(i)).collect();
        let out = self.name(node.outputs.first().copied());
        let origin = |i: usize, fallback: &str| {
            node.origin
                .get(i)
                .map(|o| o.name.clone())
                .unwrap_or_else(|| format!("{}.{fallback}", node.name))
        };
        let mut steps: Vec<&str> = Vec::new();
        if has_residual {
            steps.push("Add");
        }
        if act != Activation::None {
            steps.push("act");
        }
        let conv_out = if steps.is_empty() {
            out.clone()
        } else {
            self.fresh(&format!("{}.conv_out", node.name))
        };
        let conv_inputs: Vec<String> = ins.iter().take(3).cloned().collect();
        self.push(
            origin(0, "conv"),
            "Conv",
            conv_inputs,
            vec![conv_out.clone()],
            conv_attrs(conv),
        );
        let mut cur = conv_out;
        if has_residual {
            let residual = ins.get(3).cloned().unwrap_or_default();
            let dst = if act == Activation::None {
                out.clone()
            } else {
                self.fresh(&format!("{}.add_out", node.name))
            };
            let n = node
                .origin
                .iter()
                .find(|o| o.op_type == "Add")
                .map(|o| o.name.clone())
                .unwrap_or_else(|| format!("{}.add", node.name));
            self.push(
                n,
                "Add",
                vec![cur, residual],
                vec![dst.clone()],
                BTreeMap::new(),
            );
            cur = dst;
        }
        let act_name = node
            .origin
            .last()
            .map(|o| o.name.clone())
            .unwrap_or_else(|| format!("{}.act", node.name));
        let mut attrs = BTreeMap::new();
        let mut inputs = vec![cur];
        let op_type = match act {
            Activation::None => return,
            Activation::Relu => "Relu",
            Activation::Sigmoid => "Sigmoid",
            Activation::LeakyRelu(a) => {
                attrs.insert("alpha".to_string(), Attribute::Float(a));
                "LeakyRelu"
            }
            Activation::Clip(lo, hi) => {
                for (suffix, v) in [("min", lo), ("max", hi)] {
                    let n = self.fresh(&format!("{}.clip_{suffix}", node.name));
                    self.extra_inits.push(TensorData {
                        name: n.clone(),
                        dims: vec![],
                        values: TensorValues::F32(vec![v]),
                    });
                    inputs.push(n);
                }
                "Clip"
            }
        };
        self.push(act_name, op_type, inputs, vec![out], attrs);
    }
}

/// Converts a graph to an opset-17 [`OnnxModel`] for `onnx_import::write_model`.
///
/// Constants become initializers; declared shapes become graph input/output declarations and
/// `value_info`. Engine-fused nodes (`FusedConv`) are expanded back into Conv, Add and the
/// activation, named after their origin nodes. Inputs stay in the IR's newest form (e.g.
/// ReduceMean's `axes` as an input); `onnx_import::encode_model` writes them in the form of the
/// model's opset. A legacy (opset < 13) `Softmax` is written with the same axis under the
/// opset-13 meaning.
pub fn to_onnx(graph: &Graph) -> OnnxModel {
    let mut ex = Exporter {
        g: graph,
        nodes: Vec::new(),
        extra_inits: Vec::new(),
        used: graph.values.iter().map(|v| v.name.clone()).collect(),
    };
    for node in &graph.nodes {
        let inputs: Vec<String> = node.inputs.iter().map(|&i| ex.name(i)).collect();
        let outputs: Vec<String> = node.outputs.iter().map(|&o| ex.name(Some(o))).collect();
        let mut a = BTreeMap::new();
        let mut inputs_used = inputs;
        match &node.op {
            Op::FusedConv {
                conv,
                activation,
                has_residual,
            } => {
                ex.fused(node, conv, *activation, *has_residual);
                continue;
            }
            Op::Conv(c) => a = conv_attrs(c),
            Op::MaxPool(p) => a = pool_attrs(p, false),
            Op::AveragePool(p) => a = pool_attrs(p, true),
            Op::BatchNormalization { epsilon } => {
                a.insert("epsilon".into(), Attribute::Float(*epsilon));
            }
            Op::LeakyRelu { alpha } => {
                a.insert("alpha".into(), Attribute::Float(*alpha));
            }
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => {
                a.insert("size".into(), Attribute::Int(*size as i64));
                a.insert("alpha".into(), Attribute::Float(*alpha));
                a.insert("beta".into(), Attribute::Float(*beta));
                a.insert("bias".into(), Attribute::Float(*bias));
            }
            Op::Concat { axis } => {
                a.insert("axis".into(), Attribute::Int(*axis));
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                a.insert("alpha".into(), Attribute::Float(*alpha));
                a.insert("beta".into(), Attribute::Float(*beta));
                a.insert("transA".into(), Attribute::Int(*trans_a as i64));
                a.insert("transB".into(), Attribute::Int(*trans_b as i64));
            }
            Op::Flatten { axis } => {
                a.insert("axis".into(), Attribute::Int(*axis));
            }
            Op::Reshape { allowzero } => {
                a.insert("allowzero".into(), Attribute::Int(*allowzero as i64));
            }
            Op::Transpose { perm } => {
                if let Some(p) = perm {
                    a.insert("perm".into(), ints(p));
                }
            }
            Op::Softmax { axis, .. } => {
                a.insert("axis".into(), Attribute::Int(*axis));
            }
            Op::ConstantOfShape { value } => {
                a.insert(
                    "value".into(),
                    Attribute::Tensor(tensor_data("value", value)),
                );
            }
            Op::Shape { start, end } => {
                a.insert("start".into(), Attribute::Int(*start));
                if let Some(e) = end {
                    a.insert("end".into(), Attribute::Int(*e));
                }
            }
            Op::Gather { axis } => {
                a.insert("axis".into(), Attribute::Int(*axis));
            }
            Op::Cast { to } => {
                a.insert("to".into(), Attribute::Int(onnx_type_code(*to)));
            }
            Op::Pad { mode } => {
                let m = match mode {
                    crate::ir::PadMode::Constant => "constant",
                    crate::ir::PadMode::Reflect => "reflect",
                    crate::ir::PadMode::Edge => "edge",
                };
                a.insert("mode".into(), Attribute::String(m.into()));
            }
            Op::ReduceMean {
                keepdims,
                noop_with_empty_axes,
            } => {
                a.insert("keepdims".into(), Attribute::Int(*keepdims as i64));
                a.insert(
                    "noop_with_empty_axes".into(),
                    Attribute::Int(*noop_with_empty_axes as i64),
                );
            }
            Op::Relu
            | Op::Sigmoid
            | Op::Clip
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Sum
            | Op::MatMul
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Identity
            | Op::Dropout
            | Op::Slice => {}
        }
        // Trailing omitted optional inputs are dropped; inner ones stay as "".
        while inputs_used.last().is_some_and(|s| s.is_empty()) {
            inputs_used.pop();
        }
        ex.push(
            node.name.clone(),
            node.op.type_name(),
            inputs_used,
            outputs,
            a,
        );
    }

    let decl = |id: ValueId| {
        let v = graph.value(id);
        ValueDecl {
            name: v.name.clone(),
            elem_type: v.dtype.map(elem_type),
            shape: v.shape.as_ref().map(|dims| {
                dims.iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => DimDecl::Fixed(*n),
                        Dim::Symbol(s) => DimDecl::Symbolic(s.clone()),
                    })
                    .collect()
            }),
        }
    };
    let mut const_ids: Vec<&ValueId> = graph.constants.keys().collect();
    const_ids.sort();
    let mut initializers: Vec<TensorData> = const_ids
        .into_iter()
        .map(|id| tensor_data(&graph.value(*id).name, &graph.constants[id]))
        .collect();
    initializers.append(&mut ex.extra_inits);
    let io: HashSet<ValueId> = graph.inputs.iter().chain(&graph.outputs).copied().collect();
    let value_info = (0..graph.values.len())
        .map(ValueId)
        .filter(|id| {
            !io.contains(id) && !graph.is_constant(*id) && graph.value(*id).shape.is_some()
        })
        .map(decl)
        .collect();
    OnnxModel {
        path: None,
        ir_version: 8,
        producer_name: "engine".into(),
        opset: EXPORT_OPSET,
        graph: OnnxGraph {
            name: graph.name.clone(),
            inputs: graph.inputs.iter().map(|&i| decl(i)).collect(),
            outputs: graph.outputs.iter().map(|&o| decl(o)).collect(),
            value_info,
            initializers,
            nodes: ex.nodes,
        },
    }
}
