//! Shape inference, binding and folding tests with hand-computed shapes.

use super::*;
use crate::ir::{Activation, AutoPad, ConvAttrs, OriginNode, PadMode, PoolAttrs};

/// A small graph builder for tests.
#[derive(Default)]
struct B {
    g: Graph,
}

fn sym(s: &str) -> Dim {
    Dim::Symbol(s.into())
}

fn fx(n: usize) -> Dim {
    Dim::Fixed(n)
}

impl B {
    fn input(&mut self, name: &str, dims: Vec<Dim>) -> ValueId {
        let id = self.g.add_value(name, Some(DType::F32), Some(dims));
        self.g.inputs.push(id);
        id
    }

    fn fixed_input(&mut self, name: &str, dims: &[usize]) -> ValueId {
        self.input(name, dims.iter().map(|&d| fx(d)).collect())
    }

    fn ints(&mut self, name: &str, v: &[i64]) -> ValueId {
        let t = Tensor::from_i64(&[v.len()], v.to_vec()).unwrap();
        self.g.add_constant(name, t)
    }

    fn zeros(&mut self, name: &str, shape: &[usize]) -> ValueId {
        self.g.add_constant(name, Tensor::zeros(DType::F32, shape))
    }

    fn node(&mut self, name: &str, op: Op, inputs: &[Option<ValueId>]) -> ValueId {
        self.node_n(name, op, inputs, 1)[0]
    }

    fn node_n(&mut self, name: &str, op: Op, inputs: &[Option<ValueId>], n: usize) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = (0..n)
            .map(|k| self.g.add_value(format!("{name}_out{k}"), None, None))
            .collect();
        let op_type = op.type_name().to_string();
        self.g.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
            origin: vec![OriginNode {
                name: name.into(),
                op_type,
            }],
        });
        outputs
    }

    fn bind(mut self, outputs: &[ValueId], spec: &BindSpec) -> Result<Graph> {
        self.g.outputs = outputs.to_vec();
        bind(&self.g, spec)
    }
}

fn shape_of(g: &Graph, name: &str) -> Vec<usize> {
    g.value(
        g.find_value(name)
            .unwrap_or_else(|| panic!("no value {name}")),
    )
    .fixed_shape()
    .unwrap()
}

fn node_err(r: Result<Graph>) -> (String, String, String) {
    match r {
        Err(Error::Node { node, op, message }) => (node, op, message),
        other => panic!("expected a node error, got {other:?}"),
    }
}

fn conv_attrs() -> ConvAttrs {
    ConvAttrs {
        kernel_shape: None,
        strides: vec![],
        pads: vec![],
        dilations: vec![],
        group: 1,
        auto_pad: AutoPad::NotSet,
    }
}

fn pool_attrs(k: &[usize]) -> PoolAttrs {
    PoolAttrs {
        kernel_shape: k.to_vec(),
        strides: vec![],
        pads: vec![],
        dilations: vec![],
        ceil_mode: false,
        auto_pad: AutoPad::NotSet,
        count_include_pad: false,
    }
}

fn spec() -> BindSpec {
    BindSpec::default()
}

/// ResNet-50-like stem and a downsampling block, batch from a symbolic leading dim.
fn resnet_like(batch: Option<usize>) -> Graph {
    let mut b = B::default();
    let x = b.input("x", vec![sym("N"), fx(3), fx(224), fx(224)]);
    let w1 = b.zeros("w1", &[64, 3, 7, 7]);
    let c1 = b.node(
        "conv1",
        Op::Conv(ConvAttrs {
            strides: vec![2, 2],
            pads: vec![3, 3, 3, 3],
            ..conv_attrs()
        }),
        &[Some(x), Some(w1)],
    );
    let (s, bb, m, v) = (
        b.zeros("s", &[64]),
        b.zeros("bb", &[64]),
        b.zeros("m", &[64]),
        b.zeros("v", &[64]),
    );
    let bn = b.node(
        "bn1",
        Op::BatchNormalization { epsilon: 1e-5 },
        &[Some(c1), Some(s), Some(bb), Some(m), Some(v)],
    );
    let r = b.node("relu1", Op::Relu, &[Some(bn)]);
    let mp = b.node(
        "pool1",
        Op::MaxPool(PoolAttrs {
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            ..pool_attrs(&[3, 3])
        }),
        &[Some(r)],
    );
    let w2 = b.zeros("w2", &[256, 64, 1, 1]);
    let bias2 = b.zeros("b2", &[256]);
    let c2 = b.node(
        "conv2",
        Op::Conv(conv_attrs()),
        &[Some(mp), Some(w2), Some(bias2)],
    );
    let w3 = b.zeros("w3", &[128, 256, 3, 3]);
    let c3 = b.node(
        "conv3",
        Op::Conv(ConvAttrs {
            strides: vec![2, 2],
            auto_pad: AutoPad::SameUpper,
            kernel_shape: Some(vec![3, 3]),
            ..conv_attrs()
        }),
        &[Some(c2), Some(w3)],
    );
    let w4 = b.zeros("w4", &[128, 256, 1, 1]);
    let c4 = b.node(
        "down",
        Op::Conv(ConvAttrs {
            strides: vec![2, 2],
            ..conv_attrs()
        }),
        &[Some(c2), Some(w4)],
    );
    let add = b.node("add", Op::Add, &[Some(c3), Some(c4)]);
    let gap = b.node("gap", Op::GlobalAveragePool, &[Some(add)]);
    let fl = b.node("flat", Op::Flatten { axis: 1 }, &[Some(gap)]);
    let fcw = b.zeros("fcw", &[10, 128]);
    let fcb = b.zeros("fcb", &[10]);
    let fc = b.node(
        "fc",
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        &[Some(fl), Some(fcw), Some(fcb)],
    );
    b.bind(&[fc], &BindSpec { batch, ..spec() }).unwrap()
}

