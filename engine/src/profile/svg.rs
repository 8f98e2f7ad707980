//! A self-contained SVG (no scripts, fonts or external references) with three panels:
//!
//! (a) per-layer memory: feature-map (output) bytes as bars above the layer axis, filter
//!     (parameter) bytes below it, each side on its own linear scale;
//! (b) time per layer (MACs per layer when the report is analytic);
//! (c) roofline: each timed node as a point at (arithmetic intensity, achieved GFLOP/s) on
//!     log-log axes under the calibrated compute peak and memory-bandwidth roofs.
//!
//! Every bar and point carries a `<title>` with the node name so browsers show it on hover.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::units;
use super::ProfileReport;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{}</text>"#,
        xml_escape(s)
    );
}

fn rotated_text(out: &mut String, x: f64, y: f64, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" font-size="12" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
        xml_escape(s)
    );
}

/// Stable colour per op type (in order of first appearance).
fn op_colors(report: &ProfileReport) -> BTreeMap<String, &'static str> {
    let mut map = BTreeMap::new();
    for n in &report.nodes {
        let k = map.len();
        map.entry(n.op.clone())
            .or_insert(PALETTE[k % PALETTE.len()]);
    }
    map
}

fn legend(out: &mut String, top: f64, colors: &BTreeMap<String, &str>, used: &[&str]) {
    let x = WIDTH - RIGHT + 15.0;
    let mut y = top;
    for op in used {
        if let Some(c) = colors.get(*op) {
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{c}"/>"#,
                y - 9.0
            );
            text(out, x + 15.0, y, "start", 11, op);
            y += 15.0;
        }
    }
}

