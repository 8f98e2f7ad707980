//! Building a [`ProfileReport`]: analytically from a bound graph, or by timing a session.
//!
//! Both paths meet in `assemble`, which takes per-node analytic figures for the original
//! (bound, unfused) graph and, optionally, per-execution-node measurements, and maps the latter
//! back onto the former through each execution node's `origin` list.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{
    NodeReport, OpTypeRow, ProfileReport, RfReport, SlowNode, TensorRef, Totals, SCHEMA_VERSION,
};
use crate::ir::{Graph, ValueId};
use crate::session::RunTrace;

/// What the report says about the run besides the nodes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportMeta {
    pub model: String,
    /// `"cpu"` or `"wgpu"`.
    pub backend: String,
    pub batch: usize,
    pub threads: usize,
    /// Calibrated compute peak (GFLOP/s) for `threads`, see [`super::calibrate`].
    pub peak_gflops: Option<f64>,
    /// Calibrated memory bandwidth (GB/s).
    pub peak_bandwidth_gbs: Option<f64>,
    /// GPU adapter name and API (wgpu sessions only).
    pub device: Option<String>,
    /// How per-node times were measured on the GPU (wgpu sessions only).
    pub timing: Option<String>,
}

/// Analytic figures of one original node (what `engine::cost` computes for it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeFigures {
    pub macs: u64,
    pub flops: u64,
    pub params: u64,
    pub param_bytes: u64,
    pub output_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Median measurements of one execution node.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct ExecMeasure {
    pub time_ms: f64,
    pub allocated_bytes: u64,
    pub live_bytes: u64,
    pub macs_executed: u64,
}

/// Everything a set of timed runs contributes to a report.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Measured {
    /// For each execution node: the original node names it stands for, head first.
    pub exec_origins: Vec<Vec<String>>,
    /// For each execution node: its medians (`None` if it never appeared in a trace).
    pub exec: Vec<Option<ExecMeasure>>,
    pub whole_run_ms: f64,
    pub iters: usize,
    pub peak_live_bytes: u64,
}

/// Bytes a value occupies according to its inferred shape and dtype (f32 when unknown).
fn value_bytes(graph: &Graph, id: ValueId) -> u64 {
    let v = graph.value(id);
    let elems: u64 = v
        .fixed_shape()
        .map(|s| s.iter().map(|&d| d as u64).product())
        .unwrap_or(0);
    elems * v.dtype.map(|d| d.size_of() as u64).unwrap_or(4)
}

fn tensor_ref(graph: &Graph, id: ValueId) -> TensorRef {
    let v = graph.value(id);
    TensorRef {
        name: v.name.clone(),
        shape: v.fixed_shape(),
    }
}