#[test]
fn resnet_style_chain_shapes_and_canonical_attrs() {
    let g = resnet_like(None);
    assert_eq!(shape_of(&g, "x"), vec![1, 3, 224, 224]);
    assert_eq!(shape_of(&g, "conv1_out0"), vec![1, 64, 112, 112]);
    assert_eq!(shape_of(&g, "bn1_out0"), vec![1, 64, 112, 112]);
    assert_eq!(shape_of(&g, "pool1_out0"), vec![1, 64, 56, 56]);
    assert_eq!(shape_of(&g, "conv2_out0"), vec![1, 256, 56, 56]);
    assert_eq!(shape_of(&g, "conv3_out0"), vec![1, 128, 28, 28]);
    assert_eq!(shape_of(&g, "down_out0"), vec![1, 128, 28, 28]);
    assert_eq!(shape_of(&g, "gap_out0"), vec![1, 128, 1, 1]);
    assert_eq!(shape_of(&g, "flat_out0"), vec![1, 128]);
    assert_eq!(shape_of(&g, "fc_out0"), vec![1, 10]);
    assert!(g
        .values
        .iter()
        .all(|v| v.dtype == Some(DType::F32) && v.fixed_shape().is_some()));

    let op = |name: &str| g.nodes.iter().find(|n| n.name == name).unwrap().op.clone();
    assert_eq!(
        op("conv1"),
        Op::Conv(ConvAttrs {
            kernel_shape: Some(vec![7, 7]),
            strides: vec![2, 2],
            pads: vec![3, 3, 3, 3],
            dilations: vec![1, 1],
            group: 1,
            auto_pad: AutoPad::NotSet
        })
    );
    // SAME_UPPER on 56 with k3 s2: out 28, total pad (28-1)*2+3-56 = 1, at the end.
    assert_eq!(
        op("conv3"),
        Op::Conv(ConvAttrs {
            kernel_shape: Some(vec![3, 3]),
            strides: vec![2, 2],
            pads: vec![0, 0, 1, 1],
            dilations: vec![1, 1],
            group: 1,
            auto_pad: AutoPad::NotSet
        })
    );
    match op("pool1") {
        Op::MaxPool(p) => {
            assert_eq!(
                (p.strides, p.pads, p.dilations, p.auto_pad),
                (vec![2, 2], vec![1, 1, 1, 1], vec![1, 1], AutoPad::NotSet)
            )
        }
        other => panic!("{other:?}"),
    }

    let g4 = resnet_like(Some(4));
    assert_eq!(shape_of(&g4, "x"), vec![4, 3, 224, 224]);
    assert_eq!(shape_of(&g4, "fc_out0"), vec![4, 10]);
}

#[test]
fn same_lower_valid_and_ceil_mode_pools() {
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 2, 8, 8]);
    let lower = b.node(
        "lower",
        Op::AveragePool(PoolAttrs {
            strides: vec![2, 2],
            auto_pad: AutoPad::SameLower,
            ..pool_attrs(&[3, 3])
        }),
        &[Some(x)],
    );
    let valid = b.node(
        "valid",
        Op::MaxPool(PoolAttrs {
            strides: vec![2, 2],
            auto_pad: AutoPad::Valid,
            ..pool_attrs(&[3, 3])
        }),
        &[Some(x)],
    );
    let y = b.fixed_input("y", &[1, 1, 112, 6]);
    let ceil = b.node(
        "ceil",
        Op::MaxPool(PoolAttrs {
            strides: vec![2, 2],
            pads: vec![0, 0, 0, 1],
            ceil_mode: true,
            ..pool_attrs(&[3, 2])
        }),
        &[Some(y)],
    );
    let floor = b.node(
        "floor",
        Op::MaxPool(PoolAttrs {
            strides: vec![2, 2],
            ..pool_attrs(&[3, 2])
        }),
        &[Some(y)],
    );
    let dil = b.node(
        "dil",
        Op::MaxPool(PoolAttrs {
            dilations: vec![2, 1],
            ..pool_attrs(&[3, 1])
        }),
        &[Some(x)],
    );
    let g = b.bind(&[lower, valid, ceil, floor, dil], &spec()).unwrap();
    // SAME_LOWER, 8 with k3 s2: out 4, total pad 1, at the beginning.
    assert_eq!(shape_of(&g, "lower_out0"), vec![1, 2, 4, 4]);
    match &g.nodes[0].op {
        Op::AveragePool(p) => {
            assert_eq!((&p.pads, p.auto_pad), (&vec![1, 1, 0, 0], AutoPad::NotSet))
        }
        other => panic!("{other:?}"),
    }
    // VALID: floor((8-3)/2)+1 = 3.
    assert_eq!(shape_of(&g, "valid_out0"), vec![1, 2, 3, 3]);
    // Axis 0: 112 k3 s2 ceil -> 56 (floor 55); axis 1: 6 k2 s2 pad_end 1 -> ceil gives 4 but the
    // last window starts in the padding -> 3.
    assert_eq!(shape_of(&g, "ceil_out0"), vec![1, 1, 56, 3]);
    assert_eq!(shape_of(&g, "floor_out0"), vec![1, 1, 55, 3]);
    // Dilation 2 on k3: covers 5 cells, 8-5+1 = 4.
    assert_eq!(shape_of(&g, "dil_out0"), vec![1, 2, 4, 8]);
}

