//! Built-in architectures ("the zoo"), built directly as IR graphs with seeded weights.
//!
//! A spec is `zoo:NAME[:key=value,...]` with keys
//! - `width` (default 1): multiplies every channel count, including FC hidden layers; the
//!   3 input channels and the class count do not scale. Grouped convolutions keep their group
//!   count and round channels to a multiple of it.
//! - `input` (default 224; 299 for Inception; 32 for CIFAR models): square input side.
//! - `classes` (default 1000; 10 for CIFAR models).
//! - `batch`: a fixed batch size; without it the batch dimension is the symbol `batch`.
//! - `seed` (default 0): weight seed. Equal specs give bit-identical weights.
//! - `bn` = `keep` (default) | `fold`: keep BatchNormalization nodes, or fold them into the
//!   convolutions as ONNX exporters do in eval mode.
//!
//! Weights are He-normal (N(0, 2/fan_in)); BN statistics come from an analytic prediction of
//! each channel's mean and variance on an N(0,1) input, perturbed per channel (see
//! `builder.rs`), so activations stay O(1) through deep nets while the statistics are
//! non-trivial. Layer names follow torchvision (timm for Inception-v4): `layer1.0.conv1`,
//! `layer1.0.bn1`, `layer1.0.downsample.0`, `fc`...; weights are `<layer>.weight`, BN
//! statistics `<bn>.running_mean` / `<bn>.running_var`.

mod builder;
mod inception;
mod onnx;
mod resnet;
mod vgg;

pub use builder::BnMode;
/// The zoo's seeded normal generator, reused where the engine needs reproducible noise.
pub(crate) use builder::Rng as SeedRng;
pub use onnx::to_onnx;

use crate::error::{Error, Result};
use crate::ir::Graph;
use resnet::{Block, ResNetCfg};

/// Build options parsed from a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub width: f64,
    /// Square input side; `None` picks the model's default.
    pub input: Option<usize>,
    pub classes: usize,
    pub batch: Option<usize>,
    pub seed: u64,
    pub bn: BnMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            width: 1.0,
            input: None,
            classes: 1000,
            batch: None,
            seed: 0,
            bn: BnMode::Keep,
        }
    }
}

const MODELS: &[(&str, &str)] = &[
    (
        "resnet18",
        "ResNet-18 (torchvision), basic blocks [2,2,2,2], 224x224",
    ),
    (
        "resnet34",
        "ResNet-34 (torchvision), basic blocks [3,4,6,3], 224x224",
    ),
    (
        "resnet50",
        "ResNet-50 v1.5 (torchvision: stride on the 3x3), bottlenecks [3,4,6,3], 224x224",
    ),
    (
        "resnet50_v1",
        "ResNet-50 v1 (original paper: stride on the first 1x1), 224x224",
    ),
    (
        "resnet101",
        "ResNet-101 v1.5 (torchvision), bottlenecks [3,4,23,3], 224x224",
    ),
    (
        "resnet152",
        "ResNet-152 v1.5 (torchvision), bottlenecks [3,8,36,3], 224x224",
    ),
    (
        "resnext50_32x4d",
        "ResNeXt-50 32x4d (torchvision), grouped 3x3 convs, 224x224",
    ),
    (
        "resnext101_32x8d",
        "ResNeXt-101 32x8d (torchvision), grouped 3x3 convs, 224x224",
    ),
    (
        "resnet20",
        "CIFAR ResNet-20 (He et al. 2015, option-B projection shortcuts), 32x32, 10 classes",
    ),
    (
        "resnet56",
        "CIFAR ResNet-56 (He et al. 2015, option-B projection shortcuts), 32x32, 10 classes",
    ),
    (
        "inception_v3",
        "Inception-v3 (torchvision, no aux head), 299x299",
    ),
    ("inception_v4", "Inception-v4 (timm), 299x299"),
    (
        "inception_cifar",
        "small Inception-v4-style CIFAR-10 net, 32x32, global pool over 7x7, 10 classes",
    ),
    ("vgg16", "VGG-16 (torchvision, no BN), 224x224"),
];

/// Names and one-line descriptions of the built-in models.
pub fn list() -> Vec<(&'static str, &'static str)> {
    MODELS.to_vec()
}

fn spec_err(spec: &str, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("zoo spec '{spec}': {msg}"))
}

