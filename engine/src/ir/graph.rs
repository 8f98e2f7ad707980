//! The graph: values (tensors by id) and nodes in topological order.

use std::collections::HashMap;

use super::op::Op;
use crate::tensor::{DType, Tensor};

/// Index of a value (an edge of the graph) in `Graph::values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// One dimension of a declared shape: fixed, or a named symbol (`batch`) bound later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    Symbol(String),
}

/// What is known about a value. After `bind` every non-empty `shape` entry is `Dim::Fixed`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: Option<DType>,
    /// `None` until shape inference has run (or the model declared it).
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    /// The shape as plain sizes, when every dimension is fixed.
    pub fn fixed_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref().and_then(|dims| {
            dims.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Some(*n),
                    Dim::Symbol(_) => None,
                })
                .collect()
        })
    }
}

/// One operator application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The ONNX node name (or a generated `op_type_N` when the file had none).
    pub name: String,
    pub op: Op,
    /// `None` marks an omitted optional input (ONNX's empty name).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// Names and op types of the original ONNX nodes this node stands for. One entry for an
    /// unfused node; several when the engine fused a group (Conv+BN+Add+Relu), head first.
    pub origin: Vec<OriginNode>,
}

/// An original ONNX node kept for reporting after fusion.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginNode {
    pub name: String,
    pub op_type: String,
}

/// A whole model in the engine's IR.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub values: Vec<ValueInfo>,
    /// Graph inputs that must be fed (initializers excluded).
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Constant tensors: initializers, `Constant` nodes and folded subgraphs.
    pub constants: HashMap<ValueId, Tensor>,
    /// Topologically ordered.
    pub nodes: Vec<Node>,
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.0]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut ValueInfo {
        &mut self.values[id.0]
    }

    /// Adds a value and returns its id.
    pub fn add_value(
        &mut self,
        name: impl Into<String>,
        dtype: Option<DType>,
        shape: Option<Vec<Dim>>,
    ) -> ValueId {
        self.values.push(ValueInfo {
            name: name.into(),
            dtype,
            shape,
        });
        ValueId(self.values.len() - 1)
    }

    /// Adds a constant value.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Tensor) -> ValueId {
        let shape = tensor.shape().iter().map(|&d| Dim::Fixed(d)).collect();
        let id = self.add_value(name, Some(tensor.dtype()), Some(shape));
        self.constants.insert(id, tensor);
        id
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(ValueId)
    }

    pub fn is_constant(&self, id: ValueId) -> bool {
        self.constants.contains_key(&id)
    }

    /// Number of nodes reading each value (graph outputs count as one reader each).
    pub fn consumer_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.values.len()];
        for node in &self.nodes {
            for id in node.inputs.iter().flatten() {
                counts[id.0] += 1;
            }
        }
        for id in &self.outputs {
            counts[id.0] += 1;
        }
        counts
    }

    /// Total parameter elements and bytes held as constants that nodes read.
    pub fn parameter_totals(&self) -> (usize, usize) {
        self.constants
            .values()
            .fold((0, 0), |(n, b), t| (n + t.len(), b + t.byte_len()))
    }
}
