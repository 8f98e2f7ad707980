//! The wgpu backend: runs a bound (and usually optimized) graph with WGSL compute shaders.
//!
//! Layout on the device:
//! - every f32 constant a node reads is uploaded once into its own storage buffer (one buffer
//!   per tensor, so no single binding has to hold all the weights);
//! - every activation lives in one *arena* storage buffer at an element offset planned from
//!   liveness (`plan.rs`): values whose live ranges do not intersect share bytes, and
//!   Reshape/Flatten/Squeeze/Unsqueeze/Identity/Dropout outputs are aliases of their input (no
//!   copy, no dispatch);
//! - every node's parameters (offsets, shapes, attributes) sit in a small uniform buffer, and
//!   its bind group is built once, so a run only records dispatches.
//!
//! A run is one upload of the inputs, one command buffer, and one readback of the outputs.
//! Profiled runs time each node with GPU timestamp queries when the adapter supports
//! `TIMESTAMP_QUERY`; otherwise they submit and wait per node and measure wall-clock time
//! ([`TimingMethod`] says which).
//!
//! Errors never panic: a missing adapter, shader or validation errors (caught with error
//! scopes; anything else is recorded by an uncaptured-error handler and reported after the
//! run) and buffers over the device limits all come back as [`Error::Backend`].

mod plan;
mod shaders;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::ir::{Activation, Graph, Node, Op, ValueId};
use crate::session::NodeTrace;
use crate::tensor::{DType, Tensor};

use plan::{Loc, Plan};
use shaders::Kernel;

/// Words of per-node parameters (the shaders' `Params` block: 8 × `vec4<u32>`).
const PARAM_WORDS: usize = 32;

/// How profiled runs measure per-node time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingMethod {
    /// GPU timestamps written at the start and end of each node's compute pass.
    GpuTimestamps,
    /// Each node submitted alone and waited for; includes submission and sync overhead.
    WallClockPerDispatch,
}

impl TimingMethod {
    pub fn describe(self) -> &'static str {
        match self {
            TimingMethod::GpuTimestamps => "GPU timestamp queries per node",
            TimingMethod::WallClockPerDispatch => {
                "wall-clock per node (each node submitted and waited for; no GPU timestamps)"
            }
        }
    }
}

fn backend_err(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: "wgpu".into(),
        message: message.into(),
    }
}

fn node_err(node: &Node, message: impl Into<String>) -> Error {
    backend_err(format!(
        "node '{}' ({}): {}; use --backend cpu",
        node.name,
        node.op.type_name(),
        message.into()
    ))
}

/// One compute dispatch of a node.
struct Dispatch {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// Timestamp query resources (when the adapter supports them).
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

/// Executes a graph on a wgpu device.
pub struct WgpuExecutor {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_name: String,
    adapter_backend: String,
    graph: Graph,
    plan: Plan,
    arena: wgpu::Buffer,
    /// Keeps weights, uniforms and the placeholder buffer alive (bind groups reference them).
    _owned: Vec<wgpu::Buffer>,
    pipelines: Vec<(Kernel, wgpu::ComputePipeline)>,
    steps: Vec<Vec<Dispatch>>,
    macs: Vec<u64>,
    readback: wgpu::Buffer,
    readback_bytes: u64,
    timestamps: Option<Timestamps>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Device bytes besides the graph's constants (arena, uniforms, derived BN tensors).
    device_bytes: u64,
}

/// The first adapter wgpu offers (high performance preferred), or a clear error.
fn pick_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        ..Default::default()
    };
    pollster::block_on(instance.request_adapter(&options)).map_err(|e| {
        backend_err(format!(
            "no GPU adapter found ({e}); install a Vulkan/Metal/DX12 driver (on Linux without a \
             GPU: mesa-vulkan-drivers for lavapipe) or use --backend cpu"
        ))
    })
}

