//! The public entry points: load a [`Model`], prepare a [`Session`] for a batch size, thread
//! count and backend, and run it.
//!

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::{CpuExecutor, Executor, MemoryPlan};
use crate::ir::{Graph, ValueInfo};
use crate::tensor::Tensor;

/// Which device executes the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The engine's own SIMD kernels on `threads` worker threads (the default).
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
    /// The imported graph (typed ops, declared shapes); see [`crate::ir`].
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
    /// Which device runs the graph ([`Backend::Cpu`] by default).
    pub backend: Backend,
    /// Refuse plans needing more bytes than this (weights + activations + scratch).
    pub max_memory: Option<u64>,
    /// Apply fusions (BN folding, Conv+Add+ReLU). Off gives one kernel per ONNX node.
    pub optimize: bool,
    /// Inputs whose values are fixed when the session is created, by name: typically integer
    /// inputs that carry shapes, axes or pads, which the engine must know before it can plan.
    /// They become constants (and are folded); [`Session::run`] then does not need them, and
    /// refuses a re-supplied one whose value differs.
    pub constant_inputs: HashMap<String, Tensor>,
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
            constant_inputs: HashMap::new(),
        }
    }
}

/// Timing and memory of one executed node of the session's execution graph.
#[derive(Debug, Clone)]
pub struct NodeTrace {
    /// Index into `Session::exec_graph().nodes`.
    pub node: usize,
    /// Wall-clock time of the node (GPU time on `wgpu` where timestamps are available).
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
    /// Wall-clock time of the whole run.
    pub total: Duration,
    /// One entry per executed node, in execution order.
    pub nodes: Vec<NodeTrace>,
    /// Peak of live activation bytes during the run.
    pub peak_live_bytes: u64,
}

/// A model prepared for execution.
///
/// Memory: a session holds the weights about twice at most, once in [`Session::bound_graph`]
/// (what reports read) and once in the executor's kernel layouts (packed, Winograd-transformed).
/// The executor drops its own copy of every constant that only kernels read, and the execution
/// graph is not kept: [`Session::exec_graph`] rebuilds it from the bound graph on first use
/// (reports and tests call it; running does not).
pub struct Session {
    source: String,
    bound: Graph,
    /// Whether fusions ran: without them the execution graph is the bound graph.
    optimize: bool,
    /// The execution graph, rebuilt on first request (see [`Session::exec_graph`]).
    exec: OnceLock<Graph>,
    /// `exec_graph().nodes.len()`, known without rebuilding it.
    exec_nodes: usize,
    /// Names of the execution graph's outputs, in order.
    output_names: Vec<String>,
    plan: MemoryPlan,
    executor: Box<dyn Executor>,
    threads: usize,
    input_infos: Vec<ValueInfo>,
    /// Bytes refused above (weights + activations + scratch), for reports.
    memory_limit: u64,
    /// Bytes the session holds: constants + executor reservations.
    reserved_bytes: u64,
    backend: Backend,
    /// Inputs bound to values at creation (`SessionOptions::constant_inputs`).
    constant_inputs: HashMap<String, Tensor>,
    /// The adapter and timing method of a GPU session, for reports (`None` on the CPU).
    device: Option<DeviceInfo>,
}

/// What a GPU session runs on, as profile reports show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Adapter name and graphics API, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"`.
    pub name: String,
    /// How profiled runs time each node (GPU timestamps, or wall clock per dispatch).
    pub timing: String,
}

impl Model {
    /// Loads an ONNX file, or a built-in model given as `zoo:NAME[:key=value,...]`.
    pub fn load(path_or_spec: impl AsRef<Path>) -> Result<Model> {
        let path = path_or_spec.as_ref();
        let text = path.to_string_lossy();
        if text.starts_with("zoo:") {
            let graph = crate::zoo::build(&text)?;
            return Ok(Model {
                source: text.into_owned(),
                graph,
            });
        }
        // Each stage is consumed by the next (file bytes → protobuf → OnnxModel → Graph), so
        // the weights exist about once at a time, not once per stage.
        let onnx = onnx_import::load_model(path)?;
        let graph = crate::import::graph_from_onnx_owned(onnx)?;
        Ok(Model {
            source: path.display().to_string(),
            graph,
        })
    }

