//! Checks the analytic figures ([`crate::cost`], [`crate::rf`], the memory plan) against what a
//! real run of the engine does, row by row.
//!
//! Why: the cost model and the receptive-field recurrence are derived by hand from the op
//! definitions; the executor is written separately. If both agree on every node, a bug in one
//! would have to be repeated identically in the other. Every check is a [`Check`] row with
//! the analytic value, the measured one and a status: `Match`, `Explained` (they differ for a
//! known reason, given in `note`: e.g. Winograd does fewer multiplies than the direct
//! definition, a fused intermediate never gets a buffer, BatchNormalization folded into the
//! convolution's weights) or `Mismatch` (unexplained: a bug somewhere).
//!
//! The checks:
//! - MACs: per fused execution group, the sum of the analytic MACs of its members against the
//!   MACs the kernels that ran counted ([`crate::NodeTrace::macs_executed`]).
//! - Output bytes: a node output's analytic size against the buffer the memory plan gave the
//!   value the executor actually computed (matched by value name).
//! - Parameter bytes: the model's analytic parameter bytes against the constant bytes the
//!   session holds after optimisation.
//! - Activation peak: the plan's peak against the largest live-bytes figure of a run.
//! - Receptive field: analytic against [`crate::rf::empirical`] on a sample of nodes whose
//!   centre window lies inside the input (a clipped window cannot show the full size).

use std::cell::RefCell;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{Graph, Op, ValueId};
use crate::rf::{self, EmpiricalRf, Rf};
use crate::session::{Model, Session, SessionOptions};
use crate::tensor::Tensor;

/// Outcome of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Match,
    /// Different for a documented reason (see the row's note).
    Explained,
    Mismatch,
    /// Not measurable here (e.g. the node was constant-folded away).
    Skipped,
}

/// One analytic-vs-measured comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `macs`, `output_bytes`, `param_bytes`, `activation_peak`, `rf`.
    pub kind: String,
    /// Node (or `model`) the row is about.
    pub node: String,
    pub op: String,
    pub analytic: String,
    pub measured: String,
    pub status: Status,
    pub note: Option<String>,
}

/// Counts of rows per status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub checks: usize,
    pub matched: usize,
    pub explained: usize,
    pub mismatched: usize,
    pub skipped: usize,
}

/// Everything [`verify`] compared.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub model: String,
    /// Input shape the run used.
    pub input_shape: Vec<usize>,
    /// Nodes whose receptive field was measured, and why only those.
    pub rf_sample: Vec<String>,
    pub rf_sample_note: String,
    pub checks: Vec<Check>,
    pub totals: Totals,
    pub summary: Summary,
}

/// Whole-model sums next to each other (the `macs` rows per kernel add up to these).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Analytic MACs of the bound graph (direct definition of every op).
    pub macs_analytic: u64,
    /// MACs the kernels that ran counted (fewer where Winograd ran).
    pub macs_executed: u64,
    /// Sum of every node output's bytes (analytic).
    pub output_bytes_analytic: u64,
    pub param_bytes_analytic: u64,
    /// Constant bytes the session holds after optimisation.
    pub param_bytes_held: u64,
    pub activation_peak_planned: u64,
    pub activation_peak_measured: u64,
}

impl VerifyReport {
    /// True when no row is an unexplained mismatch.
    pub fn passed(&self) -> bool {
        self.totals.mismatched == 0
    }
}

/// How [`verify`] works.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub session: SessionOptions,
    /// At most this many nodes get an empirical receptive field (each costs ~4·log₂(H)+2 runs).
    pub rf_samples: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            session: SessionOptions::default(),
            rf_samples: 3,
        }
    }
}

fn row(
    kind: &str,
    node: &str,
    op: &str,
    a: String,
    m: String,
    status: Status,
    note: Option<String>,
) -> Check {
    Check {
        kind: kind.into(),
        node: node.into(),
        op: op.into(),
        analytic: a,
        measured: m,
        status,
        note,
    }
}

