//! A post-norm BERT encoder layer as one op, with its own backward (input gradient only).
//!
//! Op by op, a frozen layer is some thirty graph nodes: q/k/v projections, head splits and
//! their copies, two batched matmuls, softmax, output projection, two residual adds, two
//! LayerNorms, the MLP. candle's backward visits each node and gives each input gradient a
//! zero tensor plus an add, and with a bf16 base every one of those adds (and the residual
//! adds) runs candle's bf16 add, which converts element by element (docs/benchmarks.md has
//! the profile). Here the layer is one node: its forward keeps what the backward needs (q,
//! k, v, the attention probabilities, the pre-norm sums and the MLP's pre-activation) inside
//! the op, and its backward runs the same kernels the separate ops run (`frozen_linear`'s
//! gemms, the LayerNorm, softmax and GELU rows) without the graph between them.
//!
//! The arithmetic is the op-by-op path's: values are stored in the layer's dtype at the
//! same points (every projection, score, probability, sum and norm output is rounded to
//! bf16/f16 where the separate ops would round it), and computed in f32 in between. Only
//! the summation order of a few sums differs (the input gradient's four terms are added in
//! f32 and rounded once instead of after each add). `ops::tests` checks the two paths agree.
//!
//! It applies to a layer with no hook inside it (`Hooks::inside_untouched`): a hook on a
//! projection or an inner state needs the op-by-op graph.

