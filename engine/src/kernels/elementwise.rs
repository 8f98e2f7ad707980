//! SIMD elementwise kernels: activations in place, same-shape and per-channel binary ops,
//! BatchNormalization as a per-channel scale + shift, and the fused conv epilogue.
//!
//! Each public kernel `foo(..)` dispatches on [`simd_level`]; `foo_with(level, ..)` forces a
//! level (tests check every level against the scalar reference). The bodies are plain Rust
//! loops written so LLVM vectorises them; they are compiled three times, inside functions with
//! `avx512f`, `avx2,fma` or no extra target features enabled, so one body serves all levels.
//! Everything here is memory-bound, which is why no hand-written intrinsics are needed.

use super::cpu_features::{detected_simd_level, simd_level, SimdLevel};
use crate::ir::Activation;

/// Defines `pub fn $name(level, args..)` that runs `$body(args..)` compiled for the best of
/// AVX-512F / AVX2+FMA / baseline that `level` (clamped to the hardware) allows.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident ( $($p:ident : $t:ty),* $(,)? ) => $body:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name(level: SimdLevel, $($p: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v512($($p: $t),*) { $body($($p),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v256($($p: $t),*) { $body($($p),*) }
                match level.min(detected_simd_level()) {
                    // SAFETY: the level is clamped to what the CPU reported at run time, so
                    // the target features these copies were compiled for are present.
                    SimdLevel::Avx512 => return unsafe { v512($($p),*) },
                    // SAFETY: as above.
                    SimdLevel::Avx2 => return unsafe { v256($($p),*) },
                    SimdLevel::Scalar => {}
                }
            }
            $body($($p),*)
        }
    };
}
pub(crate) use multiversion;

/// exp(x) for x ≤ 0 down to -88 (what sigmoid needs), vectorisable: range reduction to
/// r ∈ [-ln2/2, ln2/2], degree-6 polynomial, then scaling by 2^n through the exponent bits.
/// Relative error ≈ 2e-7 over the range.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest by adding 1.5·2^23 (stays branch-free and vectorisable on SSE2).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

/// Sigmoid via [`exp_neg`] on -|x| (no overflow for any input).
#[inline(always)]
fn sigmoid_fast(v: f32) -> f32 {
    let e = exp_neg(-v.abs());
    let s = 1.0 / (1.0 + e);
    if v >= 0.0 {
        s
    } else {
        1.0 - s
    }
}

#[inline(always)]
fn act_body(d: &mut [f32], act: Activation) {
    match act {
        Activation::None => {}
        // `v < 0 ? 0 : v` keeps NaN (`f32::max` would map it to 0) and still compiles to maxps.
        Activation::Relu => d
            .iter_mut()
            .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v }),
        Activation::LeakyRelu(a) => d
            .iter_mut()
            .for_each(|v| *v = if *v < 0.0 { *v * a } else { *v }),
        Activation::Clip(lo, hi) => d.iter_mut().for_each(|v| *v = v.max(lo).min(hi)),
        Activation::Sigmoid => d.iter_mut().for_each(|v| *v = sigmoid_fast(*v)),
    }
}

multiversion!(
    /// [`activation_inplace`] at a forced SIMD level.
    pub fn activation_inplace_with(d: &mut [f32], act: Activation) => act_body
);

/// Applies `act` to every element in place (Relu, LeakyRelu, Clip, Sigmoid; None is a no-op).
pub fn activation_inplace(d: &mut [f32], act: Activation) {
    activation_inplace_with(simd_level(), d, act)
}

#[inline(always)]
fn epilogue_body(d: &mut [f32], bias: f32, residual: Option<&[f32]>, act: Activation) {
    match residual {
        Some(r) => {
            let r = &r[..d.len()];
            d.iter_mut().zip(r).for_each(|(v, r)| *v += bias + *r);
        }
        None if bias != 0.0 => d.iter_mut().for_each(|v| *v += bias),
        None => {}
    }
    act_body(d, act);
}

multiversion!(
    /// [`bias_residual_activation`] at a forced SIMD level.
    pub fn bias_residual_activation_with(d: &mut [f32], bias: f32, residual: Option<&[f32]>, act: Activation) => epilogue_body
);

/// `d[i] = act(d[i] + bias + residual[i])`: the convolution epilogue for one output-channel row.
///
/// # Panics
/// If `residual` is shorter than `d`.
pub fn bias_residual_activation(
    d: &mut [f32],
    bias: f32,
    residual: Option<&[f32]>,
    act: Activation,
) {
    bias_residual_activation_with(simd_level(), d, bias, residual, act)
}

