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
//! The whole layer is one op where no hook sits inside it (`Hooks::inner_hooks` is empty).
//! Where only the query/key/value projections are hooked (LoRA), those run op by op with
//! their hooks, and attention and the rest of the layer are two fused ops. Any other inner
//! hook needs the op-by-op graph.

use super::frozen_linear::FrozenLinear;
use super::gelu::{gelu_f32, gelu_grad_f32};
use super::kernels::{narrow_all, par_chunks, par_for, widen_all, Half};
use super::layer_norm::{layer_norm_grad_rows, layer_norm_rows};
use super::pool_gemm::SharedPtr;
use super::softmax::softmax_row_in_place;
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor, WithDType};
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
    let op = EncoderLayer { params: Arc::new(LayerParams::new(w)?), keep: x.track_op(), saved: Mutex::new(None) };
    x.contiguous()?.apply_op2(&mask_bias.to_dtype(x.dtype())?.contiguous()?, op)
}

/// The same layer from its (possibly hooked) query, key and value projections `[b, s, d]`:
/// attention as one op, then output projection, norms and MLP as another; differentiable
/// with respect to `q`, `k`, `v` and `x`. For layers whose only inner hooks sit on those
/// projections (LoRA on query/value): the hooks run op by op, the rest fused. Call only
/// where [`encoder_layer_applies`] and `q`, `k`, `v` are in `x`'s dtype and shape.
pub fn encoder_layer_after_projections(q: &Tensor, k: &Tensor, v: &Tensor, x: &Tensor, mask_bias: &Tensor, w: &EncoderLayerWeights) -> Result<Tensor> {
    for t in [q, k, v] {
        if t.dtype() != x.dtype() || t.dims() != x.dims() || !t.device().is_cpu() {
            bail!("encoder layer: projection {:?} {:?} does not match the input {:?} {:?}", t.dims(), t.dtype(), x.dims(), x.dtype())
        }
    }
    let params = Arc::new(LayerParams::new(w)?);
    let mask = mask_bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let keep = q.track_op() || k.track_op() || v.track_op() || x.track_op();
    let attention = Attention { heads: w.heads, mask, keep, probs: Mutex::new(None) };
    let ctx = q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, attention)?;
    ctx.apply_op2(&x.contiguous()?, PostAttention { params, keep, saved: Mutex::new(None) })
}

const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const UP: usize = 4;
const DOWN: usize = 5;

/// A layer's frozen maps (q, k, v, output, up, down) and norms, shared by its ops.
struct LayerParams {
    maps: [FrozenLinear; 6],
    /// LayerNorm after attention, after the MLP: (scale, shift, eps).
    norms: [(Tensor, Tensor, f64); 2],
    heads: usize,
}

impl LayerParams {
    fn new(w: &EncoderLayerWeights) -> Result<Self> {
        let lin = |a: &FrozenAffine| -> Result<FrozenLinear> { Ok(FrozenLinear { weight: a.weight.clone(), bias: a.bias.as_ref().map(|b| b.contiguous()).transpose()? }) };
        let norm = |n: &FrozenNorm| -> Result<(Tensor, Tensor, f64)> { Ok((n.weight.contiguous()?, n.bias.contiguous()?, n.eps)) };
        Ok(LayerParams {
            maps: [lin(&w.query)?, lin(&w.key)?, lin(&w.value)?, lin(&w.attn_out)?, lin(&w.up)?, lin(&w.down)?],
            norms: [norm(&w.attn_norm)?, norm(&w.out_norm)?],
            heads: w.heads,
        })
    }
}