/// Name and API of the adapter this machine would use, without building an executor.
pub fn adapter_description() -> Result<String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let info = pick_adapter(&instance)?.get_info();
    Ok(format!(
        "{} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    ))
}

impl WgpuExecutor {
    /// Prepares `graph` (bound: every value has a fixed shape and dtype): picks the adapter,
    /// compiles the shaders, uploads the constants and builds every node's bind groups.
    pub fn new(graph: Graph) -> Result<WgpuExecutor> {
        Self::with_timing(graph, true)
    }

    /// Like [`WgpuExecutor::new`]; `use_timestamps = false` makes profiled runs use per-node
    /// wall-clock timing even where GPU timestamps are available (to compare the two, and to
    /// test that path on adapters that have timestamps).
    pub fn with_timing(graph: Graph, use_timestamps: bool) -> Result<WgpuExecutor> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pick_adapter(&instance)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let timestamp =
            use_timestamps && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let required_features = if timestamp {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("engine"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| {
            backend_err(format!(
                "adapter '{}': device request failed: {e}",
                info.name
            ))
        })?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));

        let plan = plan::plan(&graph)?;
        let arena_bytes = (plan.arena_elems.max(1) as u64) * 4;
        let max_binding = limits.max_storage_buffer_binding_size as u64;
        let max_buffer = limits.max_buffer_size;
        let check_size = |what: &str, bytes: u64| -> Result<()> {
            if bytes > max_binding || bytes > max_buffer {
                return Err(backend_err(format!(
                    "{what} needs {bytes} bytes, over the adapter '{}' limits \
                     (max_storage_buffer_binding_size {max_binding}, max_buffer_size \
                     {max_buffer}); use a smaller batch/input or --backend cpu",
                    info.name
                )));
            }
            Ok(())
        };
        check_size("the activation arena", arena_bytes)?;
        if plan.arena_elems > u32::MAX as usize {
            return Err(backend_err(format!(
                "activation arena of {} elements exceeds 32-bit shader indexing",
                plan.arena_elems
            )));
        }

        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);

        let layout = bind_group_layout(&device);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("engine"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut pipelines = Vec::new();
        for k in Kernel::ALL {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(k.name()),
                source: wgpu::ShaderSource::Wgsl(k.source().into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.name()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(backend_err(format!(
                    "shader '{}' failed to compile: {e}",
                    k.name()
                )));
            }
            pipelines.push((k, pipeline));
        }

        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("activations"),
            size: arena_bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut device_bytes = arena_bytes;
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // Constant buffers, created on first use.
        let mut const_bufs: std::collections::HashMap<ValueId, usize> = Default::default();
        let mut owned: Vec<wgpu::Buffer> = Vec::new();
        let mut steps = Vec::with_capacity(graph.nodes.len());
        let mut macs = Vec::with_capacity(graph.nodes.len());
        {
            let mut b = Builder {
                device: &device,
                graph: &graph,
                plan: &plan,
                layout: &layout,
                arena: &arena,
                placeholder: &placeholder,
                const_bufs: &mut const_bufs,
                owned: &mut owned,
                device_bytes: &mut device_bytes,
                check_size: &check_size,
            };
            for node in &graph.nodes {
                steps.push(b.node_dispatches(node)?);
                macs.push(crate::exec::executor::analytic_macs(&graph, node));
            }
        }
        owned.push(placeholder);

        let readback_bytes: u64 = graph
            .outputs
            .iter()
            .map(|&id| plan.elems[id.0] as u64 * 4)
            .sum::<u64>()
            .max(4);
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: readback_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let timestamps = if timestamp {
            let count = (2 * graph.nodes.len()).max(2) as u32;
            if count > wgpu::QUERY_SET_MAX_QUERIES {
                None
            } else {
                let bytes = count as u64 * 8;
                Some(Timestamps {
                    set: device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("node timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count,
                    }),
                    resolve: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("timestamps"),
                        size: bytes,
                        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    }),
                    readback: device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("timestamps readback"),
                        size: bytes,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }),
                    period_ns: queue.get_timestamp_period() as f64,
                })
            }
        } else {
            None
        };

        let validation_err = pollster::block_on(validation.pop());
        let oom_err = pollster::block_on(oom.pop());
        if let Some(e) = oom_err {
            return Err(backend_err(format!(
                "out of device memory while uploading {device_bytes} bytes: {e}"
            )));
        }
        if let Some(e) = validation_err {
            return Err(backend_err(format!(
                "setting up the graph failed validation: {e}"
            )));
        }
        let exec = WgpuExecutor {
            device,
            queue,
            adapter_name: info.name.clone(),
            adapter_backend: format!("{:?}", info.backend),
            graph,
            plan,
            arena,
            _owned: owned,
            pipelines,
            steps,
            macs,
            readback,
            readback_bytes,
            timestamps,
            errors,
            device_bytes,
        };
        exec.take_errors()?;
        Ok(exec)
    }

    /// The adapter's name as the driver reports it (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub fn adapter_name(&self) -> &str {
        &self.adapter_name
    }

    /// The graphics API wgpu uses on this adapter (Vulkan, Metal, Dx12, Gl).
    pub fn adapter_backend(&self) -> &str {
        &self.adapter_backend
    }

    /// How profiled runs time nodes on this adapter.
    pub fn timing_method(&self) -> TimingMethod {
        if self.timestamps.is_some() {
            TimingMethod::GpuTimestamps
        } else {
            TimingMethod::WallClockPerDispatch
        }
    }

    /// Number of compute dispatches a run records (alias nodes have none).
    pub fn dispatch_count(&self) -> usize {
        self.steps.iter().map(Vec::len).sum()
    }

    /// Errors the uncaptured-error handler recorded since the last call.
    fn take_errors(&self) -> Result<()> {
        let mut v = self
            .errors
            .lock()
            .map_err(|_| backend_err("error log poisoned"))?;
        if v.is_empty() {
            return Ok(());
        }
        let msg = v.join("; ");
        v.clear();
        Err(backend_err(format!("device error: {msg}")))
    }

    fn pipeline(&self, k: Kernel) -> Result<&wgpu::ComputePipeline> {
        self.pipelines
            .iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, p)| p)
            .ok_or_else(|| backend_err(format!("pipeline {} missing", k.name())))
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, node: usize) -> Result<()> {
        for d in &self.steps[node] {
            pass.set_pipeline(self.pipeline(d.kernel)?);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
        Ok(())
    }

    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| backend_err(format!("waiting for the device failed: {e}")))
    }

    /// Maps `buf` for reading, waits, and hands the bytes to `f`.
    fn read_mapped<T>(
        &self,
        buf: &wgpu::Buffer,
        bytes: u64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        let slice = buf.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| backend_err("buffer mapping never completed"))?
            .map_err(|e| backend_err(format!("mapping a readback buffer failed: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| backend_err(format!("reading a mapped buffer failed: {e}")))?;
            f(&view)
        };
        buf.unmap();
        Ok(out)
    }

    fn run_inner(
        &mut self,
        inputs: &[&Tensor],
        trace: Option<&mut Vec<NodeTrace>>,
    ) -> Result<Vec<Tensor>> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(backend_err(format!(
                "executor expects {} inputs, got {}",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        for (k, t) in inputs.iter().enumerate() {
            let id = self.graph.inputs[k];
            let name = &self.graph.value(id).name;
            let a = t.as_f32().ok_or_else(|| {
                backend_err(format!(
                    "input '{name}' is {}; the wgpu backend computes in float32 only (use --backend cpu)",
                    t.dtype()
                ))
            })?;
            if a.len() != self.plan.elems[id.0] {
                return Err(backend_err(format!(
                    "input '{name}' has {} elements, planned {}",
                    a.len(),
                    self.plan.elems[id.0]
                )));
            }
            match self.plan.locs[id.0] {
                Loc::Arena(off) => {
                    let data: Vec<f32> = a.iter().copied().collect();
                    if !data.is_empty() {
                        self.queue.write_buffer(
                            &self.arena,
                            off as u64 * 4,
                            bytemuck::cast_slice(&data),
                        );
                    }
                }
                _ => return Err(backend_err(format!("input '{name}' has no arena slot"))),
            }
        }

        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let n = self.graph.nodes.len();
        let mut elapsed: Vec<Duration> = vec![Duration::ZERO; n];
        match (&trace, &self.timestamps) {
            (Some(_), Some(ts)) => {
                let mut enc = self.device.create_command_encoder(&Default::default());
                for i in 0..n {
                    if self.steps[i].is_empty() {
                        continue;
                    }
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &ts.set,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    self.record(&mut pass, i)?;
                }
                let count = (2 * n).max(2) as u32;
                enc.resolve_query_set(&ts.set, 0..count, &ts.resolve, 0);
                enc.copy_buffer_to_buffer(&ts.resolve, 0, &ts.readback, 0, count as u64 * 8);
                self.queue.submit([enc.finish()]);
                let ticks: Vec<u64> = self.read_mapped(&ts.readback, count as u64 * 8, |b| {
                    b.chunks_exact(8)
                        .map(|c| {
                            u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                        })
                        .collect()
                })?;
                for (i, e) in elapsed.iter_mut().enumerate() {
                    if self.steps[i].is_empty() {
                        continue;
                    }
                    let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                    *e = Duration::from_nanos((dt as f64 * ts.period_ns) as u64);
                }
            }
            (Some(_), None) => {
                // Flush the input upload first so the first node is not charged for it.
                self.queue.submit([]);
                self.wait()?;
                for (i, e) in elapsed.iter_mut().enumerate() {
                    if self.steps[i].is_empty() {
                        continue;
                    }
                    let start = Instant::now();
                    let mut enc = self.device.create_command_encoder(&Default::default());
                    {
                        let mut pass = enc.begin_compute_pass(&Default::default());
                        self.record(&mut pass, i)?;
                    }
                    self.queue.submit([enc.finish()]);
                    self.wait()?;
                    *e = start.elapsed();
                }
            }
            (None, _) => {
                let mut enc = self.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for i in 0..n {
                        self.record(&mut pass, i)?;
                    }
                }
                self.queue.submit([enc.finish()]);
            }
        }

        // One readback of all outputs.
        let mut enc = self.device.create_command_encoder(&Default::default());
        let mut at = 0u64;
        let mut where_: Vec<Option<(u64, usize)>> = Vec::new();
        for &id in &self.graph.outputs {
            let len = self.plan.elems[id.0];
            match self.plan.locs[id.0] {
                Loc::Arena(off) if len > 0 => {
                    enc.copy_buffer_to_buffer(
                        &self.arena,
                        off as u64 * 4,
                        &self.readback,
                        at,
                        len as u64 * 4,
                    );
                    where_.push(Some((at, len)));
                    at += len as u64 * 4;
                }
                _ => where_.push(None),
            }
        }
        self.queue.submit([enc.finish()]);
        let data: Vec<f32> = self.read_mapped(&self.readback, self.readback_bytes, |b| {
            bytemuck::pod_collect_to_vec::<u8, f32>(b)
        })?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(backend_err(format!("run failed validation: {e}")));
        }
        self.take_errors()?;

        let mut outs = Vec::with_capacity(self.graph.outputs.len());
        for (&id, w) in self.graph.outputs.iter().zip(&where_) {
            let shape = self.graph.value(id).fixed_shape().unwrap_or_default();
            let t = match (w, self.plan.locs[id.0]) {
                (Some((at, len)), _) => {
                    let s = *at as usize / 4;
                    Tensor::from_f32(&shape, data[s..s + len].to_vec())
                }
                (None, Loc::Const(c)) => self.graph.constants.get(&c).cloned(),
                (None, _) => Tensor::from_f32(&shape, Vec::new()),
            };
            outs.push(t.ok_or_else(|| {
                backend_err(format!(
                    "output '{}' could not be assembled",
                    self.graph.value(id).name
                ))
            })?);
        }
        if let Some(tr) = trace {
            for (i, e) in elapsed.into_iter().enumerate() {
                tr.push(NodeTrace {
                    node: i,
                    elapsed: e,
                    allocated_bytes: 0,
                    live_bytes: self.plan.live_after.get(i).copied().unwrap_or(0),
                    macs_executed: self.macs[i],
                });
            }
        }
        Ok(outs)
    }
}

