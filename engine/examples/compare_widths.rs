//! Compare two widths of a zoo model: parameters and MACs from the analytic cost model (nothing
//! runs), then the measured latency of each.
//!
//! ```text
//! cargo run --release -p engine --example compare_widths -- [NAME] [WIDTH_A] [WIDTH_B] [THREADS]
//! cargo run --release -p engine --example compare_widths -- resnet50 0.5 1 2
//! ```
//!
//! Width multiplies every channel count, so MACs grow roughly with its square.

use std::process::ExitCode;

use engine::{Model, ProfileReport, Session, SessionOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map_or("resnet18", String::as_str);
    let parse = |i: usize, default: f64| args.get(i).map_or(Ok(default), |s| s.parse::<f64>());
    let (Ok(a), Ok(b), Ok(threads)) = (parse(1, 0.5), parse(2, 1.0), parse(3, 0.0)) else {
        eprintln!("usage: compare_widths [NAME] [WIDTH_A] [WIDTH_B] [THREADS]");
        return ExitCode::from(2);
    };
    match compare(name, a, b, threads as usize) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn measure(
    name: &str,
    width: f64,
    threads: usize,
) -> engine::Result<(ProfileReport, ProfileReport)> {
    let model = Model::load(format!("zoo:{name}:width={width},batch=1"))?;
    let options = SessionOptions {
        threads,
        ..Default::default()
    };
    let analytic = model.analytic_report(&options)?;
    let measured = Session::new(&model, &options)?.profile(1, 5)?;
    Ok((analytic, measured))
}

fn compare(name: &str, a: f64, b: f64, threads: usize) -> engine::Result<()> {
    let (ana_a, run_a) = measure(name, a, threads)?;
    let (ana_b, run_b) = measure(name, b, threads)?;
    let ms = |r: &ProfileReport| r.totals.time_ms.unwrap_or(f64::NAN);
    println!(
        "{name:<11} {:>14} {:>14} {:>8}",
        format!("width {a}"),
        format!("width {b}"),
        "ratio"
    );
    let row =
        |what: &str, x: f64, y: f64| println!("{what:<11} {x:>14.3} {y:>14.3} {:>7.2}x", y / x);
    row(
        "params (M)",
        ana_a.totals.params as f64 / 1e6,
        ana_b.totals.params as f64 / 1e6,
    );
    row(
        "MACs (G)",
        ana_a.totals.macs as f64 / 1e9,
        ana_b.totals.macs as f64 / 1e9,
    );
    row("time (ms)", ms(&run_a), ms(&run_b));
    row(
        "GFLOP/s",
        run_a.totals.gflops.unwrap_or(f64::NAN),
        run_b.totals.gflops.unwrap_or(f64::NAN),
    );
    Ok(())
}
