//! Exact (erf) GELU, fused, with its own backward.
//!
//! candle's `gelu_erf` calls libm's scalar `erf` per element forward, and its backward is a
//! chain of element-wise ops (another erf, an exp, several multiplies, each a full pass and an
//! allocation). Here the forward is one parallel pass with a branch-free f32 `erf` the
//! compiler vectorises, and the backward one more pass: `dx = g ⊙ (Φ(x) + x·φ(x))`.
//! f64 uses libm's `erf` (exact to the last bits), so the f64 gradient checks still test
//! this op's formulas.

use super::kernels::{exp_f32, narrow_all, par_chunks, widen_all, Real};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// `0.5·x·(1 + erf(x/√2))`, differentiable. Falls back to candle's `gelu_erf` off the CPU
/// and for dtypes other than f32/f64.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64 | DType::BF16 | DType::F16) && x.elem_count() > 0) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(Gelu)
}

/// erf for f32, branch-free: Abramowitz & Stegun 7.1.26, `1 − (a₁t + … + a₅t⁵)·e^(−x²)` with
/// `t = 1/(1 + p|x|)`, sign restored; absolute error ≤ 1.5e-7 (f32 rounding is ~6e-8).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

/// The scalar maths, per dtype.
trait GeluReal: Real {
    /// Φ(x) = P(N(0,1) ≤ x).
    fn cdf(self) -> Self;
    /// φ(x), the standard normal density.
    fn pdf(self) -> Self;
}

impl GeluReal for f32 {
    #[inline(always)]
    fn cdf(self) -> Self {
        0.5 * (1.0 + erf_f32(self * std::f32::consts::FRAC_1_SQRT_2))
    }
    #[inline(always)]
    fn pdf(self) -> Self {
        // 1/√(2π)
        0.398_942_3 * exp_f32(-0.5 * self * self)
    }
}

impl GeluReal for f64 {
    #[inline(always)]
    fn cdf(self) -> Self {
        0.5 * (1.0 + libm::erf(self * std::f64::consts::FRAC_1_SQRT_2))
    }
    #[inline(always)]
    fn pdf(self) -> Self {
        0.398_942_280_401_432_7 * (-0.5 * self * self).exp()
    }
}

#[inline(always)]
fn gelu_fwd_f32_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * x.cdf();
    }
}

#[inline(always)]
fn gelu_bwd_f32_body(x: &[f32], g: &[f32], dx: &mut [f32]) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
        *d = g * (x.cdf() + x * x.pdf());
    }
}

/// The f32 kernels on the widest SIMD unit the CPU has, chosen at run time (the binary is
/// built for baseline x86-64, where these loops would run 4 wide without FMA).
fn gelu_fwd_f32(x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature.
            return unsafe { gelu_fwd_f32_avx512(x, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features.
            return unsafe { gelu_fwd_f32_avx2(x, y) };
        }
    }
    gelu_fwd_f32_body(x, y)
}

fn gelu_bwd_f32(x: &[f32], g: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature.
            return unsafe { gelu_bwd_f32_avx512(x, g, dx) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features.
            return unsafe { gelu_bwd_f32_avx2(x, g, dx) };
        }
    }
    gelu_bwd_f32_body(x, g, dx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_fwd_f32_avx512(x: &[f32], y: &mut [f32]) {
    gelu_fwd_f32_body(x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_fwd_f32_avx2(x: &[f32], y: &mut [f32]) {
    gelu_fwd_f32_body(x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_bwd_f32_avx512(x: &[f32], g: &[f32], dx: &mut [f32]) {
    gelu_bwd_f32_body(x, g, dx)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_bwd_f32_avx2(x: &[f32], g: &[f32], dx: &mut [f32]) {
    gelu_bwd_f32_body(x, g, dx)
}

/// `gelu(x)` of a whole f32 slice, in parallel.
pub(crate) fn gelu_f32(x: &[f32]) -> Vec<f32> {
    par_chunks(x.len(), |at, y| gelu_fwd_f32(&x[at..at + y.len()], y))
}

/// `g · gelu'(x)` of whole f32 slices, in parallel.
pub(crate) fn gelu_grad_f32(x: &[f32], g: &[f32]) -> Vec<f32> {
    par_chunks(x.len(), |at, dx| {
        let n = dx.len();
        gelu_bwd_f32(&x[at..at + n], &g[at..at + n], dx)
    })
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else { bail!("gelu: input must be contiguous") };
        let y = match storage {
            CpuStorage::F32(x) => {
                let x = &x[lo..hi];
                CpuStorage::F32(par_chunks(x.len(), |at, y| gelu_fwd_f32(&x[at..at + y.len()], y)))
            }
            CpuStorage::F64(x) => {
                let x = &x[lo..hi];
                CpuStorage::F64(par_chunks(x.len(), |at, y: &mut [f64]| {
                    for (i, y) in y.iter_mut().enumerate() {
                        let v = x[at + i];
                        *y = v * v.cdf();
                    }
                }))
            }
            // 16 bits: computed in f32, rounded once (as torch's 16-bit GELU).
            CpuStorage::BF16(x) => CpuStorage::BF16(narrow_all(&gelu_f32(&widen_all(&x[lo..hi])))),
            CpuStorage::F16(x) => CpuStorage::F16(narrow_all(&gelu_f32(&widen_all(&x[lo..hi])))),
            _ => bail!("gelu: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((y, layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwd)?))
    }
}

/// `(x, g) -> g ⊙ (Φ(x) + x·φ(x))`, the input gradient of [`Gelu`].
struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "gelu-erf-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            bail!("gelu backward: operands must be contiguous")
        };
        if l1.shape() != l2.shape() {
            bail!("gelu backward: shape mismatch {:?} vs {:?}", l1.shape(), l2.shape())
        }
        let dx = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                let (x, g) = (&x[a0..a1], &g[b0..b1]);
                CpuStorage::F32(par_chunks(x.len(), |at, dx| {
                    let n = dx.len();
                    gelu_bwd_f32(&x[at..at + n], &g[at..at + n], dx)
                }))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                let (x, g) = (&x[a0..a1], &g[b0..b1]);
                CpuStorage::F64(par_chunks(x.len(), |at, dx: &mut [f64]| {
                    for (i, d) in dx.iter_mut().enumerate() {
                        let v = x[at + i];
                        *d = g[at + i] * (v.cdf() + v * v.pdf());
                    }
                }))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(g)) => {
                CpuStorage::BF16(narrow_all(&gelu_grad_f32(&widen_all(&x[a0..a1]), &widen_all(&g[b0..b1]))))
            }
            (CpuStorage::F16(x), CpuStorage::F16(g)) => {
                CpuStorage::F16(narrow_all(&gelu_grad_f32(&widen_all(&x[a0..a1]), &widen_all(&g[b0..b1]))))
            }
            _ => bail!("gelu backward: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((dx, l1.shape().clone()))
    }
}
