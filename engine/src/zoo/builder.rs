//! A small graph builder used by the zoo: adds torchvision-named nodes with seeded weights and
//! tracks, per channel, an analytic estimate of each activation's mean and variance so that
//! BatchNormalization layers can be given statistics that keep activations O(1).
//!
//! Why analytic statistics: running the network to calibrate BN would need the executor, cost
//! seconds per build for the large models, and make `build` depend on kernels. With iid random
//! weights and an iid N(0,1) input, channel outputs of a convolution are close to independent,
//! so the usual moment propagation (mean through linear maps, variance through squared weights,
//! closed forms for ReLU of a Gaussian) predicts each channel's statistics well enough that every
//! BN output is roughly unit variance, then perturbed per channel so the statistics stay
//! non-trivial (a BN with mean 0 / var 1 would hide folding or broadcasting bugs).

use ndarray::{ArrayD, IxDyn};

use crate::ir::{ConvAttrs, Dim, Graph, Node, Op, OriginNode, PoolAttrs, ValueId};
use crate::tensor::{DType, Tensor};

/// SplitMix64 with Box–Muller normals: tiny, seedable and stable across versions (a PRNG
/// crate's stream may change between releases, which would silently change zoo weights).
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng {
            state: seed ^ 0x005E_ED0F_2007,
            spare: None,
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller, both values used).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let u1 = self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// What happens to BatchNormalization layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BnMode {
    /// Emit BatchNormalization nodes (as a torchvision export in eval mode with BN preserved).
    #[default]
    Keep,
    /// Fold each BN into the preceding convolution's weights and bias (as ONNX exporters do).
    Fold,
}

/// Shape (without batch) and per-channel moment estimates of a built value.
#[derive(Debug, Clone)]
struct Feat {
    /// `[C, H, W]` for feature maps, `[F]` after flatten/gemm.
    shape: Vec<usize>,
    mean: Vec<f64>,
    var: Vec<f64>,
}

/// Where a conv's weights live, for BN folding.
#[derive(Debug, Clone, Copy)]
struct ConvRef {
    node: usize,
    weight: ValueId,
    bias: Option<ValueId>,
}

pub(crate) struct Builder {
    pub(crate) g: Graph,
    rng: Rng,
    batch: Dim,
    feats: Vec<Option<Feat>>,
    convs: Vec<Option<ConvRef>>,
    bn: BnMode,
    /// First size error met (an input too small for the architecture); reported by `finish`.
    error: Option<String>,
}

