//! LayerNorm over the last dim with a frozen scale and shift, fused, with its own backward.
//!
//! `candle_nn::ops::layer_norm_slow` is differentiable but runs ~10 separate ops (each a
//! pass over the tensor and a temporary, and as many again in the backward); candle's fused
//! `layer_norm` has no backward at all. This op makes one pass per row forward and one per
//! row backward, and gives the input gradient only: γ and β are frozen, held in the op, and
//! never reach the graph.
//!
//! Forward, per row of `n`: `μ = Σx/n`, `σ² = Σ(x−μ)²/n` (two-pass, as the slow path),
//! `r = 1/√(σ²+ε)`, `x̂ = (x−μ)·r`, `y = x̂·γ + β`.
//! Backward, with `h = dy·γ`: `dx = r·(h − mean(h) − x̂·mean(h·x̂))` (exact, ε included).
//! The backward recomputes `μ` and `r` from `x` (two cheap passes over a row in cache)
//! rather than carrying per-row state between the passes.

use super::kernels::{cpu_slice, narrow_all, par_rows, sum_by, widen_all, Half, Real};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, WithDType};

/// `LayerNorm(x)` over the last dim with frozen `gamma`, `beta` (`[d]`), differentiable with
/// respect to `x` only.
///
/// Falls back to `candle_nn::ops::layer_norm_slow` (which also differentiates `gamma` and
/// `beta`) when either takes part in a graph, on devices other than the CPU and for dtypes
/// other than f32/f64.
pub fn frozen_layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_applies(x, gamma, beta) {
        return candle_nn::ops::layer_norm_slow(x, gamma, beta, eps as f32);
    }
    let op = LayerNorm { gamma: gamma.contiguous()?, beta: beta.contiguous()?, eps };
    x.contiguous()?.apply_op1(op)
}

fn fused_applies(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> bool {
    let dt = x.dtype();
    let d = x.dims().last().copied().unwrap_or(0);
    let frozen = |t: &Tensor| !t.track_op() && t.device().is_cpu() && t.dtype() == dt && t.dims() == [d];
    x.device().is_cpu()
        && matches!(dt, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
        && x.elem_count() > 0
        && frozen(gamma)
        && frozen(beta)
}

/// A LayerNorm parameter (γ or β) as a slice.
fn vector<'a, T: WithDType>(s: &'a Storage, l: &Layout) -> Result<&'a [T]> {
    cpu_slice(s, l, "layer_norm: a parameter")
}

/// `(μ, 1/√(σ²+ε))` of one row.
#[inline(always)]
fn stats<T: Real>(x: &[T], eps: T) -> (T, T) {
    let n = T::from_f64(x.len() as f64);
    let mean = sum_by(x.len(), |i| x[i]) / n;
    let var = sum_by(x.len(), |i| {
        let c = x[i] - mean;
        c * c
    }) / n;
    (mean, T::one() / (var + eps).sqrt())
}

struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn fwd<T: Real>(&self, x: &[T], d: usize) -> Result<Vec<T>> {
        let (gs, gl) = self.gamma.storage_and_layout();
        let (bs, bl) = self.beta.storage_and_layout();
        Ok(layer_norm_rows(x, vector::<T>(&gs, gl)?, vector::<T>(&bs, bl)?, d, T::from_f64(self.eps)))
    }

    fn fwd_half<H: Half>(&self, x: &[H], d: usize) -> Result<Vec<H>> {
        let (gs, gl) = self.gamma.storage_and_layout();
        let (bs, bl) = self.beta.storage_and_layout();
        let (g, b) = (widen_all(vector::<H>(&gs, gl)?), widen_all(vector::<H>(&bs, bl)?));
        Ok(narrow_all(&layer_norm_rows(&widen_all(x), &g, &b, d, self.eps as f32)))
    }
}

