//! Tests of fusion, planning and the executor on small hand-built bound graphs, against the
//! reference evaluator.

use crate::ir::{
    Activation, AutoPad, ConvAttrs, Dim, Graph, Node, Op, OriginNode, PoolAttrs, ValueId,
};
use crate::random::normal_tensor;
use crate::tensor::{DType, Tensor};

use super::executor::{CpuExecutor, Executor};
use super::{optimize, plan};

fn fixed(shape: &[usize]) -> Option<Vec<Dim>> {
    Some(shape.iter().map(|&d| Dim::Fixed(d)).collect())
}

/// Builds bound graphs node by node.
pub(crate) struct Builder {
    pub g: Graph,
    seed: u64,
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            g: Graph {
                name: "test".into(),
                ..Graph::default()
            },
            seed: 1,
        }
    }

    pub fn input(&mut self, name: &str, shape: &[usize]) -> ValueId {
        let id = self.g.add_value(name, Some(DType::F32), fixed(shape));
        self.g.inputs.push(id);
        id
    }

    pub fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
        self.g.add_constant(name, t)
    }

    pub fn random(&mut self, name: &str, shape: &[usize]) -> ValueId {
        self.seed += 1;
        self.constant(name, normal_tensor(shape, self.seed))
    }

    pub fn positive(&mut self, name: &str, shape: &[usize]) -> ValueId {
        self.seed += 1;
        let t = normal_tensor(shape, self.seed);
        let v: Vec<f32> = t
            .to_f64_vec()
            .iter()
            .map(|&x| (x.abs() + 0.5) as f32)
            .collect();
        self.constant(name, Tensor::from_f32(shape, v).unwrap())
    }

    pub fn node(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[Option<ValueId>],
        out_shapes: &[&[usize]],
    ) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = out_shapes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                self.g
                    .add_value(format!("{name}_out{k}"), Some(DType::F32), fixed(s))
            })
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

    pub fn node1(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[ValueId],
        out_shape: &[usize],
    ) -> ValueId {
        let ins: Vec<Option<ValueId>> = inputs.iter().map(|&i| Some(i)).collect();
        self.node(name, op, &ins, &[out_shape])[0]
    }
}

pub(crate) fn conv_attrs(k: usize, stride: usize, pad: usize) -> ConvAttrs {
    ConvAttrs {
        kernel_shape: Some(vec![k, k]),
        strides: vec![stride, stride],
        pads: vec![pad; 4],
        dilations: vec![1, 1],
        group: 1,
        auto_pad: AutoPad::NotSet,
    }
}

/// conv → bn → relu → identity → conv → add(residual) → relu → maxpool → flatten → dropout →
/// gemm, plus a second graph output reading the pooled map.
pub(crate) fn small_resnet() -> Graph {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 3, 8, 8]);
    let w1 = b.random("w1", &[4, 3, 3, 3]);
    let b1 = b.random("b1", &[4]);
    let c1 = b.node1(
        "conv1",
        Op::Conv(conv_attrs(3, 1, 1)),
        &[x, w1, b1],
        &[1, 4, 8, 8],
    );
    let (s, bb, m) = (
        b.positive("bn_s", &[4]),
        b.random("bn_b", &[4]),
        b.random("bn_m", &[4]),
    );
    let v = b.positive("bn_v", &[4]);
    let n1 = b.node1(
        "bn1",
        Op::BatchNormalization { epsilon: 1e-5 },
        &[c1, s, bb, m, v],
        &[1, 4, 8, 8],
    );
    let r1 = b.node1("relu1", Op::Relu, &[n1], &[1, 4, 8, 8]);
    let id = b.node1("ident", Op::Identity, &[r1], &[1, 4, 8, 8]);
    let w2 = b.random("w2", &[4, 4, 3, 3]);
    let c2 = b.node(
        "conv2",
        Op::Conv(conv_attrs(3, 1, 1)),
        &[Some(id), Some(w2), None],
        &[&[1, 4, 8, 8]],
    )[0];
    let a = b.node1("add", Op::Add, &[id, c2], &[1, 4, 8, 8]);
    let r2 = b.node1("relu2", Op::Relu, &[a], &[1, 4, 8, 8]);
    let pool = PoolAttrs {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        auto_pad: AutoPad::NotSet,
        count_include_pad: false,
    };
    let p = b.node1("pool", Op::MaxPool(pool), &[r2], &[1, 4, 4, 4]);
    let f = b.node1("flatten", Op::Flatten { axis: 1 }, &[p], &[1, 64]);
    let d = b.node1("drop", Op::Dropout, &[f], &[1, 64]);
    let wf = b.random("wf", &[10, 64]);
    let bf = b.random("bf", &[10]);
    let y = b.node1(
        "fc",
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        &[d, wf, bf],
        &[1, 10],
    );
    let c3 = b.random("clip_lo", &[]);
    let six = b.constant("six", Tensor::scalar_f32(6.0));
    let w3 = b.random("w3", &[2, 4, 1, 1]);
    let c3v = b.node1(
        "conv3",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[p, w3],
        &[1, 2, 4, 4],
    );
    let clip = b.node1("clip", Op::Clip, &[c3v, c3, six], &[1, 2, 4, 4]);
    let out2 = b.node1("out_ident", Op::Identity, &[clip], &[1, 2, 4, 4]);
    b.g.outputs = vec![y, out2];
    b.g.value_mut(y).name = "y".into();
    b.g.value_mut(out2).name = "feat".into();
    b.g
}

