//! An `r × d` matrix with orthonormal rows, kept orthonormal by construction.
//!
//! LoReFT's R must stay orthonormal while it trains. candle has no QR/SVD to re-orthonormalise
//! after each step, so R is parametrised as a product of `r` Householder reflections
//! applied to the first `r` unit vectors: `Rᵀ = H₀H₁…H_{r−1}·E`, `Hᵢ = I − 2vᵢvᵢᵀ/‖vᵢ‖²`.
//! Any vectors give an exact orthonormal frame, every frame is reachable (up to the fixed
//! column signs `s`, stored beside the vectors), and the map is differentiable and costs
//! `O(r²d)` matmul work.

use reft_core::candle_core::{DType, Device, Tensor, Var};
use reft_core::intervention::NamedVar;
use reft_core::rng::SeededRng;
use reft_core::Result;

pub struct Rotation {
    /// `[r, d]` Householder vectors (trainable).
    pub vectors: Var,
    /// `[r]` ±1 column signs (fixed).
    pub signs: Var,
}

impl Rotation {
    /// A random frame: Gaussian Householder vectors.
    ///
    /// The frame does not depend on the vectors' scale, but training speed does: Adam moves
    /// each entry by about `lr` per step, so the scale sets how fast R turns. Entries of
    /// size 1/√d match what PyTorch's Householder parametrisation of pyreft's R starts from
    /// (geqrf vectors of an orthonormal frame); N(0, 1) entries would turn R ~√d times
    /// slower and the intervention would barely rotate during training.
    pub fn random(d: usize, r: usize, rng: &mut SeededRng, dtype: DType, device: &Device) -> Result<Self> {
        let vectors = rng.normal((r, d), 1.0 / (d as f32).sqrt(), dtype, device)?;
        let signs = Tensor::ones(r, dtype, device)?;
        Ok(Rotation {
            vectors: Var::from_tensor(&vectors)?,
            signs: Var::from_tensor(&signs)?,
        })
    }

    /// The parametrisation of a given frame. `frame` is `[d, r]` row-major with orthonormal
    /// columns (pyreft's `rotate_layer` orientation). Householder QR in f64.
    pub fn from_frame(frame: &[f32], d: usize, r: usize, dtype: DType, device: &Device) -> Result<Self> {
        assert_eq!(frame.len(), d * r, "frame must be d×r");
        let mut a: Vec<f64> = frame.iter().map(|&x| x as f64).collect();
        let mut vectors = vec![0f64; r * d];
        let mut signs = vec![0f64; r];
        for k in 0..r {
            let norm = (k..d).map(|i| a[i * r + k].powi(2)).sum::<f64>().sqrt();
            let x0 = a[k * r + k];
            let alpha = if x0 >= 0.0 { -norm } else { norm };
            let v = &mut vectors[k * d..(k + 1) * d];
            for i in k..d {
                v[i] = a[i * r + k];
            }
            v[k] -= alpha;
            let vv: f64 = v.iter().map(|x| x * x).sum();
            for j in 0..r {
                let dot: f64 = (k..d).map(|i| v[i] * a[i * r + j]).sum();
                let f = 2.0 * dot / vv;
                for i in k..d {
                    a[i * r + j] -= f * v[i];
                }
            }
            signs[k] = alpha.signum();
        }
        let to = |v: Vec<f64>, shape: &[usize]| -> Result<Var> {
            let f: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Ok(Var::from_tensor(&Tensor::from_vec(f, shape, device)?.to_dtype(dtype)?)?)
        };
        Ok(Rotation {
            vectors: to(vectors, &[r, d])?,
            signs: to(signs, &[r])?,
        })
    }

    pub fn rank(&self) -> usize {
        self.vectors.dims()[0]
    }

    /// R, `[r, d]` with orthonormal rows.
    pub fn matrix(&self) -> Result<Tensor> {
        let v = self.vectors.as_tensor();
        let (r, d) = v.dims2()?;
        // Y = E: the first r columns of the d×d identity. Contiguous: a column slice has row
        // stride d ≠ r, which cuBLAS (candle's CUDA matmul) rejects as MatMulNonContiguous;
        // the CPU gemm accepts any strides, so only a CUDA run would hit it.
        let mut y = Tensor::eye(d, v.dtype(), v.device())?.narrow(1, 0, r)?.contiguous()?;
        for i in (0..r).rev() {
            let vi = v.narrow(0, i, 1)?.t()?; // [d, 1]
            let vv = vi.sqr()?.sum_all()?;
            let proj = vi.t()?.matmul(&y)?; // [1, r]
            let update = vi.matmul(&proj)?.broadcast_div(&(vv / 2.0)?)?;
            y = (y - update)?;
        }
        Ok(y.t()?.broadcast_mul(&self.signs.as_tensor().unsqueeze(1)?)?)
    }

    pub fn state(&self, prefix: &str) -> Vec<NamedVar> {
        vec![
            NamedVar::trainable(&format!("{prefix}householder"), self.vectors.clone()),
            NamedVar::fixed(&format!("{prefix}signs"), self.signs.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn rows_are_orthonormal() {
        let rot = Rotation::random(64, 8, &mut SeededRng::new(3), DType::F32, &Device::Cpu).unwrap();
        let r = rot.matrix().unwrap();
        let gram = r.matmul(&r.t().unwrap()).unwrap();
        let eye = Tensor::eye(8, DType::F32, &Device::Cpu).unwrap();
        assert!(max_abs(&gram, &eye) < 1e-5);
    }

    #[test]
    fn a_given_frame_is_reproduced() {
        // Orthonormalise a random frame (Gram-Schmidt in f64), then round-trip it.
        let (d, r) = (32, 5);
        let raw = SeededRng::new(9).normal_vec(d * r, 1.0);
        let mut cols: Vec<Vec<f64>> = (0..r).map(|j| (0..d).map(|i| raw[i * r + j] as f64).collect()).collect();
        for j in 0..r {
            for k in 0..j {
                let dot: f64 = (0..d).map(|i| cols[j][i] * cols[k][i]).sum();
                for i in 0..d {
                    cols[j][i] -= dot * cols[k][i];
                }
            }
            let n = cols[j].iter().map(|x| x * x).sum::<f64>().sqrt();
            cols[j].iter_mut().for_each(|x| *x /= n);
        }
        let frame: Vec<f32> = (0..d).flat_map(|i| (0..r).map(|j| cols[j][i] as f32).collect::<Vec<_>>()).collect();
        let rot = Rotation::from_frame(&frame, d, r, DType::F32, &Device::Cpu).unwrap();
        let want = Tensor::from_vec(frame, (d, r), &Device::Cpu).unwrap().t().unwrap();
        assert!(max_abs(&rot.matrix().unwrap(), &want) < 1e-6);
    }
}
