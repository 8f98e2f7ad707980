//! What this machine can do at best: FMA throughput and memory bandwidth.
//!
//! "% of peak" and the roofline need the machine's own ceilings, not a datasheet's: shared
//! cloud cores run at whatever clock they are given. The FMA probe runs independent
//! fused-multiply-add chains (enough of them to cover the FMA latency on two ports) with the
//! widest vector unit the CPU has, chosen at run time (AVX-512, else AVX2+FMA, else scalar);
//! the bandwidth probe copies a buffer twice the size of a typical L3. Together they take
//! about 0.2 s, and the result is cached per machine in `~/.cache/engine/calibration.json`,
//! keyed by CPU model string and thread count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The vector unit the FMA probe used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

/// One calibration result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub cpu_model: String,
    pub threads: usize,
    pub isa: Isa,
    /// FMA throughput of `threads` threads together, GFLOP/s (one FMA = 2 FLOPs).
    pub peak_gflops: f64,
    /// Copy bandwidth, GB/s (1e9 bytes; bytes read + bytes written per second).
    pub bandwidth_gbs: f64,
}

/// Independent accumulator chains per thread: FMA latency (4 cycles) × 2 ports = 8 needed;
/// a few more hide scheduling noise and still fit in 16 AVX2 registers.
const CHAINS: usize = 12;
/// Recurrence `acc = acc·A + B` stays bounded (converges to B/(1−A)), so no inf/denormals.
const A: f32 = 0.999_9;
const B: f32 = 1.0e-3;

/// Scalar reference and fallback of the FMA chains: returns the sum of the accumulators.
fn fma_scalar(iters: u64) -> f32 {
    let mut acc = [0.0f32; CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(A, B);
        }
    }
    std::hint::black_box(acc).iter().sum()
}

/// The same chains, 16 lanes each, with AVX-512F. Returns the lane-0 sum of the accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let va = _mm512_set1_ps(A);
    let vb = _mm512_set1_ps(B);
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, va, vb);
        }
    }
    let acc = std::hint::black_box(acc);
    acc.iter()
        .map(|&v| _mm_cvtss_f32(_mm512_castps512_ps128(v)))
        .sum()
}

/// The same chains, 8 lanes each, with AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let va = _mm256_set1_ps(A);
    let vb = _mm256_set1_ps(B);
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, va, vb);
        }
    }
    let acc = std::hint::black_box(acc);
    acc.iter()
        .map(|&v| _mm_cvtss_f32(_mm256_castps256_ps128(v)))
        .sum()
}

/// The widest FMA unit this CPU supports.
pub fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// FLOPs of one iteration of all chains (an FMA counts as two).
fn flops_per_iter(isa: Isa) -> f64 {
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 1,
    };
    (CHAINS * lanes * 2) as f64
}

