//! Latency statistics for `engine bench`.
//!
//! The median is the headline (robust to the scheduler hiccups of shared machines); min shows
//! what the machine can do undisturbed, p90 how bad the tail is.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Summary of repeated whole-model runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchStats {
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    pub mean_ms: f64,
    /// `batch / median` in images (samples) per second.
    pub images_per_s: f64,
    /// `flops_per_run / median`, GFLOP/s.
    pub gflops: f64,
    /// Peak resident set of this process so far (VmHWM), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl BenchStats {
    /// Statistics of `durations` (one per run of a `batch`-sized input doing `flops_per_run`
    /// FLOPs). `None` when there are no runs.
    pub fn from_durations(
        durations: &[Duration],
        batch: usize,
        flops_per_run: u64,
    ) -> Option<BenchStats> {
        if durations.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let n = ms.len();
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        let per_s = |x: f64| {
            if median > 0.0 {
                x / (median / 1e3)
            } else {
                0.0
            }
        };
        Some(BenchStats {
            runs: n,
            median_ms: median,
            min_ms: ms[0],
            p90_ms: percentile(&ms, 90.0),
            mean_ms: ms.iter().sum::<f64>() / n as f64,
            images_per_s: per_s(batch as f64),
            gflops: per_s(flops_per_run as f64) / 1e9,
            peak_rss_bytes: peak_rss_bytes(),
        })
    }
}

/// Parses the `VmHWM:` line of a `/proc/<pid>/status` text into bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let scale = match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    Some(value * scale)
}

/// Peak resident set size of this process (VmHWM from `/proc/self/status`); `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_vm_hwm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_known_durations() {
        let d: Vec<Duration> = [5, 1, 4, 2, 3, 10, 6, 7, 8, 9]
            .iter()
            .map(|&m| Duration::from_millis(m))
            .collect();
        let s = BenchStats::from_durations(&d, 8, 2_000_000_000);
        let s = s.as_ref();
        assert_eq!(s.map(|s| s.runs), Some(10));
        assert_eq!(s.map(|s| s.median_ms), Some(5.5));
        assert_eq!(s.map(|s| s.min_ms), Some(1.0));
        assert_eq!(s.map(|s| s.p90_ms), Some(9.0));
        assert_eq!(s.map(|s| s.mean_ms), Some(5.5));
        let ips = s.map(|s| s.images_per_s).unwrap_or(0.0);
        assert!((ips - 8.0 / 0.0055).abs() < 1e-6);
        let g = s.map(|s| s.gflops).unwrap_or(0.0);
        assert!((g - 2.0 / 0.0055).abs() < 1e-6);
        assert!(BenchStats::from_durations(&[], 1, 0).is_none());
        let one = BenchStats::from_durations(&[Duration::from_millis(3)], 1, 0);
        assert_eq!(one.map(|s| (s.median_ms, s.p90_ms)), Some((3.0, 3.0)));
    }

    #[test]
    fn vm_hwm_parsing() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmHWM:\t  123456 kB\nVmRSS:\t 1 kB\n"),
            Some(123_456 * 1024)
        );
        assert_eq!(parse_vm_hwm("VmRSS: 5 kB\n"), None);
        if cfg!(target_os = "linux") {
            // A running test process has a resident set of at least a megabyte.
            assert!(peak_rss_bytes().is_some_and(|b| b > 1 << 20));
        }
    }
}
