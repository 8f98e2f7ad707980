use super::*;
use crate::ir::{ConvAttrs, Dim, OriginNode, PoolAttrs};
use crate::shape::{bind, BindSpec};
use crate::tensor::DType;
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

/// Receptive field of the input of the node named `node`.
fn rf_into(g: &Graph, rfs: &[Option<Rf>], node: &str) -> Rf {
    let n = g
        .nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| panic!("no node {node}"));
    rfs[n.inputs[0].unwrap().0].unwrap_or_else(|| panic!("no rf into {node}"))
}

#[test]
fn resnet50_v15_and_v1_at_global_pool() {
    let g = bound("zoo:resnet50");
    let r = rf_into(&g, &analyze(&g), "avgpool");
    assert_eq!(r.size, [427, 427]);
    assert_eq!(r.stride, [32, 32]);
    assert!(r.aligned);
    // Shortcut: 7 (stem) + 2·2 (pool) + 2·4 + 2·8 + 2·16 (the three stride-2 3×3s) = 67.
    let s = rf_into(&g, &shortcut_estimate(&g), "avgpool");
    assert_eq!(s.size, [67, 67]);
    assert_eq!(s.stride, [32, 32]);

    let g1 = bound("zoo:resnet50_v1");
    let r1 = rf_into(&g1, &analyze(&g1), "avgpool");
    assert_eq!(r1.size, [483, 483]);
    assert_eq!(r1.stride, [32, 32]);
}

#[test]
fn vgg16_at_last_pool() {
    let g = bound("zoo:vgg16:width=0.125");
    let rfs = analyze(&g);
    let last_pool = g
        .nodes
        .iter()
        .rev()
        .find(|n| matches!(n.op, Op::MaxPool(_)))
        .unwrap();
    let r = rfs[last_pool.outputs[0].0].unwrap();
    assert_eq!(r.size, [212, 212]);
    assert_eq!(r.stride, [32, 32]);
    // Every conv is 3×3 pad 1 and pools 2×2/2 without pad: the first window starts at
    // −(1+2+4+8+16)·2 = ... and is centred on the first 32×32 cell's centre (15.5).
    assert_eq!(r.offset, [15.5, 15.5]);
}

struct G {
    g: Graph,
}

impl G {
    fn new(h: usize, w: usize) -> (G, ValueId) {
        let mut g = Graph::default();
        let x = g.add_value(
            "x",
            Some(DType::F32),
            Some(vec![
                Dim::Fixed(1),
                Dim::Fixed(1),
                Dim::Fixed(h),
                Dim::Fixed(w),
            ]),
        );
        g.inputs.push(x);
        (G { g }, x)
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.g.value(v).fixed_shape().unwrap()
    }

    /// Conv with all-positive weights (so every window cell really influences the output).
    fn conv(
        &mut self,
        x: ValueId,
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        pads: [usize; 4],
    ) -> ValueId {
        let i = self.shape(x);
        let n = self.g.nodes.len();
        let w = self.g.add_constant(
            format!("w{n}"),
            Tensor::from_f32(&[1, 1, k[0], k[1]], vec![0.5; k[0] * k[1]]).unwrap(),
        );
        let oh = (i[2] + pads[0] + pads[2] - (d[0] * (k[0] - 1) + 1)) / s[0] + 1;
        let ow = (i[3] + pads[1] + pads[3] - (d[1] * (k[1] - 1) + 1)) / s[1] + 1;
        let y = self.g.add_value(
            format!("c{n}"),
            Some(DType::F32),
            Some([1, 1, oh, ow].iter().map(|&v| Dim::Fixed(v)).collect()),
        );
        let attrs = ConvAttrs {
            kernel_shape: Some(k.to_vec()),
            strides: s.to_vec(),
            pads: pads.to_vec(),
            dilations: d.to_vec(),
            group: 1,
            auto_pad: Default::default(),
        };
        self.g.nodes.push(Node {
            name: format!("c{n}"),
            op: Op::Conv(attrs),
            inputs: vec![Some(x), Some(w)],
            outputs: vec![y],
            origin: vec![OriginNode {
                name: format!("c{n}"),
                op_type: "Conv".into(),
            }],
        });
        y
    }

