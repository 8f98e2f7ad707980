//! `pb::ModelProto` → [`OnnxModel`]: names, value declarations, attributes, initializers and
//! `Constant` nodes. Opset rewrites happen afterwards in [`crate::normalize`].

use std::collections::{BTreeMap, HashSet};

use tract_onnx::pb::{self, attribute_proto::AttributeType};

use crate::model::*;
use crate::tensor::{decode_tensor, elem_type_from_code, TensorContext, TensorIssue};
use crate::Error;

/// Shared state for one file: its label (for errors) and where external data lives.
pub struct Ctx<'a> {
    pub label: &'a str,
    pub tensors: TensorContext<'a>,
}

impl Ctx<'_> {
    pub fn node_err(&self, node: &str, op_type: &str, message: impl Into<String>) -> Error {
        Error::Node {
            path: self.label.to_string(),
            node: node.to_string(),
            op_type: op_type.to_string(),
            message: message.into(),
        }
    }

    pub fn tensor_err(&self, tensor: &str, issue: TensorIssue) -> Error {
        Error::Tensor {
            path: self.label.to_string(),
            tensor: tensor.to_string(),
            message: issue.0,
        }
    }
}

/// The default-domain opset of a model: `""` and `"ai.onnx"` are the same domain. Files
/// without any opset_import (IR version < 3) predate opsets and behave as opset 1.
pub fn default_opset(imports: &[pb::OperatorSetIdProto]) -> i64 {
    imports
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(1)
}

/// Converts a decoded model, consuming it (see `convert_graph` for why).
pub fn convert_model(m: pb::ModelProto, ctx: &Ctx<'_>) -> Result<OnnxModel, Error> {
    let Some(g) = m.graph else {
        return Err(Error::NoGraph {
            path: ctx.label.to_string(),
        });
    };
    Ok(OnnxModel {
        path: None,
        ir_version: m.ir_version,
        producer_name: m.producer_name,
        opset: default_opset(&m.opset_import),
        graph: convert_graph(g, ctx)?,
    })
}

/// Converts a graph, consuming it: initializers are taken out of the protobuf one at a time and
/// each one's protobuf form (its `raw_data`, as large as the weights) is dropped right after its
/// conversion, so a model's weights are never held twice in full while it loads.
fn convert_graph(mut g: pb::GraphProto, ctx: &Ctx<'_>) -> Result<OnnxGraph, Error> {
    if let Some(sp) = g.sparse_initializer.first() {
        let name = sp.values.as_ref().map(|v| v.name.as_str()).unwrap_or("");
        return Err(Error::Unsupported {
            path: ctx.label.to_string(),
            message: format!(
                "sparse initializer '{name}' (the graph has {} sparse initializer(s); only dense initializers are supported)",
                g.sparse_initializer.len()
            ),
        });
    }
    let protos = std::mem::take(&mut g.initializer);
    let mut initializers = Vec::with_capacity(protos.len());
    for t in protos {
        initializers.push(decode_tensor(&t, ctx.tensors).map_err(|e| ctx.tensor_err(&t.name, e))?);
        // `t` (and its raw bytes) is freed here, before the next initializer is converted.
    }

    // Nodes are consumed too: a `Constant` node's tensor can be as large as an initializer.
    let protos = std::mem::take(&mut g.node);
    let mut nodes = Vec::with_capacity(protos.len());
    for (index, n) in protos.into_iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{index}", n.op_type)
        } else {
            n.name
        };
        let mut attributes = BTreeMap::new();
        for a in &n.attribute {
            let value = convert_attribute(a, ctx, &name, &n.op_type)?;
            attributes.insert(a.name.clone(), value);
        }
        drop(n.attribute);
        let node = OnnxNode {
            name,
            op_type: n.op_type,
            domain: if n.domain == "ai.onnx" {
                String::new()
            } else {
                n.domain
            },
            inputs: n.input,
            outputs: n.output,
            attributes,
        };
        if node.domain.is_empty() && node.op_type == "Constant" {
            initializers.push(constant_value(node, ctx)?);
        } else {
            nodes.push(node);
        }
    }

    let init_names: HashSet<&str> = initializers.iter().map(|t| t.name.as_str()).collect();
    let inputs = g
        .input
        .iter()
        .filter(|v| !init_names.contains(v.name.as_str()))
        .map(convert_value_info)
        .collect();
    Ok(OnnxGraph {
        name: g.name.clone(),
        inputs,
        outputs: g.output.iter().map(convert_value_info).collect(),
        value_info: g.value_info.iter().map(convert_value_info).collect(),
        initializers,
        nodes,
    })
}

fn convert_value_info(v: &pb::ValueInfoProto) -> ValueDecl {
    // `TypeProto` here only has the tensor variant; sequences/maps decode as no type.
    let tensor = v
        .r#type
        .as_ref()
        .and_then(|t| t.value.as_ref())
        .map(|pb::type_proto::Value::TensorType(t)| t);
    let elem_type =
        tensor.and_then(|t| (t.elem_type != 0).then(|| elem_type_from_code(t.elem_type)));
    let shape = tensor.and_then(|t| t.shape.as_ref()).map(|s| {
        s.dim
            .iter()
            .map(|d| {
                use pb::tensor_shape_proto::dimension::Value;
                match &d.value {
                    Some(Value::DimValue(v)) => usize::try_from(*v)
                        .map(DimDecl::Fixed)
                        .unwrap_or(DimDecl::Unknown),
                    Some(Value::DimParam(p)) if !p.is_empty() => DimDecl::Symbolic(p.clone()),
                    _ => DimDecl::Unknown,
                }
            })
            .collect()
    });
    ValueDecl {
        name: v.name.clone(),
        elem_type,
        shape,
    }
}