fn assert_close(a: &Tensor, b: &Tensor, rel: f64) {
    assert_eq!(a.shape(), b.shape());
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            (p - q).abs() <= rel * scale,
            "element {i}: {p} vs {q} (scale {scale})"
        );
    }
}

fn feeds(g: &Graph, seed: u64) -> Vec<(ValueId, Tensor)> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            (
                id,
                normal_tensor(&g.value(id).fixed_shape().unwrap(), seed + k as u64),
            )
        })
        .collect()
}

#[test]
fn fusion_keeps_numerics_and_names() {
    let g = small_resnet();
    let opt = optimize(&g).unwrap();
    let types: Vec<&str> = opt.nodes.iter().map(|n| n.op.type_name()).collect();
    // conv1(+bn+relu), conv2(+add+relu), pool, flatten, fc, conv3(+clip).
    assert_eq!(
        types,
        ["Conv", "Conv", "MaxPool", "Flatten", "Gemm", "Conv"],
        "{:#?}",
        opt.nodes
    );
    let origin = |k: usize| {
        opt.nodes[k]
            .origin
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(origin(0), ["conv1", "bn1", "relu1"]);
    assert_eq!(origin(1), ["conv2", "add", "relu2"]);
    assert_eq!(origin(5), ["conv3", "clip"]);
    match &opt.nodes[1].op {
        Op::FusedConv {
            activation,
            has_residual,
            ..
        } => {
            assert_eq!(*activation, Activation::Relu);
            assert!(*has_residual);
        }
        other => panic!("expected FusedConv, got {other:?}"),
    }
    match &opt.nodes[5].op {
        Op::FusedConv {
            activation: Activation::Clip(_, hi),
            has_residual: false,
            ..
        } => assert_eq!(*hi, 6.0),
        other => panic!("expected FusedConv with Clip, got {other:?}"),
    }
    // Output names survive the removal of the Identity that produced "feat".
    let names: Vec<&str> = opt
        .outputs
        .iter()
        .map(|&id| opt.value(id).name.as_str())
        .collect();
    assert_eq!(names, ["y", "feat"]);
    // The BN parameters and the original conv1 weights are gone.
    assert!(opt.constants.len() < g.constants.len());

    let f = feeds(&g, 7);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    let got = crate::ops::run_reference(&opt, &f).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert_close(a, b, 1e-5);
    }
}

