//! Sibling 1×1 convolutions — several 1×1 convs reading the same input, like Inception's
//! branch heads or the conv1 and shortcut of ResNet-50's first block — run as one call of the
//! 1×1 kernel ([`super::pointwise_conv`]).
//!
//! Why: that kernel copies each block of input positions into tiles before its weight panels
//! sweep them. Siblings run one by one copy the same input once each, and a 48- or 64-channel
//! conv has few panels to spread its copy over. Measured alone (engine profile, 1 thread,
//! median of 200 runs, merged weights in one conv against the separate convs): Inception-v3
//! Mixed_5c's heads (256→64, 48, 64 at 35×35) 1.40 → 1.25 ms (−11%), Mixed_6c's
//! (768→192, 160, 160 at 17×17) 2.51 → 2.42 ms (−4%), Mixed_7b's (1280→320, 384, 448 at 8×8)
//! −1%.
//!
//! The merged weights are the members' packed panels one after another; each member starts a
//! fresh panel, so no panel straddles two outputs, and every panel writes straight into its
//! member's own tensor with its member's bias and activation. Each output is the sum of the
//! same K slices in the same order as in the member's own call (same K, so the same slices),
//! so results are bit-identical to running the members one by one.

use super::conv::ConvGeometry;
use super::cpu_features::SimdLevel;
use super::gemm::SendPtr;
use super::pointwise_conv::{
    self, applies, packed_len, pointwise_impl, InputLayout, Outputs, PanelTarget, MR,
};
use super::KernelError;
use crate::ir::Activation;

/// Most convs one group runs (Inception's blocks have at most three sibling heads).
pub const MAX_MEMBERS: usize = 4;

/// One sibling: its geometry, its weights packed by [`pointwise_conv::pack_weights`], its
/// bias (one per output channel) and its activation.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub geom: &'a ConvGeometry,
    pub packed: &'a [f32],
    pub bias: &'a [f32],
    pub act: Activation,
}

/// A group of sibling 1×1 convs prepared to run as one (see the module docs).
#[derive(Debug, Clone)]
pub struct PointwiseGroup {
    /// The merged conv: the members' input geometry, output channels = their panels × [`MR`].
    geom: ConvGeometry,
    packed: Vec<f32>,
    bias: Vec<f32>,
    panels: Vec<PanelTarget>,
    /// Output channels of each member.
    couts: Vec<usize>,
}

/// Whether a conv with geometry `g` and activation `act` can join a group: a 1×1 unpadded
/// conv with one group, some input channels and positions, and an activation the kernel's tile
/// applies (the others run as a pass after the tile, per call).
pub fn can_join(g: &ConvGeometry, act: Activation) -> bool {
    applies(g)
        && g.group == 1
        && g.in_channels > 0
        && g.out_plane() > 0
        && matches!(
            act,
            Activation::None | Activation::Relu | Activation::Clip(..)
        )
}

