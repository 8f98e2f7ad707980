//! Arguments shared by the commands that load and run a model.

use std::collections::HashMap;

use anyhow::Result;
use clap::{Args, ValueEnum};
use engine::session::{Backend, Model, SessionOptions};

use crate::exit::bad_input;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BackendArg {
    #[default]
    Cpu,
    Wgpu,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// An .onnx file, `zoo:NAME[:key=value,...]`, or a zoo name; omitted: the built-in ResNet-50.
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    /// Worker threads (0 = all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Batch size bound to a symbolic leading input dimension.
    #[arg(long, short = 'b')]
    pub batch: Option<usize>,
    /// Explicit input shape, e.g. `input=1x3x224x224` (repeatable).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// Refuse to run models needing more memory than this many bytes (K/M/G suffixes allowed).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Disable fusions (one kernel per ONNX node).
    #[arg(long)]
    pub no_optimize: bool,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        crate::model_arg::load(self.model.as_deref())
    }

    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            threads: self.threads,
            batch: self.batch,
            input_shapes: HashMap::new(),
            backend: match self.backend {
                BackendArg::Cpu => Backend::Cpu,
                BackendArg::Wgpu => Backend::Wgpu,
            },
            max_memory: None,
            optimize: !self.no_optimize,
            constant_inputs: HashMap::new(),
        }
    }

    /// Session options with `--input-shape` and `--max-memory` parsed (usage errors exit 2).
    pub fn checked_session_options(&self) -> Result<SessionOptions> {
        let mut options = self.session_options();
        for spec in &self.input_shapes {
            let (name, dims) = parse_input_shape(spec)?;
            options.input_shapes.insert(name, dims);
        }
        if let Some(m) = &self.max_memory {
            options.max_memory = Some(parse_bytes(m)?);
        }
        Ok(options)
    }
}

/// `NAME=1x3x224x224` → (NAME, [1,3,224,224]).
pub fn parse_input_shape(spec: &str) -> Result<(String, Vec<usize>)> {
    let Some((name, dims)) = spec.split_once('=') else {
        return bad_input(format!(
            "--input-shape '{spec}': expected NAME=DIMS such as input=1x3x224x224"
        ));
    };
    let parsed: Result<Vec<usize>, _> = dims
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<usize>())
        .collect();
    match parsed {
        Ok(d) if !d.is_empty() && !name.is_empty() => Ok((name.to_string(), d)),
        _ => bad_input(format!(
            "--input-shape '{spec}': dims must be positive integers separated by 'x'"
        )),
    }
}

/// `512M`, `2G`, `1000000` → bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return bad_input(format!(
                        "--max-memory '{s}': unknown suffix '{c}' (use K, M, G or T)"
                    ))
                }
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    match num.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok((v * mult as f64) as u64),
        _ => bad_input(format!(
            "--max-memory '{s}': expected a positive size such as 512M or 4G"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shapes_and_sizes() {
        assert_eq!(
            parse_input_shape("x=1x3x224x224").unwrap(),
            ("x".to_string(), vec![1, 3, 224, 224])
        );
        assert!(parse_input_shape("x=1xax3").is_err());
        assert!(parse_input_shape("1x3").is_err());
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5K").unwrap(), 1536);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert!(parse_bytes("-3G").is_err());
        assert!(parse_bytes("3Q").is_err());
    }
}
