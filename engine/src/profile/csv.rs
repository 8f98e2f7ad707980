//! CSV: one row per original node with the JSON node fields, shapes written as `1x64x56x56`.
//!
//! Multi-valued cells (several inputs or outputs) are joined with `;`. Unknown or unmeasured
//! values are empty cells, so spreadsheets read them as blanks rather than zeros.

use super::units;
use super::{NodeReport, ProfileReport, TensorRef};

/// The header row, in column order.
pub const CSV_COLUMNS: [&str; 30] = [
    "index",
    "name",
    "op",
    "inputs",
    "input_shapes",
    "outputs",
    "output_shapes",
    "macs",
    "flops",
    "params",
    "param_bytes",
    "output_bytes",
    "bytes_read",
    "bytes_written",
    "arithmetic_intensity",
    "rf_size_h",
    "rf_size_w",
    "rf_stride_h",
    "rf_stride_w",
    "rf_offset_h",
    "rf_offset_w",
    "time_ms",
    "gflops",
    "percent",
    "peak_percent",
    "allocated_bytes",
    "live_bytes",
    "macs_executed",
    "fused_group",
    "fused_into",
];

/// Quotes a field when it holds a separator, quote or line break (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn names(ts: &[TensorRef]) -> String {
    ts.iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

fn shapes(ts: &[TensorRef]) -> String {
    ts.iter()
        .map(|t| units::shape(t.shape.as_deref()))
        .collect::<Vec<_>>()
        .join(";")
}

fn row(i: usize, n: &NodeReport) -> Vec<String> {
    let rf = n.rf.as_ref();
    vec![
        i.to_string(),
        n.name.clone(),
        n.op.clone(),
        names(&n.inputs),
        shapes(&n.inputs),
        names(&n.outputs),
        shapes(&n.outputs),
        n.macs.to_string(),
        n.flops.to_string(),
        n.params.to_string(),
        n.param_bytes.to_string(),
        n.output_bytes.to_string(),
        n.bytes_read.to_string(),
        n.bytes_written.to_string(),
        n.arithmetic_intensity.to_string(),
        opt(rf.map(|r| r.size[0])),
        opt(rf.map(|r| r.size[1])),
        opt(rf.map(|r| r.stride[0])),
        opt(rf.map(|r| r.stride[1])),
        opt(rf.map(|r| r.offset[0])),
        opt(rf.map(|r| r.offset[1])),
        opt(n.time_ms),
        opt(n.gflops),
        opt(n.percent),
        opt(n.peak_percent),
        opt(n.allocated_bytes),
        opt(n.live_bytes),
        opt(n.macs_executed),
        opt(n.fused_group.as_deref()),
        opt(n.fused_into.as_deref()),
    ]
}

/// Renders the nodes as CSV with a header row (`CSV_COLUMNS`).
pub fn to_csv(report: &ProfileReport) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for (i, n) in report.nodes.iter().enumerate() {
        let cells: Vec<String> = row(i, n).iter().map(|c| field(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{sample_report, LONG_NAME};
    use super::*;

    /// A minimal RFC 4180 reader, enough to check our own output.
    fn parse(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut cell = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => cell.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut cell)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut cell));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => cell.push(c),
            }
        }
        rows
    }

    #[test]
    fn one_row_per_node_with_shapes_and_blanks() {
        let mut report = sample_report(true);
        report.nodes[5].name = "add, \"quoted\"".into();
        let rows = parse(&to_csv(&report));
        assert_eq!(rows.len(), 1 + report.nodes.len());
        assert!(rows.iter().all(|r| r.len() == CSV_COLUMNS.len()));
        let col = |name: &str| {
            CSV_COLUMNS
                .iter()
                .position(|c| *c == name)
                .unwrap_or(usize::MAX)
        };
        assert_eq!(rows[1][col("name")], "conv1");
        assert_eq!(rows[1][col("input_shapes")], "1x3x32x32;8x3x3x3");
        assert_eq!(rows[1][col("output_shapes")], "1x8x32x32");
        let t: f64 = rows[1][col("time_ms")].parse().unwrap_or(0.0);
        assert!((t - 0.42).abs() < 1e-9);
        assert_eq!(rows[1][col("fused_group")], "conv1");
        assert_eq!(rows[2][col("time_ms")], "");
        assert_eq!(rows[2][col("fused_into")], "conv1");
        assert_eq!(rows[5][col("name")], LONG_NAME);
        assert_eq!(rows[6][col("name")], "add, \"quoted\"");
        assert_eq!(rows[1][col("rf_size_h")], "3");
        assert_eq!(rows[8][col("rf_size_h")], "");
        let macs: u64 = rows[1..]
            .iter()
            .map(|r| r[col("macs")].parse::<u64>().unwrap_or(0))
            .sum();
        assert_eq!(macs, report.totals.macs);
    }
}