/// Standard normal pdf and cdf (cdf via the Abramowitz–Stegun erf approximation, |err| < 1.5e-7).
fn phi(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn big_phi(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Mean and variance of ReLU(X) for X ~ N(m, v).
fn relu_moments(m: f64, v: f64) -> (f64, f64) {
    let s = v.max(1e-12).sqrt();
    let a = m / s;
    let (pa, ca) = (phi(a), big_phi(a));
    let mean = m * ca + s * pa;
    let second = (m * m + v) * ca + m * s * pa;
    (mean, (second - mean * mean).max(1e-12))
}

impl Builder {
    pub(crate) fn new(name: &str, seed: u64, batch: Option<usize>, bn: BnMode) -> Builder {
        Builder {
            g: Graph {
                name: name.to_string(),
                ..Graph::default()
            },
            rng: Rng::new(seed),
            batch: match batch {
                Some(b) => Dim::Fixed(b),
                None => Dim::Symbol("batch".to_string()),
            },
            feats: Vec::new(),
            convs: Vec::new(),
            bn,
            error: None,
        }
    }

    /// Output size of a window op along one axis; records an error (and returns 1) when the
    /// padded input is smaller than the window, so a too-small `input=` fails cleanly.
    fn out_size(
        &mut self,
        name: &str,
        size: usize,
        k: usize,
        s: usize,
        pb: usize,
        pe: usize,
    ) -> usize {
        if size + pb + pe < k {
            if self.error.is_none() {
                self.error = Some(format!(
                    "layer '{name}': its input is {size} wide (+{pb}/{pe} padding), smaller than its {k}-wide window; use a larger input size"
                ));
            }
            return 1;
        }
        (size + pb + pe - k) / s + 1
    }

    fn full_shape(&self, shape: &[usize]) -> Vec<Dim> {
        std::iter::once(self.batch.clone())
            .chain(shape.iter().map(|&d| Dim::Fixed(d)))
            .collect()
    }

    fn record(&mut self, id: ValueId, feat: Option<Feat>) {
        if self.feats.len() <= id.0 {
            self.feats.resize(id.0 + 1, None);
            self.convs.resize(id.0 + 1, None);
        }
        self.feats[id.0] = feat;
    }

    fn feat(&self, id: ValueId) -> &Feat {
        // Every value the builder hands out has been recorded with a Feat.
        match self.feats.get(id.0).and_then(|f| f.as_ref()) {
            Some(f) => f,
            None => panic!(
                "zoo builder: value {} has no feature record (builder bug)",
                id.0
            ),
        }
    }

    pub(crate) fn channels(&self, id: ValueId) -> usize {
        self.feat(id).shape[0]
    }

    /// The graph input `[batch, c, h, w]`, modelled as iid N(0, 1).
    pub(crate) fn input(&mut self, name: &str, c: usize, h: usize, w: usize) -> ValueId {
        let shape = vec![c, h, w];
        let id = self
            .g
            .add_value(name, Some(DType::F32), Some(self.full_shape(&shape)));
        self.g.inputs.push(id);
        self.record(
            id,
            Some(Feat {
                shape,
                mean: vec![0.0; c],
                var: vec![1.0; c],
            }),
        );
        id
    }

    fn constant(&mut self, name: String, shape: &[usize], data: Vec<f32>) -> ValueId {
        let t = ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(Tensor::F32)
            .unwrap_or_else(|_| {
                panic!("zoo builder: constant {name} has the wrong length (builder bug)")
            });
        self.g.add_constant(name, t)
    }

    fn push_node(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        shape: Vec<usize>,
        feat: Feat,
    ) -> ValueId {
        let out = self
            .g
            .add_value(name, Some(DType::F32), Some(self.full_shape(&shape)));
        let op_type = op.type_name().to_string();
        self.g.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            outputs: vec![out],
            origin: vec![OriginNode {
                name: name.to_string(),
                op_type,
            }],
        });
        self.record(out, Some(feat));
        out
    }

    /// 2-D convolution with He-normal weights. `pads` = `[top, left, bottom, right]`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        &mut self,
        name: &str,
        x: ValueId,
        cout: usize,
        k: [usize; 2],
        s: [usize; 2],
        pads: [usize; 4],
        group: usize,
        bias: bool,
    ) -> ValueId {
        let inf = self.feat(x).clone();
        let (cin, h, w) = (inf.shape[0], inf.shape[1], inf.shape[2]);
        assert!(
            cin.is_multiple_of(group) && cout.is_multiple_of(group),
            "zoo builder: {name}: channels not divisible by group"
        );
        let cpg = cin / group;
        let opg = cout / group;
        let fan_in = cpg * k[0] * k[1];
        let std = (2.0 / fan_in as f64).sqrt();
        let n = cout * fan_in;
        let mut wdata = Vec::with_capacity(n);
        let mut mean = vec![0.0; cout];
        let mut var = vec![0.0; cout];
        for (co, (m_out, v_out)) in mean.iter_mut().zip(var.iter_mut()).enumerate() {
            let g0 = (co / opg) * cpg;
            for ci in 0..cpg {
                let (mi, vi) = (inf.mean[g0 + ci], inf.var[g0 + ci]);
                for _ in 0..k[0] * k[1] {
                    let wv = (self.rng.normal() * std) as f32;
                    wdata.push(wv);
                    let wf = wv as f64;
                    *m_out += wf * mi;
                    *v_out += wf * wf * vi;
                }
            }
        }
        let weight = self.constant(format!("{name}.weight"), &[cout, cpg, k[0], k[1]], wdata);
        let bias_id = if bias {
            let b: Vec<f32> = (0..cout)
                .map(|_| (self.rng.normal() * 0.05) as f32)
                .collect();
            for (m, bv) in mean.iter_mut().zip(&b) {
                *m += *bv as f64;
            }
            Some(self.constant(format!("{name}.bias"), &[cout], b))
        } else {
            None
        };
        let ho = self.out_size(name, h, k[0], s[0], pads[0], pads[2]);
        let wo = self.out_size(name, w, k[1], s[1], pads[1], pads[3]);
        let attrs = ConvAttrs {
            kernel_shape: Some(vec![k[0], k[1]]),
            strides: vec![s[0], s[1]],
            pads: pads.to_vec(),
            dilations: vec![1, 1],
            group,
            auto_pad: Default::default(),
        };
        let shape = vec![cout, ho, wo];
        let node = self.g.nodes.len();
        let out = self.push_node(
            name,
            Op::Conv(attrs),
            vec![Some(x), Some(weight), bias_id],
            shape.clone(),
            Feat { shape, mean, var },
        );
        self.convs[out.0] = Some(ConvRef {
            node,
            weight,
            bias: bias_id,
        });
        out
    }

    /// BatchNormalization (epsilon `eps`) with statistics near the input's predicted ones:
    /// running mean = predicted mean + 0.1σ·N(0,1), running var = predicted var · e^{0.2·N(0,1)},
    /// gamma = e^{0.2·N(0,1)}, beta = 0.1·N(0,1). In `Fold` mode the same BN is folded into the
    /// producing conv (which must be the input's producer).
    pub(crate) fn bn(&mut self, name: &str, x: ValueId, eps: f32) -> ValueId {
        let inf = self.feat(x).clone();
        let c = inf.shape[0];
        let mut gamma = Vec::with_capacity(c);
        let mut beta = Vec::with_capacity(c);
        let mut rmean = Vec::with_capacity(c);
        let mut rvar = Vec::with_capacity(c);
        let mut mean = Vec::with_capacity(c);
        let mut var = Vec::with_capacity(c);
        for ch in 0..c {
            let (m, v) = (inf.mean[ch], inf.var[ch].max(1e-6));
            let g = (0.2 * self.rng.normal()).exp() as f32;
            let b = (0.1 * self.rng.normal()) as f32;
            let rm = (m + 0.1 * v.sqrt() * self.rng.normal()) as f32;
            let rv = (v * (0.2 * self.rng.normal()).exp()) as f32;
            let inv = 1.0 / (rv as f64 + eps as f64).sqrt();
            mean.push(g as f64 * (m - rm as f64) * inv + b as f64);
            var.push((g as f64 * inv).powi(2) * v);
            gamma.push(g);
            beta.push(b);
            rmean.push(rm);
            rvar.push(rv);
        }
        let shape = inf.shape.clone();
        let feat = Feat {
            shape: shape.clone(),
            mean,
            var,
        };
        match self.bn {
            BnMode::Keep => {
                let ins = [
                    (format!("{name}.weight"), gamma),
                    (format!("{name}.bias"), beta),
                    (format!("{name}.running_mean"), rmean),
                    (format!("{name}.running_var"), rvar),
                ];
                let mut inputs = vec![Some(x)];
                for (n, d) in ins {
                    inputs.push(Some(self.constant(n, &[c], d)));
                }
                self.push_node(
                    name,
                    Op::BatchNormalization { epsilon: eps },
                    inputs,
                    shape,
                    feat,
                )
            }
            BnMode::Fold => {
                let conv = match self.convs.get(x.0).copied().flatten() {
                    Some(cr) => cr,
                    None => panic!(
                        "zoo builder: {name}: BN folding needs a conv producer (builder bug)"
                    ),
                };
                let scale: Vec<f32> = gamma
                    .iter()
                    .zip(&rvar)
                    .map(|(&g, &v)| g / (v + eps).sqrt())
                    .collect();
                if let Some(Tensor::F32(wt)) = self.g.constants.get_mut(&conv.weight) {
                    let per = wt.len() / c;
                    if let Some(sl) = wt.as_slice_mut() {
                        for (chunk, &sc) in sl.chunks_mut(per).zip(&scale) {
                            chunk.iter_mut().for_each(|v| *v *= sc);
                        }
                    }
                }
                let old_b: Vec<f32> = match conv.bias.and_then(|b| self.g.constants.get(&b)) {
                    Some(Tensor::F32(b)) => b.iter().copied().collect(),
                    _ => vec![0.0; c],
                };
                let new_b: Vec<f32> = (0..c)
                    .map(|i| beta[i] + (old_b[i] - rmean[i]) * scale[i])
                    .collect();
                match conv.bias {
                    Some(b) => {
                        self.g.constants.insert(
                            b,
                            Tensor::F32(
                                ArrayD::from_shape_vec(IxDyn(&[c]), new_b)
                                    .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[c]))),
                            ),
                        );
                    }
                    None => {
                        let conv_name = self.g.nodes[conv.node].name.clone();
                        let b = self.constant(format!("{conv_name}.bias"), &[c], new_b);
                        let ins = &mut self.g.nodes[conv.node].inputs;
                        ins.resize(2, None);
                        ins.push(Some(b));
                        if let Some(cr) = self.convs[x.0].as_mut() {
                            cr.bias = Some(b);
                        }
                    }
                }
                self.record(x, Some(feat));
                x
            }
        }
    }

    pub(crate) fn relu(&mut self, name: &str, x: ValueId) -> ValueId {
        let inf = self.feat(x).clone();
        let (mean, var): (Vec<f64>, Vec<f64>) = inf
            .mean
            .iter()
            .zip(&inf.var)
            .map(|(&m, &v)| relu_moments(m, v))
            .unzip();
        let shape = inf.shape.clone();
        self.push_node(
            name,
            Op::Relu,
            vec![Some(x)],
            shape.clone(),
            Feat { shape, mean, var },
        )
    }

    /// conv (no bias) → BN → ReLU named `{prefix}conv`, `{prefix}bn`, `{prefix}relu`
    /// (timm/torchvision `BasicConv2d`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_bn_relu(
        &mut self,
        prefix: &str,
        x: ValueId,
        cout: usize,
        k: [usize; 2],
        s: [usize; 2],
        pads: [usize; 4],
        eps: f32,
    ) -> ValueId {
        let c = self.conv(&format!("{prefix}conv"), x, cout, k, s, pads, 1, false);
        let b = self.bn(&format!("{prefix}bn"), c, eps);
        self.relu(&format!("{prefix}relu"), b)
    }

    fn pool_attrs(k: usize, s: usize, p: usize, count_include_pad: bool) -> PoolAttrs {
        PoolAttrs {
            kernel_shape: vec![k, k],
            strides: vec![s, s],
            pads: vec![p; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            auto_pad: Default::default(),
            count_include_pad,
        }
    }

    /// Square max pooling. Moments: the max of n roughly Gaussian cells, mean + 0.75·√(2 ln n)·σ
    /// and 0.4·variance (a crude order-statistic estimate; a BN always follows the next conv).
    pub(crate) fn maxpool(
        &mut self,
        name: &str,
        x: ValueId,
        k: usize,
        s: usize,
        p: usize,
    ) -> ValueId {
        let inf = self.feat(x).clone();
        let n = (k * k) as f64;
        let c = 0.75 * (2.0 * n.ln()).sqrt();
        let mean = inf
            .mean
            .iter()
            .zip(&inf.var)
            .map(|(&m, &v)| m + c * v.sqrt())
            .collect();
        let var = inf.var.iter().map(|&v| 0.4 * v).collect();
        let ho = self.out_size(name, inf.shape[1], k, s, p, p);
        let wo = self.out_size(name, inf.shape[2], k, s, p, p);
        let shape = vec![inf.shape[0], ho, wo];
        self.push_node(
            name,
            Op::MaxPool(Self::pool_attrs(k, s, p, false)),
            vec![Some(x)],
            shape.clone(),
            Feat { shape, mean, var },
        )
    }

    /// Square average pooling; independent cells, so variance / n.
    pub(crate) fn avgpool(
        &mut self,
        name: &str,
        x: ValueId,
        k: usize,
        s: usize,
        p: usize,
        count_include_pad: bool,
    ) -> ValueId {
        let inf = self.feat(x).clone();
        let n = (k * k) as f64;
        let var = inf.var.iter().map(|&v| v / n).collect();
        let ho = self.out_size(name, inf.shape[1], k, s, p, p);
        let wo = self.out_size(name, inf.shape[2], k, s, p, p);
        let shape = vec![inf.shape[0], ho, wo];
        self.push_node(
            name,
            Op::AveragePool(Self::pool_attrs(k, s, p, count_include_pad)),
            vec![Some(x)],
            shape.clone(),
            Feat {
                shape,
                mean: inf.mean,
                var,
            },
        )
    }

    pub(crate) fn add(&mut self, name: &str, a: ValueId, b: ValueId) -> ValueId {
        let (fa, fb) = (self.feat(a).clone(), self.feat(b).clone());
        assert_eq!(
            fa.shape, fb.shape,
            "zoo builder: {name}: Add of different shapes"
        );
        let mean = fa.mean.iter().zip(&fb.mean).map(|(x, y)| x + y).collect();
        let var = fa.var.iter().zip(&fb.var).map(|(x, y)| x + y).collect();
        let shape = fa.shape.clone();
        self.push_node(
            name,
            Op::Add,
            vec![Some(a), Some(b)],
            shape.clone(),
            Feat { shape, mean, var },
        )
    }

    /// Channel concatenation.
    pub(crate) fn concat(&mut self, name: &str, xs: &[ValueId]) -> ValueId {
        let mut shape = self.feat(xs[0]).shape.clone();
        shape[0] = 0;
        let (mut mean, mut var) = (Vec::new(), Vec::new());
        for &x in xs {
            let f = self.feat(x);
            assert_eq!(
                f.shape[1..],
                shape[1..],
                "zoo builder: {name}: Concat of different spatial sizes"
            );
            shape[0] += f.shape[0];
            mean.extend_from_slice(&f.mean);
            var.extend_from_slice(&f.var);
        }
        self.push_node(
            name,
            Op::Concat { axis: 1 },
            xs.iter().map(|&x| Some(x)).collect(),
            shape.clone(),
            Feat { shape, mean, var },
        )
    }

    pub(crate) fn global_avgpool(&mut self, name: &str, x: ValueId) -> ValueId {
        let inf = self.feat(x).clone();
        let n = (inf.shape[1] * inf.shape[2]) as f64;
        let var = inf.var.iter().map(|&v| v / n).collect();
        let shape = vec![inf.shape[0], 1, 1];
        self.push_node(
            name,
            Op::GlobalAveragePool,
            vec![Some(x)],
            shape.clone(),
            Feat {
                shape,
                mean: inf.mean,
                var,
            },
        )
    }

    pub(crate) fn flatten(&mut self, name: &str, x: ValueId) -> ValueId {
        let inf = self.feat(x).clone();
        let f: usize = inf.shape.iter().product();
        let per = f / inf.shape[0];
        let mean = inf
            .mean
            .iter()
            .flat_map(|&m| std::iter::repeat_n(m, per))
            .collect();
        let var = inf
            .var
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, per))
            .collect();
        self.push_node(
            name,
            Op::Flatten { axis: 1 },
            vec![Some(x)],
            vec![f],
            Feat {
                shape: vec![f],
                mean,
                var,
            },
        )
    }

    /// Fully connected layer `y = x·Wᵀ + b` (torchvision Linear, exported as Gemm transB=1).
    /// `relu_gain`: He scaling (√(2/fan_in)) for hidden layers, LeCun (√(1/fan_in)) for logits.
    pub(crate) fn gemm(&mut self, name: &str, x: ValueId, out: usize, relu_gain: bool) -> ValueId {
        let inf = self.feat(x).clone();
        let fan_in = inf.shape[0];
        let std = ((if relu_gain { 2.0 } else { 1.0 }) / fan_in as f64).sqrt();
        let mut w = Vec::with_capacity(out * fan_in);
        let mut mean = vec![0.0; out];
        let mut var = vec![0.0; out];
        for o in 0..out {
            for i in 0..fan_in {
                let wv = (self.rng.normal() * std) as f32;
                w.push(wv);
                mean[o] += wv as f64 * inf.mean[i];
                var[o] += (wv as f64).powi(2) * inf.var[i];
            }
        }
        let b: Vec<f32> = (0..out)
            .map(|_| (self.rng.normal() * 0.01) as f32)
            .collect();
        for (m, bv) in mean.iter_mut().zip(&b) {
            *m += *bv as f64;
        }
        let wid = self.constant(format!("{name}.weight"), &[out, fan_in], w);
        let bid = self.constant(format!("{name}.bias"), &[out], b);
        let shape = vec![out];
        self.push_node(
            name,
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            },
            vec![Some(x), Some(wid), Some(bid)],
            shape.clone(),
            Feat { shape, mean, var },
        )
    }

    /// Marks `x` as a graph output and returns the graph.
    pub(crate) fn finish(mut self, x: ValueId) -> crate::Result<Graph> {
        if let Some(e) = self.error.take() {
            return Err(crate::Error::Model(format!(
                "zoo model {}: {e}",
                self.g.name
            )));
        }
        self.g.outputs.push(x);
        Ok(self.g)
    }
}

/// Scales a channel count by the width multiplier, keeping it a positive multiple of `multiple`
/// (the group count for grouped convolutions).
pub(crate) fn scale_ch(c: usize, width: f64, multiple: usize) -> usize {
    let m = multiple.max(1);
    let units = ((c as f64 * width) / m as f64).round() as usize;
    units.max(1) * m
}