/// Elementwise binary operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[inline(always)]
fn binary_body(op: BinOp, a: &[f32], b: &[f32], out: &mut [f32], act: Activation) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    let it = out.iter_mut().zip(a.iter().zip(b));
    match op {
        BinOp::Add => it.for_each(|(o, (x, y))| *o = x + y),
        BinOp::Sub => it.for_each(|(o, (x, y))| *o = x - y),
        BinOp::Mul => it.for_each(|(o, (x, y))| *o = x * y),
        BinOp::Div => it.for_each(|(o, (x, y))| *o = x / y),
    }
    act_body(out, act);
}

multiversion!(
    /// [`binary`] at a forced SIMD level.
    pub fn binary_with(op: BinOp, a: &[f32], b: &[f32], out: &mut [f32], act: Activation) => binary_body
);

/// `out[i] = act(a[i] op b[i])` for same-shape operands (`act` = None for a plain op).
///
/// # Panics
/// If `a` or `b` is shorter than `out`.
pub fn binary(op: BinOp, a: &[f32], b: &[f32], out: &mut [f32], act: Activation) {
    binary_with(simd_level(), op, a, b, out, act)
}

#[inline(always)]
fn binary_inplace_body(op: BinOp, d: &mut [f32], b: &[f32], act: Activation) {
    let b = &b[..d.len()];
    let it = d.iter_mut().zip(b);
    match op {
        BinOp::Add => it.for_each(|(x, y)| *x += y),
        BinOp::Sub => it.for_each(|(x, y)| *x -= y),
        BinOp::Mul => it.for_each(|(x, y)| *x *= y),
        BinOp::Div => it.for_each(|(x, y)| *x /= y),
    }
    act_body(d, act);
}

multiversion!(
    /// [`binary_inplace`] at a forced SIMD level.
    pub fn binary_inplace_with(op: BinOp, d: &mut [f32], b: &[f32], act: Activation) => binary_inplace_body
);

/// `d[i] = act(d[i] op b[i])` in place (the executor's choice when `a`'s buffer can be reused).
pub fn binary_inplace(op: BinOp, d: &mut [f32], b: &[f32], act: Activation) {
    binary_inplace_with(simd_level(), op, d, b, act)
}

#[inline(always)]
fn channel_affine_body(
    d: &mut [f32],
    channels: usize,
    inner: usize,
    scale: Option<&[f32]>,
    shift: Option<&[f32]>,
    act: Activation,
) {
    if inner == 0 || channels == 0 {
        return;
    }
    for (row_idx, row) in d.chunks_mut(inner).enumerate() {
        let c = row_idx % channels;
        match (scale, shift) {
            (Some(s), Some(t)) => {
                let (s, t) = (s[c], t[c]);
                row.iter_mut().for_each(|v| *v = *v * s + t);
            }
            (Some(s), None) => {
                let s = s[c];
                row.iter_mut().for_each(|v| *v *= s);
            }
            (None, Some(t)) => {
                let t = t[c];
                row.iter_mut().for_each(|v| *v += t);
            }
            (None, None) => {}
        }
        act_body(row, act);
    }
}

multiversion!(
    /// [`channel_affine_inplace`] at a forced SIMD level.
    pub fn channel_affine_inplace_with(
        d: &mut [f32],
        channels: usize,
        inner: usize,
        scale: Option<&[f32]>,
        shift: Option<&[f32]>,
        act: Activation,
    ) => channel_affine_body
);

/// Per-channel `d = act(d · scale[c] + shift[c])` over an `[N, channels, inner]` tensor, in place.
///
/// Covers BatchNormalization (see [`batch_norm_scale_shift`]), Add/Mul of a `[C,1,1]`-shaped
/// (per-channel broadcast) operand (pass only `shift` or only `scale`), each with an optional
/// fused activation. `d.len()` must be a multiple of `channels * inner`.
///
/// # Panics
/// If `scale`/`shift` have fewer than `channels` values.
pub fn channel_affine_inplace(
    d: &mut [f32],
    channels: usize,
    inner: usize,
    scale: Option<&[f32]>,
    shift: Option<&[f32]>,
    act: Activation,
) {
    channel_affine_inplace_with(simd_level(), d, channels, inner, scale, shift, act)
}

