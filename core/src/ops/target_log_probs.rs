//! `log softmax(x)[t]` of each row's target, fused, with its own backward: the loss of a
//! classifier or an LM head without the `[rows, vocab]` temporaries.
//!
//! `candle_nn::ops::log_softmax` then `gather` keeps five `[rows, vocab]` tensors alive in the
//! graph (max-shifted, exp, the log-probabilities, …): with a 128k vocabulary and 256 scored
//! tokens that is over half a gigabyte per step. This op keeps only its input and the `[rows]`
//! result. Forward, per row: `lse = m + ln Σ exp(x − m)`, `y = x[t] − lse`. Backward:
//! `dx = g·(onehot(t) − softmax(x))`, the softmax recomputed from `x`.
//!
//! bf16/f16 logits are widened and scored in f32 (a 16-bit normaliser over a vocabulary
//! would keep few bits): the result is f32, and the gradient is rounded to the logits' dtype.

use super::kernels::{max_of, narrow_all, par_rows, sum_by, widen_all, Real};
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};

/// `[rows]` log-probabilities of `targets[r]` under `softmax(logits[r])`, for `logits`
/// `[rows, classes]`; differentiable with respect to `logits`. 16-bit logits give f32.
///
/// Falls back to `log_softmax` + `gather` (in f32 for 16-bit logits) off the CPU.
pub fn target_log_probs(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if targets.len() != rows {
        bail!("target_log_probs: {} targets for {rows} rows", targets.len())
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= classes) {
        bail!("target_log_probs: target {t} is outside the {classes} classes")
    }
    let fused = logits.device().is_cpu() && matches!(logits.dtype(), DType::F32 | DType::F64 | DType::BF16 | DType::F16);
    if !fused {
        return unfused(logits, targets);
    }
    logits.contiguous()?.apply_op1(TargetLogProbs { targets: targets.to_vec() })
}

/// The plain-ops version: the fallback, and the reference the fused op is tested against.
pub fn unfused(logits: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let logits = if matches!(logits.dtype(), DType::BF16 | DType::F16) { logits.to_dtype(DType::F32)? } else { logits.clone() };
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let t = Tensor::new(targets, logits.device())?.unsqueeze(1)?;
    log_probs.gather(&t, 1)?.squeeze(1)
}

struct TargetLogProbs {
    targets: Vec<u32>,
}

/// `(max, Σ exp(x − max))` of one row.
#[inline(always)]
fn row_stats<T: Real>(x: &[T]) -> (T, T) {
    let m = max_of(x);
    let mut e: Vec<T> = x.iter().map(|&v| v - m).collect();
    T::exp_in_place(&mut e);
    (m, sum_by(e.len(), |i| e[i]))
}

fn forward<T: Real>(x: &[T], classes: usize, targets: &[u32]) -> Vec<T> {
    let mut y = vec![T::zero(); targets.len()];
    par_rows(&mut y, 1, |row0, ys| {
        for (r, yr) in ys.iter_mut().enumerate() {
            let row = row0 + r;
            let xr = &x[row * classes..][..classes];
            let (m, s) = row_stats(xr);
            *yr = xr[targets[row] as usize] - m - T::from_f64(s.to_f64().ln());
        }
    });
    y
}

fn backward<T: Real>(x: &[T], g: &[T], classes: usize, targets: &[u32]) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, classes, |row0, dxs| {
        for (r, dxr) in dxs.chunks_exact_mut(classes).enumerate() {
            let row = row0 + r;
            let xr = &x[row * classes..][..classes];
            let m = max_of(xr);
            for (d, &v) in dxr.iter_mut().zip(xr) {
                *d = v - m;
            }
            T::exp_in_place(dxr);
            let scale = g[row] / sum_by(classes, |i| dxr[i]);
            for d in dxr.iter_mut() {
                *d = T::zero() - *d * scale;
            }
            dxr[targets[row] as usize] += g[row];
        }
    });
    dx
}

impl CustomOp1 for TargetLogProbs {
    fn name(&self) -> &'static str {
        "target-log-probs"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = layout.contiguous_offsets() else { bail!("target_log_probs: input must be contiguous") };
        let classes = layout.dims()[1];
        let t = &self.targets;
        let y = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(&x[lo..hi], classes, t)),
            CpuStorage::F64(x) => CpuStorage::F64(forward(&x[lo..hi], classes, t)),
            CpuStorage::BF16(x) => CpuStorage::F32(forward(&widen_all(&x[lo..hi]), classes, t)),
            CpuStorage::F16(x) => CpuStorage::F32(forward(&widen_all(&x[lo..hi]), classes, t)),
            _ => bail!("target_log_probs: only f32, f64, bf16 and f16 are fused"),
        };
        Ok((y, Shape::from(t.len())))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let classes = x.dim(1)?;
        let t = &self.targets;
        let (xs, xl) = x.storage_and_layout();
        let Some((lo, hi)) = xl.contiguous_offsets() else { bail!("target_log_probs: input must be contiguous") };
        let candle_core::Storage::Cpu(xs) = &*xs else { bail!("target_log_probs: input is not on the cpu") };
        let dx = match xs {
            CpuStorage::F32(x) => Tensor::from_vec(backward(&x[lo..hi], &grad.to_vec1::<f32>()?, classes, t), (t.len(), classes), grad.device())?,
            CpuStorage::F64(x) => Tensor::from_vec(backward(&x[lo..hi], &grad.to_vec1::<f64>()?, classes, t), (t.len(), classes), grad.device())?,
            CpuStorage::BF16(x) => {
                let dx = backward(&widen_all(&x[lo..hi]), &grad.to_vec1::<f32>()?, classes, t);
                Tensor::from_vec(narrow_all::<half::bf16>(&dx), (t.len(), classes), grad.device())?
            }
            CpuStorage::F16(x) => {
                let dx = backward(&widen_all(&x[lo..hi]), &grad.to_vec1::<f32>()?, classes, t);
                Tensor::from_vec(narrow_all::<half::f16>(&dx), (t.len(), classes), grad.device())?
            }
            _ => bail!("target_log_probs: only f32, f64, bf16 and f16 are fused"),
        };
        Ok(Some(dx))
    }
}