#[test]
fn plan_is_valid_and_reuses_memory() {
    for g in [small_resnet(), optimize(&small_resnet()).unwrap()] {
        for in_place in [false, true] {
            let p = plan::plan(&g, in_place).unwrap();
            p.validate().unwrap();
            let biggest = p.values.iter().map(|v| v.bytes).max().unwrap();
            assert!(p.planned_peak_bytes >= biggest);
            assert!(p.arena_bytes >= p.planned_peak_bytes);
            assert!(p.arena_bytes < p.total_activation_bytes, "no reuse: {p:?}");
            assert_eq!(p.live_bytes_during.len(), g.nodes.len());
            // Graph outputs stay live to the end.
            for id in &g.outputs {
                assert_eq!(p.get(*id).unwrap().last, g.nodes.len());
            }
        }
    }
    // Unfused: relu1 can overwrite bn1's output, which dies there.
    let g = small_resnet();
    let p = plan::plan(&g, true).unwrap();
    let relu1 = g.nodes.iter().find(|n| n.name == "relu1").unwrap();
    let v = p.get(relu1.outputs[0]).unwrap();
    assert_eq!(v.in_place_of, relu1.inputs[0]);
    assert_eq!(v.offset, p.get(relu1.inputs[0].unwrap()).unwrap().offset);
}

#[test]
fn plan_detects_overlap() {
    let g = small_resnet();
    let mut p = plan::plan(&g, false).unwrap();
    // Move every value to offset 0: values live at the same time now collide.
    for v in &mut p.values {
        v.offset = 0;
    }
    assert!(p.validate().is_err());
}

fn run_exec(g: &Graph, threads: usize, f: &[(ValueId, Tensor)]) -> Vec<Tensor> {
    let p = plan::plan(g, true).unwrap();
    let mut ex = CpuExecutor::new(g.clone(), &p, threads).unwrap();
    // Every node of these graphs has a fast kernel.
    assert_eq!(ex.kernel_nodes(), g.nodes.len());
    // ...so every constant lives in a kernel's own layout and the executor's graph keeps no
    // second, unpacked copy of it.
    assert!(!g.constants.is_empty());
    assert!(ex.graph().constants.is_empty());
    let ins: Vec<&Tensor> = f.iter().map(|(_, t)| t).collect();
    let mut trace = Vec::new();
    let first = ex.run(&ins, Some(&mut trace)).unwrap();
    assert_eq!(trace.len(), g.nodes.len());
    // A second run reuses the arena and gives identical results.
    let second = ex.run(&ins, None).unwrap();
    assert_eq!(first, second);
    first
}

#[test]
fn executor_matches_reference() {
    let g = small_resnet();
    let f = feeds(&g, 3);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    let got = run_exec(&g, 1, &f);
    for (a, b) in got.iter().zip(&want) {
        assert_close(a, b, 1e-5);
    }
    let opt = optimize(&g).unwrap();
    let got = run_exec(&opt, 2, &f);
    for (a, b) in got.iter().zip(&want) {
        assert_close(a, b, 1e-5);
    }
}

#[test]
fn thread_counts_agree() {
    let opt = optimize(&small_resnet()).unwrap();
    let f = feeds(&opt, 11);
    let one = run_exec(&opt, 1, &f);
    let two = run_exec(&opt, 2, &f);
    for (a, b) in one.iter().zip(&two) {
        assert_close(a, b, 1e-6);
    }
}

mod session {
    use super::*;
    use crate::error::Error;
    use crate::session::{Model, Session, SessionOptions};

    fn session(optimize: bool, threads: usize) -> Session {
        let model = Model::from_graph(small_resnet(), "test:small_resnet");
        Session::new(
            &model,
            &SessionOptions {
                optimize,
                threads,
                ..SessionOptions::default()
            },
        )
        .unwrap()
    }

    fn input() -> Tensor {
        normal_tensor(&[1, 3, 8, 8], 5)
    }