#[test]
fn conv_errors_name_values_and_expectations() {
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 4, 8, 8]);
    let w = b.zeros("w", &[8, 3, 3, 3]);
    let y = b.node("c", Op::Conv(conv_attrs()), &[Some(x), Some(w)]);
    let (node, op, msg) = node_err(b.bind(&[y], &spec()));
    assert_eq!((node.as_str(), op.as_str()), ("c", "Conv"));
    assert_eq!(
        msg,
        "weight 'w' expects 3 input channels per group (group 1) but input 'x' has 4 channels"
    );

    // Depthwise: group 4 with 1 channel per group is fine; dilation 2 on k3 -> 8-5+1 = 4.
    let mut b = B::default();
    let x = b.fixed_input("x", &[2, 4, 8, 8]);
    let w = b.zeros("w", &[4, 1, 3, 3]);
    let y = b.node(
        "dw",
        Op::Conv(ConvAttrs {
            group: 4,
            dilations: vec![2, 2],
            ..conv_attrs()
        }),
        &[Some(x), Some(w)],
    );
    assert_eq!(
        shape_of(&b.bind(&[y], &spec()).unwrap(), "dw_out0"),
        vec![2, 4, 4, 4]
    );

    // Kernel larger than the input.
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 1, 2, 2]);
    let w = b.zeros("w", &[1, 1, 3, 3]);
    let y = b.node("c", Op::Conv(conv_attrs()), &[Some(x), Some(w)]);
    assert!(node_err(b.bind(&[y], &spec())).2.contains("does not fit"));

    // Zero-size spatial dimension.
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 1, 0, 5]);
    let w = b.zeros("w", &[1, 1, 1, 1]);
    let y = b.node("c", Op::Conv(conv_attrs()), &[Some(x), Some(w)]);
    assert!(node_err(b.bind(&[y], &spec()))
        .2
        .contains("nothing to compute"));

    // kernel_shape disagreeing with the weight.
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 1, 5, 5]);
    let w = b.zeros("w", &[1, 1, 3, 3]);
    let y = b.node(
        "c",
        Op::Conv(ConvAttrs {
            kernel_shape: Some(vec![2, 2]),
            ..conv_attrs()
        }),
        &[Some(x), Some(w)],
    );
    assert!(node_err(b.bind(&[y], &spec())).2.contains("kernel_shape"));

    // Pool padding as large as the kernel.
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 1, 5, 5]);
    let y = b.node(
        "p",
        Op::MaxPool(PoolAttrs {
            pads: vec![2, 2, 2, 2],
            ..pool_attrs(&[2, 2])
        }),
        &[Some(x)],
    );
    assert!(node_err(b.bind(&[y], &spec()))
        .2
        .contains("smaller than the kernel"));
}

#[test]
fn fused_conv_is_canonicalised_and_checks_residual() {
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 3, 9, 9]);
    let w = b.zeros("w", &[6, 3, 3, 3]);
    let res = b.fixed_input("res", &[1, 6, 5, 5]);
    let fused = Op::FusedConv {
        conv: ConvAttrs {
            strides: vec![2, 2],
            auto_pad: AutoPad::SameUpper,
            ..conv_attrs()
        },
        activation: Activation::Relu,
        has_residual: true,
    };
    let y = b.node("f", fused.clone(), &[Some(x), Some(w), None, Some(res)]);
    let g = b.bind(&[y], &spec()).unwrap();
    assert_eq!(shape_of(&g, "f_out0"), vec![1, 6, 5, 5]);
    match &g.nodes[0].op {
        // 9 with k3 s2: out 5, total (5-1)*2+3-9 = 2 -> (1, 1).
        Op::FusedConv { conv, .. } => assert_eq!(
            conv,
            &ConvAttrs {
                kernel_shape: Some(vec![3, 3]),
                strides: vec![2, 2],
                pads: vec![1, 1, 1, 1],
                dilations: vec![1, 1],
                group: 1,
                auto_pad: AutoPad::NotSet
            }
        ),
        other => panic!("{other:?}"),
    }

    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 3, 9, 9]);
    let w = b.zeros("w", &[6, 3, 3, 3]);
    let res = b.fixed_input("res", &[1, 6, 9, 9]);
    let y = b.node("f", fused, &[Some(x), Some(w), None, Some(res)]);
    assert!(node_err(b.bind(&[y], &spec())).2.contains("residual 'res'"));
}

