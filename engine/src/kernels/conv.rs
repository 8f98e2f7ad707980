//! Convolution (any number of spatial dims, groups, dilation, asymmetric pads) with a fused
//! bias + residual + activation epilogue.
//!
//! Usage by the executor:
//! 1. At load: `let g = ConvGeometry::new(..)?;` then
//!    `let w = PackedConvWeights::new(&g, &oihw_weights, bias)?;` — picks the algorithm
//!    ([`ConvAlgo`]) and packs the weights once.
//! 2. At planning: reserve `conv_scratch_len(&g, &w, threads)` floats of scratch
//!    (`threads` = the size of the rayon pool the executor runs kernels in).
//! 3. At run: `conv(&g, input, &w, residual, activation, output, scratch)?` inside that pool.
//!
//! Algorithms:
//! - [`ConvAlgo::Depthwise`] (group == cin == cout, 1-D/2-D): direct kernel, no scratch.
//! - [`ConvAlgo::Grouped`] (2-D, several groups of at most 64 channels, not 1×1 stride 1):
//!   direct kernel [`super::grouped_conv`] (ResNeXt's 3×3 convs).
//! - [`ConvAlgo::PointwiseDirect`] (all kernel dims 1, no pad, any stride; the default for
//!   them): [`super::pointwise_conv`], a weight-stationary GEMM with the weights packed at
//!   load, the input packed per block of positions and the epilogue in its only store.
//!   `ENGINE_POINTWISE=gemm` puts 1×1 convs back on the GEMM paths below, `stride1` keeps
//!   strided ones on im2col.
//! - [`ConvAlgo::PointwiseChannels`] (the same convs on maps of at most 64 positions that do
//!   not fill whole 16-position tiles, e.g. 7×7, see
//!   [`super::pointwise_channels::worth_it`]): [`super::pointwise_channels`], the register tile
//!   across output channels instead of positions. `ENGINE_POINTWISE=positions` keeps them on
//!   the position-wide kernel.
//! - [`ConvAlgo::Pointwise`] (all kernel dims 1, stride 1, no pad, with `ENGINE_POINTWISE=gemm`
//!   or [`PackedConvWeights::with_gemm`]): the input already is the GEMM's right-hand matrix
//!   `X[cin_g × ∏spatial]`.
//! - [`ConvAlgo::DirectChannels`] (2-D, group 1, kernel larger than 1×1, at least 27
//!   multiply-adds per output, output channels that fill 16-channel panels to within 15%, where
//!   Winograd was not chosen; see [`super::direct_channels::worth_it`]): [`super::direct_channels`],
//!   a direct convolution whose register tile spans 16 output channels × 6 positions of the
//!   output plane (rows crossed freely), each position broadcasting its own input: no columns
//!   computed and thrown away (strided convs, row ends), no channel rounding to 6.
//!   `ENGINE_CONV_ALGO=channels` forces it wherever it applies; any other value of it, or
//!   `ENGINE_DIRECT_CHANNELS=off`, turns it off (the choice below then stands).
//! - [`ConvAlgo::Direct`] (2-D, group 1, kernel larger than 1×1, at least 27 multiply-adds
//!   per output and 128 output positions, where at most 15% of the computed positions are thrown away and
//!   strided convs have at most 384 output channels, see [`super::direct_conv::worth_it`],
//!   and the channel-wide kernel declined):
//!   [`super::direct_conv`], an implicit GEMM over a zero-padded copy of the image (phase-split
//!   for strides, transposed for kernels wider than tall, none for unpadded stride-1 convs)
//!   with the epilogue in its store; no im2col, no per-call packing. `ENGINE_CONV_ALGO=im2col` or `ENGINE_DIRECT_CONV=off`
//!   turn it off, `ENGINE_CONV_ALGO=direct` forces it wherever it applies.
//! - [`ConvAlgo::Unfolded`] (group 1, kernel larger than 1×1, at most 64 output positions,
//!   where neither the direct kernel nor Winograd was chosen: ResNet-50's 3×3/2 to 7×7,
//!   Inception-v3's 8×8 layers): one image's im2col matrix, then the 1×1 kernels on it
//!   ([`super::unfolded_conv`]). `ENGINE_CONV_ALGO=unfolded` forces it wherever it applies;
//!   any other value of it, or `ENGINE_UNFOLDED_CONV=off`, turns it off.
//! - [`ConvAlgo::Im2col`] (everything else): im2col of a block of output columns into
//!   scratch, then GEMM. Blocking over columns keeps scratch to a few hundred KiB per thread.
//! - [`ConvAlgo::Winograd`] (2-D 3×3, stride 1, dilation 1, group 1, at least
//!   [`WINOGRAD_MIN_IN_CHANNELS`] channels in, [`WINOGRAD_MIN_OUT_CHANNELS`] out and
//!   [`WINOGRAD_MIN_OUT_PLANE`] output
//!   pixels): [`super::winograd`] F(2×2, 3×3) by
//!   default. `ENGINE_CONV_ALGO=im2col` disables it, `winograd` (= `winograd2`) forces F(2×2)
//!   and `winograd4` F(4×4) (less accurate, ~12× im2col's error) wherever it applies.
//!
//! GEMM: by default the `gemm` crate ([`ConvGemm::Crate`]) per work item, then the epilogue over
//! the item's rows while they are in cache. [`ConvGemm::Packed`] is the engine's own kernel
//! ([`super::packed_gemm`]): weights packed at load, im2col written straight into packed
//! panels, epilogue in the micro-kernel's store; it measured ~20% slower than `gemm` on AVX2.
//!
//! Threads: work items are (image, group, column block, row part); up to
//! `rayon::current_num_threads()` scratch slots take them from a shared counter, one at a
//! time. Each output value is computed by exactly
//! one item with the same K order whatever the thread count, so results do not depend on it
//! (row parts only change which thread computes a row).

use super::cpu_features::simd_level;
use super::elementwise::bias_residual_activation;
use super::gemm::{GemmBackend, SendPtr};
use super::im2col::im2col_row;
use super::packed_gemm::{self, packed_b_len, Epilogue, PackedA, MR, MR_AVX2, NR};
use super::winograd::{
    winograd_conv, winograd_macs, winograd_scratch_len, WinogradShape, WinogradTile,
    WinogradWeights,
};
use super::{ensure, KernelError};
use crate::ir::Activation;
use rayon::prelude::*;

/// Everything about a convolution's shapes. All per-axis vectors have one entry per spatial
/// dimension (2 for Conv2d). `out_spatial` is computed by [`ConvGeometry::new`] from the usual
/// formula `(in + pad_begin + pad_end − dilation·(kernel−1) − 1) / stride + 1` (floor).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_spatial: Vec<usize>,
    pub out_channels: usize,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub group: usize,
    pub out_spatial: Vec<usize>,
}