use super::frozen_linear::FrozenLinear;
use super::gelu::{gelu_f32, gelu_grad_f32};
use super::kernels::{narrow_all, par_chunks, par_for, widen_all, Half};
use super::layer_norm::{layer_norm_grad_rows, layer_norm_rows};
use super::pool_gemm::SharedPtr;
use super::softmax::softmax_row_in_place;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// A frozen affine map: weight `[out, in]` (any strides) and bias `[out]`.
pub struct FrozenAffine {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// A LayerNorm's scale, shift and epsilon.
pub struct FrozenNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

/// The weights of one post-norm BERT layer with an exact-GELU MLP.
pub struct EncoderLayerWeights {
    pub query: FrozenAffine,
    pub key: FrozenAffine,
    pub value: FrozenAffine,
    pub attn_out: FrozenAffine,
    pub attn_norm: FrozenNorm,
    pub up: FrozenAffine,
    pub down: FrozenAffine,
    pub out_norm: FrozenNorm,
    pub heads: usize,
}

/// Whether [`encoder_layer`] computes this layer: a CPU input `[batch, seq, hidden]` in
/// f32/bf16/f16 with every weight frozen (not a `Var`) in the same dtype.
pub fn encoder_layer_applies(x: &Tensor, w: &EncoderLayerWeights) -> bool {
    let dt = x.dtype();
    let ok = |t: &Tensor| !t.track_op() && t.device().is_cpu() && t.dtype() == dt;
    let affine = |a: &FrozenAffine| ok(&a.weight) && a.bias.as_ref().is_none_or(ok);
    let norm = |n: &FrozenNorm| ok(&n.weight) && ok(&n.bias);
    x.device().is_cpu()
        && matches!(dt, DType::F32 | DType::BF16 | DType::F16)
        && x.rank() == 3
        && x.elem_count() > 0
        && w.heads > 0
        && x.dim(2).is_ok_and(|d| d % w.heads == 0)
        && [&w.query, &w.key, &w.value, &w.attn_out, &w.up, &w.down].into_iter().all(affine)
        && norm(&w.attn_norm)
        && norm(&w.out_norm)
}

/// One layer: `LN2(MLP(a) + a)` with `a = LN1(Attention(x) + x)`, for `x` `[b, s, d]` and the
/// additive key mask `mask_bias` `[b, 1, 1, s]` (no gradient). Differentiable with respect
/// to `x`. Call only where [`encoder_layer_applies`].
pub fn encoder_layer(x: &Tensor, mask_bias: &Tensor, w: &EncoderLayerWeights) -> Result<Tensor> {
    let lin = |a: &FrozenAffine| -> Result<FrozenLinear> { Ok(FrozenLinear { weight: a.weight.clone(), bias: a.bias.as_ref().map(|b| b.contiguous()).transpose()? }) };
    let norm = |n: &FrozenNorm| -> Result<(Tensor, Tensor, f64)> { Ok((n.weight.contiguous()?, n.bias.contiguous()?, n.eps)) };
    let op = EncoderLayer {
        maps: Arc::new([lin(&w.query)?, lin(&w.key)?, lin(&w.value)?, lin(&w.attn_out)?, lin(&w.up)?, lin(&w.down)?]),
        norms: Arc::new([norm(&w.attn_norm)?, norm(&w.out_norm)?]),
        heads: w.heads,
        keep: x.track_op(),
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op2(&mask_bias.to_dtype(x.dtype())?.contiguous()?, op)
}

const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const UP: usize = 4;
const DOWN: usize = 5;

struct EncoderLayer {
    maps: Arc<[FrozenLinear; 6]>,
    /// LayerNorm after attention, after the MLP: (scale, shift, eps).
    norms: Arc<[(Tensor, Tensor, f64); 2]>,
    heads: usize,
    /// Whether the input takes part in a graph, so the backward will run and needs `saved`.
    keep: bool,
    /// What the forward kept for the backward (a `Saved<S>` of the input's storage type).
    saved: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// The forward's intermediate values, stored as the separate ops would store them.
struct Saved<S> {
    q: Vec<S>,
    k: Vec<S>,
    v: Vec<S>,
    /// Attention probabilities `[b, heads, s, s]`.
    probs: Vec<S>,
    /// `attention output + x`, before the first LayerNorm.
    sum1: Vec<S>,
    /// The MLP's up projection, before GELU.
    up: Vec<S>,
    /// `MLP output + a`, before the second LayerNorm.
    sum2: Vec<S>,
}

/// The storage types the layer runs in: f32 as is; bf16/f16 widened to f32 between the
/// points where the op-by-op path stores them.
trait Store: WithDType + Copy + Default + Send + Sync + 'static {
    fn f32s(v: &[Self]) -> Cow<'_, [f32]>;
    fn store(v: Vec<f32>) -> Vec<Self>;
    fn get(self) -> f32;
    fn put(x: f32) -> Self;
    fn affine(l: &FrozenLinear, x: &[Self]) -> Result<Vec<Self>>;
    fn input_grad(l: &FrozenLinear, g: &[Self]) -> Result<Vec<Self>>;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

impl Store for f32 {
    fn f32s(v: &[f32]) -> Cow<'_, [f32]> {
        Cow::Borrowed(v)
    }
    fn store(v: Vec<f32>) -> Vec<f32> {
        v
    }
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(x: f32) -> f32 {
        x
    }
    fn affine(l: &FrozenLinear, x: &[f32]) -> Result<Vec<f32>> {
        l.affine(x, &[x.len()])
    }
    fn input_grad(l: &FrozenLinear, g: &[f32]) -> Result<Vec<f32>> {
        l.input_grad(g)
    }
    fn slice(s: &CpuStorage) -> Option<&[f32]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f32>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

macro_rules! half_store {
    ($t:ty, $variant:ident) => {
        impl Store for $t {
            fn f32s(v: &[$t]) -> Cow<'_, [f32]> {
                Cow::Owned(widen_all(v))
            }
            fn store(v: Vec<f32>) -> Vec<$t> {
                narrow_all(&v)
            }
            #[inline(always)]
            fn get(self) -> f32 {
                self.widen()
            }
            #[inline(always)]
            fn put(x: f32) -> $t {
                <$t>::narrow(x)
            }
            fn affine(l: &FrozenLinear, x: &[$t]) -> Result<Vec<$t>> {
                l.affine_half(x)
            }
            fn input_grad(l: &FrozenLinear, g: &[$t]) -> Result<Vec<$t>> {
                l.input_grad_half(g)
            }
            fn slice(s: &CpuStorage) -> Option<&[$t]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<$t>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
        }
    };
}
half_store!(half::bf16, BF16);
half_store!(half::f16, F16);

/// `dst[m, n] = a · b` in f32 on this thread, operands under (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn small_gemm(m: usize, n: usize, k: usize, dst: &mut [f32], a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], b_rs: usize, b_cs: usize) {
    debug_assert!(dst.len() >= m * n);
    // SAFETY: dst is m×n row-major and ours; a and b span [m, k] and [k, n] under their
    // strides (every caller passes whole head blocks).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Rounds every element to `S` and back: what storing an f32 result in `S` does to it.
fn round_to<S: Store>(v: &mut [f32]) {
    if S::DTYPE != DType::F32 {
        for x in v.iter_mut() {
            *x = S::put(*x).get();
        }
    }
}

/// Head `h` of batch row `bi` of a `[b, s, d]` buffer as an f32 `[s, hd]` block.
fn head<S: Store>(t: &[S], bi: usize, h: usize, s: usize, d: usize, hd: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(s * hd);
    for i in 0..s {
        out.extend(t[(bi * s + i) * d + h * hd..][..hd].iter().map(|x| x.get()));
    }
    out
}

/// Write an f32 `[s, hd]` block into head `h` of batch row `bi` of `[b, s, d]` (rounded).
///
/// # Safety
/// `dst` spans `[b, s, d]` and no other thread writes this head of this row.
unsafe fn put_head<S: Store>(dst: &SharedPtr<S>, block: &[f32], bi: usize, h: usize, s: usize, d: usize, hd: usize) {
    for i in 0..s {
        for j in 0..hd {
            // SAFETY: inside the buffer; this (row, head) is the caller's alone.
            unsafe { *dst.at((bi * s + i) * d + h * hd + j) = S::put(block[i * hd + j]) };
        }
    }
}

/// `a + b` stored in `S` (the residual add).
fn add<S: Store>(a: &[S], b: &[S]) -> Vec<S> {
    par_chunks(a.len(), |at, out| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = S::put(a[at + i].get() + b[at + i].get());
        }
    })
}