    /// Decodes an ONNX model held in memory; `label` names it in errors and reports. External
    /// tensor data is refused (there is no folder to resolve it against).
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Model> {
        let onnx = onnx_import::decode_model(bytes, None, label)?;
        let graph = crate::import::graph_from_onnx_owned(onnx)?;
        Ok(Model {
            source: label.to_string(),
            graph,
        })
    }

    /// Wraps a graph built in code (tests, the zoo).
    pub fn from_graph(graph: Graph, source: impl Into<String>) -> Model {
        Model {
            source: source.into(),
            graph,
        }
    }

    /// Declared graph inputs (to be fed).
    pub fn inputs(&self) -> Vec<&ValueInfo> {
        self.graph
            .inputs
            .iter()
            .map(|&id| self.graph.value(id))
            .collect()
    }

    /// Declared graph outputs, in order (what [`Session::run`] returns).
    pub fn outputs(&self) -> Vec<&ValueInfo> {
        self.graph
            .outputs
            .iter()
            .map(|&id| self.graph.value(id))
            .collect()
    }
}

/// Checks the requested input names and binds the model's graph (shapes, constant folding).
fn bind_model(model: &Model, options: &SessionOptions, limit: u64) -> Result<Graph> {
    let graph = &model.graph;
    let mut names: Vec<&String> = options.input_shapes.keys().collect();
    names.sort();
    for name in names {
        if !graph.inputs.iter().any(|&id| &graph.value(id).name == name) {
            let known: Vec<&str> = graph
                .inputs
                .iter()
                .map(|&id| graph.value(id).name.as_str())
                .collect();
            return Err(Error::Input {
                name: name.clone(),
                message: format!("no such model input (inputs: {})", known.join(", ")),
            });
        }
    }
    let spec = crate::shape::BindSpec {
        batch: options.batch,
        shapes: options.input_shapes.clone(),
        // No single f32 value may exceed the whole limit.
        max_elements: Some((limit / 4) as u128),
        values: options.constant_inputs.clone(),
    };
    crate::shape::bind(graph, &spec)
}

/// Physical memory from /proc/meminfo (`MemTotal`), when it can be read.
pub fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The limit a session enforces when `max_memory` is not given: half of physical memory
/// (8 GiB when it cannot be read).
pub fn default_memory_limit() -> u64 {
    physical_memory_bytes().map_or(8 << 30, |b| b / 2)
}

impl Session {
    /// Binds shapes, folds constants, optimizes and plans memory. The model stays with the
    /// caller; [`Session::from_model`] consumes it instead, which lowers peak memory by one
    /// copy of the weights.
    pub fn new(model: &Model, options: &SessionOptions) -> Result<Session> {
        let limit = options.max_memory.unwrap_or_else(default_memory_limit);
        let bound = bind_model(model, options, limit)?;
        Session::from_bound(bound, model.source.clone(), options, limit)
    }

    /// [`Session::new`] consuming the model: its graph is freed as soon as the bound graph
    /// exists, before fusion and weight packing allocate, so the weights are never held three
    /// times at once. `engine run` uses this.
    pub fn from_model(model: Model, options: &SessionOptions) -> Result<Session> {
        let limit = options.max_memory.unwrap_or_else(default_memory_limit);
        let bound = bind_model(&model, options, limit)?;
        let Model { source, graph } = model;
        drop(graph);
        Session::from_bound(bound, source, options, limit)
    }

