//! Chrome trace-event JSON (opens in Perfetto and `chrome://tracing`).
//!
//! The per-node times are medians over many runs, not one run's timestamps, so the timeline
//! is synthetic: timed nodes are laid end to end from 0 on thread 1 ("nodes (median)"), and
//! one slice for the whole-run median sits on thread 0 ("run") so the gap between them — the
//! unattributed time — is visible. Analytic reports give an empty trace (metadata only).

use serde_json::{json, Value};

use super::units;
use super::ProfileReport;

/// Renders the report as trace-event JSON (`{"traceEvents": [...]}`), times in µs.
pub fn to_chrome_trace(report: &ProfileReport) -> String {
    let mut events: Vec<Value> = vec![
        json!({"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
               "args": {"name": format!("engine {} ({})", report.model, report.backend)}}),
        json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "run (median)"}}),
        json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "nodes (median)"}}),
    ];
    if let Some(total) = report.totals.time_ms {
        events.push(json!({
            "name": "run", "cat": "run", "ph": "X", "pid": 1, "tid": 0, "ts": 0.0, "dur": total * 1e3,
            "args": {
                "macs": report.totals.macs,
                "flops": report.totals.flops,
                "unattributed_ms": report.totals.unattributed_ms,
                "iters": report.iters,
            }
        }));
    }
    let mut ts = 0.0f64;
    for (i, n) in report.nodes.iter().enumerate() {
        let Some(t) = n.time_ms else { continue };
        let dur = t * 1e3;
        let shape = n
            .outputs
            .first()
            .map(|o| units::shape(o.shape.as_deref()))
            .unwrap_or_default();
        events.push(json!({
            "name": n.name, "cat": n.op, "ph": "X", "pid": 1, "tid": 1, "ts": ts, "dur": dur,
            "args": {
                "index": i,
                "op": n.op,
                "shape": shape,
                "macs": n.macs,
                "group_flops": n.group_flops,
                "gflops": n.gflops,
                "percent": n.percent,
                "fused_group": n.group_members,
                "allocated_bytes": n.allocated_bytes,
                "live_bytes": n.live_bytes,
            }
        }));
        ts += dur;
    }
    let doc = json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"model": report.model, "backend": report.backend, "batch": report.batch,
                      "threads": report.threads, "iters": report.iters},
    });
    serde_json::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::sample_report;
    use super::*;

    #[test]
    fn one_complete_slice_per_timed_node_back_to_back() {
        let report = sample_report(true);
        let v: Value = serde_json::from_str(&to_chrome_trace(&report)).unwrap_or(Value::Null);
        let events = v["traceEvents"].as_array().cloned().unwrap_or_default();
        let slices: Vec<&Value> = events
            .iter()
            .filter(|e| e["ph"] == "X" && e["tid"] == 1)
            .collect();
        let timed = report.nodes.iter().filter(|n| n.time_ms.is_some()).count();
        assert_eq!(slices.len(), timed);
        assert_eq!(slices[0]["name"], "conv1");
        assert!((slices[0]["dur"].as_f64().unwrap_or(0.0) - 420.0).abs() < 1e-6);
        assert_eq!(slices[0]["args"]["shape"], "1x8x32x32");
        assert_eq!(
            slices[0]["args"]["macs"].as_u64(),
            Some(report.nodes[0].macs)
        );
        let mut end = 0.0;
        for s in &slices {
            assert!((s["ts"].as_f64().unwrap_or(-1.0) - end).abs() < 1e-6);
            end += s["dur"].as_f64().unwrap_or(0.0);
        }
        let run = events
            .iter()
            .find(|e| e["ph"] == "X" && e["tid"] == 0)
            .cloned()
            .unwrap_or(Value::Null);
        assert!((run["dur"].as_f64().unwrap_or(0.0) - 652.0).abs() < 1e-6);
        assert!(end < 652.0);
    }

    #[test]
    fn analytic_trace_has_no_slices() {
        let v: Value =
            serde_json::from_str(&to_chrome_trace(&sample_report(false))).unwrap_or(Value::Null);
        let events = v["traceEvents"].as_array().cloned().unwrap_or_default();
        assert!(!events.is_empty());
        assert!(events.iter().all(|e| e["ph"] == "M"));
    }
}