/// Runs the model once (seeded input) and compares every analytic figure with the run.
pub fn verify(model: &Model, options: &VerifyOptions) -> Result<VerifyReport> {
    let mut session = Session::new(model, &options.session)?;
    let bound = session.bound_graph().clone();
    let exec = session.exec_graph().clone();
    let plan = session.memory_plan().clone();
    let (costs, ctotals) = crate::cost::graph_cost(&bound);
    let inputs = crate::profile::synthetic_inputs(&session);
    let feed: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let (_, trace) = session.run_profiled(&feed)?;
    let input_shape = session
        .input_infos()
        .first()
        .and_then(|i| i.fixed_shape())
        .unwrap_or_default();
    let mut checks = Vec::new();

    // MACs per execution node: the exec node's origin lists the bound nodes it covers.
    let by_name: std::collections::HashMap<&str, usize> = bound
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    for t in &trace.nodes {
        let Some(en) = exec.nodes.get(t.node) else {
            continue;
        };
        let members: Vec<usize> = if en.origin.is_empty() {
            by_name.get(en.name.as_str()).copied().into_iter().collect()
        } else {
            en.origin
                .iter()
                .filter_map(|o| by_name.get(o.name.as_str()).copied())
                .collect()
        };
        let analytic: u64 = members.iter().map(|&i| costs[i].macs).sum();
        let measured = t.macs_executed;
        let wino = members
            .iter()
            .find_map(|&i| winograd_candidates(&bound, &bound.nodes[i]));
        let (status, note) = if analytic == measured {
            (Status::Match, None)
        } else if let Some(tile) = wino
            .as_ref()
            .and_then(|w| w.iter().find(|(_, m)| *m == measured).map(|(t, _)| *t))
        {
            let how = if measured < analytic {
                format!("{:.2}x fewer", analytic as f64 / measured.max(1) as f64)
            } else {
                format!(
                    "{:.2}x more here: the tiles overhang this small map",
                    measured as f64 / analytic.max(1) as f64
                )
            };
            (
                Status::Explained,
                Some(format!(
                    "Winograd F({tile}x{tile},3x3): {} multiplies per {tile}x{tile} output tile instead of {} ({how}; transforms not counted)",
                    (tile + 2) * (tile + 2),
                    9 * tile * tile,
                )),
            )
        } else if members.is_empty() {
            (Status::Skipped, Some("node not in the bound graph".into()))
        } else {
            (
                Status::Mismatch,
                is_conv(&en.op).then(|| {
                    "differs from the direct definition and from every Winograd tile size".into()
                }),
            )
        };
        let group = if members.len() > 1 {
            Some(format!("fused group of {} nodes", members.len()))
        } else {
            None
        };
        checks.push(row(
            "macs",
            &en.name,
            en.op.type_name(),
            analytic.to_string(),
            measured.to_string(),
            status,
            note.or(group),
        ));
    }

    // Output bytes: analytic size of each bound node output vs its planned buffer.
    for (i, node) in bound.nodes.iter().enumerate() {
        let Some(&out) = node.outputs.first() else {
            continue;
        };
        let name = &bound.value(out).name;
        let analytic = costs[i].output_bytes;
        let planned = exec.find_value(name).and_then(|id| {
            if exec.is_constant(id) {
                return Some(None);
            }
            plan.get(id).map(Some)
        });
        let (m, status, note) = match planned {
            Some(Some(p)) => {
                let b = p.bytes as u64;
                let note = p
                    .in_place_of
                    .map(|v| format!("in place of {}", exec.value(v).name))
                    .or_else(|| {
                        p.part_of
                            .map(|v| format!("written inside Concat output {}", exec.value(v).name))
                    });
                if b == analytic {
                    (b.to_string(), Status::Match, note)
                } else {
                    (b.to_string(), Status::Mismatch, note)
                }
            }
            Some(None) => (
                "constant".into(),
                Status::Explained,
                Some("constant-folded: computed once at load, held as a constant".into()),
            ),
            None if exec.outputs.iter().any(|&o| exec.value(o).name == *name)
                || exec.inputs.iter().any(|&o| exec.value(o).name == *name) =>
            {
                (
                    "caller-owned".into(),
                    Status::Skipped,
                    Some("graph input/output".into()),
                )
            }
            None => (
                "0".into(),
                Status::Explained,
                Some("fused or eliminated: never materialised".into()),
            ),
        };
        checks.push(row(
            "output_bytes",
            &node.name,
            node.op.type_name(),
            analytic.to_string(),
            m,
            status,
            note,
        ));
    }

    // Parameter bytes.
    let (_, held) = exec.parameter_totals();
    let held = held as u64;
    let analytic_params = ctotals.param_bytes;
    let bn_bound = bound
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNormalization { .. }))
        .count();
    let bn_exec = exec
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNormalization { .. }))
        .count();
    let (status, note) = if held == analytic_params {
        (Status::Match, None)
    } else if bn_exec < bn_bound && held < analytic_params {
        (
            Status::Explained,
            Some(format!(
                "{} BatchNormalization nodes folded into conv weights/bias ({} bytes of BN parameters no longer held)",
                bn_bound - bn_exec,
                analytic_params - held
            )),
        )
    } else {
        (Status::Mismatch, None)
    };
    checks.push(row(
        "param_bytes",
        "model",
        "-",
        analytic_params.to_string(),
        held.to_string(),
        status,
        note,
    ));

    // Activation peak: plan vs run. The run samples live bytes after each node; the plan's
    // own after-node figure must equal it exactly, and its during-node peak (inputs, outputs
    // and scratch of the running node together) may only be larger.
    let measured_peak = trace
        .nodes
        .iter()
        .map(|n| n.live_bytes)
        .max()
        .unwrap_or(0)
        .max(trace.peak_live_bytes);
    let planned_peak = plan.planned_peak_bytes as u64;
    let planned_after = plan.live_bytes_after.iter().copied().max().unwrap_or(0) as u64;
    let (status, note) = if measured_peak == planned_peak {
        (Status::Match, None)
    } else if measured_peak == planned_after && measured_peak < planned_peak {
        (
            Status::Explained,
            Some(format!(
                "the run samples live bytes after each node: {planned_after} planned after-node peak matches exactly; the planned peak also counts a running node's inputs, outputs and scratch together"
            )),
        )
    } else {
        (
            Status::Mismatch,
            Some(format!("planned after-node peak {planned_after}")),
        )
    };
    checks.push(row(
        "activation_peak",
        "model",
        "-",
        planned_peak.to_string(),
        measured_peak.to_string(),
        status,
        note,
    ));
    let summary = Summary {
        macs_analytic: ctotals.macs,
        macs_executed: trace.nodes.iter().map(|t| t.macs_executed).sum(),
        output_bytes_analytic: ctotals.output_bytes,
        param_bytes_analytic: analytic_params,
        param_bytes_held: held,
        activation_peak_planned: planned_peak,
        activation_peak_measured: measured_peak,
    };

    // Receptive fields on a sample.
    let rfs = rf::analyze(&bound);
    let sample = rf_sample(&bound, &rfs, &input_shape, options.rf_samples);
    let mut rf_names = Vec::new();
    let hw = [
        input_shape.get(2).copied().unwrap_or(1),
        input_shape.get(3).copied().unwrap_or(1),
    ];
    for (node_idx, vid) in &sample {
        let node = &bound.nodes[*node_idx];
        rf_names.push(node.name.clone());
        let Some(a) = rfs[vid.0] else { continue };
        let e = empirical_rf(&bound, *vid, &options.session)?;
        let (first, last) = clipped_window(&a, e.position, hw);
        let expected = [
            (last[0] + 1).saturating_sub(first[0]) as u64,
            (last[1] + 1).saturating_sub(first[1]) as u64,
        ];
        let status = if (e.first, e.last) == (first, last) {
            Status::Match
        } else {
            Status::Mismatch
        };
        let analytic = if expected == a.size {
            format!("{}x{}", a.size[0], a.size[1])
        } else {
            format!(
                "{}x{} ({}x{} inside the image)",
                a.size[0], a.size[1], expected[0], expected[1]
            )
        };
        checks.push(row(
            "rf",
            &node.name,
            node.op.type_name(),
            analytic,
            format!("{}x{}", e.size[0], e.size[1]),
            status,
            Some(format!(
                "output position {:?}: input rows {}..={}, columns {}..={} ({} runs)",
                e.position, e.first[0], e.last[0], e.first[1], e.last[1], e.runs
            )),
        ));
    }
    let note = format!(
        "{} of {} nodes with a receptive field, spread over the depth (the largest unclipped window included when there is one); each measurement runs the model ~{} times and must find exactly the analytic window of its centre output position, clipped to the {}x{} input",
        sample.len(),
        rfs.iter().filter(|r| r.is_some()).count(),
        4 * (usize::BITS - hw[0].leading_zeros()) + 2,
        hw[0],
        hw[1],
    );
    let mut totals = Totals::default();
    for c in &checks {
        totals.checks += 1;
        match c.status {
            Status::Match => totals.matched += 1,
            Status::Explained => totals.explained += 1,
            Status::Mismatch => totals.mismatched += 1,
            Status::Skipped => totals.skipped += 1,
        }
    }
    Ok(VerifyReport {
        model: model.source.clone(),
        input_shape,
        rf_sample: rf_names,
        rf_sample_note: note,
        checks,
        totals,
        summary,
    })
}