/// Peak of simultaneously live activation bytes if every value is freed after its last reader
/// and nothing is computed in place: the analytic stand-in for the measured peak.
pub(crate) fn estimate_activation_peak(graph: &Graph) -> u64 {
    let mut remaining = graph.consumer_counts();
    let mut live: u64 = graph
        .inputs
        .iter()
        .filter(|id| !graph.is_constant(**id))
        .map(|&id| value_bytes(graph, id))
        .sum();
    let mut peak = live;
    for node in &graph.nodes {
        live += node
            .outputs
            .iter()
            .map(|&id| value_bytes(graph, id))
            .sum::<u64>();
        peak = peak.max(live);
        let mut seen = HashSet::new();
        for &id in node.inputs.iter().flatten() {
            if graph.is_constant(id) {
                continue;
            }
            remaining[id.0] = remaining[id.0].saturating_sub(1);
            if remaining[id.0] == 0 && seen.insert(id) {
                live = live.saturating_sub(value_bytes(graph, id));
            }
        }
        // Outputs nobody reads die at once.
        for &id in &node.outputs {
            if remaining[id.0] == 0 {
                live = live.saturating_sub(value_bytes(graph, id));
            }
        }
    }
    peak
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An analytic report: `figures[i]` and `rfs[i]` describe `graph.nodes[i]` of the bound graph.
pub fn analytic_from_parts(
    graph: &Graph,
    figures: &[NodeFigures],
    rfs: &[Option<RfReport>],
    meta: &ReportMeta,
) -> ProfileReport {
    assemble(
        graph,
        figures,
        rfs,
        meta,
        None,
        estimate_activation_peak(graph),
    )
}

/// A measured report from the traces of timed runs of `exec_graph` (the optimized graph the
/// executor ran; its nodes' `origin` lists name the nodes of the bound `graph`).
pub fn measured_from_parts(
    graph: &Graph,
    figures: &[NodeFigures],
    rfs: &[Option<RfReport>],
    meta: &ReportMeta,
    exec_graph: &Graph,
    traces: &[RunTrace],
) -> ProfileReport {
    let origins = exec_graph
        .nodes
        .iter()
        .map(|n| {
            if n.origin.is_empty() {
                vec![n.name.clone()]
            } else {
                n.origin.iter().map(|o| o.name.clone()).collect()
            }
        })
        .collect();
    let measured = reduce_traces(traces, origins);
    assemble(
        graph,
        figures,
        rfs,
        meta,
        Some(&measured),
        estimate_activation_peak(graph),
    )
}

/// Reduces the traces of several runs to per-execution-node medians.
pub(crate) fn reduce_traces(traces: &[RunTrace], exec_origins: Vec<Vec<String>>) -> Measured {
    let n = exec_origins.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut last: Vec<Option<ExecMeasure>> = vec![None; n];
    for t in traces {
        for nt in &t.nodes {
            if nt.node < n {
                times[nt.node].push(ms(nt.elapsed));
                last[nt.node] = Some(ExecMeasure {
                    time_ms: 0.0,
                    allocated_bytes: nt.allocated_bytes,
                    live_bytes: nt.live_bytes,
                    macs_executed: nt.macs_executed,
                });
            }
        }
    }
    let exec = times
        .iter_mut()
        .zip(last)
        .map(|(t, m)| {
            m.map(|m| ExecMeasure {
                time_ms: median(t),
                ..m
            })
        })
        .collect();
    let mut whole: Vec<f64> = traces.iter().map(|t| ms(t.total)).collect();
    Measured {
        exec_origins,
        exec,
        whole_run_ms: median(&mut whole),
        iters: traces.len(),
        peak_live_bytes: traces.iter().map(|t| t.peak_live_bytes).max().unwrap_or(0),
    }
}

fn finite_ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 && num.is_finite() {
        num / den
    } else {
        0.0
    }
}

