//! Human-readable units for tables and plots: `1.23 GMAC`, `12.5 MiB`, `3.21 ms`.
//!
//! Three significant digits everywhere: enough to compare layers, short enough for a column.

/// Formats `v` with three significant digits (`1.23`, `12.3`, `123`).
fn three_sig(v: f64) -> String {
    let a = v.abs();
    if a >= 99.95 {
        format!("{v:.0}")
    } else if a >= 9.995 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Decimal-prefixed count: `950`, `1.23 K`, `4.09 G` followed by `unit` (e.g. `MAC`).
pub fn si(v: f64, unit: &str) -> String {
    const PREFIXES: [(f64, &str); 5] =
        [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")];
    if !v.is_finite() {
        return "-".to_string();
    }
    for (scale, p) in PREFIXES {
        // Switch prefix where the rounded mantissa would reach 1000.
        if v.abs() >= scale * 0.9995 {
            return format!("{} {p}{unit}", three_sig(v / scale));
        }
    }
    if v == v.trunc() {
        format!("{v:.0} {unit}")
    } else {
        format!("{} {unit}", three_sig(v))
    }
}

/// A count of multiply-accumulates: `1.23 GMAC`.
pub fn macs(v: u64) -> String {
    si(v as f64, "MAC")
}

/// A count of floating-point operations: `2.46 GFLOP`.
pub fn flops(v: u64) -> String {
    si(v as f64, "FLOP")
}

/// A plain count (parameters): `25.6 M`.
pub fn count(v: u64) -> String {
    si(v as f64, "").trim_end().to_string()
}

/// Binary-prefixed bytes: `512 B`, `1.50 KiB`, `12.5 MiB`, `1.02 GiB`.
pub fn bytes(v: u64) -> String {
    const PREFIXES: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    let f = v as f64;
    for (scale, p) in PREFIXES {
        let scale = scale as f64;
        if f >= scale * 0.9995 {
            return format!("{} {p}", three_sig(f / scale));
        }
    }
    format!("{v} B")
}

/// Milliseconds with a unit that keeps three significant digits: `850 µs`, `3.21 ms`, `1.20 s`.
pub fn millis(ms: f64) -> String {
    if !ms.is_finite() {
        "-".to_string()
    } else if ms == 0.0 {
        "0 ms".to_string()
    } else if ms.abs() >= 999.5 {
        format!("{} s", three_sig(ms / 1000.0))
    } else if ms.abs() >= 0.9995 {
        format!("{} ms", three_sig(ms))
    } else {
        format!("{} µs", three_sig(ms * 1000.0))
    }
}

/// A shape as `1x64x56x56` (`?` when unknown, `scalar` for rank 0).
pub fn shape(s: Option<&[usize]>) -> String {
    match s {
        None => "?".to_string(),
        Some([]) => "scalar".to_string(),
        Some(dims) => dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x"),
    }
}

/// Shortens `s` to at most `max` characters by replacing its middle with `…`, because layer
/// names differ at both ends (`/layer4/layer4.2/conv3/Conv`).
pub fn shorten_middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max <= 1 {
        return "…".chars().take(max).collect();
    }
    let keep = max - 1;
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_units_three_significant_digits() {
        assert_eq!(macs(4_089_184_256), "4.09 GMAC");
        assert_eq!(macs(1_230_000), "1.23 MMAC");
        assert_eq!(macs(12_345), "12.3 KMAC");
        assert_eq!(macs(999), "999 MAC");
        assert_eq!(macs(999_900), "1.00 MMAC");
        assert_eq!(count(25_557_032), "25.6 M");
        assert_eq!(count(0), "0");
        assert_eq!(flops(123_456_789_012), "123 GFLOP");
    }

    #[test]
    fn byte_units_are_binary() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(13_107_200), "12.5 MiB");
        assert_eq!(bytes(1 << 30), "1.00 GiB");
        assert_eq!(bytes(1023 * 1024 + 1000), "1.00 MiB");
    }

    #[test]
    fn time_units() {
        assert_eq!(millis(3.2149), "3.21 ms");
        assert_eq!(millis(0.85), "850 µs");
        assert_eq!(millis(1200.0), "1.20 s");
        assert_eq!(millis(123.4), "123 ms");
        assert_eq!(millis(f64::NAN), "-");
    }

    #[test]
    fn shapes_and_shortening() {
        assert_eq!(shape(Some(&[1, 64, 56, 56])), "1x64x56x56");
        assert_eq!(shape(Some(&[])), "scalar");
        assert_eq!(shape(None), "?");
        let s = shorten_middle("/layer4/layer4.2/conv3/Conv", 13);
        assert_eq!(s.chars().count(), 13);
        assert_eq!(s, "/layer…3/Conv");
        assert_eq!(shorten_middle("short", 10), "short");
    }
}