fn is_conv(op: &Op) -> bool {
    matches!(op, Op::Conv(_) | Op::FusedConv { .. })
}

/// For a stride-1, undilated, ungrouped 3×3 2-D convolution: the element-wise GEMM MACs a
/// Winograd F(m×m, 3×3) run does for m = 2 and 4, derived from the shapes alone: the output
/// plane is covered by ⌈H/m⌉·⌈W/m⌉ tiles, and each tile costs (m+2)² multiplies per
/// (input channel, output channel) pair instead of 9·m².
fn winograd_candidates(graph: &Graph, node: &crate::ir::Node) -> Option<Vec<(u64, u64)>> {
    let Op::Conv(c) = &node.op else {
        return None;
    };
    if c.group != 1 || c.strides.iter().any(|&s| s != 1) || c.dilations.iter().any(|&d| d != 1) {
        return None;
    }
    let w_id = node.inputs.get(1).copied().flatten()?;
    let w = match graph.constants.get(&w_id) {
        Some(t) => t.shape().to_vec(),
        None => graph.value(w_id).fixed_shape()?,
    };
    let y = graph.value(*node.outputs.first()?).fixed_shape()?;
    if w.len() != 4 || w[2] != 3 || w[3] != 3 || y.len() != 4 {
        return None;
    }
    let (n, cout, cin, h, wd) = (
        y[0] as u64,
        w[0] as u64,
        w[1] as u64,
        y[2] as u64,
        y[3] as u64,
    );
    Some(
        [2u64, 4]
            .iter()
            .map(|&m| {
                let tiles = h.div_ceil(m) * wd.div_ceil(m);
                (m, n * cout * cin * tiles * (m + 2) * (m + 2))
            })
            .collect(),
    )
}