impl EncoderLayer {
    fn norm<S: Store>(&self, i: usize) -> Result<(Vec<f32>, Vec<f32>, f32)> {
        let (g, b, eps) = &self.norms[i];
        Ok((g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?, b.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?, *eps as f32))
    }

    fn forward<S: Store>(&self, x: &[S], mask: &[S], (b, s, d): (usize, usize, usize)) -> Result<Vec<S>> {
        let (heads, hd) = (self.heads, d / self.heads);
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let [q, k, v] = [Q, K, V].map(|i| S::affine(&self.maps[i], x));
        let (q, k, v) = (q?, k?, v?);
        let mask: Vec<f32> = mask.iter().map(|m| m.get()).collect();
        let mut probs = vec![S::zero(); b * heads * s * s];
        let mut ctx = vec![S::zero(); b * s * d];
        let (probs_at, ctx_at) = (SharedPtr(probs.as_mut_ptr()), SharedPtr(ctx.as_mut_ptr()));
        par_for(b * heads, |task| {
            let (bi, h) = (task / heads, task % heads);
            let (qh, kh, vh) = (head(&q, bi, h, s, d, hd), head(&k, bi, h, s, d, hd), head(&v, bi, h, s, d, hd));
            // Scores q·kᵀ, stored as the batched matmul stores them; then scale, key mask
            // and softmax per row in f32, the probabilities stored again.
            let mut p = vec![0f32; s * s];
            small_gemm(s, s, hd, &mut p, &qh, hd, 1, &kh, 1, hd);
            round_to::<S>(&mut p);
            for row in p.chunks_exact_mut(s) {
                for (x, m) in row.iter_mut().zip(&mask[bi * s..(bi + 1) * s]) {
                    *x = *x * scale + m;
                }
                softmax_row_in_place(row);
            }
            round_to::<S>(&mut p);
            let mut c = vec![0f32; s * hd];
            small_gemm(s, hd, s, &mut c, &p, s, 1, &vh, hd, 1);
            // SAFETY: this task alone writes probs[task] and head h of batch row bi.
            unsafe {
                for (i, &x) in p.iter().enumerate() {
                    *probs_at.at(task * s * s + i) = S::put(x);
                }
                put_head::<S>(&ctx_at, &c, bi, h, s, d, hd);
            }
        });
        let sum1 = add(&S::affine(&self.maps[O], &ctx)?, x);
        let (g1, b1, e1) = self.norm::<S>(0)?;
        let a = S::store(layer_norm_rows(&S::f32s(&sum1), &g1, &b1, d, e1));
        let up = S::affine(&self.maps[UP], &a)?;
        let act = S::store(gelu_f32(&S::f32s(&up)));
        let sum2 = add(&S::affine(&self.maps[DOWN], &act)?, &a);
        let (g2, b2, e2) = self.norm::<S>(1)?;
        let out = S::store(layer_norm_rows(&S::f32s(&sum2), &g2, &b2, d, e2));
        if self.keep {
            let saved = Saved { q, k, v, probs, sum1, up, sum2 };
            *self.saved.lock().expect("encoder layer: poisoned") = Some(Box::new(saved));
        }
        Ok(out)
    }

