//! Unit tests of the reference ops with hand-computed values.

// Tests pass inputs as `&[x.clone(), ...]` so every call reads the same way.
#![allow(clippy::cloned_ref_to_slice_refs)]

use super::{eval, run_reference};
use crate::error::{Error, Result};
use crate::ir::{
    Activation, AutoPad, ConvAttrs, Dim, Graph, Node, Op, OriginNode, PadMode, PoolAttrs, ValueId,
};
use crate::tensor::{DType, Tensor};

fn node(op: Op, n_in: usize, n_out: usize) -> Node {
    Node {
        name: "n".into(),
        origin: vec![OriginNode {
            name: "n".into(),
            op_type: op.type_name().into(),
        }],
        op,
        inputs: (0..n_in).map(|i| Some(ValueId(i))).collect(),
        outputs: (0..n_out).map(|i| ValueId(100 + i)).collect(),
    }
}

fn run_n(op: Op, inputs: &[Option<Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
    let refs: Vec<Option<&Tensor>> = inputs.iter().map(|t| t.as_ref()).collect();
    eval(&node(op, inputs.len(), n_out), &refs)
}

fn run(op: Op, inputs: &[Tensor]) -> Result<Tensor> {
    let ins: Vec<Option<Tensor>> = inputs.iter().cloned().map(Some).collect();
    let mut out = run_n(op, &ins, 1)?;
    Ok(out.remove(0))
}

fn f(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape, data.to_vec()).expect("test tensor shape")
}

fn i64t(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::from_i64(shape, data.to_vec()).expect("test tensor shape")
}

fn i32t(shape: &[usize], data: &[i32]) -> Tensor {
    Tensor::I32(
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data.to_vec()).expect("shape"),
    )
}

#[track_caller]
fn check(t: &Tensor, shape: &[usize], expected: &[f64]) {
    assert_eq!(t.shape(), shape, "shape");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "element {i}: got {g}, expected {e} (all: {got:?})"
        );
    }
}

#[track_caller]
fn node_err(r: Result<impl std::fmt::Debug>, needle: &str) {
    match r {
        Err(Error::Node { message, .. }) => {
            assert!(
                message.contains(needle),
                "message {message:?} lacks {needle:?}"
            )
        }
        other => panic!("expected a node error containing {needle:?}, got {other:?}"),
    }
}

fn conv_attrs(pads: &[usize], strides: &[usize], dilations: &[usize], group: usize) -> ConvAttrs {
    ConvAttrs {
        kernel_shape: None,
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dilations.to_vec(),
        group,
        auto_pad: AutoPad::NotSet,
    }
}

fn pool_attrs(
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    ceil: bool,
    include_pad: bool,
) -> PoolAttrs {
    PoolAttrs {
        kernel_shape: kernel.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: vec![],
        ceil_mode: ceil,
        auto_pad: AutoPad::NotSet,
        count_include_pad: include_pad,
    }
}

fn seq(n: usize) -> Vec<f32> {
    (1..=n).map(|v| v as f32).collect()
}

// ---------------------------------------------------------------- elementwise