    /// Fuses, plans and prepares the executor for a bound graph.
    fn from_bound(
        bound: Graph,
        source: String,
        options: &SessionOptions,
        limit: u64,
    ) -> Result<Session> {
        let exec = if options.optimize {
            crate::exec::optimize(&bound)?
        } else {
            bound.clone()
        };
        let plan = crate::exec::plan(&exec, true)?;
        let threads = crate::exec::executor::resolve_threads(options.threads);

        // Refuse before allocating: weights + planned activations + packed weights + scratch.
        let (_, weight_bytes) = exec.parameter_totals();
        let extra = crate::exec::executor::estimated_extra_bytes(&exec, threads);
        let requested = weight_bytes as u128 + plan.arena_bytes as u128 + extra as u128;
        if requested > limit as u128 {
            return Err(Error::MemoryLimit {
                what: format!(
                    "model '{}' ({} weight bytes, {} planned activation bytes, {} packed-weight and scratch bytes)",
                    source, weight_bytes, plan.arena_bytes, extra
                ),
                requested,
                limit: limit as u128,
            });
        }
        let exec_nodes = exec.nodes.len();
        let output_names = exec
            .outputs
            .iter()
            .map(|&id| exec.value(id).name.clone())
            .collect();
        // The executor takes the execution graph: no copy of it stays here (see `exec_graph`).
        let (executor, device, host_constant_bytes): (Box<dyn Executor>, Option<DeviceInfo>, u64) =
            match options.backend {
                Backend::Cpu => (Box::new(CpuExecutor::new(exec, &plan, threads)?), None, 0),
                // wgpu backend arm (added by the GPU-backend helper; the executor lives in
                // crate::wgpu_backend). It keeps the graph's constants on the host.
                #[cfg(feature = "wgpu")]
                Backend::Wgpu => {
                    let gpu = crate::wgpu_backend::WgpuExecutor::new(exec)?;
                    let device = DeviceInfo {
                        name: format!("{} ({})", gpu.adapter_name(), gpu.adapter_backend()),
                        timing: gpu.timing_method().describe().to_string(),
                    };
                    (Box::new(gpu), Some(device), weight_bytes as u64)
                }
                #[cfg(not(feature = "wgpu"))]
                Backend::Wgpu => {
                    return Err(Error::Backend {
                        backend: "wgpu".into(),
                        message: "this engine was not built with wgpu support (build with --features wgpu); use --backend cpu".into(),
                    })
                }
            };
        let input_infos = bound
            .inputs
            .iter()
            .map(|&id| bound.value(id).clone())
            .collect();
        let reserved_bytes =
            bound.parameter_totals().1 as u64 + host_constant_bytes + executor.reserved_bytes();
        Ok(Session {
            source,
            bound,
            optimize: options.optimize,
            exec: OnceLock::new(),
            exec_nodes,
            output_names,
            plan,
            executor,
            threads,
            input_infos,
            memory_limit: limit,
            reserved_bytes,
            backend: options.backend,
            constant_inputs: options.constant_inputs.clone(),
            device,
        })
    }

