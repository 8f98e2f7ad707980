//! Runs a bound (and usually optimized) graph on the CPU.
//!
//! All f32 activations live in one arena laid out by the [`MemoryPlan`]; it is allocated once
//! when the executor is built and reused by every run, and hot ops (those with a kernel in
//! [`crate::kernels`]) allocate nothing per inference: their plans (pool windows, Winograd's
//! GEMM geometry) are built at load and their scratch comes from the executor (measured
//! 28 Nov with a counting global allocator around a third `Session::run`: ResNet-50,
//! ResNeXt-50 and Inception-v3 at 1 and 2 threads make 6 allocations, 4.7 KB, all of them the
//! returned outputs; exceptions: grouped convs with over 1024 taps per group and pools of
//! other than 2 spatial dims allocate small index lists). Ops without a fast kernel go through
//! [`crate::ops::eval`]: their inputs are copied out of the arena into tensors and their outputs
//! copied back, which costs allocations but keeps every op runnable. Non-f32 activations (shape
//! arithmetic that could not be folded, integer inputs of node tests) are kept as tensors.
//!
//! Everything runs inside a rayon pool with exactly the requested number of workers, so kernels
//! that parallelise with rayon use that many threads and no more.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::ir::{Graph, Node, Op, ValueId};
use crate::session::NodeTrace;
use crate::tensor::{DType, Tensor};

use super::aligned::AlignedFloats;
use super::plan::MemoryPlan;
use super::steps::{group_siblings, prepare, Ctx, Kind, Span, Step};
use super::warm_workers::warm_other_workers;

/// A backend that runs one prepared graph. The CPU executor implements it; a GPU backend plugs
/// into [`crate::session::Session`] through the same trait.
pub trait Executor: Send {
    /// Runs once. `inputs` follow `graph.inputs` order and were validated by the session
    /// (dtype and shape equal the bound ones). Returns outputs in `graph.outputs` order. When
    /// `trace` is given, one [`NodeTrace`] per executed node is appended to it.
    fn run(
        &mut self,
        inputs: &[&Tensor],
        trace: Option<&mut Vec<NodeTrace>>,
    ) -> Result<Vec<Tensor>>;

    /// Bytes the executor holds for itself: arena, scratch, weights in kernel layouts. The CPU
    /// executor also counts the graph constants it keeps (it drops those only kernels read);
    /// the wgpu executor does not count its host copy of the graph's constants.
    fn reserved_bytes(&self) -> u64;
}

/// Where a value's data is found at run time.
#[derive(Debug, Clone, Copy)]
enum Loc {
    /// In `graph.constants`.
    Const,
    /// f32 elements `[start, start + len)` of the arena.
    Arena { start: usize, len: usize },
    /// A tensor in `slots` (non-f32 activations).
    Slot,
}

/// The CPU executor.
pub struct CpuExecutor {
    pool: rayon::ThreadPool,
    threads: usize,
    state: State,
}

/// Everything but the pool, so a run can borrow both at once.
struct State {
    graph: Graph,
    live_after: Vec<usize>,
    locs: Vec<Loc>,
    shapes: Vec<Vec<usize>>,
    arena: AlignedFloats,
    slots: Vec<Option<Tensor>>,
    /// Per node: the prepared kernel call, `None` for the reference path.
    steps: Vec<Option<Step>>,
    /// Kernel scratch (conv im2col blocks), shared by all nodes since they run one at a time.
    scratch: AlignedFloats,
    /// Bytes of weights copied into kernel layouts.
    packed_bytes: usize,
    /// Bytes of the constants `graph` still holds (those the reference evaluator reads).
    constant_bytes: usize,
}