#[test]
fn add_broadcasts_like_numpy() {
    let y = run(
        Op::Add,
        &[f(&[2, 1], &[1.0, 2.0]), f(&[3], &[10.0, 20.0, 30.0])],
    )
    .unwrap();
    check(&y, &[2, 3], &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    let y = run(Op::Sub, &[f(&[], &[1.0]), f(&[2], &[3.0, 5.0])]).unwrap();
    check(&y, &[2], &[-2.0, -4.0]);
    let y = run(Op::Mul, &[f(&[2], &[3.0, 5.0]), f(&[2, 1], &[2.0, -1.0])]).unwrap();
    check(&y, &[2, 2], &[6.0, 10.0, -3.0, -5.0]);
    let y = run(Op::Div, &[f(&[2], &[1.0, 3.0]), f(&[1], &[2.0])]).unwrap();
    check(&y, &[2], &[0.5, 1.5]);
}

#[test]
fn integer_division_truncates_and_rejects_zero() {
    let y = run(
        Op::Div,
        &[i64t(&[4], &[7, -7, 7, -7]), i64t(&[4], &[2, 2, -2, -2])],
    )
    .unwrap();
    assert_eq!(y, i64t(&[4], &[3, -3, -3, 3]));
    let y = run(Op::Div, &[i32t(&[2], &[-9, 9]), i32t(&[], &[4])]).unwrap();
    assert_eq!(y, i32t(&[2], &[-2, 2]));
    node_err(
        run(Op::Div, &[i64t(&[1], &[1]), i64t(&[1], &[0])]),
        "division by zero",
    );
    // Float division by zero is IEEE, not an error.
    let y = run(Op::Div, &[f(&[1], &[1.0]), f(&[1], &[0.0])]).unwrap();
    assert_eq!(y.to_f64_vec(), vec![f64::INFINITY]);
}

#[test]
fn binary_errors() {
    node_err(
        run(Op::Add, &[f(&[2], &[1.0, 2.0]), f(&[3], &[1.0, 2.0, 3.0])]),
        "do not broadcast",
    );
    node_err(
        run(Op::Add, &[f(&[1], &[1.0]), i64t(&[1], &[1])]),
        "different types",
    );
    node_err(run(Op::Add, &[f(&[1], &[1.0])]), "expected 2 inputs");
}

#[test]
fn sum_is_variadic_with_broadcasting() {
    let y = run(
        Op::Sum,
        &[
            f(&[2], &[1.0, 2.0]),
            f(&[2, 1], &[10.0, 20.0]),
            f(&[], &[100.0]),
        ],
    )
    .unwrap();
    check(&y, &[2, 2], &[111.0, 112.0, 121.0, 122.0]);
    let y = run(Op::Sum, &[f(&[2], &[1.0, 2.0])]).unwrap();
    check(&y, &[2], &[1.0, 2.0]);
}

#[test]
fn activations() {
    let y = run(Op::Relu, &[f(&[3], &[-1.0, 0.0, 2.0])]).unwrap();
    check(&y, &[3], &[0.0, 0.0, 2.0]);
    let y = run(Op::Relu, &[i64t(&[2], &[-5, 5])]).unwrap();
    assert_eq!(y, i64t(&[2], &[0, 5]));
    let y = run(Op::LeakyRelu { alpha: 0.1 }, &[f(&[2], &[-2.0, 3.0])]).unwrap();
    check(&y, &[2], &[-0.2, 3.0]);
    let y = run(Op::Sigmoid, &[f(&[2], &[0.0, 3f32.ln()])]).unwrap();
    check(&y, &[2], &[0.5, 0.75]);
    node_err(run(Op::Sigmoid, &[i64t(&[1], &[1])]), "expected a float32");
}

#[test]
fn clip_with_optional_bounds() {
    let x = f(&[3], &[-2.0, 0.5, 3.0]);
    let y = run(Op::Clip, &[x.clone(), f(&[], &[-1.0]), f(&[], &[1.0])]).unwrap();
    check(&y, &[3], &[-1.0, 0.5, 1.0]);
    // Only max given (min omitted).
    let y = run_n(Op::Clip, &[Some(x.clone()), None, Some(f(&[], &[0.0]))], 1).unwrap();
    check(&y[0], &[3], &[-2.0, 0.0, 0.0]);
    let y = run(Op::Clip, &[x.clone()]).unwrap();
    check(&y, &[3], &[-2.0, 0.5, 3.0]);
    // min > max: everything becomes max.
    let y = run(Op::Clip, &[x, f(&[], &[2.0]), f(&[], &[1.0])]).unwrap();
    check(&y, &[3], &[1.0, 1.0, 1.0]);
    let y = run(
        Op::Clip,
        &[i64t(&[3], &[-5, 2, 9]), i64t(&[], &[0]), i64t(&[], &[6])],
    )
    .unwrap();
    assert_eq!(y, i64t(&[3], &[0, 2, 6]));
    node_err(run(Op::Clip, &[f(&[1], &[1.0]), i64t(&[], &[0])]), "bound");
}

// ---------------------------------------------------------------- conv

#[test]
fn conv2d_plain_bias_stride_pads() {
    let x = f(&[1, 1, 3, 3], &seq(9));
    let w = f(&[1, 1, 2, 2], &[1.0; 4]);
    let y = run(
        Op::Conv(conv_attrs(&[], &[], &[], 1)),
        &[x.clone(), w.clone()],
    )
    .unwrap();
    check(&y, &[1, 1, 2, 2], &[12.0, 16.0, 24.0, 28.0]);
    let y = run(
        Op::Conv(conv_attrs(&[], &[], &[], 1)),
        &[x.clone(), w.clone(), f(&[1], &[1.0])],
    )
    .unwrap();
    check(&y, &[1, 1, 2, 2], &[13.0, 17.0, 25.0, 29.0]);
    // 3x3 kernel, pad 1, stride 2.
    let w3 = f(&[1, 1, 3, 3], &[1.0; 9]);
    let y = run(
        Op::Conv(conv_attrs(&[1, 1, 1, 1], &[2, 2], &[], 1)),
        &[x.clone(), w3],
    )
    .unwrap();
    check(&y, &[1, 1, 2, 2], &[12.0, 16.0, 24.0, 28.0]);
    // Asymmetric pads: end only.
    let y = run(
        Op::Conv(conv_attrs(&[0, 0, 1, 1], &[], &[], 1)),
        &[x.clone(), w.clone()],
    )
    .unwrap();
    check(
        &y,
        &[1, 1, 3, 3],
        &[12.0, 16.0, 9.0, 24.0, 28.0, 15.0, 15.0, 17.0, 9.0],
    );
    // Dilation 2: the four corners.
    let y = run(Op::Conv(conv_attrs(&[], &[], &[2, 2], 1)), &[x, w]).unwrap();
    check(&y, &[1, 1, 1, 1], &[20.0]);
}

#[test]
fn conv_1d_and_3d() {
    let x = f(&[1, 1, 5], &seq(5));
    let w = f(&[1, 1, 2], &[1.0, -1.0]);
    let y = run(
        Op::Conv(conv_attrs(&[], &[], &[], 1)),
        &[x.clone(), w.clone()],
    )
    .unwrap();
    check(&y, &[1, 1, 4], &[-1.0; 4]);
    let y = run(Op::Conv(conv_attrs(&[], &[2], &[], 1)), &[x, w]).unwrap();
    check(&y, &[1, 1, 2], &[-1.0, -1.0]);
    let x = f(&[1, 1, 2, 2, 2], &seq(8));
    let w = f(&[1, 1, 2, 2, 2], &[1.0; 8]);
    let y = run(Op::Conv(conv_attrs(&[], &[], &[], 1)), &[x, w]).unwrap();
    check(&y, &[1, 1, 1, 1, 1], &[36.0]);
}

#[test]
fn conv_groups_and_depthwise() {
    let x = f(&[1, 2, 1, 1], &[3.0, 5.0]);
    let y = run(
        Op::Conv(conv_attrs(&[], &[], &[], 2)),
        &[x.clone(), f(&[2, 1, 1, 1], &[2.0, 10.0])],
    )
    .unwrap();
    check(&y, &[1, 2, 1, 1], &[6.0, 50.0]);
    let y = run(
        Op::Conv(conv_attrs(&[], &[], &[], 1)),
        &[x, f(&[1, 2, 1, 1], &[2.0, 10.0])],
    )
    .unwrap();
    check(&y, &[1, 1, 1, 1], &[56.0]);
    // 4 input channels in 2 groups of 2, one output per group; batch of 2.
    let x = f(&[2, 4, 1, 1], &[1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0]);
    let w = f(&[2, 2, 1, 1], &[1.0, 1.0, 1.0, -1.0]);
    let y = run(Op::Conv(conv_attrs(&[], &[], &[], 2)), &[x, w]).unwrap();
    check(&y, &[2, 2, 1, 1], &[3.0, -1.0, 2.0, 0.0]);
}

#[test]
fn conv_auto_pad_and_errors() {
    let x = f(&[1, 1, 4], &seq(4));
    let w = f(&[1, 1, 2], &[1.0, 1.0]);
    let mut a = conv_attrs(&[], &[], &[], 1);
    a.auto_pad = AutoPad::SameUpper;
    let y = run(Op::Conv(a.clone()), &[x.clone(), w.clone()]).unwrap();
    check(&y, &[1, 1, 4], &[3.0, 5.0, 7.0, 4.0]);
    a.auto_pad = AutoPad::SameLower;
    let y = run(Op::Conv(a.clone()), &[x.clone(), w.clone()]).unwrap();
    check(&y, &[1, 1, 4], &[1.0, 3.0, 5.0, 7.0]);
    a.auto_pad = AutoPad::Valid;
    let y = run(Op::Conv(a), &[x.clone(), w.clone()]).unwrap();
    check(&y, &[1, 1, 3], &[3.0, 5.0, 7.0]);
    node_err(
        run(
            Op::Conv(conv_attrs(&[], &[], &[], 2)),
            &[x.clone(), w.clone()],
        ),
        "group",
    );
    let mut a = conv_attrs(&[], &[], &[], 1);
    a.kernel_shape = Some(vec![3]);
    node_err(run(Op::Conv(a), &[x.clone(), w]), "kernel_shape");
    node_err(
        run(
            Op::Conv(conv_attrs(&[], &[], &[], 1)),
            &[x, f(&[1, 1, 9], &[0.0; 9])],
        ),
        "larger than",
    );
}

#[test]
fn fused_conv_adds_residual_then_activates() {
    let x = f(&[1, 1, 1, 2], &[1.0, -3.0]);
    let w = f(&[1, 1, 1, 1], &[2.0]);
    let b = f(&[1], &[1.0]);
    let op = Op::FusedConv {
        conv: conv_attrs(&[], &[], &[], 1),
        activation: Activation::Relu,
        has_residual: true,
    };
    let y = run(
        op,
        &[
            x.clone(),
            w.clone(),
            b.clone(),
            f(&[1, 1, 1, 2], &[1.0, 1.0]),
        ],
    )
    .unwrap();
    check(&y, &[1, 1, 1, 2], &[4.0, 0.0]);
    let op = Op::FusedConv {
        conv: conv_attrs(&[], &[], &[], 1),
        activation: Activation::Clip(0.0, 2.0),
        has_residual: false,
    };
    let y = run(op, &[x, w, b]).unwrap();
    check(&y, &[1, 1, 1, 2], &[2.0, 0.0]);
}

// ---------------------------------------------------------------- pooling

#[test]
fn max_pool_2d_with_indices() {
    let x = f(
        &[1, 1, 4, 4],
        &(0..16).map(|v| v as f32).collect::<Vec<_>>(),
    );
    let y = run_n(
        Op::MaxPool(pool_attrs(&[2, 2], &[2, 2], &[], false, false)),
        &[Some(x)],
        2,
    )
    .unwrap();
    check(&y[0], &[1, 1, 2, 2], &[5.0, 7.0, 13.0, 15.0]);
    assert_eq!(y[1], i64t(&[1, 1, 2, 2], &[5, 7, 13, 15]));
    let xi = Tensor::U8(
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[1, 1, 3]), vec![3u8, 200, 7]).unwrap(),
    );
    let y = run(
        Op::MaxPool(pool_attrs(&[2], &[1], &[], false, false)),
        &[xi],
    )
    .unwrap();
    assert_eq!(y.dtype(), DType::U8);
    check(&y, &[1, 1, 2], &[200.0, 200.0]);
}