/// Parses `zoo:NAME[:key=value,...]` (the `zoo:` prefix is optional) into a name and options
/// with the model's own defaults applied for `classes`.
pub fn parse_spec(spec: &str) -> Result<(String, Options)> {
    let body = spec.strip_prefix("zoo:").unwrap_or(spec);
    let (name, rest) = match body.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (body, None),
    };
    if !MODELS.iter().any(|(n, _)| *n == name) {
        let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
        return Err(spec_err(
            spec,
            format!("unknown model '{name}'; known: {}", names.join(", ")),
        ));
    }
    let mut o = Options::default();
    if matches!(name, "resnet20" | "resnet56" | "inception_cifar") {
        o.classes = 10;
    }
    for kv in rest
        .into_iter()
        .flat_map(|r| r.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| spec_err(spec, format!("'{kv}' is not key=value")))?;
        let bad = |what: &str| spec_err(spec, format!("{k}={v}: expected {what}"));
        match k {
            "width" => {
                o.width = v.parse().map_err(|_| bad("a positive number"))?;
                if !(o.width.is_finite() && o.width > 0.0 && o.width <= 16.0) {
                    return Err(bad("a number in (0, 16]"));
                }
            }
            "input" => {
                o.input = Some(
                    v.parse()
                        .ok()
                        .filter(|&n: &usize| n > 0 && n <= 8192)
                        .ok_or_else(|| bad("a size in 1..=8192"))?,
                )
            }
            "classes" => {
                o.classes = v
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| bad("a positive integer"))?
            }
            "batch" => {
                o.batch = Some(
                    v.parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or_else(|| bad("a positive integer"))?,
                )
            }
            "seed" => o.seed = v.parse().map_err(|_| bad("an unsigned integer"))?,
            "bn" => {
                o.bn = match v {
                    "keep" => BnMode::Keep,
                    "fold" => BnMode::Fold,
                    _ => return Err(bad("keep or fold")),
                }
            }
            _ => {
                return Err(spec_err(
                    spec,
                    format!("unknown key '{k}' (known: width, input, classes, batch, seed, bn)"),
                ))
            }
        }
    }
    Ok((name.to_string(), o))
}

/// Builds a model from a spec such as `zoo:resnet50:width=0.5,batch=1`.
pub fn build(spec: &str) -> Result<Graph> {
    let (name, o) = parse_spec(spec)?;
    build_with(&name, &o)
}

/// Builds the named model with explicit options.
pub fn build_with(name: &str, o: &Options) -> Result<Graph> {
    let cfg = |block, layers, groups, width_per_group| ResNetCfg {
        block,
        layers,
        groups,
        width_per_group,
    };
    let g = match name {
        "resnet18" => resnet::imagenet(name, &cfg(Block::Basic, [2, 2, 2, 2], 1, 64), o),
        "resnet34" => resnet::imagenet(name, &cfg(Block::Basic, [3, 4, 6, 3], 1, 64), o),
        "resnet50" => resnet::imagenet(name, &cfg(Block::Bottleneck, [3, 4, 6, 3], 1, 64), o),
        "resnet50_v1" => resnet::imagenet(name, &cfg(Block::BottleneckV1, [3, 4, 6, 3], 1, 64), o),
        "resnet101" => resnet::imagenet(name, &cfg(Block::Bottleneck, [3, 4, 23, 3], 1, 64), o),
        "resnet152" => resnet::imagenet(name, &cfg(Block::Bottleneck, [3, 8, 36, 3], 1, 64), o),
        "resnext50_32x4d" => {
            resnet::imagenet(name, &cfg(Block::Bottleneck, [3, 4, 6, 3], 32, 4), o)
        }
        "resnext101_32x8d" => {
            resnet::imagenet(name, &cfg(Block::Bottleneck, [3, 4, 23, 3], 32, 8), o)
        }
        "resnet20" => resnet::cifar(name, 20, o),
        "resnet56" => resnet::cifar(name, 56, o),
        "inception_v3" => inception::inception_v3(name, o),
        "inception_v4" => inception::inception_v4(name, o),
        "inception_cifar" => inception::inception_cifar(name, o),
        "vgg16" => vgg::vgg16(name, o),
        _ => return Err(spec_err(name, "unknown model")),
    }?;
    Ok(g)
}

#[cfg(test)]
mod tests;
