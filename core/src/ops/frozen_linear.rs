//! `y = x Wᵀ + b` for a frozen `W`, `b`: the backward computes the input gradient only.
//!
//! candle's matmul backward always computes both operand gradients, so a frozen
//! `x.matmul(Wᵀ)` spends a second full matmul (and a `[out, in]` buffer) per backward on a
//! weight gradient nobody reads. Here the whole affine map is one `CustomOp1` on `x`: its
//! forward is a single gemm into a buffer pre-filled with the bias (no separate broadcast
//! add), and its backward returns `grad_y · W` and nothing else. `W` and `b` live inside the
//! op, not in the graph, so they are never visited by backprop and get no gradient entry.
//!
//! (Computing the value on detached inputs and attaching the gradient through a second op
//! that hands the value back would cost an extra copy of the output, since a `CustomOp1`
//! must return owned storage; computing the value inside the op avoids it.)

use super::bf16_gemm;
use super::kernels::{narrow_all, par_rows, widen_all, Half, Real};
use super::pool_gemm::{gemm_on_pool, gemm_on_pool_widening, Operand};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, WithDType};

/// `x Wᵀ + b` for `x` `[..., in]` and a frozen `W` `[out, in]`, `b` `[out]`, differentiable
/// with respect to `x` only.
///
/// Falls back to the general [`linear`] (gradients for every operand) when `W` or `b` take
/// part in a graph (a `Var`, or computed from one), so trainable weights are never silently
/// frozen; and when the fused path does not apply (a device other than the CPU, a dtype
/// other than f32/f64/bf16/f16), so the answer is always right.
///
/// A bf16/f16 base keeps its weights in 16 bits: the product widens them block by block
/// (`gemm_on_pool_widening`) and accumulates in f32, then rounds the result to the input's
/// dtype once, as candle's bf16 matmul and torch's bf16 linear do, without candle's whole
/// f32 copy of the weight per call or its weight gradient.
pub fn frozen_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if !fused_applies(x, weight, bias) {
        return linear(x, weight, bias);
    }
    let bias = match bias {
        Some(b) => Some(b.contiguous()?),
        None => None,
    };
    x.contiguous()?.apply_op1(FrozenLinear { weight: weight.clone(), bias })
}

fn fused_applies(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    let dt = x.dtype();
    let frozen = |t: &Tensor| !t.track_op() && t.device().is_cpu() && t.dtype() == dt;
    x.device().is_cpu()
        && matches!(dt, DType::F32 | DType::F64 | DType::BF16 | DType::F16)
        && x.rank() >= 1
        && x.elem_count() > 0
        && frozen(w)
        && w.rank() == 2
        && x.dims().last() == Some(&w.dims()[1])
        && b.is_none_or(|b| frozen(b) && b.dims() == [w.dims()[0]])
}

pub(crate) struct FrozenLinear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl FrozenLinear {
    /// `f(W, row stride, column stride)` on the weight's elements from its first one.
    fn with_weight<T: WithDType, R>(&self, f: impl FnOnce(&[T], isize, isize) -> R) -> Result<R> {
        let (ws, wl) = self.weight.storage_and_layout();
        let Storage::Cpu(w) = &*ws else { bail!("frozen_linear: weight is not on the cpu") };
        let w = &w.as_slice::<T>()?[wl.start_offset()..];
        Ok(f(w, wl.stride()[0] as isize, wl.stride()[1] as isize))
    }