/// Panel (a): feature-map bytes above the axis, filter bytes below.
fn memory_panel(out: &mut String, report: &ProfileReport, top: f64) -> f64 {
    let height = 300.0;
    let half = (height - 60.0) / 2.0;
    let axis = top + 40.0 + half;
    text(
        out,
        WIDTH / 2.0,
        top + 20.0,
        "middle",
        15,
        "Memory per layer: feature maps (above) and filters (below)",
    );
    let n = report.nodes.len().max(1);
    let bw = PLOT_W / n as f64;
    let max_fm = report
        .nodes
        .iter()
        .map(|n| n.output_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_w = report
        .nodes
        .iter()
        .map(|n| n.param_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for (i, node) in report.nodes.iter().enumerate() {
        let x = LEFT + i as f64 * bw;
        let h = half * node.output_bytes as f64 / max_fm;
        let name = xml_escape(&node.name);
        if h > 0.0 {
            let _ = writeln!(
                out,
                r##"<rect x="{x:.2}" y="{:.2}" width="{:.2}" height="{h:.2}" fill="#4c78a8"><title>{name}: {} feature map</title></rect>"##,
                axis - h,
                bw.max(0.5),
                units::bytes(node.output_bytes)
            );
        }
        let h = half * node.param_bytes as f64 / max_w;
        if h > 0.0 {
            let _ = writeln!(
                out,
                r##"<rect x="{x:.2}" y="{axis:.2}" width="{:.2}" height="{h:.2}" fill="#f58518"><title>{name}: {} filters</title></rect>"##,
                bw.max(0.5),
                units::bytes(node.param_bytes)
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{axis:.1}" x2="{:.1}" y2="{axis:.1}" stroke="black"/>"#,
        LEFT + PLOT_W
    );
    text(
        out,
        LEFT - 5.0,
        axis - half + 4.0,
        "end",
        11,
        &units::bytes(max_fm as u64),
    );
    text(
        out,
        LEFT - 5.0,
        axis + half,
        "end",
        11,
        &units::bytes(max_w as u64),
    );
    text(out, LEFT - 5.0, axis + 4.0, "end", 11, "0");
    rotated_text(out, 20.0, axis, "bytes");
    text(
        out,
        LEFT + PLOT_W / 2.0,
        axis + half + 18.0,
        "middle",
        12,
        "layer (execution order)",
    );
    let x = WIDTH - RIGHT + 15.0;
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{:.1}" width="10" height="10" fill="#4c78a8"/>"##,
        top + 50.0
    );
    text(out, x + 15.0, top + 59.0, "start", 11, "feature maps");
    let _ = writeln!(
        out,
        r##"<rect x="{x}" y="{:.1}" width="10" height="10" fill="#f58518"/>"##,
        top + 65.0
    );
    text(out, x + 15.0, top + 74.0, "start", 11, "filters");
    height
}

/// Panel (b): time per layer, or MACs when nothing was measured.
fn time_panel(
    out: &mut String,
    report: &ProfileReport,
    top: f64,
    colors: &BTreeMap<String, &str>,
) -> f64 {
    let height = 240.0;
    let plot_h = height - 70.0;
    let base = top + 35.0 + plot_h;
    let measured = report.totals.time_ms.is_some();
    let values: Vec<f64> = report
        .nodes
        .iter()
        .map(|n| {
            if measured {
                n.time_ms.unwrap_or(0.0)
            } else {
                n.macs as f64
            }
        })
        .collect();
    let title = if measured {
        "Time per layer (median; fused groups on their head)"
    } else {
        "MACs per layer (analytic: not run)"
    };
    text(out, WIDTH / 2.0, top + 20.0, "middle", 15, title);
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let bw = PLOT_W / report.nodes.len().max(1) as f64;
    let mut used: Vec<&str> = Vec::new();
    for (i, (node, v)) in report.nodes.iter().zip(&values).enumerate() {
        if *v <= 0.0 || max <= 0.0 {
            continue;
        }
        let h = plot_h * v / max;
        let c = colors.get(&node.op).copied().unwrap_or("#888888");
        if !used.contains(&node.op.as_str()) {
            used.push(&node.op);
        }
        let label = if measured {
            units::millis(*v)
        } else {
            units::macs(*v as u64)
        };
        let _ = writeln!(
            out,
            r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{h:.2}" fill="{c}"><title>{} ({}): {label}</title></rect>"#,
            LEFT + i as f64 * bw,
            base - h,
            bw.max(0.5),
            xml_escape(&node.name),
            xml_escape(&node.op)
        );
    }
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{base:.1}" x2="{:.1}" y2="{base:.1}" stroke="black"/>"#,
        LEFT + PLOT_W
    );
    let _ = writeln!(
        out,
        r#"<line x1="{LEFT}" y1="{:.1}" x2="{LEFT}" y2="{base:.1}" stroke="black"/>"#,
        base - plot_h
    );
    let top_label = if measured {
        units::millis(max)
    } else {
        units::macs(max as u64)
    };
    text(out, LEFT - 5.0, base - plot_h + 4.0, "end", 11, &top_label);
    text(out, LEFT - 5.0, base + 4.0, "end", 11, "0");
    rotated_text(
        out,
        20.0,
        base - plot_h / 2.0,
        if measured { "time" } else { "MACs" },
    );
    text(
        out,
        LEFT + PLOT_W / 2.0,
        base + 18.0,
        "middle",
        12,
        "layer (execution order)",
    );
    legend(out, top + 45.0, colors, &used);
    height
}

/// Decade ticks covering [lo, hi].
fn decades(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a..=b).map(|e| 10f64.powi(e)).collect()
}

/// Panel (c): roofline.
fn roofline_panel(
    out: &mut String,
    report: &ProfileReport,
    top: f64,
    colors: &BTreeMap<String, &str>,
) -> f64 {
    let height = 420.0;
    let plot_h = height - 80.0;
    let base = top + 35.0 + plot_h;
    text(
        out,
        WIDTH / 2.0,
        top + 20.0,
        "middle",
        15,
        "Roofline: achieved GFLOP/s vs arithmetic intensity",
    );
    let points: Vec<(f64, f64, &super::NodeReport)> = report
        .nodes
        .iter()
        .filter_map(|n| {
            let g = n.gflops.filter(|g| *g > 0.0 && g.is_finite())?;
            let f = n.group_flops? as f64;
            let b = n.group_bytes.filter(|b| *b > 0)? as f64;
            (f > 0.0).then_some((f / b, g, n))
        })
        .collect();
    let peak = report.peak_gflops.filter(|p| *p > 0.0);
    let bw = report.peak_bandwidth_gbs.filter(|b| *b > 0.0);
    // Axis ranges from the data and the roofs, padded to whole decades.
    let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let mut ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    if let Some(p) = peak {
        ys.push(p);
        if let Some(b) = bw {
            xs.push(p / b);
        }
    }
    let range = |v: &[f64], lo: f64, hi: f64| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0f64, f64::max);
        if min.is_finite() && max > 0.0 {
            (
                10f64.powf(min.log10().floor()),
                10f64.powf(max.log10().ceil().max(min.log10().floor() + 1.0)),
            )
        } else {
            (lo, hi)
        }
    };
    let (x0, x1) = range(&xs, 0.01, 1000.0);
    let (y0, y1) = range(&ys, 0.01, 1000.0);
    let px = |x: f64| LEFT + PLOT_W * (x.log10() - x0.log10()) / (x1.log10() - x0.log10());
    let py = |y: f64| base - plot_h * (y.log10() - y0.log10()) / (y1.log10() - y0.log10());
    for t in decades(x0, x1) {
        let x = px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{base:.1}" stroke="#dddddd"/>"##,
            base - plot_h
        );
        text(out, x, base + 15.0, "middle", 11, &format!("{t}"));
    }
    for t in decades(y0, y1) {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/>"##,
            LEFT + PLOT_W
        );
        text(out, LEFT - 5.0, y + 4.0, "end", 11, &format!("{t}"));
    }
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{:.1}" width="{PLOT_W}" height="{plot_h}" fill="none" stroke="black"/>"#,
        base - plot_h
    );
    text(
        out,
        LEFT + PLOT_W / 2.0,
        base + 32.0,
        "middle",
        12,
        "arithmetic intensity (FLOP/byte)",
    );
    rotated_text(out, 20.0, base - plot_h / 2.0, "GFLOP/s");
    // Roofs: min(peak, bw * x), sampled at the plot's ends and the ridge point.
    if let Some(p) = peak {
        let mut pts: Vec<(f64, f64)> = Vec::new();
        match bw {
            Some(b) => {
                let ridge = (p / b).clamp(x0, x1);
                for x in [x0, ridge, x1] {
                    pts.push((x, (b * x).min(p)));
                }
            }
            None => pts.extend([(x0, p), (x1, p)]),
        }
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y.clamp(y0, y1))))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="black" stroke-width="2"/>"#,
            path.join(" ")
        );
        text(
            out,
            px(x1) - 5.0,
            py(p) - 6.0,
            "end",
            11,
            &format!("peak {p:.0} GFLOP/s"),
        );
        if let Some(b) = bw {
            let xm = (x0 * (p / b).clamp(x0, x1)).sqrt();
            text(
                out,
                px(xm),
                py((b * xm).clamp(y0, y1)) - 8.0,
                "middle",
                11,
                &format!("{b:.1} GB/s"),
            );
        }
    } else {
        text(
            out,
            LEFT + PLOT_W / 2.0,
            base - plot_h / 2.0,
            "middle",
            12,
            "no calibrated peak",
        );
    }
    if points.is_empty() {
        text(
            out,
            LEFT + PLOT_W / 2.0,
            base - plot_h / 2.0 + 18.0,
            "middle",
            12,
            "no measured nodes (analytic report)",
        );
    }
    let mut used: Vec<&str> = Vec::new();
    for (x, y, n) in &points {
        let c = colors.get(&n.op).copied().unwrap_or("#888888");
        if !used.contains(&n.op.as_str()) {
            used.push(&n.op);
        }
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}" fill-opacity="0.8"><title>{} ({}): {y:.1} GFLOP/s at {x:.2} FLOP/B</title></circle>"#,
            px(*x),
            py(*y),
            xml_escape(&n.name),
            xml_escape(&n.op)
        );
    }
    legend(out, top + 45.0, colors, &used);
    height
}