/// The whole layer as one op on `(x, mask)`.
struct EncoderLayer {
    params: Arc<LayerParams>,
    /// Whether the input takes part in a graph, so the backward will run and needs `saved`.
    keep: bool,
    /// What the forward kept for the backward (a `Saved<S>` of the input's storage type).
    saved: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// The whole layer's intermediate values, stored as the separate ops would store them.
struct Saved<S> {
    q: Vec<S>,
    k: Vec<S>,
    v: Vec<S>,
    /// Attention probabilities `[b, heads, s, s]`.
    probs: Vec<S>,
    post: PostSaved<S>,
}

/// What the part after attention keeps for its backward.
struct PostSaved<S> {
    /// `attention output + x`, before the first LayerNorm.
    sum1: Vec<S>,
    /// The MLP's up projection, before GELU.
    up: Vec<S>,
    /// `MLP output + a`, before the second LayerNorm.
    sum2: Vec<S>,
}

/// Attention alone, as one op on `(q, k, v)`; the key mask is held as f32.
struct Attention {
    heads: usize,
    mask: Vec<f32>,
    keep: bool,
    /// The probabilities `[b, heads, s, s]` (a `Vec<S>`), for the backward.
    probs: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// Output projection, residual, LayerNorm, MLP, residual, LayerNorm, as one op on `(ctx, x)`.
struct PostAttention {
    params: Arc<LayerParams>,
    keep: bool,
    /// A `PostSaved<S>`, for the backward.
    saved: Mutex<Option<Box<dyn std::any::Any + Send>>>,
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

impl LayerParams {
    fn norm(&self, i: usize) -> Result<(Vec<f32>, Vec<f32>, f32)> {
        let (g, b, eps) = &self.norms[i];
        Ok((g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?, b.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?, *eps as f32))
    }

    /// Output projection of `ctx`, `+ x`, LayerNorm, MLP, `+ a`, LayerNorm: the output and
    /// what the backward needs.
    fn post_forward<S: Store>(&self, ctx: &[S], x: &[S], d: usize) -> Result<(Vec<S>, PostSaved<S>)> {
        let sum1 = add(&S::affine(&self.maps[O], ctx)?, x);
        let (g1, b1, e1) = self.norm(0)?;
        let a = S::store(layer_norm_rows(&S::f32s(&sum1), &g1, &b1, d, e1));
        let up = S::affine(&self.maps[UP], &a)?;
        let act = S::store(gelu_f32(&S::f32s(&up)));
        let sum2 = add(&S::affine(&self.maps[DOWN], &act)?, &a);
        let (g2, b2, e2) = self.norm(1)?;
        let out = S::store(layer_norm_rows(&S::f32s(&sum2), &g2, &b2, d, e2));
        Ok((out, PostSaved { sum1, up, sum2 }))
    }

