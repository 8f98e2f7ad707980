//! Hand-made graphs and reports for the profile module's tests (no executor needed).

use std::time::Duration;

use super::build::{assemble, estimate_activation_peak, reduce_traces, NodeFigures, ReportMeta};
use super::{ProfileReport, RfReport};
use crate::ir::{ConvAttrs, Dim, Graph, Node, Op, OriginNode, PoolAttrs, ValueId};
use crate::session::{NodeTrace, RunTrace};
use crate::tensor::{DType, Tensor};

pub const LONG_NAME: &str =
    "/backbone/stages.3/blocks.2/attention_branch/very_long_module_path/conv_pointwise_expand/Conv";

fn value(g: &mut Graph, name: &str, shape: &[usize]) -> ValueId {
    g.add_value(
        name,
        Some(DType::F32),
        Some(shape.iter().map(|&d| Dim::Fixed(d)).collect()),
    )
}

fn node(g: &mut Graph, name: &str, op: Op, inputs: &[ValueId], outputs: &[ValueId]) {
    let op_type = op.type_name().to_string();
    g.nodes.push(Node {
        name: name.to_string(),
        op,
        inputs: inputs.iter().map(|&i| Some(i)).collect(),
        outputs: outputs.to_vec(),
        origin: vec![OriginNode {
            name: name.to_string(),
            op_type,
        }],
    });
}

fn conv(k: usize, stride: usize, pad: usize) -> ConvAttrs {
    ConvAttrs {
        kernel_shape: Some(vec![k, k]),
        strides: vec![stride, stride],
        pads: vec![pad; 4],
        dilations: vec![1, 1],
        group: 1,
        auto_pad: Default::default(),
    }
}

/// A small bound graph: conv → bn → relu → maxpool → conv(long name) → add → gap → flatten → gemm.
pub fn sample_graph() -> Graph {
    sample_graph_sized(32, 8)
}

/// [`sample_graph`] with a `hw`×`hw` input and `c` channels (weights small and non-zero).
pub fn sample_graph_sized(hw: usize, c: usize) -> Graph {
    let mut seed = 7;
    let mut weights = |shape: &[usize]| {
        let n = shape.iter().product();
        seed += 1;
        let v = super::build::synthetic_values(n, seed)
            .iter()
            .map(|x| 0.1 * x)
            .collect();
        Tensor::from_f32(shape, v).unwrap_or_else(|| Tensor::zeros(DType::F32, shape))
    };
    let h2 = hw / 2;
    let mut g = Graph {
        name: "sample".into(),
        ..Default::default()
    };
    let x = value(&mut g, "data", &[1, 3, hw, hw]);
    g.inputs.push(x);
    let w1 = g.add_constant("w1", weights(&[c, 3, 3, 3]));
    let c1 = value(&mut g, "conv1_out", &[1, c, hw, hw]);
    node(&mut g, "conv1", Op::Conv(conv(3, 1, 1)), &[x, w1], &[c1]);
    let bn: Vec<ValueId> = (0..4)
        .map(|i| {
            let t = if i == 3 {
                Tensor::from_f32(&[c], vec![1.0; c])
            } else {
                Some(weights(&[c]))
            };
            g.add_constant(
                format!("bn{i}"),
                t.unwrap_or_else(|| Tensor::zeros(DType::F32, &[c])),
            )
        })
        .collect();
    let b1 = value(&mut g, "bn1_out", &[1, c, hw, hw]);
    node(
        &mut g,
        "bn1",
        Op::BatchNormalization { epsilon: 1e-5 },
        &[c1, bn[0], bn[1], bn[2], bn[3]],
        &[b1],
    );
    let r1 = value(&mut g, "relu1_out", &[1, c, hw, hw]);
    node(&mut g, "relu1", Op::Relu, &[b1], &[r1]);
    let p1 = value(&mut g, "pool1_out", &[1, c, h2, h2]);
    let pool = PoolAttrs {
        kernel_shape: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        auto_pad: Default::default(),
        count_include_pad: false,
    };
    node(&mut g, "pool1", Op::MaxPool(pool), &[r1], &[p1]);
    let w2 = g.add_constant("w2", weights(&[c, c, 1, 1]));
    let c2 = value(&mut g, "conv2_out", &[1, c, h2, h2]);
    node(&mut g, LONG_NAME, Op::Conv(conv(1, 1, 0)), &[p1, w2], &[c2]);
    let a = value(&mut g, "add_out", &[1, c, h2, h2]);
    node(&mut g, "add", Op::Add, &[c2, p1], &[a]);
    let gap = value(&mut g, "gap_out", &[1, c, 1, 1]);
    node(&mut g, "gap", Op::GlobalAveragePool, &[a], &[gap]);
    let fl = value(&mut g, "flat", &[1, c]);
    node(&mut g, "flatten", Op::Flatten { axis: 1 }, &[gap], &[fl]);
    let wf = g.add_constant("fc_w", weights(&[10, c]));
    let y = value(&mut g, "logits", &[1, 10]);
    node(
        &mut g,
        "fc",
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        &[fl, wf],
        &[y],
    );
    g.outputs.push(y);
    g
}