    fn maxpool(&mut self, x: ValueId, k: usize, s: usize) -> ValueId {
        let i = self.shape(x);
        let n = self.g.nodes.len();
        let y = self.g.add_value(
            format!("p{n}"),
            Some(DType::F32),
            Some(
                [1, 1, (i[2] - k) / s + 1, (i[3] - k) / s + 1]
                    .iter()
                    .map(|&v| Dim::Fixed(v))
                    .collect(),
            ),
        );
        let attrs = PoolAttrs {
            kernel_shape: vec![k, k],
            strides: vec![s, s],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            auto_pad: Default::default(),
            count_include_pad: false,
        };
        self.g.nodes.push(Node {
            name: format!("p{n}"),
            op: Op::MaxPool(attrs),
            inputs: vec![Some(x)],
            outputs: vec![y],
            origin: vec![],
        });
        y
    }

    fn concat(&mut self, xs: &[ValueId]) -> ValueId {
        let mut s = self.shape(xs[0]);
        s[1] = xs.len();
        let n = self.g.nodes.len();
        let y = self.g.add_value(
            format!("cat{n}"),
            Some(DType::F32),
            Some(s.iter().map(|&v| Dim::Fixed(v)).collect()),
        );
        self.g.nodes.push(Node {
            name: format!("cat{n}"),
            op: Op::Concat { axis: 1 },
            inputs: xs.iter().map(|&x| Some(x)).collect(),
            outputs: vec![y],
            origin: vec![],
        });
        y
    }
}

/// Dilated conv with asymmetric pads, a 2×2/2 max pool, then two branches merged by Concat.
fn hand_graph() -> (Graph, [ValueId; 5]) {
    let (mut b, x) = G::new(40, 40);
    // k 3, dilation 2 → k_eff 5; pads H 2/2, W 1/3.
    let c0 = b.conv(x, [3, 3], [1, 1], [2, 2], [2, 1, 2, 3]);
    let p = b.maxpool(c0, 2, 2);
    let a = b.conv(p, [1, 1], [1, 1], [1, 1], [0; 4]);
    let same = b.conv(p, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]);
    let shifted = b.conv(p, [3, 3], [1, 1], [1, 1], [0, 0, 2, 2]);
    let cat_aligned = b.concat(&[a, same]);
    let cat_shifted = b.concat(&[a, shifted]);
    b.g.outputs = vec![cat_aligned, cat_shifted];
    (b.g, [c0, p, same, cat_aligned, cat_shifted])
}

#[test]
fn hand_computed_dilation_asymmetric_pads_and_concat() {
    let (g, [c0, p, same, cat_aligned, cat_shifted]) = hand_graph();
    let r = analyze(&g);
    // size 1 + (5−1)·1 = 5; start H −2, W −1 → centres 0 and 1.
    assert_eq!(
        r[c0.0],
        Some(Rf {
            size: [5, 5],
            stride: [1, 1],
            offset: [0.0, 1.0],
            aligned: true
        })
    );
    // pool 2/2: size 5 + 1 = 6, jump 2, starts unchanged → centres −2 + 2.5, −1 + 2.5.
    assert_eq!(
        r[p.0],
        Some(Rf {
            size: [6, 6],
            stride: [2, 2],
            offset: [0.5, 1.5],
            aligned: true
        })
    );
    // 3×3 pad 1 at jump 2: size 6 + 2·2 = 10, start −2 − 2 = −4 (H), −1 − 2 = −3 (W).
    assert_eq!(
        r[same.0],
        Some(Rf {
            size: [10, 10],
            stride: [2, 2],
            offset: [0.5, 1.5],
            aligned: true
        })
    );
    // 1×1 branch ∪ centred 3×3 branch: the 3×3 covers the 1×1, same centre.
    assert_eq!(
        r[cat_aligned.0],
        Some(Rf {
            size: [10, 10],
            stride: [2, 2],
            offset: [0.5, 1.5],
            aligned: true
        })
    );
    // 1×1 branch [−2, 3] ∪ unpadded-top 3×3 branch [−2, 7] (H): size 10, centre 2.5; not aligned.
    assert_eq!(
        r[cat_shifted.0],
        Some(Rf {
            size: [10, 10],
            stride: [2, 2],
            offset: [2.5, 3.5],
            aligned: false
        })
    );
}