impl Executor for WgpuExecutor {
    fn run(
        &mut self,
        inputs: &[&Tensor],
        trace: Option<&mut Vec<NodeTrace>>,
    ) -> Result<Vec<Tensor>> {
        self.run_inner(inputs, trace)
    }

    /// Device bytes besides the graph's constants (whose device copies mirror the host ones):
    /// the activation arena, per-node uniforms and derived BatchNormalization tensors.
    fn reserved_bytes(&self) -> u64 {
        self.device_bytes
    }
}

fn bind_group_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("engine"),
        entries: &[
            storage(0, false),
            storage(1, true),
            storage(2, true),
            wgpu::BindGroupLayoutEntry {
                binding: 3,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
        ],
    })
}

/// Where a kernel reads one input from: `(sel, element offset)` with sel 0 = arena,
/// 1/2 = the node's first/second constant binding.
type Src = (u32, u32);

/// Builds the dispatches of each node.
struct Builder<'a> {
    device: &'a wgpu::Device,
    graph: &'a Graph,
    plan: &'a Plan,
    layout: &'a wgpu::BindGroupLayout,
    arena: &'a wgpu::Buffer,
    placeholder: &'a wgpu::Buffer,
    const_bufs: &'a mut std::collections::HashMap<ValueId, usize>,
    owned: &'a mut Vec<wgpu::Buffer>,
    device_bytes: &'a mut u64,
    check_size: &'a dyn Fn(&str, u64) -> Result<()>,
}

/// Constant bindings of one dispatch (at most two).
#[derive(Default)]
struct Consts {
    slots: Vec<usize>,
}

