//! Side-by-side totals of two models and their ratios (B/A): what a design change (narrower
//! layers, another input size) does to memory, compute and measured time.
//!
//! Feature-map memory is the sum of every node output's bytes (what a framework that keeps
//! every activation would hold, e.g. for training); the activation peak is what this engine's
//! memory plan needs at once for inference. Latency is the median of timed runs with the same
//! thread count and batch for both models, so its ratio can be set next to the MAC ratio (the
//! "predicted" one if time were proportional to arithmetic).

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::ir::Graph;
use crate::session::{Model, Session, SessionOptions};
use crate::tensor::Tensor;

/// Totals of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelTotals {
    pub model: String,
    pub feature_map_bytes: u64,
    pub param_bytes: u64,
    pub params: u64,
    pub macs: u64,
    pub activation_peak_bytes: u64,
    /// Median of the timed runs (ms); `None` with `analytic_only`.
    pub latency_ms: Option<f64>,
}

/// B/A for every figure of [`ModelTotals`] but the name.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub feature_map_bytes: f64,
    pub param_bytes: f64,
    pub params: f64,
    pub macs: f64,
    pub activation_peak_bytes: f64,
    pub latency_ms: Option<f64>,
}

/// What [`compare`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub a: ModelTotals,
    pub b: ModelTotals,
    pub ratio: Ratios,
    /// Why a ratio is what it is: A's total split by how each node scaled (only when the
    /// models share node names, e.g. two widths of one zoo model). Not part of the JSON.
    #[serde(skip)]
    pub breakdown: Vec<Scaling>,
}

/// One figure (`macs`, `params` or `feature_map_bytes`) of A split into groups of nodes that
/// scaled by the same factor from A to B.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub metric: &'static str,
    /// Groups, largest share of A first.
    pub groups: Vec<ScalingGroup>,
}

/// Nodes (matched by name) whose figure scaled by the same B/A factor.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingGroup {
    /// B/A of each node in the group (rounded to 4 significant digits to group them).
    pub ratio: f64,
    /// Fraction of A's total that these nodes hold.
    pub share_of_a: f64,
    pub nodes: usize,
    /// Up to three nodes of the group, largest first, with their channel counts in A → B,
    /// e.g. `conv1 (Conv): in 3→3 ch, out 64→32 ch`.
    pub examples: Vec<String>,
}

/// How [`compare`] runs.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub session: SessionOptions,
    /// Skip the timed runs (no latency).
    pub analytic_only: bool,
    pub warmup: usize,
    pub iters: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            session: SessionOptions::default(),
            analytic_only: false,
            warmup: 2,
            iters: 10,
        }
    }
}

fn ratio(b: u64, a: u64) -> f64 {
    if a == 0 {
        f64::NAN
    } else {
        b as f64 / a as f64
    }
}

/// Totals of one model: analytic figures from the bound graph, the activation peak from the
/// memory plan, and (unless `analytic_only`) the median latency.
pub fn totals(model: &Model, options: &CompareOptions) -> Result<ModelTotals> {
    let mut session = Session::new(model, &options.session)?;
    let latency_ms = if options.analytic_only {
        None
    } else {
        let feed = inputs(&session);
        let feed: Vec<(&str, Tensor)> = feed.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        for _ in 0..options.warmup {
            session.run(&feed)?;
        }
        let mut ms = Vec::with_capacity(options.iters.max(1));
        for _ in 0..options.iters.max(1) {
            ms.push(timed(&mut session, &feed)?);
        }
        Some(median(ms))
    };
    Ok(model_totals(model, &session, latency_ms))
}

fn inputs(session: &Session) -> Vec<(String, Tensor)> {
    crate::profile::synthetic_inputs(session)
}