fn kind_name(t: i32) -> String {
    AttributeType::try_from(t)
        .map(|k| k.as_str_name().to_string())
        .unwrap_or_else(|_| format!("code {t}"))
}

/// The attribute kind, guessing from the populated field for very old files that left
/// `type` unset.
fn attribute_kind(a: &pb::AttributeProto) -> AttributeType {
    match AttributeType::try_from(a.r#type) {
        Ok(AttributeType::Undefined) | Err(_) => {}
        Ok(k) => return k,
    }
    if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.s.is_empty() {
        AttributeType::String
    } else if a.f != 0.0 {
        AttributeType::Float
    } else {
        // An all-default attribute: INT 0 is the only reading that keeps its value.
        AttributeType::Int
    }
}

fn convert_attribute(
    a: &pb::AttributeProto,
    ctx: &Ctx<'_>,
    node: &str,
    op_type: &str,
) -> Result<Attribute, Error> {
    if !a.ref_attr_name.is_empty() {
        return Err(ctx.node_err(
            node,
            op_type,
            format!(
                "attribute '{}' refers to a function attribute ('{}'); functions are not supported",
                a.name, a.ref_attr_name
            ),
        ));
    }
    Ok(match attribute_kind(a) {
        AttributeType::Float => Attribute::Float(a.f),
        AttributeType::Int => Attribute::Int(a.i),
        AttributeType::String => Attribute::String(String::from_utf8_lossy(&a.s).into_owned()),
        AttributeType::Floats => Attribute::Floats(a.floats.clone()),
        AttributeType::Ints => Attribute::Ints(a.ints.clone()),
        AttributeType::Strings => Attribute::Strings(
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        ),
        AttributeType::Tensor => {
            let Some(t) = &a.t else {
                return Err(ctx.node_err(
                    node,
                    op_type,
                    format!(
                        "attribute '{}' is of type TENSOR but holds no tensor",
                        a.name
                    ),
                ));
            };
            let data = decode_tensor(t, ctx.tensors).map_err(|e| {
                ctx.node_err(
                    node,
                    op_type,
                    format!("attribute '{}': tensor '{}': {}", a.name, t.name, e.0),
                )
            })?;
            Attribute::Tensor(data)
        }
        other => Attribute::Unsupported(kind_name(other as i32)),
    })
}

/// A `Constant` node's value as an initializer named after its output (the node is consumed
/// so a tensor value moves instead of being copied).
fn constant_value(mut n: OnnxNode, ctx: &Ctx<'_>) -> Result<TensorData, Error> {
    let Some(output) = n.outputs.first().filter(|o| !o.is_empty()) else {
        return Err(ctx.node_err(&n.name, &n.op_type, "expected one output, found none"));
    };
    if n.attributes.len() != 1 {
        let names: Vec<&str> = n.attributes.keys().map(|k| k.as_str()).collect();
        return Err(ctx.node_err(
            &n.name,
            &n.op_type,
            format!(
                "expected exactly one of the attributes value, value_float(s), value_int(s); found {names:?}"
            ),
        ));
    }
    let attributes = std::mem::take(&mut n.attributes);
    let Some((key, value)) = attributes.into_iter().next() else {
        return Err(ctx.node_err(
            &n.name,
            &n.op_type,
            "expected a value attribute, found none",
        ));
    };
    let (dims, values) = match (key.as_str(), value) {
        ("value", Attribute::Tensor(t)) => (t.dims, t.values),
        ("value_float", Attribute::Float(f)) => (vec![], TensorValues::F32(vec![f])),
        ("value_floats", Attribute::Floats(f)) => (vec![f.len()], TensorValues::F32(f)),
        ("value_int", Attribute::Int(i)) => (vec![], TensorValues::I64(vec![i])),
        ("value_ints", Attribute::Ints(i)) => (vec![i.len()], TensorValues::I64(i)),
        ("value_string" | "value_strings", _) => {
            return Err(Error::UnsupportedNode {
                path: ctx.label.to_string(),
                node: n.name.clone(),
                op_type: n.op_type.clone(),
                message: format!("string constants ('{key}') are not supported; expected a numeric value"),
            })
        }
        ("sparse_value", _) => {
            return Err(Error::UnsupportedNode {
                path: ctx.label.to_string(),
                node: n.name.clone(),
                op_type: n.op_type.clone(),
                message: "sparse constants ('sparse_value') are not supported; expected a dense 'value'".into(),
            })
        }
        (k, v) => {
            return Err(ctx.node_err(
                &n.name,
                &n.op_type,
                format!("unexpected attribute '{k}' = {v:?}; expected value, value_float(s) or value_int(s)"),
            ))
        }
    };
    Ok(TensorData {
        name: output.clone(),
        dims,
        values,
    })
}
