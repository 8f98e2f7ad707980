//! The engine's intermediate representation: typed ops over a value graph.

mod graph;
mod op;

pub use graph::{Dim, Graph, Node, OriginNode, ValueId, ValueInfo};
pub use op::{Activation, AutoPad, ConvAttrs, Op, PadMode, PoolAttrs};