    pub(crate) fn affine<T: Real>(&self, x: &[T], x_dims: &[usize]) -> Result<Vec<T>> {
        let (n, k) = self.weight.dims2()?;
        let m = x.len() / k;
        let mut dst = Vec::with_capacity(m * n);
        let read_dst = match &self.bias {
            Some(b) => {
                let (bs, bl) = b.storage_and_layout();
                let Storage::Cpu(bc) = &*bs else { bail!("frozen_linear: bias is not on the cpu") };
                let b = &bc.as_slice::<T>()?[bl.start_offset()..bl.start_offset() + n];
                for _ in 0..m {
                    dst.extend_from_slice(b);
                }
                true
            }
            None => {
                dst.resize(m * n, T::zero());
                false
            }
        };
        debug_assert_eq!(x_dims.iter().product::<usize>(), m * k);
        // W is [n, k] with arbitrary strides; Wᵀ[i, o] = W[o, i] gives the rhs strides.
        // SAFETY: x is m×k row-major (contiguous), W spans n×k under its own layout, dst is
        // m×n row-major and ours alone.
        self.with_weight(|w: &[T], w_rs, w_cs| unsafe {
            gemm_on_pool(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                read_dst,
                Operand { ptr: x.as_ptr(), row_stride: k as isize, col_stride: 1 },
                Operand { ptr: w.as_ptr(), row_stride: w_cs, col_stride: w_rs },
            )
        })?;
        Ok(dst)
    }
}

impl FrozenLinear {
    /// `x Wᵀ + b` for 16-bit `x`, `W`, `b`: f32 accumulation, one rounding at the end.
    pub(crate) fn affine_half<H: Half>(&self, x: &[H]) -> Result<Vec<H>> {
        let (n, k) = self.weight.dims2()?;
        let m = x.len() / k;
        let bias = match &self.bias {
            Some(b) => Some(widen_all(&b.flatten_all()?.to_vec1::<H>()?)),
            None => None,
        };
        // Wᵀ[i, o] = W[o, i].
        Ok(narrow_all(&self.half_product(m, n, k, x, bias.as_deref(), true)?))
    }

    /// `grad_y · W` for 16-bit `grad_y` `[rows, n]`: f32 accumulation, one rounding.
    pub(crate) fn input_grad_half<H: Half>(&self, grad: &[H]) -> Result<Vec<H>> {
        let (n, k) = self.weight.dims2()?;
        Ok(narrow_all(&self.half_product(grad.len() / n, k, n, grad, None, false)?))
    }

    /// `lhs · R (+ bias on every row)` in f32 for a 16-bit `lhs` `[m, inner]` (row-major) and
    /// `R` the weight, transposed (`Wᵀ`, `[k, n]`) or as stored (`W`, `[n, k]`). bf16 on a
    /// CPU with AVX512-BF16 multiplies bf16 pairs natively (`bf16_gemm`); otherwise both
    /// operands widen to f32 (exactly) and an f32 gemm accumulates.
    #[allow(clippy::too_many_arguments)]
    fn half_product<H: Half>(&self, m: usize, n: usize, inner: usize, lhs: &[H], bias: Option<&[f32]>, transposed: bool) -> Result<Vec<f32>> {
        debug_assert_eq!(lhs.len(), m * inner);
        let mut dst: Vec<f32> = Vec::with_capacity(m * n);
        let accumulate = match bias {
            Some(b) => {
                dst.resize(m * n, 0.0);
                par_rows(&mut dst, n, |_, rows| rows.chunks_exact_mut(n).for_each(|r| r.copy_from_slice(b)));
                true
            }
            // An empty product writes nothing: zeros. Otherwise the gemm writes every element
            // and the buffer needs no zeroing first.
            None if inner == 0 => {
                dst.resize(m * n, 0.0);
                true
            }
            None => false,
        };
        let out = dst.spare_capacity_mut().as_mut_ptr() as *mut f32;
        let out = if accumulate { dst.as_mut_ptr() } else { out };
        self.with_weight(|w: &[H], rs, cs| {
            let (rrs, rcs) = if transposed { (cs, rs) } else { (rs, cs) };
            #[cfg(target_arch = "x86_64")]
            if let (Some(lhs), Some(w)) = (H::as_bf16(lhs), H::as_bf16(w)) {
                if bf16_gemm::available() {
                    // SAFETY: available() holds; lhs is m×inner row-major, W spans its
                    // layout (read as inner×n under rrs/rcs), out has room for m×n and is ours.
                    unsafe {
                        bf16_gemm::gemm_bf16(
                            m,
                            n,
                            inner,
                            out,
                            accumulate,
                            Operand { ptr: lhs.as_ptr(), row_stride: inner as isize, col_stride: 1 },
                            Operand { ptr: w.as_ptr(), row_stride: rrs, col_stride: rcs },
                        )
                    };
                    return;
                }
            }
            let lhs32 = widen_all(lhs);
            // SAFETY: as above, for the widened lhs.
            unsafe {
                gemm_on_pool_widening(
                    m,
                    n,
                    inner,
                    out,
                    accumulate,
                    Operand { ptr: lhs32.as_ptr(), row_stride: inner as isize, col_stride: 1 },
                    Operand { ptr: w.as_ptr(), row_stride: rrs, col_stride: rcs },
                )
            }
        })?;
        // SAFETY: the product wrote all m×n elements (or they were filled above).
        unsafe { dst.set_len(m * n) };
        Ok(dst)
    }
}