#[test]
fn pool_ceil_mode_drops_window_starting_in_end_padding() {
    let x5 = f(&[1, 1, 5], &seq(5));
    let y = run(
        Op::MaxPool(pool_attrs(&[2], &[2], &[], false, false)),
        &[x5.clone()],
    )
    .unwrap();
    check(&y, &[1, 1, 2], &[2.0, 4.0]);
    let y = run(
        Op::MaxPool(pool_attrs(&[2], &[2], &[], true, false)),
        &[x5.clone()],
    )
    .unwrap();
    check(&y, &[1, 1, 3], &[2.0, 4.0, 5.0]);
    // in 4, end pad 1, k 2, s 2: ceil would give 3 windows but the third starts in the padding.
    let x4 = f(&[1, 1, 4], &seq(4));
    let y = run(
        Op::MaxPool(pool_attrs(&[2], &[2], &[0, 1], true, false)),
        &[x4],
    )
    .unwrap();
    check(&y, &[1, 1, 2], &[2.0, 4.0]);
    // The ceil-mode overflow cell never counts in the average, even with count_include_pad.
    let y = run(
        Op::AveragePool(pool_attrs(&[2], &[2], &[], true, true)),
        &[x5],
    )
    .unwrap();
    check(&y, &[1, 1, 3], &[1.5, 3.5, 5.0]);
}