/// Builds the report. `figures[i]` and `rfs[i]` describe `graph.nodes[i]` (the bound graph).
pub(crate) fn assemble(
    graph: &Graph,
    figures: &[NodeFigures],
    rfs: &[Option<RfReport>],
    meta: &ReportMeta,
    measured: Option<&Measured>,
    analytic_peak: u64,
) -> ProfileReport {
    let by_name: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();

    // `placed[i]`: (execution node, position in its group); `head_of[e]`: the bound-graph
    // index of execution node e's head. Reports list nodes by their head's place in the model
    // (then by position in the group), so the order stays the model's even where the executor
    // runs nodes in another (sibling 1×1 convs moved next to each other).
    let mut placed: Vec<Option<(usize, usize)>> = vec![None; graph.nodes.len()];
    let mut head_of: Vec<usize> = Vec::new();
    if let Some(m) = measured {
        for (e, names) in m.exec_origins.iter().enumerate() {
            head_of.push(
                names
                    .iter()
                    .find_map(|n| by_name.get(n.as_str()).copied())
                    .unwrap_or(graph.nodes.len() + e),
            );
            for (k, name) in names.iter().enumerate() {
                if let Some(&i) = by_name.get(name.as_str()) {
                    if placed[i].is_none() {
                        placed[i] = Some((e, k));
                    }
                }
            }
        }
    }
    // Order: by head and position; nodes that did not run stay right after the node that
    // precedes them in the bound graph.
    let mut keys: Vec<(usize, usize, usize)> = Vec::with_capacity(graph.nodes.len());
    let mut prev = (0usize, 0usize);
    for (i, p) in placed.iter().enumerate() {
        let key = match p {
            Some((e, k)) => {
                prev = (head_of[*e], *k);
                (head_of[*e], *k, i)
            }
            None => (prev.0, prev.1, i),
        };
        keys.push(key);
    }
    let mut order: Vec<usize> = (0..graph.nodes.len()).collect();
    if measured.is_some() {
        order.sort_by_key(|&i| keys[i]);
    }

    let whole = measured.map(|m| m.whole_run_ms);
    let peak = meta.peak_gflops.filter(|p| *p > 0.0);
    let mut nodes = Vec::with_capacity(order.len());
    for &i in &order {
        let node = &graph.nodes[i];
        let f = figures.get(i).copied().unwrap_or_default();
        let mut r = NodeReport {
            name: node.name.clone(),
            op: node
                .origin
                .first()
                .map(|o| o.op_type.clone())
                .unwrap_or_else(|| node.op.type_name().to_string()),
            inputs: node
                .inputs
                .iter()
                .flatten()
                .map(|&id| tensor_ref(graph, id))
                .collect(),
            outputs: node
                .outputs
                .iter()
                .map(|&id| tensor_ref(graph, id))
                .collect(),
            macs: f.macs,
            flops: f.flops,
            params: f.params,
            param_bytes: f.param_bytes,
            output_bytes: f.output_bytes,
            bytes_read: f.bytes_read,
            bytes_written: f.bytes_written,
            arithmetic_intensity: finite_ratio(
                f.flops as f64,
                (f.bytes_read + f.bytes_written) as f64,
            ),
            rf: rfs.get(i).copied().flatten(),
            time_ms: None,
            gflops: None,
            percent: None,
            peak_percent: None,
            allocated_bytes: None,
            live_bytes: None,
            macs_executed: None,
            fused_group: None,
            fused_into: None,
            group_members: Vec::new(),
            group_flops: None,
            group_bytes: None,
            exec_node: None,
        };
        if let (Some(m), Some((e, k))) = (measured, placed[i]) {
            r.exec_node = Some(e);
            let names = &m.exec_origins[e];
            let members: Vec<usize> = names
                .iter()
                .filter_map(|n| by_name.get(n.as_str()).copied())
                .collect();
            if k > 0 {
                r.fused_into = names.first().cloned();
            } else {
                if names.len() > 1 {
                    r.fused_group = Some(node.name.clone());
                    r.group_members = names.clone();
                }
                let (gf, gb) = group_traffic(graph, figures, &members);
                r.group_flops = Some(gf);
                r.group_bytes = Some(gb);
                if let Some(x) = m.exec.get(e).copied().flatten() {
                    r.time_ms = Some(x.time_ms);
                    r.allocated_bytes = Some(x.allocated_bytes);
                    r.live_bytes = Some(x.live_bytes);
                    r.macs_executed = Some(x.macs_executed);
                    if x.time_ms > 0.0 {
                        let g = gf as f64 / (x.time_ms * 1e6);
                        r.gflops = Some(g);
                        r.peak_percent = peak.map(|p| 100.0 * g / p);
                    }
                    r.percent = whole.map(|w| 100.0 * finite_ratio(x.time_ms, w));
                }
            }
        }
        nodes.push(r);
    }

    let node_time: Option<f64> = measured.map(|_| nodes.iter().filter_map(|n| n.time_ms).sum());
    let sum = |f: fn(&NodeReport) -> u64| nodes.iter().map(f).sum::<u64>();
    let flops = sum(|n| n.flops);
    let bytes_read = sum(|n| n.bytes_read);
    let bytes_written = sum(|n| n.bytes_written);
    let gflops = whole.filter(|w| *w > 0.0).map(|w| flops as f64 / (w * 1e6));
    let totals = Totals {
        macs: sum(|n| n.macs),
        flops,
        params: sum(|n| n.params),
        param_bytes: sum(|n| n.param_bytes),
        activation_peak_bytes: measured.map(|m| m.peak_live_bytes).unwrap_or(analytic_peak),
        activation_peak_measured: measured.is_some(),
        time_ms: whole,
        node_time_ms: node_time,
        unattributed_ms: whole.zip(node_time).map(|(w, n)| w - n),
        gflops,
        peak_percent: gflops.zip(peak).map(|(g, p)| 100.0 * g / p),
        bytes_read,
        bytes_written,
        arithmetic_intensity: finite_ratio(flops as f64, (bytes_read + bytes_written) as f64),
        output_bytes: sum(|n| n.output_bytes),
    };

    let op_types = op_breakdown(&nodes, whole);
    let mut slowest: Vec<SlowNode> = nodes
        .iter()
        .enumerate()
        .filter_map(|(index, n)| {
            n.time_ms.map(|t| SlowNode {
                index,
                name: n.name.clone(),
                op: n.op.clone(),
                time_ms: t,
                percent: n.percent.unwrap_or(0.0),
            })
        })
        .collect();
    slowest.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms).then(a.index.cmp(&b.index)));
    slowest.truncate(10);

    ProfileReport {
        schema_version: SCHEMA_VERSION,
        model: meta.model.clone(),
        backend: meta.backend.clone(),
        device: meta.device.clone(),
        timing: meta.timing.clone(),
        batch: meta.batch,
        threads: meta.threads,
        iters: measured.map(|m| m.iters),
        peak_gflops: meta.peak_gflops,
        peak_bandwidth_gbs: meta.peak_bandwidth_gbs,
        nodes,
        totals,
        op_types,
        slowest,
    }
}