/// Figures for [`sample_graph`] computed by hand (f32, batch 1, FLOPs = 2·MACs for
/// conv/gemm, one per element for the others).
pub fn sample_figures() -> Vec<NodeFigures> {
    let act = |e: u64| e * 4;
    let f = |macs: u64, flops: u64, params: u64, out: u64, read: u64| NodeFigures {
        macs,
        flops,
        params,
        param_bytes: params * 4,
        output_bytes: act(out),
        bytes_read: read,
        bytes_written: act(out),
    };
    let conv1_macs = 8 * 32 * 32 * 27;
    vec![
        f(conv1_macs, 2 * conv1_macs, 216, 8192, act(3072) + 216 * 4),
        f(0, 2 * 8192, 32, 8192, act(8192) + 128),
        f(0, 8192, 0, 8192, act(8192)),
        f(0, 3 * 2048, 0, 2048, act(8192)),
        f(8 * 256 * 8, 2 * 8 * 256 * 8, 64, 2048, act(2048) + 256),
        f(0, 2048, 0, 2048, act(4096)),
        f(0, 2048, 0, 8, act(2048)),
        f(0, 0, 0, 8, act(8)),
        f(80, 160, 80, 10, act(8) + 320),
    ]
}

pub fn sample_rfs() -> Vec<Option<RfReport>> {
    let rf = |s: u64, st: u64, off: f64| {
        Some(RfReport {
            size: [s, s],
            stride: [st, st],
            offset: [off, off],
            aligned: true,
        })
    };
    vec![
        rf(3, 1, 0.0),
        rf(3, 1, 0.0),
        rf(3, 1, 0.0),
        rf(4, 2, 0.5),
        rf(4, 2, 0.5),
        rf(4, 2, 0.5),
        None,
        None,
        None,
    ]
}

pub fn sample_meta() -> ReportMeta {
    ReportMeta {
        model: "zoo:sample".into(),
        backend: "cpu".into(),
        batch: 1,
        threads: 2,
        peak_gflops: Some(400.0),
        peak_bandwidth_gbs: Some(20.0),
        device: None,
        timing: None,
    }
}

/// Exec graph of the sample: [conv1+bn1+relu1], [pool1], [long conv + add], [gap], [fc]
/// (flatten eliminated), with synthetic traces.
pub fn sample_exec() -> (Vec<Vec<String>>, Vec<RunTrace>) {
    let origins: Vec<Vec<String>> = vec![
        vec!["conv1".into(), "bn1".into(), "relu1".into()],
        vec!["pool1".into()],
        vec![LONG_NAME.into(), "add".into()],
        vec!["gap".into()],
        vec!["fc".into()],
    ];
    let traces = (0..5u64)
        .map(|run| {
            let us = [400 + run * 10, 50, 120 + run, 10, 20];
            let nodes = us
                .iter()
                .enumerate()
                .map(|(i, &t)| NodeTrace {
                    node: i,
                    elapsed: Duration::from_micros(t),
                    allocated_bytes: 1000 * (i as u64 + 1),
                    live_bytes: 4000 + i as u64,
                    macs_executed: 0,
                })
                .collect();
            RunTrace {
                total: Duration::from_micros(us.iter().sum::<u64>() + 30),
                nodes,
                peak_live_bytes: 70_000,
            }
        })
        .collect();
    (origins, traces)
}

pub fn sample_report(measured: bool) -> ProfileReport {
    let g = sample_graph();
    let peak = estimate_activation_peak(&g);
    let m = measured.then(|| {
        let (origins, traces) = sample_exec();
        reduce_traces(&traces, origins)
    });
    assemble(
        &g,
        &sample_figures(),
        &sample_rfs(),
        &sample_meta(),
        m.as_ref(),
        peak,
    )
}

/// Serialises the profile tests that time things or saturate the cores (calibration), so they
/// do not disturb each other.
pub fn cpu_heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