    /// Runs the model. `inputs` are matched by name; outputs come back in graph order.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let ordered = self.order_inputs(inputs)?;
        let outs = self.executor.run(&ordered, None)?;
        Ok(self.name_outputs(outs))
    }

    /// Runs once, timing every node of [`Session::exec_graph`].
    pub fn run_profiled(
        &mut self,
        inputs: &[(&str, Tensor)],
    ) -> Result<(Vec<(String, Tensor)>, RunTrace)> {
        let ordered = self.order_inputs(inputs)?;
        let mut nodes = Vec::with_capacity(self.exec_nodes);
        let start = std::time::Instant::now();
        let outs = self.executor.run(&ordered, Some(&mut nodes))?;
        let total = start.elapsed();
        let peak_live_bytes = nodes
            .iter()
            .map(|n| n.live_bytes)
            .max()
            .unwrap_or(0)
            .max(self.plan.planned_peak_bytes as u64);
        Ok((
            self.name_outputs(outs),
            RunTrace {
                total,
                nodes,
                peak_live_bytes,
            },
        ))
    }

    /// Checks names, dtypes and shapes of the fed inputs and orders them as the graph does.
    /// Inputs bound at creation may be given again, with the same value only.
    fn order_inputs<'a>(&self, inputs: &'a [(&str, Tensor)]) -> Result<Vec<&'a Tensor>> {
        for (name, t) in inputs {
            if let Some(bound) = self.constant_inputs.get(*name) {
                if bound != t {
                    return Err(Error::Input {
                        name: name.to_string(),
                        message: format!(
                            "its value was fixed when the session was created ({} {:?}); a different value ({} {:?}) needs a new session",
                            bound.dtype(),
                            bound.shape(),
                            t.dtype(),
                            t.shape()
                        ),
                    });
                }
            } else if !self.input_infos.iter().any(|i| i.name == *name) {
                let known: Vec<&str> = self.input_infos.iter().map(|i| i.name.as_str()).collect();
                return Err(Error::Input {
                    name: name.to_string(),
                    message: format!("no such model input (inputs: {})", known.join(", ")),
                });
            }
            if inputs.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(Error::Input {
                    name: name.to_string(),
                    message: "given more than once".into(),
                });
            }
        }
        let mut ordered = Vec::with_capacity(self.input_infos.len());
        for info in &self.input_infos {
            let Some((_, t)) = inputs.iter().find(|(n, _)| *n == info.name) else {
                return Err(Error::Input {
                    name: info.name.clone(),
                    message: "missing: the model needs this input".into(),
                });
            };
            let want_shape = info.fixed_shape().unwrap_or_default();
            if Some(t.dtype()) != info.dtype {
                return Err(Error::Input {
                    name: info.name.clone(),
                    message: format!(
                        "expected element type {}, given {}",
                        info.dtype.map_or("unknown".to_string(), |d| d.to_string()),
                        t.dtype()
                    ),
                });
            }
            if t.shape() != want_shape.as_slice() {
                return Err(Error::Input {
                    name: info.name.clone(),
                    message: format!("expected shape {:?}, given {:?}", want_shape, t.shape()),
                });
            }
            ordered.push(t);
        }
        Ok(ordered)
    }

    fn name_outputs(&self, outs: Vec<Tensor>) -> Vec<(String, Tensor)> {
        self.output_names.iter().cloned().zip(outs).collect()
    }

    /// Where the model came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The graph after binding and constant folding, before fusion: one node per ONNX node
    /// that computes something (what reports show).
    pub fn bound_graph(&self) -> &Graph {
        &self.bound
    }

    /// The graph that runs (after fusion when `optimize` is on). `NodeTrace::node` indexes it.
    ///
    /// The session does not keep it while running (that would hold every weight once more): the
    /// first call rebuilds it from the bound graph with the same deterministic fusion passes
    /// the executor's graph came from, and keeps it from then on.
    pub fn exec_graph(&self) -> &Graph {
        if !self.optimize {
            return &self.bound;
        }
        self.exec.get_or_init(|| {
            // The same passes succeeded on the same graph when the session was created; should
            // they fail now, the bound graph (which the fusions only rewrite) is the fallback.
            crate::exec::optimize(&self.bound).unwrap_or_else(|_| self.bound.clone())
        })
    }

    /// The activation memory plan (liveness-based arena offsets): engine internals, for the
    /// CLI and tests.
    #[doc(hidden)]
    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The device this session executes on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The GPU adapter and per-node timing method of a `wgpu` session; `None` on the CPU.
    pub fn device(&self) -> Option<&DeviceInfo> {
        self.device.as_ref()
    }

    /// Worker threads kernels run on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Graph inputs with their bound dtype and shape, in graph order.
    pub fn input_infos(&self) -> &[ValueInfo] {
        &self.input_infos
    }

    /// The memory limit this session was checked against.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// Bytes held: the bound graph's constants plus the executor's arena, scratch, weights in
    /// kernel layouts and the constants it keeps for ops without a kernel (a rebuilt
    /// [`Session::exec_graph`] is not counted).
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved_bytes
    }
}
