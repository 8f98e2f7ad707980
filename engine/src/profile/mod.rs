//! The per-node profile report and its output formats.
//!
//! A [`ProfileReport`] lists the *original* (bound, unfused) graph nodes in execution order with
//! what the analytic cost model says about them (MACs, FLOPs, parameters, bytes, receptive
//! field) and, when the model was actually run, what was measured (median time, achieved
//! GFLOP/s, memory). Keeping the original nodes — rather than the engine's fused execution
//! nodes — is what lets a user match the report to the ONNX file they gave us; a fused group's
//! time is charged to its head node and the members point at it (`fused_into`).
//!
//! The JSON schema is a contract for scripts: see `docs/profile-json.md`.
//!
//! - [`build`]: [`analytic`] (no run, no weights) and [`measure`] (warm-up + timed runs).
//! - formats: [`to_table`], [`to_json`], [`to_csv`], [`to_chrome_trace`], [`to_svg`].
//! - [`calibrate`]: the machine's FMA peak and memory bandwidth (cached per machine).
//! - [`mod@bench`]: latency statistics for `engine bench`.

pub mod bench;
pub mod build;
pub mod calibrate;
mod csv;
mod svg;
mod table;
#[cfg(test)]
pub(crate) mod testutil;
mod trace;
pub mod units;

use serde::{Deserialize, Serialize};

pub use build::{
    analytic, analytic_from_parts, analytic_graph, collect_traces, measure, measure_with_inputs,
    measured_from_parts, session_meta, synthetic_inputs, MeasurePhase, MeasureProgress,
    NodeFigures, ReportMeta,
};
pub use csv::to_csv;
pub use svg::to_svg;
pub use table::to_table;
pub use trace::to_chrome_trace;

/// Version of the JSON layout; bumped when a key changes meaning (adding keys does not bump it).
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report: one entry per original graph node plus totals and summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReport {
    /// Layout version of this JSON ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Model name or source (file path / `zoo:` spec).
    pub model: String,
    /// `"cpu"` or `"wgpu"`.
    pub backend: String,
    /// The GPU adapter's name and graphics API (wgpu reports only; absent on the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// How per-node GPU times were measured: GPU timestamp queries, or wall clock per
    /// dispatch where the adapter has no timestamps (wgpu reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<String>,
    pub batch: usize,
    pub threads: usize,
    /// Timed iterations the medians come from; `None` for an analytic-only report.
    pub iters: Option<usize>,
    /// Calibrated compute peak of this machine at `threads` (GFLOP/s), when known.
    pub peak_gflops: Option<f64>,
    /// Calibrated memory bandwidth (GB/s, 1e9 bytes), when known; the roofline's slanted roof.
    pub peak_bandwidth_gbs: Option<f64>,
    pub nodes: Vec<NodeReport>,
    pub totals: Totals,
    /// Per-op-type breakdown, sorted by time (measured) or MACs (analytic), largest first.
    pub op_types: Vec<OpTypeRow>,
    /// Up to ten timed nodes, slowest first (empty for analytic reports).
    pub slowest: Vec<SlowNode>,
}

/// A value a node reads or writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRef {
    pub name: String,
    /// `None` when shape inference could not fix it.
    pub shape: Option<Vec<usize>>,
}

/// Receptive field of a node's (first) output, in input pixels, `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfReport {
    pub size: [u64; 2],
    pub stride: [u64; 2],
    pub offset: [f64; 2],
    /// Whether the field is centred on the output pixel's grid (see `engine::rf`).
    pub aligned: bool,
}

/// One original graph node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    /// ONNX op type.
    pub op: String,
    pub inputs: Vec<TensorRef>,
    pub outputs: Vec<TensorRef>,
    pub macs: u64,
    pub flops: u64,
    pub params: u64,
    pub param_bytes: u64,
    pub output_bytes: u64,
    /// Bytes the node reads (activations + parameters), analytic.
    pub bytes_read: u64,
    /// Bytes the node writes, analytic.
    pub bytes_written: u64,
    /// `flops / (bytes_read + bytes_written)`, analytic (FLOP per byte).
    pub arithmetic_intensity: f64,
    pub rf: Option<RfReport>,
    /// Median time of the execution node this node heads (ms); `None` for analytic reports,
    /// for members of a fused group (see `fused_into`) and for nodes the engine eliminated.
    pub time_ms: Option<f64>,
    /// Achieved GFLOP/s: the group's FLOPs over `time_ms` (a head counts its whole group).
    pub gflops: Option<f64>,
    /// `time_ms` as a percentage of the whole-run median (`totals.time_ms`).
    pub percent: Option<f64>,
    /// `gflops` as a percentage of `peak_gflops`.
    pub peak_percent: Option<f64>,
    /// Bytes newly allocated by the execution node (outputs + scratch), from the run.
    pub allocated_bytes: Option<u64>,
    /// Activation bytes alive right after the execution node ran.
    pub live_bytes: Option<u64>,
    /// Multiply-accumulates the kernels actually executed for the group (Winograd does fewer).
    pub macs_executed: Option<u64>,
    /// Set on the head of a fused group to its own name: the time covers the whole group.
    pub fused_group: Option<String>,
    /// Set on the other members of a fused group: the head's name.
    pub fused_into: Option<String>,
    /// Names of the group's members (head first) when this node heads a fused group.
    pub group_members: Vec<String>,
    /// On every node that carries a time: FLOPs of everything that time covers (the node
    /// itself, or its whole fused group). The numerator of `gflops`.
    pub group_flops: Option<u64>,
    /// On every node that carries a time: bytes the timed group moves to and from memory
    /// (values passed between group members excluded). With `group_flops` it places the node
    /// on the roofline.
    pub group_bytes: Option<u64>,
    /// Index of the execution-graph node that ran this node; `None` when it did not run
    /// (eliminated, constant-folded) or when the report is analytic.
    pub exec_node: Option<usize>,
}