    /// The gradients of `post_forward`'s output with respect to `ctx` and to `x` (the
    /// residual's share, which is the first LayerNorm's input gradient).
    fn post_backward<S: Store>(&self, saved: &PostSaved<S>, dy: &[S], d: usize) -> Result<(Vec<S>, Vec<S>)> {
        // Second LayerNorm, then the MLP; `a` gets the residual's gradient and the MLP's.
        let (g2, _, e2) = self.norm(1)?;
        let d_sum2 = S::store(layer_norm_grad_rows(&S::f32s(&saved.sum2), &S::f32s(dy), &g2, d, e2));
        let d_act = S::input_grad(&self.maps[DOWN], &d_sum2)?;
        let d_up = S::store(gelu_grad_f32(&S::f32s(&saved.up), &S::f32s(&d_act)));
        let d_a = add(&S::input_grad(&self.maps[UP], &d_up)?, &d_sum2);
        let (g1, _, e1) = self.norm(0)?;
        let d_sum1 = S::store(layer_norm_grad_rows(&S::f32s(&saved.sum1), &S::f32s(&d_a), &g1, d, e1));
        let d_ctx = S::input_grad(&self.maps[O], &d_sum1)?;
        Ok((d_ctx, d_sum1))
    }
}

/// Masked softmax attention of `q`, `k`, `v` `[b, s, d]` over `heads` heads: the
/// probabilities `[b, heads, s, s]` and the context `[b, s, d]`, stored as the batched
/// matmuls and the softmax op store them.
fn attend<S: Store>(q: &[S], k: &[S], v: &[S], mask: &[f32], (b, s, d): (usize, usize, usize), heads: usize) -> (Vec<S>, Vec<S>) {
    let hd = d / heads;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let mut probs = vec![S::zero(); b * heads * s * s];
    let mut ctx = vec![S::zero(); b * s * d];
    let (probs_at, ctx_at) = (SharedPtr(probs.as_mut_ptr()), SharedPtr(ctx.as_mut_ptr()));
    par_for(b * heads, |task| {
        let (bi, h) = (task / heads, task % heads);
        let (qh, kh, vh) = (head(q, bi, h, s, d, hd), head(k, bi, h, s, d, hd), head(v, bi, h, s, d, hd));
        // Scores q·kᵀ, stored as the batched matmul stores them; then scale, key mask and
        // softmax per row in f32, the probabilities stored again.
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
    (probs, ctx)
}

/// The gradients of [`attend`]'s context with respect to `q`, `k` and `v`.
#[allow(clippy::too_many_arguments)]
fn attend_backward<S: Store>(q: &[S], k: &[S], v: &[S], probs: &[S], d_ctx: &[S], (b, s, d): (usize, usize, usize), heads: usize) -> [Vec<S>; 3] {
    let hd = d / heads;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let mut dq = vec![S::zero(); b * s * d];
    let mut dk = vec![S::zero(); b * s * d];
    let mut dv = vec![S::zero(); b * s * d];
    let (dq_at, dk_at, dv_at) = (SharedPtr(dq.as_mut_ptr()), SharedPtr(dk.as_mut_ptr()), SharedPtr(dv.as_mut_ptr()));
    par_for(b * heads, |task| {
        let (bi, h) = (task / heads, task % heads);
        let (qh, kh, vh) = (head(q, bi, h, s, d, hd), head(k, bi, h, s, d, hd), head(v, bi, h, s, d, hd));
        let dc = head(d_ctx, bi, h, s, d, hd);
        let p: Vec<f32> = probs[task * s * s..][..s * s].iter().map(|x| x.get()).collect();
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
    [dq, dk, dv]
}

/// The saved value of type `T` in `slot`, or an error naming `op`.
fn saved_in<'a, T: 'static>(slot: &'a Option<Box<dyn std::any::Any + Send>>, op: &str) -> Result<&'a T> {
    match slot.as_ref().and_then(|b| b.downcast_ref::<T>()) {
        Some(t) => Ok(t),
        None => bail!("{op}: backward without a forward that kept its values"),
    }
}

/// `f` on a cpu tensor's elements as `S` (made contiguous first).
fn elements<S: Store, R>(t: &Tensor, f: impl FnOnce(&[S]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    let Storage::Cpu(c) = &*st else { bail!("encoder layer: a tensor is not on the cpu") };
    let (lo, hi) = l.contiguous_offsets().expect("made contiguous above");
    let Some(v) = S::slice(c) else { bail!("encoder layer: a tensor is not in the layer's dtype") };
    f(&v[lo..hi])
}

/// Runs `$body` with `$t` bound to the storage type of `$dtype` (f32, bf16 or f16).
macro_rules! with_store {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::BF16 => {
                type $t = half::bf16;
                $body
            }
            DType::F16 => {
                type $t = half::f16;
                $body
            }
            other => bail!("encoder layer: {other:?} is not fused"),
        }
    };
}

impl EncoderLayer {
    fn forward<S: Store>(&self, x: &[S], mask: &[S], (b, s, d): (usize, usize, usize)) -> Result<Vec<S>> {
        let p = &self.params;
        let [q, k, v] = [Q, K, V].map(|i| S::affine(&p.maps[i], x));
        let (q, k, v) = (q?, k?, v?);
        let mask: Vec<f32> = mask.iter().map(|m| m.get()).collect();
        let (probs, ctx) = attend(&q, &k, &v, &mask, (b, s, d), p.heads);
        let (out, post) = p.post_forward(&ctx, x, d)?;
        if self.keep {
            *self.saved.lock().expect("encoder layer: poisoned") = Some(Box::new(Saved { q, k, v, probs, post }));
        }
        Ok(out)
    }

    fn backward<S: Store>(&self, dy: &[S], dims: (usize, usize, usize)) -> Result<Vec<S>> {
        let guard = self.saved.lock().expect("encoder layer: poisoned");
        let saved: &Saved<S> = saved_in(&guard, "encoder layer")?;
        let p = &self.params;
        let (d_ctx, d_sum1) = p.post_backward(&saved.post, dy, dims.2)?;
        let grads = attend_backward(&saved.q, &saved.k, &saved.v, &saved.probs, &d_ctx, dims, p.heads);
        // dx = dq·Wq + dk·Wk + dv·Wv + d_sum1, summed in f32 and stored once.
        let mut dx: Vec<f32> = S::f32s(&d_sum1).into_owned();
        for (i, g) in [Q, K, V].into_iter().zip(&grads) {
            for (acc, x) in dx.iter_mut().zip(S::input_grad(&p.maps[i], g)?) {
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
        let y = with_store!(s1.dtype(), T => self.run_forward::<T>(&T::slice(s1).expect("dtype matched")[lo..hi], s2, l2, dims)?);
        Ok((y, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _mask: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims3()?;
        let dx = with_store!(grad.dtype(), T => elements::<T, _>(grad, |g| Tensor::from_vec(self.backward(g, dims)?, x.shape(), x.device()))?);
        Ok((Some(dx), None))
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "frozen-encoder-attention"
    }

    #[allow(clippy::too_many_arguments)]
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l1.shape().dims3()?;
        if self.mask.len() != dims.0 * dims.1 || l2.dims() != l1.dims() || l3.dims() != l1.dims() {
            bail!("encoder attention: q {:?}, k {:?}, v {:?} and a mask of {} do not fit", l1.dims(), l2.dims(), l3.dims(), self.mask.len())
        }
        let (Some(a), Some(b), Some(c)) = (l1.contiguous_offsets(), l2.contiguous_offsets(), l3.contiguous_offsets()) else {
            bail!("encoder attention: q, k and v must be contiguous")
        };
        let ctx = with_store!(s1.dtype(), T => {
            let (Some(q), Some(k), Some(v)) = (T::slice(s1), T::slice(s2), T::slice(s3)) else { bail!("encoder attention: q, k and v must share a dtype") };
            let (probs, ctx) = attend(&q[a.0..a.1], &k[b.0..b.1], &v[c.0..c.1], &self.mask, dims, self.heads);
            if self.keep {
                *self.probs.lock().expect("encoder attention: poisoned") = Some(Box::new(probs));
            }
            T::wrap(ctx)
        });
        Ok((ctx, l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _ctx: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = q.dims3()?;
        let guard = self.probs.lock().expect("encoder attention: poisoned");
        let [dq, dk, dv] = with_store!(grad.dtype(), T => {
            let probs: &Vec<T> = saved_in(&guard, "encoder attention")?;
            let grads = elements::<T, _>(q, |qs| {
                elements::<T, _>(k, |ks| elements::<T, _>(v, |vs| elements::<T, _>(grad, |gs| Ok(attend_backward(qs, ks, vs, probs, gs, dims, self.heads)))))
            })?;
            grads.map(|g| Tensor::from_vec(g, q.shape(), q.device()))
        });
        Ok((Some(dq?), Some(dk?), Some(dv?)))
    }
}

impl CustomOp2 for PostAttention {
    fn name(&self) -> &'static str {
        "frozen-encoder-post-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (Some(a), Some(b)) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else { bail!("encoder layer: ctx and x must be contiguous") };
        if l1.dims() != l2.dims() {
            bail!("encoder layer: ctx {:?} and x {:?} differ", l1.dims(), l2.dims())
        }
        let d = l1.shape().dims3()?.2;
        let out = with_store!(s1.dtype(), T => {
            let (Some(ctx), Some(x)) = (T::slice(s1), T::slice(s2)) else { bail!("encoder layer: ctx and x must share a dtype") };
            let (out, post) = self.params.post_forward(&ctx[a.0..a.1], &x[b.0..b.1], d)?;
            if self.keep {
                *self.saved.lock().expect("encoder layer: poisoned") = Some(Box::new(post));
            }
            T::wrap(out)
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(&self, ctx: &Tensor, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = ctx.dims3()?.2;
        let guard = self.saved.lock().expect("encoder layer: poisoned");
        let (d_ctx, d_x) = with_store!(grad.dtype(), T => {
            let saved: &PostSaved<T> = saved_in(&guard, "encoder layer")?;
            let (a, b) = elements::<T, _>(grad, |g| self.params.post_backward(saved, g, d))?;
            (Tensor::from_vec(a, ctx.shape(), ctx.device())?, Tensor::from_vec(b, ctx.shape(), ctx.device())?)
        });
        Ok((Some(d_ctx), Some(d_x)))
    }
}