/// Whether the window of the centre output position of a 4-D value lies inside the input.
pub fn unclipped(graph: &Graph, id: ValueId, r: &Rf, input_hw: [usize; 2]) -> bool {
    let Some(shape) = graph.value(id).fixed_shape() else {
        return false;
    };
    if shape.len() != 4 {
        return false;
    }
    (0..2).all(|ax| {
        let pos = (shape[2 + ax] / 2) as f64;
        let start = r.start(ax) + pos * r.stride[ax] as f64;
        let end = start + r.size[ax] as f64 - 1.0;
        start >= 0.0 && end <= input_hw[ax] as f64 - 1.0
    })
}

/// Up to `k` (node, output value) pairs for empirical checking, in node order: the node with
/// the largest receptive field whose centre window still fits inside the input (when there is
/// one: it shows the full size), then nodes spread evenly over the depth ending with the
/// deepest one (whose window is usually clipped by the image borders; the check then compares
/// against the clipped analytic window).
pub fn rf_sample(
    graph: &Graph,
    rfs: &[Option<Rf>],
    input_shape: &[usize],
    k: usize,
) -> Vec<(usize, ValueId)> {
    if input_shape.len() != 4 || k == 0 {
        return Vec::new();
    }
    let hw = [input_shape[2], input_shape[3]];
    let candidates: Vec<(usize, ValueId, u64, bool)> = graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let &v = n.outputs.first()?;
            let r = rfs.get(v.0).copied().flatten()?;
            let rank = graph.value(v).fixed_shape()?.len();
            (r.size[0] > 1 && (rank == 4 || rank == 2)).then_some((
                i,
                v,
                r.size[0] * r.size[1],
                unclipped(graph, v, &r, hw),
            ))
        })
        .collect();
    let n = candidates.len();
    if n == 0 {
        return Vec::new();
    }
    let mut picked: Vec<usize> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.3)
        .max_by_key(|(j, c)| (c.2, *j))
        .map(|(j, _)| j)
        .into_iter()
        .collect();
    // The deepest node first, then evenly spaced ones from the shallow end.
    let spread = std::iter::once(n - 1).chain((1..k).map(|s| (s * n / k).saturating_sub(1)));
    for j in spread {
        if picked.len() >= k {
            break;
        }
        if !picked.contains(&j) {
            picked.push(j);
        }
    }
    picked.sort_unstable();
    picked
        .iter()
        .map(|&j| (candidates[j].0, candidates[j].1))
        .collect()
}

