//! The fused ops against candle's differentiable reference paths and central finite
//! differences (f64), alone and composed.

use super::*;
use crate::rng::SeededRng;
use candle_core::{DType, Device, Result, Tensor, Var, D};

fn randn(seed: u64, shape: &[usize], std: f32, dtype: DType) -> Tensor {
    SeededRng::new(seed).normal(shape, std, dtype, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap()
}

/// The slow path takes ε as f32; the tests use ε that f32 holds exactly (`f32eps`), so the
/// two paths normalise by the same number even in f64.
fn slow_ln(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    assert_eq!(eps as f32 as f64, eps, "use an f32-exact epsilon");
    candle_nn::ops::layer_norm_slow(x, g, b, eps as f32)
}

fn f32eps(eps: f64) -> f64 {
    eps as f32 as f64
}

fn slow_softmax(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// `Σ f(x) ⊙ probe`, a scalar whose gradient reaches every output element with its own weight.
fn probed(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor, probe: &Tensor) -> Tensor {
    f(x).unwrap().mul(probe).unwrap().sum_all().unwrap()
}

/// Checks `analytic` (the gradient of `Σ f(x) ⊙ probe` at `x`) against central differences
/// on `picks` coordinates spread over the tensor.
fn check_finite_differences(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor, probe: &Tensor, analytic: &Tensor, picks: usize) {
    let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let g = analytic.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eval = |v: Vec<f64>| {
        let t = Tensor::from_vec(v, x.shape(), x.device()).unwrap();
        probed(f, &t, probe).to_scalar::<f64>().unwrap()
    };
    let h = 1e-5;
    let mut rng = SeededRng::new(99);
    for _ in 0..picks {
        let i = (rng.next_u64() % base.len() as u64) as usize;
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (eval(up) - eval(down)) / (2.0 * h);
        assert!((fd - g[i]).abs() <= 1e-6 * (1.0 + g[i].abs()), "coordinate {i}: analytic {} vs finite difference {fd}", g[i]);
    }
}

// ---------------------------------------------------------------- frozen_linear

#[test]
fn frozen_linear_forward_matches_linear() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        let w = randn(1, &[48, 64], 0.2, dtype);
        let b = randn(2, &[48], 1.0, dtype);
        let x = randn(3, &[3, 5, 64], 1.0, dtype);
        for bias in [Some(&b), None] {
            let fast = frozen_linear(&x, &w, bias).unwrap();
            assert_eq!(fast.dims(), [3, 5, 48]);
            assert!(max_abs_diff(&fast, &linear(&x, &w, bias).unwrap()) <= tol);
        }
        // Non-contiguous input, transposed weight, input at a storage offset.
        let xt = randn(4, &[5, 3, 64], 1.0, dtype).transpose(0, 1).unwrap();
        let wt = randn(5, &[64, 48], 0.2, dtype).t().unwrap();
        assert!(!xt.is_contiguous() && !wt.is_contiguous());
        let fast = frozen_linear(&xt, &wt, Some(&b)).unwrap();
        assert!(max_abs_diff(&fast, &linear(&xt, &wt, Some(&b)).unwrap()) <= tol);
        let xn = randn(6, &[7, 64], 1.0, dtype).narrow(0, 2, 4).unwrap();
        let fast = frozen_linear(&xn, &w, Some(&b)).unwrap();
        assert!(max_abs_diff(&fast, &linear(&xn, &w, Some(&b)).unwrap()) <= tol);
    }
}

#[test]
fn frozen_linear_gradient_matches_slow_path_and_finite_differences() {
    let w = randn(1, &[8, 16], 0.5, DType::F64);
    let b = randn(2, &[8], 1.0, DType::F64);
    let x = Var::from_tensor(&randn(3, &[3, 4, 16], 1.0, DType::F64)).unwrap();
    let probe = randn(4, &[3, 4, 8], 1.0, DType::F64);
    let fast = |x: &Tensor| frozen_linear(x, &w, Some(&b));
    let slow = |x: &Tensor| linear(x, &w, Some(&b));

    let gf = probed(&fast, &x, &probe).backward().unwrap();
    let gs = probed(&slow, &x, &probe).backward().unwrap();
    let dx = gf.get(&x).expect("input gradient");
    assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-12);
    check_finite_differences(&fast, &x, &probe, dx, 24);

    // The frozen weights never enter the graph; the plain matmul computes their gradient.
    assert!(gf.get(&w).is_none() && gf.get(&b).is_none());
}

#[test]
fn frozen_linear_keeps_gradients_of_trainable_weights() {
    let w = Var::from_tensor(&randn(1, &[8, 16], 0.5, DType::F64)).unwrap();
    let b = Var::from_tensor(&randn(2, &[8], 1.0, DType::F64)).unwrap();
    let x = randn(3, &[5, 16], 1.0, DType::F64);
    let probe = randn(4, &[5, 8], 1.0, DType::F64);
    let gf = probed(&|x| frozen_linear(x, &w, Some(&b)), &x, &probe).backward().unwrap();
    let gs = probed(&|x| linear(x, &w, Some(&b)), &x, &probe).backward().unwrap();
    for t in [w.as_tensor(), b.as_tensor()] {
        assert!(max_abs_diff(gf.get(t).expect("trainable weight gradient"), gs.get(t).unwrap()) <= 1e-12);
    }
}

