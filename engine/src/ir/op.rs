//! The typed operator set of the IR.
//!
//! Attributes are parsed once at import into these structs, so kernels, the cost model and the
//! receptive-field analysis never look at ONNX attribute maps. Inputs whose ONNX form changed
//! across opsets (Clip's min/max, Squeeze's axes, Pad's pads, Slice's starts...) are always
//! *inputs* here: the importer rewrites older attribute forms into constant inputs.

use crate::tensor::{DType, Tensor};

/// How ONNX `auto_pad` asks for padding to be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoPad {
    #[default]
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Convolution attributes for any number of spatial dimensions.
///
/// `pads` holds begin pads for every spatial axis followed by end pads (ONNX order).
/// `kernel_shape` is `None` when the model leaves it to be read from the weight's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvAttrs {
    pub kernel_shape: Option<Vec<usize>>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub group: usize,
    pub auto_pad: AutoPad,
}

/// Max/average pooling attributes (any number of spatial dimensions).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolAttrs {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
    pub auto_pad: AutoPad,
    /// AveragePool only: whether padded cells count in the divisor.
    pub count_include_pad: bool,
}

/// An elementwise activation applied in a fused epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    LeakyRelu(f32),
    Clip(f32, f32),
    Sigmoid,
}

impl Activation {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            // Not `v.max(0.0)`: that maps NaN to 0; ONNX Relu (and ops::elementwise) keeps NaN.
            Activation::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Activation::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
            Activation::Clip(lo, hi) => v.max(lo).min(hi),
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        }
    }
}

/// Pad modes; only `Constant` is required by the reference architectures, the others are
/// accepted where the kernel supports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// One operator. Input order follows ONNX (after the importer's opset normalisation).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// X, W, \[B\]
    Conv(ConvAttrs),
    /// Conv with its epilogue fused by the engine: X, W, \[B\], [residual added before the
    /// activation]. `fused` lists how many original nodes it stands for (see `Node::origin`).
    FusedConv {
        conv: ConvAttrs,
        activation: Activation,
        has_residual: bool,
    },
    /// X, scale, B, mean, var (inference mode).
    BatchNormalization {
        epsilon: f32,
    },
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    /// X, \[min\], \[max\]
    Clip,
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    GlobalAveragePool,
    GlobalMaxPool,
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    Add,
    Sub,
    Mul,
    Div,
    /// Variadic elementwise sum with broadcasting.
    Sum,
    Concat {
        axis: i64,
    },
    /// A, B, \[C\]
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Flatten {
        axis: i64,
    },
    /// data, shape
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    /// data, \[axes\]
    Squeeze,
    /// data, axes
    Unsqueeze,
    /// `legacy` is the opset < 13 meaning: flatten to 2-D at `axis`, softmax over the rest.
    Softmax {
        axis: i64,
        legacy: bool,
    },
    Identity,
    /// data, \[ratio\], \[training_mode\] — inference only: identity (mask output all true).
    Dropout,
    /// Output of the given value (ConstantOfShape: input is the shape).
    ConstantOfShape {
        value: Tensor,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// data, indices
    Gather {
        axis: i64,
    },
    /// data, starts, ends, \[axes\], \[steps\]
    Slice,
    Cast {
        to: DType,
    },
    /// data, pads, \[constant_value\], \[axes\]
    Pad {
        mode: PadMode,
    },
    /// data, \[axes\]
    ReduceMean {
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
}

impl Op {
    /// The ONNX op type this operator is (for fused ops: the op type of the group's head).
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::FusedConv { .. } => "Conv",
            Op::BatchNormalization { .. } => "BatchNormalization",
            Op::Relu => "Relu",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Sigmoid => "Sigmoid",
            Op::Clip => "Clip",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Lrn { .. } => "LRN",
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::Sum => "Sum",
            Op::Concat { .. } => "Concat",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Softmax { .. } => "Softmax",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Slice => "Slice",
            Op::Cast { .. } => "Cast",
            Op::Pad { .. } => "Pad",
            Op::ReduceMean { .. } => "ReduceMean",
        }
    }
}
