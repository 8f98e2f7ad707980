//! `engine run`: execute a model on .npy inputs, an image, or a seeded random input, and save
//! outputs.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use engine::preprocess::{self, ImageInput, Preprocess};
use engine::session::{Session, SessionOptions};
use engine::Tensor;

use crate::common::ModelArgs;
use crate::exit::bad_input;
use crate::npy;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  engine run model.onnx --input x.npy --output y.npy --threads 2\n  engine run resnet50.onnx --image cat.jpg --labels imagenet_classes.txt"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// An input as NAME=FILE.npy, or FILE.npy for the inputs in declaration order (repeatable).
    #[arg(long = "input", short = 'i', value_name = "[NAME=]FILE.npy")]
    pub inputs: Vec<String>,
    /// Write the first output here.
    #[arg(
        long,
        short = 'o',
        value_name = "FILE.npy",
        conflicts_with = "output_dir"
    )]
    pub output: Option<PathBuf>,
    /// Write every output as DIR/<name>.npy.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Seed of the N(0,1) input used when no --input is given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Feed this PNG or JPEG image to the model's first input (batch 1), preprocessed as
    /// --preprocess says.
    #[arg(long, value_name = "FILE.jpg|png", conflicts_with = "inputs")]
    pub image: Option<PathBuf>,
    /// How --image becomes a tensor: `imagenet` resizes (shorter side 256/224 of the input
    /// size, PIL bilinear), centre-crops, scales to [0,1] and normalises with the ImageNet
    /// mean/std, as torchvision; `none` feeds the raw 0-255 pixels of an image that already has
    /// the input's size.
    #[arg(long, value_enum, default_value_t = PreprocessArg::Imagenet, value_name = "RECIPE")]
    pub preprocess: PreprocessArg,
    /// Class names, one per line (line i names class i), for the top-5 printout.
    #[arg(long, value_name = "FILE.txt")]
    pub labels: Option<PathBuf>,
}

/// `--preprocess` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PreprocessArg {
    /// torchvision's ImageNet evaluation recipe.
    #[default]
    Imagenet,
    /// Raw pixels (0-255), no resizing.
    None,
}