impl PointwiseGroup {
    /// Merges `members`: 2 to [`MAX_MEMBERS`] convs that [`can_join`], all with the same input
    /// geometry (batch, channels, spatial size, strides).
    pub fn new(members: &[Member<'_>]) -> Result<PointwiseGroup, KernelError> {
        let fail = |why: &str| Err(KernelError(format!("pointwise group: {why}")));
        let Some(first) = members.first() else {
            return fail("no members");
        };
        if !(2..=MAX_MEMBERS).contains(&members.len()) {
            return fail("needs 2 to 4 members");
        }
        let g0 = first.geom;
        let mut panels = Vec::new();
        let mut packed = Vec::new();
        let mut bias = Vec::new();
        let mut couts = Vec::with_capacity(members.len());
        for (m, mem) in members.iter().enumerate() {
            let g = mem.geom;
            let same_input = g.batch == g0.batch
                && g.in_channels == g0.in_channels
                && g.in_spatial == g0.in_spatial
                && g.strides == g0.strides
                && g.out_spatial == g0.out_spatial;
            if !same_input || !can_join(g, mem.act) {
                return fail("members must be 1×1 convs of one input with tile activations");
            }
            if mem.packed.len() != packed_len(g) || mem.bias.len() != g.out_channels {
                return fail("member weights do not match its geometry");
            }
            let cout = g.out_channels;
            for p in 0..cout.div_ceil(MR) {
                let rows = MR.min(cout - p * MR);
                panels.push(PanelTarget {
                    member: m,
                    first: p * MR,
                    rows,
                    act: mem.act,
                });
                bias.extend_from_slice(&mem.bias[p * MR..p * MR + rows]);
                bias.resize(bias.len() + MR - rows, 0.0);
            }
            packed.extend_from_slice(mem.packed);
            couts.push(cout);
        }
        let geom = ConvGeometry::new(
            g0.batch,
            g0.in_channels,
            &g0.in_spatial,
            panels.len() * MR,
            &g0.kernel,
            &g0.strides,
            &g0.dilations,
            &g0.pads_begin,
            &g0.pads_end,
            1,
        )?;
        debug_assert_eq!(packed.len(), packed_len(&geom));
        Ok(PointwiseGroup {
            geom,
            packed,
            bias,
            panels,
            couts,
        })
    }

    /// Members in the group.
    pub fn members(&self) -> usize {
        self.couts.len()
    }

    /// Scratch floats [`PointwiseGroup::run`] needs on `threads` workers.
    pub fn scratch_len(&self, threads: usize) -> usize {
        pointwise_conv::scratch_len(&self.geom, threads)
    }

    /// Floats of weights and bias held.
    pub fn packed_floats(&self) -> usize {
        self.packed.len() + self.bias.len()
    }

    /// Runs every member on `input` (NCHW), member `m` writing `outputs[m]` (NCHW, its own
    /// channel count).
    pub fn run(
        &self,
        level: SimdLevel,
        input: &[f32],
        outputs: &mut [&mut [f32]],
        scratch: &mut [f32],
    ) -> Result<(), KernelError> {
        let g = &self.geom;
        if outputs.len() != self.couts.len() {
            return Err(KernelError(format!(
                "pointwise group: {} outputs for {} members",
                outputs.len(),
                self.couts.len()
            )));
        }
        let plane = g.out_plane();
        let mut members = [(SendPtr(std::ptr::null_mut()), 0usize); MAX_MEMBERS];
        for (m, (out, &cout)) in outputs.iter_mut().zip(&self.couts).enumerate() {
            if out.len() < g.batch * cout * plane {
                return Err(KernelError(format!(
                    "pointwise group: output {m} holds {} floats, needs {}",
                    out.len(),
                    g.batch * cout * plane
                )));
            }
            members[m] = (SendPtr(out.as_mut_ptr()), cout);
        }
        if input.len() < g.input_len() || scratch.len() < self.scratch_len(1) {
            return Err(KernelError(
                "pointwise group: input or scratch too short".into(),
            ));
        }
        let outs = Outputs::Group {
            panels: &self.panels,
            members: &members[..self.couts.len()],
        };
        pointwise_impl(
            level,
            g,
            input,
            InputLayout::nchw(g),
            &self.packed,
            &self.bias,
            None,
            Activation::None,
            outs,
            scratch,
            true,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pointwise_conv::{pack_weights, pointwise_conv, scratch_len};
    use crate::kernels::test_util::{rand_vec, with_threads};

    fn geom(batch: usize, cin: usize, hw: [usize; 2], cout: usize, stride: usize) -> ConvGeometry {
        ConvGeometry::new(
            batch,
            cin,
            &hw,
            cout,
            &[1, 1],
            &[stride, stride],
            &[1, 1],
            &[0, 0],
            &[0, 0],
            1,
        )
        .expect("valid")
    }

    /// Every member's output equals (bit for bit) its own call of the 1×1 kernel, at every
    /// SIMD level and at 1 and 2 threads: member counts not multiples of the panel height,
    /// ragged position tiles, batch 2, a strided input, K swept whole and in slices.
    #[test]
    fn group_matches_members_run_alone() {
        // (batch, cin, [h, w], stride, member couts and activations)
        type Case<'a> = (usize, usize, [usize; 2], usize, &'a [(usize, Activation)]);
        let cases: [Case; 4] = [
            (
                1,
                32,
                [9, 11],
                1,
                &[(16, Activation::Relu), (7, Activation::None)],
            ),
            (
                2,
                20,
                [7, 13],
                1,
                &[
                    (5, Activation::Relu),
                    (12, Activation::Clip(-0.5, 0.5)),
                    (9, Activation::Relu),
                ],
            ),
            (
                1,
                24,
                [12, 10],
                2,
                &[(8, Activation::None), (13, Activation::Relu)],
            ),
            // 600 input channels: K over 512 is swept a slice per pass, the running sums
            // kept in the members' outputs.
            (
                1,
                600,
                [5, 7],
                1,
                &[
                    (6, Activation::Relu),
                    (11, Activation::Relu),
                    (4, Activation::None),
                ],
            ),
        ];
        for (ci, &(batch, cin, hw, stride, ms)) in cases.iter().enumerate() {
            let geoms: Vec<ConvGeometry> = ms
                .iter()
                .map(|&(c, _)| geom(batch, cin, hw, c, stride))
                .collect();
            let x = rand_vec(geoms[0].input_len(), 10 + ci as u64);
            let weights: Vec<Vec<f32>> = geoms
                .iter()
                .enumerate()
                .map(|(m, g)| rand_vec(g.weight_len(), 20 + m as u64))
                .collect();
            let packed: Vec<Vec<f32>> = geoms
                .iter()
                .zip(&weights)
                .map(|(g, w)| pack_weights(g, w))
                .collect();
            let biases: Vec<Vec<f32>> = geoms
                .iter()
                .enumerate()
                .map(|(m, g)| rand_vec(g.out_channels, 30 + m as u64))
                .collect();
            let members: Vec<Member> = (0..ms.len())
                .map(|m| Member {
                    geom: &geoms[m],
                    packed: &packed[m],
                    bias: &biases[m],
                    act: ms[m].1,
                })
                .collect();
            let group = PointwiseGroup::new(&members).expect("group");
            assert_eq!(group.members(), ms.len());
            for level in SimdLevel::available() {
                let want: Vec<Vec<f32>> = (0..ms.len())
                    .map(|m| {
                        let g = &geoms[m];
                        let mut out = vec![f32::NAN; g.output_len()];
                        let mut scratch = vec![0.0; scratch_len(g, 1)];
                        pointwise_conv(
                            level,
                            g,
                            &x,
                            &packed[m],
                            &biases[m],
                            None,
                            ms[m].1,
                            &mut out,
                            &mut scratch,
                        );
                        out
                    })
                    .collect();
                for threads in [1, 2] {
                    let mut outs: Vec<Vec<f32>> = geoms
                        .iter()
                        .map(|g| vec![f32::NAN; g.output_len()])
                        .collect();
                    let mut scratch = vec![0.0; group.scratch_len(threads)];
                    with_threads(threads, || {
                        let mut refs: Vec<&mut [f32]> =
                            outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                        group.run(level, &x, &mut refs, &mut scratch)
                    })
                    .expect("group runs");
                    for m in 0..ms.len() {
                        let same = outs[m]
                            .iter()
                            .zip(&want[m])
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "case {ci} member {m} {level:?} t{threads}");
                    }
                }
            }
        }
    }

    #[test]
    fn group_refuses_what_it_cannot_merge() {
        let a = geom(1, 8, [6, 6], 6, 1);
        let wa = pack_weights(&a, &rand_vec(a.weight_len(), 1));
        let ba = vec![0.0; 6];
        let member = |g, p, b, act| Member {
            geom: g,
            packed: p,
            bias: b,
            act,
        };
        let ok = member(&a, &wa, &ba, Activation::Relu);
        assert!(PointwiseGroup::new(&[ok]).is_err(), "one member");
        // A different input size.
        let c = geom(1, 8, [6, 7], 6, 1);
        let wc = pack_weights(&c, &rand_vec(c.weight_len(), 2));
        assert!(PointwiseGroup::new(&[ok, member(&c, &wc, &ba, Activation::Relu)]).is_err());
        // An activation the tile does not apply.
        assert!(PointwiseGroup::new(&[ok, member(&a, &wa, &ba, Activation::Sigmoid)]).is_err());
        // Weights of the wrong length.
        assert!(PointwiseGroup::new(&[ok, member(&a, &wa[1..], &ba, Activation::Relu)]).is_err());
        // Too many members.
        assert!(PointwiseGroup::new(&[ok; 5]).is_err());
        let group = PointwiseGroup::new(&[ok, ok]).expect("two alike");
        // The wrong number of outputs, or one too short, is an error, not a panic.
        let x = rand_vec(a.input_len(), 3);
        let mut scratch = vec![0.0; group.scratch_len(1)];
        let mut o1 = vec![0.0; a.output_len()];
        assert!(group
            .run(SimdLevel::Scalar, &x, &mut [&mut o1], &mut scratch)
            .is_err());
        let mut o2 = vec![0.0; a.output_len() - 1];
        assert!(group
            .run(SimdLevel::Scalar, &x, &mut [&mut o1, &mut o2], &mut scratch)
            .is_err());
    }
}
