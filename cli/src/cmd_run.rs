//! `engine run`: execute a model on .npy inputs (or a seeded random input) and save outputs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use engine::session::{Session, SessionOptions};
use engine::Tensor;

use crate::common::ModelArgs;
use crate::exit::bad_input;
use crate::npy;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  engine run model.onnx --input x.npy --output y.npy --threads 2")]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An input as NAME=FILE.npy, or FILE.npy for the inputs in declaration order (repeatable).
    #[arg(long = "input", short = 'i', value_name = "[NAME=]FILE.npy")]
    pub inputs: Vec<String>,
    /// Write the first output here.
    #[arg(long, short = 'o', value_name = "FILE.npy", conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Write every output as DIR/<name>.npy.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Seed of the N(0,1) input used when no --input is given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: RunArgs) -> Result<()> {
    let model = args.model.load()?;
    let declared: Vec<String> = model.inputs().iter().map(|v| v.name.clone()).collect();

    let mut given: Vec<(String, Tensor)> = Vec::new();
    let mut positional = 0usize;
    for spec in &args.inputs {
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() && p.ends_with(".npy") => (n.to_string(), p.to_string()),
            _ => {
                let Some(name) = declared.get(positional) else {
                    return bad_input(format!(
                        "more positional --input files than the model has inputs ({}: {})",
                        declared.len(),
                        declared.join(", ")
                    ));
                };
                positional += 1;
                (name.clone(), spec.clone())
            }
        };
        if !declared.contains(&name) {
            return bad_input(format!("--input {name}: the model has no input named '{name}' (inputs: {})", declared.join(", ")));
        }
        let tensor = npy::read_tensor(std::path::Path::new(&path)).map_err(|e| crate::exit::BadInput(format!("{e:#}")))?;
        given.push((name, tensor));
    }

    let mut options: SessionOptions = args.model.checked_session_options()?;
    let mut shapes = HashMap::new();
    for (name, t) in &given {
        shapes.insert(name.clone(), t.shape().to_vec());
    }
    options.input_shapes.extend(shapes);
    let mut session = Session::new(&model, &options)?;

    // Inputs not given get a seeded N(0,1) tensor of the bound shape.
    for (i, info) in session.input_infos().iter().enumerate() {
        if given.iter().all(|(n, _)| n != &info.name) {
            let shape = info.fixed_shape().unwrap_or_default();
            given.push((info.name.clone(), engine::random::normal_tensor(&shape, args.seed.wrapping_add(i as u64))));
        }
    }
    let feeds: Vec<(&str, Tensor)> = given.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let outputs = session.run(&feeds)?;

    if let Some(path) = &args.output {
        if let Some((_, t)) = outputs.first() {
            npy::write_tensor(path, t)?;
        }
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
        for (name, t) in &outputs {
            npy::write_tensor(&dir.join(format!("{}.npy", npy::sanitize_file_name(name))), t)?;
        }
    }
    for (name, t) in &outputs {
        println!("{name}: {} {:?}", t.dtype(), t.shape());
        if t.shape().len() == 2 {
            let values = t.to_f64_vec();
            let cols = t.shape()[1];
            for row in 0..t.shape()[0] {
                let slice = &values[row * cols..(row + 1) * cols];
                let mut idx: Vec<usize> = (0..cols).collect();
                idx.sort_by(|&a, &b| slice[b].total_cmp(&slice[a]));
                let top: Vec<String> = idx.iter().take(5).map(|&i| format!("{i}: {:.6}", slice[i])).collect();
                println!("  [{row}] top-5: {}", top.join(", "));
            }
        }
    }
    Ok(())
}