#[test]
fn broadcasting_and_elementwise() {
    let mut b = B::default();
    let a = b.fixed_input("a", &[2, 1, 4]);
    let c = b.fixed_input("c", &[3, 1]);
    let s = b.fixed_input("s", &[]);
    let add = b.node("add", Op::Add, &[Some(a), Some(c)]);
    let mul = b.node("mul", Op::Mul, &[Some(add), Some(s)]);
    let sum = b.node("sum", Op::Sum, &[Some(a), Some(c), Some(mul)]);
    let g = b.bind(&[sum], &spec()).unwrap();
    assert_eq!(shape_of(&g, "add_out0"), vec![2, 3, 4]);
    assert_eq!(shape_of(&g, "mul_out0"), vec![2, 3, 4]);
    assert_eq!(shape_of(&g, "sum_out0"), vec![2, 3, 4]);
    assert_eq!(broadcast_shapes(&[5, 1, 3], &[4, 1]), Some(vec![5, 4, 3]));
    assert_eq!(broadcast_shapes(&[2, 3], &[4, 3]), None);

    let mut b = B::default();
    let a = b.fixed_input("a", &[2, 3]);
    let c = b.fixed_input("c", &[4, 3]);
    let y = b.node("sub", Op::Sub, &[Some(a), Some(c)]);
    let (_, _, msg) = node_err(b.bind(&[y], &spec()));
    assert_eq!(
        msg,
        "cannot broadcast input 'c' of shape [4, 3] with shape [2, 3]"
    );
}

#[test]
fn shape_ops_with_constant_operands() {
    let mut b = B::default();
    let x = b.fixed_input("x", &[2, 3, 4, 5]);
    let s1 = b.ints("s1", &[0, -1]);
    let r1 = b.node("r1", Op::Reshape { allowzero: false }, &[Some(x), Some(s1)]);
    let s2 = b.ints("s2", &[-1, 0, 5]);
    let r2 = b.node("r2", Op::Reshape { allowzero: false }, &[Some(x), Some(s2)]);
    let t = b.node(
        "t",
        Op::Transpose {
            perm: Some(vec![0, 2, 3, 1]),
        },
        &[Some(x)],
    );
    let trev = b.node("trev", Op::Transpose { perm: None }, &[Some(x)]);
    let f0 = b.node("f0", Op::Flatten { axis: 0 }, &[Some(x)]);
    let f2 = b.node("f2", Op::Flatten { axis: -2 }, &[Some(x)]);
    let cat = b.node("cat", Op::Concat { axis: -3 }, &[Some(x), Some(x)]);
    let idx = b.ints("idx", &[2, 0]);
    let gat = b.node("gat", Op::Gather { axis: 2 }, &[Some(x), Some(idx)]);
    let rm = b.ints("rm_axes", &[2, 3]);
    let red = b.node(
        "red",
        Op::ReduceMean {
            keepdims: true,
            noop_with_empty_axes: false,
        },
        &[Some(x), Some(rm)],
    );
    let red2 = b.node(
        "red2",
        Op::ReduceMean {
            keepdims: false,
            noop_with_empty_axes: false,
        },
        &[Some(x), Some(rm)],
    );
    let red_all = b.node(
        "red_all",
        Op::ReduceMean {
            keepdims: false,
            noop_with_empty_axes: false,
        },
        &[Some(x)],
    );
    let red_noop = b.node(
        "red_noop",
        Op::ReduceMean {
            keepdims: true,
            noop_with_empty_axes: true,
        },
        &[Some(x)],
    );
    let cast = b.node("cast", Op::Cast { to: DType::I64 }, &[Some(x)]);
    let sm = b.node(
        "sm",
        Op::Softmax {
            axis: -1,
            legacy: false,
        },
        &[Some(x)],
    );
    let drop = b.node_n("drop", Op::Dropout, &[Some(x)], 2);
    let outs = [
        r1, r2, t, trev, f0, f2, cat, gat, red, red2, red_all, red_noop, cast, sm, drop[0], drop[1],
    ];
    let g = b.bind(&outs, &spec()).unwrap();
    assert_eq!(shape_of(&g, "r1_out0"), vec![2, 60]);
    assert_eq!(shape_of(&g, "r2_out0"), vec![8, 3, 5]);
    assert_eq!(shape_of(&g, "t_out0"), vec![2, 4, 5, 3]);
    assert_eq!(shape_of(&g, "trev_out0"), vec![5, 4, 3, 2]);
    assert_eq!(shape_of(&g, "f0_out0"), vec![1, 120]);
    assert_eq!(shape_of(&g, "f2_out0"), vec![6, 20]);
    assert_eq!(shape_of(&g, "cat_out0"), vec![2, 6, 4, 5]);
    assert_eq!(shape_of(&g, "gat_out0"), vec![2, 3, 2, 5]);
    assert_eq!(shape_of(&g, "red_out0"), vec![2, 3, 1, 1]);
    assert_eq!(shape_of(&g, "red2_out0"), vec![2, 3]);
    assert_eq!(shape_of(&g, "red_all_out0"), Vec::<usize>::new());
    assert_eq!(shape_of(&g, "red_noop_out0"), vec![2, 3, 4, 5]);
    assert_eq!(
        g.value(g.find_value("cast_out0").unwrap()).dtype,
        Some(DType::I64)
    );
    assert_eq!(shape_of(&g, "sm_out0"), vec![2, 3, 4, 5]);
    assert_eq!(shape_of(&g, "drop_out1"), vec![2, 3, 4, 5]);
    assert_eq!(
        g.value(g.find_value("drop_out1").unwrap()).dtype,
        Some(DType::Bool)
    );
}

