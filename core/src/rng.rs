//! Seeded randomness for initialisation and dropout.
//!
//! candle's CPU device cannot be seeded (`Device::set_seed` fails on CPU), so every random
//! tensor reft makes is drawn here, on the host, from one seeded generator, then moved to
//! the device. Same seed, same numbers, on any device.

use candle_core::{DType, Device, Shape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub struct SeededRng(StdRng);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(StdRng::seed_from_u64(seed))
    }

    /// A generator for a sub-task, so adding draws in one place does not shift another's.
    pub fn fork(&mut self) -> SeededRng {
        SeededRng(StdRng::seed_from_u64(self.0.random()))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }

    /// U(lo, hi) samples.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.0.random::<f32>()).collect()
    }

    /// N(0, std²) samples.
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        let d = Normal::new(0f32, std.max(f32::MIN_POSITIVE)).expect("finite std");
        (0..n).map(|_| d.sample(&mut self.0)).collect()
    }

    pub fn uniform(&mut self, shape: impl Into<Shape>, lo: f32, hi: f32, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        let v = self.uniform_vec(shape.elem_count(), lo, hi);
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    }

    pub fn normal(&mut self, shape: impl Into<Shape>, std: f32, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        let v = self.normal_vec(shape.elem_count(), std);
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)
    }

    /// PyTorch's default `nn.Linear` initialisation (Kaiming-uniform with a = √5), which
    /// reduces to U(−1/√fan_in, 1/√fan_in) for the weight and the bias alike.
    pub fn torch_linear_init(&mut self, shape: impl Into<Shape>, fan_in: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        self.uniform(shape, -bound, bound, dtype, device)
    }
}

/// Inverted dropout with a seeded mask: kept entries are scaled by 1/(1−p).
pub fn dropout(x: &Tensor, p: f32, rng: &mut SeededRng) -> candle_core::Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = rng
        .uniform_vec(x.elem_count(), 0.0, 1.0)
        .into_iter()
        .map(|u| if u >= p { keep } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        let a = SeededRng::new(7).normal_vec(16, 1.0);
        let b = SeededRng::new(7).normal_vec(16, 1.0);
        let c = SeededRng::new(8).normal_vec(16, 1.0);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn dropout_keeps_expectation() {
        let x = Tensor::ones(20_000, DType::F32, &Device::Cpu).unwrap();
        let y = dropout(&x, 0.25, &mut SeededRng::new(1)).unwrap();
        let mean = y.mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        let zeros = y.to_vec1::<f32>().unwrap().iter().filter(|v| **v == 0.0).count();
        assert!((4_500..5_500).contains(&zeros), "{zeros}");
    }
}