    #[test]
    fn runs_and_matches_reference() {
        let g = small_resnet();
        let want = crate::ops::run_reference(&g, &[(g.inputs[0], input())]).unwrap();
        for optimize in [false, true] {
            let mut s = session(optimize, 1);
            let out = s.run(&[("x", input())]).unwrap();
            let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["y", "feat"]);
            for ((_, a), b) in out.iter().zip(&want) {
                assert_close(a, b, 1e-5);
            }
            let (out2, trace) = s.run_profiled(&[("x", input())]).unwrap();
            assert_eq!(
                out, out2,
                "same thread count must give bit-identical outputs"
            );
            assert_eq!(trace.nodes.len(), s.exec_graph().nodes.len());
            assert!(trace.peak_live_bytes >= s.memory_plan().planned_peak_bytes as u64);
            // conv MACs: 8·8·4·27 + 8·8·4·36 + 4·4·2·4, fc 640.
            let macs: u64 = trace.nodes.iter().map(|n| n.macs_executed).sum();
            assert_eq!(macs, 8 * 8 * 4 * 27 + 8 * 8 * 4 * 36 + 4 * 4 * 2 * 4 + 640);
            assert_eq!(s.bound_graph().nodes.len(), 14);
            assert_eq!(s.input_infos()[0].fixed_shape(), Some(vec![1, 3, 8, 8]));
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut s = session(true, 1);
        let msg = |r: crate::Result<Vec<(String, Tensor)>>| match r {
            Err(Error::Input { name, message }) => format!("{name}: {message}"),
            other => panic!("expected an input error, got {other:?}"),
        };
        let m = msg(s.run(&[("x", normal_tensor(&[1, 3, 8, 9], 1))]));
        assert!(
            m.contains("[1, 3, 8, 8]") && m.contains("[1, 3, 8, 9]"),
            "{m}"
        );
        let m = msg(s.run(&[("x", Tensor::zeros(crate::DType::I64, &[1, 3, 8, 8]))]));
        assert!(m.contains("float32") && m.contains("int64"), "{m}");
        let m = msg(s.run(&[]));
        assert!(m.starts_with("x: missing"), "{m}");
        let m = msg(s.run(&[("x", input()), ("nope", input())]));
        assert!(m.starts_with("nope: no such model input"), "{m}");
    }

    #[test]
    fn refuses_over_memory_limit_and_unknown_backend() {
        let model = Model::from_graph(small_resnet(), "test");
        let opts = SessionOptions {
            max_memory: Some(1000),
            ..SessionOptions::default()
        };
        match Session::new(&model, &opts) {
            Err(Error::MemoryLimit {
                requested, limit, ..
            }) => {
                assert_eq!(limit, 1000);
                assert!(requested > 1000);
            }
            other => panic!("expected MemoryLimit, got {:?}", other.err()),
        }
        // Without the `wgpu` feature the GPU backend is refused with a Backend error (with it,
        // engine/tests/wgpu_backend.rs covers the backend instead).
        #[cfg(not(feature = "wgpu"))]
        {
            let opts = SessionOptions {
                backend: crate::session::Backend::Wgpu,
                ..SessionOptions::default()
            };
            assert!(matches!(
                Session::new(&model, &opts),
                Err(Error::Backend { .. })
            ));
        }
        let mut opts = SessionOptions::default();
        opts.input_shapes.insert("nope".into(), vec![1]);
        assert!(matches!(
            Session::new(&model, &opts),
            Err(Error::Input { .. })
        ));
    }
}

mod zoo_models {
    use super::*;
    use crate::session::{Model, Session, SessionOptions};

    /// A whole CIFAR ResNet-20 from the zoo: fused kernels against the unfused reference.
    #[test]
    fn resnet20_matches_reference() {
        let model = Model::load("zoo:resnet20").unwrap();
        let mut s = Session::new(
            &model,
            &SessionOptions {
                threads: 2,
                ..SessionOptions::default()
            },
        )
        .unwrap();
        assert!(s.exec_graph().nodes.len() < s.bound_graph().nodes.len());
        let x = normal_tensor(&s.input_infos()[0].fixed_shape().unwrap(), 9);
        let name = s.input_infos()[0].name.clone();
        let out = s.run(&[(name.as_str(), x.clone())]).unwrap();
        let g = s.bound_graph();
        let want = crate::ops::run_reference(g, &[(g.inputs[0], x.clone())]).unwrap();
        assert_close(&out[0].1, &want[0], 1e-4);
        let mut s1 = Session::new(
            &model,
            &SessionOptions {
                threads: 1,
                ..SessionOptions::default()
            },
        )
        .unwrap();
        let one = s1.run(&[(name.as_str(), x)]).unwrap();
        assert_close(&one[0].1, &out[0].1, 1e-6);
    }