#[test]
fn squeeze_unsqueeze_slice_pad_gather_matmul_gemm() {
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 3, 1, 5]);
    let sq_axes = b.ints("sq_axes", &[0, -2]);
    let sq = b.node("sq", Op::Squeeze, &[Some(x), Some(sq_axes)]);
    let sq_all = b.node("sq_all", Op::Squeeze, &[Some(x)]);
    let un_axes = b.ints("un_axes", &[0, 3]);
    let un = b.node("un", Op::Unsqueeze, &[Some(sq), Some(un_axes)]);

    let y = b.fixed_input("y", &[10, 20]);
    let (st, en, ax, sp) = (
        b.ints("st", &[1, -5]),
        b.ints("en", &[i64::MAX, -1]),
        b.ints("ax", &[0, 1]),
        b.ints("sp", &[2, 1]),
    );
    let sl = b.node(
        "sl",
        Op::Slice,
        &[Some(y), Some(st), Some(en), Some(ax), Some(sp)],
    );
    let (st2, en2, ax2, sp2) = (
        b.ints("st2", &[-1]),
        b.ints("en2", &[i64::MIN]),
        b.ints("ax2", &[-1]),
        b.ints("sp2", &[-3]),
    );
    let sl2 = b.node(
        "sl2",
        Op::Slice,
        &[Some(y), Some(st2), Some(en2), Some(ax2), Some(sp2)],
    );
    let (st3, en3) = (b.ints("st3", &[30]), b.ints("en3", &[40]));
    let sl3 = b.node("sl3", Op::Slice, &[Some(y), Some(st3), Some(en3)]);

    let z = b.fixed_input("z", &[1, 3, 10, 10]);
    let pads = b.ints("pads", &[0, 0, 1, -2, 0, 0, 2, -3]);
    let pd = b.node(
        "pd",
        Op::Pad {
            mode: PadMode::Constant,
        },
        &[Some(z), Some(pads)],
    );
    let pads_ax = b.ints("pads_ax", &[1, 2]);
    let pd_axes = b.ints("pd_axes", &[-1]);
    let pd2 = b.node(
        "pd2",
        Op::Pad {
            mode: PadMode::Reflect,
        },
        &[Some(z), Some(pads_ax), None, Some(pd_axes)],
    );

    let ix = b.g.add_constant(
        "ix",
        Tensor::from_i64(&[2, 3], vec![0, 1, 2, 3, 4, -1]).unwrap(),
    );
    let ga = b.node("ga", Op::Gather { axis: 1 }, &[Some(y), Some(ix)]);
    let ix0 =
        b.g.add_constant("ix0", Tensor::from_i64(&[], vec![4]).unwrap());
    let ga0 = b.node("ga0", Op::Gather { axis: 0 }, &[Some(y), Some(ix0)]);

    let m3 = b.fixed_input("m3", &[2, 3, 4]);
    let m2 = b.fixed_input("m2", &[4, 5]);
    let v4 = b.fixed_input("v4", &[4]);
    let mm = b.node("mm", Op::MatMul, &[Some(m3), Some(m2)]);
    let mv = b.node("mv", Op::MatMul, &[Some(v4), Some(m2)]);
    let mv2 = b.node("mv2", Op::MatMul, &[Some(m3), Some(v4)]);
    let ga_ = b.fixed_input("ga_", &[4, 7]);
    let gb_ = b.fixed_input("gb_", &[5, 4]);
    let gc_ = b.fixed_input("gc_", &[5]);
    let gm = b.node(
        "gm",
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: true,
            trans_b: true,
        },
        &[Some(ga_), Some(gb_), Some(gc_)],
    );

    let shp = b.fixed_input("shp", &[2, 3, 4, 5]);
    let sh = b.node(
        "sh",
        Op::Shape {
            start: 1,
            end: Some(-1),
        },
        &[Some(shp)],
    );
    let outs = [
        sq_all, un, sl, sl2, sl3, pd, pd2, ga, ga0, mm, mv, mv2, gm, sh,
    ];
    let g = b.bind(&outs, &spec()).unwrap();
    assert_eq!(shape_of(&g, "sq_out0"), vec![3, 5]);
    assert_eq!(shape_of(&g, "sq_all_out0"), vec![3, 5]);
    assert_eq!(shape_of(&g, "un_out0"), vec![1, 3, 5, 1]);
    // Rows 1,3,5,7,9; columns 15..19.
    assert_eq!(shape_of(&g, "sl_out0"), vec![5, 4]);
    // Columns 19,16,13,10,7,4,1.
    assert_eq!(shape_of(&g, "sl2_out0"), vec![10, 7]);
    // Start past the end clamps to an empty slice.
    assert_eq!(shape_of(&g, "sl3_out0"), vec![0, 20]);
    // 10 + 1 + 2 = 13 rows; 10 - 2 - 3 = 5 columns.
    assert_eq!(shape_of(&g, "pd_out0"), vec![1, 3, 13, 5]);
    assert_eq!(shape_of(&g, "pd2_out0"), vec![1, 3, 10, 13]);
    assert_eq!(shape_of(&g, "ga_out0"), vec![10, 2, 3]);
    assert_eq!(shape_of(&g, "ga0_out0"), vec![20]);
    assert_eq!(shape_of(&g, "mm_out0"), vec![2, 3, 5]);
    assert_eq!(shape_of(&g, "mv_out0"), vec![5]);
    assert_eq!(shape_of(&g, "mv2_out0"), vec![2, 3]);
    assert_eq!(shape_of(&g, "gm_out0"), vec![7, 5]);
    // Shape is folded: [3, 4] as a constant output.
    let sh_id = g.find_value("sh_out0").unwrap();
    assert_eq!(g.constants[&sh_id].to_i64_vec(), Some(vec![3, 4]));
    assert!(g.nodes.iter().all(|n| n.name != "sh"));

    assert_eq!(slice_len(10, 0, i64::MAX, 1), 10);
    assert_eq!(slice_len(10, -100, 3, 1), 3);
    assert_eq!(slice_len(10, 5, 2, 1), 0);
    assert_eq!(slice_len(10, i64::MAX, i64::MIN, -1), 10);
    assert_eq!(slice_len(10, 8, 2, -2), 3);
}