/// The number of workers `threads` asks for (0 = every available core).
pub fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Upper bound of the bytes [`CpuExecutor::new`] allocates besides the arena: a packed copy of
/// every conv and Gemm/MatMul weight, and conv scratch (one im2col block per thread, sized
/// like the conv kernel's blocks: at most max(64 Ki, 64·K) floats, plus one image's whole
/// im2col matrix for convs on small maps, `kernels::unfolded_conv`). Sessions check it
/// against the memory limit before anything is allocated.
pub fn estimated_extra_bytes(graph: &Graph, threads: usize) -> u64 {
    let mut packed = 0u64;
    let mut scratch = 0u64;
    for node in &graph.nodes {
        let w = node.inputs.get(1).copied().flatten();
        let w_bytes = w
            .and_then(|id| graph.constants.get(&id))
            .map_or(0, |t| t.byte_len() as u64);
        match &node.op {
            Op::Conv(_) | Op::FusedConv { .. } => {
                packed += w_bytes;
                let k = w
                    .and_then(|id| graph.value(id).fixed_shape())
                    .map_or(0, |s| s[1..].iter().product::<usize>());
                let plane = node
                    .outputs
                    .first()
                    .and_then(|&o| graph.value(o).fixed_shape())
                    .map_or(0, |s| s.iter().skip(2).product::<usize>());
                let cols = if plane <= 64 {
                    (k * plane).min(crate::kernels::unfolded_conv::MAX_COLS)
                } else {
                    0
                };
                let blocks = threads as u64 * (65536u64).max(64 * k as u64);
                scratch = scratch.max(4 * (cols as u64 + blocks));
            }
            Op::Gemm { .. } | Op::MatMul => packed += 2 * w_bytes,
            _ => {}
        }
    }
    packed + scratch
}

impl CpuExecutor {
    /// Prepares `graph` (bound; optimized or not) with the memory plan computed for it.
    pub fn new(graph: Graph, plan: &MemoryPlan, threads: usize) -> Result<CpuExecutor> {
        let threads = resolve_threads(threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("engine-worker-{i}"))
            .build()
            .map_err(|e| Error::Backend {
                backend: "cpu".into(),
                message: format!("thread pool: {e}"),
            })?;
        let mut locs = vec![Loc::Slot; graph.values.len()];
        let mut shapes = vec![Vec::new(); graph.values.len()];
        for (k, info) in graph.values.iter().enumerate() {
            if let Some(s) = info.fixed_shape() {
                shapes[k] = s;
            }
            let id = ValueId(k);
            if graph.is_constant(id) {
                locs[k] = Loc::Const;
            } else if let Some(p) = plan.get(id) {
                if info.dtype == Some(DType::F32) {
                    locs[k] = Loc::Arena {
                        start: p.offset / 4,
                        len: p.bytes / 4,
                    };
                }
            }
        }
        let spans: Vec<Option<Span>> = locs
            .iter()
            .map(|l| match *l {
                Loc::Arena { start, len } => Some(Span { start, len }),
                _ => None,
            })
            .collect();
        let mut graph = graph;
        // Constants are copied into the steps' own layouts (packed conv weights, Gemm's B,
        // per-channel vectors). Once every reader of a constant has its step, the executor's
        // graph drops it: the unpacked weights are not kept alongside the packed ones, and
        // dropping them as packing proceeds keeps the two from ever coexisting in full.
        // `pending[v]`: readers of constant `v` not prepared yet; `needed[v]`: some reader
        // runs through the reference evaluator (or `v` is a graph output) and reads it there.
        let mut pending = vec![0usize; graph.values.len()];
        let mut needed = vec![false; graph.values.len()];
        for node in &graph.nodes {
            for id in node.inputs.iter().flatten() {
                pending[id.0] += 1;
            }
        }
        for id in &graph.outputs {
            needed[id.0] = true;
        }
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for i in 0..graph.nodes.len() {
            let cx = Ctx {
                graph: &graph,
                spans: &spans,
                threads,
            };
            let node = &graph.nodes[i];
            let step = prepare(&cx, node)
                .map_err(|e| Error::node(&node.name, node.op.type_name(), e.0))?;
            let mut done = Vec::new();
            for id in node.inputs.iter().flatten() {
                if !graph.is_constant(*id) {
                    continue;
                }
                needed[id.0] |= step.is_none();
                pending[id.0] = pending[id.0].saturating_sub(1);
                if pending[id.0] == 0 && !needed[id.0] {
                    done.push(*id);
                }
            }
            steps.push(step);
            for id in done {
                graph.constants.remove(&id);
            }
        }
        // Sibling 1×1 convs of one input as one call (`ENGINE_POINTWISE_GROUPS=off` keeps
        // them apart, for A/B runs).
        if !std::env::var("ENGINE_POINTWISE_GROUPS").is_ok_and(|v| v == "off") {
            group_siblings(&mut steps, threads);
        }
        let packed_bytes = steps.iter().flatten().map(Step::packed_bytes).sum();
        let constant_bytes = graph.parameter_totals().1;
        let scratch_len = steps.iter().flatten().map(|s| s.scratch).max().unwrap_or(0);
        let scratch = AlignedFloats::zeroed(scratch_len);
        let arena = AlignedFloats::zeroed(plan.arena_bytes.div_ceil(4));
        let slots = vec![None; graph.values.len()];
        let state = State {
            live_after: plan.live_bytes_after.clone(),
            graph,
            locs,
            shapes,
            arena,
            slots,
            steps,
            scratch,
            packed_bytes,
            constant_bytes,
        };
        Ok(CpuExecutor {
            pool,
            threads,
            state,
        })
    }

