//! Max / average pooling (N-d, pads, strides, dilations; the caller computes the output dims,
//! so ceil_mode is just a larger `out_spatial`) and global average / max pooling.
//!
//! Parallel over (image, channel) planes. The 2-D path computes, per kernel column, the range
//! of output x whose input x is inside the image, so the inner loops have no bounds branches
//! and vectorise for stride 1.

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
    g.validate()?;
    let (ip, op) = (g.in_plane(), g.out_plane());
    let planes = g.batch * g.channels;
    ensure!(
        input.len() == planes * ip,
        "pool input has {} values, expected {}",
        input.len(),
        planes * ip
    );
    ensure!(
        output.len() == planes * op,
        "pool output has {} values, expected {}",
        output.len(),
        planes * op
    );
    if output.is_empty() {
        return Ok(());
    }
    if g.in_spatial.len() == 2 {
        output
            .par_chunks_mut(op)
            .enumerate()
            .for_each(|(p, out)| pool_plane_2d(g, kind, &input[p * ip..(p + 1) * ip], out));
    } else {
        output
            .par_chunks_mut(op)
            .enumerate()
            .for_each(|(p, out)| pool_plane_nd(g, kind, &input[p * ip..(p + 1) * ip], out));
    }
    Ok(())
}

fn pool_plane_2d(g: &PoolGeometry, kind: PoolKind, x: &[f32], out: &mut [f32]) {
    let (ih, iw) = (g.in_spatial[0], g.in_spatial[1]);
    let (oh, ow) = (g.out_spatial[0], g.out_spatial[1]);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (sh, sw) = (g.strides[0], g.strides[1]);
    let (dh, dw) = (g.dilations[0], g.dilations[1]);
    let (ph, pw) = (g.pads_begin[0], g.pads_begin[1]);
    let ranges: Vec<(usize, usize, isize)> = (0..kw)
        .map(|kx| {
            let off = (kx * dw) as isize - pw as isize;
            let lo = if off >= 0 {
                0
            } else {
                ((-off) as usize).div_ceil(sw)
            };
            let hi = if (iw as isize) <= off {
                0
            } else {
                ((iw as isize - off) as usize).div_ceil(sw)
            }
            .min(ow);
            (lo.min(hi), hi, off)
        })
        .collect();
    let is_max = kind == PoolKind::Max;
    // Average divisors are separable (valid or padded taps per row × per column): column counts
    // are computed once per plane instead of counting taps per output value.
    let count_include_pad = matches!(
        kind,
        PoolKind::Avg {
            count_include_pad: true
        }
    );
    let col_count: Vec<usize> = (0..ow)
        .map(|ox| {
            if count_include_pad {
                padded_count(ox, kw, sw, dw, iw + pw + g.pads_end[1])
            } else {
                ranges.iter().filter(|r| r.0 <= ox && ox < r.1).count()
            }
        })
        .collect();
    for oy in 0..oh {
        let acc = &mut out[oy * ow..(oy + 1) * ow];
        acc.fill(if is_max { f32::NEG_INFINITY } else { 0.0 });
        let mut valid_rows = 0usize;
        for ky in 0..kh {
            let iy = (oy * sh + ky * dh) as isize - ph as isize;
            if iy < 0 || iy >= ih as isize {
                continue;
            }
            valid_rows += 1;
            let row = &x[iy as usize * iw..(iy as usize + 1) * iw];
            for &(lo, hi, off) in &ranges {
                if lo >= hi {
                    continue;
                }
                let start = ((lo * sw) as isize + off) as usize;
                // Stride 1 zips contiguous slices (vectorises); other strides gather.
                match (is_max, sw) {
                    (true, 1) => {
                        for (a, s) in acc[lo..hi].iter_mut().zip(&row[start..start + hi - lo]) {
                            *a = a.max(*s);
                        }
                    }
                    (true, _) => {
                        for (i, a) in acc[lo..hi].iter_mut().enumerate() {
                            *a = a.max(row[start + i * sw]);
                        }
                    }
                    (false, 1) => {
                        for (a, s) in acc[lo..hi].iter_mut().zip(&row[start..start + hi - lo]) {
                            *a += *s;
                        }
                    }
                    (false, _) => {
                        for (i, a) in acc[lo..hi].iter_mut().enumerate() {
                            *a += row[start + i * sw];
                        }
                    }
                }
            }
        }
        if !is_max {
            let rows = if count_include_pad {
                padded_count(oy, kh, sh, dh, ih + ph + g.pads_end[0])
            } else {
                valid_rows
            };
            for (a, &cc) in acc.iter_mut().zip(&col_count) {
                let div = rows * cc;
                *a = if div == 0 { 0.0 } else { *a / div as f32 };
            }
        }
    }
}

/// Taps of a window along one axis that lie inside `[0, padded_len)` (input plus both pads).
#[inline]
fn padded_count(o: usize, k: usize, s: usize, d: usize, padded_len: usize) -> usize {
    (0..k).filter(|t| o * s + t * d < padded_len).count()
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
    use crate::kernels::test_util::{max_abs_diff, rand_vec, with_threads};

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
            geom(&[9, 10], &[3, 2], &[2, 3], &[1, 2], &[1, 0], &[2, 1], true),
            geom(&[7, 7], &[7, 7], &[1, 1], &[1, 1], &[0, 0], &[0, 0], false),
            geom(&[8, 8], &[3, 3], &[1, 1], &[1, 1], &[1, 1], &[1, 1], false),
            geom(&[35, 35], &[3, 3], &[2, 2], &[1, 1], &[0, 0], &[0, 0], true),
            // Stride-1 fast paths with asymmetric pads, dilation and ceil overhang.
            geom(&[9, 11], &[3, 3], &[1, 1], &[1, 1], &[1, 0], &[0, 2], false),
            geom(&[10, 9], &[3, 2], &[1, 1], &[2, 2], &[2, 1], &[1, 1], true),
            geom(&[6, 7], &[5, 5], &[1, 2], &[1, 1], &[2, 2], &[2, 2], true),
        ];
        for (i, g) in cases.iter().enumerate() {
            let x = rand_vec(g.batch * g.channels * g.in_plane(), i as u64);
            for kind in [
                PoolKind::Max,
                PoolKind::Avg {
                    count_include_pad: false,
                },
                PoolKind::Avg {
                    count_include_pad: true,
                },
            ] {
                let mut want = vec![0.0; g.batch * g.channels * g.out_plane()];
                for p in 0..g.batch * g.channels {
                    let op = g.out_plane();
                    pool_plane_nd(
                        g,
                        kind,
                        &x[p * g.in_plane()..(p + 1) * g.in_plane()],
                        &mut want[p * op..(p + 1) * op],
                    );
                }
                for threads in [1, 2] {
                    let mut out = vec![f32::NAN; want.len()];
                    with_threads(threads, || pool(g, kind, &x, &mut out)).expect("pool");
                    assert!(max_abs_diff(&out, &want) < 1e-6, "case {i} {kind:?}");
                }
            }
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
