//! **engine**: a CPU-first neural-network inference engine that imports ONNX models and reports,
//! node by node, what every layer costs in time, memory and arithmetic.
//!
//! Data flows one way: file → [`onnx_import`] → [`ir`] (typed graph, shapes) → plan → execute →
//! report.

pub mod cost;
pub mod error;
pub mod exec;
pub mod import;
pub mod ir;
pub mod kernels;
pub mod ops;
pub mod profile;
pub mod random;
pub mod rf;
pub mod session;
pub mod shape;
pub mod tensor;
#[cfg(feature = "wgpu")]
pub mod wgpu_backend;
pub mod zoo;

pub use error::{Error, Result};
pub use onnx_import;
pub use tensor::{DType, Tensor};
