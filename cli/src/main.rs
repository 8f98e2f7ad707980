//! The `engine` command-line tool. It only parses arguments, calls the libraries and prints:
//! all logic lives in the `engine` crate.

mod cmd_bench;
mod cmd_compare;
mod cmd_profile;
mod cmd_rf;
mod cmd_run;
mod cmd_verify;
mod cmd_zoo;
mod common;
mod exit;
mod model_arg;
mod npy;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// CPU-first neural-network inference engine: run ONNX models and see what every layer costs.
#[derive(Parser, Debug)]
#[command(name = "engine", version, about, long_about = None,
    after_help = "Example:\n  engine profile                # profile the built-in ResNet-50\n  engine run model.onnx -i x.npy -o y.npy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per-node time, memory, compute and receptive field (table, JSON, CSV, Chrome trace, SVG).
    Profile(cmd_profile::ProfileArgs),
    /// Run a model on .npy inputs (or a seeded random input) and write its outputs.
    Run(cmd_run::RunArgs),
    /// Whole-model latency (median, min, p90, mean), images/s, achieved GFLOP/s and peak RSS.
    #[command(
        after_help = "Example:\n  engine bench resnet50.onnx --threads 2 --batch 8 --warmup 5 --iters 20 --json"
    )]
    Bench(cmd_bench::BenchArgs),
    /// Receptive field (size, effective stride, offset) of every node, exact and shortcut.
    Rf(cmd_rf::RfArgs),
    /// Check every analytic figure (MACs, bytes, peak, receptive field) against a real run.
    Verify(cmd_verify::VerifyArgs),
    /// Two models side by side: memory, parameters, MACs, latency and their ratios B/A.
    Compare(cmd_compare::CompareArgs),
    /// List the built-in models, or write one as an ONNX file.
    Zoo(cmd_zoo::ZooArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  engine completions bash > /etc/bash_completion.d/engine")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Profile(args) => cmd_profile::run(args),
        Command::Run(args) => cmd_run::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::Rf(args) => cmd_rf::run(args),
        Command::Verify(args) => cmd_verify::run(args),
        Command::Compare(args) => cmd_compare::run(args),
        Command::Zoo(args) => cmd_zoo::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "engine", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", exit::describe(&err));
            ExitCode::from(exit::code_for(&err))
        }
    }
}