/// The analytic window (first and last input row/column) of output position `pos`, clipped
/// to an input of `hw`: what [`rf::empirical`] must find (it can only see inside the image).
pub fn clipped_window(r: &Rf, pos: [usize; 2], hw: [usize; 2]) -> ([usize; 2], [usize; 2]) {
    let mut first = [0; 2];
    let mut last = [0; 2];
    for a in 0..2 {
        let start = r.start(a) + (pos[a] as u64 * r.stride[a]) as f64;
        let end = start + r.size[a] as f64 - 1.0;
        first[a] = start.max(0.0) as usize;
        last[a] = end.min(hw[a] as f64 - 1.0).max(0.0) as usize;
    }
    (first, last)
}

/// Receptive fields of every node of a model, as `engine rf` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct RfReport {
    pub model: String,
    pub nodes: Vec<RfNode>,
}

/// One node's receptive field: exact, the downsampling-only shortcut, and (optionally) the
/// measured one.
#[derive(Debug, Clone, Serialize)]
pub struct RfNode {
    pub name: String,
    pub op: String,
    /// Name of the node's (first) output value.
    pub output: String,
    pub rf: RfFigures,
    pub shortcut_size: [u64; 2],
    /// Measured size (clipped to the image) when requested.
    pub empirical_size: Option<[u64; 2]>,
    /// False when the paths merged at or before this node had different strides or centres.
    #[serde(skip)]
    pub aligned: bool,
    /// The analytic window of the measured position clipped to the image (what the
    /// measurement must find), when measured.
    #[serde(skip)]
    pub expected_empirical: Option<[u64; 2]>,
    /// Names of the node's data inputs (to find, e.g., what feeds the global pool).
    #[serde(skip)]
    pub inputs: Vec<String>,
}

/// Size, effective stride and offset (centre of the first output's window), axes H, W.
#[derive(Debug, Clone, Serialize)]
pub struct RfFigures {
    pub size: [u64; 2],
    pub stride: [u64; 2],
    pub offset: [f64; 2],
}

impl RfNode {
    /// True when measured and the measurement found exactly the clipped analytic window.
    pub fn empirical_agrees(&self) -> Option<bool> {
        Some(self.empirical_size? == self.expected_empirical?)
    }
}

/// Receptive fields of the nodes of `model` bound with `options` (every node with a spatial
/// receptive field, or only `node`), from [`rf::analyze`] and [`rf::shortcut_estimate`]; with
/// `empirical`, each listed node is also measured by running the graph up to it
/// ([`rf::empirical`], ~4·log₂(H)+2 runs per node).
pub fn rf_report(
    model: &Model,
    options: &SessionOptions,
    node: Option<&str>,
    empirical: bool,
) -> Result<RfReport> {
    let bound = model.bind(options)?;
    let exact = rf::analyze(&bound);
    let short = rf::shortcut_estimate(&bound);
    if let Some(name) = node {
        if !bound.nodes.iter().any(|n| n.name == name) {
            let known: Vec<&str> = bound
                .nodes
                .iter()
                .take(8)
                .map(|n| n.name.as_str())
                .collect();
            return Err(Error::Model(format!(
                "{}: no node named '{name}' (after shape binding and constant folding); first nodes: {}",
                model.source,
                known.join(", ")
            )));
        }
    }
    let input_shape = bound
        .inputs
        .first()
        .and_then(|&i| bound.value(i).fixed_shape())
        .unwrap_or_default();
    let hw = [
        input_shape.get(2).copied().unwrap_or(1),
        input_shape.get(3).copied().unwrap_or(1),
    ];
    let mut nodes = Vec::new();
    for n in &bound.nodes {
        if node.is_some_and(|want| want != n.name) {
            continue;
        }
        let Some(&out) = n.outputs.first() else {
            continue;
        };
        let Some(r) = exact[out.0] else {
            if node.is_some() {
                return Err(Error::Model(format!(
                    "{}: node '{}' ({}) has no spatial receptive field (its output is not a feature map derived from the input)",
                    model.source,
                    n.name,
                    n.op.type_name()
                )));
            }
            continue;
        };
        let shortcut = short[out.0].map(|s| s.size).unwrap_or(r.size);
        let (empirical_size, expected) = if empirical {
            let e = empirical_rf(&bound, out, options)?;
            let (first, last) = clipped_window(&r, e.position, hw);
            (
                Some(e.size),
                Some([
                    (last[0] + 1).saturating_sub(first[0]) as u64,
                    (last[1] + 1).saturating_sub(first[1]) as u64,
                ]),
            )
        } else {
            (None, None)
        };
        nodes.push(RfNode {
            name: n.name.clone(),
            op: n.op.type_name().to_string(),
            output: bound.value(out).name.clone(),
            rf: RfFigures {
                size: r.size,
                stride: r.stride,
                offset: r.offset,
            },
            shortcut_size: shortcut,
            empirical_size,
            aligned: r.aligned,
            expected_empirical: expected,
            inputs: n
                .inputs
                .iter()
                .flatten()
                .filter(|&&i| !bound.is_constant(i))
                .map(|&i| bound.value(i).name.clone())
                .collect(),
        });
    }
    Ok(RfReport {
        model: model.source.clone(),
        nodes,
    })
}