pub(crate) fn layer_norm_rows<T: Real>(x: &[T], g: &[T], b: &[T], d: usize, eps: T) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, d, |row0, ys| {
        for (r, yr) in ys.chunks_exact_mut(d).enumerate() {
            let xr = &x[(row0 + r) * d..][..d];
            let (mean, rstd) = stats(xr, eps);
            for i in 0..d {
                yr[i] = (xr[i] - mean) * rstd * g[i] + b[i];
            }
        }
    });
    y
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "frozen-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else { bail!("layer_norm: input must be contiguous") };
        let d = *layout.dims().last().expect("rank >= 1");
        let y = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(self.fwd(&x[lo..hi], d)?),
            CpuStorage::F64(x) => CpuStorage::F64(self.fwd(&x[lo..hi], d)?),
            CpuStorage::BF16(x) => CpuStorage::BF16(self.fwd_half(&x[lo..hi], d)?),
            CpuStorage::F16(x) => CpuStorage::F16(self.fwd_half(&x[lo..hi], d)?),
            _ => bail!("layer_norm: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let bwd = LayerNormBwd { gamma: self.gamma.clone(), eps: self.eps };
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &bwd)?))
    }
}

/// `(x, dy) -> dx` for [`LayerNorm`]; a forward-only op used inside its backward.
struct LayerNormBwd {
    gamma: Tensor,
    eps: f64,
}

impl LayerNormBwd {
    fn run<T: Real>(&self, x: &[T], dy: &[T], d: usize) -> Result<Vec<T>> {
        let (gs, gl) = self.gamma.storage_and_layout();
        Ok(layer_norm_grad_rows(x, dy, vector::<T>(&gs, gl)?, d, T::from_f64(self.eps)))
    }

    fn run_half<H: Half>(&self, x: &[H], dy: &[H], d: usize) -> Result<Vec<H>> {
        let (gs, gl) = self.gamma.storage_and_layout();
        let g = widen_all(vector::<H>(&gs, gl)?);
        Ok(narrow_all(&layer_norm_grad_rows(&widen_all(x), &widen_all(dy), &g, d, self.eps as f32)))
    }
}

pub(crate) fn layer_norm_grad_rows<T: Real>(x: &[T], dy: &[T], g: &[T], d: usize, eps: T) -> Vec<T> {
    let n = T::from_f64(d as f64);
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, d, |row0, dxs| {
        for (r, dxr) in dxs.chunks_exact_mut(d).enumerate() {
            let off = (row0 + r) * d;
            let (xr, dyr) = (&x[off..][..d], &dy[off..][..d]);
            let (mean, rstd) = stats(xr, eps);
            let mean_h = sum_by(d, |i| dyr[i] * g[i]) / n;
            let mean_hx = sum_by(d, |i| dyr[i] * g[i] * (xr[i] - mean)) * rstd / n;
            for i in 0..d {
                let xhat = (xr[i] - mean) * rstd;
                dxr[i] = rstd * (dyr[i] * g[i] - mean_h - xhat * mean_hx);
            }
        }
    });
    dx
}

impl CustomOp2 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "frozen-layer-norm-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            bail!("layer_norm backward: operands must be contiguous")
        };
        if l1.shape() != l2.shape() {
            bail!("layer_norm backward: shape mismatch {:?} vs {:?}", l1.shape(), l2.shape())
        }
        let d = *l1.dims().last().expect("rank >= 1");
        let dx = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => CpuStorage::F32(self.run(&x[a0..a1], &dy[b0..b1], d)?),
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => CpuStorage::F64(self.run(&x[a0..a1], &dy[b0..b1], d)?),
            (CpuStorage::BF16(x), CpuStorage::BF16(dy)) => CpuStorage::BF16(self.run_half(&x[a0..a1], &dy[b0..b1], d)?),
            (CpuStorage::F16(x), CpuStorage::F16(dy)) => CpuStorage::F16(self.run_half(&x[a0..a1], &dy[b0..b1], d)?),
            _ => bail!("layer_norm backward: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((dx, l1.shape().clone()))
    }
}