    /// `Session::from_model` (consuming) runs like `Session::new`; the execution graph a
    /// session rebuilds on request is the one it runs (same nodes, same order); the bytes a
    /// session holds are the bound graph's weights once plus the executor's own (kernel
    /// layouts, arena, scratch), not a further copy of the weights.
    #[test]
    fn consuming_session_and_rebuilt_exec_graph() {
        let model = Model::load("zoo:resnet20:width=0.5").unwrap();
        let options = SessionOptions {
            threads: 1,
            ..SessionOptions::default()
        };
        let mut a = Session::new(&model, &options).unwrap();
        let mut b = Session::from_model(model.clone(), &options).unwrap();
        let info = a.input_infos()[0].clone();
        let x = normal_tensor(&info.fixed_shape().unwrap(), 4);
        let feeds = [(info.name.as_str(), x)];
        let out_a = a.run(&feeds).unwrap();
        let (out_b, trace) = b.run_profiled(&feeds).unwrap();
        assert_eq!(out_a, out_b);
        let exec = optimize(b.bound_graph()).unwrap();
        assert_eq!(b.exec_graph(), &exec);
        assert_eq!(trace.nodes.len(), exec.nodes.len());
        assert_eq!(out_b[0].0, exec.value(exec.outputs[0]).name);
        // Every node of this net has a kernel: held = weights once (bound graph) + kernel
        // layouts (conv weights, Winograd-transformed or not, and biases: at least the weights
        // again) + arena + scratch. Before, the executor's graph held a third copy on top.
        let (_, weights) = b.bound_graph().parameter_totals();
        let threads = 1;
        let upper = weights as u64
            + b.memory_plan().arena_bytes as u64
            + crate::exec::executor::estimated_extra_bytes(&exec, threads)
            // Winograd F(2x2) holds 16/9 of a 3x3 kernel's floats.
            + (weights as u64) * 7 / 9;
        assert!(
            b.reserved_bytes() <= upper,
            "{} > {upper}",
            b.reserved_bytes()
        );
        // Every constant of the execution graph is in some kernel layout, at least as large.
        let (_, exec_weights) = exec.parameter_totals();
        let lower = (weights + exec_weights + b.memory_plan().arena_bytes) as u64;
        assert!(
            b.reserved_bytes() >= lower,
            "{} < {lower}",
            b.reserved_bytes()
        );
        // Without fusions the execution graph is the bound graph itself.
        let plain = Session::from_model(
            model,
            &SessionOptions {
                optimize: false,
                ..options
            },
        )
        .unwrap();
        assert!(std::ptr::eq(plain.exec_graph(), plain.bound_graph()));
    }

    /// Timing of zoo models (run with `--ignored --nocapture`); asserts nothing about speed.
    #[test]
    #[ignore = "dev timing helper (ENGINE_BENCH_MODEL=zoo:NAME): prints latencies, asserts nothing"]
    fn time_zoo_models() {
        let spec = std::env::var("ENGINE_BENCH_MODEL").unwrap_or_else(|_| "zoo:resnet50".into());
        let model = Model::load(&spec).unwrap();
        for threads in [1, 2] {
            let mut s = Session::new(
                &model,
                &SessionOptions {
                    threads,
                    ..SessionOptions::default()
                },
            )
            .unwrap();
            let info = s.input_infos()[0].clone();
            let x = normal_tensor(&info.fixed_shape().unwrap(), 1);
            let feeds = [(info.name.as_str(), x)];
            s.run(&feeds).unwrap();
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = std::time::Instant::now();
                s.run(&feeds).unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let (_, trace) = s.run_profiled(&feeds).unwrap();
            let mut by_op: std::collections::BTreeMap<&str, f64> = Default::default();
            for n in &trace.nodes {
                *by_op
                    .entry(s.exec_graph().nodes[n.node].op.type_name())
                    .or_default() += n.elapsed.as_secs_f64() * 1e3;
            }
            println!(
                "{spec} threads={threads}: median {:.1} ms (min {:.1}); nodes {} (bound {}); arena {} MiB, peak {} MiB; {by_op:?}",
                times[2],
                times[0],
                s.exec_graph().nodes.len(),
                s.bound_graph().nodes.len(),
                s.memory_plan().arena_bytes >> 20,
                s.memory_plan().planned_peak_bytes >> 20
            );
        }
    }
}

