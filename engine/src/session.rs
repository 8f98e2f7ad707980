//! The public entry points: load a [`Model`], prepare a [`Session`] for a batch size, thread
//! count and backend, and run it.
//!
//! (API skeleton fixed by the lead; the executor helper fills in the bodies.)

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ir::{Graph, ValueInfo};
use crate::tensor::Tensor;

/// Which device executes the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Cpu,
    /// wgpu compute shaders (needs the `wgpu` cargo feature).
    Wgpu,
}

/// A loaded model: the imported graph before shapes are bound.
#[derive(Debug, Clone)]
pub struct Model {
    /// Where it came from (a file path or a `zoo:` spec), for reports and errors.
    pub source: String,
    pub graph: Graph,
}

/// How to prepare a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Worker threads (exactly this many run kernels). 0 means all cores.
    pub threads: usize,
    /// Binds a symbolic leading (batch) dimension of the inputs.
    pub batch: Option<usize>,
    /// Explicit input shapes by input name (override declared/symbolic ones).
    pub input_shapes: HashMap<String, Vec<usize>>,
    pub backend: Backend,
    /// Refuse plans needing more bytes than this (weights + activations + scratch).
    pub max_memory: Option<u64>,
    /// Apply fusions (BN folding, Conv+Add+ReLU). Off gives one kernel per ONNX node.
    pub optimize: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            threads: 0,
            batch: None,
            input_shapes: HashMap::new(),
            backend: Backend::Cpu,
            max_memory: None,
            optimize: true,
        }
    }
}

/// Timing and memory of one executed node of the session's execution graph.
#[derive(Debug, Clone)]
pub struct NodeTrace {
    /// Index into `Session::exec_graph().nodes`.
    pub node: usize,
    pub elapsed: Duration,
    /// Bytes this node's outputs (and scratch) newly allocated in this run.
    pub allocated_bytes: u64,
    /// Activation bytes alive right after the node ran.
    pub live_bytes: u64,
    /// Multiply-accumulates the kernels that ran actually performed (Winograd does fewer).
    pub macs_executed: u64,
}

/// What one profiled run measured.
#[derive(Debug, Clone)]
pub struct RunTrace {
    pub total: Duration,
    pub nodes: Vec<NodeTrace>,
    /// Peak of live activation bytes during the run.
    pub peak_live_bytes: u64,
}

/// A model prepared for execution.
pub struct Session {
    _private: (),
}

impl Model {
    /// Loads an ONNX file, or a built-in model given as `zoo:NAME[:key=value,...]`.
    pub fn load(path_or_spec: impl AsRef<Path>) -> Result<Model> {
        let _ = path_or_spec;
        Err(Error::Model("Model::load is being written".into()))
    }

    /// Declared graph inputs (to be fed).
    pub fn inputs(&self) -> Vec<&ValueInfo> {
        self.graph.inputs.iter().map(|&id| self.graph.value(id)).collect()
    }

    pub fn outputs(&self) -> Vec<&ValueInfo> {
        self.graph.outputs.iter().map(|&id| self.graph.value(id)).collect()
    }
}

impl Session {
    /// Binds shapes, folds constants, optimizes and plans memory.
    pub fn new(model: &Model, options: &SessionOptions) -> Result<Session> {
        let _ = (model, options);
        Err(Error::Model("Session::new is being written".into()))
    }

    /// Runs the model. `inputs` are matched by name; outputs come back in graph order.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let _ = inputs;
        Err(Error::Model("Session::run is being written".into()))
    }
}
