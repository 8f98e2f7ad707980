//! Run-time CPU feature detection, cached, with a way to force a lower SIMD level.
//!
//! Kernels ask [`simd_level`] once per call (an atomic load) and dispatch to an AVX-512, AVX2+FMA
//! or scalar body. The level can be lowered, never raised above what the hardware has:
//! - by the environment variable `ENGINE_SIMD=scalar|avx2|avx512` (read once, at first use);
//! - by [`set_max_simd_level`] at run time (benchmarks, A/B comparisons).
//!
//! Tests that must check every path call the `*_with(level, ..)` variants of the kernels
//! instead of flipping the global level, so parallel tests do not race each other.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A SIMD instruction-set level, ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable Rust, no explicit SIMD (the compiler may still auto-vectorise with SSE2).
    Scalar = 0,
    /// AVX2 + FMA (256-bit).
    Avx2 = 1,
    /// AVX-512F (512-bit).
    Avx512 = 2,
}

impl SimdLevel {
    /// Parses `scalar`, `avx2` or `avx512` (case-insensitive).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx512f" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// Lower-case name, the same spelling [`SimdLevel::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn from_u8(v: u8) -> SimdLevel {
        match v {
            0 => SimdLevel::Scalar,
            1 => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        }
    }

    /// Every level this CPU can run, weakest first (what the tests iterate over).
    pub fn available() -> Vec<SimdLevel> {
        let hw = detected_simd_level();
        [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
            .into_iter()
            .filter(|l| *l <= hw)
            .collect()
    }
}

/// The strongest level the hardware supports (ignores any override). Cached.
pub fn detected_simd_level() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        SimdLevel::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

/// `u8::MAX` means "not initialised yet".
static CURRENT: AtomicU8 = AtomicU8::new(u8::MAX);

fn initial_level() -> SimdLevel {
    let hw = detected_simd_level();
    match std::env::var("ENGINE_SIMD")
        .ok()
        .as_deref()
        .and_then(SimdLevel::parse)
    {
        Some(req) => req.min(hw),
        None => hw,
    }
}

/// The level kernels should use now: the hardware level, lowered by `ENGINE_SIMD` or
/// [`set_max_simd_level`].
#[inline]
pub fn simd_level() -> SimdLevel {
    let v = CURRENT.load(Ordering::Relaxed);
    if v != u8::MAX {
        return SimdLevel::from_u8(v);
    }
    let l = initial_level();
    CURRENT.store(l as u8, Ordering::Relaxed);
    l
}

/// Caps the level used by kernels at `max` (clamped to what the hardware has); `None` goes back
/// to the hardware level lowered by `ENGINE_SIMD`. Returns the level now in force.
pub fn set_max_simd_level(max: Option<SimdLevel>) -> SimdLevel {
    let l = match max {
        Some(m) => m.min(detected_simd_level()),
        None => initial_level(),
    };
    CURRENT.store(l as u8, Ordering::Relaxed);
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(SimdLevel::parse("AVX512"), Some(SimdLevel::Avx512));
        assert_eq!(SimdLevel::parse("avx2"), Some(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse("scalar"), Some(SimdLevel::Scalar));
        assert_eq!(SimdLevel::parse("sse"), None);
        assert!(SimdLevel::Scalar < SimdLevel::Avx2 && SimdLevel::Avx2 < SimdLevel::Avx512);
        for l in SimdLevel::available() {
            assert_eq!(SimdLevel::parse(l.name()), Some(l));
        }
    }

    #[test]
    fn available_never_exceeds_hardware() {
        let hw = detected_simd_level();
        let av = SimdLevel::available();
        assert_eq!(av.first(), Some(&SimdLevel::Scalar));
        assert_eq!(av.last(), Some(&hw));
        #[cfg(target_arch = "x86_64")]
        if hw == SimdLevel::Avx512 {
            assert!(is_x86_feature_detected!("avx512f"));
        }
    }
}