#[test]
fn frozen_linear_inference_and_fallback_dtypes() {
    let x = randn(1, &[4, 16], 1.0, DType::F32);
    let w = randn(2, &[8, 16], 0.5, DType::F32);
    let y = frozen_linear(&x, &w, None).unwrap();
    assert!(!y.track_op(), "no graph without a Var");
    assert!(max_abs_diff(&y, &linear(&x, &w, None).unwrap()) <= 1e-5);
}

/// Largest |a − b| relative to the largest |b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.to_dtype(DType::F64).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    max_abs_diff(a, b) / scale
}

/// A 16-bit base's frozen linear map widens its weight block by block and accumulates in f32:
/// across block edges (inner 1500 > 1024, 600 outputs > 512), in both weight layouts, with a
/// bias, forward and input gradient are the f32 results rounded once to 16 bits.
#[test]
fn frozen_linear_in_bf16_and_f16_is_the_f32_product_rounded_once() {
    let (x32, w32, b32) = (randn(1, &[3, 5, 1500], 1.0, DType::F32), randn(2, &[600, 1500], 0.05, DType::F32), randn(3, &[600], 0.5, DType::F32));
    for dtype in [DType::BF16, DType::F16] {
        // The 16-bit values, and the same values in f32 for the reference.
        let (x, w, b) = (x32.to_dtype(dtype).unwrap(), w32.to_dtype(dtype).unwrap(), b32.to_dtype(dtype).unwrap());
        let up = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want = linear(&up(&x), &up(&w), Some(&up(&b))).unwrap();
        let ulp = if dtype == DType::BF16 { 1.0 / 256.0 } else { 1.0 / 2048.0 };
        for weight in [w.clone(), w.t().unwrap().contiguous().unwrap().t().unwrap()] {
            let y = frozen_linear(&x, &weight, Some(&b)).unwrap();
            assert_eq!(y.dtype(), dtype);
            assert!(rel_diff(&y, &want) <= ulp, "{dtype:?} forward: {}", rel_diff(&y, &want));
            let xv = Var::from_tensor(&x).unwrap();
            let probe = randn(4, &[3, 5, 600], 1.0, DType::F32).to_dtype(dtype).unwrap();
            let grads = frozen_linear(xv.as_tensor(), &weight, Some(&b)).unwrap().mul(&probe).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = grads.get(xv.as_tensor()).expect("input gradient");
            let want_gx = up(&probe).reshape((15, 600)).unwrap().matmul(&up(&w)).unwrap().reshape((3, 5, 1500)).unwrap();
            assert!(rel_diff(gx, &want_gx) <= ulp, "{dtype:?} input gradient: {}", rel_diff(gx, &want_gx));
        }
    }
}

// ---------------------------------------------------------------- layer norm

fn ln_params(d: usize, dtype: DType) -> (Tensor, Tensor) {
    let g = (randn(11, &[d], 0.2, dtype) + 1.0).unwrap();
    let b = randn(12, &[d], 0.5, dtype);
    (g, b)
}

#[test]
fn layer_norm_forward_matches_slow_path() {
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-13)] {
        for shape in [vec![3, 7, 384], vec![256, 384], vec![5, 1], vec![2, 9]] {
            let d = *shape.last().unwrap();
            let (g, b) = ln_params(d, dtype);
            // Off-centre and scaled rows, so the mean really matters.
            let x = (randn(13, &shape, 3.0, dtype) + 5.0).unwrap();
            for eps in [f32eps(1e-12), f32eps(1e-5)] {
                let diff = max_abs_diff(&frozen_layer_norm(&x, &g, &b, eps).unwrap(), &slow_ln(&x, &g, &b, eps).unwrap());
                assert!(diff <= tol, "{dtype:?} {shape:?} eps {eps}: {diff}");
            }
        }
        // Non-contiguous input and input at a storage offset.
        let (g, b) = ln_params(16, dtype);
        let xt = randn(14, &[16, 6], 1.0, dtype).t().unwrap();
        let diff = max_abs_diff(&frozen_layer_norm(&xt, &g, &b, f32eps(1e-5)).unwrap(), &slow_ln(&xt, &g, &b, f32eps(1e-5)).unwrap());
        assert!(diff <= tol, "{dtype:?} transposed: {diff}");
        let xn = randn(15, &[9, 16], 1.0, dtype).narrow(0, 3, 4).unwrap();
        assert!(max_abs_diff(&frozen_layer_norm(&xn, &g, &b, f32eps(1e-5)).unwrap(), &slow_ln(&xn, &g, &b, f32eps(1e-5)).unwrap()) <= tol);
    }
}

