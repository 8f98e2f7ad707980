//! Max / average pooling (N-d, pads, strides, dilations; the caller computes the output dims,
//! so ceil_mode is just a larger `out_spatial`) and global average / max pooling.
//!
//! Parallel over (image, channel) planes. 2-D pools take the separable SIMD path in
//! `pool2d.rs`; other ranks walk every window tap (`pool_plane_nd`, also the reference the
//! fast path is tested against).

use super::cpu_features::{simd_level, SimdLevel};
use super::{ensure, KernelError};
use rayon::prelude::*;

/// Shapes of a pooling op. Vectors have one entry per spatial dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    pub batch: usize,
    pub channels: usize,
    pub in_spatial: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    /// Output dims as the caller computed them (floor or ceil mode, auto_pad).
    pub out_spatial: Vec<usize>,
}

impl PoolGeometry {
    /// Checks vector lengths and that every window starts inside the padded input.
    pub fn validate(&self) -> Result<(), KernelError> {
        let nd = self.in_spatial.len();
        ensure!(nd >= 1, "pool needs at least one spatial dimension");
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
                "pool geometry vectors must all have {nd} entries"
            );
        }
        for d in 0..nd {
            ensure!(
                self.kernel[d] >= 1 && self.strides[d] >= 1 && self.dilations[d] >= 1,
                "pool axis {d}: zero kernel/stride/dilation"
            );
            ensure!(
                self.out_spatial[d] == 0
                    || (self.out_spatial[d] - 1) * self.strides[d]
                        < self.in_spatial[d] + self.pads_begin[d],
                "pool axis {d}: last window starts past the input"
            );
        }
        Ok(())
    }
    pub fn in_plane(&self) -> usize {
        self.in_spatial.iter().product()
    }
    pub fn out_plane(&self) -> usize {
        self.out_spatial.iter().product()
    }
}

/// Which reduction a pooling window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    /// Average; `count_include_pad` counts padded cells (inside the begin/end pads) in the
    /// divisor. Cells beyond the end pad (ceil mode overhang) never count, as in ONNX Runtime.
    Avg {
        count_include_pad: bool,
    },
}

/// Pools `input` (`N × C × in_spatial`) into `output` (`N × C × out_spatial`).
/// A max window with no valid cell yields `-inf`... which cannot happen for valid geometries.
pub fn pool(
    g: &PoolGeometry,
    kind: PoolKind,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    pool_with(simd_level(), g, kind, input, output)
}

/// [`pool`] at a forced SIMD level (clamped to the hardware); tests check every level.
pub fn pool_with(
    level: SimdLevel,
    g: &PoolGeometry,
    kind: PoolKind,
    input: &[f32],
    output: &mut [f32],
) -> Result<(), KernelError> {
    g.validate()?;
    check_lengths(g, input, output)?;
    if output.is_empty() {
        return Ok(());
    }
    if super::pool2d::takes(g) {
        super::pool2d::pool_2d(g, kind, level, input, output);
    } else {
        pool_nd(g, kind, input, output);
    }
    Ok(())
}

/// A pooling op prepared once for its geometry (the executor builds one per node at load): a
/// 2-D pool keeps its plan and one scratch per worker, so a run allocates nothing. Same
/// results as [`pool`].
pub struct PreparedPool {
    geom: PoolGeometry,
    kind: PoolKind,
    /// The 2-D fast path's plan and scratch (other ranks, and windows far wider than their
    /// input, walk every window tap).
    fast: Option<super::pool2d::Prepared>,
}