/// Turns a probe graph into one where no op can mask a change: Relu and Clip become Identity,
/// MaxPool becomes AveragePool over the same window, GlobalMaxPool becomes
/// GlobalAveragePool. None of these changes a receptive field (each pair has the same
/// window), but with the originals a perturbation at the edge of the window can be clipped
/// away (a ReLU whose input stays negative) or lose in a max, and the measured window then
/// comes out a pixel short.
fn linear_probe(g: &mut Graph) {
    for n in &mut g.nodes {
        let single = n.outputs.len() == 1;
        if matches!(n.op, Op::Clip) {
            // Clip's bounds are inputs 1 and 2; Identity reads only its first.
            n.inputs.truncate(1);
        }
        n.op = match std::mem::replace(&mut n.op, Op::Identity) {
            Op::Relu | Op::Clip => Op::Identity,
            Op::MaxPool(p) if single && p.dilations.iter().all(|&d| d <= 1) => {
                Op::AveragePool(crate::ir::PoolAttrs {
                    count_include_pad: true,
                    ..p
                })
            }
            Op::GlobalMaxPool => Op::GlobalAveragePool,
            other => other,
        };
    }
}

/// Measures the receptive field of `value` of a shape-bound graph by running a copy of the
/// graph whose only output is that value, with masking ops replaced (see `linear_probe` and
/// [`rf::empirical`]).
pub fn empirical_rf(
    bound: &Graph,
    value: ValueId,
    options: &SessionOptions,
) -> Result<EmpiricalRf> {
    let mut g = bound.clone();
    g.outputs = vec![value];
    let Some(&input) = g.inputs.first() else {
        return Err(Error::Model(
            "receptive-field measurement: the model has no input".into(),
        ));
    };
    let info = g.value(input).clone();
    let shape = info.fixed_shape().ok_or_else(|| Error::Input {
        name: info.name.clone(),
        message: "receptive-field measurement needs a fixed input shape".into(),
    })?;
    linear_probe(&mut g);
    let name = g.value(value).name.clone();
    let model = Model::from_graph(g, format!("rf probe of {name}"));
    let opts = SessionOptions {
        batch: None,
        input_shapes: Default::default(),
        ..options.clone()
    };
    let session = RefCell::new(Session::new(&model, &opts)?);
    rf::empirical(
        |x: &Tensor| {
            let mut s = session.borrow_mut();
            let outs = s.run(&[(info.name.as_str(), x.clone())])?;
            outs.into_iter()
                .next()
                .map(|(_, t)| t)
                .ok_or_else(|| Error::Model(format!("rf probe of {name}: no output")))
        },
        &shape,
        None,
        0x5EED,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet20_verifies_with_rf_matching() {
        let model = Model::load("zoo:resnet20:input=32").expect("zoo model");
        let opts = VerifyOptions {
            session: SessionOptions {
                threads: 1,
                ..Default::default()
            },
            rf_samples: 2,
        };
        let r = verify(&model, &opts).expect("verify runs");
        let bad: Vec<_> = r
            .checks
            .iter()
            .filter(|c| c.status == Status::Mismatch)
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
        let rf_rows: Vec<_> = r.checks.iter().filter(|c| c.kind == "rf").collect();
        assert!(!rf_rows.is_empty());
        assert!(
            rf_rows.iter().all(|c| c.status == Status::Match),
            "{rf_rows:#?}"
        );
        assert!(r
            .checks
            .iter()
            .any(|c| c.kind == "macs" && c.status == Status::Match));
    }
}