/// Constants read by the reference evaluator stay in the executor's graph (also when a kernel
/// reads the same constant); the ones only kernels read are dropped after packing.
#[test]
fn executor_keeps_constants_the_reference_path_reads() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 4, 3, 3]);
    let c = b.positive("c", &[1, 4, 1, 1]);
    let w = b.random("w", &[4, 4, 1, 1]);
    let y = b.node1(
        "conv",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, w],
        &[1, 4, 3, 3],
    );
    // Mul by a per-channel constant has a kernel; Div by one does not (reference path).
    let m = b.node1("mul", Op::Mul, &[y, c], &[1, 4, 3, 3]);
    let d = b.node1("div", Op::Div, &[m, c], &[1, 4, 3, 3]);
    b.g.outputs.push(d);
    let g = b.g;
    let p = plan::plan(&g, true).unwrap();
    let mut ex = CpuExecutor::new(g.clone(), &p, 1).unwrap();
    assert_eq!(ex.kernel_nodes(), 2);
    assert!(ex.graph().is_constant(c), "the reference Div reads c");
    assert!(!ex.graph().is_constant(w), "only the conv kernel reads w");
    let held = ex.reserved_bytes() as usize;
    let c_bytes = g.constants[&c].byte_len();
    assert!(held >= p.arena_bytes + c_bytes, "{held}");
    let f = feeds(&g, 5);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    let got = ex.run(&[&f[0].1], None).unwrap();
    assert_close(&got[0], &want[0], 1e-5);
}

#[test]
fn dropout_is_removed_only_in_inference_mode() {
    for (flag, removed) in [(None, true), (Some(false), true), (Some(true), false)] {
        let mut b = Builder::new();
        let x = b.input("x", &[2, 3]);
        let mut ins = vec![Some(x), None, None];
        if let Some(f) = flag {
            let t = Tensor::Bool(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), f));
            ins[2] = Some(b.constant("training", t));
        }
        let d = b.node("drop", Op::Dropout, &ins, &[&[2, 3]])[0];
        let y = b.node1("relu", Op::Relu, &[d], &[2, 3]);
        b.g.outputs = vec![y];
        let opt = optimize(&b.g).unwrap();
        assert_eq!(opt.nodes.len() == 1, removed, "training_mode {flag:?}");
    }
}

/// An Inception-style block: three branches concatenated along channels (one of them a
/// conv → relu chain, one a pool whose input is also read after the Concat), a second Concat
/// that takes the first one's output, and the same graph at batch 2.
fn concat_block(batch: usize) -> (Graph, [ValueId; 5]) {
    let mut b = Builder::new();
    let x = b.input("x", &[batch, 8, 6, 6]);
    let wa = b.random("wa", &[4, 8, 1, 1]);
    let ca = b.node1(
        "conv_a",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, wa],
        &[batch, 4, 6, 6],
    );
    let ra = b.node1("relu_a", Op::Relu, &[ca], &[batch, 4, 6, 6]);
    let wb = b.random("wb", &[4, 8, 3, 3]);
    let cb = b.node1(
        "conv_b",
        Op::Conv(conv_attrs(3, 1, 1)),
        &[x, wb],
        &[batch, 4, 6, 6],
    );
    let pool = PoolAttrs {
        kernel_shape: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        auto_pad: AutoPad::NotSet,
        count_include_pad: false,
    };
    let p = b.node1("pool", Op::MaxPool(pool), &[x], &[batch, 8, 6, 6]);
    let cat = b.node1(
        "cat",
        Op::Concat { axis: 1 },
        &[ra, cb, p],
        &[batch, 16, 6, 6],
    );
    let wc = b.random("wc", &[16, 16, 1, 1]);
    let cc = b.node1(
        "conv_c",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[cat, wc],
        &[batch, 16, 6, 6],
    );
    let cat2 = b.node1(
        "cat2",
        Op::Concat { axis: -3 },
        &[cat, cc],
        &[batch, 32, 6, 6],
    );
    // The pool's output is read again after the Concat: it keeps its own buffer.
    let late = b.node1("late", Op::Relu, &[p], &[batch, 8, 6, 6]);
    b.g.outputs = vec![cat2, late];
    (b.g, [ra, cb, p, cat, cc])
}

