//! Conveniences of the public facade that tie the modules together: shape binding and the
//! analytic report on [`Model`], the measured report on [`Session`], and ndarray → [`Tensor`]
//! conversions. They add no behaviour of their own: each is what the `engine` CLI does for the
//! corresponding command, so library users and the CLI see the same numbers.

use ndarray::ArrayD;

use crate::error::Result;
use crate::ir::Graph;
use crate::profile::{self, ProfileReport};
use crate::session::{Model, Session, SessionOptions};
use crate::tensor::Tensor;

impl Model {
    /// The graph with every shape fixed, constants folded and dead nodes removed, for the
    /// batch size and input shapes of `options` (a symbolic batch defaults to 1). Nothing
    /// runs and no memory is planned: this is what [`crate::cost::graph_cost`] and
    /// [`crate::rf::analyze`] take.
    ///
    /// ```
    /// let model = engine::Model::load("zoo:resnet20")?;
    /// let graph = model.bind(&engine::SessionOptions { batch: Some(4), ..Default::default() })?;
    /// let (_, totals) = engine::cost::graph_cost(&graph);
    /// // CIFAR ResNet-20: about 41 million MACs per image.
    /// assert_eq!(totals.macs_conv_fc_only % 4, 0);
    /// assert!((40e6..42e6).contains(&(totals.macs_conv_fc_only as f64 / 4.0)));
    /// # Ok::<(), engine::Error>(())
    /// ```
    pub fn bind(&self, options: &SessionOptions) -> Result<Graph> {
        let spec = crate::shape::BindSpec {
            batch: options.batch,
            shapes: options.input_shapes.clone(),
            max_elements: options.max_memory.map(|m| u128::from(m / 4)),
            values: options.constant_inputs.clone(),
        };
        crate::shape::bind(&self.graph, &spec)
    }

    /// The analytic profile report — per-node MACs, FLOPs, parameters, bytes moved and
    /// receptive field, plus totals — computed from shapes alone (nothing runs, weights are not
    /// read). The same data `engine profile --analytic-only` prints; `threads` and `backend`
    /// of `options` are only recorded in the report.
    ///
    /// ```
    /// let model = engine::Model::load("zoo:resnet20")?;
    /// let report = model.analytic_report(&engine::SessionOptions::default())?;
    /// assert!(report.iters.is_none() && report.totals.time_ms.is_none());
    /// let fc = report.nodes.iter().find(|n| n.name == "fc").expect("resnet20 has an fc layer");
    /// assert_eq!(fc.macs, 64 * 10);
    /// // The receptive field of the classifier covers the whole 32×32 input and more.
    /// assert!(fc.rf.is_some_and(|rf| rf.size[0] >= 32));
    /// # Ok::<(), engine::Error>(())
    /// ```
    pub fn analytic_report(&self, options: &SessionOptions) -> Result<ProfileReport> {
        let bound = self.bind(options)?;
        let batch = bound
            .inputs
            .first()
            .and_then(|&id| bound.value(id).fixed_shape())
            .and_then(|s| s.first().copied())
            .unwrap_or(1);
        let meta = profile::ReportMeta {
            model: self.source.clone(),
            backend: backend_name(options.backend).into(),
            batch,
            threads: crate::exec::executor::resolve_threads(options.threads),
            peak_gflops: None,
            peak_bandwidth_gbs: None,
            device: None,
            timing: None,
        };
        Ok(profile::analytic_graph(&bound, &meta))
    }
}

fn backend_name(backend: crate::Backend) -> &'static str {
    match backend {
        crate::Backend::Cpu => "cpu",
        crate::Backend::Wgpu => "wgpu",
    }
}

impl Session {
    /// Profiles the session the way `engine profile` does: `warmup` untimed runs, then `iters`
    /// timed runs on seeded synthetic inputs, reporting per-node medians mapped back onto the
    /// ONNX nodes, with the analytic figures alongside. The first call for a thread count
    /// measures this machine's FMA peak and memory bandwidth (~0.3 s, cached on disk) so the
    /// report can say how close each layer gets to them.
    ///
    /// Use [`profile::measure_with_inputs`] to time real inputs instead.
    ///
    /// ```
    /// let model = engine::Model::load("zoo:resnet20:batch=1")?;
    /// let mut session = engine::Session::new(&model, &engine::SessionOptions { threads: 1, ..Default::default() })?;
    /// let report = session.profile(1, 3)?;
    /// assert_eq!(report.iters, Some(3));
    /// let total = report.totals.time_ms.unwrap_or(0.0);
    /// assert!(total > 0.0);
    /// // Slowest layer first.
    /// assert!(report.slowest.windows(2).all(|w| w[0].time_ms >= w[1].time_ms));
    /// # Ok::<(), engine::Error>(())
    /// ```
    pub fn profile(&mut self, warmup: usize, iters: usize) -> Result<ProfileReport> {
        profile::measure(self, warmup, iters, &mut |_| {})
    }
}

impl From<ArrayD<f32>> for Tensor {
    /// Wraps an f32 array (made standard-layout if it is not).
    fn from(a: ArrayD<f32>) -> Tensor {
        Tensor::F32(standard(a))
    }
}

impl From<ArrayD<i64>> for Tensor {
    /// Wraps an i64 array (made standard-layout if it is not).
    fn from(a: ArrayD<i64>) -> Tensor {
        Tensor::I64(standard(a))
    }
}

/// Kernels index tensors as row-major slices: transposed views are copied once here.
fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}
