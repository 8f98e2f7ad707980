use super::*;
use crate::ir::{Op, ValueId};
use crate::shape::{bind, BindSpec};
use crate::tensor::Tensor;

fn bind1(g: &Graph) -> Graph {
    bind(
        g,
        &BindSpec {
            batch: Some(1),
            ..Default::default()
        },
    )
    .expect("zoo graphs bind")
}

fn input(g: &Graph, seed: u64) -> Tensor {
    let shape = g.value(g.inputs[0]).fixed_shape().unwrap();
    let mut rng = SeedRng::new(seed);
    let n = shape.iter().product();
    Tensor::from_f32(&shape, (0..n).map(|_| rng.normal() as f32).collect()).unwrap()
}

#[test]
fn every_model_builds_and_binds_to_its_declared_shapes() {
    for (name, _) in list() {
        // Narrow versions keep the test fast; shapes do not depend on width.
        let g = build(&format!("zoo:{name}:width=0.25")).unwrap();
        assert_eq!(
            g.value(g.inputs[0]).shape.as_ref().unwrap()[0],
            crate::ir::Dim::Symbol("batch".into())
        );
        let b = bind1(&g);
        for v in &b.values {
            if let Some(orig) = g.find_value(&v.name) {
                let declared: Vec<_> = g.value(orig).shape.clone().unwrap()[1..].to_vec();
                assert_eq!(
                    v.shape.as_ref().unwrap()[1..],
                    declared[..],
                    "{name}: {}",
                    v.name
                );
            }
        }
        let out = b.value(b.outputs[0]).fixed_shape().unwrap();
        let classes = if matches!(name, "resnet20" | "resnet56" | "inception_cifar") {
            10
        } else {
            1000
        };
        assert_eq!(out, vec![1, classes], "{name}");
    }
}

#[test]
fn spec_parsing() {
    let (n, o) =
        parse_spec("zoo:resnet50:width=0.5,input=128,classes=7,batch=2,seed=9,bn=fold").unwrap();
    assert_eq!(n, "resnet50");
    assert_eq!(
        o,
        Options {
            width: 0.5,
            input: Some(128),
            classes: 7,
            batch: Some(2),
            seed: 9,
            bn: BnMode::Fold
        }
    );
    assert_eq!(parse_spec("resnet20").unwrap().1.classes, 10);
    for bad in [
        "zoo:nope",
        "zoo:resnet50:width=0",
        "zoo:resnet50:depth=3",
        "zoo:resnet50:bn=maybe",
        "zoo:resnet50:width",
    ] {
        assert!(build(bad).is_err(), "{bad}");
    }
    // Too small an input is an error, not a panic.
    let e = build("zoo:inception_v3:input=32").unwrap_err().to_string();
    assert!(e.contains("smaller than"), "{e}");
    let g = build("zoo:resnet18:batch=3,input=64,classes=5").unwrap();
    assert_eq!(g.value(g.outputs[0]).fixed_shape(), Some(vec![3, 5]));
}

#[test]
fn names_follow_torchvision_and_seeds_are_reproducible() {
    let a = build("zoo:resnet18:width=0.25,seed=4").unwrap();
    let b = build("zoo:resnet18:width=0.25,seed=4").unwrap();
    let c = build("zoo:resnet18:width=0.25,seed=5").unwrap();
    assert_eq!(a, b);
    assert_ne!(a.constants, c.constants);
    for n in [
        "conv1",
        "bn1",
        "maxpool",
        "layer1.0.conv1",
        "layer2.0.downsample.0",
        "layer4.1.bn2",
        "fc",
    ] {
        assert!(a.nodes.iter().any(|x| x.name == n), "{n}");
    }
    assert!(a.find_value("layer2.0.downsample.1.running_var").is_some());
    let x = build("zoo:resnext50_32x4d:width=0.25").unwrap();
    let conv2 = x.nodes.iter().find(|n| n.name == "layer1.0.conv2").unwrap();
    assert!(matches!(&conv2.op, Op::Conv(c) if c.group == 32));
}

/// Standard deviation of every ReLU output and of the logits, on an N(0,1) input.
fn activation_stds(g: &Graph, seed: u64) -> Vec<(String, f64)> {
    let mut g2 = g.clone();
    let relus: Vec<ValueId> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Relu))
        .map(|n| n.outputs[0])
        .collect();
    g2.outputs = relus
        .iter()
        .copied()
        .chain(g.outputs.iter().copied())
        .collect();
    let outs = crate::ops::run_reference(&g2, &[(g.inputs[0], input(g, seed))]).unwrap();
    g2.outputs
        .iter()
        .zip(outs)
        .map(|(v, t)| {
            let d = t.to_f64_vec();
            let m = d.iter().sum::<f64>() / d.len() as f64;
            let var = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / d.len() as f64;
            (g.value(*v).name.clone(), var.sqrt())
        })
        .collect()
}

#[test]
fn activations_stay_order_one_through_deep_nets() {
    for spec in [
        "zoo:resnet56:width=0.5",
        "zoo:inception_cifar:width=0.5",
        "zoo:resnet50:width=0.25,input=64",
    ] {
        let g = bind1(&build(spec).unwrap());
        for (name, std) in activation_stds(&g, 1) {
            assert!((0.1..10.0).contains(&std), "{spec}: {name} has std {std}");
        }
    }
}

#[test]
fn folding_bn_preserves_outputs() {
    let keep = bind1(&build("zoo:resnet20:width=0.5,seed=2").unwrap());
    let fold = bind1(&build("zoo:resnet20:width=0.5,seed=2,bn=fold").unwrap());
    assert!(!fold
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::BatchNormalization { .. })));
    let x = input(&keep, 8);
    let a =
        crate::ops::run_reference(&keep, &[(keep.inputs[0], x.clone())]).unwrap()[0].to_f64_vec();
    let b = crate::ops::run_reference(&fold, &[(fold.inputs[0], x)]).unwrap()[0].to_f64_vec();
    let scale = a.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        scale > 0.1 && err < 1e-4 * scale,
        "max err {err}, scale {scale}"
    );
}

#[test]
fn onnx_export_round_trips() {
    let g = build("zoo:inception_cifar:width=0.25,seed=3").unwrap();
    let m = to_onnx(&g);
    assert_eq!(m.opset, 17);
    assert_eq!(m.graph.nodes.len(), g.nodes.len());
    assert_eq!(m.graph.initializers.len(), g.constants.len());
    let bytes = onnx_import::encode_model(&m);
    let back = onnx_import::decode_model(&bytes, None, "zoo export").unwrap();
    let g2 = crate::import::graph_from_onnx(&back).unwrap();
    let (b1, b2) = (bind1(&g), bind1(&g2));
    let x = input(&b1, 5);
    let y1 = crate::ops::run_reference(&b1, &[(b1.inputs[0], x.clone())]).unwrap()[0].to_f64_vec();
    let y2 = crate::ops::run_reference(&b2, &[(b2.inputs[0], x)]).unwrap()[0].to_f64_vec();
    assert_eq!(y1, y2);
}
