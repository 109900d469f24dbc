//! Rotary position embedding in the half-rotation convention, fused, with its own backward.
//!
//! As plain ops, `x·cos + rotate_half(x)·sin` keeps four temporaries the size of the queries
//! (the negated half, the concatenation, both products) alive in the graph per call, two
//! calls per layer. This op keeps only its output.
//!
//! Forward, for a head row `x` of width `2h` at position `p`: `y_i = x_i·c_i − x_{i+h}·s_i`
//! for `i < h`, and `y_i = x_i·c_i + x_{i−h}·s_i` for `i ≥ h` (`c`, `s` row `p` of the
//! tables). Backward (the tables are constants): `dx_j = g_j·c_j + g_{j+h}·s_{j+h}` for
//! `j < h`, and `dx_j = g_j·c_j − g_{j−h}·s_{j−h}` for `j ≥ h`.
//!
//! 16-bit inputs are computed in f32 with torch's roundings for a 16-bit model: each product
//! rounded, then their sum.

use super::kernels::{cpu_slice, narrow_all, par_rows, widen_all, Half, Real};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};

/// Rotate `x` `[batch, heads, seq, head_dim]` by the tables `cos`, `sin` `[seq, head_dim]`
/// (each half repeated), differentiable with respect to `x`.
///
/// Falls back to the plain ops off the CPU, or when the tables take part in a graph.
pub fn rope_half_rotation(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let fused = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64 | DType::BF16 | DType::F16)
        && x.rank() == 4
        && x.elem_count() > 0
        && x.dim(3)? % 2 == 0
        && [cos, sin].iter().all(|t| !t.track_op() && t.dtype() == x.dtype() && t.dims() == [x.dim(2).unwrap_or(0), x.dim(3).unwrap_or(0)]);
    if !fused {
        return rope_unfused(x, cos, sin);
    }
    x.contiguous()?.apply_op1(Rope { cos: cos.contiguous()?, sin: sin.contiguous()? })
}

/// The plain-ops version: the fallback, and the reference the fused op is tested against.
pub fn rope_unfused(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(3)?;
    let (x1, x2) = (x.narrow(3, 0, hd / 2)?, x.narrow(3, hd / 2, hd / 2)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// `round` is the identity in f32/f64 and a 16-bit round trip for a 16-bit model.
fn forward<T: Real>(x: &[T], cos: &[T], sin: &[T], seq: usize, hd: usize, round: impl Fn(T) -> T + Sync) -> Vec<T> {
    let h = hd / 2;
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, hd, |row0, ys| {
        for (r, yr) in ys.chunks_exact_mut(hd).enumerate() {
            let row = row0 + r;
            let (xr, p) = (&x[row * hd..][..hd], row % seq);
            let (c, s) = (&cos[p * hd..][..hd], &sin[p * hd..][..hd]);
            for i in 0..h {
                yr[i] = round(round(xr[i] * c[i]) - round(xr[i + h] * s[i]));
                yr[i + h] = round(round(xr[i + h] * c[i + h]) + round(xr[i] * s[i + h]));
            }
        }
    });
    y
}

fn backward<T: Real>(g: &[T], cos: &[T], sin: &[T], seq: usize, hd: usize) -> Vec<T> {
    let h = hd / 2;
    let mut dx = vec![T::zero(); g.len()];
    par_rows(&mut dx, hd, |row0, dxs| {
        for (r, dr) in dxs.chunks_exact_mut(hd).enumerate() {
            let row = row0 + r;
            let (gr, p) = (&g[row * hd..][..hd], row % seq);
            let (c, s) = (&cos[p * hd..][..hd], &sin[p * hd..][..hd]);
            for j in 0..h {
                dr[j] = gr[j] * c[j] + gr[j + h] * s[j + h];
                dr[j + h] = gr[j + h] * c[j + h] - gr[j] * s[j];
            }
        }
    });
    dx
}

/// A table as a slice.
fn slice<'a, T: candle_core::WithDType>(s: &'a Storage, l: &Layout) -> Result<&'a [T]> {
    cpu_slice(s, l, "rope: a table")
}

fn forward_half<H: Half>(x: &[H], cos: &[H], sin: &[H], seq: usize, hd: usize) -> Vec<H> {
    narrow_all(&forward(&widen_all(x), &widen_all(cos), &widen_all(sin), seq, hd, |v| H::narrow(v).widen()))
}

fn backward_half<H: Half>(g: &[H], cos: &[H], sin: &[H], seq: usize, hd: usize) -> Vec<H> {
    narrow_all(&backward(&widen_all(g), &widen_all(cos), &widen_all(sin), seq, hd))
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-half-rotation"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else { bail!("rope: input must be contiguous") };
        let (seq, hd) = (layout.dims()[2], layout.dims()[3]);
        let ((cs, cl), (ss, sl)) = (self.cos.storage_and_layout(), self.sin.storage_and_layout());
        let y = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(&x[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd, |v| v)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(&x[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd, |v| v)),
            CpuStorage::BF16(x) => CpuStorage::BF16(forward_half(&x[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd)),
            CpuStorage::F16(x) => CpuStorage::F16(forward_half(&x[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd)),
            _ => bail!("rope: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (seq, hd) = (x.dim(2)?, x.dim(3)?);
        let (gs, gl) = grad.storage_and_layout();
        let Some((lo, hi)) = gl.contiguous_offsets() else { bail!("rope: gradient must be contiguous") };
        let Storage::Cpu(g) = &*gs else { bail!("rope: gradient is not on the cpu") };
        let ((cs, cl), (ss, sl)) = (self.cos.storage_and_layout(), self.sin.storage_and_layout());
        let dx = match g {
            CpuStorage::F32(g) => Tensor::from_vec(backward(&g[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd), x.shape(), x.device())?,
            CpuStorage::F64(g) => Tensor::from_vec(backward(&g[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd), x.shape(), x.device())?,
            CpuStorage::BF16(g) => Tensor::from_vec(backward_half(&g[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd), x.shape(), x.device())?,
            CpuStorage::F16(g) => Tensor::from_vec(backward_half(&g[lo..hi], slice(&cs, cl)?, slice(&ss, sl)?, seq, hd), x.shape(), x.device())?,
            _ => bail!("rope: only f32, f64, bf16 and f16 are fused"),
        };
        Ok(Some(dx))
    }
}