impl std::fmt::Debug for PreparedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedPool")
            .field("geom", &self.geom)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PreparedPool {
    /// Validates `g` and plans it for `kind`, with scratch for `threads` workers (the size of
    /// the rayon pool [`PreparedPool::run`] is called in; with fewer, runs still work but the
    /// extra workers allocate their own scratch).
    pub fn new(g: PoolGeometry, kind: PoolKind, threads: usize) -> Result<Self, KernelError> {
        g.validate()?;
        let fast = super::pool2d::takes(&g)
            .then(|| super::pool2d::Prepared::new(&g, kind, simd_level(), threads.max(1)));
        Ok(PreparedPool {
            geom: g,
            kind,
            fast,
        })
    }

    pub fn geometry(&self) -> &PoolGeometry {
        &self.geom
    }

    /// Pools `input` (`N × C × in_spatial`) into `output` (`N × C × out_spatial`).
    pub fn run(&self, input: &[f32], output: &mut [f32]) -> Result<(), KernelError> {
        check_lengths(&self.geom, input, output)?;
        if output.is_empty() {
            return Ok(());
        }
        match &self.fast {
            Some(p) => p.run(input, output),
            None => pool_nd(&self.geom, self.kind, input, output),
        }
        Ok(())
    }
}

fn check_lengths(g: &PoolGeometry, input: &[f32], output: &[f32]) -> Result<(), KernelError> {
    let planes = g.batch * g.channels;
    ensure!(
        input.len() == planes * g.in_plane(),
        "pool input has {} values, expected {}",
        input.len(),
        planes * g.in_plane()
    );
    ensure!(
        output.len() == planes * g.out_plane(),
        "pool output has {} values, expected {}",
        output.len(),
        planes * g.out_plane()
    );
    Ok(())
}

/// Any rank: every window tap walked, plane by plane in parallel.
fn pool_nd(g: &PoolGeometry, kind: PoolKind, input: &[f32], output: &mut [f32]) {
    let (ip, op) = (g.in_plane(), g.out_plane());
    output
        .par_chunks_mut(op)
        .enumerate()
        .for_each(|(p, out)| pool_plane_nd(g, kind, &input[p * ip..(p + 1) * ip], out));
}

fn pool_plane_nd(g: &PoolGeometry, kind: PoolKind, x: &[f32], out: &mut [f32]) {
    let nd = g.in_spatial.len();
    let kk: usize = g.kernel.iter().product();
    let mut opos = vec![0usize; nd];
    let mut kpos = vec![0usize; nd];
    for (o, val) in out.iter_mut().enumerate() {
        let mut rem = o;
        for d in (0..nd).rev() {
            opos[d] = rem % g.out_spatial[d];
            rem /= g.out_spatial[d];
        }
        let mut acc = if kind == PoolKind::Max {
            f32::NEG_INFINITY
        } else {
            0.0
        };
        let mut valid = 0usize;
        let mut padded = 0usize;
        for k in 0..kk {
            let mut rem = k;
            for d in (0..nd).rev() {
                kpos[d] = rem % g.kernel[d];
                rem /= g.kernel[d];
            }
            let mut flat = 0usize;
            let mut inside = true;
            let mut in_pad = true;
            for d in 0..nd {
                let p = opos[d] * g.strides[d] + kpos[d] * g.dilations[d];
                if p >= g.in_spatial[d] + g.pads_begin[d] + g.pads_end[d] {
                    in_pad = false;
                }
                let xi = p as isize - g.pads_begin[d] as isize;
                if xi < 0 || xi >= g.in_spatial[d] as isize {
                    inside = false;
                } else {
                    flat = flat * g.in_spatial[d] + xi as usize;
                }
            }
            if in_pad {
                padded += 1;
            }
            if inside {
                valid += 1;
                let v = x[flat];
                acc = if kind == PoolKind::Max {
                    acc.max(v)
                } else {
                    acc + v
                };
            }
        }
        *val = match kind {
            PoolKind::Max => acc,
            PoolKind::Avg { count_include_pad } => {
                let div = if count_include_pad { padded } else { valid };
                if div == 0 {
                    0.0
                } else {
                    acc / div as f32
                }
            }
        };
    }
}