impl Builder<'_> {
    /// Uploads a host f32 array as a read-only storage buffer; returns its index in `owned`.
    fn upload(&mut self, label: &str, data: &[f32]) -> Result<usize> {
        let bytes = (data.len().max(1) * 4) as u64;
        (self.check_size)(&format!("constant '{label}'"), bytes)?;
        let contents: Vec<f32> = if data.is_empty() {
            vec![0.0]
        } else {
            data.to_vec()
        };
        let buf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&contents),
                usage: wgpu::BufferUsages::STORAGE,
            });
        *self.device_bytes += bytes;
        self.owned.push(buf);
        Ok(self.owned.len() - 1)
    }

    fn const_buffer(&mut self, node: &Node, id: ValueId) -> Result<usize> {
        if let Some(&k) = self.const_bufs.get(&id) {
            return Ok(k);
        }
        let t = self
            .graph
            .constants
            .get(&id)
            .ok_or_else(|| node_err(node, "constant missing"))?;
        let a = t.as_f32().ok_or_else(|| {
            node_err(
                node,
                format!(
                    "constant '{}' is {}; the wgpu backend computes in float32 only",
                    self.graph.value(id).name,
                    t.dtype()
                ),
            )
        })?;
        let data: Vec<f32> = a.iter().copied().collect();
        let k = self.upload(&self.graph.value(id).name.clone(), &data)?;
        // The session already counts the graph's constants.
        *self.device_bytes -= (data.len().max(1) * 4) as u64;
        self.const_bufs.insert(id, k);
        Ok(k)
    }

    /// Resolves where input `id` is read from, binding constants into free slots.
    fn src(&mut self, node: &Node, id: ValueId, consts: &mut Consts) -> Result<Src> {
        if self.graph.value(id).dtype != Some(DType::F32) {
            return Err(node_err(
                node,
                format!(
                    "value '{}' is {}; the wgpu backend computes in float32 only",
                    self.graph.value(id).name,
                    self.graph
                        .value(id)
                        .dtype
                        .map_or("unknown".into(), |d| d.to_string())
                ),
            ));
        }
        match self.plan.locs[id.0] {
            Loc::Arena(off) => Ok((0, off)),
            Loc::Const(c) => {
                let k = self.const_buffer(node, c)?;
                Ok((self.bind_const(node, k, consts)?, 0))
            }
            Loc::None => Err(node_err(
                node,
                format!(
                    "value '{}' has no device location",
                    self.graph.value(id).name
                ),
            )),
        }
    }

    fn bind_const(&mut self, node: &Node, k: usize, consts: &mut Consts) -> Result<u32> {
        if let Some(pos) = consts.slots.iter().position(|&s| s == k) {
            return Ok(pos as u32 + 1);
        }
        if consts.slots.len() >= 2 {
            return Err(node_err(node, "more than two constant inputs"));
        }
        consts.slots.push(k);
        Ok(consts.slots.len() as u32)
    }

    fn out(&self, node: &Node, k: usize) -> Result<u32> {
        let id = *node
            .outputs
            .get(k)
            .ok_or_else(|| node_err(node, "missing output"))?;
        match self.plan.locs[id.0] {
            Loc::Arena(off) => Ok(off),
            _ => Err(node_err(node, "output has no arena slot")),
        }
    }

    fn dispatch(
        &mut self,
        kernel: Kernel,
        params: &[u32],
        consts: &Consts,
        work: [u32; 3],
    ) -> Dispatch {
        let mut words = [0u32; PARAM_WORDS];
        words[..params.len()].copy_from_slice(params);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(kernel.name()),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        *self.device_bytes += (PARAM_WORDS * 4) as u64;
        let c0 = consts
            .slots
            .first()
            .map_or(self.placeholder, |&k| &self.owned[k]);
        let c1 = consts
            .slots
            .get(1)
            .map_or(self.placeholder, |&k| &self.owned[k]);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.arena.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: c0.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: c1.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: uniform.as_entire_binding(),
                },
            ],
        });
        self.owned.push(uniform);
        let groups = if kernel.tiled() {
            work
        } else {
            let wg = (work[0] as u64).div_ceil(256).max(1);
            let x = wg.min(65535);
            [x as u32, wg.div_ceil(x) as u32, 1]
        };
        Dispatch {
            kernel,
            bind_group,
            groups,
        }
    }

    fn shape(&self, id: ValueId) -> Vec<usize> {
        self.graph.value(id).fixed_shape().unwrap_or_default()
    }

    fn input(&self, node: &Node, k: usize) -> Result<ValueId> {
        node.inputs
            .get(k)
            .copied()
            .flatten()
            .ok_or_else(|| node_err(node, format!("input {k} missing")))
    }

    fn const_f32(&self, node: &Node, k: usize) -> Result<Option<Vec<f32>>> {
        let Some(id) = node.inputs.get(k).copied().flatten() else {
            return Ok(None);
        };
        let t = self.graph.constants.get(&id).ok_or_else(|| {
            node_err(
                node,
                format!("input {k} must be a constant on the wgpu backend"),
            )
        })?;
        let a = t
            .as_f32()
            .ok_or_else(|| node_err(node, format!("input {k} must be float32")))?;
        Ok(Some(a.iter().copied().collect()))
    }

    fn node_dispatches(&mut self, node: &Node) -> Result<Vec<Dispatch>> {
        // Values with nothing to compute (aliases, zero-size) need no dispatch.
        if node.outputs.iter().all(|o| self.plan.aliased[o.0]) {
            return Ok(Vec::new());
        }
        if node
            .outputs
            .iter()
            .any(|o| self.graph.value(*o).dtype != Some(DType::F32))
        {
            return Err(node_err(
                node,
                "non-float32 output; the wgpu backend computes in float32 only",
            ));
        }
        let total = node.outputs.first().map_or(0, |o| self.plan.elems[o.0]);
        if total == 0 {
            return Ok(Vec::new());
        }
        match &node.op {
            Op::Conv(c) => self.conv(node, c, Activation::None, false),
            Op::FusedConv {
                conv,
                activation,
                has_residual,
            } => self.conv(node, conv, *activation, *has_residual),
            Op::Relu => self.unary_act(node, Activation::Relu),
            Op::LeakyRelu { alpha } => self.unary_act(node, Activation::LeakyRelu(*alpha)),
            Op::Sigmoid => self.unary_act(node, Activation::Sigmoid),
            Op::Clip => {
                let lo = self.const_f32(node, 1)?.and_then(|v| v.first().copied());
                let hi = self.const_f32(node, 2)?.and_then(|v| v.first().copied());
                self.unary_act(
                    node,
                    Activation::Clip(lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY)),
                )
            }
            Op::Add => self.binary(node, 0, 0, 1),
            Op::Sub => self.binary(node, 1, 0, 1),
            Op::Mul => self.binary(node, 2, 0, 1),
            Op::Div => self.binary(node, 3, 0, 1),
            Op::Sum => {
                let ids: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
                let mut v = Vec::new();
                match ids.len() {
                    0 => return Err(node_err(node, "Sum without inputs")),
                    1 => v.extend(self.copy_like(node, ids[0])?),
                    _ => {
                        v.extend(self.binary_ids(node, 0, ids[0], ids[1])?);
                        let y = node.outputs[0];
                        for &id in &ids[2..] {
                            v.extend(self.binary_ids(node, 0, y, id)?);
                        }
                    }
                }
                Ok(v)
            }
            Op::BatchNormalization { epsilon } => self.batchnorm(node, *epsilon),
            Op::MaxPool(a) => self.pool(node, a, true),
            Op::AveragePool(a) => self.pool(node, a, false),
            Op::GlobalAveragePool => self.global_pool(node, false),
            Op::GlobalMaxPool => self.global_pool(node, true),
            Op::Concat { axis } => self.concat(node, *axis),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => self.gemm(node, *alpha, *beta, *trans_a, *trans_b),
            Op::MatMul => self.matmul(node),
            Op::Softmax { axis, legacy } => self.softmax(node, *axis, *legacy),
            Op::Transpose { perm } => self.transpose(node, perm.as_deref()),
            Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Identity
            | Op::Dropout => {
                // Not aliased (e.g. the input is a constant or the output a graph input):
                // copy.
                let x = self.input(node, 0)?;
                self.copy_like(node, x)
            }
            other => Err(node_err(
                node,
                format!(
                    "op {} is not implemented on the wgpu backend",
                    other.type_name()
                ),
            )),
        }
    }

    fn conv(
        &mut self,
        node: &Node,
        c: &crate::ir::ConvAttrs,
        act: Activation,
        has_residual: bool,
    ) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let w = self.input(node, 1)?;
        let xs = self.shape(x);
        let ws = self.shape(w);
        let ys = self.shape(node.outputs[0]);
        if xs.len() != 4 || ws.len() != 4 || ys.len() != 4 {
            return Err(node_err(
                node,
                format!("only 2-D convolutions run on the wgpu backend (input shape {xs:?})"),
            ));
        }
        let kernel = c.kernel_shape.clone().unwrap_or_else(|| ws[2..].to_vec());
        if c.strides.len() != 2 || c.dilations.len() != 2 || c.pads.len() != 4 || kernel.len() != 2
        {
            return Err(node_err(
                node,
                "convolution attributes are not canonical 2-D",
            ));
        }
        let g = c.group.max(1);
        let mut consts = Consts::default();
        let (xsel, xoff) = self.src(node, x, &mut consts)?;
        let (wsel, woff) = self.src(node, w, &mut consts)?;
        let bias = node.inputs.get(2).copied().flatten();
        let (bsel, boff) = match bias {
            Some(b) => self.src(node, b, &mut consts)?,
            None => (0, 0),
        };
        let res = if has_residual {
            let r = self.input(node, 3)?;
            match self.src(node, r, &mut consts)? {
                (0, off) => off + 1,
                _ => return Err(node_err(node, "constant residual input")),
            }
        } else {
            0
        };
        let (ak, aa, ab) = act_params(act);
        let m = ys[1];
        let params = [
            xsel,
            xoff,
            wsel,
            woff,
            bias.is_some() as u32,
            res,
            self.out(node, 0)?,
            xs[0] as u32,
            xs[1] as u32,
            xs[2] as u32,
            xs[3] as u32,
            m as u32,
            ys[2] as u32,
            ys[3] as u32,
            kernel[0] as u32,
            kernel[1] as u32,
            c.strides[0] as u32,
            c.strides[1] as u32,
            c.pads[0] as u32,
            c.pads[1] as u32,
            c.dilations[0] as u32,
            c.dilations[1] as u32,
            g as u32,
            ak,
            aa,
            ab,
            bsel,
            boff,
        ];
        let mg = m / g;
        let nn = ys[0] * ys[2] * ys[3];
        let d = if mg >= 16 {
            let work = [nn.div_ceil(64) as u32, mg.div_ceil(64) as u32, g as u32];
            self.check_groups(node, work)?;
            self.dispatch(Kernel::ConvGemm, &params, &consts, work)
        } else {
            let total = ys.iter().product::<usize>() as u32;
            self.dispatch(Kernel::ConvDirect, &params, &consts, [total, 1, 1])
        };
        Ok(vec![d])
    }

    fn check_groups(&self, node: &Node, work: [u32; 3]) -> Result<()> {
        if work.iter().any(|&w| w > 65535) {
            return Err(node_err(
                node,
                format!("dispatch of {work:?} workgroups exceeds 65535 per dimension"),
            ));
        }
        Ok(())
    }

    fn unary_act(&mut self, node: &Node, act: Activation) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        let total = self.plan.elems[node.outputs[0].0];
        let (ak, aa, ab) = act_params(act);
        let mut p = [0u32; 29];
        p[0] = 5;
        p[1] = sel;
        p[2] = off;
        p[5] = self.out(node, 0)?;
        p[6] = total as u32;
        p[7] = 1;
        p[8] = total as u32;
        p[14] = 1;
        p[26] = ak;
        p[27] = aa;
        p[28] = ab;
        Ok(vec![self.dispatch(
            Kernel::Elementwise,
            &p,
            &consts,
            [total as u32, 1, 1],
        )])
    }

    /// Copies input `x` (same element count as the output) into output 0.
    fn copy_like(&mut self, node: &Node, x: ValueId) -> Result<Vec<Dispatch>> {
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        let total = self.plan.elems[node.outputs[0].0];
        let mut p = [0u32; 29];
        p[0] = 4;
        p[1] = sel;
        p[2] = off;
        p[5] = self.out(node, 0)?;
        p[6] = total as u32;
        p[7] = 1;
        p[8] = total as u32;
        p[14] = 1;
        Ok(vec![self.dispatch(
            Kernel::Elementwise,
            &p,
            &consts,
            [total as u32, 1, 1],
        )])
    }

    fn binary(&mut self, node: &Node, op: u32, a: usize, b: usize) -> Result<Vec<Dispatch>> {
        let a = self.input(node, a)?;
        let b = self.input(node, b)?;
        self.binary_ids(node, op, a, b)
    }

    fn binary_ids(
        &mut self,
        node: &Node,
        op: u32,
        a: ValueId,
        b: ValueId,
    ) -> Result<Vec<Dispatch>> {
        let ys = self.shape(node.outputs[0]);
        let sa = broadcast_strides(&self.shape(a), &ys)
            .ok_or_else(|| node_err(node, "inputs do not broadcast"))?;
        let sb = broadcast_strides(&self.shape(b), &ys)
            .ok_or_else(|| node_err(node, "inputs do not broadcast"))?;
        let mut consts = Consts::default();
        let (asel, aoff) = self.src(node, a, &mut consts)?;
        let (bsel, boff) = self.src(node, b, &mut consts)?;
        let (dims, sa, sb) = collapse(&ys, &sa, &sb);
        if dims.len() > 6 {
            return Err(node_err(
                node,
                format!(
                    "broadcast over rank {} (at most 6 on the wgpu backend)",
                    dims.len()
                ),
            ));
        }
        let total: usize = ys.iter().product();
        let mut p = [0u32; 29];
        p[0] = op;
        p[1] = asel;
        p[2] = aoff;
        p[3] = bsel;
        p[4] = boff;
        p[5] = self.out(node, 0)?;
        p[6] = total as u32;
        p[7] = dims.len() as u32;
        for (k, &d) in dims.iter().enumerate() {
            p[8 + k] = d as u32;
            p[14 + k] = sa[k] as u32;
            p[20 + k] = sb[k] as u32;
        }
        Ok(vec![self.dispatch(
            Kernel::Elementwise,
            &p,
            &consts,
            [total as u32, 1, 1],
        )])
    }

    fn batchnorm(&mut self, node: &Node, eps: f32) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let xs = self.shape(x);
        let c = *xs
            .get(1)
            .ok_or_else(|| node_err(node, "input of rank < 2"))?;
        let get = |k: usize| -> Result<Vec<f32>> {
            self.const_f32(node, k)?
                .filter(|v| v.len() == c)
                .ok_or_else(|| {
                    node_err(node, format!("input {k} must be a constant of {c} values"))
                })
        };
        let (scale, bias, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let a: Vec<f32> = scale
            .iter()
            .zip(&var)
            .map(|(s, v)| s / (v + eps).sqrt())
            .collect();
        let b: Vec<f32> = bias
            .iter()
            .zip(&mean)
            .zip(&a)
            .map(|((b, m), a)| b - m * a)
            .collect();
        let ka = self.upload(&format!("{}.scale", node.name), &a)?;
        let kb = self.upload(&format!("{}.shift", node.name), &b)?;
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        if sel != 0 {
            return Err(node_err(node, "constant input"));
        }
        consts.slots = vec![ka, kb];
        let inner: usize = xs[2..].iter().product();
        let total: usize = xs.iter().product();
        let mut p = [0u32; 29];
        p[0] = 6;
        p[1] = 0;
        p[2] = off;
        p[5] = self.out(node, 0)?;
        p[6] = total as u32;
        p[7] = 3;
        let dims = [xs[0], c, inner];
        let sa = [c * inner, inner, 1];
        let sb = [0, 1, 0];
        for k in 0..3 {
            p[8 + k] = dims[k] as u32;
            p[14 + k] = sa[k] as u32;
            p[20 + k] = sb[k] as u32;
        }
        Ok(vec![self.dispatch(
            Kernel::Elementwise,
            &p,
            &consts,
            [total as u32, 1, 1],
        )])
    }

    fn pool(
        &mut self,
        node: &Node,
        a: &crate::ir::PoolAttrs,
        is_max: bool,
    ) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let xs = self.shape(x);
        let ys = self.shape(node.outputs[0]);
        if xs.len() != 4 || a.kernel_shape.len() != 2 || a.pads.len() != 4 {
            return Err(node_err(
                node,
                format!("only 2-D pooling runs on the wgpu backend (input shape {xs:?})"),
            ));
        }
        let dil = if a.dilations.len() == 2 {
            a.dilations.clone()
        } else {
            vec![1, 1]
        };
        let strides = if a.strides.len() == 2 {
            a.strides.clone()
        } else {
            vec![1, 1]
        };
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        let params = [
            sel,
            off,
            self.out(node, 0)?,
            (xs[0] * xs[1]) as u32,
            xs[2] as u32,
            xs[3] as u32,
            ys[2] as u32,
            ys[3] as u32,
            a.kernel_shape[0] as u32,
            a.kernel_shape[1] as u32,
            strides[0] as u32,
            strides[1] as u32,
            a.pads[0] as u32,
            a.pads[1] as u32,
            dil[0] as u32,
            dil[1] as u32,
            is_max as u32,
            a.count_include_pad as u32,
            a.pads[2] as u32,
            a.pads[3] as u32,
        ];
        let total = ys.iter().product::<usize>() as u32;
        Ok(vec![self.dispatch(
            Kernel::Pool,
            &params,
            &consts,
            [total, 1, 1],
        )])
    }

    fn global_pool(&mut self, node: &Node, is_max: bool) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let xs = self.shape(x);
        if xs.len() < 2 {
            return Err(node_err(node, "input of rank < 2"));
        }
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        let nc = (xs[0] * xs[1]) as u32;
        let hw = xs[2..].iter().product::<usize>() as u32;
        let params = [sel, off, self.out(node, 0)?, nc, hw, is_max as u32];
        Ok(vec![self.dispatch(
            Kernel::GlobalPool,
            &params,
            &consts,
            [nc, 1, 1],
        )])
    }

    fn concat(&mut self, node: &Node, axis: i64) -> Result<Vec<Dispatch>> {
        let ys = self.shape(node.outputs[0]);
        let r = ys.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis };
        if ax < 0 || ax >= r {
            return Err(node_err(
                node,
                format!("axis {axis} out of range for rank {r}"),
            ));
        }
        let ax = ax as usize;
        let outer: usize = ys[..ax].iter().product();
        let after: usize = ys[ax + 1..].iter().product();
        let inner_out = ys[ax] * after;
        let y = self.out(node, 0)?;
        let mut base = 0usize;
        let mut v = Vec::new();
        for id in node.inputs.iter().flatten() {
            let xs = self.shape(*id);
            let inner_in = xs.get(ax).copied().unwrap_or(0) * after;
            // Embedded inputs were written in place by their producers.
            if inner_in > 0 && outer > 0 && !self.plan.embedded[id.0] {
                let mut consts = Consts::default();
                let (sel, off) = self.src(node, *id, &mut consts)?;
                let params = [
                    sel,
                    off,
                    y,
                    outer as u32,
                    inner_in as u32,
                    inner_out as u32,
                    base as u32,
                ];
                v.push(self.dispatch(
                    Kernel::Concat,
                    &params,
                    &consts,
                    [(outer * inner_in) as u32, 1, 1],
                ));
            }
            base += inner_in;
        }
        Ok(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_dispatch(
        &mut self,
        node: &Node,
        a: ValueId,
        b: ValueId,
        c: Option<ValueId>,
        dims: [usize; 3],
        strides: [usize; 4],
        c_strides: [usize; 2],
        alpha: f32,
        beta: f32,
        batch: (usize, usize, usize),
    ) -> Result<Dispatch> {
        let [m, n, k] = dims;
        let mut consts = Consts::default();
        let (asel, aoff) = self.src(node, a, &mut consts)?;
        let (bsel, boff) = self.src(node, b, &mut consts)?;
        let (csel, coff) = match c {
            Some(c) => self.src(node, c, &mut consts)?,
            None => (0, 0),
        };
        let params = [
            asel,
            aoff,
            bsel,
            boff,
            csel,
            coff,
            c.is_some() as u32,
            self.out(node, 0)?,
            m as u32,
            n as u32,
            k as u32,
            strides[0] as u32,
            strides[1] as u32,
            strides[2] as u32,
            strides[3] as u32,
            c_strides[0] as u32,
            c_strides[1] as u32,
            alpha.to_bits(),
            beta.to_bits(),
            batch.1 as u32,
            batch.2 as u32,
        ];
        let work = [n.div_ceil(64) as u32, m.div_ceil(64) as u32, batch.0 as u32];
        self.check_groups(node, work)?;
        Ok(self.dispatch(Kernel::Gemm, &params, &consts, work))
    }

    fn gemm(
        &mut self,
        node: &Node,
        alpha: f32,
        beta: f32,
        ta: bool,
        tb: bool,
    ) -> Result<Vec<Dispatch>> {
        let a = self.input(node, 0)?;
        let b = self.input(node, 1)?;
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa.len() != 2 || sb.len() != 2 {
            return Err(node_err(node, "Gemm inputs must be 2-D"));
        }
        let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
        let n = if tb { sb[0] } else { sb[1] };
        // Element (m, k) of op(A) is at m*sam + k*sak.
        let (sam, sak) = if ta { (1, sa[1]) } else { (sa[1], 1) };
        let (sbk, sbn) = if tb { (1, sb[1]) } else { (sb[1], 1) };
        let c = node.inputs.get(2).copied().flatten();
        let c_strides = match c {
            Some(c) => {
                let cs = broadcast_strides(&self.shape(c), &[m, n])
                    .ok_or_else(|| node_err(node, "C does not broadcast to [M, N]"))?;
                [cs[0], cs[1]]
            }
            None => [0, 0],
        };
        let c = c.filter(|_| beta != 0.0);
        Ok(vec![self.gemm_dispatch(
            node,
            a,
            b,
            c,
            [m, n, k],
            [sam, sak, sbk, sbn],
            c_strides,
            alpha,
            beta,
            (1, 0, 0),
        )?])
    }

    fn matmul(&mut self, node: &Node) -> Result<Vec<Dispatch>> {
        let a = self.input(node, 0)?;
        let b = self.input(node, 1)?;
        let (mut sa, mut sb) = (self.shape(a), self.shape(b));
        let ys = self.shape(node.outputs[0]);
        if sa.is_empty() || sb.is_empty() {
            return Err(node_err(node, "scalar MatMul input"));
        }
        if sa.len() == 1 {
            sa.insert(0, 1);
        }
        if sb.len() == 1 {
            sb.push(1);
        }
        let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
        let n = sb[sb.len() - 1];
        let batch: usize = ys.iter().product::<usize>() / (m * n).max(1);
        // Batch strides: full when the input's batch dims equal the output's, 0 when the
        // input has a single matrix; other broadcasts are not supported here.
        let bstride = |s: &[usize]| -> Option<usize> {
            let nb: usize = s[..s.len() - 2].iter().product();
            if nb == batch {
                Some(s[s.len() - 2] * s[s.len() - 1])
            } else if nb == 1 {
                Some(0)
            } else {
                None
            }
        };
        let (ab, bb) = match (bstride(&sa), bstride(&sb)) {
            (Some(x), Some(y)) => (x, y),
            _ => {
                return Err(node_err(
                    node,
                    format!("MatMul batch broadcast {sa:?} x {sb:?}"),
                ))
            }
        };
        if batch > 65535 {
            return Err(node_err(node, "MatMul batch over 65535"));
        }
        Ok(vec![self.gemm_dispatch(
            node,
            a,
            b,
            None,
            [m, n, k],
            [k, 1, n, 1],
            [0, 0],
            1.0,
            0.0,
            (batch, ab, bb),
        )?])
    }

    fn softmax(&mut self, node: &Node, axis: i64, legacy: bool) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let xs = self.shape(x);
        let r = xs.len() as i64;
        let ax = if axis < 0 { axis + r } else { axis };
        if ax < 0 || ax > r || (ax == r && !legacy) || (r == 0) {
            return Err(node_err(
                node,
                format!("axis {axis} out of range for rank {r}"),
            ));
        }
        let ax = ax as usize;
        let outer: usize = xs[..ax].iter().product();
        let (n, inner) = if legacy {
            (xs[ax..].iter().product::<usize>(), 1)
        } else {
            (xs[ax], xs[ax + 1..].iter().product::<usize>())
        };
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        let params = [
            sel,
            off,
            self.out(node, 0)?,
            outer as u32,
            n as u32,
            inner as u32,
        ];
        Ok(vec![self.dispatch(
            Kernel::Softmax,
            &params,
            &consts,
            [(outer * inner) as u32, 1, 1],
        )])
    }

    fn transpose(&mut self, node: &Node, perm: Option<&[usize]>) -> Result<Vec<Dispatch>> {
        let x = self.input(node, 0)?;
        let xs = self.shape(x);
        let r = xs.len();
        let perm: Vec<usize> = perm.map_or_else(|| (0..r).rev().collect(), |p| p.to_vec());
        if perm.len() != r || r > 6 {
            return Err(node_err(
                node,
                format!("permutation {perm:?} for rank {r} (at most 6)"),
            ));
        }
        let mut in_strides = vec![1usize; r];
        for d in (0..r.saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * xs[d + 1];
        }
        let ys = self.shape(node.outputs[0]);
        let mut consts = Consts::default();
        let (sel, off) = self.src(node, x, &mut consts)?;
        let total: usize = ys.iter().product();
        let mut p = [0u32; 29];
        p[0] = 4;
        p[1] = sel;
        p[2] = off;
        p[5] = self.out(node, 0)?;
        p[6] = total as u32;
        p[7] = r as u32;
        for k in 0..r {
            p[8 + k] = ys[k] as u32;
            p[14 + k] = *perm
                .get(k)
                .and_then(|&d| in_strides.get(d))
                .ok_or_else(|| node_err(node, "bad permutation"))? as u32;
        }
        Ok(vec![self.dispatch(
            Kernel::Elementwise,
            &p,
            &consts,
            [total as u32, 1, 1],
        )])
    }
}

