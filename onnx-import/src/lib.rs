//! Reads ONNX files into a plain [`OnnxModel`], and writes them back.

pub mod model;

pub use model::*;

/// Importer errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}