/// Global average (`max == false`) or max pooling: `planes` rows of `plane` values each
/// (`planes = N·C`) reduce to one value per row in `output`.
pub fn global_pool(
    input: &[f32],
    planes: usize,
    plane: usize,
    max: bool,
    output: &mut [f32],
) -> Result<(), KernelError> {
    ensure!(
        input.len() == planes * plane,
        "global pool input has {} values, expected {}",
        input.len(),
        planes * plane
    );
    ensure!(
        output.len() == planes,
        "global pool output has {} values, expected {planes}",
        output.len()
    );
    ensure!(plane > 0, "global pool over an empty plane");
    let level = super::cpu_features::simd_level();
    output
        .par_iter_mut()
        .enumerate()
        .with_min_len(16)
        .for_each(|(p, o)| {
            let x = &input[p * plane..(p + 1) * plane];
            *o = if max {
                x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                // Sum as a dot product with ones would need a buffer; 8-lane partial sums are as
                // accurate and vectorise.
                let mut acc = [0.0f32; 8];
                let mut chunks = x.chunks_exact(8);
                for ch in &mut chunks {
                    for l in 0..8 {
                        acc[l] += ch[l];
                    }
                }
                let s: f32 = acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
                let _ = level;
                s / plane as f32
            };
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{rand_vec, with_threads};

    fn geom(
        inp: &[usize],
        k: &[usize],
        s: &[usize],
        d: &[usize],
        pb: &[usize],
        pe: &[usize],
        ceil: bool,
    ) -> PoolGeometry {
        let out = (0..inp.len())
            .map(|i| {
                let span = d[i] * (k[i] - 1) + 1;
                let num = inp[i] + pb[i] + pe[i] - span;
                let mut o = if ceil {
                    num.div_ceil(s[i]) + 1
                } else {
                    num / s[i] + 1
                };
                // ONNX: the last window must start inside the input or the begin pad.
                if ceil && (o - 1) * s[i] >= inp[i] + pb[i] {
                    o -= 1;
                }
                o
            })
            .collect();
        PoolGeometry {
            batch: 2,
            channels: 3,
            in_spatial: inp.to_vec(),
            kernel: k.to_vec(),
            strides: s.to_vec(),
            dilations: d.to_vec(),
            pads_begin: pb.to_vec(),
            pads_end: pe.to_vec(),
            out_spatial: out,
        }
    }

    const KINDS: [PoolKind; 3] = [
        PoolKind::Max,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];

    /// The generic tap walk over every plane (the reference).
    fn reference(g: &PoolGeometry, kind: PoolKind, x: &[f32]) -> Vec<f32> {
        let (ip, op) = (g.in_plane(), g.out_plane());
        let mut want = vec![0.0; g.batch * g.channels * op];
        for p in 0..g.batch * g.channels {
            pool_plane_nd(
                g,
                kind,
                &x[p * ip..(p + 1) * ip],
                &mut want[p * op..(p + 1) * op],
            );
        }
        want
    }

    /// Checks the 2-D fast path at every SIMD level and 1 and 2 threads against the reference:
    /// max exactly (it picks an input), averages within float rounding of a different
    /// summation order; and every level / thread count bit-identical to the scalar 1-thread run.
    fn check_2d(g: &PoolGeometry, x: &[f32], what: &str) {
        for kind in KINDS {
            let want = reference(g, kind, x);
            let mut first: Option<Vec<f32>> = None;
            for level in SimdLevel::available() {
                let mut level_first: Option<Vec<f32>> = None;
                for threads in [1, 2] {
                    let mut out = vec![f32::NAN; want.len()];
                    // The fast path itself, also for windows `pool_with` sends to the generic
                    // walk (`pool2d::takes`): it must stay correct on them.
                    g.validate().expect("valid geometry");
                    with_threads(threads, || {
                        super::super::pool2d::pool_2d(g, kind, level, x, &mut out)
                    });
                    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                        let ok = if w.is_nan() {
                            o.is_nan()
                        } else if kind == PoolKind::Max {
                            o == w
                        } else {
                            (o - w).abs() <= 1e-6 * (1.0 + w.abs())
                        };
                        assert!(
                            ok,
                            "{what} {g:?} {kind:?} {level:?} t{threads} [{i}]: {o} vs {w}"
                        );
                    }
                    // Bit-identical across thread counts; across levels equal up to the sign
                    // of a zero (the flat SIMD path adds +0 for a padded row).
                    let same = |f: &[f32], bits: bool| {
                        f.iter().zip(&out).all(|(a, b)| {
                            if bits {
                                a.to_bits() == b.to_bits()
                            } else {
                                a == b || (a.is_nan() && b.is_nan())
                            }
                        })
                    };
                    match &first {
                        None => first = Some(out.clone()),
                        Some(f) => assert!(
                            same(f, false),
                            "{what} {g:?} {kind:?} {level:?} t{threads}: differs from scalar"
                        ),
                    }
                    match &level_first {
                        None => level_first = Some(out),
                        Some(f) => assert!(
                            same(f, true),
                            "{what} {g:?} {kind:?} {level:?} t{threads}: not bit-identical"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn pool_2d_fast_path_matches_generic_walk() {
        let cases = [
            geom(
                &[112, 112],
                &[3, 3],
                &[2, 2],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                false,
            ),
            geom(
                &[147, 147],
                &[3, 3],
                &[2, 2],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                false,
            ),
            geom(
                &[17, 17],
                &[3, 3],
                &[2, 2],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                false,
            ),
            geom(
                &[35, 35],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                false,
            ),
            geom(&[8, 8], &[3, 3], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
            geom(&[9, 10], &[3, 2], &[2, 3], &[1, 2], &[1, 0], &[2, 1], true),
            geom(&[7, 7], &[7, 7], &[1, 1], &[1, 1], &[0, 0], &[0, 0], false),
            geom(&[35, 35], &[3, 3], &[2, 2], &[1, 1], &[0, 0], &[0, 0], true),
            geom(&[9, 11], &[3, 3], &[1, 1], &[1, 1], &[1, 0], &[0, 2], false),
            geom(&[10, 9], &[3, 2], &[1, 1], &[2, 2], &[2, 1], &[1, 1], true),
            geom(&[6, 7], &[5, 5], &[1, 2], &[1, 1], &[2, 2], &[2, 2], true),
            geom(&[33, 40], &[2, 2], &[2, 2], &[1, 1], &[0, 0], &[0, 0], true),
            geom(
                &[20, 41],
                &[1, 1],
                &[2, 2],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                false,
            ),
            geom(&[21, 45], &[3, 4], &[3, 3], &[1, 1], &[1, 2], &[1, 2], true),
            // Output shape = input shape at stride 1 (the flat SIMD path), including planes
            // too thin for a whole block, asymmetric pads, dilation and non-square windows.
            geom(
                &[17, 17],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                false,
            ),
            geom(&[3, 3], &[3, 3], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
            // Windows wider than the plane with SAME pads (fuzzer find: the flat path read
            // outside the plane).
            geom(
                &[5, 5],
                &[3, 82],
                &[1, 1],
                &[1, 1],
                &[1, 40],
                &[1, 41],
                false,
            ),
            geom(&[6, 4], &[13, 9], &[1, 1], &[1, 1], &[6, 4], &[6, 4], false),
            geom(&[2, 5], &[3, 3], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
            geom(&[1, 9], &[3, 3], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
            geom(&[9, 1], &[3, 3], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
            geom(
                &[11, 13],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[0, 2],
                &[2, 0],
                false,
            ),
            geom(
                &[12, 10],
                &[5, 3],
                &[1, 1],
                &[1, 1],
                &[2, 1],
                &[2, 1],
                false,
            ),
            geom(
                &[13, 14],
                &[3, 3],
                &[1, 1],
                &[2, 2],
                &[2, 1],
                &[2, 3],
                false,
            ),
            geom(&[6, 20], &[7, 1], &[1, 1], &[1, 1], &[3, 0], &[3, 0], false),
        ];
        for (i, g) in cases.iter().enumerate() {
            let x = rand_vec(g.batch * g.channels * g.in_plane(), i as u64);
            check_2d(g, &x, &format!("case {i}"));
        }
    }

    /// The prepared pool (plan and per-worker scratch built once, as the executor uses it)
    /// gives `pool`'s bits whatever the pool it runs in: as many workers as slots, fewer, more
    /// (slots shared through their locks), windows taller than the stack row list, 3-D.
    #[test]
    fn prepared_pool_matches_pool_in_any_thread_pool() {
        let mut cases = vec![
            geom(
                &[35, 35],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                false,
            ),
            geom(
                &[112, 112],
                &[3, 3],
                &[2, 2],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                false,
            ),
            geom(
                &[17, 17],
                &[3, 3],
                &[2, 2],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                false,
            ),
            geom(
                &[30, 9],
                &[20, 3],
                &[1, 1],
                &[1, 1],
                &[2, 1],
                &[2, 1],
                false,
            ),
            geom(
                &[6, 7, 5],
                &[3, 2, 2],
                &[1, 2, 1],
                &[1, 1, 1],
                &[1, 0, 1],
                &[1, 1, 0],
                false,
            ),
        ];
        cases[1].channels = 64;
        for (i, g) in cases.into_iter().enumerate() {
            let x = rand_vec(g.batch * g.channels * g.in_plane(), 50 + i as u64);
            for kind in [
                PoolKind::Max,
                PoolKind::Avg {
                    count_include_pad: false,
                },
            ] {
                let mut want = vec![0.0; g.batch * g.channels * g.out_plane()];
                pool(&g, kind, &x, &mut want).expect("pool");
                let prepared = PreparedPool::new(g.clone(), kind, 2).expect("prepare");
                for threads in [1, 2, 3] {
                    for _ in 0..2 {
                        let mut got = vec![f32::NAN; want.len()];
                        with_threads(threads, || prepared.run(&x, &mut got)).expect("run");
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "case {i} {kind:?} t{threads}"
                        );
                    }
                }
                let short = vec![0.0; x.len() - 1];
                let mut out = vec![0.0; want.len()];
                assert!(prepared.run(&short, &mut out).is_err(), "case {i}");
            }
        }
    }

    /// Many small geometries drawn from a fixed sequence: odd sizes, kernels 1–4, strides 1–3,
    /// dilations 1–2, asymmetric pads (up to the kernel span), floor and ceil mode.
    #[test]
    fn pool_2d_random_geometries() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let mut pick = |n: usize| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 33) as usize % n
        };
        let mut tested = 0;
        while tested < 150 {
            let mut dims = [[0usize; 7]; 2];
            for d in &mut dims {
                let k = 1 + pick(4);
                let dil = 1 + pick(2) * pick(2);
                let span = dil * (k - 1) + 1;
                *d = [
                    span + pick(30),
                    k,
                    1 + pick(3),
                    dil,
                    pick(span),
                    pick(span),
                    pick(2),
                ];
            }
            let [h, w] = dims;
            let g = geom(
                &[h[0], w[0]],
                &[h[1], w[1]],
                &[h[2], w[2]],
                &[h[3], w[3]],
                &[h[4], w[4]],
                &[h[5], w[5]],
                h[6] == 1,
            );
            if g.validate().is_err() {
                continue;
            }
            let x = rand_vec(g.batch * g.channels * g.in_plane(), tested);
            check_2d(&g, &x, &format!("random {tested}"));
            tested += 1;
        }
    }

    /// Windows far wider than their input (fuzzer find: a 2 × 67 108 862 max pool with SAME
    /// pads over 32×32 asked for gigabytes of fast-path scratch at load) are prepared for the
    /// generic walk, which allocates nothing per tap; ordinary ones keep the fast path. Both
    /// give the reference's values.
    #[test]
    fn windows_far_wider_than_the_input_skip_the_fast_path() {
        let huge = 67_108_862;
        let wide = geom(
            &[4, 5],
            &[2, huge],
            &[1, 1],
            &[1, 1],
            &[0, huge / 2],
            &[1, huge / 2 - 1],
            false,
        );
        assert_eq!(wide.out_spatial, vec![4, 5]);
        assert!(!super::super::pool2d::takes(&wide));
        // At the bound: a window spanning 2·in + 16 takes the fast path, one more does not.
        let at = |k: usize| {
            geom(
                &[5, 5],
                &[3, k],
                &[1, 1],
                &[1, 1],
                &[1, 20],
                &[1, 20],
                false,
            )
        };
        assert!(super::super::pool2d::takes(&at(26)));
        assert!(!super::super::pool2d::takes(&at(27)));
        assert!(super::super::pool2d::takes(&geom(
            &[8, 8],
            &[8, 8],
            &[1, 1],
            &[1, 1],
            &[0, 0],
            &[0, 0],
            false
        )));
        for kind in KINDS {
            let g = at(27);
            let x = rand_vec(g.batch * g.channels * g.in_plane(), 5);
            let want = reference(&g, kind, &x);
            let prepared = PreparedPool::new(g.clone(), kind, 2).expect("prepare");
            assert!(prepared.fast.is_none());
            let mut out = vec![f32::NAN; want.len()];
            prepared.run(&x, &mut out).expect("run");
            assert!(out
                .iter()
                .zip(&want)
                .all(|(o, w)| (o - w).abs() <= 1e-6 * (1.0 + w.abs())));
            // Preparing the fuzzed shape is instant and allocates no per-tap scratch.
            let p = PreparedPool::new(wide.clone(), kind, 2).expect("prepare");
            assert!(p.fast.is_none());
        }
    }

    /// The rows-first AVX-512 max pool is planned for the geometries it serves (Inception-v3's
    /// 147×147 and 71×71 3×3/2 pools, ResNet's padded 112×112 one, a ragged last block,
    /// taller windows, pads on either side, ceil mode) and not for narrow, dilated, other
    /// widths or average pools; padded and tall cases match the reference.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rows_first_max_pool_is_planned_where_it_applies() {
        use super::super::pool2d::rows_first_max;
        let s2 = |hw: [usize; 2], k: [usize; 2], d: [usize; 2], pb: [usize; 2], pe, ceil| {
            geom(&hw, &k, &[2, 2], &d, &pb, pe, ceil)
        };
        let taken = [
            s2([147, 147], [3, 3], [1, 1], [0, 0], &[0, 0], false),
            s2([71, 71], [3, 3], [1, 1], [0, 0], &[0, 0], false),
            s2([9, 37], [3, 3], [1, 1], [0, 0], &[0, 0], false),
            s2([11, 40], [5, 3], [2, 1], [0, 0], &[0, 0], false),
            s2([112, 112], [3, 3], [1, 1], [1, 1], &[1, 1], false),
            s2([13, 46], [3, 3], [1, 1], [2, 2], &[1, 2], true),
            s2([6, 33], [2, 3], [1, 1], [0, 0], &[1, 1], true),
        ];
        for g in &taken {
            assert!(rows_first_max(g, PoolKind::Max), "{g:?}");
            for avg in &KINDS[1..] {
                assert!(!rows_first_max(g, *avg), "{g:?}");
            }
        }
        for g in [
            s2([35, 31], [3, 3], [1, 1], [0, 0], &[0, 0], false),
            s2([40, 40], [3, 3], [1, 2], [0, 0], &[0, 0], false),
            s2([40, 40], [3, 2], [1, 1], [0, 0], &[0, 0], false),
        ] {
            assert!(!rows_first_max(&g, PoolKind::Max), "{g:?}");
        }
        for (i, g) in taken[3..].iter().enumerate() {
            let x = rand_vec(g.batch * g.channels * g.in_plane(), 5 + i as u64);
            check_2d(g, &x, "rows first");
        }
    }

    /// Max pooling skips NaN inputs (an all-NaN window gives -inf) at every level, as the
    /// reference does; averages see the NaN.
    #[test]
    fn pool_2d_nan_inputs() {
        for g in [
            // The rows-first AVX-512 path (3 wide, stride 2, 18 outputs per row; with pads).
            geom(&[9, 37], &[3, 3], &[2, 2], &[1, 1], &[0, 0], &[0, 0], false),
            geom(&[9, 37], &[3, 3], &[2, 2], &[1, 1], &[1, 1], &[1, 1], true),
            geom(&[13, 21], &[3, 3], &[2, 2], &[1, 1], &[1, 1], &[1, 1], true),
            geom(
                &[12, 19],
                &[3, 3],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                &[1, 1],
                false,
            ),
            geom(
                &[19, 33],
                &[2, 3],
                &[1, 2],
                &[1, 1],
                &[0, 0],
                &[0, 0],
                false,
            ),
        ] {
            let mut x = rand_vec(g.batch * g.channels * g.in_plane(), 7);
            for (i, v) in x.iter_mut().enumerate() {
                if i % 7 == 3 || i % 11 == 0 {
                    *v = f32::NAN;
                }
            }
            // The first plane is all NaN.
            x[..g.in_plane()].fill(f32::NAN);
            let want = reference(&g, PoolKind::Max, &x);
            assert!(want[..g.out_plane()]
                .iter()
                .all(|v| *v == f32::NEG_INFINITY));
            assert!(want.iter().all(|v| !v.is_nan()));
            check_2d(&g, &x, "nan");
        }
    }

    #[test]
    fn generic_walk_against_hand_values() {
        // 1×1×4 input [1, 2, 3, 4], kernel 2, stride 2, pads 1/1 → windows [pad,1], [2,3], [4,pad].
        let g = PoolGeometry {
            batch: 1,
            channels: 1,
            in_spatial: vec![4],
            kernel: vec![2],
            strides: vec![2],
            dilations: vec![1],
            pads_begin: vec![1],
            pads_end: vec![1],
            out_spatial: vec![3],
        };
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0; 3];
        pool(&g, PoolKind::Max, &x, &mut out).expect("pool");
        assert_eq!(out, [1.0, 3.0, 4.0]);
        pool(
            &g,
            PoolKind::Avg {
                count_include_pad: false,
            },
            &x,
            &mut out,
        )
        .expect("pool");
        assert_eq!(out, [1.0, 2.5, 4.0]);
        pool(
            &g,
            PoolKind::Avg {
                count_include_pad: true,
            },
            &x,
            &mut out,
        )
        .expect("pool");
        assert_eq!(out, [0.5, 2.5, 2.0]);
    }

    #[test]
    fn global_pools() {
        let x = rand_vec(6 * 49, 3);
        let mut avg = vec![0.0; 6];
        let mut mx = vec![0.0; 6];
        global_pool(&x, 6, 49, false, &mut avg).expect("avg");
        global_pool(&x, 6, 49, true, &mut mx).expect("max");
        for p in 0..6 {
            let row = &x[p * 49..(p + 1) * 49];
            let s: f64 = row.iter().map(|v| *v as f64).sum();
            assert!((avg[p] as f64 - s / 49.0).abs() < 1e-6);
            assert_eq!(mx[p], row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        }
        assert!(global_pool(&x, 5, 49, false, &mut avg).is_err());
    }
}