/// Whole-model figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub macs: u64,
    pub flops: u64,
    pub params: u64,
    pub param_bytes: u64,
    /// Peak of simultaneously live activation bytes: measured from the run, or an analytic
    /// estimate (each output freed after its last reader) when nothing ran.
    pub activation_peak_bytes: u64,
    /// Whether `activation_peak_bytes` was measured (true) or estimated.
    pub activation_peak_measured: bool,
    /// Median whole-run time (ms); `None` for analytic reports.
    pub time_ms: Option<f64>,
    /// Sum of the per-node median times (ms).
    pub node_time_ms: Option<f64>,
    /// `time_ms - node_time_ms`: time spent outside node kernels (input copies, scheduling).
    pub unattributed_ms: Option<f64>,
    /// Whole-model FLOPs over `time_ms`.
    pub gflops: Option<f64>,
    pub peak_percent: Option<f64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub arithmetic_intensity: f64,
    pub output_bytes: u64,
}

/// Figures summed over the nodes of one op type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpTypeRow {
    pub op: String,
    pub count: usize,
    pub macs: u64,
    pub flops: u64,
    pub params: u64,
    /// Summed time of the nodes of this type that carry a time (fused groups count under
    /// their head's op type).
    pub time_ms: Option<f64>,
    pub percent: Option<f64>,
}

/// An entry of the ten-slowest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowNode {
    /// Index into `nodes`.
    pub index: usize,
    pub name: String,
    pub op: String,
    pub time_ms: f64,
    pub percent: f64,
}

/// Serialises the report as pretty-printed JSON (see `docs/profile-json.md`).
pub fn to_json(report: &ProfileReport) -> String {
    // Serialising plain structs of numbers and strings cannot fail; NaN/inf become null.
    serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Reads a report back (for `engine report` over a saved profile, and for tests).
pub fn from_json(text: &str) -> crate::Result<ProfileReport> {
    serde_json::from_str(text).map_err(|e| crate::Error::Model(format!("profile JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::testutil::sample_report;
    use super::*;
    use serde_json::Value;

    fn check_keys(v: &Value, keys: &[&str]) {
        for k in keys {
            assert!(v.get(k).is_some(), "missing key {k} in {v}");
        }
    }

    #[test]
    fn json_has_the_documented_keys_and_types() {
        for measured in [false, true] {
            let report = sample_report(measured);
            let text = to_json(&report);
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            check_keys(
                &v,
                &[
                    "model",
                    "backend",
                    "batch",
                    "threads",
                    "iters",
                    "peak_gflops",
                    "nodes",
                    "totals",
                ],
            );
            assert!(v["model"].is_string() && v["backend"].is_string());
            assert!(v["batch"].is_u64() && v["threads"].is_u64());
            assert_eq!(v["iters"].is_null(), !measured);
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            assert_eq!(nodes.len(), report.nodes.len());
            for n in &nodes {
                check_keys(
                    n,
                    &[
                        "name",
                        "op",
                        "inputs",
                        "outputs",
                        "macs",
                        "flops",
                        "params",
                        "param_bytes",
                        "output_bytes",
                        "rf",
                        "time_ms",
                        "gflops",
                        "percent",
                        "allocated_bytes",
                        "live_bytes",
                        "fused_group",
                        "fused_into",
                    ],
                );
                for io in n["inputs"]
                    .as_array()
                    .iter()
                    .chain(n["outputs"].as_array().iter())
                    .flat_map(|a| a.iter())
                {
                    assert!(io["name"].is_string());
                    assert!(io["shape"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(Value::is_u64)));
                }
                for k in ["macs", "flops", "params", "param_bytes", "output_bytes"] {
                    assert!(n[k].is_u64(), "{k}");
                }
                if !n["rf"].is_null() {
                    for k in ["size", "stride", "offset"] {
                        assert_eq!(n["rf"][k].as_array().map(|a| a.len()), Some(2), "rf.{k}");
                    }
                }
                for k in [
                    "time_ms",
                    "gflops",
                    "percent",
                    "allocated_bytes",
                    "live_bytes",
                ] {
                    if !measured {
                        assert!(n[k].is_null(), "{k} must be null when analytic");
                    }
                }
            }
            if measured {
                assert!(nodes[0]["time_ms"].is_f64());
                assert!(nodes[0]["allocated_bytes"].is_u64());
                assert_eq!(nodes[1]["fused_into"], "conv1");
                assert!(nodes[1]["time_ms"].is_null());
            }
            let t = &v["totals"];
            check_keys(
                t,
                &[
                    "macs",
                    "flops",
                    "params",
                    "param_bytes",
                    "activation_peak_bytes",
                    "time_ms",
                ],
            );
            assert_eq!(t["time_ms"].is_null(), !measured);
            assert_eq!(t["macs"].as_u64(), Some(report.totals.macs));
            // Round trip (floats may differ in the last bit: serde_json's fast float parser).
            let back = from_json(&text).ok();
            assert!(back
                .as_ref()
                .is_some_and(|b| b.nodes.len() == report.nodes.len()
                    && b.totals.macs == report.totals.macs
                    && b.nodes.iter().zip(&report.nodes).all(
                        |(x, y)| x.name == y.name && x.time_ms.is_some() == y.time_ms.is_some()
                    )));
        }
    }
}
