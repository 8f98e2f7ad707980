//! Runtime tensors: a small closed set of element types over ndarray's dynamic-rank arrays.
//!
//! Floating-point work happens in f32; integer tensors exist because ONNX graphs compute
//! shapes, axes and indices with them (and the node tests feed them as inputs).

use ndarray::{ArrayD, IxDyn};

/// Element type of a tensor. Only the types the engine can compute with are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    Bool,
    U8,
}

impl DType {
    /// Bytes one element occupies.
    pub fn size_of(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::Bool | DType::U8 => 1,
        }
    }

    /// The NumPy-style name (`float32`, `int64`, ...) messages use.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::Bool => "bool",
            DType::U8 => "uint8",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense, row-major (standard layout) tensor: one `ndarray` array of one element type.
///
/// Build inputs with `Tensor::from(array)` (f32 and i64 `ArrayD`s) or [`Tensor::from_f32`];
/// read outputs with [`Tensor::as_f32`] / [`Tensor::into_f32`] or [`Tensor::to_f64_vec`].
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    Bool(ArrayD<bool>),
    U8(ArrayD<u8>),
}

/// Applies the same expression to whichever array a tensor holds.
#[doc(hidden)]
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::tensor::Tensor::F32($a) => $body,
            $crate::tensor::Tensor::F64($a) => $body,
            $crate::tensor::Tensor::I64($a) => $body,
            $crate::tensor::Tensor::I32($a) => $body,
            $crate::tensor::Tensor::Bool($a) => $body,
            $crate::tensor::Tensor::U8($a) => $body,
        }
    };
}

impl Tensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F64(_) => DType::F64,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::Bool(_) => DType::Bool,
            Tensor::U8(_) => DType::U8,
        }
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        map_tensor!(self, a => a.shape())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        map_tensor!(self, a => a.len())
    }

    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements occupy (what the cost model calls feature-map or filter memory).
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size_of()
    }

    /// The f32 array, or `None` for another element type.
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    /// The f32 array by value (no copy), or `None` for another element type.
    pub fn into_f32(self) -> Option<ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            _ => None,
        }
    }

    /// Integer contents as i64 (for shapes, axes, indices), whatever integer type holds them.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            Tensor::I32(a) => Some(a.iter().map(|&v| v as i64).collect()),
            Tensor::U8(a) => Some(a.iter().map(|&v| v as i64).collect()),
            _ => None,
        }
    }

    /// Float contents widened to f64 (for comparisons against references).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            Tensor::F32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::F64(a) => a.iter().copied().collect(),
            Tensor::I64(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::Bool(a) => a.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect(),
            Tensor::U8(a) => a.iter().map(|&v| v as f64).collect(),
        }
    }

    /// A rank-0 f32 tensor.
    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// An i64 tensor from row-major data; `None` when `data.len()` does not match `shape`.
    pub fn from_i64(shape: &[usize], data: Vec<i64>) -> Option<Tensor> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .ok()
            .map(Tensor::I64)
    }

    /// An f32 tensor from row-major data; `None` when `data.len()` does not match `shape`.
    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Option<Tensor> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .ok()
            .map(Tensor::F32)
    }

    /// A tensor of zeros; the caller has already checked the size against the memory limit.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let s = IxDyn(shape);
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(s)),
            DType::F64 => Tensor::F64(ArrayD::zeros(s)),
            DType::I64 => Tensor::I64(ArrayD::zeros(s)),
            DType::I32 => Tensor::I32(ArrayD::zeros(s)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(s, false)),
            DType::U8 => Tensor::U8(ArrayD::zeros(s)),
        }
    }
}