#[test]
fn shape_op_errors() {
    let cases: Vec<(Op, Vec<i64>, &str)> = vec![
        (
            Op::Reshape { allowzero: false },
            vec![7, -1],
            "cannot reshape input 'x'",
        ),
        (
            Op::Reshape { allowzero: false },
            vec![-1, -1],
            "more than one -1",
        ),
        (Op::Squeeze, vec![1], "cannot squeeze axis 1"),
        (Op::Unsqueeze, vec![0, 0], "repeat axis 0"),
        (
            Op::Pad {
                mode: PadMode::Constant,
            },
            vec![0, -7, 0, 0],
            "remove more than",
        ),
        (
            Op::Pad {
                mode: PadMode::Reflect,
            },
            vec![0, 6, 0, 0],
            "must be smaller than",
        ),
    ];
    for (op, v, want) in cases {
        let mut b = B::default();
        let x = b.fixed_input("x", &[2, 6]);
        let k = b.ints("k", &v);
        let y = b.node("n", op, &[Some(x), Some(k)]);
        let (_, _, msg) = node_err(b.bind(&[y], &spec()));
        assert!(msg.contains(want), "{msg} should contain {want}");
    }
    // A run-time (non-constant) shape input is refused with a clear message.
    let mut b = B::default();
    let x = b.fixed_input("x", &[2, 6]);
    let s = b.input("s", vec![fx(2)]);
    let y = b.node("r", Op::Reshape { allowzero: false }, &[Some(x), Some(s)]);
    assert!(node_err(b.bind(&[y], &spec()))
        .2
        .contains("must be a constant"));
    // Gather index out of range.
    let mut b = B::default();
    let x = b.fixed_input("x", &[2, 6]);
    let k = b.ints("k", &[6]);
    let y = b.node("g", Op::Gather { axis: 1 }, &[Some(x), Some(k)]);
    assert!(node_err(b.bind(&[y], &spec()))
        .2
        .contains("index 6 is out of range"));
}

#[test]
fn shape_node_is_folded_and_dead_nodes_removed() {
    let mut b = B::default();
    let x = b.input("x", vec![sym("batch"), fx(6)]);
    let y = b.input("y", vec![sym("batch"), fx(2), fx(3)]);
    let s = b.node(
        "shape",
        Op::Shape {
            start: 0,
            end: None,
        },
        &[Some(x)],
    );
    let r = b.node(
        "reshape",
        Op::Reshape { allowzero: false },
        &[Some(y), Some(s)],
    );
    let _dead = b.node("dead", Op::Relu, &[Some(x)]);
    let out = b.node("relu", Op::Relu, &[Some(r)]);
    let g = b
        .bind(
            &[out],
            &BindSpec {
                batch: Some(2),
                ..spec()
            },
        )
        .unwrap();
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["reshape", "relu"]);
    let shape_in = g.nodes[0].inputs[1].unwrap();
    assert_eq!(g.constants[&shape_in].to_i64_vec(), Some(vec![2, 6]));
    assert_eq!(shape_of(&g, "relu_out0"), vec![2, 6]);
    // Only the folded shape tensor is left as a constant; dead values are gone.
    assert_eq!(g.constants.len(), 1);
    assert!(g.find_value("dead_out0").is_none());
    assert_eq!(g.inputs.len(), 2);
}