#[test]
fn layer_norm_gradient_matches_slow_path_and_finite_differences() {
    let (g, b) = ln_params(10, DType::F64);
    let x = Var::from_tensor(&(randn(3, &[2, 3, 10], 2.0, DType::F64) + 1.0).unwrap()).unwrap();
    let probe = randn(4, &[2, 3, 10], 1.0, DType::F64);
    for eps in [f32eps(1e-12), f32eps(1e-3)] {
        let fast = |x: &Tensor| frozen_layer_norm(x, &g, &b, eps);
        let slow = |x: &Tensor| slow_ln(x, &g, &b, eps);
        let gf = probed(&fast, &x, &probe).backward().unwrap();
        let gs = probed(&slow, &x, &probe).backward().unwrap();
        let dx = gf.get(&x).expect("input gradient");
        assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-12, "eps {eps}");
        check_finite_differences(&fast, &x, &probe, dx, 24);
        assert!(gf.get(&g).is_none() && gf.get(&b).is_none(), "gamma and beta are frozen");
    }
}

#[test]
fn layer_norm_keeps_gradients_of_trainable_parameters() {
    let (g, b) = ln_params(10, DType::F64);
    let (g, b) = (Var::from_tensor(&g).unwrap(), Var::from_tensor(&b).unwrap());
    let x = randn(3, &[4, 10], 2.0, DType::F64);
    let probe = randn(4, &[4, 10], 1.0, DType::F64);
    let gf = probed(&|x| frozen_layer_norm(x, &g, &b, f32eps(1e-5)), &x, &probe).backward().unwrap();
    let gs = probed(&|x| slow_ln(x, &g, &b, f32eps(1e-5)), &x, &probe).backward().unwrap();
    for t in [g.as_tensor(), b.as_tensor()] {
        assert!(max_abs_diff(gf.get(t).expect("trainable parameter gradient"), gs.get(t).unwrap()) <= 1e-12);
    }
}

#[test]
fn layer_norm_inference_and_fallback_dtypes() {
    let (g, b) = ln_params(16, DType::F32);
    let x = randn(1, &[4, 16], 1.0, DType::F32);
    let y = frozen_layer_norm(&x, &g, &b, 1e-12).unwrap();
    assert!(!y.track_op(), "no graph without a Var");
    // 16 bits: normalised in f32 from the 16-bit values and rounded once.
    for (dtype, ulp) in [(DType::F16, 1.0 / 2048.0), (DType::BF16, 1.0 / 256.0)] {
        let (xh, gh, bh) = (x.to_dtype(dtype).unwrap(), g.to_dtype(dtype).unwrap(), b.to_dtype(dtype).unwrap());
        let fast = frozen_layer_norm(&xh, &gh, &bh, f32eps(1e-12)).unwrap();
        assert_eq!(fast.dtype(), dtype);
        let up = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let want = slow_ln(&up(&xh), &up(&gh), &up(&bh), f32eps(1e-12)).unwrap();
        assert!(rel_diff(&fast, &want) <= ulp, "{dtype:?}: {}", rel_diff(&fast, &want));
        let xv = Var::from_tensor(&xh).unwrap();
        let probe = randn(2, &[4, 16], 1.0, DType::F32);
        let gx = frozen_layer_norm(xv.as_tensor(), &gh, &bh, f32eps(1e-12)).unwrap().mul(&probe.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let x32 = Var::from_tensor(&up(&xh)).unwrap();
        let g32 = probed(&|t| slow_ln(t, &up(&gh), &up(&bh), f32eps(1e-12)), &x32, &probe).backward().unwrap();
        let (a, w) = (gx.get(xv.as_tensor()).unwrap(), g32.get(x32.as_tensor()).unwrap());
        assert!(rel_diff(a, w) <= 4.0 * ulp, "{dtype:?} gradient: {}", rel_diff(a, w));
    }
}

// ---------------------------------------------------------------- target log-probabilities

#[test]
fn target_log_probs_match_log_softmax_and_finite_differences() {
    let targets = [3u32, 0, 6, 6];
    let x = Var::from_tensor(&randn(11, &[4, 7], 3.0, DType::F64)).unwrap();
    let probe = randn(12, &[4], 1.0, DType::F64);
    let fast = |t: &Tensor| target_log_probs(t, &targets);
    let slow = |t: &Tensor| target_log_probs::unfused(t, &targets);
    assert!(max_abs_diff(&fast(&x).unwrap(), &slow(&x).unwrap()) <= 1e-14);
    let gf = probed(&fast, &x, &probe).backward().unwrap();
    let gs = probed(&slow, &x, &probe).backward().unwrap();
    let dx = gf.get(&x).expect("input gradient");
    assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-14);
    check_finite_differences(&fast, &x, &probe, dx, 16);
    // bf16 logits are scored in f32 (the result is f32) and get a bf16 gradient.
    let xh = Var::from_tensor(&randn(13, &[4, 3000], 4.0, DType::F32).to_dtype(DType::BF16).unwrap()).unwrap();
    let y = target_log_probs(&xh, &targets).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert!(max_abs_diff(&y, &target_log_probs::unfused(&xh, &targets).unwrap()) <= 1e-5);
    let g = y.sum_all().unwrap().backward().unwrap();
    let gh = g.get(&xh).unwrap();
    assert_eq!(gh.dtype(), DType::BF16);
    let x32 = Var::from_tensor(&xh.to_dtype(DType::F32).unwrap()).unwrap();
    let g32 = target_log_probs::unfused(&x32, &targets).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(rel_diff(gh, g32.get(&x32).unwrap()) <= 1.0 / 256.0);
    assert!(target_log_probs(&xh, &[3000, 0, 0, 0]).is_err(), "a target outside the classes");
}

