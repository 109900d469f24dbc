//! Row kernels shared by the fused ops: a small float trait for f32/f64, the 16-bit types
//! widened to f32 and back, a SIMD `exp`, vectorisable row reductions, a row-parallel driver
//! on candle's worker pool, and the slice view of an op's constant tensor.

use candle_core::{bail, Layout, Result, Storage, WithDType};

/// A contiguous cpu tensor held by an op (a norm's scale, RoPE's tables) as a slice; `what`
/// names it in errors.
pub(crate) fn cpu_slice<'a, T: WithDType>(s: &'a Storage, l: &Layout, what: &str) -> Result<&'a [T]> {
    let Storage::Cpu(c) = s else { bail!("{what} is not on the cpu") };
    let Some((lo, hi)) = l.contiguous_offsets() else { bail!("{what} is not contiguous") };
    Ok(&c.as_slice::<T>()?[lo..hi])
}

/// A 16-bit float that widens exactly to f32: the storage types of a bf16/f16 frozen base,
/// whose fused ops compute in f32 and round once at the end.
pub(crate) trait Half: candle_core::WithDType + Default + Send + Sync {
    fn widen(self) -> f32;
    /// Round to nearest even.
    fn narrow(x: f32) -> Self;
    /// The slice as bf16, for kernels only bf16 has (the AVX512-BF16 gemm); None for f16.
    fn as_bf16(v: &[Self]) -> Option<&[half::bf16]>;
}

impl Half for half::bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    /// half's `from_f32` with the NaN test as a select instead of a branch, so that whole
    /// slices vectorise: round to nearest even by adding 0x7fff plus the kept part's lowest
    /// bit (a carry into the exponent rounds up to the next binade or to infinity, as it
    /// should); a NaN keeps its sign and top payload bits, made quiet.
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        let b = x.to_bits();
        let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
        let quiet_nan = ((b >> 16) as u16) | 0x40;
        half::bf16::from_bits(if x.is_nan() { quiet_nan } else { rounded })
    }
    fn as_bf16(v: &[Self]) -> Option<&[half::bf16]> {
        Some(v)
    }
}

impl Half for half::f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn as_bf16(_: &[Self]) -> Option<&[half::bf16]> {
        None
    }
}

/// Every element widened to f32, in parallel chunks.
pub(crate) fn widen_all<H: Half>(v: &[H]) -> Vec<f32> {
    par_chunks(v.len(), |at, out| {
        for (o, x) in out.iter_mut().zip(&v[at..]) {
            *o = x.widen();
        }
    })
}

/// Every element rounded to `H`, in parallel chunks.
pub(crate) fn narrow_all<H: Half>(v: &[f32]) -> Vec<H> {
    par_chunks(v.len(), |at, out| {
        for (o, &x) in out.iter_mut().zip(&v[at..]) {
            *o = H::narrow(x);
        }
    })
}

/// Elements per parallel work item of [`par_chunks`]: long enough to vectorise.
const CHUNK: usize = 4096;

/// A new `Vec` of `n` elements filled by `f(start, chunk)` over disjoint chunks in parallel
/// (the ragged tail on this thread).
pub(crate) fn par_chunks<T: Send + Copy + Default>(n: usize, f: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    let mut out = vec![T::default(); n];
    let whole = n / CHUNK * CHUNK;
    let (head, tail) = out.split_at_mut(whole);
    par_rows(head, CHUNK, |row0, ys| f(row0 * CHUNK, ys));
    f(whole, tail);
    out
}


/// The float types the fused CPU kernels handle (f32, f64). Other dtypes take the slow path.
pub(crate) trait Real: WithDType {
    const NEG_INFINITY: Self;
    fn sqrt(self) -> Self;
    fn fmax(self, other: Self) -> Self;
    /// `v[i] = exp(v[i])` for every element.
    fn exp_in_place(v: &mut [Self]);
}

impl Real for f32 {
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn fmax(self, other: Self) -> Self {
        f32::max(self, other)
    }
    #[inline(always)]
    fn exp_in_place(v: &mut [Self]) {
        exp_f32_slice(v)
    }
}

impl Real for f64 {
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn fmax(self, other: Self) -> Self {
        f64::max(self, other)
    }
    #[inline(always)]
    fn exp_in_place(v: &mut [Self]) {
        for x in v {
            *x = x.exp();
        }
    }
}

/// `exp` over a slice of f32 on the widest SIMD unit the CPU has (chosen at run time, like
/// gemm: the binary is built for baseline x86-64), else portable code.
fn exp_f32_slice(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature.
            return unsafe { exp_f32_avx512(v) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features.
            return unsafe { exp_f32_avx2(v) };
        }
    }
    exp_f32_portable(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_f32_avx512(v: &mut [f32]) {
    exp_f32_portable(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_f32_avx2(v: &mut [f32]) {
    exp_f32_portable(v)
}

#[inline(always)]
fn exp_f32_portable(v: &mut [f32]) {
    for x in v.iter_mut() {
        *x = exp_f32(*x);
    }
}

/// `exp(x)` in f32 without a libm call, branch-free so that loops over it vectorise.
/// Cephes' `expf`: `x = n·ln2 + r` with `|r| ≤ ln2/2` (ln2 split in two for an exact
/// reduction), a degree-7 polynomial for `exp(r)`, and `2ⁿ` built in the exponent bits.
/// Within ~2 ulp of the true value for `x ≤ 88.3` (`+∞` above, as `exp` overflows
/// at 88.72); below `-87` (where the true value is already under 2⁻¹²⁵) it returns 0.
/// NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // 355/512, exact: n·LN2_HI is exact for |n| < 2¹⁵
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.3);
    let shifted = xc * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let e = y * scale;
    if x > 88.3 {
        f32::INFINITY
    } else if x < -87.0 {
        0.0
    } else {
        e
    }
}

const LANES: usize = 8;

/// `Σ f(i)` over `0..n` with eight independent accumulators, so the compiler can keep them
/// in one SIMD register instead of a serial chain of dependent adds.
#[inline(always)]
pub(crate) fn sum_by<T: Real>(n: usize, f: impl Fn(usize) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let whole = n / LANES * LANES;
    let mut i = 0;
    while i < whole {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += LANES;
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for j in whole..n {
        s += f(j);
    }
    s
}

/// Row maximum.
#[inline(always)]
pub(crate) fn max_of<T: Real>(v: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].fmax(c[l]);
        }
    }
    let mut m = acc.iter().copied().fold(T::NEG_INFINITY, T::fmax);
    for &x in chunks.remainder() {
        m = m.fmax(x);
    }
    m
}