fn run_to(g: &Graph, target: ValueId) -> impl Fn(&Tensor) -> crate::Result<Tensor> + '_ {
    move |x: &Tensor| {
        let mut g2 = g.clone();
        g2.outputs = vec![target];
        let out = crate::ops::run_reference(&g2, &[(g.inputs[0], x.clone())])?;
        Ok(out.into_iter().next().unwrap())
    }
}

/// The analytic window of output position `pos`, clipped to the input.
fn clipped_window(r: &Rf, pos: [usize; 2], size: [usize; 2]) -> ([usize; 2], [usize; 2]) {
    let mut first = [0; 2];
    let mut last = [0; 2];
    for a in 0..2 {
        let start = r.start(a) + (pos[a] as u64 * r.stride[a]) as f64;
        first[a] = start.max(0.0) as usize;
        last[a] = ((start + r.size[a] as f64 - 1.0).min(size[a] as f64 - 1.0)) as usize;
    }
    (first, last)
}

#[test]
fn empirical_matches_analytic_on_hand_graph() {
    let (g, [_, _, same, _, cat_shifted]) = hand_graph();
    let r = analyze(&g);
    for (v, pos) in [(same, [9usize, 9usize]), (cat_shifted, [4, 6])] {
        let m = empirical(run_to(&g, v), &[1, 1, 40, 40], Some(pos), 3).unwrap();
        let (first, last) = clipped_window(&r[v.0].unwrap(), pos, [40, 40]);
        assert_eq!(
            (m.first, m.last),
            (first, last),
            "value {}",
            g.value(v).name
        );
        assert!(
            m.runs < 60,
            "binary search should need few runs, used {}",
            m.runs
        );
    }
}

#[test]
fn empirical_matches_analytic_on_resnet20_blocks() {
    let g = bound("zoo:resnet20:width=0.5");
    let r = analyze(&g);
    for name in ["layer1.0.relu_1", "layer2.0.relu_1"] {
        let v = g.find_value(name).unwrap();
        let m = empirical(run_to(&g, v), &[1, 3, 32, 32], None, 11).unwrap();
        let (first, last) = clipped_window(&r[v.0].unwrap(), m.position, [32, 32]);
        assert_eq!((m.first, m.last), (first, last), "{name}");
        assert!(
            !m.clipped.iter().any(|&c| c),
            "{name}: window should fit in 32×32"
        );
    }
    // layer1.0: 3 (stem) + 2 + 2 = 7; layer2.0: 3 + 12 + 2 (stride 2) + 2·2 = 21.
    assert_eq!(
        r[g.find_value("layer1.0.relu_1").unwrap().0].unwrap().size,
        [7, 7]
    );
    assert_eq!(
        r[g.find_value("layer2.0.relu_1").unwrap().0].unwrap().size,
        [21, 21]
    );
}

#[test]
fn global_pool_sees_the_whole_input_and_concat_paths_align_in_inception() {
    let g = bound("zoo:inception_cifar");
    let r = analyze(&g);
    let gap = g.nodes.iter().find(|n| n.name == "global_pool").unwrap();
    let inp = r[gap.inputs[0].unwrap().0].unwrap();
    let out = r[gap.outputs[0].0].unwrap();
    assert_eq!(
        g.value(gap.inputs[0].unwrap()).fixed_shape().unwrap(),
        vec![1, 448, 7, 7]
    );
    assert_eq!(out.size[0], inp.size[0] + 6 * inp.stride[0]);
    assert!(out.size[0] >= 32);
    let fc = g.nodes.iter().find(|n| n.name == "fc").unwrap();
    assert_eq!(r[fc.outputs[0].0], Some(out));
}
