//! Exact (erf) GELU, fused, with its own backward.
//!
//! candle's `gelu_erf` calls libm's scalar `erf` per element forward, and its backward is a
//! chain of element-wise ops (another erf, an exp, several multiplies, each a full pass and an
//! allocation). Here the forward is one parallel pass with a branch-free f32 `erf` the
//! compiler vectorises, and the backward one more pass: `dx = g ⊙ (Φ(x) + x·φ(x))`.
//! f64 uses libm's `erf` (exact to the last bits), so the f64 gradient checks still test
//! this op's formulas.

use super::kernels::{exp_f32, par_rows, Real};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// `0.5·x·(1 + erf(x/√2))`, differentiable. Falls back to candle's `gelu_erf` off the CPU
/// and for dtypes other than f32/f64.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && x.elem_count() > 0) {
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

/// Elements per parallel work item (a "row" for `par_rows`): long enough to vectorise.
const CHUNK: usize = 4096;

fn map<T: GeluReal>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); n];
    let chunk = CHUNK.min(n.max(1));
    let whole = n / chunk * chunk;
    par_rows(&mut out[..whole], chunk, |row0, ys| {
        let base = row0 * chunk;
        for (i, y) in ys.iter_mut().enumerate() {
            *y = f(base + i);
        }
    });
    for (i, y) in out.iter_mut().enumerate().skip(whole) {
        *y = f(i);
    }
    out
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
                CpuStorage::F32(map(x.len(), |i| x[i] * x[i].cdf()))
            }
            CpuStorage::F64(x) => {
                let x = &x[lo..hi];
                CpuStorage::F64(map(x.len(), |i| x[i] * x[i].cdf()))
            }
            _ => bail!("gelu: only f32 and f64 are fused"),
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
                CpuStorage::F32(map(x.len(), |i| g[i] * (x[i].cdf() + x[i] * x[i].pdf())))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                let (x, g) = (&x[a0..a1], &g[b0..b1]);
                CpuStorage::F64(map(x.len(), |i| g[i] * (x[i].cdf() + x[i] * x[i].pdf())))
            }
            _ => bail!("gelu backward: only f32 and f64 are fused"),
        };
        Ok((dx, l1.shape().clone()))
    }
}