impl ConvGeometry {
    /// Builds and validates a geometry; computes the output spatial dims.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batch: usize,
        in_channels: usize,
        in_spatial: &[usize],
        out_channels: usize,
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads_begin: &[usize],
        pads_end: &[usize],
        group: usize,
    ) -> Result<ConvGeometry, KernelError> {
        let nd = in_spatial.len();
        ensure!(nd >= 1, "conv needs at least one spatial dimension");
        for (name, v) in [
            ("kernel", kernel),
            ("strides", strides),
            ("dilations", dilations),
            ("pads_begin", pads_begin),
            ("pads_end", pads_end),
        ] {
            ensure!(
                v.len() == nd,
                "conv {name} has {} entries, expected {nd} (one per spatial dim)",
                v.len()
            );
        }
        let mut out_spatial = Vec::with_capacity(nd);
        for d in 0..nd {
            ensure!(
                strides[d] >= 1 && dilations[d] >= 1 && kernel[d] >= 1,
                "conv kernel, strides and dilations must be >= 1 (axis {d})"
            );
            let span = dilations[d] * (kernel[d] - 1) + 1;
            let padded = in_spatial[d] + pads_begin[d] + pads_end[d];
            ensure!(
                padded >= span,
                "conv axis {d}: padded input {padded} smaller than dilated kernel {span}"
            );
            out_spatial.push((padded - span) / strides[d] + 1);
        }
        let g = ConvGeometry {
            batch,
            in_channels,
            in_spatial: in_spatial.to_vec(),
            out_channels,
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            pads_begin: pads_begin.to_vec(),
            pads_end: pads_end.to_vec(),
            group,
            out_spatial,
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks internal consistency (for geometries built by hand).
    pub fn validate(&self) -> Result<(), KernelError> {
        let nd = self.in_spatial.len();
        ensure!(nd >= 1, "conv needs at least one spatial dimension");
        for v in [
            &self.kernel,
            &self.strides,
            &self.dilations,
            &self.pads_begin,
            &self.pads_end,
            &self.out_spatial,
        ] {
            ensure!(
                v.len() == nd,
                "conv geometry vectors must all have {nd} entries"
            );
        }
        ensure!(self.group >= 1, "conv group must be >= 1");
        ensure!(
            self.in_channels.is_multiple_of(self.group)
                && self.out_channels.is_multiple_of(self.group),
            "conv channels ({} in, {} out) not divisible by group {}",
            self.in_channels,
            self.out_channels,
            self.group
        );
        for d in 0..nd {
            ensure!(
                self.strides[d] >= 1 && self.dilations[d] >= 1 && self.kernel[d] >= 1,
                "conv axis {d}: zero kernel/stride/dilation"
            );
            // Every output position's first tap must start inside the padded input.
            let span = self.dilations[d] * (self.kernel[d] - 1) + 1;
            let padded = self.in_spatial[d] + self.pads_begin[d] + self.pads_end[d];
            ensure!(
                self.out_spatial[d] == 0
                    || (self.out_spatial[d] - 1) * self.strides[d] + span <= padded,
                "conv axis {d}: {} outputs do not fit the padded input {padded}",
                self.out_spatial[d]
            );
        }
        Ok(())
    }

    pub fn cin_per_group(&self) -> usize {
        self.in_channels / self.group
    }
    pub fn cout_per_group(&self) -> usize {
        self.out_channels / self.group
    }
    /// ∏kernel.
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }
    /// ∏in_spatial.
    pub fn in_plane(&self) -> usize {
        self.in_spatial.iter().product()
    }
    /// ∏out_spatial.
    pub fn out_plane(&self) -> usize {
        self.out_spatial.iter().product()
    }
    /// Input length in floats (N·C·∏in).
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_plane()
    }
    /// Output length in floats (N·Cout·∏out).
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_plane()
    }
    /// OIHW weight length in floats.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.cin_per_group() * self.kernel_size()
    }
    /// Multiply-accumulates of the convolution (padding taps counted, as usual).
    pub fn macs(&self) -> u64 {
        (self.batch * self.out_channels * self.out_plane()) as u64
            * (self.cin_per_group() * self.kernel_size()) as u64
    }
    fn is_pointwise(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.strides.iter().all(|&s| s == 1)
            && self
                .pads_begin
                .iter()
                .chain(&self.pads_end)
                .all(|&p| p == 0)
    }
    /// Whether [`ConvAlgo::Winograd`] can compute this geometry.
    pub fn winograd_applies(&self) -> bool {
        self.in_spatial.len() == 2
            && self.kernel == [3, 3]
            && self.strides == [1, 1]
            && self.dilations == [1, 1]
            && self.group == 1
            && self.pads_begin.iter().all(|&p| p <= 2)
            && self.out_spatial.iter().all(|&o| o >= 1)
    }
    fn winograd_shape(&self) -> WinogradShape {
        WinogradShape {
            batch: self.batch,
            in_h: self.in_spatial[0],
            in_w: self.in_spatial[1],
            out_h: self.out_spatial[0],
            out_w: self.out_spatial[1],
            pad_top: self.pads_begin[0],
            pad_left: self.pads_begin[1],
        }
    }
    fn is_depthwise(&self) -> bool {
        self.group > 1
            && self.group == self.in_channels
            && self.group == self.out_channels
            && self.in_spatial.len() <= 2
    }
}

/// How a convolution is computed (chosen once by [`PackedConvWeights::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgo {
    /// 1×1, stride 1, no padding: GEMM straight on the input.
    Pointwise,
    /// 1×1, no padding, any stride: the engine's weight-stationary kernel with the epilogue
    /// in its store (see [`super::pointwise_conv`]).
    PointwiseDirect,
    /// 1×1, no padding, on small maps: the engine's kernel with its register tile across
    /// output channels (see [`super::pointwise_channels`]).
    PointwiseChannels,
    /// im2col of column blocks into scratch + GEMM.
    Im2col,
    /// Direct per-channel kernel (group == in == out channels).
    Depthwise,
    /// Direct kernel for few channels per group (see [`super::grouped_conv`]).
    Grouped,
    /// Winograd F(m×m, 3×3) with transformed weights (see [`super::winograd`]).
    Winograd(WinogradTile),
    /// 2-D implicit GEMM that reads the (padded) input where it lies (see
    /// [`super::direct_conv`]).
    Direct,
    /// The same with its register tile across output channels (see
    /// [`super::direct_channels`]).
    DirectChannels,
    /// Small maps: one image's im2col matrix into scratch, then the 1×1 kernels on it (see
    /// [`super::unfolded_conv`]).
    Unfolded,
}

/// Which GEMM runs the Pointwise/Im2col algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvGemm {
    /// The engine's packed kernel with the fused epilogue (`ENGINE_CONV_GEMM=packed`).
    Packed,
    /// A crate GEMM into the output, then the epilogue over the block (default: `gemm`).
    Crate(GemmBackend),
}

/// Weights (and bias) of one convolution, packed for the chosen algorithm. Built once at load.
#[derive(Debug, Clone)]
pub struct PackedConvWeights {
    algo: ConvAlgo,
    gemm: ConvGemm,
    /// Geometry fields the packing depends on, checked again at run time.
    out_channels: usize,
    cin_per_group: usize,
    kernel: Vec<usize>,
    group: usize,
    /// OIHW weights as given (crate GEMM rows per group; depthwise taps).
    raw: Vec<f32>,
    /// One packed matrix per group (only with [`ConvGemm::Packed`]).
    packed: Vec<PackedA>,
    /// Transformed weights (only with [`ConvAlgo::Winograd`]; `raw` is then empty).
    wino: Option<WinogradWeights>,
    bias: Vec<f32>,
}