/// Renders the report as a standalone SVG document.
pub fn to_svg(report: &ProfileReport) -> String {
    let colors = op_colors(report);
    let mut body = String::new();
    let mut y = 40.0;
    y += memory_panel(&mut body, report, y) + 20.0;
    y += time_panel(&mut body, report, y, &colors) + 20.0;
    y += roofline_panel(&mut body, report, y, &colors);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0}" viewBox="0 0 {WIDTH} {y:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mut title = format!(
        "{} — {} batch {}, {} thread(s), {}",
        report.model,
        report.backend,
        report.batch,
        report.threads,
        units::macs(report.totals.macs)
    );
    if let Some(t) = report.totals.time_ms {
        let _ = write!(title, ", {} median", units::millis(t));
    }
    text(&mut out, WIDTH / 2.0, 24.0, "middle", 17, &title);
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::sample_report;
    use super::*;

    #[test]
    fn svg_is_well_formed_xml_with_three_panels() {
        for measured in [false, true] {
            let mut report = sample_report(measured);
            report.nodes[2].name = "relu <&> \"quoted\" 'x'".into();
            let svg = to_svg(&report);
            let doc = roxmltree::Document::parse(&svg);
            assert!(doc.is_ok(), "{:?}", doc.err());
            let Ok(doc) = doc else { return };
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            let texts: Vec<String> = root
                .descendants()
                .filter(|n| n.has_tag_name("text"))
                .filter_map(|n| n.text().map(String::from))
                .collect();
            assert!(texts.iter().any(|t| t.starts_with("Memory per layer")));
            assert!(texts.iter().any(|t| t.starts_with("Roofline")));
            assert!(texts
                .iter()
                .any(|t| t == "arithmetic intensity (FLOP/byte)"));
            let titles: Vec<String> = root
                .descendants()
                .filter(|n| n.has_tag_name("title"))
                .filter_map(|n| n.text().map(String::from))
                .collect();
            assert!(
                titles
                    .iter()
                    .any(|t| t.starts_with("relu <&> \"quoted\" 'x'")),
                "escaped name survives"
            );
            let circles = root
                .descendants()
                .filter(|n| n.has_tag_name("circle"))
                .count();
            let timed = report.nodes.iter().filter(|n| n.gflops.is_some()).count();
            assert_eq!(circles, if measured { timed } else { 0 });
            // No external references: self-contained.
            assert!(!svg.contains("href"));
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;?"
        );
    }
}