// ---------------------------------------------------------------- rope

#[test]
fn rope_matches_plain_ops_and_finite_differences() {
    let (b, h, s, hd) = (2, 3, 5, 8);
    let (cos, sin) = (randn(14, &[s, hd], 1.0, DType::F64), randn(15, &[s, hd], 1.0, DType::F64));
    let x = Var::from_tensor(&randn(16, &[b, h, s, hd], 1.0, DType::F64)).unwrap();
    let probe = randn(17, &[b, h, s, hd], 1.0, DType::F64);
    let fast = |t: &Tensor| rope_half_rotation(t, &cos, &sin);
    let slow = |t: &Tensor| rope_unfused(t, &cos, &sin);
    assert_eq!(max_abs_diff(&fast(&x).unwrap(), &slow(&x).unwrap()), 0.0);
    let gf = probed(&fast, &x, &probe).backward().unwrap();
    let gs = probed(&slow, &x, &probe).backward().unwrap();
    let dx = gf.get(&x).expect("input gradient");
    assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-14);
    check_finite_differences(&fast, &x, &probe, dx, 16);
    // 16 bits: each product rounded, then the sum, as the plain ops round.
    for dtype in [DType::BF16, DType::F16] {
        let (xh, ch, sh) = (x.to_dtype(dtype).unwrap(), cos.to_dtype(dtype).unwrap(), sin.to_dtype(dtype).unwrap());
        let fused = rope_half_rotation(&xh, &ch, &sh).unwrap();
        assert_eq!(fused.dtype(), dtype);
        assert_eq!(max_abs_diff(&fused, &rope_unfused(&xh, &ch, &sh).unwrap()), 0.0, "{dtype:?}");
    }
}

// ---------------------------------------------------------------- rms norm

#[test]
fn rms_norm_matches_plain_ops_and_finite_differences() {
    let w = (randn(5, &[10], 0.5, DType::F64) + 1.0).unwrap();
    let x = Var::from_tensor(&randn(6, &[2, 3, 10], 2.0, DType::F64)).unwrap();
    let probe = randn(7, &[2, 3, 10], 1.0, DType::F64);
    for eps in [1e-6, 1e-2] {
        let fast = |x: &Tensor| frozen_rms_norm(x, &w, eps);
        let slow = |x: &Tensor| rms_norm_unfused(x, &w, eps);
        assert!(max_abs_diff(&fast(&x).unwrap(), &slow(&x).unwrap()) <= 1e-14);
        let gf = probed(&fast, &x, &probe).backward().unwrap();
        let gs = probed(&slow, &x, &probe).backward().unwrap();
        let dx = gf.get(&x).expect("input gradient");
        assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-13, "eps {eps}");
        check_finite_differences(&fast, &x, &probe, dx, 24);
        assert!(gf.get(&w).is_none(), "the scale is frozen");
    }
    // A trainable scale takes the plain path and gets its gradient.
    let wv = Var::from_tensor(&w).unwrap();
    let g = probed(&|x| frozen_rms_norm(x, wv.as_tensor(), 1e-6), &x, &probe).backward().unwrap();
    assert!(g.get(wv.as_tensor()).is_some());
}

