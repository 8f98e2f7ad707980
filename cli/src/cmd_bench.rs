//! `engine bench`: whole-model latency statistics (median, min, p90, mean), throughput,
//! achieved GFLOP/s and peak resident memory.
//!
//! The median is the headline figure because the machines this runs on are often shared; the
//! achieved GFLOP/s uses the analytic FLOP count of the *bound* graph (what the model asks for,
//! not what a Winograd kernel happened to execute) so numbers compare across engines.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use engine::profile::bench::BenchStats;
use engine::session::Session;
use engine::Tensor;
use serde::Serialize;

use crate::common::ModelArgs;
use crate::exit::bad_input;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Untimed runs before timing (page faults, packed weights, caches).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Seed of the N(0,1) inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The `--json` object (field names are a stable interface for scripts/bench_peers.py).
#[derive(Serialize, Debug)]
struct BenchJson {
    model: String,
    backend: String,
    threads: usize,
    batch: usize,
    warmup: usize,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    p90_ms: f64,
    mean_ms: f64,
    images_per_s: f64,
    gflops: f64,
    peak_rss_bytes: Option<u64>,
    /// The GPU adapter with `--backend wgpu` (absent on the CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.iters == 0 {
        return bad_input("--iters must be at least 1");
    }
    let model = args.model.load()?;
    let options = args.model.checked_session_options()?;
    let mut session = Session::new(&model, &options)?;

    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for (i, info) in session.input_infos().iter().enumerate() {
        let Some(shape) = info.fixed_shape() else {
            return bad_input(format!(
                "input '{}' has no fixed shape after binding: give --batch or --input-shape {}=DIMS",
                info.name, info.name
            ));
        };
        if info.dtype.is_some_and(|d| d != engine::tensor::DType::F32) {
            return bad_input(format!(
                "input '{}' is {:?}: engine bench feeds random f32 inputs only",
                info.name, info.dtype
            ));
        }
        inputs.push((
            info.name.clone(),
            engine::random::normal_tensor(&shape, args.seed.wrapping_add(i as u64)),
        ));
    }
    // Samples per run: the leading dimension of the first input (1 for scalar inputs).
    let batch = inputs
        .first()
        .and_then(|(_, t)| t.shape().first().copied())
        .unwrap_or(1);
    let (_, totals) = engine::cost::graph_cost(session.bound_graph());

    let bar = progress_bar(&args);
    let mut durations: Vec<Duration> = Vec::with_capacity(args.iters);
    for i in 0..args.warmup + args.iters {
        bar.set_message(if i < args.warmup { "warm-up" } else { "timing" });
        // Clone outside the timed region: the engine takes owned inputs.
        let feeds: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let start = Instant::now();
        let outputs = session.run(&feeds)?;
        let elapsed = start.elapsed();
        drop(outputs);
        if i >= args.warmup {
            durations.push(elapsed);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let Some(stats) = BenchStats::from_durations(&durations, batch, totals.flops) else {
        return bad_input("no timed runs");
    };
    // What actually ran, from the session rather than the request.
    let backend = match session.backend() {
        engine::Backend::Cpu => "cpu",
        engine::Backend::Wgpu => "wgpu",
    };
    let device = session.device().map(|d| d.name.clone());
    if args.json {
        let out = BenchJson {
            model: model.source.clone(),
            backend: backend.to_string(),
            threads: session.threads(),
            batch,
            warmup: args.warmup,
            iters: args.iters,
            median_ms: stats.median_ms,
            min_ms: stats.min_ms,
            p90_ms: stats.p90_ms,
            mean_ms: stats.mean_ms,
            images_per_s: stats.images_per_s,
            gflops: stats.gflops,
            peak_rss_bytes: stats.peak_rss_bytes,
            device,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{}  backend {backend}  threads {}  batch {batch}  ({} warm-up, {} timed runs)",
            model.source,
            session.threads(),
            args.warmup,
            args.iters
        );
        if let Some(name) = &device {
            println!("  device  {name}");
        }
        println!("  median  {:>10.3} ms", stats.median_ms);
        println!("  min     {:>10.3} ms", stats.min_ms);
        println!("  p90     {:>10.3} ms", stats.p90_ms);
        println!("  mean    {:>10.3} ms", stats.mean_ms);
        println!("  throughput {:>10.2} images/s", stats.images_per_s);
        println!(
            "  compute    {:>10.2} GFLOP/s  ({:.3} GFLOP per run, analytic)",
            stats.gflops,
            totals.flops as f64 / 1e9
        );
        match stats.peak_rss_bytes {
            Some(b) => println!("  peak RSS   {:>10.1} MiB", b as f64 / (1024.0 * 1024.0)),
            None => println!("  peak RSS   n/a (not reported by this OS)"),
        }
    }
    Ok(())
}

/// A bar over warm-up + timed runs on stderr, hidden when stderr is not a terminal (scripts,
/// CI logs) or with --quiet.
fn progress_bar(args: &BenchArgs) -> indicatif::ProgressBar {
    if args.quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new((args.warmup + args.iters) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} runs")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
