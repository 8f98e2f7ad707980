//! Profile a model and print its five most expensive layers: measured time, share of the run,
//! achieved GFLOP/s and the analytic MACs behind it — the same report `engine profile` prints.
//!
//! ```text
//! cargo run --release -p engine --example top_layers -- [MODEL] [THREADS]
//! cargo run --release -p engine --example top_layers -- zoo:resnet50:batch=1 2
//! ```

use std::process::ExitCode;

use engine::{Model, Session, SessionOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "zoo:resnet18".to_string());
    let threads = match args.next().map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("usage: top_layers [MODEL] [THREADS]: bad thread count: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&model, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(spec: &str, threads: usize) -> engine::Result<()> {
    let model = Model::load(spec)?;
    let options = SessionOptions {
        threads,
        ..Default::default()
    };
    let mut session = Session::new(&model, &options)?;
    // 2 warm-up runs, then medians over 10 timed runs.
    let report = session.profile(2, 10)?;

    println!(
        "{}: {:.2} ms per run on {} thread(s), {:.3} GMAC",
        report.model,
        report.totals.time_ms.unwrap_or(0.0),
        report.threads,
        report.totals.macs as f64 / 1e9
    );
    println!(
        "{:>9} {:>6} {:>8} {:>9}  layer (op)",
        "ms", "%", "GFLOP/s", "MMAC"
    );
    // `slowest` lists the timed nodes, slowest first; a fused group's time is on its head.
    for slow in report.slowest.iter().take(5) {
        let node = &report.nodes[slow.index];
        println!(
            "{:>9.3} {:>5.1}% {:>8.1} {:>9.1}  {} ({}){}",
            slow.time_ms,
            slow.percent,
            node.gflops.unwrap_or(0.0),
            node.macs as f64 / 1e6,
            node.name,
            node.op,
            if node.group_members.len() > 1 {
                format!(" + {} fused", node.group_members.len() - 1)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
