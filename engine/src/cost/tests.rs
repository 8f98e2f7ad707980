use super::*;
use crate::ir::{ConvAttrs, Dim, OriginNode};
use crate::shape::{bind, BindSpec};
use crate::tensor::{DType, Tensor};
use crate::zoo;

fn bound(spec: &str) -> Graph {
    let g = zoo::build(spec).expect("zoo spec is valid");
    bind(
        &g,
        &BindSpec {
            batch: Some(1),
            ..Default::default()
        },
    )
    .expect("zoo graphs bind")
}

/// BN running mean/var elements: torchvision counts them as buffers, not parameters.
fn bn_buffer_elems(g: &Graph) -> u64 {
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNormalization { .. }))
        .map(|n| {
            n.inputs[3..5]
                .iter()
                .flatten()
                .map(|id| g.constants[id].len() as u64)
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn conv_fc_macs_match_published_torchvision_figures() {
    for (spec, macs, torch_params) in [
        ("zoo:resnet50", 4_089_184_256u64, 25_557_032u64),
        ("zoo:resnext50_32x4d", 4_230_479_872, 25_028_904),
        ("zoo:resnet18", 1_814_073_344, 11_689_512),
    ] {
        let g = bound(spec);
        let (_, t) = graph_cost(&g);
        assert_eq!(t.macs_conv_fc_only, macs, "{spec}");
        // Every constant is read by exactly one node in these graphs.
        assert_eq!(t.params, g.parameter_totals().0 as u64, "{spec}");
        assert_eq!(t.param_bytes, g.parameter_totals().1 as u64, "{spec}");
        assert_eq!(t.params - bn_buffer_elems(&g), torch_params, "{spec}");
    }
}

#[test]
fn zoo_graphs_are_already_in_bound_form() {
    // The builder declares every shape; binding must not change any cost.
    let g = zoo::build("zoo:resnet18:batch=1").unwrap();
    assert_eq!(graph_cost(&g), graph_cost(&bound("zoo:resnet18")));
}

#[test]
fn bn_fold_keeps_macs_and_drops_three_params_per_channel() {
    let keep = bound("zoo:resnet18");
    let fold = bound("zoo:resnet18:bn=fold");
    let (_, tk) = graph_cost(&keep);
    let (_, tf) = graph_cost(&fold);
    assert_eq!(tk.macs, tf.macs);
    let bn_channels = bn_buffer_elems(&keep) / 2;
    assert_eq!(tk.params - tf.params, 3 * bn_channels);
    // Keep: 2 FLOPs/elem per BN; fold: a 1 FLOP/elem bias instead.
    let bn_out: u64 = keep
        .nodes
        .iter()
        .zip(graph_cost(&keep).0)
        .filter(|(n, _)| matches!(n.op, Op::BatchNormalization { .. }))
        .map(|(_, c)| c.output_elems)
        .sum();
    assert_eq!(tk.flops - tf.flops, bn_out);
}

#[test]
fn half_width_resnet50_scales_as_hand_derived() {
    let full = bound("zoo:resnet50");
    let half = bound("zoo:resnet50:width=0.5");
    let (cf, tf) = graph_cost(&full);
    let (_, th) = graph_cost(&half);
    // MACs: the stem (3 input channels) and the FC (1000 classes) scale by 1/2, the rest 1/4.
    let stem = 64u64 * 112 * 112 * 3 * 49;
    let fc = 2048u64 * 1000;
    let body = tf.macs_conv_fc_only - stem - fc;
    let want_macs = (stem + fc) as f64 * 0.5 + body as f64 * 0.25;
    let r = th.macs_conv_fc_only as f64 / want_macs;
    assert!((r - 1.0).abs() < 0.02, "MACs ratio to hand-derived {r}");
    assert!((th.macs_conv_fc_only as f64 / tf.macs_conv_fc_only as f64 - 0.25).abs() < 0.01);
    // Params: stem weights and FC weights scale 1/2, FC bias stays, BN (4·C) 1/2, the rest 1/4.
    let stem_p = 64u64 * 3 * 49;
    let fc_w = 2048u64 * 1000;
    let fc_b = 1000u64;
    let bn_p = bn_buffer_elems(&full) * 2;
    let rest = tf.params - stem_p - fc_w - fc_b - bn_p;
    let want_params = (stem_p + fc_w + bn_p) as f64 * 0.5 + fc_b as f64 + rest as f64 * 0.25;
    let r = th.params as f64 / want_params;
    assert!((r - 1.0).abs() < 0.02, "params ratio to hand-derived {r}");
    // Feature maps: everything halves except the 1000 logits.
    let logits = 1000u64;
    let want_maps = (tf.output_elems - logits) as f64 * 0.5 + logits as f64;
    let r = th.output_elems as f64 / want_maps;
    assert!(
        (r - 1.0).abs() < 0.02,
        "feature-map ratio to hand-derived {r}"
    );
    assert!(cf.iter().all(|c| c.output_bytes == 4 * c.output_elems));
}

fn conv_graph(bias: bool) -> Graph {
    let mut g = Graph::default();
    let x = g.add_value(
        "x",
        Some(DType::F32),
        Some(vec![
            Dim::Fixed(2),
            Dim::Fixed(6),
            Dim::Fixed(8),
            Dim::Fixed(8),
        ]),
    );
    g.inputs.push(x);
    let w = g.add_constant("w", Tensor::zeros(DType::F32, &[4, 3, 3, 3]));
    let b = g.add_constant("b", Tensor::zeros(DType::F32, &[4]));
    let y = g.add_value(
        "y",
        Some(DType::F32),
        Some(vec![
            Dim::Fixed(2),
            Dim::Fixed(4),
            Dim::Fixed(4),
            Dim::Fixed(4),
        ]),
    );
    let conv = ConvAttrs {
        kernel_shape: Some(vec![3, 3]),
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        group: 2,
        auto_pad: Default::default(),
    };
    g.nodes.push(Node {
        name: "c".into(),
        op: Op::Conv(conv),
        inputs: vec![Some(x), Some(w), if bias { Some(b) } else { None }],
        outputs: vec![y],
        origin: vec![OriginNode {
            name: "c".into(),
            op_type: "Conv".into(),
        }],
    });
    g.outputs.push(y);
    g
}

#[test]
fn grouped_conv_counts_by_hand() {
    let g = conv_graph(true);
    let c = node_cost(&g, &g.nodes[0]);
    // N·Cout·Ho·Wo·(Cin/group)·kh·kw = 2·4·4·4·3·3·3.
    let out = 2 * 4 * 4 * 4;
    assert_eq!(c.macs, out * 27);
    assert_eq!(c.flops, 2 * out * 27 + out);
    assert_eq!(c.params, 4 * 3 * 9 + 4);
    assert_eq!(c.param_bytes, 4 * c.params);
    assert_eq!(c.bytes_read, 2 * 6 * 8 * 8 * 4 + c.param_bytes);
    assert_eq!(c.bytes_written, out * 4);
    assert!(
        (c.arithmetic_intensity - c.flops as f64 / (c.bytes_read + c.bytes_written) as f64).abs()
            < 1e-12
    );
    let nb = conv_graph(false);
    assert_eq!(node_cost(&nb, &nb.nodes[0]).flops, 2 * out * 27);
}

#[test]
fn fused_conv_costs_the_sum_of_its_originals() {
    let mut g = conv_graph(true);
    let res = g.add_value(
        "r",
        Some(DType::F32),
        Some(vec![
            Dim::Fixed(2),
            Dim::Fixed(4),
            Dim::Fixed(4),
            Dim::Fixed(4),
        ]),
    );
    let Op::Conv(conv) = g.nodes[0].op.clone() else {
        unreachable!()
    };
    let n = &mut g.nodes[0];
    n.op = Op::FusedConv {
        conv,
        activation: Activation::Relu,
        has_residual: true,
    };
    n.inputs.push(Some(res));
    n.origin = ["Conv", "BatchNormalization", "Add", "Relu"]
        .iter()
        .map(|t| OriginNode {
            name: t.to_lowercase(),
            op_type: t.to_string(),
        })
        .collect();
    let c = node_cost(&g, &g.nodes[0]);
    let out = 2 * 4 * 4 * 4u64;
    // conv 2·MACs (bias is the folded BN shift) + BN 2/elem + Add 1/elem + Relu 1/elem.
    assert_eq!(c.flops, 2 * c.macs + 2 * out + out + out);
    assert_eq!(c.bytes_read, 2 * 6 * 8 * 8 * 4 + out * 4 + c.param_bytes);
}

#[test]
fn gemm_and_elementwise_conventions() {
    let g = bound("zoo:resnet18");
    let (costs, _) = graph_cost(&g);
    for (n, c) in g.nodes.iter().zip(&costs) {
        match n.op {
            Op::Gemm { .. } => {
                assert_eq!(c.macs, 512 * 1000);
                assert_eq!(c.flops, 2 * 512 * 1000 + 1000);
            }
            Op::BatchNormalization { .. } => assert_eq!(c.flops, 2 * c.output_elems),
            Op::Relu | Op::Add => assert_eq!(c.flops, c.output_elems),
            Op::MaxPool(_) => assert_eq!(c.flops, 8 * c.output_elems),
            Op::GlobalAveragePool => assert_eq!(c.flops, 49 * c.output_elems),
            Op::Flatten { .. } => assert_eq!(c.flops, 0),
            _ => {}
        }
    }
}