#[test]
fn average_pool_count_include_pad() {
    let x = f(&[1, 1, 3], &seq(3));
    let y = run(
        Op::AveragePool(pool_attrs(&[2], &[1], &[1, 1], false, true)),
        &[x.clone()],
    )
    .unwrap();
    check(&y, &[1, 1, 4], &[0.5, 1.5, 2.5, 1.5]);
    let y = run(
        Op::AveragePool(pool_attrs(&[2], &[1], &[1, 1], false, false)),
        &[x],
    )
    .unwrap();
    check(&y, &[1, 1, 4], &[1.0, 1.5, 2.5, 3.0]);
    let x = f(&[1, 1, 2, 2], &seq(4));
    let y = run(
        Op::AveragePool(pool_attrs(&[2, 2], &[], &[], false, false)),
        &[x],
    )
    .unwrap();
    check(&y, &[1, 1, 1, 1], &[2.5]);
}

#[test]
fn pool_dilation_and_auto_pad() {
    let x = f(&[1, 1, 5], &[1.0, 5.0, 2.0, 4.0, 3.0]);
    let mut a = pool_attrs(&[2], &[1], &[], false, false);
    a.dilations = vec![2];
    let y = run(Op::MaxPool(a), &[x]).unwrap();
    check(&y, &[1, 1, 3], &[2.0, 5.0, 3.0]);
    let mut a = pool_attrs(&[2], &[2], &[], false, false);
    a.auto_pad = AutoPad::SameUpper;
    let y = run(Op::MaxPool(a), &[f(&[1, 1, 5], &seq(5))]).unwrap();
    check(&y, &[1, 1, 3], &[2.0, 4.0, 5.0]);
}

#[test]
fn global_pools() {
    let x = f(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0]);
    let y = run(Op::GlobalAveragePool, &[x.clone()]).unwrap();
    check(&y, &[1, 2, 1, 1], &[2.5, -2.5]);
    let y = run(Op::GlobalMaxPool, &[x]).unwrap();
    check(&y, &[1, 2, 1, 1], &[4.0, -1.0]);
}

// ---------------------------------------------------------------- normalization