#[test]
fn concat_inputs_are_written_in_place() {
    let (g, [ra, cb, p, cat, cc]) = concat_block(1);
    let plan = plan::plan(&g, true).unwrap();
    plan.validate().unwrap();
    let at = |id: ValueId| plan.get(id).unwrap();
    // relu_a (and conv_a under it) and conv_b lie in the first Concat's output, which lies in
    // the second's with conv_c after it; the pool output, read later, does not.
    assert_eq!(at(ra).in_place_of, Some(g.nodes[0].outputs[0]));
    assert_eq!(at(g.nodes[0].outputs[0]).part_of, Some(cat));
    assert_eq!(at(cb).part_of, Some(cat));
    assert_eq!(at(p).part_of, None);
    assert!(at(cat).part_of.is_some() && at(cc).part_of.is_some());
    assert_eq!(at(ra).offset, at(cat).offset);
    assert_eq!(at(cb).offset, at(cat).offset + 4 * 36 * 4);
    assert_eq!(at(cc).offset, at(cat).offset + 16 * 36 * 4);
    let no_alias = plan::plan(&g, false).unwrap();
    assert!(no_alias.values.iter().all(|v| v.part_of.is_none()));
    assert!(plan.planned_peak_bytes < no_alias.planned_peak_bytes);

    let f = feeds(&g, 5);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    for threads in [1, 2] {
        let got = run_exec(&g, threads, &f);
        for (a, b) in got.iter().zip(&want) {
            assert_close(a, b, 1e-5);
        }
    }
}

#[test]
fn concat_with_a_batch_copies() {
    // At batch 2 an input is two runs of the output, not one slice: nothing is aliased.
    let (g, _) = concat_block(2);
    let plan = plan::plan(&g, true).unwrap();
    plan.validate().unwrap();
    assert!(plan.values.iter().all(|v| v.part_of.is_none()));
    let f = feeds(&g, 6);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    let got = run_exec(&g, 2, &f);
    for (a, b) in got.iter().zip(&want) {
        assert_close(a, b, 1e-5);
    }
}

/// Three 1×1 convs of one input (with Relu, without, with Clip) and a 3×3 conv of the same
/// input between them in ONNX order, all concatenated.
fn sibling_block(batch: usize) -> Graph {
    let n = batch;
    let mut b = Builder::new();
    let x = b.input("x", &[n, 16, 9, 9]);
    let wa = b.random("wa", &[8, 16, 1, 1]);
    let ba = b.random("ba", &[8]);
    let ca = b.node1(
        "conv_a",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, wa, ba],
        &[n, 8, 9, 9],
    );
    let ra = b.node1("relu_a", Op::Relu, &[ca], &[n, 8, 9, 9]);
    let wb = b.random("wb", &[6, 16, 3, 3]);
    let cb = b.node1(
        "conv_b",
        Op::Conv(conv_attrs(3, 1, 1)),
        &[x, wb],
        &[n, 6, 9, 9],
    );
    let wc = b.random("wc", &[7, 16, 1, 1]);
    let cc = b.node1(
        "conv_c",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, wc],
        &[n, 7, 9, 9],
    );
    let wd = b.random("wd", &[5, 16, 1, 1]);
    let cd = b.node1(
        "conv_d",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, wd],
        &[n, 5, 9, 9],
    );
    let lo = b.constant("lo", Tensor::scalar_f32(-0.5));
    let hi = b.constant("hi", Tensor::scalar_f32(0.5));
    let kd = b.node1("clip_d", Op::Clip, &[cd, lo, hi], &[n, 5, 9, 9]);
    let cat = b.node1(
        "cat",
        Op::Concat { axis: 1 },
        &[ra, cb, cc, kd],
        &[n, 26, 9, 9],
    );
    b.g.outputs = vec![cat];
    b.g
}