/// FLOPs of a group and the bytes it moves to and from memory: members' traffic minus values
/// passed between members (written and read once each), which a fused kernel keeps in cache.
fn group_traffic(graph: &Graph, figures: &[NodeFigures], members: &[usize]) -> (u64, u64) {
    let fig = |i: usize| figures.get(i).copied().unwrap_or_default();
    let flops = members.iter().map(|&i| fig(i).flops).sum();
    let mut bytes: u64 = members
        .iter()
        .map(|&i| fig(i).bytes_read + fig(i).bytes_written)
        .sum();
    if members.len() > 1 {
        let member_set: HashSet<usize> = members.iter().copied().collect();
        let produced: HashSet<ValueId> = members
            .iter()
            .flat_map(|&i| graph.nodes[i].outputs.iter().copied())
            .collect();
        let mut readers: HashMap<ValueId, (usize, usize)> = HashMap::new(); // (inside, outside)
        for (i, n) in graph.nodes.iter().enumerate() {
            for id in n.inputs.iter().flatten() {
                if produced.contains(id) {
                    let e = readers.entry(*id).or_default();
                    if member_set.contains(&i) {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
            }
        }
        for (id, (inside, outside)) in readers {
            if inside > 0 && outside == 0 && !graph.outputs.contains(&id) {
                bytes = bytes.saturating_sub(2 * value_bytes(graph, id));
            }
        }
    }
    (flops, bytes)
}

fn op_breakdown(nodes: &[NodeReport], whole: Option<f64>) -> Vec<OpTypeRow> {
    let mut rows: Vec<OpTypeRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for n in nodes {
        let i = *index.entry(n.op.clone()).or_insert_with(|| {
            rows.push(OpTypeRow {
                op: n.op.clone(),
                count: 0,
                macs: 0,
                flops: 0,
                params: 0,
                time_ms: None,
                percent: None,
            });
            rows.len() - 1
        });
        let r = &mut rows[i];
        r.count += 1;
        r.macs += n.macs;
        r.flops += n.flops;
        r.params += n.params;
        if whole.is_some() {
            r.time_ms = Some(r.time_ms.unwrap_or(0.0) + n.time_ms.unwrap_or(0.0));
        }
    }
    for r in &mut rows {
        r.percent = r
            .time_ms
            .zip(whole)
            .map(|(t, w)| 100.0 * finite_ratio(t, w));
    }
    rows.sort_by(|a, b| {
        b.time_ms
            .unwrap_or(0.0)
            .total_cmp(&a.time_ms.unwrap_or(0.0))
            .then(b.macs.cmp(&a.macs))
            .then(a.op.cmp(&b.op))
    });
    rows
}

/// Which part of a measurement is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurePhase {
    Warmup,
    Timed,
}

/// Progress of [`measure`]: called after every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureProgress {
    pub phase: MeasurePhase,
    /// Runs finished in this phase.
    pub done: usize,
    /// Runs this phase will do.
    pub total: usize,
}