    /// Worker threads of this executor's pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The graph this executor runs. Constants that only kernels read were moved into the
    /// kernels' layouts and are no longer in `graph().constants`; the ones the reference
    /// evaluator reads (and constant graph outputs) are.
    pub fn graph(&self) -> &Graph {
        &self.state.graph
    }

    /// Nodes that run through a fast kernel; the others use [`crate::ops::eval`].
    pub fn kernel_nodes(&self) -> usize {
        self.state.kernel_nodes()
    }

    /// Nodes that run inside a group of sibling 1×1 convs (one kernel call per group).
    pub fn grouped_nodes(&self) -> usize {
        self.state
            .steps
            .iter()
            .flatten()
            .map(|s| match &s.kind {
                Kind::PointwiseGroup { members, .. } => members.len(),
                _ => 0,
            })
            .sum()
    }
}

impl State {
    fn run_inner(
        &mut self,
        inputs: &[&Tensor],
        mut trace: Option<&mut Vec<NodeTrace>>,
    ) -> Result<Vec<Tensor>> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(Error::Model(format!(
                "executor expects {} inputs, got {}",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        for (k, t) in inputs.iter().enumerate() {
            self.store(self.graph.inputs[k], t)?;
        }
        for i in 0..self.graph.nodes.len() {
            let start = trace.as_ref().map(|_| Instant::now());
            let (allocated, macs) = self.run_node(i)?;
            if let (Some(tr), Some(start)) = (trace.as_deref_mut(), start) {
                let elapsed = start.elapsed();
                let live = |node: usize| self.live_after.get(node).copied().unwrap_or(0) as u64;
                match self.steps[i].as_ref().map(|s| &s.kind) {
                    // One call ran every sibling: each gets its share of the time by
                    // multiply-adds (they share the input and the kernel).
                    Some(Kind::PointwiseGroup { members, .. }) => {
                        let total = members.iter().map(|m| m.1).sum::<u64>().max(1);
                        for &(node, node_macs) in members {
                            tr.push(NodeTrace {
                                node,
                                elapsed: elapsed.mul_f64(node_macs as f64 / total as f64),
                                allocated_bytes: 0,
                                live_bytes: live(node),
                                macs_executed: node_macs,
                            });
                        }
                    }
                    // Traced with its group's first step.
                    Some(Kind::InGroup) => {}
                    _ => tr.push(NodeTrace {
                        node: i,
                        elapsed,
                        allocated_bytes: allocated as u64,
                        live_bytes: live(i),
                        macs_executed: macs,
                    }),
                }
            }
        }
        self.graph
            .outputs
            .iter()
            .map(|&id| self.fetch(id))
            .collect()
    }

    /// Copies `t` into the value's home (arena or slot).
    fn store(&mut self, id: ValueId, t: &Tensor) -> Result<()> {
        let info = self.graph.value(id);
        if t.shape() != self.shapes[id.0].as_slice() || Some(t.dtype()) != info.dtype {
            return Err(Error::Model(format!(
                "value '{}' computed as {} {:?}, planned as {:?} {:?}",
                info.name,
                t.dtype(),
                t.shape(),
                info.dtype,
                self.shapes[id.0]
            )));
        }
        match self.locs[id.0] {
            Loc::Arena { start, len } => {
                let a = t
                    .as_f32()
                    .ok_or_else(|| Error::Model(format!("value '{}' is not f32", info.name)))?;
                let dst = &mut self.arena[start..start + len];
                match a.as_slice() {
                    Some(src) => dst.copy_from_slice(src),
                    None => dst.iter_mut().zip(a.iter()).for_each(|(d, s)| *d = *s),
                }
            }
            Loc::Slot => self.slots[id.0] = Some(t.clone()),
            Loc::Const => {
                return Err(Error::Model(format!(
                    "value '{}' is a constant and cannot be written",
                    info.name
                )))
            }
        }
        Ok(())
    }

    /// A tensor copy of a value (for outputs and for ops run by the reference evaluator).
    fn fetch(&self, id: ValueId) -> Result<Tensor> {
        let name = || self.graph.value(id).name.clone();
        match self.locs[id.0] {
            Loc::Const => self
                .graph
                .constants
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::Model(format!("constant '{}' missing", name()))),
            Loc::Arena { start, len } => {
                Tensor::from_f32(&self.shapes[id.0], self.arena[start..start + len].to_vec())
                    .ok_or_else(|| {
                        Error::Model(format!(
                            "value '{}': arena slice does not match its shape",
                            name()
                        ))
                    })
            }
            Loc::Slot => self.slots[id.0].clone().ok_or_else(|| {
                Error::Model(format!("value '{}' read before it was computed", name()))
            }),
        }
    }

    /// Runs node `i`; returns (bytes allocated, multiply-accumulates performed).
    fn run_node(&mut self, i: usize) -> Result<(usize, u64)> {
        match &self.steps[i] {
            Some(step) => {
                step.run(&mut self.arena, &mut self.scratch).map_err(|e| {
                    let n = &self.graph.nodes[i];
                    Error::node(&n.name, n.op.type_name(), e.0)
                })?;
                Ok((0, step.macs))
            }
            None => self.run_reference_node(i),
        }
    }

    /// How many nodes run through a fast kernel (the rest use the reference evaluator).
    fn kernel_nodes(&self) -> usize {
        self.steps.iter().flatten().count()
    }

    /// The general path: reference evaluation on tensor copies.
    fn run_reference_node(&mut self, i: usize) -> Result<(usize, u64)> {
        let node = &self.graph.nodes[i];
        let mut allocated = 0usize;
        let mut owned: Vec<Option<Tensor>> = Vec::with_capacity(node.inputs.len());
        for id in &node.inputs {
            owned.push(match id {
                Some(id) if matches!(self.locs[id.0], Loc::Arena { .. }) => {
                    let t = self.fetch(*id)?;
                    allocated += t.byte_len();
                    Some(t)
                }
                _ => None,
            });
        }
        let mut refs: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
        for (id, o) in node.inputs.iter().zip(&owned) {
            refs.push(match (id, o) {
                (None, _) => None,
                (Some(_), Some(t)) => Some(t),
                (Some(id), None) => Some(
                    match self.locs[id.0] {
                        Loc::Const => self.graph.constants.get(id),
                        _ => self.slots[id.0].as_ref(),
                    }
                    .ok_or_else(|| {
                        Error::Model(format!(
                            "node '{}' reads value '{}' before it was computed",
                            node.name,
                            self.graph.value(*id).name
                        ))
                    })?,
                ),
            });
        }
        let outs = crate::ops::eval(node, &refs)?;
        let macs = analytic_macs(&self.graph, node);
        drop(refs);
        drop(owned);
        let outputs = self.graph.nodes[i].outputs.clone();
        for (id, t) in outputs.iter().zip(outs) {
            allocated += t.byte_len();
            self.store(*id, &t).map_err(|e| match e {
                Error::Model(m) => {
                    let n = &self.graph.nodes[i];
                    Error::node(&n.name, n.op.type_name(), m)
                }
                e => e,
            })?;
        }
        Ok((allocated, macs))
    }
}

/// Multiply-accumulates of the direct algorithm for Conv/FusedConv/Gemm/MatMul (what the
/// reference evaluator performs); 0 for other ops. The one cost model decides: kernels that do
/// fewer multiplies (Winograd) report their own count separately.
pub fn analytic_macs(graph: &Graph, node: &Node) -> u64 {
    crate::cost::node_cost(graph, node).macs
}

impl Executor for CpuExecutor {
    fn run(
        &mut self,
        inputs: &[&Tensor],
        trace: Option<&mut Vec<NodeTrace>>,
    ) -> Result<Vec<Tensor>> {
        let state = &mut self.state;
        self.pool.install(|| {
            warm_other_workers();
            state.run_inner(inputs, trace)
        })
    }

    fn reserved_bytes(&self) -> u64 {
        ((self.state.arena.len() + self.state.scratch.len()) * 4
            + self.state.packed_bytes
            + self.state.constant_bytes) as u64
    }
}
