//! Reads ONNX files into a plain [`OnnxModel`], and writes them back.
//!
//! Reading decodes the protobuf with the `tract_onnx::pb` prost structs (tract's optimizer is
//! not involved), decodes every initializer (raw or typed fields, external data next to the
//! model), turns `Constant` nodes into initializers, and rewrites older opsets' attribute
//! forms into the newest input forms ([`normalize`]). Every error names the file, and the
//! node (name and op type) or tensor involved.

pub mod decode;
mod encode;
pub mod model;
pub mod normalize;
pub mod tensor;

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

pub use encode::IR_VERSION;
pub use model::*;

/// Importer errors. The `path` field is the file's label (its path, or the label given to
/// [`decode_model`]) and always appears first in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A structural problem that fits no other variant.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A zero-byte file.
    #[error("{path}: the file is empty (expected a serialized ONNX {what})")]
    Empty { path: String, what: &'static str },
    /// The bytes are not a protobuf of the expected message (not ONNX, or truncated).
    #[error("{path}: not a valid ONNX {what} (protobuf decoding failed; the file may be truncated or not ONNX): {source}")]
    Decode {
        path: String,
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error("{path}: the model has no graph")]
    NoGraph { path: String },
    /// An initializer (or tensor file) whose contents do not match its declared type and dims,
    /// uses an unsupported element type, or whose external data cannot be read safely.
    #[error("{path}: tensor '{tensor}': {message}")]
    Tensor {
        path: String,
        tensor: String,
        message: String,
    },
    /// A node whose attributes or inputs are malformed for its op type.
    #[error("{path}: node '{node}' ({op_type}): {message}")]
    Node {
        path: String,
        node: String,
        op_type: String,
        message: String,
    },
    /// A well-formed node using a feature the importer does not handle.
    #[error("{path}: node '{node}' ({op_type}): unsupported: {message}")]
    UnsupportedNode {
        path: String,
        node: String,
        op_type: String,
        message: String,
    },
    /// A well-formed model-level feature the importer does not handle (sparse initializers,
    /// attributes that cannot be written).
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: String, message: String },
}

/// Reads and normalises a model file. External data is resolved relative to its folder.
pub fn load_model(path: &Path) -> Result<OnnxModel, Error> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: label.clone(),
        source,
    })?;
    let base = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("."),
    };
    let proto = decode_proto(&bytes, &label)?;
    // The file buffer is as large as the weights: free it before the weights are converted, so
    // that at most the decoded protobuf and one converted tensor coexist.
    drop(bytes);
    let mut model = convert_proto(proto, Some(base), &label)?;
    model.path = Some(path.to_path_buf());
    Ok(model)
}

/// Decodes and normalises model bytes. `base_dir` is the folder external data is relative to
/// (`None` refuses external data); `label` names the model in errors.
pub fn decode_model(
    bytes: &[u8],
    base_dir: Option<&Path>,
    label: &str,
) -> Result<OnnxModel, Error> {
    let proto = decode_proto(bytes, label)?;
    convert_proto(proto, base_dir, label)
}

/// Parses the protobuf of a model file (empty input is refused with its own error).
fn decode_proto(bytes: &[u8], label: &str) -> Result<pb::ModelProto, Error> {
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: label.to_string(),
            what: "model",
        });
    }
    pb::ModelProto::decode(bytes).map_err(|source| Error::Decode {
        path: label.to_string(),
        what: "model",
        source,
    })
}

/// Converts and normalises a decoded model. The protobuf is consumed: each initializer's
/// protobuf bytes are freed as soon as it is converted, so the weights exist about once, not
/// twice, while a large model loads.
fn convert_proto(
    proto: pb::ModelProto,
    base_dir: Option<&Path>,
    label: &str,
) -> Result<OnnxModel, Error> {
    let ctx = decode::Ctx {
        label,
        tensors: tensor::TensorContext { base_dir },
    };
    let mut model = decode::convert_model(proto, &ctx)?;
    normalize::normalize(&mut model, label)?;
    Ok(model)
}

/// Reads a serialized `TensorProto` (the `input_0.pb` / `output_0.pb` files of ONNX node
/// tests). External data is resolved relative to the file's folder.
pub fn read_tensor_file(path: &Path) -> Result<TensorData, Error> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: label.clone(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: label,
            what: "tensor",
        });
    }
    let proto = pb::TensorProto::decode(bytes.as_slice()).map_err(|source| Error::Decode {
        path: label.clone(),
        what: "tensor",
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tensor::decode_tensor(
        &proto,
        tensor::TensorContext {
            base_dir: Some(base),
        },
    )
    .map_err(|e| Error::Tensor {
        path: label,
        tensor: proto.name.clone(),
        message: e.0,
    })
}

/// Serializes a model (see the `encode` module docs for what is written). Operators are
/// written in the form of `model.opset` where they are held in the newest form with constant
/// inputs. [`Attribute::Unsupported`] values carry nothing and are left out; use
/// [`write_model`] to have them refused instead.
pub fn encode_model(model: &OnnxModel) -> Vec<u8> {
    encode::encode(model)
}

/// Writes a model file; refuses models holding [`Attribute::Unsupported`] values, which would
/// be silently lost.
pub fn write_model(model: &OnnxModel, path: &Path) -> Result<(), Error> {
    let label = path.display().to_string();
    for n in &model.graph.nodes {
        for (k, v) in &n.attributes {
            if let Attribute::Unsupported(kind) = v {
                return Err(Error::UnsupportedNode {
                    path: label,
                    node: n.name.clone(),
                    op_type: n.op_type.clone(),
                    message: format!("attribute '{k}' of kind {kind} cannot be written"),
                });
            }
        }
    }
    std::fs::write(path, encode_model(model)).map_err(|source| Error::Io {
        path: label,
        source,
    })
}

/// Serializes one tensor as a `TensorProto` (raw data), e.g. to write node-test fixtures.
pub fn encode_tensor(t: &TensorData) -> Vec<u8> {
    tensor::encode_tensor(t).encode_to_vec()
}