/// The exporter shape chain `Shape → Gather → Unsqueeze → Concat → Reshape` collapses to a
/// single Reshape with a constant shape. Needs `ops::eval` for Gather/Unsqueeze/Concat.
#[test]
fn exporter_shape_chain_collapses() {
    let mut b = B::default();
    let x = b.input("x", vec![sym("N"), fx(3), fx(4), fx(4)]);
    let s = b.node(
        "shape",
        Op::Shape {
            start: 0,
            end: None,
        },
        &[Some(x)],
    );
    let zero =
        b.g.add_constant("zero", Tensor::from_i64(&[], vec![0]).unwrap());
    let n = b.node("gather", Op::Gather { axis: 0 }, &[Some(s), Some(zero)]);
    let ax = b.ints("ax", &[0]);
    let n1 = b.node("unsq", Op::Unsqueeze, &[Some(n), Some(ax)]);
    let minus1 = b.ints("minus1", &[-1]);
    let cat = b.node("concat", Op::Concat { axis: 0 }, &[Some(n1), Some(minus1)]);
    let r = b.node(
        "reshape",
        Op::Reshape { allowzero: false },
        &[Some(x), Some(cat)],
    );
    let g = b
        .bind(
            &[r],
            &BindSpec {
                batch: Some(5),
                ..spec()
            },
        )
        .unwrap();
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].name, "reshape");
    let shape_in = g.nodes[0].inputs[1].unwrap();
    assert_eq!(g.constants[&shape_in].to_i64_vec(), Some(vec![5, -1]));
    assert_eq!(shape_of(&g, "reshape_out0"), vec![5, 48]);
}