/// Below this many elements, handing rows to other threads costs more than it saves.
const MIN_PARALLEL_ELEMS: usize = 1 << 16;

/// Fill `dst` (whole rows of `row_len`) by `work(first_row, rows)` over disjoint runs of
/// rows, on candle's own persistent worker pool (the one its element-wise ops use; sized by
/// `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`) when `dst` is large enough to pay for it.
pub(crate) fn par_rows<T: Send>(dst: &mut [T], row_len: usize, work: impl Fn(usize, &mut [T]) + Sync) {
    let rows = dst.len().checked_div(row_len).unwrap_or(0);
    if dst.len() < MIN_PARALLEL_ELEMS || rows < 2 {
        work(0, dst);
        return;
    }
    let pool = candle_core::utils::barrier_pool();
    if pool.n_workers() == 0 {
        work(0, dst);
        return;
    }
    let base = RowsPtr(dst.as_mut_ptr());
    pool.execute_chunked(rows, |range| {
        // SAFETY: `execute_chunked` hands each call a distinct sub-range of `0..rows`, so
        // the slices are disjoint and inside `dst`, which outlives the (blocking) call.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.at(range.start * row_len), range.len() * row_len) };
        work(range.start, chunk)
    });
}

/// `task(i)` for every `i` in `0..n`, each once, spread over candle's worker pool.
pub(crate) fn par_for(n: usize, task: impl Fn(usize) + Sync) {
    let pool = candle_core::utils::barrier_pool();
    if n < 2 || pool.n_workers() == 0 {
        (0..n).for_each(task);
        return;
    }
    pool.execute_chunked(n, |range| range.for_each(&task));
}

/// The output buffer, shared with the pool's workers, each of which writes its own rows.
struct RowsPtr<T>(*mut T);
// SAFETY: only used by `par_rows`, whose workers write disjoint rows.
unsafe impl<T: Send> Sync for RowsPtr<T> {}
impl<T> RowsPtr<T> {
    /// A method, not a field access, so closures capture the whole (Sync) wrapper.
    fn at(&self, offset: usize) -> *mut T {
        // SAFETY: callers stay inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The select-based bf16 rounding equals half's on every sign, exponent (subnormals,
    /// infinities, NaNs) and the mantissa patterns around each rounding tie.
    #[test]
    fn bf16_narrow_equals_half() {
        for hi in 0u32..=0x1ff {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1_7fff, 0x1_8000, 0x7f_ffff, 0x40_0000, 0x12_3456] {
                let bits = (hi << 23) | (lo & 0x7f_ffff);
                let x = f32::from_bits(bits);
                assert_eq!(<half::bf16 as Half>::narrow(x).to_bits(), half::bf16::from_f32(x).to_bits(), "{bits:#010x}");
            }
        }
    }

    #[test]
    fn par_rows_covers_every_row_once() {
        // Small buffers run inline; large ones go to the pool (where it has workers).
        for (d, rows) in [(3, 5), (3, 0), (1, 1), (384, 1000), (7, 30_001)] {
            let mut dst = vec![0usize; rows * d];
            par_rows(&mut dst, d, |row0, chunk| {
                assert_eq!(chunk.len() % d, 0);
                for (r, row) in chunk.chunks_exact_mut(d).enumerate() {
                    for (i, v) in row.iter_mut().enumerate() {
                        *v += (row0 + r) * d + i + 1;
                    }
                }
            });
            assert!(dst.iter().enumerate().all(|(i, &v)| v == i + 1), "d {d}, rows {rows}");
        }
    }

    #[test]
    fn exp_f32_is_within_two_ulp() {
        let mut worst = 0f64;
        let xs: Vec<f32> = (0..200_001).map(|i| -87.0 + (88.3 + 87.0) * i as f32 / 200_000.0).collect();
        let mut fast = xs.clone();
        exp_f32_slice(&mut fast);
        for (&x, &y) in xs.iter().zip(&fast) {
            let truth = (x as f64).exp();
            assert_eq!(y, exp_f32(x), "dispatched and portable agree at {x}");
            worst = worst.max(((y as f64 - truth) / truth).abs());
        }
        assert!(worst <= 2.5e-7, "worst relative error {worst}");
        for (x, want) in [(-1e9f32, 0.0f32), (-88.0, 0.0), (0.0, 1.0), (1e9, f32::INFINITY), (f32::INFINITY, f32::INFINITY), (f32::NEG_INFINITY, 0.0)] {
            assert_eq!(exp_f32(x), want, "exp({x})");
        }
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn reductions_match_serial() {
        for n in [0, 1, 7, 8, 9, 31, 384] {
            let v: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.25).collect();
            assert_eq!(sum_by(n, |i| v[i]), v.iter().sum::<f64>(), "n {n}");
            assert_eq!(max_of(&v), v.iter().copied().fold(f64::NEG_INFINITY, f64::max), "n {n}");
        }
    }
}