impl FrozenLinear {
    /// `grad_y · W` for `grad_y` `[rows, n]` row-major: `[rows, k]` row-major.
    pub(crate) fn input_grad<T: Real>(&self, grad: &[T]) -> Result<Vec<T>> {
        let (n, k) = self.weight.dims2()?;
        let rows = grad.len() / n;
        let mut dst = vec![T::zero(); rows * k];
        // SAFETY: grad is rows×n row-major, W spans n×k under its layout, dst is rows×k and ours.
        self.with_weight(|w: &[T], rs, cs| unsafe {
            gemm_on_pool(
                rows,
                k,
                n,
                dst.as_mut_ptr(),
                false,
                Operand { ptr: grad.as_ptr(), row_stride: n as isize, col_stride: 1 },
                Operand { ptr: w.as_ptr(), row_stride: rs, col_stride: cs },
            )
        })?;
        Ok(dst)
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else {
            bail!("frozen_linear: input must be contiguous")
        };
        let dims = layout.dims();
        let dst = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(self.affine(&x[lo..hi], dims)?),
            CpuStorage::F64(x) => CpuStorage::F64(self.affine(&x[lo..hi], dims)?),
            CpuStorage::BF16(x) => CpuStorage::BF16(self.affine_half(&x[lo..hi])?),
            CpuStorage::F16(x) => CpuStorage::F16(self.affine_half(&x[lo..hi])?),
            _ => bail!("frozen_linear: only f32, f64, bf16 and f16 are fused"),
        };
        let mut out = dims.to_vec();
        *out.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        Ok((dst, Shape::from(out)))
    }

    /// `grad_x = grad_y · W`; `W` and `b` get nothing.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (lo, hi) = gl.contiguous_offsets().expect("made contiguous above");
        let gx = match &*gs {
            Storage::Cpu(CpuStorage::F32(g)) => Tensor::from_vec(self.input_grad(&g[lo..hi])?, arg.shape(), arg.device())?,
            Storage::Cpu(CpuStorage::F64(g)) => Tensor::from_vec(self.input_grad(&g[lo..hi])?, arg.shape(), arg.device())?,
            Storage::Cpu(CpuStorage::BF16(g)) => Tensor::from_vec(self.input_grad_half(&g[lo..hi])?, arg.shape(), arg.device())?,
            Storage::Cpu(CpuStorage::F16(g)) => Tensor::from_vec(self.input_grad_half(&g[lo..hi])?, arg.shape(), arg.device())?,
            _ => bail!("frozen_linear: the gradient must be on the cpu, in the input's dtype"),
        };
        Ok(Some(gx))
    }
}

/// `x Wᵀ + b` for `x` of any rank `[..., in]` and `W` `[out, in]`, differentiable with respect
/// to all three (the op for trainable weights; frozen ones use [`frozen_linear`]).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_dim = *dims.last().expect("linear input has at least one dim");
    let rows = x.elem_count() / in_dim.max(1);
    let y = x.reshape((rows, in_dim))?.matmul(&weight.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = weight.dim(0)?;
    y.reshape(out_dims)
}