/// In 16 bits the row is normalised in f32, rounded, then scaled (transformers' order), so the
/// fused op and the plain ops agree to a rounding; both are far closer to f32 than a norm
/// computed in 16 bits throughout.
#[test]
fn rms_norm_in_bf16_and_f16_normalises_in_f32() {
    let (x32, w32) = (randn(8, &[4, 2048], 3.0, DType::F32), (randn(9, &[2048], 0.2, DType::F32) + 1.0).unwrap());
    let want = rms_norm_unfused(&x32, &w32, 1e-6).unwrap();
    for (dtype, ulp) in [(DType::BF16, 1.0 / 256.0), (DType::F16, 1.0 / 2048.0)] {
        let (x, w) = (x32.to_dtype(dtype).unwrap(), w32.to_dtype(dtype).unwrap());
        let fused = frozen_rms_norm(&x, &w, 1e-6).unwrap();
        assert_eq!(fused.dtype(), dtype);
        assert!(rel_diff(&fused, &rms_norm_unfused(&x, &w, 1e-6).unwrap()) <= ulp);
        assert!(rel_diff(&fused, &want) <= 2.0 * ulp, "{dtype:?}: {}", rel_diff(&fused, &want));
        let xv = Var::from_tensor(&x).unwrap();
        let probe = randn(10, &[4, 2048], 1.0, DType::F32);
        let gx = frozen_rms_norm(xv.as_tensor(), &w, 1e-6).unwrap().mul(&probe.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let x32v = Var::from_tensor(&x.to_dtype(DType::F32).unwrap()).unwrap();
        let g32 = probed(&|t| rms_norm_unfused(t, &w.to_dtype(DType::F32).unwrap(), 1e-6), &x32v, &probe).backward().unwrap();
        let (a, b) = (gx.get(xv.as_tensor()).unwrap(), g32.get(x32v.as_tensor()).unwrap());
        assert_eq!(a.dtype(), dtype);
        assert!(rel_diff(a, b) <= 4.0 * ulp, "{dtype:?} gradient: {}", rel_diff(a, b));
    }
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_forward_matches_slow_path() {
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-14)] {
        for shape in [vec![2, 3, 8, 64], vec![16, 12, 6, 64], vec![5, 1], vec![3, 13]] {
            let x = randn(21, &shape, 4.0, dtype);
            let diff = max_abs_diff(&softmax_last(&x).unwrap(), &slow_softmax(&x).unwrap());
            assert!(diff <= tol, "{dtype:?} {shape:?}: {diff}");
        }
        // An additive padding mask as BERT builds it: masked keys get exactly zero weight.
        let mask = Tensor::new(&[0.0, 0.0, -1e9, -1e9], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let x = randn(22, &[3, 4], 1.0, dtype).broadcast_add(&mask).unwrap();
        let y = softmax_last(&x).unwrap();
        assert!(max_abs_diff(&y, &slow_softmax(&x).unwrap()) <= tol);
        assert_eq!(y.narrow(1, 2, 2).unwrap().abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), 0.0);
        let xt = randn(23, &[8, 5], 1.0, dtype).t().unwrap();
        assert!(max_abs_diff(&softmax_last(&xt).unwrap(), &slow_softmax(&xt).unwrap()) <= tol);
    }
}

#[test]
fn softmax_gradient_matches_slow_path_and_finite_differences() {
    let x = Var::from_tensor(&randn(3, &[2, 3, 7], 2.0, DType::F64)).unwrap();
    let probe = randn(4, &[2, 3, 7], 1.0, DType::F64);
    let gf = probed(&softmax_last, &x, &probe).backward().unwrap();
    let gs = probed(&slow_softmax, &x, &probe).backward().unwrap();
    let dx = gf.get(&x).expect("input gradient");
    assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-14);
    check_finite_differences(&softmax_last, &x, &probe, dx, 24);
}

#[test]
fn softmax_inference_and_fallback_dtypes() {
    let x = randn(1, &[4, 16], 1.0, DType::F32);
    assert!(!softmax_last(&x).unwrap().track_op());
    for dtype in [DType::F16, DType::BF16] {
        let xh = x.to_dtype(dtype).unwrap();
        assert_eq!(max_abs_diff(&softmax_last(&xh).unwrap(), &slow_softmax(&xh).unwrap()), 0.0);
    }
}

// ---------------------------------------------------------------- composed

/// `softmax(LN(x Wᵀ + b))` over a split last dim, read out through a transpose (so the
/// gradients reaching the fused backward passes arrive non-contiguous).
fn block(x: &Tensor, fused: bool, p: &[Tensor; 4]) -> Result<Tensor> {
    let [w, b, g, beta] = p;
    let (n, s, _) = x.dims3()?;
    let (h, ln) = if fused {
        let h = frozen_linear(x, w, Some(b))?;
        (h.clone(), frozen_layer_norm(&h, g, beta, f32eps(1e-12))?)
    } else {
        let h = linear(x, w, Some(b))?;
        (h.clone(), slow_ln(&h, g, beta, f32eps(1e-12))?)
    };
    let scores = ln.reshape((n, s, 4, 6))?.transpose(1, 2)?;
    let probs = if fused { softmax_last(&scores)? } else { slow_softmax(&scores)? };
    // A residual around the norm, so the linear's output is reached by two paths.
    probs.transpose(1, 2)?.reshape((n, s, 24))? + h
}

#[test]
fn composition_gradient_matches_slow_path_and_finite_differences() {
    let p = [
        randn(1, &[24, 16], 0.4, DType::F64),
        randn(2, &[24], 1.0, DType::F64),
        ln_params(24, DType::F64).0,
        ln_params(24, DType::F64).1,
    ];
    let x = Var::from_tensor(&randn(3, &[4, 6, 16], 1.0, DType::F64)).unwrap();
    let probe = randn(4, &[4, 6, 24], 1.0, DType::F64);
    let fast = |x: &Tensor| block(x, true, &p);
    let slow = |x: &Tensor| block(x, false, &p);
    assert!(max_abs_diff(&fast(&x).unwrap(), &slow(&x).unwrap()) <= 1e-12);
    let gf = probed(&fast, &x, &probe).backward().unwrap();
    let gs = probed(&slow, &x, &probe).backward().unwrap();
    let dx = gf.get(&x).expect("input gradient");
    assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-12);
    check_finite_differences(&fast, &x, &probe, dx, 32);
    for t in &p {
        assert!(gf.get(t).is_none(), "frozen parameters get no gradient");
    }
}