/// Runs `iters` iterations of the chains with `isa`; returns (FLOPs done, checksum).
fn run_chains(isa: Isa, iters: u64) -> (f64, f32) {
    let sum = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect_isa` returned Avx512 only after `is_x86_feature_detected!("avx512f")`.
        Isa::Avx512 => unsafe { fma_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2 is returned only after detecting both avx2 and fma at run time.
        Isa::Avx2 => unsafe { fma_avx2(iters) },
        _ => fma_scalar(iters),
    };
    (iters as f64 * flops_per_iter(isa), sum)
}

fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    }
}

/// Runs `work` on `threads` threads started together; returns the wall time.
fn timed_parallel(threads: usize, work: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                work();
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Scope end joins all threads.
        start
    })
    .elapsed()
}

/// Measures the FMA peak of `threads` threads (GFLOP/s): best of three ~20 ms runs.
pub fn measure_peak_gflops(threads: usize) -> (f64, Isa) {
    let threads = resolve_threads(threads);
    let isa = detect_isa();
    // Size the run from a short single-thread probe.
    let probe_iters = 20_000u64;
    let t0 = Instant::now();
    run_chains(isa, probe_iters);
    let per_iter = t0.elapsed().as_secs_f64() / probe_iters as f64;
    let iters = ((0.02 / per_iter.max(1e-12)) as u64).clamp(10_000, 200_000_000);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let flops = flops_per_iter(isa) * iters as f64 * threads as f64;
        let wall = timed_parallel(threads, &|| {
            std::hint::black_box(run_chains(isa, iters));
        });
        best = best.max(flops / wall.as_secs_f64().max(1e-9) / 1e9);
    }
    (best, isa)
}

/// Measures copy bandwidth (GB/s, read + write bytes) with `threads` threads over 2×48 MiB (3× a 32 MiB L3).
pub fn measure_bandwidth_gbs(threads: usize) -> f64 {
    const BYTES: usize = 48 << 20;
    let threads = resolve_threads(threads);
    let n = BYTES / 8;
    let src: Vec<u64> = (0..n as u64).collect();
    let mut dst = vec![0u64; n];
    let chunk = n.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (d, sr) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(sr));
            }
        });
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        best = best.max(2.0 * BYTES as f64 / secs / 1e9);
    }
    std::hint::black_box(&dst);
    best
}

/// The CPU model string (`/proc/cpuinfo` "model name"), or the architecture when unknown.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// `~/.cache/engine/calibration.json` (`$XDG_CACHE_HOME/engine/...` when set).
pub fn default_cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("engine").join("calibration.json"))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    entries: BTreeMap<String, Calibration>,
}

fn cache_key(cpu: &str, threads: usize) -> String {
    format!("{cpu}|threads={threads}")
}

/// Measures both ceilings now (no cache).
pub fn measure(threads: usize) -> Calibration {
    let threads = resolve_threads(threads);
    let (peak_gflops, isa) = measure_peak_gflops(threads);
    Calibration {
        cpu_model: cpu_model(),
        threads,
        isa,
        peak_gflops,
        bandwidth_gbs: measure_bandwidth_gbs(threads),
    }
}

/// The calibration for `threads`, read from `cache` if it has this CPU and thread count,
/// else measured and written there. A missing or unreadable cache only costs a re-measure.
pub fn calibrate_with_cache(threads: usize, cache: Option<&Path>) -> Calibration {
    let threads = resolve_threads(threads);
    let key = cache_key(&cpu_model(), threads);
    let mut file: CacheFile = cache
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if let Some(c) = file.entries.get(&key) {
        if c.peak_gflops > 0.0 && c.bandwidth_gbs > 0.0 {
            return c.clone();
        }
    }
    let c = measure(threads);
    if let Some(p) = cache {
        file.entries.insert(key, c.clone());
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(text) = serde_json::to_string_pretty(&file) {
            // Best effort: a read-only home must not make profiling fail.
            let _ = std::fs::write(p, text);
        }
    }
    c
}

/// This machine's cached calibration for `threads`, without measuring anything.
pub fn cached(threads: usize) -> Option<Calibration> {
    let threads = resolve_threads(threads);
    let path = default_cache_path()?;
    let file: CacheFile = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    file.entries
        .get(&cache_key(&cpu_model(), threads))
        .filter(|c| c.peak_gflops > 0.0)
        .cloned()
}

/// The cached (or freshly measured) calibration for `threads` (0 = all cores).
pub fn calibration(threads: usize) -> Calibration {
    calibrate_with_cache(threads, default_cache_path().as_deref())
}

/// Peak GFLOP/s of `threads` threads (0 = all cores), cached per machine.
pub fn peak_gflops(threads: usize) -> f64 {
    calibration(threads).peak_gflops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_chains_match_scalar_reference() {
        let want = fma_scalar(1000);
        for isa in [Isa::Avx512, Isa::Avx2] {
            let usable = match isa {
                Isa::Avx512 => detect_isa() == Isa::Avx512,
                _ => detect_isa() != Isa::Scalar,
            };
            if usable {
                let (flops, got) = run_chains(isa, 1000);
                // Same fused operations in the same order: bit-identical per lane.
                assert_eq!(got, want, "{isa:?}");
                let lanes = if isa == Isa::Avx512 { 16.0 } else { 8.0 };
                assert_eq!(flops, 1000.0 * CHAINS as f64 * lanes * 2.0);
            }
        }
        // The recurrence converges towards B / (1 - A) per chain.
        let limit = CHAINS as f32 * B / (1.0 - A);
        let long = fma_scalar(200_000);
        assert!((long - limit).abs() / limit < 0.01, "{long} vs {limit}");
    }

    #[test]
    fn calibration_is_positive_quick_and_cached() {
        let _heavy = super::super::testutil::cpu_heavy_lock();
        let dir = std::env::temp_dir().join(format!("engine-calib-test-{}", std::process::id()));
        let path = dir.join("calibration.json");
        let start = Instant::now();
        let c = calibrate_with_cache(1, Some(&path));
        let first = start.elapsed();
        assert!(c.peak_gflops > 0.1 && c.bandwidth_gbs > 0.1, "{c:?}");
        assert!(first < Duration::from_secs(3), "calibration took {first:?}");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.contains(&cache_key(&cpu_model(), 1)));
        // Second call comes from the cache: identical numbers.
        let again = calibrate_with_cache(1, Some(&path));
        assert_eq!((again.isa, again.threads), (c.isa, c.threads));
        assert!((again.peak_gflops - c.peak_gflops).abs() <= 1e-9 * c.peak_gflops);
        assert!((again.bandwidth_gbs - c.bandwidth_gbs).abs() <= 1e-9 * c.bandwidth_gbs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
