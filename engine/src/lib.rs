//! **engine**: a CPU-first neural-network inference engine that imports ONNX models and reports,
//! node by node, what every layer costs in time, memory and arithmetic.
//!
//! Data flows one way: file → [`onnx_import`] → [`ir`] (typed graph, shapes) → plan → execute →
//! report.
//!
//! # The API in five steps
//!
//! The items re-exported at the crate root are the supported surface:
//!
//! | step | items |
//! |---|---|
//! | load | [`Model::load`] (ONNX path or `zoo:` spec), [`Model::from_bytes`] |
//! | inspect | [`Model::inputs`], [`Model::outputs`] ([`ValueInfo`]: name, [`DType`], [`Dim`]s) |
//! | prepare | [`Session::new`] with [`SessionOptions`] (threads, batch, shapes, [`Backend`], memory limit) |
//! | run | [`Session::run`] on [`Tensor`]s (`ndarray` arrays: `Tensor::from(array)`) |
//! | report | [`Session::profile`] → [`ProfileReport`] (GPU adapter: [`Session::device`]); without running: [`Model::analytic_report`], [`Model::bind`] + [`cost::graph_cost`] / [`rf::analyze`] |
//! | images | [`preprocess`]: [`preprocess::load_image_tensor`] with [`Preprocess`] and [`ImageInput`] |
//!
//! Every fallible call returns [`Result`] with the typed [`Error`]: a bad file, an unsupported
//! node, a wrong input shape or an over-large plan is an `Err` naming the file, node or input,
//! never a panic.
//!
//! ## Load, inspect and run
//!
//! ```
//! use engine::{Model, Session, SessionOptions, Tensor};
//!
//! // A built-in CIFAR ResNet-20 (seeded weights); an ONNX file path works the same way.
//! let model = Model::load("zoo:resnet20")?;
//! let input = &model.inputs()[0];
//! assert_eq!(input.dtype, Some(engine::DType::F32));
//! println!("{}: {:?} -> {}", input.name, input.shape, model.outputs()[0].name);
//!
//! // Models also load from bytes (here: the zoo model written out as ONNX).
//! let bytes = engine::onnx_import::encode_model(&engine::zoo::to_onnx(&model.graph));
//! let same = Model::from_bytes(&bytes, "resnet20.onnx")?;
//! assert_eq!(same.inputs()[0].name, input.name);
//!
//! // Two images per batch, one worker thread, on the CPU.
//! let options = SessionOptions {
//!     threads: 1,
//!     batch: Some(2),
//!     backend: engine::Backend::Cpu,
//!     ..Default::default()
//! };
//! let mut session = Session::new(&model, &options)?;
//! let x = engine::ndarray::ArrayD::<f32>::zeros(vec![2, 3, 32, 32]);
//! let outputs = session.run(&[(input.name.as_str(), Tensor::from(x))])?;
//! let (name, logits) = &outputs[0];
//! assert_eq!(logits.shape(), &[2, 10], "{name}");
//!
//! // Wrong shapes are errors, not panics.
//! let bad = Tensor::zeros(engine::DType::F32, &[1, 3, 32, 32]);
//! let err = session.run(&[(input.name.as_str(), bad)]).unwrap_err();
//! assert!(matches!(err, engine::Error::Input { .. }));
//! # Ok::<(), engine::Error>(())
//! ```
//!
//! ## Costs and receptive fields without running
//!
//! ```
//! let model = engine::Model::load("zoo:resnet50")?;
//! let graph = model.bind(&engine::SessionOptions::default())?;
//! let (_, totals) = engine::cost::graph_cost(&graph);
//! assert_eq!(totals.macs_conv_fc_only, 4_089_184_256); // torchvision's figure
//!
//! let rfs = engine::rf::analyze(&graph);
//! let pooled = graph.nodes.iter().find(|n| n.name == "avgpool").expect("resnet50 has avgpool");
//! let rf = rfs[pooled.inputs[0].expect("avgpool has an input").0].expect("a feature map");
//! assert_eq!(rf.size, [427, 427]);
//! # Ok::<(), engine::Error>(())
//! ```
//!
//! # Modules
//!
//! Documented modules ([`session`], [`tensor`], [`error`], [`ir`], [`cost`], [`rf`],
//! [`profile`], [`zoo`], [`preprocess`]) hold the items above and their details. The
//! execution machinery (`exec`, `kernels`, `ops`, `shape`, `import`, `random`, and
//! `wgpu_backend` with the `wgpu` feature) is public for the CLI, the benches and the tests
//! but hidden from these docs: it may change without notice.

mod api;
pub mod compare;
pub mod cost;
pub mod error;
#[doc(hidden)]
pub mod exec;
#[doc(hidden)]
pub mod import;
pub mod ir;
#[doc(hidden)]
pub mod kernels;
#[doc(hidden)]
pub mod ops;
pub mod preprocess;
pub mod profile;
#[doc(hidden)]
pub mod random;
pub mod rf;
pub mod session;
#[doc(hidden)]
pub mod shape;
pub mod tensor;
pub mod verify;
#[cfg(feature = "wgpu")]
#[doc(hidden)]
pub mod wgpu_backend;
pub mod zoo;

pub use cost::{CostTotals, NodeCost};
pub use error::{Error, Result, UnsupportedNode};
pub use ir::{Dim, Graph, ValueInfo};
pub use preprocess::{ImageInput, Layout, Preprocess};
pub use profile::ProfileReport;
pub use rf::Rf;
pub use session::{Backend, DeviceInfo, Model, NodeTrace, RunTrace, Session, SessionOptions};
pub use tensor::{DType, Tensor};

/// The ONNX reader/writer the engine imports through (`OnnxModel`, `load_model`, ...).
pub use onnx_import;

/// The `image` crate version [`preprocess`] decodes with (for `RgbImage` and friends).
pub use image;

/// The `ndarray` version [`Tensor`] holds (build input arrays with it).
pub use ndarray;