#[test]
fn gelu_forward_matches_candle() {
    for (dtype, tol) in [(DType::F32, 5e-7), (DType::F64, 1e-15)] {
        // Wide enough to reach both tails and odd sizes (not a multiple of the chunk).
        let x = randn(7, &[3, 5001], 3.0, dtype);
        let d = max_abs_diff(&gelu_erf(&x).unwrap(), &x.gelu_erf().unwrap());
        assert!(d <= tol, "{dtype:?}: {d}");
    }
    // 16 bits: computed in f32 from the 16-bit values and rounded once.
    let x = randn(9, &[3, 5001], 3.0, DType::F32);
    for (dtype, ulp) in [(DType::BF16, 1.0 / 256.0), (DType::F16, 1.0 / 2048.0)] {
        let xh = x.to_dtype(dtype).unwrap();
        let fast = gelu_erf(&xh).unwrap();
        assert_eq!(fast.dtype(), dtype);
        let want = xh.to_dtype(DType::F32).unwrap().gelu_erf().unwrap();
        assert!(rel_diff(&fast, &want) <= ulp, "{dtype:?}: {}", rel_diff(&fast, &want));
    }
    // Zero at zero, 0 and x in the far tails, x/2 for tiny x.
    let x = Tensor::new(&[0f32, -20.0, 20.0, -1e-30], &Device::Cpu).unwrap();
    let y = gelu_erf(&x).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(&y[..3], &[0.0, 0.0, 20.0]);
    assert!((y[3] + 5e-31).abs() < 1e-36, "{}", y[3]);
}

#[test]
fn gelu_gradient_matches_candle_and_finite_differences() {
    let x = Var::from_tensor(&randn(8, &[4, 300], 2.0, DType::F64)).unwrap();
    let probe = randn(9, &[4, 300], 1.0, DType::F64);
    let fused = probed(&|t| gelu_erf(t), x.as_tensor(), &probe).backward().unwrap();
    let slow = probed(&|t| t.gelu_erf(), x.as_tensor(), &probe).backward().unwrap();
    let (gf, gs) = (fused.get(x.as_tensor()).unwrap(), slow.get(x.as_tensor()).unwrap());
    // candle's backward rounds 1/√(2π) to 0.398942 (relative error 7e-7); ours is exact, as
    // the finite differences confirm.
    assert!(max_abs_diff(gf, gs) <= 2e-6, "{}", max_abs_diff(gf, gs));
    check_finite_differences(&|t| gelu_erf(t), x.as_tensor(), &probe, gf, 40);

    let x32 = Var::from_tensor(&randn(8, &[4, 300], 2.0, DType::F32)).unwrap();
    let p32 = probe.to_dtype(DType::F32).unwrap();
    let fused = probed(&|t| gelu_erf(t), x32.as_tensor(), &p32).backward().unwrap();
    let slow = probed(&|t| t.gelu_erf(), x32.as_tensor(), &p32).backward().unwrap();
    let d = max_abs_diff(fused.get(x32.as_tensor()).unwrap(), slow.get(x32.as_tensor()).unwrap());
    assert!(d <= 2e-6, "{d}");
}

#[test]
fn scaled_masked_softmax_matches_the_unfused_chain() {
    let slow = |x: &Tensor, c: f64, bias: &Tensor| slow_softmax(&(x * c).unwrap().broadcast_add(bias).unwrap()).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-6), (DType::F64, 1e-14)] {
        let x = randn(31, &[3, 2, 5, 7], 3.0, dtype);
        // Batch 1 masks its last two keys, batch 2 none.
        let mask: Vec<f64> = (0..3 * 7).map(|i| if i / 7 == 1 && i % 7 >= 5 { -1e9 } else { 0.0 }).collect();
        let bias = Tensor::from_vec(mask, (3, 1, 1, 7), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let fused = scaled_masked_softmax(&x, 0.125, &bias).unwrap();
        assert!(max_abs_diff(&fused, &slow(&x, 0.125, &bias)) <= tol);
        let masked = fused.narrow(0, 1, 1).unwrap().narrow(3, 5, 2).unwrap();
        assert_eq!(masked.abs().unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), 0.0);
    }
    // 16-bit scores: the softmax is taken in f32 and rounded once.
    let x = randn(34, &[3, 2, 5, 7], 3.0, DType::F32);
    let bias = Tensor::from_vec(vec![0f32; 21], (3, 1, 1, 7), &Device::Cpu).unwrap();
    for (dtype, ulp) in [(DType::BF16, 1.0 / 256.0), (DType::F16, 1.0 / 2048.0)] {
        let (xh, bh) = (x.to_dtype(dtype).unwrap(), bias.to_dtype(dtype).unwrap());
        let fused = scaled_masked_softmax(&xh, 0.125, &bh).unwrap();
        assert_eq!(fused.dtype(), dtype);
        let want = slow(&xh.to_dtype(DType::F32).unwrap(), 0.125, &bias);
        assert!(rel_diff(&fused, &want) <= ulp, "{dtype:?}: {}", rel_diff(&fused, &want));
    }
    let x = Var::from_tensor(&randn(32, &[2, 3, 4, 6], 2.0, DType::F64)).unwrap();
    let bias = Tensor::from_vec(vec![0.0, 0.0, 0.0, 0.0, -1e9, -1e9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], (2, 1, 1, 6), &Device::Cpu).unwrap();
    let probe = randn(33, &[2, 3, 4, 6], 1.0, DType::F64);
    let f = |t: &Tensor| scaled_masked_softmax(t, 0.3, &bias);
    let gf = probed(&f, &x, &probe).backward().unwrap();
    let gs = probed(&|t: &Tensor| Ok(slow(t, 0.3, &bias)), &x, &probe).backward().unwrap();
    let dx = gf.get(&x).expect("input gradient");
    assert!(max_abs_diff(dx, gs.get(&x).unwrap()) <= 1e-14);
    check_finite_differences(&f, &x, &probe, dx, 24);
}

