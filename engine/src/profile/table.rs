//! The human-readable table: nodes, totals, per-op-type breakdown, ten slowest.
//!
//! Column widths follow the content; unless `wide`, the name (and if need be op and shape)
//! columns are shortened in the middle so every line fits [`MAX_WIDTH`] columns.

use std::fmt::Write as _;

use super::units;
use super::{NodeReport, ProfileReport, RfReport};

/// The line width a non-wide table never exceeds.
pub const MAX_WIDTH: usize = 120;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A column: header, alignment, the smallest width it may be shortened to, and the widest it
/// may be in a non-wide table (0: no limit).
struct Col {
    header: &'static str,
    align: Align,
    min: usize,
    max: usize,
}

const fn col(header: &'static str, align: Align, min: usize) -> Col {
    Col {
        header,
        align,
        min,
        max: 0,
    }
}

/// The node-name column: at most 48 characters in a non-wide table.
const fn name_col() -> Col {
    Col {
        header: "node",
        align: Align::Left,
        min: 12,
        max: 48,
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// Lays out rows under headers. Columns with `min < content width` may be shortened (in the
/// middle) to keep the total within `max_width`, widest shrinkable column first.
fn render(cols: &[Col], rows: &[Vec<String>], indent: usize, max_width: Option<usize>) -> String {
    let mut widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(c, col)| {
            rows.iter()
                .map(|r| width(&r[c]))
                .chain([width(col.header)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    if let Some(max) = max_width {
        for (w, c) in widths.iter_mut().zip(cols) {
            if c.max > 0 {
                *w = (*w).min(c.max);
            }
        }
        let total = |w: &[usize]| indent + w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
        while total(&widths) > max {
            // Shrink the column with the most room above its minimum.
            let best = (0..cols.len())
                .filter(|&c| widths[c] > cols[c].min.max(width(cols[c].header)))
                .max_by_key(|&c| widths[c] - cols[c].min);
            match best {
                Some(c) => widths[c] -= 1,
                None => break,
            }
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>, out: &mut String| {
        let mut s = " ".repeat(indent);
        for (c, cell) in cells.enumerate() {
            let cell = units::shorten_middle(&cell, widths[c]);
            let pad = widths[c] - width(&cell);
            if c > 0 {
                s.push_str("  ");
            }
            match cols[c].align {
                Align::Left => {
                    s.push_str(&cell);
                    s.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(&cell);
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut cols.iter().map(|c| c.header.to_string()), &mut out);
    let rule: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    out.push_str(&" ".repeat(indent));
    out.push_str(&"-".repeat(rule));
    out.push('\n');
    for r in rows {
        line(&mut r.iter().cloned(), &mut out);
    }
    out
}

/// Shorter names for the long ONNX op types, so the op column stays narrow.
fn short_op(op: &str) -> &str {
    match op {
        "BatchNormalization" => "BatchNorm",
        "GlobalAveragePool" => "GlobalAvgPool",
        "AveragePool" => "AvgPool",
        "ConstantOfShape" => "ConstOfShape",
        other => other,
    }
}

fn rf_cell(rf: Option<&RfReport>) -> String {
    match rf {
        None => "-".to_string(),
        Some(r) if r.size[0] == r.size[1] => r.size[0].to_string(),
        Some(r) => format!("{}x{}", r.size[0], r.size[1]),
    }
}

fn output_cell(n: &NodeReport) -> String {
    let first = units::shape(n.outputs.first().and_then(|o| o.shape.as_deref()));
    if n.outputs.len() > 1 {
        format!("{first} +{}", n.outputs.len() - 1)
    } else {
        first
    }
}

fn pct(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.1}"))
        .unwrap_or_else(|| "-".to_string())
}

fn opt_ms(t: Option<f64>) -> String {
    t.map(units::millis).unwrap_or_else(|| "-".to_string())
}

/// Renders the report as an aligned text table (at most 120 columns unless `wide`).
pub fn to_table(report: &ProfileReport, wide: bool) -> String {
    let measured = report.totals.time_ms.is_some();
    let max = if wide { None } else { Some(MAX_WIDTH) };
    let mut out = String::new();

    let _ = write!(
        out,
        "model {}  backend {}  batch {}  threads {}",
        report.model, report.backend, report.batch, report.threads
    );
    match report.iters {
        Some(i) => {
            let _ = write!(out, "  median of {i} runs");
        }
        None => out.push_str("  (analytic, not run)"),
    }
    if let Some(p) = report.peak_gflops {
        let _ = write!(out, "  peak {p:.0} GFLOP/s");
    }
    if let Some(d) = &report.device {
        let _ = write!(out, "\ndevice {d}");
        if let Some(t) = &report.timing {
            let _ = write!(out, "  timing: {t}");
        }
    }
    out.push_str("\n\n");

    let mut cols = vec![
        col("#", Align::Right, 1),
        name_col(),
        col("op", Align::Left, 6),
        col("output", Align::Left, 9),
        col("MACs", Align::Right, 0),
        col("params", Align::Right, 0),
        col("out mem", Align::Right, 0),
        col("RF", Align::Right, 0),
    ];
    if measured {
        cols.extend([
            col("time", Align::Right, 0),
            col("%", Align::Right, 0),
            col("GFLOP/s", Align::Right, 0),
        ]);
    } else {
        cols.push(col("FLOP/B", Align::Right, 0));
    }
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut name = n.name.clone();
            if n.fused_group.is_some() {
                name.push_str(" [+]");
            }
            let mut r = vec![
                i.to_string(),
                name,
                if wide {
                    n.op.clone()
                } else {
                    short_op(&n.op).to_string()
                },
                output_cell(n),
                units::macs(n.macs),
                units::count(n.params),
                units::bytes(n.output_bytes),
                rf_cell(n.rf.as_ref()),
            ];
            if measured {
                let time = match (&n.fused_into, n.time_ms) {
                    (Some(_), _) => "fused".to_string(),
                    (None, t) => opt_ms(t),
                };
                r.extend([
                    time,
                    pct(n.percent),
                    n.gflops
                        .map(|g| format!("{g:.1}"))
                        .unwrap_or_else(|| "-".into()),
                ]);
            } else {
                r.push(format!("{:.1}", n.arithmetic_intensity));
            }
            r
        })
        .collect();
    out.push_str(&render(&cols, &rows, 0, max));
    if report.nodes.iter().any(|n| n.fused_group.is_some()) {
        out.push_str(
            "[+] heads a fused group: its time covers the members marked \"fused\" below it\n",
        );
    }

    // Totals.
    let t = &report.totals;
    out.push_str("\nTotals\n");
    let _ = writeln!(
        out,
        "  {}  {}  {} params ({})",
        units::macs(t.macs),
        units::flops(t.flops),
        units::count(t.params),
        units::bytes(t.param_bytes)
    );
    let _ = writeln!(
        out,
        "  activation peak {} ({})  read {}  written {}  {:.1} FLOP/B",
        units::bytes(t.activation_peak_bytes),
        if t.activation_peak_measured {
            "measured"
        } else {
            "estimated"
        },
        units::bytes(t.bytes_read),
        units::bytes(t.bytes_written),
        t.arithmetic_intensity
    );
    if let Some(time) = t.time_ms {
        let _ = write!(out, "  time {} (whole-run median)", units::millis(time));
        if let Some(g) = t.gflops {
            let _ = write!(out, "  {g:.1} GFLOP/s");
        }
        if let Some(p) = t.peak_percent {
            let _ = write!(out, " = {p:.1}% of peak");
        }
        out.push('\n');
        if let (Some(n), Some(u)) = (t.node_time_ms, t.unattributed_ms) {
            let _ = writeln!(
                out,
                "  nodes {}  unattributed {} ({:.1}% of the run)",
                units::millis(n),
                units::millis(u),
                if time > 0.0 { 100.0 * u / time } else { 0.0 }
            );
        }
    }

    // Op types.
    out.push_str("\nBy op type\n");
    let mut cols = vec![
        col("op", Align::Left, 6),
        col("count", Align::Right, 0),
        col("MACs", Align::Right, 0),
        col("params", Align::Right, 0),
    ];
    if measured {
        cols.extend([col("time", Align::Right, 0), col("%", Align::Right, 0)]);
    }
    let rows: Vec<Vec<String>> = report
        .op_types
        .iter()
        .map(|o| {
            let mut r = vec![
                if wide {
                    o.op.clone()
                } else {
                    short_op(&o.op).to_string()
                },
                o.count.to_string(),
                units::macs(o.macs),
                units::count(o.params),
            ];
            if measured {
                r.extend([opt_ms(o.time_ms), pct(o.percent)]);
            }
            r
        })
        .collect();
    out.push_str(&render(&cols, &rows, 2, max));

    if !report.slowest.is_empty() {
        out.push_str("\nTen slowest\n");
        let cols = [
            col("#", Align::Right, 1),
            name_col(),
            col("op", Align::Left, 6),
            col("time", Align::Right, 0),
            col("%", Align::Right, 0),
        ];
        let rows: Vec<Vec<String>> = report
            .slowest
            .iter()
            .map(|s| {
                vec![
                    s.index.to_string(),
                    s.name.clone(),
                    if wide {
                        s.op.clone()
                    } else {
                        short_op(&s.op).to_string()
                    },
                    units::millis(s.time_ms),
                    format!("{:.1}", s.percent),
                ]
            })
            .collect();
        out.push_str(&render(&cols, &rows, 2, max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{sample_report, LONG_NAME};
    use super::*;

    #[test]
    fn narrow_table_fits_120_columns_and_shortens_long_names() {
        for measured in [false, true] {
            let t = to_table(&sample_report(measured), false);
            for line in t.lines() {
                assert!(
                    line.chars().count() <= MAX_WIDTH,
                    "{} columns: {line}",
                    line.chars().count()
                );
            }
            assert!(!t.contains(LONG_NAME), "long name should be shortened");
            assert!(t.contains("/backbone/"), "head of the long name kept");
            assert!(
                t.contains("pointwise_expand/Conv"),
                "tail of the long name kept"
            );
            assert!(t.contains("…"));
        }
    }

    #[test]
    fn wide_table_keeps_full_names() {
        let t = to_table(&sample_report(true), true);
        assert!(t.contains(LONG_NAME));
        assert!(t.lines().any(|l| l.chars().count() > MAX_WIDTH));
    }

    #[test]
    fn measured_table_has_times_summaries_and_fusion_markers() {
        let t = to_table(&sample_report(true), false);
        assert!(t.contains("conv1 [+]"));
        assert!(t.contains("fused"));
        assert!(t.contains("420 µs"), "{t}");
        assert!(t.contains("unattributed 30.0 µs"), "{t}");
        assert!(t.contains("By op type"));
        assert!(t.contains("Ten slowest"));
        assert!(t.contains("1x8x32x32"));
        let a = to_table(&sample_report(false), false);
        assert!(a.contains("(analytic, not run)"));
        assert!(!a.contains("Ten slowest"));
        assert!(a.contains("estimated"));
    }
}