fn timed(session: &mut Session, feed: &[(&str, Tensor)]) -> Result<f64> {
    let start = Instant::now();
    session.run(feed)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    let n = ms.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => ms[n / 2],
        _ => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

fn model_totals(model: &Model, session: &Session, latency_ms: Option<f64>) -> ModelTotals {
    let (_, t) = crate::cost::graph_cost(session.bound_graph());
    ModelTotals {
        model: model.source.clone(),
        feature_map_bytes: t.output_bytes,
        param_bytes: t.param_bytes,
        params: t.params,
        macs: t.macs,
        activation_peak_bytes: session.memory_plan().planned_peak_bytes as u64,
        latency_ms,
    }
}

/// Channel count of a value: dim 1 of a 4-D map, the last dim of a 2-D one.
fn channels(g: &Graph, id: Option<crate::ir::ValueId>) -> Option<usize> {
    let id = id?;
    let s = match g.constants.get(&id) {
        Some(t) => t.shape().to_vec(),
        None => g.value(id).fixed_shape()?,
    };
    match s.len() {
        4 => Some(s[1]),
        2 => Some(s[1]),
        _ => None,
    }
}

/// Reads one figure (MACs, params, bytes) out of a node's analytic cost.
type MetricOf = fn(&crate::cost::NodeCost) -> u64;
/// Nodes whose figure scaled by the same ratio: (ratio, sum of A's figure, node count,
/// members as (A's figure, node index in A, node index in B)).
type RatioGroup = (f64, u64, usize, Vec<(u64, usize, usize)>);

/// Splits A's MACs, params and feature-map bytes by how each node (matched by name in B)
/// scaled. Empty when fewer than half of A's nodes have a namesake in B.
pub fn breakdown(a: &Graph, b: &Graph) -> Vec<Scaling> {
    let (ca, _) = crate::cost::graph_cost(a);
    let (cb, _) = crate::cost::graph_cost(b);
    let by_name: std::collections::HashMap<&str, usize> = b
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let matched: Vec<(usize, usize)> = a
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| by_name.get(n.name.as_str()).map(|&j| (i, j)))
        .collect();
    if matched.len() * 2 < a.nodes.len() {
        return Vec::new();
    }
    let describe = |i: usize, j: usize| {
        let (na, nb) = (&a.nodes[i], &b.nodes[j]);
        let fmt = |x: Option<usize>, y: Option<usize>| match (x, y) {
            (Some(x), Some(y)) => format!("{x}→{y}"),
            _ => "?".to_string(),
        };
        format!(
            "{} ({}): in {} ch, out {} ch",
            na.name,
            na.op.type_name(),
            fmt(
                channels(a, na.inputs.first().copied().flatten()),
                channels(b, nb.inputs.first().copied().flatten())
            ),
            fmt(
                channels(a, na.outputs.first().copied()),
                channels(b, nb.outputs.first().copied())
            ),
        )
    };
    let metrics: [(&'static str, MetricOf); 3] = [
        ("macs", |c| c.macs),
        ("params", |c| c.params),
        ("feature_map_bytes", |c| c.output_bytes),
    ];
    let mut out = Vec::new();
    for (metric, get) in metrics {
        let total_a: u64 = ca.iter().map(get).sum();
        if total_a == 0 {
            continue;
        }
        // key: ratio rounded to 4 significant digits → (ratio, share, nodes, [(value, desc)]).
        let mut groups: Vec<RatioGroup> = Vec::new();
        for &(i, j) in &matched {
            let (va, vb) = (get(&ca[i]), get(&cb[j]));
            if va == 0 {
                continue;
            }
            let r = round4(vb as f64 / va as f64);
            match groups.iter_mut().find(|g| g.0 == r) {
                Some(g) => {
                    g.1 += va;
                    g.2 += 1;
                    g.3.push((va, i, j));
                }
                None => groups.push((r, va, 1, vec![(va, i, j)])),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.1));
        let groups = groups
            .into_iter()
            .map(|(ratio, sum, nodes, mut members)| {
                members.sort_by_key(|m| std::cmp::Reverse(m.0));
                ScalingGroup {
                    ratio,
                    share_of_a: sum as f64 / total_a as f64,
                    nodes,
                    examples: members
                        .iter()
                        .take(3)
                        .map(|&(_, i, j)| describe(i, j))
                        .collect(),
                }
            })
            .collect();
        out.push(Scaling { metric, groups });
    }
    out
}

fn round4(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

/// Compares two models. Both sessions are prepared first; their timed runs alternate
/// (A, B, A, B...) so that a change in machine load affects both alike.
pub fn compare(a: &Model, b: &Model, options: &CompareOptions) -> Result<CompareReport> {
    let mut sa = Session::new(a, &options.session)?;
    let mut sb = Session::new(b, &options.session)?;
    let (mut la, mut lb) = (None, None);
    if !options.analytic_only {
        let (fa, fb) = (inputs(&sa), inputs(&sb));
        let fa: Vec<(&str, Tensor)> = fa.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let fb: Vec<(&str, Tensor)> = fb.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        for _ in 0..options.warmup {
            sa.run(&fa)?;
            sb.run(&fb)?;
        }
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        for _ in 0..options.iters.max(1) {
            ta.push(timed(&mut sa, &fa)?);
            tb.push(timed(&mut sb, &fb)?);
        }
        la = Some(median(ta));
        lb = Some(median(tb));
    }
    let ta = model_totals(a, &sa, la);
    let tb = model_totals(b, &sb, lb);
    let ratio = Ratios {
        feature_map_bytes: ratio(tb.feature_map_bytes, ta.feature_map_bytes),
        param_bytes: ratio(tb.param_bytes, ta.param_bytes),
        params: ratio(tb.params, ta.params),
        macs: ratio(tb.macs, ta.macs),
        activation_peak_bytes: ratio(tb.activation_peak_bytes, ta.activation_peak_bytes),
        latency_ms: match (la, lb) {
            (Some(x), Some(y)) if x > 0.0 => Some(y / x),
            _ => None,
        },
    };
    Ok(CompareReport {
        breakdown: breakdown(sa.bound_graph(), sb.bound_graph()),
        a: ta,
        b: tb,
        ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_width_resnet20_scales_about_as_derived() {
        let a = Model::load("zoo:resnet20").expect("zoo");
        let b = Model::load("zoo:resnet20:width=0.5").expect("zoo");
        let opts = CompareOptions {
            analytic_only: true,
            ..Default::default()
        };
        let r = compare(&a, &b, &opts).expect("compare");
        // Every conv but the 3-channel stem and the 10-class FC scales by 1/4 in MACs and
        // params; feature maps (all channel-proportional except the 3-channel input) by 1/2.
        assert!((r.ratio.macs - 0.25).abs() < 0.02, "{}", r.ratio.macs);
        assert!((r.ratio.params - 0.25).abs() < 0.03, "{}", r.ratio.params);
        assert!(
            (r.ratio.feature_map_bytes - 0.5).abs() < 0.02,
            "{}",
            r.ratio.feature_map_bytes
        );
        assert!(r.a.latency_ms.is_none());
    }
}