/// Folds inference-mode BatchNormalization parameters into per-channel `(scale, shift)`:
/// `y = (x - mean) / sqrt(var + eps) · gamma + beta = x · scale + shift`. Computed in f64.
pub fn batch_norm_scale_shift(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let n = gamma.len().min(beta.len()).min(mean.len()).min(var.len());
    let mut scale = Vec::with_capacity(n);
    let mut shift = Vec::with_capacity(n);
    for c in 0..n {
        let s = gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt();
        scale.push(s as f32);
        shift.push((beta[c] as f64 - mean[c] as f64 * s) as f32);
    }
    (scale, shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{max_abs_diff, rand_vec};

    const ACTS: [Activation; 5] = [
        Activation::None,
        Activation::Relu,
        Activation::LeakyRelu(0.1),
        Activation::Clip(-0.3, 0.6),
        Activation::Sigmoid,
    ];

    #[test]
    fn activations_every_level_match_reference() {
        let mut x = rand_vec(1037, 11);
        for v in x.iter_mut() {
            *v *= 30.0; // exercise sigmoid saturation
        }
        x.push(100.0);
        x.push(-100.0);
        for act in ACTS {
            let want: Vec<f32> = x.iter().map(|v| act.apply(*v)).collect();
            for level in SimdLevel::available() {
                let mut d = x.clone();
                activation_inplace_with(level, &mut d, act);
                let err = max_abs_diff(&d, &want);
                assert!(err <= 2e-7, "{act:?} {level:?}: {err}");
            }
        }
    }

    #[test]
    fn epilogue_every_level() {
        let x = rand_vec(100, 1);
        let r = rand_vec(100, 2);
        for act in ACTS {
            for res in [None, Some(&r[..])] {
                let want: Vec<f32> = (0..100)
                    .map(|i| act.apply(x[i] + 0.25 + res.map_or(0.0, |r| r[i])))
                    .collect();
                for level in SimdLevel::available() {
                    let mut d = x.clone();
                    bias_residual_activation_with(level, &mut d, 0.25, res, act);
                    assert!(max_abs_diff(&d, &want) <= 2e-7, "{act:?} {level:?}");
                }
            }
        }
    }

    #[test]
    fn binary_ops_every_level() {
        let a = rand_vec(67, 3);
        let b: Vec<f32> = rand_vec(67, 4).iter().map(|v| v + 2.0).collect();
        for (op, f) in [
            (BinOp::Add, (|x, y| x + y) as fn(f32, f32) -> f32),
            (BinOp::Sub, |x, y| x - y),
            (BinOp::Mul, |x, y| x * y),
            (BinOp::Div, |x, y| x / y),
        ] {
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| f(*x, *y).max(0.0)).collect();
            for level in SimdLevel::available() {
                let mut out = vec![0.0; 67];
                binary_with(level, op, &a, &b, &mut out, Activation::Relu);
                assert_eq!(out, want, "{op:?} {level:?}");
                let mut d = a.clone();
                binary_inplace_with(level, op, &mut d, &b, Activation::Relu);
                assert_eq!(d, want, "{op:?} {level:?} in place");
            }
        }
    }

    #[test]
    fn batch_norm_and_channel_broadcast_every_level() {
        let (n, c, inner) = (2, 3, 10);
        let x = rand_vec(n * c * inner, 5);
        let gamma = [1.5, -0.5, 2.0];
        let beta = [0.1, 0.2, -0.3];
        let mean = [0.05, -0.1, 0.2];
        let var = [0.9, 1.1, 0.25];
        let eps = 1e-5;
        let (scale, shift) = batch_norm_scale_shift(&gamma, &beta, &mean, &var, eps);
        let mut want = vec![0.0f32; x.len()];
        for i in 0..x.len() {
            let ch = (i / inner) % c;
            let y = (x[i] as f64 - mean[ch] as f64) / (var[ch] as f64 + eps as f64).sqrt()
                * gamma[ch] as f64
                + beta[ch] as f64;
            want[i] = y as f32;
        }
        for level in SimdLevel::available() {
            let mut d = x.clone();
            channel_affine_inplace_with(
                level,
                &mut d,
                c,
                inner,
                Some(&scale),
                Some(&shift),
                Activation::None,
            );
            assert!(max_abs_diff(&d, &want) < 1e-6, "{level:?}");
            let mut d = x.clone();
            channel_affine_inplace_with(
                level,
                &mut d,
                c,
                inner,
                None,
                Some(&beta),
                Activation::None,
            );
            let w: Vec<f32> = (0..x.len()).map(|i| x[i] + beta[(i / inner) % c]).collect();
            assert_eq!(d, w);
            let mut d = x.clone();
            channel_affine_inplace_with(
                level,
                &mut d,
                c,
                inner,
                Some(&gamma),
                None,
                Activation::Relu,
            );
            let w: Vec<f32> = (0..x.len())
                .map(|i| (x[i] * gamma[(i / inner) % c]).max(0.0))
                .collect();
            assert_eq!(d, w);
        }
    }
}
