//! `engine profile`: per-node time, memory and compute as a table, JSON, CSV, Chrome trace or
//! SVG charts.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use engine::profile::{self, MeasurePhase, ProfileReport};
use engine::session::Session;

use crate::common::ModelArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
    Chrome,
    Svg,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  engine profile zoo:resnet50 --threads 2 --format json -o resnet50.json"
)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed runs (the report shows medians).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Cost model and receptive fields only: nothing runs, no weights are needed.
    #[arg(long)]
    pub analytic_only: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Show long node names whole in the table.
    #[arg(long)]
    pub wide: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: ProfileArgs) -> Result<()> {
    let model = args.model.load()?;
    let options = args.model.checked_session_options()?;
    let report = if args.analytic_only {
        model.analytic_report(&options)?
    } else {
        let mut session = Session::new(&model, &options)?;
        measure(&mut session, &args)?
    };
    let text = match args.format {
        Format::Table => profile::to_table(&report, args.wide),
        Format::Json => profile::to_json(&report),
        Format::Csv => profile::to_csv(&report),
        Format::Chrome => profile::to_chrome_trace(&report),
        Format::Svg => profile::to_svg(&report),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("{}: cannot write", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

fn measure(session: &mut Session, args: &ProfileArgs) -> Result<ProfileReport> {
    let show = !args.quiet && std::io::stderr().is_terminal();
    let bar = if show {
        let bar = indicatif::ProgressBar::new((args.warmup + args.iters.max(1)) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} runs")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut progress = |p: profile::MeasureProgress| {
        let done = match p.phase {
            MeasurePhase::Warmup => {
                bar.set_message("warm-up");
                p.done
            }
            MeasurePhase::Timed => {
                bar.set_message("timing");
                args.warmup + p.done
            }
        };
        bar.set_position(done as u64);
    };
    let mut report = profile::measure(session, args.warmup, args.iters, &mut progress)?;
    bar.finish_and_clear();
    report.backend = match session.backend() {
        engine::Backend::Cpu => "cpu".into(),
        engine::Backend::Wgpu => "wgpu".into(),
    };
    Ok(report)
}