    fn backward<S: Store>(&self, dy: &[S], (b, s, d): (usize, usize, usize)) -> Result<Vec<S>> {
        let guard = self.saved.lock().expect("encoder layer: poisoned");
        let Some(saved) = guard.as_ref().and_then(|b| b.downcast_ref::<Saved<S>>()) else {
            bail!("encoder layer: backward without a forward that kept its values")
        };
        let (heads, hd) = (self.heads, d / self.heads);
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        // Second LayerNorm, then the MLP; `a` gets the residual's gradient and the MLP's.
        let (g2, _, e2) = self.norm::<S>(1)?;
        let d_sum2 = S::store(layer_norm_grad_rows(&S::f32s(&saved.sum2), &S::f32s(dy), &g2, d, e2));
        let d_act = S::input_grad(&self.maps[DOWN], &d_sum2)?;
        let d_up = S::store(gelu_grad_f32(&S::f32s(&saved.up), &S::f32s(&d_act)));
        let d_a = add(&S::input_grad(&self.maps[UP], &d_up)?, &d_sum2);
        // First LayerNorm, then attention; `x` gets the residual's gradient and q/k/v's.
        let (g1, _, e1) = self.norm::<S>(0)?;
        let d_sum1 = S::store(layer_norm_grad_rows(&S::f32s(&saved.sum1), &S::f32s(&d_a), &g1, d, e1));
        let d_ctx = S::input_grad(&self.maps[O], &d_sum1)?;
        let mut dq = vec![S::zero(); b * s * d];
        let mut dk = vec![S::zero(); b * s * d];
        let mut dv = vec![S::zero(); b * s * d];
        let (dq_at, dk_at, dv_at) = (SharedPtr(dq.as_mut_ptr()), SharedPtr(dk.as_mut_ptr()), SharedPtr(dv.as_mut_ptr()));
        par_for(b * heads, |task| {
            let (bi, h) = (task / heads, task % heads);
            let (qh, kh, vh) = (head(&saved.q, bi, h, s, d, hd), head(&saved.k, bi, h, s, d, hd), head(&saved.v, bi, h, s, d, hd));
            let dc = head(&d_ctx, bi, h, s, d, hd);
            let p: Vec<f32> = saved.probs[task * s * s..][..s * s].iter().map(|x| x.get()).collect();
            // ctx = p·v: dp = dc·vᵀ, dv = pᵀ·dc.
            let mut dp = vec![0f32; s * s];
            small_gemm(s, s, hd, &mut dp, &dc, hd, 1, &vh, 1, hd);
            round_to::<S>(&mut dp);
            let mut dvh = vec![0f32; s * hd];
            small_gemm(s, hd, s, &mut dvh, &p, 1, s, &dc, hd, 1);
            // Softmax of scaled scores: dscores = scale · p ⊙ (dp − Σ dp ⊙ p), stored.
            for (pr, gr) in p.chunks_exact(s).zip(dp.chunks_exact_mut(s)) {
                let dot: f32 = pr.iter().zip(gr.iter()).map(|(a, b)| a * b).sum();
                for (g, &y) in gr.iter_mut().zip(pr) {
                    *g = scale * y * (*g - dot);
                }
            }
            round_to::<S>(&mut dp);
            // scores = q·kᵀ: dq = ds·k, dk = dsᵀ·q.
            let mut dqh = vec![0f32; s * hd];
            small_gemm(s, hd, s, &mut dqh, &dp, s, 1, &kh, hd, 1);
            let mut dkh = vec![0f32; s * hd];
            small_gemm(s, hd, s, &mut dkh, &dp, 1, s, &qh, hd, 1);
            // SAFETY: this task alone writes head h of batch row bi of each buffer.
            unsafe {
                put_head::<S>(&dq_at, &dqh, bi, h, s, d, hd);
                put_head::<S>(&dk_at, &dkh, bi, h, s, d, hd);
                put_head::<S>(&dv_at, &dvh, bi, h, s, d, hd);
            }
        });
        // dx = dq·Wq + dk·Wk + dv·Wv + d_sum1, summed in f32 and stored once.
        let mut dx: Vec<f32> = S::f32s(&d_sum1).into_owned();
        for (i, g) in [(Q, &dq), (K, &dk), (V, &dv)] {
            for (acc, x) in dx.iter_mut().zip(S::input_grad(&self.maps[i], g)?) {
                *acc += x.get();
            }
        }
        Ok(S::store(dx))
    }