/// Runs `run` `warmup` times untimed and `iters` (at least 1) times timed, reporting progress
/// after each run; returns the timed runs' traces.
pub fn collect_traces(
    warmup: usize,
    iters: usize,
    progress: &mut dyn FnMut(MeasureProgress),
    mut run: impl FnMut() -> crate::Result<RunTrace>,
) -> crate::Result<Vec<RunTrace>> {
    for done in 1..=warmup {
        run()?;
        progress(MeasureProgress {
            phase: MeasurePhase::Warmup,
            done,
            total: warmup,
        });
    }
    let iters = iters.max(1);
    let mut traces = Vec::with_capacity(iters);
    for done in 1..=iters {
        traces.push(run()?);
        progress(MeasureProgress {
            phase: MeasurePhase::Timed,
            done,
            total: iters,
        });
    }
    Ok(traces)
}

// ---- Builders over the engine's cost model, receptive fields and sessions. ----

impl From<&crate::cost::NodeCost> for NodeFigures {
    fn from(c: &crate::cost::NodeCost) -> Self {
        NodeFigures {
            macs: c.macs,
            flops: c.flops,
            params: c.params,
            param_bytes: c.param_bytes,
            output_bytes: c.output_bytes,
            bytes_read: c.bytes_read,
            bytes_written: c.bytes_written,
        }
    }
}

/// Cost figures and receptive field (of the first output) of every node of a bound graph.
fn graph_parts(graph: &Graph) -> (Vec<NodeFigures>, Vec<Option<RfReport>>) {
    let (costs, _) = crate::cost::graph_cost(graph);
    let figures = costs.iter().map(NodeFigures::from).collect();
    let per_value = crate::rf::analyze(graph);
    let rfs = graph
        .nodes
        .iter()
        .map(|n| {
            let rf = n
                .outputs
                .first()
                .and_then(|id| per_value.get(id.0).cloned().flatten())?;
            Some(RfReport {
                size: rf.size,
                stride: rf.stride,
                offset: rf.offset,
                aligned: rf.aligned,
            })
        })
        .collect();
    (figures, rfs)
}

/// An analytic report of a bound graph: cost model and receptive fields only — no weights
/// needed, nothing runs.
pub fn analytic_graph(graph: &Graph, meta: &ReportMeta) -> ProfileReport {
    let (figures, rfs) = graph_parts(graph);
    analytic_from_parts(graph, &figures, &rfs, meta)
}

/// Report metadata of a session: source, threads, batch (leading dimension of the first
/// input), the session's backend (with the adapter and timing method on a GPU), and — on the
/// CPU — the calibrated peaks if this machine's cache already has them (use
/// [`super::calibrate::calibration`] to measure them).
pub fn session_meta(session: &crate::session::Session) -> ReportMeta {
    let batch = session
        .input_infos()
        .first()
        .and_then(|i| i.fixed_shape())
        .and_then(|s| s.first().copied())
        .unwrap_or(1);
    let device = session.device();
    // CPU peaks say nothing about a GPU's: a wgpu report has none.
    let cal = match session.backend() {
        crate::Backend::Cpu => super::calibrate::cached(session.threads()),
        crate::Backend::Wgpu => None,
    };
    ReportMeta {
        model: session.source().to_string(),
        backend: match session.backend() {
            crate::Backend::Cpu => "cpu".into(),
            crate::Backend::Wgpu => "wgpu".into(),
        },
        device: device.map(|d| d.name.clone()),
        timing: device.map(|d| d.timing.clone()),
        batch,
        threads: session.threads(),
        peak_gflops: cal.as_ref().map(|c| c.peak_gflops),
        peak_bandwidth_gbs: cal.as_ref().map(|c| c.bandwidth_gbs),
    }
}