#[test]
fn batch_norm_inference() {
    let x = f(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let y = run(
        Op::BatchNormalization { epsilon: 0.0 },
        &[
            x.clone(),
            f(&[2], &[1.0, 2.0]),
            f(&[2], &[0.0, 1.0]),
            f(&[2], &[1.0, 3.0]),
            f(&[2], &[4.0, 0.25]),
        ],
    )
    .unwrap();
    check(&y, &[1, 2, 1, 2], &[0.0, 0.5, 1.0, 5.0]);
    node_err(
        run(
            Op::BatchNormalization { epsilon: 0.0 },
            &[
                x.clone(),
                f(&[3], &[1.0; 3]),
                f(&[2], &[0.0; 2]),
                f(&[2], &[0.0; 2]),
                f(&[2], &[1.0; 2]),
            ],
        ),
        "shape [2]",
    );
    node_err(
        run(Op::BatchNormalization { epsilon: 0.0 }, &[x]),
        "expected 5 inputs",
    );
}

#[test]
fn lrn_window_is_floor_before_ceil_after() {
    let x = f(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
    let y = run(
        Op::Lrn {
            size: 3,
            alpha: 3.0,
            beta: 1.0,
            bias: 1.0,
        },
        &[x.clone()],
    )
    .unwrap();
    check(&y, &[1, 3, 1, 1], &[1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0]);
    let y = run(
        Op::Lrn {
            size: 2,
            alpha: 2.0,
            beta: 1.0,
            bias: 1.0,
        },
        &[x],
    )
    .unwrap();
    check(&y, &[1, 3, 1, 1], &[1.0 / 6.0, 2.0 / 14.0, 3.0 / 10.0]);
}

// ---------------------------------------------------------------- gemm / matmul

#[test]
fn gemm_transposes_alpha_beta_and_c_broadcast() {
    let a = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let at = f(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let bt = f(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    let c = f(&[2], &[10.0, 20.0]);
    let expect = [13.0, 20.0, 25.0, 32.0];
    let g = |ta, tb| Op::Gemm {
        alpha: 2.0,
        beta: 0.5,
        trans_a: ta,
        trans_b: tb,
    };
    check(
        &run(g(false, false), &[a.clone(), b.clone(), c.clone()]).unwrap(),
        &[2, 2],
        &expect,
    );
    check(
        &run(g(true, false), &[at.clone(), b.clone(), c.clone()]).unwrap(),
        &[2, 2],
        &expect,
    );
    check(
        &run(g(true, true), &[at, bt.clone(), c.clone()]).unwrap(),
        &[2, 2],
        &expect,
    );
    check(
        &run(g(false, true), &[a.clone(), bt, c]).unwrap(),
        &[2, 2],
        &expect,
    );
    // No C; C as a column.
    check(
        &run(g(false, false), &[a.clone(), b.clone()]).unwrap(),
        &[2, 2],
        &[8.0, 10.0, 20.0, 22.0],
    );
    let y = run(
        g(false, false),
        &[a.clone(), b.clone(), f(&[2, 1], &[2.0, 4.0])],
    )
    .unwrap();
    check(&y, &[2, 2], &[9.0, 11.0, 22.0, 24.0]);
    node_err(run(g(true, false), &[a, b]), "inner dimensions");
}

#[test]
fn matmul_numpy_semantics() {
    let y = run(
        Op::MatMul,
        &[f(&[3], &[1.0, 2.0, 3.0]), f(&[3], &[4.0, 5.0, 6.0])],
    )
    .unwrap();
    check(&y, &[], &[32.0]);
    let m = f(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let v = f(&[2], &[1.0, 1.0]);
    check(
        &run(Op::MatMul, &[m.clone(), v.clone()]).unwrap(),
        &[2],
        &[3.0, 7.0],
    );
    check(&run(Op::MatMul, &[v, m]).unwrap(), &[2], &[4.0, 6.0]);
    let a = f(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = f(&[2, 2], &[1.0, 0.0, 0.0, 2.0]);
    check(
        &run(Op::MatMul, &[a, b]).unwrap(),
        &[2, 1, 2],
        &[1.0, 4.0, 3.0, 8.0],
    );
    // Batch broadcast [1,1,2] x [3,2,1] -> [3,1,1].
    let a = f(&[1, 1, 2], &[1.0, 1.0]);
    let b = f(&[3, 2, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    check(
        &run(Op::MatMul, &[a, b]).unwrap(),
        &[3, 1, 1],
        &[3.0, 7.0, 11.0],
    );
    let y = run(
        Op::MatMul,
        &[i64t(&[1, 2], &[2, 3]), i64t(&[2, 1], &[4, 5])],
    )
    .unwrap();
    assert_eq!(y, i64t(&[1, 1], &[23]));
    node_err(
        run(Op::MatMul, &[f(&[2, 3], &[0.0; 6]), f(&[2, 3], &[0.0; 6])]),
        "inner dimensions",
    );
}

// ---------------------------------------------------------------- shape ops

#[test]
fn reshape_zero_and_minus_one() {
    let x = f(&[2, 3, 4], &[0.0; 24]);
    let y = run(
        Op::Reshape { allowzero: false },
        &[x.clone(), i64t(&[2], &[0, -1])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[2, 12]);
    let y = run(
        Op::Reshape { allowzero: false },
        &[x.clone(), i64t(&[3], &[-1, 3, 2])],
    )
    .unwrap();
    assert_eq!(y.shape(), &[4, 3, 2]);
    node_err(
        run(
            Op::Reshape { allowzero: false },
            &[x.clone(), i64t(&[2], &[-1, -1])],
        ),
        "more than one",
    );
    node_err(
        run(
            Op::Reshape { allowzero: false },
            &[x.clone(), i64t(&[2], &[5, 5])],
        ),
        "cannot view",
    );
    // allowzero: 0 is a real zero dim.
    let e = f(&[0, 3], &[]);
    let y = run(Op::Reshape { allowzero: true }, &[e, i64t(&[2], &[3, 0])]).unwrap();
    assert_eq!(y.shape(), &[3, 0]);
    node_err(
        run(Op::Reshape { allowzero: true }, &[x, i64t(&[2], &[0, 4])]),
        "cannot view",
    );
    let y = run(
        Op::Reshape { allowzero: false },
        &[f(&[2, 2], &[1.0, 2.0, 3.0, 4.0]), i64t(&[1], &[4])],
    )
    .unwrap();
    check(&y, &[4], &[1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn flatten_and_transpose() {
    let x = f(&[2, 3, 4], &[0.0; 24]);
    assert_eq!(
        run(Op::Flatten { axis: -1 }, &[x.clone()]).unwrap().shape(),
        &[6, 4]
    );
    assert_eq!(
        run(Op::Flatten { axis: 0 }, &[x.clone()]).unwrap().shape(),
        &[1, 24]
    );
    assert_eq!(
        run(Op::Flatten { axis: 3 }, &[x]).unwrap().shape(),
        &[24, 1]
    );
    let y = run(Op::Transpose { perm: None }, &[f(&[2, 3], &seq(6))]).unwrap();
    check(&y, &[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let x = f(&[2, 3, 4], &(0..24).map(|v| v as f32).collect::<Vec<_>>());
    let y = run(
        Op::Transpose {
            perm: Some(vec![1, 2, 0]),
        },
        &[x.clone()],
    )
    .unwrap();
    assert_eq!(y.shape(), &[3, 4, 2]);
    // y[i,j,k] = x[k,i,j]: y[2,1,1] = x[1,2,1] = 12 + 8 + 1.
    assert_eq!(y.to_f64_vec()[2 * 8 + 2 + 1], 21.0);
    node_err(
        run(
            Op::Transpose {
                perm: Some(vec![0, 0, 1]),
            },
            &[x],
        ),
        "not a permutation",
    );
}

#[test]
fn squeeze_unsqueeze() {
    let x = f(&[1, 3, 1, 2], &[0.0; 6]);
    assert_eq!(run(Op::Squeeze, &[x.clone()]).unwrap().shape(), &[3, 2]);
    assert_eq!(
        run(Op::Squeeze, &[x.clone(), i64t(&[1], &[-2])])
            .unwrap()
            .shape(),
        &[1, 3, 2]
    );
    node_err(run(Op::Squeeze, &[x, i64t(&[1], &[1])]), "cannot squeeze");
    let x = f(&[3], &[1.0, 2.0, 3.0]);
    let y = run(Op::Unsqueeze, &[x.clone(), i64t(&[2], &[0, -1])]).unwrap();
    check(&y, &[1, 3, 1], &[1.0, 2.0, 3.0]);
    assert_eq!(
        run(Op::Unsqueeze, &[x.clone(), i64t(&[1], &[1])])
            .unwrap()
            .shape(),
        &[3, 1]
    );
    node_err(run(Op::Unsqueeze, &[x, i64t(&[1], &[2])]), "out of range");
}

#[test]
fn concat_negative_axis() {
    let y = run(
        Op::Concat { axis: -1 },
        &[f(&[1, 2], &[1.0, 2.0]), f(&[1, 1], &[3.0])],
    )
    .unwrap();
    check(&y, &[1, 3], &[1.0, 2.0, 3.0]);
    let y = run(
        Op::Concat { axis: 0 },
        &[i64t(&[1], &[1]), i64t(&[2], &[2, 3])],
    )
    .unwrap();
    assert_eq!(y, i64t(&[3], &[1, 2, 3]));
    node_err(
        run(
            Op::Concat { axis: 0 },
            &[f(&[1, 2], &[1.0, 2.0]), f(&[1, 1], &[3.0])],
        ),
        "does not match",
    );
}

#[test]
fn gather_axes_negative_and_scalar_indices() {
    let d = f(&[3, 2], &seq(6));
    let y = run(Op::Gather { axis: 0 }, &[d.clone(), i64t(&[2], &[-1, 0])]).unwrap();
    check(&y, &[2, 2], &[5.0, 6.0, 1.0, 2.0]);
    let y = run(Op::Gather { axis: 1 }, &[d.clone(), i64t(&[], &[1])]).unwrap();
    check(&y, &[3], &[2.0, 4.0, 6.0]);
    let y = run(
        Op::Gather { axis: -1 },
        &[d.clone(), i32t(&[2, 1], &[1, 0])],
    )
    .unwrap();
    check(&y, &[3, 2, 1], &[2.0, 1.0, 4.0, 3.0, 6.0, 5.0]);
    node_err(
        run(Op::Gather { axis: 0 }, &[d.clone(), i64t(&[1], &[3])]),
        "out of range",
    );
    node_err(
        run(Op::Gather { axis: 0 }, &[d, i64t(&[1], &[-4])]),
        "out of range",
    );
}

#[test]
fn slice_negative_steps_and_sentinels() {
    let x = f(&[10], &(0..10).map(|v| v as f32).collect::<Vec<_>>());
    let y = run(
        Op::Slice,
        &[x.clone(), i64t(&[1], &[-3]), i64t(&[1], &[i64::MAX])],
    )
    .unwrap();
    check(&y, &[3], &[7.0, 8.0, 9.0]);
    let all_rev = run(
        Op::Slice,
        &[
            x.clone(),
            i64t(&[1], &[i64::MAX]),
            i64t(&[1], &[i64::MIN]),
            i64t(&[1], &[0]),
            i64t(&[1], &[-1]),
        ],
    )
    .unwrap();
    check(
        &all_rev,
        &[10],
        &[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
    );
    let y = run(
        Op::Slice,
        &[
            x.clone(),
            i64t(&[1], &[-1]),
            i64t(&[1], &[0]),
            i64t(&[1], &[0]),
            i64t(&[1], &[-2]),
        ],
    )
    .unwrap();
    check(&y, &[5], &[9.0, 7.0, 5.0, 3.0, 1.0]);
    let y = run(Op::Slice, &[x.clone(), i64t(&[1], &[5]), i64t(&[1], &[2])]).unwrap();
    check(&y, &[0], &[]);
    node_err(
        run(
            Op::Slice,
            &[
                x,
                i64t(&[1], &[0]),
                i64t(&[1], &[1]),
                i64t(&[1], &[0]),
                i64t(&[1], &[0]),
            ],
        ),
        "step",
    );
    // 2-D, axes given for the second axis only, step 2.
    let x = f(&[2, 4], &seq(8));
    let y = run(
        Op::Slice,
        &[
            x,
            i64t(&[1], &[0]),
            i64t(&[1], &[100]),
            i64t(&[1], &[-1]),
            i64t(&[1], &[2]),
        ],
    )
    .unwrap();
    check(&y, &[2, 2], &[1.0, 3.0, 5.0, 7.0]);
}

#[test]
fn pad_modes_and_negative_pads() {
    let x = f(&[3], &[1.0, 2.0, 3.0]);
    let c = Op::Pad {
        mode: PadMode::Constant,
    };
    let y = run(
        c.clone(),
        &[f(&[2], &[1.0, 2.0]), i64t(&[2], &[1, 2]), f(&[], &[9.0])],
    )
    .unwrap();
    check(&y, &[5], &[9.0, 1.0, 2.0, 9.0, 9.0]);
    let y = run(
        Op::Pad {
            mode: PadMode::Reflect,
        },
        &[x.clone(), i64t(&[2], &[2, 2])],
    )
    .unwrap();
    check(&y, &[7], &[3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    let y = run(
        Op::Pad {
            mode: PadMode::Edge,
        },
        &[x.clone(), i64t(&[2], &[2, 1])],
    )
    .unwrap();
    check(&y, &[6], &[1.0, 1.0, 1.0, 2.0, 3.0, 3.0]);
    let y = run(c.clone(), &[x.clone(), i64t(&[2], &[-1, 1])]).unwrap();
    check(&y, &[3], &[2.0, 3.0, 0.0]);
    // Axes input: pad only the last axis of a 2-D tensor.
    let y = run_n(
        c.clone(),
        &[
            Some(f(&[2, 1], &[1.0, 2.0])),
            Some(i64t(&[2], &[0, 1])),
            None,
            Some(i64t(&[1], &[-1])),
        ],
        1,
    )
    .unwrap();
    check(&y[0], &[2, 2], &[1.0, 0.0, 2.0, 0.0]);
    node_err(run(c, &[x, i64t(&[2], &[-2, -2])]), "below zero");
}

#[test]
fn shape_constant_of_shape_cast_identity_dropout() {
    let x = f(&[2, 3, 4], &[0.0; 24]);
    assert_eq!(
        run(
            Op::Shape {
                start: 0,
                end: None
            },
            &[x.clone()]
        )
        .unwrap(),
        i64t(&[3], &[2, 3, 4])
    );
    assert_eq!(
        run(
            Op::Shape {
                start: -2,
                end: None
            },
            &[x.clone()]
        )
        .unwrap(),
        i64t(&[2], &[3, 4])
    );
    assert_eq!(
        run(
            Op::Shape {
                start: 1,
                end: Some(-1)
            },
            &[x.clone()]
        )
        .unwrap(),
        i64t(&[1], &[3])
    );
    assert_eq!(
        run(
            Op::Shape {
                start: -10,
                end: Some(10)
            },
            &[x.clone()]
        )
        .unwrap(),
        i64t(&[3], &[2, 3, 4])
    );
    assert_eq!(
        run(
            Op::Shape {
                start: 2,
                end: Some(1)
            },
            &[x.clone()]
        )
        .unwrap(),
        i64t(&[0], &[])
    );

    let y = run(
        Op::ConstantOfShape {
            value: i64t(&[1], &[7]),
        },
        &[i64t(&[2], &[2, 1])],
    )
    .unwrap();
    assert_eq!(y, i64t(&[2, 1], &[7, 7]));
    let y = run(
        Op::ConstantOfShape {
            value: f(&[1], &[0.5]),
        },
        &[i64t(&[0], &[])],
    )
    .unwrap();
    check(&y, &[], &[0.5]);

    let src = f(&[4], &[-1.7, 2.9, 0.0, -0.2]);
    assert_eq!(
        run(Op::Cast { to: DType::I64 }, &[src.clone()]).unwrap(),
        i64t(&[4], &[-1, 2, 0, 0])
    );
    assert_eq!(
        run(Op::Cast { to: DType::I32 }, &[src.clone()]).unwrap(),
        i32t(&[4], &[-1, 2, 0, 0])
    );
    let b = run(Op::Cast { to: DType::Bool }, &[src]).unwrap();
    check(&b, &[4], &[1.0, 1.0, 0.0, 1.0]);
    let back = run(Op::Cast { to: DType::F32 }, &[b]).unwrap();
    assert_eq!(back.dtype(), DType::F32);
    check(&back, &[4], &[1.0, 1.0, 0.0, 1.0]);
    let y = run(Op::Cast { to: DType::F64 }, &[i64t(&[2], &[3, -4])]).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    check(&y, &[2], &[3.0, -4.0]);

    assert_eq!(run(Op::Identity, &[x.clone()]).unwrap(), x);
    let y = run_n(Op::Dropout, &[Some(x.clone())], 2).unwrap();
    assert_eq!(y[0], x);
    assert_eq!(y[1].dtype(), DType::Bool);
    assert_eq!(y[1].shape(), x.shape());
    assert!(y[1].to_f64_vec().iter().all(|&v| v == 1.0));
    assert_eq!(run_n(Op::Dropout, &[Some(x)], 1).unwrap().len(), 1);
}

/// Training-mode Dropout: ratio 0 keeps everything (identity, all-true mask); a nonzero or
/// default ratio would need random masks and is refused as unsupported, not as a bad model.
#[test]
fn dropout_training_mode() {
    let x = f(&[2, 2], &[1.0, -2.0, 3.0, 4.0]);
    let yes = Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), true));
    let no = Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), false));
    let y = run_n(
        Op::Dropout,
        &[
            Some(x.clone()),
            Some(Tensor::scalar_f32(0.0)),
            Some(yes.clone()),
        ],
        2,
    )
    .unwrap();
    assert_eq!(y[0], x);
    assert!(y[1].to_f64_vec().iter().all(|&v| v == 1.0));
    for ratio in [Some(Tensor::scalar_f32(0.25)), None] {
        let r = run_n(Op::Dropout, &[Some(x.clone()), ratio, Some(yes.clone())], 2);
        match r {
            Err(Error::Unsupported(nodes)) => {
                assert_eq!(nodes.len(), 1);
                assert!(nodes[0]
                    .reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("training_mode"));
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    // Inference with a ratio is the identity.
    let y = run_n(
        Op::Dropout,
        &[Some(x.clone()), Some(Tensor::scalar_f32(0.5)), Some(no)],
        1,
    )
    .unwrap();
    assert_eq!(y[0], x);
    assert!(run_n(
        Op::Dropout,
        &[Some(x), Some(Tensor::scalar_f32(1.5)), Some(yes)],
        1
    )
    .is_err());
}

// ---------------------------------------------------------------- reductions

#[test]
fn reduce_mean_axes_keepdims_noop() {
    let x = f(&[2, 3], &seq(6));
    let rm = |k, noop| Op::ReduceMean {
        keepdims: k,
        noop_with_empty_axes: noop,
    };
    check(
        &run(rm(true, false), &[x.clone(), i64t(&[1], &[1])]).unwrap(),
        &[2, 1],
        &[2.0, 5.0],
    );
    check(
        &run(rm(false, false), &[x.clone(), i64t(&[1], &[-2])]).unwrap(),
        &[3],
        &[2.5, 3.5, 4.5],
    );
    check(
        &run(rm(true, false), &[x.clone()]).unwrap(),
        &[1, 1],
        &[3.5],
    );
    check(
        &run(rm(false, false), &[x.clone(), i64t(&[0], &[])]).unwrap(),
        &[],
        &[3.5],
    );
    assert_eq!(run(rm(true, true), &[x.clone()]).unwrap(), x);
    node_err(run(rm(true, false), &[x, i64t(&[1], &[2])]), "out of range");
}

#[test]
fn softmax_both_semantics_and_stability() {
    let ln3 = 3f32.ln();
    let x = f(&[1, 2, 2], &[0.0, 0.0, 0.0, ln3]);
    let y = run(
        Op::Softmax {
            axis: 1,
            legacy: true,
        },
        &[x.clone()],
    )
    .unwrap();
    check(&y, &[1, 2, 2], &[1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 0.5]);
    let y = run(
        Op::Softmax {
            axis: 1,
            legacy: false,
        },
        &[x.clone()],
    )
    .unwrap();
    check(&y, &[1, 2, 2], &[0.5, 0.25, 0.5, 0.75]);
    let y = run(
        Op::Softmax {
            axis: -1,
            legacy: false,
        },
        &[x],
    )
    .unwrap();
    check(&y, &[1, 2, 2], &[0.5, 0.5, 0.25, 0.75]);
    let y = run(
        Op::Softmax {
            axis: -1,
            legacy: false,
        },
        &[f(&[2], &[1000.0, 1000.0])],
    )
    .unwrap();
    check(&y, &[2], &[0.5, 0.5]);
}

// ---------------------------------------------------------------- errors / graph

#[test]
fn bad_inputs_are_errors_not_panics() {
    node_err(run(Op::Relu, &[]), "expected 1 inputs");
    node_err(
        run(
            Op::Conv(conv_attrs(&[], &[], &[], 1)),
            &[f(&[2], &[0.0; 2]), f(&[2], &[0.0; 2])],
        ),
        "spatial",
    );
    node_err(
        run(
            Op::MaxPool(pool_attrs(&[2], &[], &[], false, false)),
            &[Tensor::zeros(DType::Bool, &[1, 1, 2])],
        ),
        "float32",
    );
    node_err(
        run(
            Op::Reshape { allowzero: false },
            &[f(&[1], &[1.0]), f(&[1], &[1.0])],
        ),
        "int64",
    );
    node_err(
        run_n(Op::Relu, &[Some(f(&[1], &[1.0]))], 2),
        "declares 2 outputs",
    );
    let missing = run_n(Op::Add, &[Some(f(&[1], &[1.0])), None], 1);
    node_err(missing, "missing");
}

#[test]
fn run_reference_evaluates_a_graph() {
    let mut g = Graph {
        name: "g".into(),
        ..Default::default()
    };
    let x = g.add_value("x", Some(DType::F32), Some(vec![Dim::Fixed(3)]));
    let c = g.add_constant("c", f(&[3], &[1.0, 1.0, 1.0]));
    let r = g.add_value("r", Some(DType::F32), Some(vec![Dim::Fixed(3)]));
    let y = g.add_value("y", Some(DType::F32), Some(vec![Dim::Fixed(3)]));
    g.inputs = vec![x];
    g.outputs = vec![y];
    let mut n1 = node(Op::Relu, 0, 0);
    n1.inputs = vec![Some(x)];
    n1.outputs = vec![r];
    let mut n2 = node(Op::Add, 0, 0);
    n2.inputs = vec![Some(r), Some(c)];
    n2.outputs = vec![y];
    g.nodes = vec![n1, n2];
    let out = run_reference(&g, &[(x, f(&[3], &[-2.0, 0.5, 3.0]))]).unwrap();
    assert_eq!(out.len(), 1);
    check(&out[0], &[3], &[1.0, 1.5, 4.0]);
    assert!(matches!(run_reference(&g, &[]), Err(Error::Input { .. })));
}

/// Deterministic pseudo-random values in [-1, 1) (no RNG dependency needed).
fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn conv2d_matches_textbook_loops() {
    // Groups, strides, dilations and asymmetric pads at once, checked against the definition
    // written as plain nested loops (a different code path from the tap map).
    let (n, c, h, w, m, group) = (2, 4, 7, 6, 6, 2);
    let (kh, kw, sh, sw, dh, dw) = (3, 2, 2, 1, 1, 2);
    let (pt, pl, pb, pr) = (1, 0, 2, 1);
    let cg = c / group;
    let x = lcg(n * c * h * w, 1);
    let wt = lcg(m * cg * kh * kw, 2);
    let b = lcg(m, 3);
    let oh = (h + pt + pb - (dh * (kh - 1) + 1)) / sh + 1;
    let ow = (w + pl + pr - (dw * (kw - 1) + 1)) / sw + 1;
    let mut expect = vec![0.0f64; n * m * oh * ow];
    for bi in 0..n {
        for oc in 0..m {
            let g = oc / (m / group);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = b[oc] as f64;
                    for icg in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky * dh) as i64 - pt as i64;
                                let ix = (ox * sw + kx * dw) as i64 - pl as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                let ic = g * cg + icg;
                                let xv =
                                    x[((bi * c + ic) * h + iy as usize) * w + ix as usize] as f64;
                                let wv = wt[((oc * cg + icg) * kh + ky) * kw + kx] as f64;
                                s += xv * wv;
                            }
                        }
                    }
                    expect[((bi * m + oc) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    let attrs = conv_attrs(&[pt, pl, pb, pr], &[sh, sw], &[dh, dw], group);
    let y = run(
        Op::Conv(attrs),
        &[f(&[n, c, h, w], &x), f(&[m, cg, kh, kw], &wt), f(&[m], &b)],
    )
    .unwrap();
    check(&y, &[n, m, oh, ow], &expect);
}