pub fn run(args: RunArgs) -> Result<()> {
    release_large_frees_to_the_os();
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
            return bad_input(format!(
                "--input {name}: the model has no input named '{name}' (inputs: {})",
                declared.join(", ")
            ));
        }
        let tensor = npy::read_tensor(std::path::Path::new(&path))
            .map_err(|e| crate::exit::BadInput(format!("{e:#}")))?;
        check_declared_shape(&args, &model, &name, &path, tensor.shape())?;
        given.push((name, tensor));
    }
    if let Some(path) = &args.image {
        given.push(image_input(&args, &model, path)?);
    }
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path)?),
        None => None,
    };

    let mut options: SessionOptions = args.model.checked_session_options()?;
    let mut shapes = HashMap::new();
    for (name, t) in &given {
        shapes.insert(name.clone(), t.shape().to_vec());
        // Integer inputs (int64/int32 .npy) carry shapes, axes or pads: their values are fixed
        // at session creation so the engine can fold them and plan static shapes.
        if matches!(t.dtype(), engine::DType::I64 | engine::DType::I32) {
            options.constant_inputs.insert(name.clone(), t.clone());
        }
    }
    options.input_shapes.extend(shapes);
    // Consumes the model: its copy of the weights is freed before the session packs its own.
    let mut session = Session::from_model(model, &options)?;

    // Inputs not given get a seeded N(0,1) tensor of the bound shape.
    for (i, info) in session.input_infos().iter().enumerate() {
        if given.iter().all(|(n, _)| n != &info.name) {
            let shape = info.fixed_shape().unwrap_or_default();
            given.push((
                info.name.clone(),
                engine::random::normal_tensor(&shape, args.seed.wrapping_add(i as u64)),
            ));
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
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        for (name, t) in &outputs {
            npy::write_tensor(
                &dir.join(format!("{}.npy", npy::sanitize_file_name(name))),
                t,
            )?;
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
                match &labels {
                    None => {
                        let top: Vec<String> = idx
                            .iter()
                            .take(5)
                            .map(|&i| format!("{i}: {:.6}", slice[i]))
                            .collect();
                        println!("  [{row}] top-5: {}", top.join(", "));
                    }
                    Some(labels) => {
                        if row == 0 && labels.len() != cols {
                            eprintln!(
                                "warning: the labels file has {} lines but output '{name}' has {cols} classes",
                                labels.len()
                            );
                        }
                        println!("  [{row}] top-5:");
                        for (rank, &i) in idx.iter().take(5).enumerate() {
                            let label = labels.get(i).map_or("?", String::as_str);
                            println!("    {}. {label} ({i}): {:.6}", rank + 1, slice[i]);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Makes glibc serve every allocation of 128 KiB or more with its own `mmap`, so that freeing
/// it returns the memory to the OS at once.
///
/// Why: loading a model frees large buffers stage after stage (file bytes, protobuf, the
/// model's graph, unpacked weights once packed). By default glibc raises its mmap threshold to
/// the size of the largest such buffer freed (up to 32 MiB), after which weight-sized blocks
/// come from the heap, where freed ones stay resident and are only partly reused (sizes
/// differ): `engine run` peaked ~40–50 MiB higher on ResNet-50 and Inception-v3 (see
/// docs/benchmarks.md). A fixed threshold turns that dynamic adjustment off. One inference
/// does not repeat large allocations, so the extra `mmap` calls cost nothing measurable here;
/// long-running commands (bench, profile) keep glibc's default.
fn release_large_frees_to_the_os() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's `M_MMAP_THRESHOLD` parameter code (malloc.h).
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: `mallopt` is glibc's documented, thread-safe tuning call (it takes the
        // allocator's lock); it only changes where future allocations come from and never
        // touches existing ones. The signature matches malloc.h: `int mallopt(int, int)`.
        unsafe { mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// A `.npy` input must fit the model's declared shape (same rank, equal fixed dimensions):
/// its shape is bound as the input's shape, so without this check a wrong file would silently
/// override a declared size. `--input-shape NAME=...` overrides the declaration on purpose.
fn check_declared_shape(
    args: &RunArgs,
    model: &engine::Model,
    name: &str,
    path: &str,
    shape: &[usize],
) -> Result<()> {
    let explicit = args
        .model
        .input_shapes
        .iter()
        .any(|spec| spec.split_once('=').is_some_and(|(n, _)| n == name));
    let inputs = model.inputs();
    let Some(declared) = inputs
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| v.shape.as_ref())
    else {
        return Ok(());
    };
    let fits = declared.len() == shape.len()
        && declared.iter().zip(shape).all(|(d, &n)| match d {
            engine::Dim::Fixed(f) => *f == n,
            engine::Dim::Symbol(_) => true,
        });
    if fits || explicit {
        return Ok(());
    }
    let dims: Vec<String> = declared
        .iter()
        .map(|d| match d {
            engine::Dim::Fixed(f) => f.to_string(),
            engine::Dim::Symbol(s) => s.clone(),
        })
        .collect();
    let wanted: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    bad_input(format!(
        "{path}: shape {shape:?} does not fit input '{name}', declared as [{}] (to run the model at another size, pass --input-shape {name}={})",
        dims.join(", "),
        wanted.join("x")
    ))
}

/// Decodes `--image` and preprocesses it for the model's first input. The input's size comes
/// from `--input-shape` when given, else from the model's declared shape.
fn image_input(
    args: &RunArgs,
    model: &engine::Model,
    path: &std::path::Path,
) -> Result<(String, Tensor)> {
    if args.model.batch.is_some_and(|b| b != 1) {
        return bad_input("--image feeds one image: use --batch 1 or leave --batch out");
    }
    let inputs = model.inputs();
    let Some(info) = inputs.first() else {
        return bad_input("--image: the model has no inputs");
    };
    let explicit = args
        .model
        .checked_session_options()?
        .input_shapes
        .remove(&info.name);
    let target = match explicit {
        Some(shape) => ImageInput::from_shape(&info.name, &shape)?,
        None => ImageInput::for_input(info)?,
    };
    let recipe = match args.preprocess {
        PreprocessArg::Imagenet => Preprocess::Imagenet,
        PreprocessArg::None => Preprocess::None,
    };
    let tensor = preprocess::load_image_tensor(path, target, recipe)?;
    Ok((info.name.clone(), tensor))
}

/// One label per line; a trailing carriage return (Windows files) is dropped.
fn read_labels(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::exit::BadInput(format!("--labels {}: cannot read: {e}", path.display()))
    })?;
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    /// glibc accepts the threshold (mallopt returns 1 on success, 0 on a refused value), and
    /// allocating and freeing afterwards still works.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mmap_threshold_is_accepted() {
        assert!(super::release_large_frees_to_the_os());
        let big = vec![1.0f32; 1 << 20];
        assert_eq!(big.iter().sum::<f32>(), (1 << 20) as f32);
    }
}
