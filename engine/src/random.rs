//! A small seeded random source, so inputs and zoo weights are reproducible across machines
//! and versions without depending on a PRNG crate's stream stability.

/// SplitMix64: tiny, fast, and statistically good enough for test inputs and weight init.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal via Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// `n` standard-normal f32 values.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }
}

/// A seeded N(0,1) float tensor of the given shape.
pub fn normal_tensor(shape: &[usize], seed: u64) -> crate::Tensor {
    let n = shape.iter().product();
    let data = Rng::new(seed).normal_vec(n);
    // The length equals the shape's product by construction.
    crate::Tensor::F32(
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data)
            .unwrap_or_else(|_| ndarray::ArrayD::zeros(ndarray::IxDyn(shape))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_roughly_standard_normal() {
        let a = Rng::new(7).normal_vec(20000);
        let b = Rng::new(7).normal_vec(20000);
        assert_eq!(a, b);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert_ne!(Rng::new(8).normal_vec(4), a[..4].to_vec());
    }
}