impl PackedConvWeights {
    /// Packs OIHW `weights` (`out_channels × cin/group × ∏kernel`) and the optional per-output-
    /// channel `bias` for `geom`, choosing the algorithm and GEMM for this machine.
    pub fn new(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedConvWeights, KernelError> {
        // The crate GEMM measured faster than the packed kernel on the AVX2 machine we could
        // measure (see packed_gemm's module docs); `ENGINE_CONV_GEMM=packed|gemm|matrixmultiply`
        // overrides the choice (read once per packing, i.e. at model load).
        let gemm = match std::env::var("ENGINE_CONV_GEMM").ok().as_deref() {
            Some("packed") => ConvGemm::Packed,
            Some("matrixmultiply") => ConvGemm::Crate(GemmBackend::MatrixMultiply),
            _ => ConvGemm::Crate(GemmBackend::Gemm),
        };
        // Winograd (F(2×2), the accurate tile) where it measured faster than the alternative
        // (direct or im2col): enough channels for its GEMMs to be efficient and its per-tile
        // transforms (O(cin + cout) per tile against O(cin·cout) GEMM work) to be cheap. Per
        // node at 1 thread since its GEMMs run on the 1×1 kernel with U packed at load (engine
        // profile, 4 interleaved runs against `ENGINE_CONV_ALGO=winograd`, 27 Nov 14:00):
        // ResNet-50 512 ch at 7×7 0.80× im2col's time; Inception-v3 80→192 at 71×71 0.85× the
        // direct kernel's, 384–448 ch at 8×8 ~1.0× (a second run: 448→384 0.75–0.79×); but
        // 96→96 at 35×35 0.84–0.96× in one run and 1.06–1.26× in another, 64→96 at 35×35
        // 1.07–1.11× (slower), ResNet-50 64 ch at 56×56 1.48×, 32→32/64 at 147×147 1.1–1.5×.
        // After the transforms were written out (28 Nov, per node, 4 alternating runs, same
        // binary with `ENGINE_CONV_ALGO=winograd`): Inception's 96→96 at 35×35 0.83–0.85× the
        // direct kernel's time at 1 thread and 0.85–0.86× at 2, 64→96 0.91–0.95× and
        // 0.88–1.04×, so from 64 channels in and 96 out; ResNet-50's 64→64 at 56×56 ties
        // (0.98–1.0×) and the 32-channel 147×147 convs are still slower (1.17–1.27×).
        // With the epilogue in the output transform's stores (29 Nov, two binaries, 8
        // alternating runs, fastest of each) ResNet-50's 64→64 at 56×56 took 0.86–0.91× the
        // direct kernel's time at 1 thread and 0.92–0.94× at 2, so from 64 out.
        let algo_env = std::env::var("ENGINE_CONV_ALGO").ok();
        let wino = match algo_env.as_deref() {
            Some("im2col" | "direct" | "unfolded") => None,
            Some("winograd") | Some("winograd2") => Some(WinogradTile::F2),
            Some("winograd4") => Some(WinogradTile::F4),
            _ => (geom.cin_per_group() >= WINOGRAD_MIN_IN_CHANNELS
                && geom.cout_per_group() >= WINOGRAD_MIN_OUT_CHANNELS
                && geom.out_plane() >= WINOGRAD_MIN_OUT_PLANE)
                .then_some(DEFAULT_WINOGRAD_TILE),
        };
        let wino = wino.filter(|_| geom.winograd_applies());
        // The direct kernel wherever Winograd was not chosen and it measured faster
        // (`direct_conv::worth_it`); `ENGINE_CONV_ALGO=im2col` turns it off, `direct` forces it
        // wherever it applies, Winograd included.
        // The channel-wide direct kernel where it measured faster than the position-wide one
        // (`direct_channels::worth_it`); `ENGINE_CONV_ALGO=channels` forces it wherever it
        // applies, `ENGINE_DIRECT_CHANNELS=off` keeps the rest of the default choice.
        let channels = match algo_env.as_deref() {
            Some("channels") => super::direct_channels::applies(geom),
            Some(_) => false,
            None => {
                wino.is_none()
                    && !std::env::var("ENGINE_DIRECT_CHANNELS").is_ok_and(|v| v == "off")
                    && super::direct_channels::worth_it(geom)
            }
        };
        if channels {
            return PackedConvWeights::with_direct_channels(geom, weights, bias);
        }
        let direct = match algo_env.as_deref() {
            Some("im2col" | "winograd" | "winograd2" | "winograd4" | "unfolded" | "channels") => {
                false
            }
            Some("direct") => super::direct_conv::applies(geom),
            // `ENGINE_DIRECT_CONV=off` keeps the rest of the default choice (A/B runs).
            _ if std::env::var("ENGINE_DIRECT_CONV").is_ok_and(|v| v == "off") => false,
            _ => super::direct_conv::worth_it(geom),
        };
        if wino.is_none() && direct {
            return PackedConvWeights::with_direct(geom, weights, bias);
        }
        // Small maps the direct kernel and Winograd left to im2col: the 1×1 kernels on the
        // image's im2col matrix (`ENGINE_UNFOLDED_CONV=off` keeps them on im2col, for A/B runs;
        // `ENGINE_CONV_ALGO=unfolded` forces it wherever it applies).
        let unfolded = match algo_env.as_deref() {
            None => {
                !std::env::var("ENGINE_UNFOLDED_CONV").is_ok_and(|v| v == "off")
                    && super::unfolded_conv::worth_it(geom)
            }
            Some("unfolded") => super::unfolded_conv::applies(geom),
            Some(_) => false,
        };
        if wino.is_none() && unfolded {
            return PackedConvWeights::with_unfolded(geom, weights, bias);
        }
        // 1×1 convs on the engine's own kernel unless a GEMM is asked for
        // (`ENGINE_POINTWISE=gemm` keeps the GEMM path with the chosen `ENGINE_CONV_GEMM`;
        // `stride1` keeps strided 1×1 convs on im2col).
        let pointwise = match std::env::var("ENGINE_POINTWISE").ok().as_deref() {
            Some("gemm") => false,
            Some("stride1") => geom.is_pointwise(),
            _ => super::pointwise_conv::applies(geom),
        };
        if pointwise && !geom.is_depthwise() {
            // Small maps on the channel-wide tile unless `ENGINE_POINTWISE=positions` (A/B).
            let positions = std::env::var("ENGINE_POINTWISE").is_ok_and(|v| v == "positions");
            if !positions && super::pointwise_channels::worth_it(geom) {
                return PackedConvWeights::with_pointwise_channels(geom, weights, bias);
            }
            return PackedConvWeights::with_pointwise(geom, weights, bias);
        }
        PackedConvWeights::with_algo(geom, weights, bias, gemm, wino)
    }

    /// [`ConvAlgo::Direct`] where [`super::direct_conv::applies`], otherwise the same as
    /// [`PackedConvWeights::with_gemm`] with the default crate GEMM.
    pub fn with_direct(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedConvWeights, KernelError> {
        PackedConvWeights::with_own_kernel(
            geom,
            weights,
            bias,
            ConvAlgo::Direct,
            super::direct_conv::applies(geom),
            super::direct_conv::pack_weights,
        )
    }

    /// [`ConvAlgo::DirectChannels`] where [`super::direct_channels::applies`], otherwise the
    /// same as [`PackedConvWeights::with_gemm`] with the default crate GEMM.
    pub fn with_direct_channels(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedConvWeights, KernelError> {
        PackedConvWeights::with_own_kernel(
            geom,
            weights,
            bias,
            ConvAlgo::DirectChannels,
            super::direct_channels::applies(geom),
            super::direct_channels::pack_weights,
        )
    }

    /// [`ConvAlgo::Unfolded`] where [`super::unfolded_conv::applies`], otherwise the same as
    /// [`PackedConvWeights::with_gemm`] with the default crate GEMM.
    pub fn with_unfolded(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedConvWeights, KernelError> {
        PackedConvWeights::with_own_kernel(
            geom,
            weights,
            bias,
            ConvAlgo::Unfolded,
            super::unfolded_conv::applies(geom),
            super::unfolded_conv::pack_weights,
        )
    }

    /// [`ConvAlgo::PointwiseDirect`] where the geometry is a 1×1 unpadded conv,
    /// otherwise the same as [`PackedConvWeights::with_gemm`] with the default crate GEMM.
    pub fn with_pointwise(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedConvWeights, KernelError> {
        PackedConvWeights::with_own_kernel(
            geom,
            weights,
            bias,
            ConvAlgo::PointwiseDirect,
            super::pointwise_conv::applies(geom),
            super::pointwise_conv::pack_weights,
        )
    }

    /// [`ConvAlgo::PointwiseChannels`] where the geometry is a 1×1 unpadded conv,
    /// otherwise the same as [`PackedConvWeights::with_gemm`] with the default crate GEMM.
    pub fn with_pointwise_channels(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedConvWeights, KernelError> {
        PackedConvWeights::with_own_kernel(
            geom,
            weights,
            bias,
            ConvAlgo::PointwiseChannels,
            super::pointwise_channels::applies(geom),
            super::pointwise_channels::pack_weights,
        )
    }

    /// `algo` with weights from `pack` where it `applies`, otherwise the default crate-GEMM
    /// packing; either way the geometry, weights and bias are validated by
    /// [`PackedConvWeights::with_gemm`] first.
    fn with_own_kernel(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        algo: ConvAlgo,
        applies: bool,
        pack: fn(&ConvGeometry, &[f32]) -> Vec<f32>,
    ) -> Result<PackedConvWeights, KernelError> {
        let mut p =
            PackedConvWeights::with_gemm(geom, weights, bias, ConvGemm::Crate(GemmBackend::Gemm))?;
        if applies {
            p.algo = algo;
            p.raw = pack(geom, weights);
            p.packed = Vec::new();
        }
        Ok(p)
    }

    /// [`PackedConvWeights::with_gemm`], plus Winograd with tile `wino` where the geometry
    /// allows it ([`ConvGeometry::winograd_applies`]; otherwise `wino` is ignored).
    pub fn with_algo(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        gemm: ConvGemm,
        wino: Option<WinogradTile>,
    ) -> Result<PackedConvWeights, KernelError> {
        let mut p = PackedConvWeights::with_gemm(geom, weights, bias, gemm)?;
        if let Some(tile) = wino.filter(|_| geom.winograd_applies()) {
            p.algo = ConvAlgo::Winograd(tile);
            p.wino = Some(WinogradWeights::new(
                tile,
                geom.out_channels,
                geom.in_channels,
                weights,
            ));
            p.packed = Vec::new();
            p.raw = Vec::new();
        }
        Ok(p)
    }

    /// [`PackedConvWeights::new`] with a forced GEMM and no Winograd (benchmarks and tests).
    pub fn with_gemm(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        gemm: ConvGemm,
    ) -> Result<PackedConvWeights, KernelError> {
        geom.validate()?;
        ensure!(
            weights.len() == geom.weight_len(),
            "conv weights have {} values, expected {} ({}×{}×{:?})",
            weights.len(),
            geom.weight_len(),
            geom.out_channels,
            geom.cin_per_group(),
            geom.kernel
        );
        if let Some(b) = bias {
            ensure!(
                b.len() == geom.out_channels,
                "conv bias has {} values, expected {}",
                b.len(),
                geom.out_channels
            );
        }
        let algo = if geom.is_depthwise() {
            ConvAlgo::Depthwise
        } else if geom.is_pointwise() {
            ConvAlgo::Pointwise
        } else if super::grouped_conv::applies(geom) && super::grouped_conv::enabled() {
            ConvAlgo::Grouped
        } else {
            ConvAlgo::Im2col
        };
        let (cout_g, kg) = (
            geom.cout_per_group(),
            geom.cin_per_group() * geom.kernel_size(),
        );
        let packed = if !matches!(algo, ConvAlgo::Depthwise | ConvAlgo::Grouped)
            && gemm == ConvGemm::Packed
        {
            (0..geom.group)
                .map(|g| {
                    PackedA::pack(
                        cout_g,
                        kg,
                        &weights[g * cout_g * kg..(g + 1) * cout_g * kg],
                        kg,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(PackedConvWeights {
            algo,
            gemm,
            out_channels: geom.out_channels,
            cin_per_group: geom.cin_per_group(),
            kernel: geom.kernel.clone(),
            group: geom.group,
            raw: if algo == ConvAlgo::Grouped {
                super::grouped_conv::pack_weights(geom, weights)
            } else {
                weights.to_vec()
            },
            packed,
            wino: None,
            bias: bias.map_or_else(|| vec![0.0; geom.out_channels], <[f32]>::to_vec),
        })
    }

    /// The same weights on im2col + GEMM where [`ConvAlgo::Grouped`] was chosen (tests compare
    /// the two paths).
    #[cfg(test)]
    pub(crate) fn with_gemm_no_grouped(
        geom: &ConvGeometry,
        weights: &[f32],
        bias: Option<&[f32]>,
        gemm: ConvGemm,
    ) -> Result<PackedConvWeights, KernelError> {
        let mut p = PackedConvWeights::with_gemm(geom, weights, bias, gemm)?;
        if p.algo == ConvAlgo::Grouped {
            p = PackedConvWeights {
                algo: ConvAlgo::Im2col,
                raw: weights.to_vec(),
                ..p
            };
            if gemm == ConvGemm::Packed {
                return Err(KernelError("with_gemm_no_grouped: crate GEMM only".into()));
            }
        }
        Ok(p)
    }

    /// The algorithm chosen at packing.
    pub fn algo(&self) -> ConvAlgo {
        self.algo
    }

    /// The 1×1 kernel's packed weights and the bias, with [`ConvAlgo::PointwiseDirect`] only:
    /// sibling convs merge them into one call (see [`super::pointwise_group`]).
    pub fn pointwise_parts(&self) -> Option<(&[f32], &[f32])> {
        (self.algo == ConvAlgo::PointwiseDirect).then_some((&self.raw[..], &self.bias[..]))
    }

    /// The GEMM chosen at packing.
    pub fn gemm(&self) -> ConvGemm {
        self.gemm
    }

    /// Floats of weight data held (raw, packed or transformed weights, and bias).
    pub fn packed_floats(&self) -> usize {
        self.raw.len()
            + self.packed.iter().map(|p| p.data().len()).sum::<usize>()
            + self.wino.as_ref().map_or(0, |w| w.bytes() / 4)
            + self.bias.len()
    }

    /// Multiply-accumulates one run of `geom` really executes: [`ConvGeometry::macs`] except
    /// for Winograd, whose element-wise GEMMs do fewer (transforms not counted).
    pub fn macs_executed(&self, geom: &ConvGeometry) -> u64 {
        match &self.wino {
            Some(w) => winograd_macs(w, &geom.winograd_shape()),
            None => geom.macs(),
        }
    }

    fn matches(&self, g: &ConvGeometry) -> bool {
        self.out_channels == g.out_channels
            && self.cin_per_group == g.cin_per_group()
            && self.kernel == g.kernel
            && self.group == g.group
    }
}

/// The Winograd tile used when `ENGINE_CONV_ALGO` does not choose one.
/// F(2×2): its error vs float64 measured below im2col's; F(4×4) measured ~12× im2col's (see
/// the tests), outside the 2× budget, so it is only used when forced.
pub const DEFAULT_WINOGRAD_TILE: WinogradTile = WinogradTile::F2;

/// Fewest input channels (per group) for which [`PackedConvWeights::new`] picks Winograd by
/// default.
pub const WINOGRAD_MIN_IN_CHANNELS: usize = 64;

/// Fewest output channels (per group) for which [`PackedConvWeights::new`] picks Winograd by
/// default (ResNet's 64-channel stage-1 convs gain; see `PackedConvWeights::new`).
pub const WINOGRAD_MIN_OUT_CHANNELS: usize = 64;

/// Fewest output pixels per channel (7×7) for which [`PackedConvWeights::new`] picks Winograd
/// by default.
pub const WINOGRAD_MIN_OUT_PLANE: usize = 49;

/// Default scratch floats per slot: the im2col block of one work item (256 KiB).
/// `ENGINE_CONV_BLOCK_FLOATS` overrides it for A/B runs: the crate GEMM re-packs the whole
/// weight matrix (`cout_g × kg`) on every call, so with large `kg` (a 5×5 conv with kg = 1200
/// gets 96-column blocks) larger blocks may pay; not yet measured, so the default is unchanged.
const SCRATCH_BLOCK_FLOATS: usize = 64 * 1024;

/// Scratch floats per slot: [`SCRATCH_BLOCK_FLOATS`] unless `ENGINE_CONV_BLOCK_FLOATS` sets it
/// (read once per process; for A/B measurements).
fn scratch_block_floats() -> usize {
    static BLOCK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BLOCK.get_or_init(|| {
        std::env::var("ENGINE_CONV_BLOCK_FLOATS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| v >= 1024)
            .unwrap_or(SCRATCH_BLOCK_FLOATS)
    })
}

/// Columns per im2col block for this geometry (a multiple of [`NR`], at most the output plane
/// rounded up, at least two panels).
fn column_block(g: &ConvGeometry) -> usize {
    let kg = (g.cin_per_group() * g.kernel_size()).max(1);
    let np = g.out_plane().next_multiple_of(NR);
    (scratch_block_floats() / kg / NR * NR)
        .max(2 * NR)
        .min(np)
        .max(NR)
}

fn slot_len(g: &ConvGeometry, w: &PackedConvWeights) -> usize {
    let kg = g.cin_per_group() * g.kernel_size();
    if let Some(wi) = &w.wino {
        return winograd_scratch_len(wi, &g.winograd_shape(), 1);
    }
    match (w.algo, w.gemm) {
        (ConvAlgo::Depthwise, _) => 0,
        (ConvAlgo::PointwiseDirect, _) => super::pointwise_conv::scratch_len(g, 1),
        (ConvAlgo::PointwiseChannels, _) => super::pointwise_channels::scratch_len(g, 1),
        (ConvAlgo::Grouped, _) => super::grouped_conv::slot_len(g),
        (ConvAlgo::Direct, _) => super::direct_conv::scratch_len(g, 1),
        (ConvAlgo::DirectChannels, _) => {
            super::direct_channels::min_scratch_len(g, rayon::current_num_threads())
        }
        (ConvAlgo::Unfolded, _) => super::unfolded_conv::scratch_len(g, 1),
        (ConvAlgo::Pointwise, ConvGemm::Crate(_)) => 0,
        _ => packed_b_len(kg, column_block(g)),
    }
}

/// Scratch (in floats) that [`conv`] needs to run on `threads` threads. Passing less scratch
/// is allowed down to one slot: fewer items then run in parallel.
pub fn conv_scratch_len(geom: &ConvGeometry, weights: &PackedConvWeights, threads: usize) -> usize {
    if weights.algo == ConvAlgo::Direct {
        return super::direct_conv::scratch_len(geom, threads);
    }
    if weights.algo == ConvAlgo::Unfolded {
        return super::unfolded_conv::scratch_len(geom, threads);
    }
    if weights.algo == ConvAlgo::DirectChannels {
        return super::direct_channels::scratch_len(geom, threads);
    }
    if weights.algo == ConvAlgo::PointwiseChannels {
        // One shared packed input plus running totals per worker.
        return super::pointwise_channels::scratch_len(geom, threads);
    }
    if let Some(wi) = &weights.wino {
        // One shared buffer: Winograd's phases split work inside it.
        return winograd_scratch_len(wi, &geom.winograd_shape(), threads);
    }
    slot_len(geom, weights) * threads.max(1)
}

/// Runs the convolution: `output = act(conv(input, W) + bias + residual)`.
///
/// - `input`: `N × Cin × in_spatial` (NCHW), `geom.input_len()` floats.
/// - `weights`: packed for this geometry by [`PackedConvWeights::new`].
/// - `residual`: optional, same shape as the output, added before the activation.
/// - `output`: `N × Cout × out_spatial`, `geom.output_len()` floats; fully overwritten.
/// - `scratch`: at least `conv_scratch_len(geom, weights, 1)` floats; with
///   `conv_scratch_len(geom, weights, rayon::current_num_threads())` all threads work.
///
/// Errors if a length or the geometry does not match (nothing is written then).
pub fn conv(
    geom: &ConvGeometry,
    input: &[f32],
    weights: &PackedConvWeights,
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    geom.validate()?;
    ensure!(
        weights.matches(geom),
        "conv weights were packed for another geometry"
    );
    ensure!(
        input.len() == geom.input_len(),
        "conv input has {} values, expected {}",
        input.len(),
        geom.input_len()
    );
    ensure!(
        output.len() == geom.output_len(),
        "conv output has {} values, expected {}",
        output.len(),
        geom.output_len()
    );
    if let Some(r) = residual {
        ensure!(
            r.len() == output.len(),
            "conv residual has {} values, expected {}",
            r.len(),
            output.len()
        );
    }
    let slot = slot_len(geom, weights);
    ensure!(
        scratch.len() >= slot,
        "conv scratch has {} floats, needs at least {slot}",
        scratch.len()
    );
    if output.is_empty() {
        return Ok(());
    }
    match weights.algo {
        ConvAlgo::Depthwise => {
            super::depthwise::depthwise_conv(
                geom,
                input,
                &weights.raw,
                &weights.bias,
                residual,
                act,
                output,
            );
        }
        ConvAlgo::Grouped => super::grouped_conv::grouped_conv(
            geom,
            input,
            &weights.raw,
            &weights.bias,
            residual,
            act,
            output,
            scratch,
        ),
        ConvAlgo::Direct => super::direct_conv::direct_conv(
            simd_level(),
            geom,
            input,
            &weights.raw,
            &weights.bias,
            residual,
            act,
            output,
            scratch,
        ),
        ConvAlgo::DirectChannels => super::direct_channels::direct_channels_conv(
            simd_level(),
            geom,
            input,
            &weights.raw,
            &weights.bias,
            residual,
            act,
            output,
            scratch,
        ),
        ConvAlgo::Unfolded => super::unfolded_conv::unfolded_conv(
            simd_level(),
            geom,
            input,
            &weights.raw,
            &weights.bias,
            residual,
            act,
            output,
            scratch,
        ),
        ConvAlgo::PointwiseDirect => super::pointwise_conv::pointwise_conv(
            simd_level(),
            geom,
            input,
            &weights.raw,
            &weights.bias,
            residual,
            act,
            output,
            scratch,
        ),
        ConvAlgo::PointwiseChannels => super::pointwise_channels::pointwise_channels_conv(
            simd_level(),
            geom,
            input,
            &weights.raw,
            &weights.bias,
            residual,
            act,
            output,
            scratch,
        ),
        ConvAlgo::Pointwise | ConvAlgo::Im2col => {
            gemm_conv(geom, input, weights, residual, act, output, scratch, slot)
        }
        ConvAlgo::Winograd(_) => {
            let wi = weights
                .wino
                .as_ref()
                .ok_or_else(|| KernelError("conv: Winograd weights missing".to_string()))?;
            winograd_conv(
                wi,
                &geom.winograd_shape(),
                input,
                &weights.bias,
                residual,
                act,
                output,
                scratch,
            );
        }
    }
    Ok(())
}

/// One unit of parallel work.
#[derive(Clone, Copy)]
struct Item {
    n: usize,
    g: usize,
    j0: usize,
    nb: usize,
    r0: usize,
    rows: usize,
}

#[allow(clippy::too_many_arguments)]
fn gemm_conv(
    geom: &ConvGeometry,
    input: &[f32],
    w: &PackedConvWeights,
    residual: Option<&[f32]>,
    act: Activation,
    output: &mut [f32],
    scratch: &mut [f32],
    slot: usize,
) {
    let threads = rayon::current_num_threads().max(1);
    let (cin_g, cout_g) = (geom.cin_per_group(), geom.cout_per_group());
    let kg = cin_g * geom.kernel_size();
    let (in_plane, out_plane) = (geom.in_plane(), geom.out_plane());
    let pointwise_direct = w.algo == ConvAlgo::Pointwise && matches!(w.gemm, ConvGemm::Crate(_));
    let nb_block = if pointwise_direct && cout_g > out_plane {
        // Late-stage 1×1 convs (14×14, 7×7 maps): the weights outweigh the input columns, so
        // threads split the rows (each reads its share of the weights, the parts are balanced
        // to a panel) instead of all reading every weight for a sliver of columns.
        out_plane
    } else if pointwise_direct {
        out_plane.div_ceil(threads).next_multiple_of(NR).max(NR)
    } else {
        column_block(geom)
    };
    let col_blocks = out_plane.div_ceil(nb_block);
    let base_items = geom.batch * geom.group * col_blocks;
    // Split rows (at panel granularity) only when there are fewer items than threads.
    let row_parts = if base_items >= threads {
        1
    } else {
        threads
            .div_ceil(base_items)
            .min(cout_g.div_ceil(MR_AVX2))
            .max(1)
    };
    // Row parts start on panel boundaries of the packed weights.
    let align = w.packed.first().map_or(MR, |p| p.mr);
    let rows_per_part = cout_g.div_ceil(row_parts).next_multiple_of(align);
    let mut items = Vec::with_capacity(base_items * row_parts);
    for n in 0..geom.batch {
        for g in 0..geom.group {
            for cb in 0..col_blocks {
                let j0 = cb * nb_block;
                let nb = nb_block.min(out_plane - j0);
                let mut r0 = 0;
                while r0 < cout_g {
                    let rows = rows_per_part.min(cout_g - r0);
                    items.push(Item {
                        n,
                        g,
                        j0,
                        nb,
                        r0,
                        rows,
                    });
                    r0 += rows;
                }
            }
        }
    }
    let slots = scratch
        .len()
        .checked_div(slot)
        .map_or(threads, |n| n.clamp(1, threads))
        .min(items.len());
    let out_ptr = SendPtr(output.as_mut_ptr());
    let level = simd_level();
    let run_item = |it: &Item, buf: &mut [f32]| {
        let img = &input[(it.n * geom.in_channels + it.g * cin_g) * in_plane..][..cin_g * in_plane];
        let co0 = it.g * cout_g + it.r0;
        let out_off = (it.n * geom.out_channels + co0) * out_plane + it.j0;
        let res = residual.map(|r| &r[out_off..]);
        let bias = &w.bias[co0..co0 + it.rows];
        let c = { out_ptr }.0;
        match w.gemm {
            ConvGemm::Packed => {
                let bp = &mut buf[..packed_b_len(kg, it.nb)];
                if w.algo == ConvAlgo::Pointwise {
                    for r in 0..kg {
                        packed_gemm::pack_b_row(
                            kg,
                            r,
                            &img[r * in_plane + it.j0..r * in_plane + it.j0 + it.nb],
                            bp,
                        );
                    }
                } else {
                    let mut row = [0.0f32; 4 * NR];
                    let padded = it.nb.next_multiple_of(NR);
                    for r in 0..kg {
                        for chunk0 in (0..padded).step_by(4 * NR) {
                            let len = (4 * NR).min(padded - chunk0);
                            let real = len.min(it.nb.saturating_sub(chunk0));
                            im2col_row(geom, img, r, it.j0 + chunk0, &mut row[..real]);
                            // Lanes past the last column are zero (the kernels compute them).
                            row[real..len].fill(0.0);
                            packed_gemm::pack_b_segment(kg, r, chunk0, &row[..len], bp);
                        }
                    }
                }
                let epi = Epilogue {
                    bias: Some(bias),
                    residual: res,
                    act,
                };
                // SAFETY: the item's tile (rows it.r0.. of group g, columns j0..j0+nb of image
                // n) lies inside `output` (lengths checked in `conv`), items are disjoint tiles
                // so no other thread touches it, and `output` outlives the parallel scope.
                unsafe {
                    packed_gemm::gemm_packed_raw(
                        level,
                        &w.packed[it.g],
                        it.r0,
                        it.rows,
                        bp,
                        it.nb,
                        c.add(out_off),
                        out_plane,
                        epi,
                    )
                };
            }
            ConvGemm::Crate(backend) => {
                let wrows = &w.raw[co0 * kg..(co0 + it.rows) * kg];
                // SAFETY: same tile argument as above; the tile is rows × nb at stride out_plane.
                unsafe {
                    if w.algo == ConvAlgo::Pointwise {
                        super::gemm::sgemm_crate_raw(
                            backend,
                            it.rows,
                            it.nb,
                            kg,
                            wrows,
                            kg,
                            &img[it.j0..],
                            in_plane,
                            c.add(out_off),
                            out_plane,
                        );
                    } else {
                        let cols = &mut buf[..kg * it.nb];
                        for r in 0..kg {
                            im2col_row(geom, img, r, it.j0, &mut cols[r * it.nb..(r + 1) * it.nb]);
                        }
                        super::gemm::sgemm_crate_raw(
                            backend,
                            it.rows,
                            it.nb,
                            kg,
                            wrows,
                            kg,
                            cols,
                            it.nb,
                            c.add(out_off),
                            out_plane,
                        );
                    }
                }
                for r in 0..it.rows {
                    // SAFETY: row r of this item's tile, exclusively owned by this item.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(c.add(out_off + r * out_plane), it.nb)
                    };
                    bias_residual_activation(row, bias[r], res.map(|x| &x[r * out_plane..]), act);
                }
            }
        }
    };
    if slots <= 1 {
        let buf = &mut scratch[..slot];
        for it in &items {
            run_item(it, buf);
        }
        return;
    }
    let slot_bufs: Vec<&mut [f32]> = if slot == 0 {
        (0..slots).map(|_| <&mut [f32]>::default()).collect()
    } else {
        scratch[..slot * slots].chunks_mut(slot).collect()
    };
    // Items are handed out by a shared counter, not striped over the slots: on a shared machine
    // a descheduled thread then delays the op by one item instead of its whole share. Which
    // thread computes an item never changes its values (see the module docs).
    let next = std::sync::atomic::AtomicUsize::new(0);
    slot_bufs.into_par_iter().for_each(|buf| loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(it) = items.get(i) else { break };
        run_item(it, buf);
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::cpu_features::SimdLevel;
    use crate::kernels::test_util::{interleaved_best, rand_vec, with_threads};

    /// Naive float64 convolution (N-d, groups, dilation, pads) — the reference.
    pub(crate) fn conv_ref(g: &ConvGeometry, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
        let nd = g.in_spatial.len();
        let (cin_g, cout_g, kk) = (g.cin_per_group(), g.cout_per_group(), g.kernel_size());
        let (ip, op) = (g.in_plane(), g.out_plane());
        let mut y = vec![0.0f64; g.output_len()];
        for n in 0..g.batch {
            for co in 0..g.out_channels {
                let grp = co / cout_g;
                for o in 0..op {
                    let mut opos = vec![0; nd];
                    let mut rem = o;
                    for d in (0..nd).rev() {
                        opos[d] = rem % g.out_spatial[d];
                        rem /= g.out_spatial[d];
                    }
                    let mut s = b.map_or(0.0, |b| b[co] as f64);
                    for ci in 0..cin_g {
                        for k in 0..kk {
                            let mut rem = k;
                            let mut flat = 0usize;
                            let mut inside = true;
                            let mut kpos = vec![0; nd];
                            for d in (0..nd).rev() {
                                kpos[d] = rem % g.kernel[d];
                                rem /= g.kernel[d];
                            }
                            for d in 0..nd {
                                let xi = (opos[d] * g.strides[d] + kpos[d] * g.dilations[d])
                                    as isize
                                    - g.pads_begin[d] as isize;
                                if xi < 0 || xi >= g.in_spatial[d] as isize {
                                    inside = false;
                                }
                                flat = flat * g.in_spatial[d] + xi.max(0) as usize;
                            }
                            if inside {
                                let xv =
                                    x[(n * g.in_channels + grp * cin_g + ci) * ip + flat] as f64;
                                s += xv * w[(co * cin_g + ci) * kk + k] as f64;
                            }
                        }
                    }
                    y[(n * g.out_channels + co) * op + o] = s;
                }
            }
        }
        y
    }

    #[allow(clippy::type_complexity)]
    fn cases() -> Vec<(
        usize,
        usize,
        Vec<usize>,
        usize,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        usize,
    )> {
        // (batch, cin, in, cout, kernel, strides, dilations, pads_begin, pads_end, group)
        vec![
            (
                1,
                3,
                vec![9, 9],
                8,
                vec![3, 3],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                1,
            ),
            (
                2,
                5,
                vec![7, 11],
                13,
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![0, 0],
                vec![0, 0],
                1,
            ),
            (
                1,
                8,
                vec![10, 10],
                16,
                vec![1, 1],
                vec![2, 2],
                vec![1, 1],
                vec![0, 0],
                vec![0, 0],
                1,
            ),
            (
                1,
                3,
                vec![23, 23],
                10,
                vec![7, 7],
                vec![2, 2],
                vec![1, 1],
                vec![3, 3],
                vec![3, 3],
                1,
            ),
            (
                1,
                8,
                vec![9, 8],
                12,
                vec![3, 3],
                vec![1, 1],
                vec![2, 2],
                vec![2, 1],
                vec![0, 2],
                4,
            ),
            (
                2,
                16,
                vec![6, 6],
                16,
                vec![3, 3],
                vec![2, 2],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                16,
            ),
            (
                1,
                6,
                vec![8, 8],
                6,
                vec![3, 3],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                6,
            ),
            (
                1,
                6,
                vec![8, 9],
                6,
                vec![5, 3],
                vec![1, 2],
                vec![2, 1],
                vec![0, 2],
                vec![3, 0],
                6,
            ),
            (
                1,
                64,
                vec![14, 14],
                64,
                vec![3, 3],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                32,
            ),
            (
                1,
                4,
                vec![5, 7],
                3,
                vec![2, 4],
                vec![3, 1],
                vec![1, 1],
                vec![1, 0],
                vec![0, 2],
                1,
            ),
            (
                1,
                70,
                vec![13, 13],
                40,
                vec![3, 3],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                1,
            ),
            (
                1,
                4,
                vec![17],
                6,
                vec![3],
                vec![2],
                vec![2],
                vec![1],
                vec![2],
                2,
            ),
            (
                2,
                3,
                vec![4, 5, 6],
                4,
                vec![2, 3, 2],
                vec![1, 2, 1],
                vec![1, 1, 2],
                vec![1, 0, 1],
                vec![0, 1, 1],
                1,
            ),
            (
                1,
                2,
                vec![1, 200],
                3,
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![0, 0],
                vec![0, 0],
                1,
            ),
            // Pointwise with more output channels than pixels (ResNet's 7×7 stages): threads
            // split the rows, not the columns.
            (
                1,
                96,
                vec![5, 5],
                200,
                vec![1, 1],
                vec![1, 1],
                vec![1, 1],
                vec![0, 0],
                vec![0, 0],
                1,
            ),
        ]
    }

    #[test]
    fn conv_matches_f64_reference_all_paths_and_threads() {
        let acts = [
            Activation::None,
            Activation::Relu,
            Activation::LeakyRelu(0.1),
        ];
        for (ci, (b, cin, ins, cout, k, s, d, pb, pe, grp)) in cases().into_iter().enumerate() {
            let g = ConvGeometry::new(b, cin, &ins, cout, &k, &s, &d, &pb, &pe, grp)
                .expect("valid case");
            let x = rand_vec(g.input_len(), 10 + ci as u64);
            let w = rand_vec(g.weight_len(), 20 + ci as u64);
            let bias = rand_vec(cout, 30 + ci as u64);
            let res = rand_vec(g.output_len(), 40 + ci as u64);
            let want = conv_ref(&g, &x, &w, Some(&bias));
            let kg = (g.cin_per_group() * g.kernel_size()) as f64;
            let tol = 2e-6 * kg.sqrt() * 8.0 + 1e-5;
            let mut gemms = vec![
                ConvGemm::Crate(GemmBackend::Gemm),
                ConvGemm::Crate(GemmBackend::MatrixMultiply),
            ];
            gemms.push(ConvGemm::Packed);
            for gemm in gemms {
                let pw = PackedConvWeights::with_gemm(&g, &w, Some(&bias), gemm).expect("pack");
                let act = acts[ci % acts.len()];
                let mut outs = Vec::new();
                for threads in [1, 2] {
                    for with_res in [false, true] {
                        let mut out = vec![f32::NAN; g.output_len()];
                        let mut scratch = vec![f32::NAN; conv_scratch_len(&g, &pw, threads)];
                        with_threads(threads, || {
                            conv(
                                &g,
                                &x,
                                &pw,
                                with_res.then_some(&res[..]),
                                act,
                                &mut out,
                                &mut scratch,
                            )
                        })
                        .expect("conv runs");
                        let mut err = 0.0f64;
                        for i in 0..out.len() {
                            let r = if with_res { res[i] as f64 } else { 0.0 };
                            let e = act.apply((want[i] + r) as f32) as f64;
                            let d = (out[i] as f64 - e).abs();
                            assert!(d.is_finite(), "case {ci}: non-finite output at {i}");
                            err = err.max(d);
                        }
                        assert!(
                            err < tol,
                            "case {ci} {gemm:?} algo {:?} t{threads} res{with_res}: err {err} tol {tol}",
                            pw.algo()
                        );
                        if !with_res {
                            outs.push(out);
                        }
                    }
                }
                // 1 vs 2 threads: same values up to float rounding.
                let diff = crate::kernels::test_util::max_abs_diff(&outs[0], &outs[1]);
                assert!(
                    (diff as f64) < tol,
                    "case {ci} {gemm:?}: thread count changed results by {diff}"
                );
            }
        }
    }

    /// Winograd vs the f64 reference next to im2col's error on the same data: both tiles, with
    /// residual/activation, 1 and 2 threads, several pads and ragged tile edges.
    #[test]
    fn winograd_matches_reference_within_2x_of_im2col_error() {
        // (batch, cin, h, w, cout, pads_begin, pads_end)
        let cases = [
            (2, 16, 9, 11, 20, [1, 1], [1, 1]),
            (1, 32, 14, 14, 24, [1, 1], [1, 1]),
            (1, 17, 8, 8, 16, [0, 0], [0, 0]),
            (1, 16, 7, 7, 16, [2, 1], [0, 2]),
            (1, 64, 17, 13, 32, [1, 1], [1, 1]),
        ];
        let (mut worst_direct, mut worst) = (0.0f64, [0.0f64; 2]);
        for (ci, &(b, cin, h, w_, cout, pb, pe)) in cases.iter().enumerate() {
            let g = ConvGeometry::new(
                b,
                cin,
                &[h, w_],
                cout,
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &pb,
                &pe,
                1,
            )
            .expect("valid");
            assert!(g.winograd_applies());
            let x = rand_vec(g.input_len(), 100 + ci as u64);
            let w = rand_vec(g.weight_len(), 200 + ci as u64);
            let bias = rand_vec(cout, 300 + ci as u64);
            let res = rand_vec(g.output_len(), 400 + ci as u64);
            let want = conv_ref(&g, &x, &w, Some(&bias));
            let run = |pw: &PackedConvWeights, threads: usize, act: Activation| {
                let mut out = vec![f32::NAN; g.output_len()];
                let mut scratch = vec![f32::NAN; conv_scratch_len(&g, pw, threads)];
                with_threads(threads, || {
                    conv(&g, &x, pw, Some(&res), act, &mut out, &mut scratch)
                })
                .expect("conv runs");
                out
            };
            let err = |out: &[f32], act: Activation| {
                out.iter()
                    .zip(&want)
                    .zip(&res)
                    .map(|((o, e), r)| {
                        let e = act.apply((e + *r as f64) as f32) as f64;
                        (*o as f64 - e).abs()
                    })
                    .fold(0.0f64, |m, d| if d.is_nan() || d > m { d } else { m })
            };
            let direct = PackedConvWeights::with_gemm(
                &g,
                &w,
                Some(&bias),
                ConvGemm::Crate(GemmBackend::Gemm),
            )
            .expect("pack");
            worst_direct =
                worst_direct.max(err(&run(&direct, 1, Activation::None), Activation::None));
            for (ti, tile) in [WinogradTile::F2, WinogradTile::F4].into_iter().enumerate() {
                let pw = PackedConvWeights::with_algo(
                    &g,
                    &w,
                    Some(&bias),
                    ConvGemm::Crate(GemmBackend::Gemm),
                    Some(tile),
                )
                .expect("pack");
                assert_eq!(pw.algo(), ConvAlgo::Winograd(tile));
                let th = g.out_spatial[0].div_ceil(tile.m());
                let tw = g.out_spatial[1].div_ceil(tile.m());
                let a = tile.alpha();
                assert_eq!(
                    pw.macs_executed(&g),
                    (b * a * a * th * tw * cout * cin) as u64
                );
                let none = run(&pw, 1, Activation::None);
                worst[ti] = worst[ti].max(err(&none, Activation::None));
                let relu1 = run(&pw, 1, Activation::Relu);
                let relu2 = run(&pw, 2, Activation::Relu);
                assert!(err(&relu1, Activation::Relu) < 1e-3, "case {ci} {tile:?}");
                assert_eq!(
                    relu1, relu2,
                    "case {ci} {tile:?}: thread count changed results"
                );
            }
        }
        eprintln!(
            "max error vs f64: im2col {worst_direct:e}, F2 {:e}, F4 {:e}",
            worst[0], worst[1]
        );
        assert!(worst_direct > 0.0);
        assert!(
            worst[0] <= 2.0 * worst_direct,
            "F(2x2) error {} > 2x im2col's {worst_direct}",
            worst[0]
        );
        // F(4×4) (opt-in only) measured ~12× im2col's error: bound it loosely.
        assert!(
            worst[1] <= 30.0 * worst_direct,
            "F(4x4) error {} > 30x im2col's {worst_direct}",
            worst[1]
        );
    }

    #[test]
    fn forced_portable_kernel_matches_reference() {
        // The packed GEMM at scalar/AVX2 level (portable micro-kernel) on a conv.
        let g = ConvGeometry::new(
            1,
            5,
            &[9, 9],
            11,
            &[3, 3],
            &[1, 1],
            &[1, 1],
            &[1, 1],
            &[1, 1],
            1,
        )
        .expect("valid");
        let x = rand_vec(g.input_len(), 1);
        let w = rand_vec(g.weight_len(), 2);
        let want = conv_ref(&g, &x, &w, None);
        let pw = PackedConvWeights::with_gemm(&g, &w, None, ConvGemm::Packed).expect("pack");
        let kg = g.cin_per_group() * g.kernel_size();
        let mut bp = vec![0.0; packed_b_len(kg, 81)];
        let mut row = vec![0.0; 81];
        for r in 0..kg {
            im2col_row(&g, &x, r, 0, &mut row);
            packed_gemm::pack_b_row(kg, r, &row, &mut bp);
        }
        for level in SimdLevel::available() {
            let mut out = vec![0.0; g.output_len()];
            packed_gemm::gemm_packed_with(
                level,
                &pw.packed[0],
                0,
                11,
                &bp,
                81,
                &mut out,
                81,
                Epilogue::default(),
            );
            let err = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-4, "{level:?}: {err}");
        }
    }

    /// Long-K convolutions (a 1×1 with K = 2048, a 3×3 with K = 288) on positive data, where a
    /// float32 sum accumulated in one chain loses the most: the default path's error against
    /// float64 must stay well under that of one fused-multiply-add chain per output (what the
    /// GEMM gave before it summed K in slices, see `gemm::k_slice`).
    #[test]
    fn long_k_conv_error_well_below_one_accumulation_chain() {
        // (cin, h, w, cout, k, pad, bound on error / chain error)
        for (cin, h, wd, cout, k, pad, bound) in
            [(2048, 4, 4, 16, 1, 0, 0.2), (32, 12, 12, 16, 3, 1, 0.6)]
        {
            let g = ConvGeometry::new(
                1,
                cin,
                &[h, wd],
                cout,
                &[k, k],
                &[1, 1],
                &[1, 1],
                &[pad, pad],
                &[pad, pad],
                1,
            )
            .expect("valid");
            let pos = |v: Vec<f32>| v.into_iter().map(f32::abs).collect::<Vec<_>>();
            let x = pos(rand_vec(g.input_len(), 7));
            let w = pos(rand_vec(g.weight_len(), 8));
            let want = conv_ref(&g, &x, &w, None);
            let pw = PackedConvWeights::new(&g, &w, None).expect("pack");
            let mut out = vec![0.0; g.output_len()];
            let mut scratch = vec![0.0; conv_scratch_len(&g, &pw, 1)];
            with_threads(1, || {
                conv(&g, &x, &pw, None, Activation::None, &mut out, &mut scratch)
            })
            .expect("conv runs");
            // One FMA chain per output over the same im2col order (c, ky, kx).
            let kg = g.cin_per_group() * g.kernel_size();
            let plane = g.out_plane();
            let mut chain_err = 0.0f64;
            let mut err = 0.0f64;
            for co in 0..cout {
                for j in 0..plane {
                    let mut col = vec![0.0f32; 1];
                    let mut acc = 0.0f32;
                    for r in 0..kg {
                        im2col_row(&g, &x, r, j, &mut col);
                        acc = w[co * kg + r].mul_add(col[0], acc);
                    }
                    let i = co * plane + j;
                    let rel = |v: f32| (v as f64 - want[i]).abs() / want[i].abs().max(1e-30);
                    chain_err = chain_err.max(rel(acc));
                    err = err.max(rel(out[i]));
                }
            }
            assert!(
                chain_err > 0.0 && err <= bound * chain_err,
                "cin {cin} k {k}: error {err:e} vs one chain's {chain_err:e} (bound {bound})"
            );
        }
    }

    /// Times 1×1 convs (with bias, residual where the model has one, and ReLU) through the
    /// `gemm` crate path, the engine's packed GEMM and its two 1×1 kernels, interleaved.
    #[test]
    #[ignore = "timing helper for development; run with --ignored --nocapture in release"]
    fn time_pointwise_gemms() {
        // (cin, cout, input side, stride, residual): ResNet-50's 1×1 convs, its strided
        // shortcuts to 14×14 and 7×7, and Inception-v3's 1×1 convs on 8×8 and 17×17 maps.
        let shapes = [
            (64, 256, 56, 1, true),
            (256, 64, 56, 1, false),
            (128, 512, 28, 1, true),
            (512, 128, 28, 1, false),
            (256, 1024, 14, 1, true),
            (1024, 256, 14, 1, false),
            (512, 2048, 7, 1, true),
            (2048, 512, 7, 1, false),
            (512, 1024, 28, 2, false),
            (1024, 2048, 14, 2, false),
            (2048, 448, 8, 1, false),
            (1280, 320, 8, 1, false),
            (768, 192, 17, 1, false),
            (192, 64, 35, 1, false),
            (288, 64, 35, 1, false),
            (192, 48, 35, 1, false),
            (768, 128, 17, 1, false),
        ];
        let threads: usize = std::env::var("TIME_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for (cin, cout, hw, stride, with_res) in shapes {
            let g = ConvGeometry::new(
                1,
                cin,
                &[hw, hw],
                cout,
                &[1, 1],
                &[stride, stride],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                1,
            )
            .expect("geometry");
            let x = rand_vec(g.input_len(), 1);
            let wt = rand_vec(g.weight_len(), 2);
            let bias = rand_vec(cout, 3);
            let res = rand_vec(g.output_len(), 4);
            let residual = with_res.then_some(&res[..]);
            let packs = [
                PackedConvWeights::with_gemm(
                    &g,
                    &wt,
                    Some(&bias),
                    ConvGemm::Crate(GemmBackend::Gemm),
                ),
                PackedConvWeights::with_gemm(&g, &wt, Some(&bias), ConvGemm::Packed),
                PackedConvWeights::with_pointwise(&g, &wt, Some(&bias)),
                PackedConvWeights::with_pointwise_channels(&g, &wt, Some(&bias)),
            ]
            .map(|p| p.expect("pack"));
            let mut out = vec![0.0; g.output_len()];
            let mut scratch = vec![
                0.0;
                packs
                    .iter()
                    .map(|p| conv_scratch_len(&g, p, threads))
                    .max()
                    .unwrap_or(0)
            ];
            // Interleaved rounds (best of 5 per variant per round); the ratios to the first
            // variant are taken within a round, then their median: the machine is shared and
            // its slow phases last longer than a round.
            let rounds = 12;
            let mut best = vec![[f64::MAX; 4]; rounds];
            with_threads(threads, || {
                for round in best.iter_mut() {
                    for (pw, b) in packs.iter().zip(round.iter_mut()) {
                        for _ in 0..5 {
                            let t = std::time::Instant::now();
                            conv(
                                &g,
                                &x,
                                pw,
                                residual,
                                Activation::Relu,
                                &mut out,
                                &mut scratch,
                            )
                            .expect("conv");
                            *b = b.min(t.elapsed().as_secs_f64());
                        }
                    }
                }
            });
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let mut line = format!("{cin}->{cout} {hw}x{hw}/{stride} res={with_res}:");
            for (i, pw) in packs.iter().enumerate() {
                let b = best.iter().map(|r| r[i]).fold(f64::MAX, f64::min);
                let ratio = median(best.iter().map(|r| r[i] / r[0]).collect());
                let gf = 2.0 * g.macs() as f64 / b / 1e9;
                line += &format!(
                    " {:?}/{:?} best {:.3} ms {gf:.1} GF/s, x{ratio:.2};",
                    pw.algo(),
                    pw.gemm(),
                    b * 1e3
                );
            }
            println!("{line}");
        }
    }

    /// Dev timing helper: ResNet-50's stride-1 3×3 shapes on Winograd F(2×2), the direct
    /// kernel and im2col + crate GEMM, at 1 and 2 threads (`TIME_THREADS`).
    #[test]
    #[ignore = "timing helper for development; run with --ignored --nocapture in release"]
    fn time_resnet_3x3() {
        let threads: usize = std::env::var("TIME_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
            let g = ConvGeometry::new(
                1,
                c,
                &[hw, hw],
                c,
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                1,
            )
            .expect("geometry");
            let x = rand_vec(g.input_len(), 1);
            let wt = rand_vec(g.weight_len(), 2);
            let bias = rand_vec(c, 3);
            let gemm = ConvGemm::Crate(GemmBackend::Gemm);
            let packs = [
                PackedConvWeights::with_gemm(&g, &wt, Some(&bias), gemm),
                PackedConvWeights::with_direct(&g, &wt, Some(&bias)),
                PackedConvWeights::with_algo(&g, &wt, Some(&bias), gemm, Some(WinogradTile::F2)),
            ]
            .map(|p| p.expect("pack"));
            let mut out = vec![0.0; g.output_len()];
            let len = packs.iter().map(|p| conv_scratch_len(&g, p, threads)).max();
            let mut scratch = vec![0.0; len.unwrap_or(0)];
            let best = interleaved_best(threads, &packs, |pw| {
                conv(&g, &x, pw, None, Activation::Relu, &mut out, &mut scratch).expect("conv")
            });
            let mut line = format!("{c}->{c} {hw}x{hw} t{threads}:");
            for (pw, b) in packs.iter().zip(best) {
                let gf = 2.0 * g.macs() as f64 / b / 1e9;
                line += &format!(" {:?} {:.3} ms {gf:.1} GF/s;", pw.algo(), b * 1e3);
            }
            println!("{line}");
        }
    }

    #[test]
    fn rejects_bad_lengths_and_geometry() {
        assert!(ConvGeometry::new(
            1,
            3,
            &[2, 2],
            4,
            &[5, 5],
            &[1, 1],
            &[1, 1],
            &[0, 0],
            &[0, 0],
            1
        )
        .is_err());
        assert!(ConvGeometry::new(
            1,
            3,
            &[8, 8],
            4,
            &[3, 3],
            &[1, 1],
            &[1, 1],
            &[0, 0],
            &[0, 0],
            2
        )
        .is_err());
        let g = ConvGeometry::new(
            1,
            2,
            &[4, 4],
            2,
            &[3, 3],
            &[1, 1],
            &[1, 1],
            &[1, 1],
            &[1, 1],
            1,
        )
        .expect("valid");
        assert_eq!(g.out_spatial, vec![4, 4]);
        assert!(PackedConvWeights::new(&g, &[0.0; 5], None).is_err());
        let pw = PackedConvWeights::new(&g, &vec![0.0; g.weight_len()], None).expect("pack");
        let mut out = vec![0.0; g.output_len()];
        let mut scratch = vec![0.0; conv_scratch_len(&g, &pw, 1)];
        assert!(conv(
            &g,
            &[0.0; 3],
            &pw,
            None,
            Activation::None,
            &mut out,
            &mut scratch
        )
        .is_err());
        let mut short = vec![0.0; 3];
        assert!(conv(
            &g,
            &vec![0.0; g.input_len()],
            &pw,
            None,
            Activation::None,
            &mut short,
            &mut scratch
        )
        .is_err());
    }
}
