//! [`OnnxModel`] → `pb::ModelProto` bytes, for the model zoo and for round-trip tests.
//!
//! Files are written as ONNX Runtime expects from a current exporter: IR version 8, one
//! default-domain opset import (plus one per custom domain used by nodes), every attribute
//! with its `type` set, initializers as `raw_data` and *not* listed as graph inputs, and
//! operators in the form of the model's opset (see [`crate::normalize::denormalize`]).

use std::collections::BTreeSet;

use prost::Message;
use tract_onnx::pb::{self, attribute_proto::AttributeType};

use crate::model::*;
use crate::normalize::denormalize;
use crate::tensor::{elem_type_code, encode_tensor};

/// IR version written by [`crate::encode_model`] (ONNX 1.10+, ONNX Runtime ≥ 1.10).
pub const IR_VERSION: i64 = 8;

pub fn encode(model: &OnnxModel) -> Vec<u8> {
    to_proto(model).encode_to_vec()
}

pub fn to_proto(model: &OnnxModel) -> pb::ModelProto {
    let model = denormalize(model);
    let g = &model.graph;
    let mut opset_import = vec![pb::OperatorSetIdProto {
        domain: String::new(),
        version: model.opset,
    }];
    let custom: BTreeSet<&str> = g
        .nodes
        .iter()
        .map(|n| n.domain.as_str())
        .filter(|d| !d.is_empty())
        .collect();
    for d in custom {
        opset_import.push(pb::OperatorSetIdProto {
            domain: d.to_string(),
            version: 1,
        });
    }
    pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import,
        producer_name: if model.producer_name.is_empty() {
            "engine".into()
        } else {
            model.producer_name.clone()
        },
        graph: Some(pb::GraphProto {
            name: if g.name.is_empty() {
                "main".into()
            } else {
                g.name.clone()
            },
            node: g.nodes.iter().map(encode_node).collect(),
            initializer: g.initializers.iter().map(encode_tensor).collect(),
            input: g.inputs.iter().map(encode_value).collect(),
            output: g.outputs.iter().map(encode_value).collect(),
            value_info: g.value_info.iter().map(encode_value).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn encode_value(v: &ValueDecl) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let has_type = v.elem_type.is_some() || v.shape.is_some();
    let r#type = has_type.then(|| pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: v.elem_type.map(elem_type_code).unwrap_or(0),
            shape: v.shape.as_ref().map(|s| pb::TensorShapeProto {
                dim: s
                    .iter()
                    .map(|d| Dimension {
                        value: match d {
                            DimDecl::Fixed(n) => Some(Value::DimValue(*n as i64)),
                            DimDecl::Symbolic(p) => Some(Value::DimParam(p.clone())),
                            DimDecl::Unknown => None,
                        },
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    });
    pb::ValueInfoProto {
        name: v.name.clone(),
        r#type,
        ..Default::default()
    }
}

fn encode_node(n: &OnnxNode) -> pb::NodeProto {
    pb::NodeProto {
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        name: n.name.clone(),
        op_type: n.op_type.clone(),
        domain: n.domain.clone(),
        attribute: n
            .attributes
            .iter()
            .filter_map(|(k, v)| encode_attribute(k, v))
            .collect(),
        ..Default::default()
    }
}

/// `None` for [`Attribute::Unsupported`], which carries no value to write.
fn encode_attribute(name: &str, v: &Attribute) -> Option<pb::AttributeProto> {
    let mut a = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    let kind = match v {
        Attribute::Float(f) => {
            a.f = *f;
            AttributeType::Float
        }
        Attribute::Int(i) => {
            a.i = *i;
            AttributeType::Int
        }
        Attribute::String(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::String
        }
        Attribute::Tensor(t) => {
            a.t = Some(encode_tensor(t));
            AttributeType::Tensor
        }
        Attribute::Floats(f) => {
            a.floats = f.clone();
            AttributeType::Floats
        }
        Attribute::Ints(i) => {
            a.ints = i.clone();
            AttributeType::Ints
        }
        Attribute::Strings(s) => {
            a.strings = s.iter().map(|x| x.as_bytes().to_vec()).collect();
            AttributeType::Strings
        }
        Attribute::Unsupported(_) => return None,
    };
    a.r#type = kind as i32;
    Some(a)
}
