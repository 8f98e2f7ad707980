//! `engine compare`: totals of two models side by side and their ratios B/A, with the
//! measured time ratio next to the one the MAC count predicts.

use std::collections::HashMap;

use anyhow::Result;
use clap::Args;
use engine::compare::{self, CompareOptions, CompareReport};
use engine::session::SessionOptions;

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  engine compare zoo:resnet50 zoo:resnet50:width=0.5 --threads 2"
)]
pub struct CompareArgs {
    /// Model A: an .onnx file, `zoo:NAME[:key=value,...]` or a zoo name.
    #[arg(value_name = "A")]
    pub a: String,
    /// Model B (ratios are B/A).
    #[arg(value_name = "B")]
    pub b: String,
    /// Worker threads for both timed runs (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Batch size for both models (bound to a symbolic leading input dimension).
    #[arg(long, short = 'b')]
    pub batch: Option<usize>,
    /// Skip the timed runs: no latency.
    #[arg(long)]
    pub analytic_only: bool,
    /// Timed runs per model (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let a = crate::model_arg::load(Some(&args.a))?;
    let b = crate::model_arg::load(Some(&args.b))?;
    let options = CompareOptions {
        session: SessionOptions {
            threads: args.threads,
            batch: args.batch,
            input_shapes: HashMap::new(),
            ..Default::default()
        },
        analytic_only: args.analytic_only,
        warmup: args.warmup,
        iters: args.iters,
    };
    let report = compare::compare(&a, &b, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

fn millions(n: u64) -> String {
    format!("{:.2} M", n as f64 / 1e6)
}

fn metric_label(m: &str) -> &str {
    match m {
        "macs" => "MACs",
        "params" => "Params",
        "feature_map_bytes" => "Feature maps",
        other => other,
    }
}

fn table(r: &CompareReport) -> String {
    let (a, b, q) = (&r.a, &r.b, &r.ratio);
    let mut s = format!("A = {}\nB = {}\n\n", a.model, b.model);
    s.push_str(&format!(
        "{:<34} {:>14} {:>14} {:>9}\n",
        "", "A", "B", "B/A"
    ));
    let rows: [(&str, String, String, f64); 5] = [
        (
            "feature-map memory (all outputs)",
            mib(a.feature_map_bytes),
            mib(b.feature_map_bytes),
            q.feature_map_bytes,
        ),
        (
            "filter memory (parameter bytes)",
            mib(a.param_bytes),
            mib(b.param_bytes),
            q.param_bytes,
        ),
        (
            "parameters",
            millions(a.params),
            millions(b.params),
            q.params,
        ),
        ("MACs", millions(a.macs), millions(b.macs), q.macs),
        (
            "activation peak (memory plan)",
            mib(a.activation_peak_bytes),
            mib(b.activation_peak_bytes),
            q.activation_peak_bytes,
        ),
    ];
    for (label, x, y, ratio) in rows {
        s.push_str(&format!("{label:<34} {x:>14} {y:>14} {ratio:>9.4}\n"));
    }
    if let (Some(x), Some(y), Some(ratio)) = (a.latency_ms, b.latency_ms, q.latency_ms) {
        s.push_str(&format!(
            "{:<34} {:>11.2} ms {:>11.2} ms {:>9.4}   (predicted from MACs: {:.4})\n",
            "latency (median)", x, y, ratio, q.macs
        ));
        let gflops = |macs: u64, ms: f64| 2.0 * macs as f64 / (ms * 1e6);
        s.push_str(&format!(
            "\nMeasured time ratio {:.3} vs {:.3} predicted by arithmetic alone: A runs at {:.1} GFLOP/s, B at {:.1} GFLOP/s. Narrower layers do less work per byte moved and per kernel launch, so time rarely falls as fast as MACs.\n",
            ratio,
            q.macs,
            gflops(a.macs, x),
            gflops(b.macs, y)
        ));
    } else {
        s.push_str("latency                            (not measured: --analytic-only)\n");
    }
    if !r.breakdown.is_empty() {
        s.push_str("\nWhy the ratios are what they are (A's total split by how each node scaled, nodes matched by name):\n");
        for m in &r.breakdown {
            let Some(main) = m.groups.first() else {
                continue;
            };
            s.push_str(&format!(
                "  {}: {:.1}% of A is in {} nodes that scale x{}",
                metric_label(m.metric),
                100.0 * main.share_of_a,
                main.nodes,
                main.ratio
            ));
            if m.groups.len() == 1 {
                s.push_str(" (all of it)\n");
                continue;
            }
            s.push_str("; the rest does not:\n");
            for g in m.groups.iter().skip(1).take(4) {
                s.push_str(&format!(
                    "    {:>5.2}% in {} node(s) scaling x{}: {}\n",
                    100.0 * g.share_of_a,
                    g.nodes,
                    g.ratio,
                    g.examples.join("; ")
                ));
            }
            if m.groups.len() > 5 {
                let rest: f64 = m.groups.iter().skip(5).map(|g| g.share_of_a).sum();
                s.push_str(&format!(
                    "    {:>5.2}% in {} more groups\n",
                    100.0 * rest,
                    m.groups.len() - 5
                ));
            }
        }
        s.push_str("  (Channel counts that are fixed by the data — the 3 input channels, the class count — do not scale with width, so layers touching them scale by one factor less; per-channel tensors such as BatchNormalization's scale by the width, not its square.)\n");
    }
    s
}