/// An analytic report of a prepared session's bound graph (nothing runs).
pub fn analytic(session: &crate::session::Session) -> ProfileReport {
    analytic_graph(session.bound_graph(), &session_meta(session))
}

/// Deterministic synthetic inputs for a session: standard-normal f32 (seeded), zeros for
/// other element types.
pub fn synthetic_inputs(session: &crate::session::Session) -> Vec<(String, crate::Tensor)> {
    let mut seed = 0x5EED;
    session
        .input_infos()
        .iter()
        .map(|info| {
            let shape = info.fixed_shape().unwrap_or_default();
            let dtype = info.dtype.unwrap_or(crate::DType::F32);
            let t = match dtype {
                crate::DType::F32 => {
                    let n = shape.iter().product();
                    seed += 1;
                    crate::Tensor::from_f32(&shape, synthetic_values(n, seed))
                        .unwrap_or_else(|| crate::Tensor::zeros(dtype, &shape))
                }
                other => crate::Tensor::zeros(other, &shape),
            };
            (info.name.clone(), t)
        })
        .collect()
}

/// Runs `session` `warmup` times, then `iters` timed times with `inputs`, and reports medians
/// per node (mapped back onto the bound graph) and for the whole run.
pub fn measure_with_inputs(
    session: &mut crate::session::Session,
    inputs: &[(&str, crate::Tensor)],
    meta: &ReportMeta,
    warmup: usize,
    iters: usize,
    progress: &mut dyn FnMut(MeasureProgress),
) -> crate::Result<ProfileReport> {
    let traces = collect_traces(warmup, iters, progress, || {
        session.run_profiled(inputs).map(|(_, t)| t)
    })?;
    let (figures, rfs) = graph_parts(session.bound_graph());
    Ok(measured_from_parts(
        session.bound_graph(),
        &figures,
        &rfs,
        meta,
        session.exec_graph(),
        &traces,
    ))
}

/// [`measure_with_inputs`] with [`synthetic_inputs`] and [`session_meta`], calibrating this
/// machine first if its cache has no entry for the session's thread count (~0.3 s once).
pub fn measure(
    session: &mut crate::session::Session,
    warmup: usize,
    iters: usize,
    progress: &mut dyn FnMut(MeasureProgress),
) -> crate::Result<ProfileReport> {
    let owned = synthetic_inputs(session);
    let inputs: Vec<(&str, crate::Tensor)> =
        owned.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut meta = session_meta(session);
    if meta.peak_gflops.is_none() && session.backend() == crate::Backend::Cpu {
        let c = super::calibrate::calibration(session.threads());
        meta.peak_gflops = Some(c.peak_gflops);
        meta.peak_bandwidth_gbs = Some(c.bandwidth_gbs);
    }
    measure_with_inputs(session, &inputs, &meta, warmup, iters, progress)
}

