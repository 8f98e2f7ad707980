//! A plain description of an ONNX model, independent of protobuf and of the engine.
//!
//! This is what the importer hands over: names resolved, tensors decoded into owned vectors,
//! external data loaded, and attribute forms of older opsets rewritten into the newest input
//! form (see `normalize`), so that consumers handle one form per operator.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// ONNX element types the importer decodes. Others are reported by name in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    Float,
    Double,
    Int64,
    Int32,
    Bool,
    Uint8,
    Int8,
    Int16,
    Uint16,
    Float16,
    String,
    /// Any other ONNX `TensorProto.DataType` code.
    Other(i32),
}

/// Decoded tensor contents.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    U8(Vec<u8>),
}

impl TensorValues {
    pub fn len(&self) -> usize {
        match self {
            TensorValues::F32(v) => v.len(),
            TensorValues::F64(v) => v.len(),
            TensorValues::I64(v) => v.len(),
            TensorValues::I32(v) => v.len(),
            TensorValues::Bool(v) => v.len(),
            TensorValues::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named, shaped tensor (an initializer, a Constant's value, a `.pb` test file).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub name: String,
    pub dims: Vec<usize>,
    pub values: TensorValues,
}

/// One dimension of a declared value shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimDecl {
    Fixed(usize),
    Symbolic(String),
    Unknown,
}

/// A declared graph input, output or intermediate value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueDecl {
    pub name: String,
    pub elem_type: Option<ElemType>,
    /// `None` when the file declares no shape at all.
    pub shape: Option<Vec<DimDecl>>,
}

/// A node attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(TensorData),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    /// Subgraphs and other kinds the engine never needs; kept by kind name for error messages.
    Unsupported(String),
}

/// One node, with its attributes by name.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// The node's name, or `"{op_type}_{index}"` when the file gave none.
    pub name: String,
    pub op_type: String,
    /// Empty string for the default ONNX domain.
    pub domain: String,
    /// Empty strings mark omitted optional inputs.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: BTreeMap<String, Attribute>,
}

/// The main graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnnxGraph {
    pub name: String,
    /// Inputs to feed (those that are also initializers are removed).
    pub inputs: Vec<ValueDecl>,
    pub outputs: Vec<ValueDecl>,
    pub value_info: Vec<ValueDecl>,
    pub initializers: Vec<TensorData>,
    /// Nodes in file order (ONNX requires topological order; the engine re-sorts anyway).
    pub nodes: Vec<OnnxNode>,
}

/// A whole model file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnnxModel {
    /// Where it was read from, for error messages (`None` for in-memory bytes).
    pub path: Option<PathBuf>,
    pub ir_version: i64,
    pub producer_name: String,
    /// Opset of the default (`""` / `ai.onnx`) domain.
    pub opset: i64,
    pub graph: OnnxGraph,
}