    fn run_forward<S: Store>(&self, x: &[S], m: &CpuStorage, ml: &Layout, dims: (usize, usize, usize)) -> Result<CpuStorage> {
        let Some((m0, m1)) = ml.contiguous_offsets() else { bail!("encoder layer: the mask must be contiguous") };
        let Some(mask) = S::slice(m) else { bail!("encoder layer: the mask must be in the input's dtype") };
        if m1 - m0 != dims.0 * dims.1 {
            bail!("encoder layer: mask {:?} does not fit the input's [{}, {}]", ml.dims(), dims.0, dims.1)
        }
        Ok(S::wrap(self.forward(x, &mask[m0..m1], dims)?))
    }
}

impl CustomOp2 for EncoderLayer {
    fn name(&self) -> &'static str {
        "frozen-encoder-layer"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((lo, hi)) = l1.contiguous_offsets() else { bail!("encoder layer: the input must be contiguous") };
        let dims = l1.shape().dims3()?;
        let y = match s1 {
            CpuStorage::F32(x) => self.run_forward(&x[lo..hi], s2, l2, dims)?,
            CpuStorage::BF16(x) => self.run_forward(&x[lo..hi], s2, l2, dims)?,
            CpuStorage::F16(x) => self.run_forward(&x[lo..hi], s2, l2, dims)?,
            _ => bail!("encoder layer: only f32, bf16 and f16 are fused"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _mask: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dims = x.dims3()?;
        let (gs, gl) = grad.storage_and_layout();
        let (lo, hi) = gl.contiguous_offsets().expect("made contiguous above");
        let Storage::Cpu(g) = &*gs else { bail!("encoder layer: the gradient must be on the cpu") };
        let dx = match g {
            CpuStorage::F32(g) => Tensor::from_vec(self.backward(&g[lo..hi], dims)?, x.shape(), x.device())?,
            CpuStorage::BF16(g) => Tensor::from_vec(self.backward(&g[lo..hi], dims)?, x.shape(), x.device())?,
            CpuStorage::F16(g) => Tensor::from_vec(self.backward(&g[lo..hi], dims)?, x.shape(), x.device())?,
            _ => bail!("encoder layer: the gradient must be in the input's dtype"),
        };
        Ok((Some(dx), None))
    }
}