/// `n` values uniform in [-1, 1) from the crate's seeded generator: reproducible inputs across
/// machines and versions.
pub(crate) fn synthetic_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::random::Rng::new(seed);
    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn analytic_report_has_no_measured_fields() {
        let r = sample_report(false);
        assert_eq!(r.nodes.len(), 9);
        assert_eq!(r.iters, None);
        assert!(r
            .nodes
            .iter()
            .all(|n| n.time_ms.is_none() && n.exec_node.is_none() && n.fused_into.is_none()));
        assert_eq!(r.totals.macs, 8 * 32 * 32 * 27 + 8 * 256 * 8 + 80);
        assert_eq!(r.totals.params, 216 + 32 + 64 + 80);
        // data 12288 B + conv1 out 32768 B, then each 32 KiB map alive with the next one.
        assert_eq!(r.totals.activation_peak_bytes, 65_536);
        assert!(!r.totals.activation_peak_measured);
        assert!(r.slowest.is_empty());
        let conv = &r.nodes[0];
        assert_eq!(conv.inputs[0].shape, Some(vec![1, 3, 32, 32]));
        let ai = conv.flops as f64 / (conv.bytes_read + conv.bytes_written) as f64;
        assert!((conv.arithmetic_intensity - ai).abs() < 1e-12);
        assert_eq!(r.op_types[0].op, "Conv");
        assert_eq!(r.op_types[0].count, 2);
    }

    #[test]
    fn measured_report_maps_fused_groups_onto_heads() {
        let r = sample_report(true);
        assert_eq!(r.iters, Some(5));
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["conv1", "bn1", "relu1", "pool1", LONG_NAME, "add", "gap", "flatten", "fc"]
        );
        let conv = &r.nodes[0];
        assert_eq!(conv.fused_group.as_deref(), Some("conv1"));
        assert_eq!(conv.group_members, ["conv1", "bn1", "relu1"]);
        assert!(
            (conv.time_ms.unwrap_or(0.0) - 0.420).abs() < 1e-9,
            "median of 400..440 µs"
        );
        assert_eq!(r.nodes[1].fused_into.as_deref(), Some("conv1"));
        assert_eq!(r.nodes[1].time_ms, None);
        assert_eq!(r.nodes[1].exec_node, Some(0));
        // Group FLOPs: conv + bn + relu.
        let gf = r.nodes[0].flops + r.nodes[1].flops + r.nodes[2].flops;
        assert_eq!(conv.group_flops, Some(gf));
        assert!((conv.gflops.unwrap_or(0.0) - gf as f64 / 0.420e6).abs() < 1e-9);
        // Traffic of the group drops the two intermediate maps (written once, read once).
        let all: u64 = r.nodes[..3]
            .iter()
            .map(|n| n.bytes_read + n.bytes_written)
            .sum();
        assert_eq!(conv.group_bytes, Some(all - 2 * 2 * 32_768));
        // Flatten did not run: no time, no exec node, kept after gap.
        assert_eq!(r.nodes[7].exec_node, None);
        assert_eq!(r.nodes[7].time_ms, None);
        let t = &r.totals;
        assert!((t.time_ms.unwrap_or(0.0) - 0.652).abs() < 1e-9);
        assert!((t.node_time_ms.unwrap_or(0.0) - 0.622).abs() < 1e-9);
        assert!((t.unattributed_ms.unwrap_or(0.0) - 0.030).abs() < 1e-9);
        assert_eq!(t.activation_peak_bytes, 70_000);
        let pct: f64 = r.nodes.iter().filter_map(|n| n.percent).sum();
        assert!((pct - 100.0 * 0.622 / 0.652).abs() < 1e-9);
        assert_eq!(r.slowest.len(), 5);
        assert_eq!(r.slowest[0].name, "conv1");
        assert_eq!(r.slowest[1].name, LONG_NAME);
        let conv_row = r
            .op_types
            .iter()
            .find(|o| o.op == "Conv")
            .map(|o| o.time_ms);
        assert!((conv_row.flatten().unwrap_or(0.0) - (0.420 + 0.122)).abs() < 1e-9);
        let p = conv.peak_percent.unwrap_or(0.0);
        assert!((p - 100.0 * conv.gflops.unwrap_or(0.0) / 400.0).abs() < 1e-9);
    }

    /// Runs a small conv net on the real CPU executor and checks that the per-node medians
    /// add up to the whole-run median within 5%, and that fused groups map onto heads. Other
    /// tests share the two cores, so a disturbed measurement is retried (up to 3 tries).
    #[test]
    fn node_times_add_up_to_the_run_on_the_cpu_executor() -> crate::Result<()> {
        use crate::exec::{optimize, plan, CpuExecutor, Executor};
        use std::time::Instant;
        let _heavy = cpu_heavy_lock();
        let graph = sample_graph_sized(192, 48);
        let optimized = optimize(&graph)?;
        let memory = plan(&optimized, true)?;
        let mut exe = CpuExecutor::new(optimized.clone(), &memory, 1)?;
        let input = crate::Tensor::zeros(crate::DType::F32, &[1, 3, 192, 192]);
        let figures = vec![NodeFigures::default(); graph.nodes.len()];
        let mut worst = Vec::new();
        for _ in 0..3 {
            let traces = collect_traces(2, 11, &mut |_| {}, || {
                let start = Instant::now();
                let mut nodes = Vec::new();
                exe.run(&[&input], Some(&mut nodes))?;
                Ok(RunTrace {
                    total: start.elapsed(),
                    nodes,
                    peak_live_bytes: memory.planned_peak_bytes as u64,
                })
            })?;
            let report =
                measured_from_parts(&graph, &figures, &[], &sample_meta(), &optimized, &traces);
            let timed = report.nodes.iter().filter(|n| n.time_ms.is_some()).count();
            assert_eq!(
                timed,
                optimized.nodes.len(),
                "one timed node per execution node"
            );
            if optimized.nodes.len() < graph.nodes.len() {
                assert!(report
                    .nodes
                    .iter()
                    .any(|n| n.fused_into.is_some() || n.exec_node.is_none()));
            }
            let total = report.totals.time_ms.unwrap_or(0.0);
            let nodes = report.totals.node_time_ms.unwrap_or(0.0);
            assert!(total > 0.0 && nodes > 0.0);
            if (total - nodes).abs() <= 0.05 * total {
                return Ok(());
            }
            worst.push((nodes, total));
        }
        panic!("node sums vs whole-run medians (ms) off by more than 5% in every try: {worst:?}");
    }

    /// Through the public session API: a measured report of a small CIFAR ResNet keeps every
    /// bound node, times every execution node once, and agrees with the analytic report.
    #[test]
    fn measure_a_session_end_to_end() -> crate::Result<()> {
        use crate::session::{Model, Session, SessionOptions};
        let _heavy = cpu_heavy_lock();
        let model = Model::load("zoo:resnet20")?;
        let mut session = Session::new(
            &model,
            &SessionOptions {
                threads: 1,
                ..Default::default()
            },
        )?;
        let analytic_report = analytic(&session);
        let mut calls = 0;
        let inputs = synthetic_inputs(&session);
        let inputs: Vec<(&str, crate::Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let meta = session_meta(&session);
        let r = measure_with_inputs(&mut session, &inputs, &meta, 1, 5, &mut |_| calls += 1)?;
        assert_eq!(calls, 6);
        assert_eq!(r.nodes.len(), session.bound_graph().nodes.len());
        assert_eq!(r.totals.macs, analytic_report.totals.macs);
        assert!(r.totals.macs > 0);
        let timed = r.nodes.iter().filter(|n| n.time_ms.is_some()).count();
        assert_eq!(timed, session.exec_graph().nodes.len());
        assert_eq!(r.batch, 1);
        assert!(r.totals.time_ms.is_some_and(|t| t > 0.0));
        Ok(())
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn collect_traces_reports_progress() {
        let mut seen = Vec::new();
        let (_, traces) = sample_exec();
        let mut i = 0;
        let got = collect_traces(2, 3, &mut |p| seen.push(p), || {
            i += 1;
            Ok(traces[i % traces.len()].clone())
        });
        assert_eq!(got.map(|t| t.len()).ok(), Some(3));
        assert_eq!(i, 5);
        assert_eq!(seen.len(), 5);
        assert_eq!(
            seen[1],
            MeasureProgress {
                phase: MeasurePhase::Warmup,
                done: 2,
                total: 2
            }
        );
        assert_eq!(
            seen[4],
            MeasureProgress {
                phase: MeasurePhase::Timed,
                done: 3,
                total: 3
            }
        );
    }
}