// ---------------------------------------------------------------- encoder_layer

/// A random post-norm BERT layer (hidden 64, 4 heads, MLP 128) in `dtype`.
fn random_encoder_layer(dtype: DType) -> EncoderLayerWeights {
    let (d, inter) = (64, 128);
    let lin = |seed: u64, out: usize, inp: usize| FrozenAffine {
        weight: randn(seed, &[out, inp], 0.15, dtype),
        bias: Some(randn(seed + 100, &[out], 0.1, dtype)),
    };
    let norm = |seed: u64| FrozenNorm {
        weight: (randn(seed, &[d], 0.1, DType::F32) + 1.0).unwrap().to_dtype(dtype).unwrap(),
        bias: randn(seed + 1, &[d], 0.1, dtype),
        eps: 1e-12,
    };
    EncoderLayerWeights {
        query: lin(1, d, d),
        key: lin(2, d, d),
        value: lin(3, d, d),
        attn_out: lin(4, d, d),
        attn_norm: norm(5),
        up: lin(6, inter, d),
        down: lin(7, d, inter),
        out_norm: norm(8),
        heads: 4,
    }
}

/// The same layer op by op, as `model::bert` computes it when a hook sits inside.
fn encoder_layer_op_by_op(x: &Tensor, mask: &Tensor, w: &EncoderLayerWeights) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let (h, hd) = (w.heads, d / w.heads);
    let lin = |a: &FrozenAffine, t: &Tensor| frozen_linear(t, &a.weight, a.bias.as_ref());
    let split = |t: Tensor| t.reshape((b, s, h, hd))?.transpose(1, 2)?.contiguous();
    let (q, k, v) = (split(lin(&w.query, x)?)?, split(lin(&w.key, x)?)?, split(lin(&w.value, x)?)?);
    let probs = scaled_masked_softmax(&q.matmul(&k.t()?)?, 1.0 / (hd as f64).sqrt(), mask)?;
    let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))?;
    let norm = |n: &FrozenNorm, t: &Tensor| frozen_layer_norm(t, &n.weight, &n.bias, n.eps);
    let a = norm(&w.attn_norm, &(lin(&w.attn_out, &ctx)? + x)?)?;
    let act = gelu_erf(&lin(&w.up, &a)?)?;
    norm(&w.out_norm, &(lin(&w.down, &act)? + &a)?)
}

/// The fused layer equals the op-by-op layer, forward and input gradient: to f32 rounding
/// in f32, and in bf16/f16 to a unit or two of the 16-bit rounding (both store their values
/// at the same points; only summation order differs: measured, the forward is identical
/// and the bf16 gradient 6e-3 apart). Padded keys (the mask) included.
#[test]
fn encoder_layer_matches_the_op_by_op_layer() {
    for (dtype, fwd_tol, grad_tol) in [(DType::F32, 1e-6, 1e-6), (DType::BF16, 1e-2, 2e-2), (DType::F16, 2e-3, 3e-3)] {
        let w = random_encoder_layer(dtype);
        let (b, s, d) = (3, 10, 64);
        let x = Var::from_tensor(&randn(11, &[b, s, d], 1.0, dtype)).unwrap();
        // Row i pads its last i keys.
        let mask: Vec<f32> = (0..b).flat_map(|i| (0..s).map(move |j| if j + i < s { 0.0 } else { -1e9 })).collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, s), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let probe = randn(12, &[b, s, d], 1.0, dtype);
        assert!(encoder_layer_applies(x.as_tensor(), &w));
        let fused = encoder_layer(x.as_tensor(), &mask, &w).unwrap();
        let plain = encoder_layer_op_by_op(x.as_tensor(), &mask, &w).unwrap();
        let fwd = rel_diff(&fused, &plain);
        assert!(fwd < fwd_tol, "{dtype:?}: forward differs by {fwd:.2e}");
        let grad = |y: &Tensor| y.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap().clone();
        let (gf, gp) = (grad(&fused), grad(&plain));
        let g = rel_diff(&gf, &gp);
        assert!(g < grad_tol, "{dtype:?}: input gradient differs by {g:.2e}");
        // Not vacuous: the gradient is not zero, and a wrong head count changes the output.
        assert!(gf.abs().unwrap().sum_all().unwrap().to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap() > 1.0);
        let wrong = EncoderLayerWeights { heads: 2, ..random_encoder_layer(dtype) };
        assert!(rel_diff(&encoder_layer(x.as_tensor(), &mask, &wrong).unwrap(), &plain) > 10.0 * fwd_tol);
    }
}