/// The fusion pass puts the 1×1 siblings of `sibling_block` back to back, the executor runs
/// them as one kernel call, results match the reference at 1 and 2 threads (batch 1: the
/// outputs are written inside the Concat's; batch 2: copied into it), and a profiled run
/// still traces every node once (`run_exec`).
#[test]
fn sibling_pointwise_convs_run_as_one_call() {
    for batch in [1, 2] {
        let g = sibling_block(batch);
        let opt = optimize(&g).unwrap();
        let at = |name: &str| opt.nodes.iter().position(|n| n.name == name).unwrap();
        assert_eq!(
            [at("conv_c"), at("conv_d")],
            [at("conv_a") + 1, at("conv_a") + 2],
            "siblings back to back"
        );
        assert!(at("conv_b") > at("conv_d"));
        let f = feeds(&g, 9);
        let want = crate::ops::run_reference(&g, &f).unwrap();
        for threads in [1, 2] {
            let got = run_exec(&opt, threads, &f);
            for (a, b) in got.iter().zip(&want) {
                assert_close(a, b, 1e-5);
            }
        }
        let p = plan::plan(&opt, true).unwrap();
        p.validate().unwrap();
        let ex = CpuExecutor::new(opt.clone(), &p, 1).unwrap();
        assert_eq!(ex.grouped_nodes(), 3, "batch {batch}");
    }
}

/// A stride-1 and a stride-2 1×1 conv of one input (ResNet's conv1 and shortcut at a stage
/// change) are not siblings: the graph keeps its order and the executor runs them apart.
/// (Without the stride check the pass would move `conv_s` up next to `conv_a`.)
#[test]
fn pointwise_convs_with_other_strides_stay_apart() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8, 8, 8]);
    let wa = b.random("wa", &[4, 8, 1, 1]);
    let ca = b.node1(
        "conv_a",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, wa],
        &[1, 4, 8, 8],
    );
    let wm = b.random("wm", &[4, 4, 3, 3]);
    let cm = b.node1(
        "conv_m",
        Op::Conv(conv_attrs(3, 2, 1)),
        &[ca, wm],
        &[1, 4, 4, 4],
    );
    let ws = b.random("ws", &[4, 8, 1, 1]);
    let cs = b.node1(
        "conv_s",
        Op::Conv(conv_attrs(1, 2, 0)),
        &[x, ws],
        &[1, 4, 4, 4],
    );
    b.g.outputs = vec![cm, cs];
    let g = b.g;
    let opt = optimize(&g).unwrap();
    let names: Vec<&str> = opt.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["conv_a", "conv_m", "conv_s"], "order kept");
    let f = feeds(&g, 4);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    let got = run_exec(&opt, 2, &f);
    for (a, b) in got.iter().zip(&want) {
        assert_close(a, b, 1e-5);
    }
    let p = plan::plan(&opt, true).unwrap();
    assert_eq!(
        CpuExecutor::new(opt.clone(), &p, 1)
            .unwrap()
            .grouped_nodes(),
        0
    );
}

/// An Add of a constant the conv's shape (a bias map, not a residual the graph computes) stays
/// its own node: fused, the conv kernels would have no arena span to read it from and the node
/// would fall back to the reference convolution (40× slower on a 56×56 map).
#[test]
fn constant_same_shape_add_is_not_fused_as_a_residual() {
    let mut b = Builder::new();
    let x = b.input("x", &[1, 8, 5, 5]);
    let w = b.random("w", &[16, 8, 1, 1]);
    let r = b.random("r", &[1, 16, 5, 5]);
    let y = b.node1(
        "conv",
        Op::Conv(conv_attrs(1, 1, 0)),
        &[x, w],
        &[1, 16, 5, 5],
    );
    let a = b.node1("add", Op::Add, &[y, r], &[1, 16, 5, 5]);
    let z = b.node1("relu", Op::Relu, &[a], &[1, 16, 5, 5]);
    b.g.outputs.push(z);
    let g = b.g;
    let opt = optimize(&g).unwrap();
    let types: Vec<&str> = opt.nodes.iter().map(|n| n.op.type_name()).collect();
    assert_eq!(types, ["Conv", "Add", "Relu"], "{:#?}", opt.nodes);
    let p = plan::plan(&opt, true).unwrap();
    let mut ex = CpuExecutor::new(opt.clone(), &p, 1).unwrap();
    assert_eq!(ex.kernel_nodes(), opt.nodes.len());
    let f = feeds(&g, 11);
    let want = crate::ops::run_reference(&g, &f).unwrap();
    let got = ex.run(&[&f[0].1], None).unwrap();
    assert_close(&got[0], &want[0], 1e-5);
}