/// Shader activation code and parameters.
fn act_params(a: Activation) -> (u32, u32, u32) {
    match a {
        Activation::None => (0, 0, 0),
        Activation::Relu => (1, 0, 0),
        Activation::LeakyRelu(al) => (2, al.to_bits(), 0),
        Activation::Clip(lo, hi) => (3, lo.to_bits(), hi.to_bits()),
        Activation::Sigmoid => (4, 0, 0),
    }
}

/// Element strides of `s` read as `out` under numpy broadcasting (0 on broadcast axes).
fn broadcast_strides(s: &[usize], out: &[usize]) -> Option<Vec<usize>> {
    if s.len() > out.len() {
        return None;
    }
    let pad = out.len() - s.len();
    let mut strides = vec![0usize; out.len()];
    let mut acc = 1usize;
    for d in (0..s.len()).rev() {
        let o = out[pad + d];
        if s[d] == o {
            strides[pad + d] = if o == 1 { 0 } else { acc };
        } else if s[d] == 1 {
            strides[pad + d] = 0;
        } else {
            return None;
        }
        acc *= s[d];
    }
    Some(strides)
}

/// Merges adjacent axes that are contiguous in both inputs, dropping size-1 axes, so common
/// cases run with rank 1 or 2.
fn collapse(dims: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut d: Vec<usize> = Vec::new();
    let mut a: Vec<usize> = Vec::new();
    let mut b: Vec<usize> = Vec::new();
    for k in 0..dims.len() {
        if dims[k] == 1 {
            continue;
        }
        if let (Some(ld), Some(la), Some(lb)) = (d.last_mut(), a.last_mut(), b.last_mut()) {
            // The previous (outer) axis continues this one in both inputs.
            if *la == sa[k] * dims[k] && *lb == sb[k] * dims[k] {
                *ld *= dims[k];
                *la = sa[k];
                *lb = sb[k];
                continue;
            }
        }
        d.push(dims[k]);
        a.push(sa[k]);
        b.push(sb[k]);
    }
    if d.is_empty() {
        d.push(1);
        a.push(0);
        b.push(0);
    }
    (d, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_and_collapse() {
        let s = broadcast_strides(&[3, 1], &[2, 3, 4]).unwrap_or_default();
        assert_eq!(s, vec![0, 1, 0]);
        let full = broadcast_strides(&[2, 3, 4], &[2, 3, 4]).unwrap_or_default();
        assert_eq!(full, vec![12, 4, 1]);
        assert!(broadcast_strides(&[3], &[2, 4]).is_none());
        let (d, a, b) = collapse(&[2, 3, 4], &full, &full);
        assert_eq!((d, a, b), (vec![24], vec![1], vec![1]));
        let (d, a, b) = collapse(&[2, 3, 4], &full, &s);
        assert_eq!(d, vec![2, 3, 4]);
        assert_eq!(a, vec![12, 4, 1]);
        assert_eq!(b, vec![0, 1, 0]);
    }
}
