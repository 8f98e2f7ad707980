//! In-process comparison of the engine against tract on one ONNX file.
//!
//! Both run in the same process on the same seeded N(0,1) input, alternating run by run (engine,
//! tract, engine, tract, ...) so that load from other processes on a shared machine hits both
//! equally. tract uses its own optimizer (`into_optimized().into_runnable()`); its matrix
//! products run on a private rayon pool of `--threads` workers through tract-linalg's
//! `multithread-mm` executor (without that feature tract 0.23 is single-threaded).
//!
//! Besides wall time it reports CPU time per run (summed over all threads of the process, from
//! `/proc/self/task/*/schedstat`, Linux only): on a machine shared with other jobs, wall time
//! includes the time a thread waited for a core, CPU time does not, so at 1 thread it is the
//! steadier measure of the work a run does.
//!
//! Usage: `peers MODEL.onnx [--batch N] [--threads N] [--warmup N] [--iters N]`
//! Prints one JSON object on stdout.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use engine::session::{Session, SessionOptions};
use tract_onnx::prelude::*;

struct Args {
    model: String,
    batch: usize,
    threads: usize,
    warmup: usize,
    iters: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: String::new(),
        batch: 1,
        threads: 1,
        warmup: 5,
        iters: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name} {v}: not a number"))
        };
        match a.as_str() {
            "--batch" => args.batch = num("--batch")?,
            "--threads" => args.threads = num("--threads")?,
            "--warmup" => args.warmup = num("--warmup")?,
            "--iters" => args.iters = num("--iters")?,
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => args.model = a,
        }
    }
    if args.model.is_empty() {
        bail!("usage: peers MODEL.onnx [--batch N] [--threads N] [--warmup N] [--iters N]");
    }
    if args.threads == 0 || args.iters == 0 {
        bail!("--threads and --iters must be at least 1");
    }
    Ok(args)
}

fn median_ms(d: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let n = ms.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    }
}

/// Nanoseconds all threads of this process have run on a CPU so far (Linux schedstat); `None`
/// where /proc is not available.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Runs `f`, returning its result, wall time and CPU time (zero when unavailable).
fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration, Duration) {
    let c0 = process_cpu_ns();
    let start = Instant::now();
    let r = f();
    let wall = start.elapsed();
    let cpu = match (c0, process_cpu_ns()) {
        (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
        _ => Duration::ZERO,
    };
    (r, wall, cpu)
}

fn min_ms(d: &[Duration]) -> f64 {
    d.iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<()> {
    let args = parse_args()?;

    // Engine session; its bound input shape is what both engines get.
    let model = engine::Model::load(&args.model)?;
    let options = SessionOptions {
        threads: args.threads,
        batch: Some(args.batch),
        ..Default::default()
    };
    let mut session = Session::new(&model, &options)?;
    let info = session
        .input_infos()
        .first()
        .cloned()
        .context("the model has no inputs")?;
    let shape = info
        .fixed_shape()
        .with_context(|| format!("input '{}' has no fixed shape", info.name))?;
    let input = engine::random::normal_tensor(&shape, 0);
    let data: Vec<f32> = match &input {
        engine::Tensor::F32(a) => a.iter().copied().collect(),
        _ => bail!("normal_tensor returned a non-f32 tensor"),
    };

    // tract: fix the input fact to the same shape, then tract's own optimizer.
    if args.threads > 1 {
        tract_linalg::multithread::set_default_executor(
            tract_linalg::multithread::Executor::multithread(args.threads),
        );
    }
    let tract_model = tract_onnx::onnx()
        .model_for_path(&args.model)?
        .with_input_fact(0, f32::fact(shape.clone()).into())?
        .into_optimized()?
        .into_runnable()?;
    let tract_input = tract_onnx::prelude::Tensor::from_shape(&shape, &data)?;

    // One run each to compare outputs (sanity check that both compute the same thing).
    let e_out = session.run(&[(info.name.as_str(), input.clone())])?;
    let t_out = tract_model.run(tvec!(tract_input.clone().into_tvalue()))?;
    let e_vals = e_out
        .first()
        .map(|(_, t)| t.to_f64_vec())
        .unwrap_or_default();
    let t_vals: Vec<f64> = t_out
        .first()
        .context("tract returned no outputs")?
        .to_plain_array_view::<f32>()?
        .iter()
        .map(|&v| v as f64)
        .collect();
    if e_vals.len() != t_vals.len() {
        bail!(
            "output sizes differ: engine {} vs tract {}",
            e_vals.len(),
            t_vals.len()
        );
    }
    let max_abs_diff = e_vals
        .iter()
        .zip(&t_vals)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);

    let mut engine_times = Vec::with_capacity(args.iters);
    let mut tract_times = Vec::with_capacity(args.iters);
    let mut engine_cpu = Vec::with_capacity(args.iters);
    let mut tract_cpu = Vec::with_capacity(args.iters);
    for i in 0..args.warmup + args.iters {
        let feeds = [(info.name.as_str(), input.clone())];
        let (out, e, ec) = timed(|| session.run(&feeds));
        drop(out?);

        let feeds = tvec!(tract_input.clone().into_tvalue());
        let (out, t, tc) = timed(|| tract_model.run(feeds));
        drop(out?);

        if i >= args.warmup {
            engine_times.push(e);
            tract_times.push(t);
            engine_cpu.push(ec);
            tract_cpu.push(tc);
        }
    }
    let (em, tm) = (median_ms(&engine_times), median_ms(&tract_times));
    println!(
        "{{\"model\":{:?},\"batch\":{},\"threads\":{},\"warmup\":{},\"iters\":{},\
         \"engine_median_ms\":{em:.3},\"engine_min_ms\":{:.3},\
         \"tract_median_ms\":{tm:.3},\"tract_min_ms\":{:.3},\
         \"engine_cpu_median_ms\":{:.3},\"tract_cpu_median_ms\":{:.3},\
         \"engine_over_tract\":{:.4},\"max_abs_diff\":{max_abs_diff:.3e}}}",
        args.model,
        shape.first().copied().unwrap_or(1),
        args.threads,
        args.warmup,
        args.iters,
        min_ms(&engine_times),
        min_ms(&tract_times),
        median_ms(&engine_cpu),
        median_ms(&tract_cpu),
        if tm > 0.0 { em / tm } else { 0.0 },
    );
    Ok(())
}
