//! Library errors. Each says where (node name, op type, input name) and what was expected,
//! so the CLI can print it as-is.

/// A node the engine cannot run, as listed before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// The node's name in the ONNX file (`<op_type>_<index>` when it had none).
    pub name: String,
    /// ONNX op type, e.g. `LRN`.
    pub op_type: String,
    /// Operator domain; empty for the default `ai.onnx`.
    pub domain: String,
    /// Opset version of that domain the model imports.
    pub opset: i64,
    /// Why, when the op exists but an attribute value is not supported.
    pub reason: Option<String>,
}

impl std::fmt::Display for UnsupportedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domain = if self.domain.is_empty() {
            "ai.onnx"
        } else {
            &self.domain
        };
        write!(
            f,
            "node '{}' (op {}, domain {}, opset {})",
            self.name, self.op_type, domain, self.opset
        )?;
        if let Some(r) = &self.reason {
            write!(f, ": {r}")?;
        }
        Ok(())
    }
}

fn list_unsupported(nodes: &[UnsupportedNode]) -> String {
    let mut s = format!("{} unsupported node(s):", nodes.len());
    for n in nodes {
        s.push_str("\n  - ");
        s.push_str(&n.to_string());
    }
    s
}

/// Everything that can go wrong, typed so an embedding program can react per case;
/// [`Error::exit_code`] maps it to the CLI's exit status. Never a panic instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or decoded as ONNX.
    #[error(transparent)]
    Onnx(#[from] onnx_import::Error),
    /// Nodes the engine cannot run, all of them listed (checked before anything runs).
    #[error("{}", list_unsupported(.0))]
    Unsupported(Vec<UnsupportedNode>),
    /// A node's inputs, attributes or shapes are invalid.
    #[error("node '{node}' ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    /// A model-level structural problem (cycle, dangling name, duplicate output...).
    #[error("invalid model: {0}")]
    Model(String),
    /// A user-supplied input does not match what the model declares.
    #[error("input '{name}': {message}")]
    Input { name: String, message: String },
    /// A plan would exceed the memory limit; refused before allocating.
    #[error("{what} needs {requested} bytes, over the memory limit of {limit} bytes (raise it with --max-memory)")]
    MemoryLimit {
        what: String,
        requested: u128,
        limit: u128,
    },
    /// A backend failed at run time (device lost, shader error...).
    #[error("backend {backend}: {message}")]
    Backend { backend: String, message: String },
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An image given as model input could not be read, decoded or fitted to the input (see
    /// `engine::preprocess`). `path` is the file's path or the label given with its bytes.
    #[error("{path}: {message}")]
    Image { path: String, message: String },
}

impl Error {
    /// Process exit code: 2 for bad input or usage, 1 for failures of the engine itself.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Backend { .. } | Error::Io(_) => 1,
            _ => 2,
        }
    }

    /// An [`Error::Node`] for node `node` of op type `op`.
    pub fn node(node: &str, op: &str, message: impl Into<String>) -> Error {
        Error::Node {
            node: node.to_string(),
            op: op.to_string(),
            message: message.into(),
        }
    }
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
