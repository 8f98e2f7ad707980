//! `engine zoo`: list the built-in architectures, or write one as an ONNX file (opset 17).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::exit::bad_input;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BnArg {
    /// Keep BatchNormalization nodes.
    Keep,
    /// Fold them into the convolutions, as ONNX exporters do in eval mode.
    Fold,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  engine zoo list\n  engine zoo resnet50 --width 0.5 --batch 1 -o resnet50_half.onnx"
)]
pub struct ZooArgs {
    /// `list`, or the name of a built-in model.
    #[arg(value_name = "NAME|list")]
    pub name: String,
    /// Multiplies every channel count (0.5 = half width); input channels and classes stay.
    #[arg(long)]
    pub width: Option<f64>,
    /// Square input side (default 224; 299 for Inception; 32 for CIFAR models).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// Number of classes (default 1000; 10 for CIFAR models).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Fixed batch size (default: a symbolic `batch` dimension).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Weight seed (equal options give bit-identical weights).
    #[arg(long)]
    pub seed: Option<u64>,
    /// BatchNormalization: keep the nodes or fold them into the convolutions.
    #[arg(long, value_enum)]
    pub bn: Option<BnArg>,
    /// Where to write the .onnx file.
    #[arg(long, short = 'o', value_name = "FILE.onnx")]
    pub output: Option<PathBuf>,
}

pub fn run(args: ZooArgs) -> Result<()> {
    if args.name == "list" {
        let models = engine::zoo::list();
        let w = models.iter().map(|(n, _)| n.len()).max().unwrap_or(8);
        for (name, about) in models {
            println!("{name:<w$}  {about}");
        }
        println!("\nUse as a model anywhere: zoo:NAME[:width=W,input=S,classes=C,batch=N,seed=N,bn=keep|fold]");
        return Ok(());
    }
    let Some(path) = &args.output else {
        return bad_input(format!(
            "engine zoo {}: say where to write the model with -o FILE.onnx (or use 'engine zoo list')",
            args.name
        ));
    };
    let spec = spec(&args);
    let graph = engine::zoo::build(&spec)?;
    let onnx = engine::zoo::to_onnx(&graph);
    onnx_import::write_model(&onnx, path)
        .map_err(engine::Error::from)
        .with_context(|| format!("{}: cannot write the model", path.display()))?;
    let (params, bytes) = graph.parameter_totals();
    println!(
        "wrote {} ({spec}, opset 17): {} parameters, {:.1} MiB of weights",
        path.display(),
        params,
        bytes as f64 / (1u64 << 20) as f64
    );
    Ok(())
}

/// The `zoo:` spec the flags describe (the same string works as a MODEL argument).
fn spec(args: &ZooArgs) -> String {
    let mut kv = Vec::new();
    if let Some(w) = args.width {
        kv.push(format!("width={w}"));
    }
    if let Some(s) = args.input_size {
        kv.push(format!("input={s}"));
    }
    if let Some(c) = args.classes {
        kv.push(format!("classes={c}"));
    }
    if let Some(b) = args.batch {
        kv.push(format!("batch={b}"));
    }
    if let Some(s) = args.seed {
        kv.push(format!("seed={s}"));
    }
    if let Some(bn) = args.bn {
        kv.push(match bn {
            BnArg::Keep => "bn=keep".to_string(),
            BnArg::Fold => "bn=fold".to_string(),
        });
    }
    if kv.is_empty() {
        format!("zoo:{}", args.name)
    } else {
        format!("zoo:{}:{}", args.name, kv.join(","))
    }
}
