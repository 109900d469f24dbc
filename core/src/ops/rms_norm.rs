//! RMSNorm over the last dim with a frozen scale, fused, with its own backward.
//!
//! Written as plain tensor ops (square, mean, add, sqrt, divide, scale) it keeps five
//! `[tokens, hidden]` temporaries alive in the autograd graph per norm, two norms per decoder
//! layer, and makes as many passes; candle's fused `rms_norm` has no backward. This op makes
//! one pass per row each way, keeps only its output, and gives the input gradient only (the
//! scale is frozen, held in the op, never in the graph).
//!
//! Forward, per row of `d`: `r = 1/√(Σx²/d + ε)`, `y = (x·r)·w`.
//! Backward, with `g = dy·w`: `dx = r·(g − x·r²·Σ(g·x)/d)` (exact, ε included); `r` is
//! recomputed from `x` (one cheap pass over a row in cache).
//!
//! A bf16/f16 row is widened and normalised in f32, `x·r` is rounded to the input's dtype and
//! then scaled (rounded again), as transformers' `LlamaRMSNorm` computes a 16-bit model: a
//! 16-bit mean of thousands of squares would keep few of its bits.

use super::kernels::{cpu_slice, narrow_all, par_rows, sum_by, widen_all, Half, Real};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, D};

/// `RMSNorm(x)·w` over the last dim with a frozen `w` (`[d]`), differentiable with respect to
/// `x` only.
///
/// Falls back to the same arithmetic as plain differentiable ops (which also differentiate
/// `w`) when `w` takes part in a graph, and on devices other than the CPU.
pub fn frozen_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_applies(x, weight) {
        return rms_norm_unfused(x, weight, eps);
    }
    x.contiguous()?.apply_op1(RmsNorm { weight: weight.contiguous()?, eps })
}

/// The plain-ops version: the reference the fused op is tested against, and the fallback.
pub fn rms_norm_unfused(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    if matches!(dtype, DType::BF16 | DType::F16) {
        let x32 = x.to_dtype(DType::F32)?;
        let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x32.broadcast_div(&(ms + eps)?.sqrt()?)?.to_dtype(dtype)?;
        return normed.broadcast_mul(weight);
    }
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)
}

fn fused_applies(x: &Tensor, w: &Tensor) -> bool {
    let dt = x.dtype();
    let d = x.dims().last().copied().unwrap_or(0);
    x.device().is_cpu()
        && matches!(dt, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
        && x.elem_count() > 0
        && !w.track_op()
        && w.device().is_cpu()
        && w.dtype() == dt
        && w.dims() == [d]
}

/// The scale as a slice.
fn vector<'a, T: candle_core::WithDType>(s: &'a Storage, l: &Layout) -> Result<&'a [T]> {
    cpu_slice(s, l, "rms_norm: the scale")
}

/// `1/√(Σx²/d + ε)` of one row.
#[inline(always)]
fn rstd<T: Real>(x: &[T], eps: T) -> T {
    let ms = sum_by(x.len(), |i| x[i] * x[i]) / T::from_f64(x.len() as f64);
    T::one() / (ms + eps).sqrt()
}

/// Forward rows; `round` is applied to `x·r` before the scale (identity in f32/f64, a
/// round trip through the 16-bit type for a 16-bit base).
fn forward<T: Real>(x: &[T], w: &[T], d: usize, eps: T, round: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, d, |row0, ys| {
        for (r, yr) in ys.chunks_exact_mut(d).enumerate() {
            let xr = &x[(row0 + r) * d..][..d];
            let s = rstd(xr, eps);
            for i in 0..d {
                yr[i] = round(xr[i] * s) * w[i];
            }
        }
    });
    y
}

fn backward<T: Real>(x: &[T], dy: &[T], w: &[T], d: usize, eps: T) -> Vec<T> {
    let n = T::from_f64(d as f64);
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, d, |row0, dxs| {
        for (r, dxr) in dxs.chunks_exact_mut(d).enumerate() {
            let off = (row0 + r) * d;
            let (xr, dyr) = (&x[off..][..d], &dy[off..][..d]);
            let s = rstd(xr, eps);
            let mean_gx = sum_by(d, |i| dyr[i] * w[i] * xr[i]) / n;
            for i in 0..d {
                dxr[i] = s * (dyr[i] * w[i] - xr[i] * s * s * mean_gx);
            }
        }
    });
    dx
}

fn forward_half<H: Half>(x: &[H], w: &[H], d: usize, eps: f64) -> Vec<H> {
    let y = forward(&widen_all(x), &widen_all(w), d, eps as f32, |v| H::narrow(v).widen());
    narrow_all(&y)
}

fn backward_half<H: Half>(x: &[H], dy: &[H], w: &[H], d: usize, eps: f64) -> Vec<H> {
    narrow_all(&backward(&widen_all(x), &widen_all(dy), &widen_all(w), d, eps as f32))
}

struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "frozen-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else { bail!("rms_norm: input must be contiguous") };
        let d = *layout.dims().last().expect("rank >= 1");
        let (ws, wl) = self.weight.storage_and_layout();
        let eps = self.eps;
        let y = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(&x[lo..hi], vector(&ws, wl)?, d, eps as f32, |v| v)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(&x[lo..hi], vector(&ws, wl)?, d, eps, |v| v)),
            CpuStorage::BF16(x) => CpuStorage::BF16(forward_half(&x[lo..hi], vector(&ws, wl)?, d, eps)),
            CpuStorage::F16(x) => CpuStorage::F16(forward_half(&x[lo..hi], vector(&ws, wl)?, d, eps)),
            _ => bail!("rms_norm: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let bwd = RmsNormBwd { weight: self.weight.clone(), eps: self.eps };
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &bwd)?))
    }
}

/// `(x, dy) -> dx` for [`RmsNorm`]; a forward-only op used inside its backward.
struct RmsNormBwd {
    weight: Tensor,
    eps: f64,
}

impl CustomOp2 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "frozen-rms-norm-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            bail!("rms_norm backward: operands must be contiguous")
        };
        if l1.shape() != l2.shape() {
            bail!("rms_norm backward: shape mismatch {:?} vs {:?}", l1.shape(), l2.shape())
        }
        let d = *l1.dims().last().expect("rank >= 1");
        let (ws, wl) = self.weight.storage_and_layout();
        let eps = self.eps;
        let dx = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(dy)) => CpuStorage::F32(backward(&x[a0..a1], &dy[b0..b1], vector(&ws, wl)?, d, eps as f32)),
            (CpuStorage::F64(x), CpuStorage::F64(dy)) => CpuStorage::F64(backward(&x[a0..a1], &dy[b0..b1], vector(&ws, wl)?, d, eps)),
            (CpuStorage::BF16(x), CpuStorage::BF16(dy)) => CpuStorage::BF16(backward_half(&x[a0..a1], &dy[b0..b1], vector(&ws, wl)?, d, eps)),
            (CpuStorage::F16(x), CpuStorage::F16(dy)) => CpuStorage::F16(backward_half(&x[a0..a1], &dy[b0..b1], vector(&ws, wl)?, d, eps)),
            _ => bail!("rms_norm backward: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((dx, l1.shape().clone()))
    }
}