/// With hooked projections (an edit added to q and v, as LoRA adds its delta), attention and
/// the rest as two fused ops equal the op-by-op layer: output, and the gradients reaching
/// the input and the edit.
#[test]
fn encoder_layer_after_projections_matches_the_op_by_op_layer() {
    for (dtype, fwd_tol, grad_tol) in [(DType::F32, 1e-6, 1e-6), (DType::BF16, 1e-2, 2e-2)] {
        let w = random_encoder_layer(dtype);
        let (b, s, d) = (2, 9, 64);
        let x = Var::from_tensor(&randn(21, &[b, s, d], 1.0, dtype)).unwrap();
        let edit = Var::from_tensor(&randn(22, &[b, s, d], 0.3, dtype)).unwrap();
        let mask: Vec<f32> = (0..b).flat_map(|i| (0..s).map(move |j| if j + 2 * i < s { 0.0 } else { -1e9 })).collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, s), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let probe = randn(23, &[b, s, d], 1.0, dtype);
        let lin = |a: &FrozenAffine, t: &Tensor| frozen_linear(t, &a.weight, a.bias.as_ref()).unwrap();
        let xt = x.as_tensor();
        let q = (lin(&w.query, xt) + edit.as_tensor()).unwrap();
        let k = lin(&w.key, xt);
        let v = (lin(&w.value, xt) - edit.as_tensor()).unwrap();
        let fused = encoder_layer_after_projections(&q, &k, &v, xt, &mask, &w).unwrap();
        // The op-by-op layer from the same edited projections.
        let plain = {
            let (h, hd) = (w.heads, d / w.heads);
            let split = |t: Tensor| t.reshape((b, s, h, hd)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let probs = scaled_masked_softmax(&split(q.clone()).matmul(&split(k.clone()).t().unwrap()).unwrap(), 1.0 / (hd as f64).sqrt(), &mask).unwrap();
            let ctx = probs.matmul(&split(v.clone())).unwrap().transpose(1, 2).unwrap().reshape((b, s, d)).unwrap();
            let norm = |n: &FrozenNorm, t: &Tensor| frozen_layer_norm(t, &n.weight, &n.bias, n.eps).unwrap();
            let a = norm(&w.attn_norm, &(lin(&w.attn_out, &ctx) + xt).unwrap());
            let act = gelu_erf(&lin(&w.up, &a)).unwrap();
            norm(&w.out_norm, &(lin(&w.down, &act) + &a).unwrap())
        };
        let fwd = rel_diff(&fused, &plain);
        assert!(fwd < fwd_tol, "{dtype:?}: forward differs by {fwd:.2e}");
        let grads = |y: &Tensor| {
            let g = y.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap();
            (g.get(&x).unwrap().clone(), g.get(&edit).unwrap().clone())
        };
        let ((gx_f, ge_f), (gx_p, ge_p)) = (grads(&fused), grads(&plain));
        for (what, a, b) in [("input", &gx_f, &gx_p), ("edit", &ge_f, &ge_p)] {
            let g = rel_diff(a, b);
            assert!(g < grad_tol, "{dtype:?}: gradient of the {what} differs by {g:.2e}");
        }
    }
}

/// A trainable weight, another device's tensor or f64 keeps the op-by-op path.
#[test]
fn encoder_layer_applies_only_to_frozen_cpu_16_or_32_bit_layers() {
    let x = randn(1, &[2, 3, 64], 1.0, DType::F32);
    assert!(encoder_layer_applies(&x, &random_encoder_layer(DType::F32)));
    let mut w = random_encoder_layer(DType::F32);
    w.up.weight = Var::from_tensor(&w.up.weight).unwrap().as_tensor().clone();
    assert!(!encoder_layer_applies(&x, &w), "a trainable weight must keep its gradient");
    assert!(!encoder_layer_applies(&x.to_dtype(DType::F64).unwrap(), &random_encoder_layer(DType::F64)));
    assert!(!encoder_layer_applies(&x.to_dtype(DType::BF16).unwrap(), &random_encoder_layer(DType::F32)), "mixed dtypes");
}
