//! Softmax over the last dim, fused, with its own backward.
//!
//! `candle_nn::ops::softmax` is differentiable but runs five ops (max, sub, exp, sum, div)
//! forward and their backward chain; candle's fused `softmax_last_dim` has no backward.
//! Forward here, per row: `m = max x`, `e = exp(x − m)`, `y = e / Σe` in one buffer.
//! Backward: `dx = y ⊙ (g − Σ(g ⊙ y))`, one op reading `y` and `g`.

use super::kernels::{max_of, narrow_all, par_rows, sum_by, widen_all, Real};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

/// Softmax over the last dim, differentiable.
///
/// Falls back to `candle_nn::ops::softmax` on devices other than the CPU and for dtypes other
/// than f32/f64.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.elem_count() > 0 && x.rank() >= 1) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

/// `v ← exp(v − max v) / Σ exp(v − max v)` for one row.
#[inline(always)]
pub(crate) fn softmax_row_in_place<T: Real>(v: &mut [T]) {
    let m = max_of(v);
    for x in v.iter_mut() {
        *x -= m;
    }
    T::exp_in_place(v);
    let inv = T::one() / sum_by(v.len(), |i| v[i]);
    for x in v.iter_mut() {
        *x *= inv;
    }
}

fn forward<T: Real>(x: &[T], d: usize) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, d, |row0, ys| {
        for (r, yr) in ys.chunks_exact_mut(d).enumerate() {
            yr.copy_from_slice(&x[(row0 + r) * d..][..d]);
            softmax_row_in_place(yr);
        }
    });
    y
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else { bail!("softmax: input must be contiguous") };
        let d = *layout.dims().last().expect("rank >= 1");
        let y = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(&x[lo..hi], d)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(&x[lo..hi], d)),
            _ => bail!("softmax: only f32 and f64 are fused"),
        };
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd { scale: 1.0 })?))
    }
}

/// Attention probabilities `softmax(c·x + bias)` over the last dim in one pass, for scores
/// `x` `[b, h, q, k]` and an additive key mask `bias` `[b, 1, 1, k]` (no gradient), with the
/// backward `c · y ⊙ (g − Σ(g ⊙ y))`. The unfused chain (divide, broadcast add, softmax) makes
/// two more passes over the `[b, h, q, k]` scores forward and more backward.
///
/// bf16/f16 scores are widened and the softmax computed in f32, rounded once (transformers'
/// eager attention also takes its softmax in f32 for a 16-bit model).
///
/// Falls back to that chain off the CPU, for other dtypes, or when `bias` is not `[b, 1, 1, k]`.
pub fn scaled_masked_softmax(x: &Tensor, scale: f64, bias: &Tensor) -> Result<Tensor> {
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64 | DType::BF16 | DType::F16)
        && x.rank() == 4
        && bias.dtype() == x.dtype()
        && !bias.track_op()
        && bias.dims() == [x.dim(0)?, 1, 1, x.dim(3)?]
        && x.elem_count() > 0;
    if !fused {
        return softmax_last(&(x * scale)?.broadcast_add(bias)?);
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, ScaledMaskedSoftmax { scale })
}

struct ScaledMaskedSoftmax {
    scale: f64,
}

fn masked_forward<T: Real>(x: &[T], bias: &[T], rows_per_batch: usize, d: usize, scale: T) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, d, |row0, ys| {
        for (r, yr) in ys.chunks_exact_mut(d).enumerate() {
            let row = row0 + r;
            let xr = &x[row * d..][..d];
            let br = &bias[(row / rows_per_batch) * d..][..d];
            for i in 0..d {
                yr[i] = xr[i] * scale + br[i];
            }
            softmax_row_in_place(yr);
        }
    });
    y
}

impl CustomOp2 for ScaledMaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            bail!("scaled masked softmax: operands must be contiguous")
        };
        let dims = l1.dims();
        let (d, rows_per_batch) = (dims[3], dims[1] * dims[2]);
        let y = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => {
                CpuStorage::F32(masked_forward(&x[a0..a1], &b[b0..b1], rows_per_batch, d, self.scale as f32))
            }
            (CpuStorage::F64(x), CpuStorage::F64(b)) => {
                CpuStorage::F64(masked_forward(&x[a0..a1], &b[b0..b1], rows_per_batch, d, self.scale))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(b)) => CpuStorage::BF16(narrow_all(&masked_forward(
                &widen_all(&x[a0..a1]),
                &widen_all(&b[b0..b1]),
                rows_per_batch,
                d,
                self.scale as f32,
            ))),
            (CpuStorage::F16(x), CpuStorage::F16(b)) => CpuStorage::F16(narrow_all(&masked_forward(
                &widen_all(&x[a0..a1]),
                &widen_all(&b[b0..b1]),
                rows_per_batch,
                d,
                self.scale as f32,
            ))),
            _ => bail!("scaled masked softmax: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _bias: &Tensor, y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = y.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwd { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

/// `(y, g) -> c · y ⊙ (g − Σ(g ⊙ y))` for the softmaxes here; a forward-only op used inside
/// their backward.
struct SoftmaxBwd {
    scale: f64,
}

fn backward<T: Real>(y: &[T], g: &[T], d: usize, scale: T) -> Vec<T> {
    let mut dx = vec![T::zero(); y.len()];
    par_rows(&mut dx, d, |row0, dxs| {
        for (r, dxr) in dxs.chunks_exact_mut(d).enumerate() {
            let off = (row0 + r) * d;
            let (yr, gr) = (&y[off..][..d], &g[off..][..d]);
            let dot = sum_by(d, |i| gr[i] * yr[i]);
            for i in 0..d {
                dxr[i] = scale * yr[i] * (gr[i] - dot);
            }
        }
    });
    dx
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "softmax-last-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            bail!("softmax backward: operands must be contiguous")
        };
        if l1.shape() != l2.shape() {
            bail!("softmax backward: shape mismatch {:?} vs {:?}", l1.shape(), l2.shape())
        }
        let d = *l1.dims().last().expect("rank >= 1");
        let dx = match (s1, s2) {
            (CpuStorage::F32(y), CpuStorage::F32(g)) => CpuStorage::F32(backward(&y[a0..a1], &g[b0..b1], d, self.scale as f32)),
            (CpuStorage::F64(y), CpuStorage::F64(g)) => CpuStorage::F64(backward(&y[a0..a1], &g[b0..b1], d, self.scale)),
            (CpuStorage::BF16(y), CpuStorage::BF16(g)) => {
                CpuStorage::BF16(narrow_all(&backward(&widen_all(&y[a0..a1]), &widen_all(&g[b0..b1]), d, self.scale as f32)))
            }
            (CpuStorage::F16(y), CpuStorage::F16(g)) => {
                CpuStorage::F16(narrow_all(&backward(&widen_all(&y[a0..a1]), &widen_all(&g[b0..b1]), d, self.scale as f32)))
            }
            _ => bail!("softmax backward: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((dx, l1.shape().clone()))
    }
}