#[test]
fn symbolic_binding() {
    let two = || {
        let mut b = B::default();
        let a = b.input("a", vec![sym("N"), fx(3)]);
        let c = b.input("c", vec![sym("N"), fx(5), sym("L")]);
        b.g.outputs = vec![a, c];
        b.g
    };
    // L is not a leading dim: error names the input and symbol and suggests --input-shape.
    match bind(
        &two(),
        &BindSpec {
            batch: Some(3),
            ..spec()
        },
    ) {
        Err(Error::Input { name, message }) => {
            assert_eq!(name, "c");
            assert!(
                message.contains("'L'") && message.contains("--input-shape"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Giving c explicitly binds N for a as well.
    let shapes = HashMap::from([("c".to_string(), vec![7, 5, 9])]);
    let g = bind(&two(), &BindSpec { shapes, ..spec() }).unwrap();
    assert_eq!(shape_of(&g, "a"), vec![7, 3]);
    assert_eq!(shape_of(&g, "c"), vec![7, 5, 9]);
    // Rank mismatch and unknown names.
    let shapes = HashMap::from([("c".to_string(), vec![7, 5])]);
    assert!(
        matches!(bind(&two(), &BindSpec { shapes, ..spec() }), Err(Error::Input { name, .. }) if name == "c")
    );
    let shapes = HashMap::from([("nope".to_string(), vec![1])]);
    match bind(&two(), &BindSpec { shapes, ..spec() }) {
        Err(Error::Input { name, message }) => {
            assert!(name == "nope" && message.contains("a, c"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // Unknown leading dim (imported as unk_x_0) takes the batch; a fixed one refuses another batch.
    let mut b = B::default();
    let x = b.input("x", vec![sym("unk_x_0"), fx(2)]);
    b.g.outputs = vec![x];
    assert_eq!(
        shape_of(
            &bind(
                &b.g,
                &BindSpec {
                    batch: Some(6),
                    ..spec()
                }
            )
            .unwrap(),
            "x"
        ),
        vec![6, 2]
    );
    assert_eq!(shape_of(&bind(&b.g, &spec()).unwrap(), "x"), vec![1, 2]);
    // A fixed leading 1 takes an explicit batch when the outputs follow it...
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 2]);
    let r = b.node("r", Op::Relu, &[Some(x)]);
    b.g.outputs = vec![r];
    assert_eq!(
        shape_of(&bind(&b.g, &spec()).unwrap(), "r_out0"),
        vec![1, 2]
    );
    assert_eq!(
        shape_of(
            &bind(
                &b.g,
                &BindSpec {
                    batch: Some(4),
                    ..spec()
                }
            )
            .unwrap(),
            "r_out0"
        ),
        vec![4, 2]
    );
    // ...but not when the model hard-codes batch 1 in a Reshape.
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 2, 3]);
    let s = b.ints("s", &[1, -1]);
    let r = b.node("r", Op::Reshape { allowzero: false }, &[Some(x), Some(s)]);
    b.g.outputs = vec![r];
    match bind(
        &b.g,
        &BindSpec {
            batch: Some(4),
            ..spec()
        },
    ) {
        Err(Error::Input { name, message }) => {
            assert!(
                name == "x" && message.contains("batch 4") && message.contains("[1, 24]"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A hard-coded batch that breaks inference is reported with the likely cause.
    let mut b = B::default();
    let x = b.fixed_input("x", &[1, 2, 3]);
    let s = b.ints("s", &[1, 6]);
    let r = b.node("r", Op::Reshape { allowzero: false }, &[Some(x), Some(s)]);
    b.g.outputs = vec![r];
    let (_, _, msg) = node_err(bind(
        &b.g,
        &BindSpec {
            batch: Some(4),
            ..spec()
        },
    ));
    assert!(
        msg.contains("cannot reshape") && msg.contains("exported with batch 1"),
        "{msg}"
    );
    // A fixed leading size other than 1 is a real constraint.
    let mut b = B::default();
    let x = b.fixed_input("x", &[3, 2]);
    b.g.outputs = vec![x];
    assert!(bind(
        &b.g,
        &BindSpec {
            batch: Some(3),
            ..spec()
        }
    )
    .is_ok());
    match bind(
        &b.g,
        &BindSpec {
            batch: Some(4),
            ..spec()
        },
    ) {
        Err(Error::Input { name, message }) => {
            assert!(name == "x" && message.contains("batch 4"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // An input without any declared shape needs an explicit one.
    let mut b = B::default();
    let x = b.g.add_value("x", Some(DType::F32), None);
    b.g.inputs.push(x);
    b.g.outputs = vec![x];
    assert!(matches!(bind(&b.g, &spec()), Err(Error::Input { .. })));
    let shapes = HashMap::from([("x".to_string(), vec![2, 2])]);
    assert_eq!(
        shape_of(&bind(&b.g, &BindSpec { shapes, ..spec() }).unwrap(), "x"),
        vec![2, 2]
    );
}

#[test]
fn memory_limit_refuses_before_allocating() {
    // ConstantOfShape of 10^12 elements: must be refused by the element check, never evaluated.
    let mut b = B::default();
    let s = b.ints("s", &[1_000_000, 1_000_000]);
    let y = b.node(
        "big",
        Op::ConstantOfShape {
            value: Tensor::scalar_f32(0.0),
        },
        &[Some(s)],
    );
    match b.bind(
        &[y],
        &BindSpec {
            max_elements: Some(1 << 30),
            ..spec()
        },
    ) {
        Err(Error::MemoryLimit {
            what,
            requested,
            limit,
        }) => {
            assert!(
                what.contains("'big_out0'") && what.contains("'big'"),
                "{what}"
            );
            assert_eq!(requested, 4_000_000_000_000);
            assert_eq!(limit, 4 << 30);
        }
        other => panic!("{other:?}"),
    }
    // Without a limit, a size no allocation can hold is still refused (2^62 f32 = 2^64 bytes).
    let mut b = B::default();
    let s = b.ints("s", &[1 << 31, 1 << 31]);
    let y = b.node(
        "huge",
        Op::ConstantOfShape {
            value: Tensor::scalar_f32(0.0),
        },
        &[Some(s)],
    );
    assert!(matches!(
        b.bind(&[y], &spec()),
        Err(Error::MemoryLimit { .. })
    ));
    // Inputs and intermediate values are checked too.
    let mut b = B::default();
    let x = b.fixed_input("x", &[10, 10]);
    let r = b.node("r", Op::Relu, &[Some(x)]);
    assert!(matches!(
        b.bind(
            &[r],
            &BindSpec {
                max_elements: Some(99),
                ..spec()
            }
        ),
        Err(Error::MemoryLimit { .. })
    ));
    let mut b = B::default();
    let x = b.fixed_input("x", &[10, 10]);
    let z = b.zeros("z", &[3, 10, 10]);
    let r = b.node("add", Op::Add, &[Some(x), Some(z)]);
    match b.bind(
        &[r],
        &BindSpec {
            max_elements: Some(100),
            ..spec()
        },
    ) {
        Err(Error::MemoryLimit { what, .. }) => assert!(what.contains("'add_out0'"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_then_bind() {
    use onnx_import::{
        Attribute, DimDecl, ElemType, OnnxGraph, OnnxModel, OnnxNode, TensorData, TensorValues,
        ValueDecl,
    };
    let conv = OnnxNode {
        name: "conv".into(),
        op_type: "Conv".into(),
        domain: String::new(),
        inputs: vec!["x".into(), "w".into()],
        outputs: vec!["y".into()],
        attributes: [(
            "auto_pad".to_string(),
            Attribute::String("SAME_UPPER".into()),
        )]
        .into_iter()
        .collect(),
    };
    let model = OnnxModel {
        opset: 13,
        graph: OnnxGraph {
            inputs: vec![ValueDecl {
                name: "x".into(),
                elem_type: Some(ElemType::Float),
                shape: Some(vec![
                    DimDecl::Unknown,
                    DimDecl::Fixed(2),
                    DimDecl::Fixed(5),
                    DimDecl::Fixed(5),
                ]),
            }],
            outputs: vec![ValueDecl {
                name: "y".into(),
                elem_type: Some(ElemType::Float),
                shape: None,
            }],
            initializers: vec![TensorData {
                name: "w".into(),
                dims: vec![4, 2, 2, 2],
                values: TensorValues::F32(vec![1.0; 32]),
            }],
            nodes: vec![conv],
            ..OnnxGraph::default()
        },
        ..OnnxModel::default()
    };
    let g = crate::import::graph_from_onnx(&model).unwrap();
    let g = bind(
        &g,
        &BindSpec {
            batch: Some(3),
            ..spec()
        },
    )
    .unwrap();
    assert_eq!(shape_of(&g, "y"), vec![3, 4, 5, 5]);
    match &g.nodes[0].op {
        // 5 with k2 s1: total pad 1 at the end.
        Op::Conv(c) => assert_eq!(c.pads, vec![0, 0, 1, 1]),
        other => panic!("{other:?}"),
    }
}
