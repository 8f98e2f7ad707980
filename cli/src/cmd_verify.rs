//! `engine verify`: every analytic figure against a real run, ✓/✗ per row, exit 1 on an
//! unexplained mismatch.

use anyhow::Result;
use clap::Args;
use engine::verify::{self, Status, VerifyOptions, VerifyReport};

use crate::common::ModelArgs;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  engine verify zoo:resnet50 --threads 2")]
pub struct VerifyArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Nodes whose receptive field is measured (each costs ~4·log₂(H)+2 runs up to it).
    #[arg(long, default_value_t = 3)]
    pub rf_samples: usize,
}

/// Failure that has already been reported on standard output.
#[derive(Debug)]
struct Failed(usize);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verification failed: {} unexplained mismatch(es)",
            self.0
        )
    }
}

impl std::error::Error for Failed {}

pub fn run(args: VerifyArgs) -> Result<()> {
    let model = args.model.load()?;
    let options = VerifyOptions {
        session: args.model.checked_session_options()?,
        rf_samples: args.rf_samples,
    };
    let report = verify::verify(&model, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    if report.passed() {
        Ok(())
    } else {
        Err(Failed(report.totals.mismatched).into())
    }
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Match => "✓",
        Status::Explained => "✓*",
        Status::Mismatch => "✗",
        Status::Skipped => "-",
    }
}

fn group(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(r: &VerifyReport) -> String {
    let mut s = format!(
        "Verify {} (input {:?}): analytic vs measured\n✓ match   ✓* differs for the reason given   ✗ unexplained mismatch   - not measurable\n",
        r.model, r.input_shape
    );
    let name_w = r
        .checks
        .iter()
        .map(|c| c.node.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(5, 36);
    let sections = [
        (
            "macs",
            "MACs per executed kernel (analytic = sum of the ONNX nodes it runs)",
        ),
        (
            "output_bytes",
            "Output bytes per node (analytic vs buffer planned and allocated)",
        ),
        (
            "param_bytes",
            "Parameter bytes (analytic vs weight bytes held)",
        ),
        ("activation_peak", "Activation peak (planned vs measured)"),
        (
            "rf",
            "Receptive field (analytic vs measured by perturbing the input)",
        ),
    ];
    for (kind, title) in sections {
        let rows: Vec<_> = r.checks.iter().filter(|c| c.kind == kind).collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(&format!("\n{title}\n"));
        for c in rows {
            let mut name: String = c.node.clone();
            if name.chars().count() > name_w {
                let skip = name.chars().count() - (name_w - 1);
                name = format!("…{}", name.chars().skip(skip).collect::<String>());
            }
            s.push_str(&format!(
                "  {:<2} {:<name_w$} {:<18} {:>16} {:>16}",
                mark(c.status),
                name,
                c.op,
                c.analytic,
                c.measured
            ));
            if let Some(note) = &c.note {
                s.push_str("  ");
                s.push_str(note);
            }
            s.push('\n');
        }
    }
    let m = &r.summary;
    s.push_str(&format!(
        "\nTotals\n  MACs            analytic {:>16}   executed {:>16}{}\n  param bytes     analytic {:>16}   held     {:>16}\n  activation peak planned  {:>16}   measured {:>16}\n  feature maps    analytic {:>16} bytes (every node output)\n",
        group(m.macs_analytic),
        group(m.macs_executed),
        if m.macs_executed < m.macs_analytic {
            format!(
                "  ({:.1}% fewer multiplies: fast convolution algorithms)",
                100.0 * (1.0 - m.macs_executed as f64 / m.macs_analytic.max(1) as f64)
            )
        } else if m.macs_executed > m.macs_analytic {
            "  (Winograd tiles overhang small maps: more multiplies there)".to_string()
        } else {
            String::new()
        },
        group(m.param_bytes_analytic),
        group(m.param_bytes_held),
        group(m.activation_peak_planned),
        group(m.activation_peak_measured),
        group(m.output_bytes_analytic),
    ));
    let t = &r.totals;
    s.push_str(&format!(
        "  checks {}: {} ✓, {} ✓* explained, {} ✗, {} not measurable → {}\n",
        t.checks,
        t.matched,
        t.explained,
        t.mismatched,
        t.skipped,
        if r.passed() { "PASS" } else { "FAIL" }
    ));
    s.push_str(&format!("  receptive field sample: {}\n", r.rf_sample_note));
    s
}
