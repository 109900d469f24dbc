//! A CPU gemm whose threads are candle's own worker pool instead of rayon's.
//!
//! candle runs its element-wise ops (and our fused ops, `kernels::par_rows`) on a persistent
//! "barrier pool" whose idle workers spin for a while before parking, while gemm parallelises
//! through rayon's pool. On a 2-core machine the two pools take turns fighting for the cores:
//! a gemm right after an element-wise op shares its cores with the still-spinning barrier
//! worker. Splitting the output columns of a frozen linear map over the barrier pool and
//! running each part as a single-threaded gemm keeps every thread of the layer on one pool.
//! Splitting by columns also gives each thread its own half of the weight, which is what a
//! small batch reads most.

use super::kernels::{Half, Real};

/// Columns are split at multiples of this: gemm-f32's AVX-512 microkernel covers 64 rows of
/// its (transposed) output at a time, so smaller pieces would leave it partly idle.
const COLUMN_ALIGN: usize = 64;

/// Below this many multiply-adds a single thread is faster than waking the pool.
const MIN_PARALLEL_MACS: usize = 1 << 18;

/// A matrix operand: its first element and its row and column strides, in elements.
#[derive(Clone, Copy)]
pub(crate) struct Operand<T> {
    pub ptr: *const T,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`), `dst` row-major `[m, n]`,
/// `lhs` `[m, k]`, `rhs` `[k, n]`, parallel over the columns of `dst` on candle's barrier pool.
///
/// # Safety
/// `dst` must hold `m * n` elements that nothing else touches during the call, and the
/// operands must span `[m, k]` and `[k, n]` under their strides.
pub(crate) unsafe fn gemm_on_pool<T: Real>(m: usize, n: usize, k: usize, dst: *mut T, accumulate: bool, lhs: Operand<T>, rhs: Operand<T>) {
    let dst = SharedPtr(dst);
    on_column_parts(n, m * n * k, |c0, c1| {
        // Whole operands, not their raw-pointer fields (which closures would capture alone).
        let (lhs, rhs) = (&lhs, &rhs);
        // SAFETY: the caller's contract, restricted to columns c0..c1; parts are disjoint.
        unsafe {
            gemm::gemm(
                m,
                c1 - c0,
                k,
                dst.at(c0),
                1,
                n as isize,
                accumulate,
                lhs.ptr,
                lhs.col_stride,
                lhs.row_stride,
                rhs.ptr.offset(c0 as isize * rhs.col_stride),
                rhs.col_stride,
                rhs.row_stride,
                if accumulate { T::one() } else { T::zero() },
                T::one(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    });
}

/// Run `part(c0, c1)` over disjoint column ranges covering `0..n` on candle's barrier pool
/// (one range, on this thread, when the work is too small to share).
pub(crate) fn on_column_parts(n: usize, macs: usize, part: impl Fn(usize, usize) + Sync) {
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let blocks = n.div_ceil(COLUMN_ALIGN);
    let parts = threads.min(blocks);
    if parts < 2 || macs < MIN_PARALLEL_MACS {
        part(0, n);
        return;
    }
    pool.execute(|tid| {
        if tid < parts {
            // Whole blocks per part, the remainder spread over the first parts.
            let (per, extra) = (blocks / parts, blocks % parts);
            let b0 = tid * per + tid.min(extra);
            let b1 = b0 + per + usize::from(tid < extra);
            let (c0, c1) = ((b0 * COLUMN_ALIGN).min(n), (b1 * COLUMN_ALIGN).min(n));
            if c0 < c1 {
                part(c0, c1);
            }
        }
    });
}

/// Columns and inner rows of the 16-bit operand widened at a time: 512 × 1024 f32 is 2 MiB
/// per thread, while a whole f32 copy of a vocabulary-sized matrix would be a gigabyte.
const WIDEN_COLS: usize = 512;
const WIDEN_INNER: usize = 1024;

/// `dst = lhs · rhs` (or `dst += lhs · rhs`), like [`gemm_on_pool`], for an f32 `lhs` and a
/// 16-bit `rhs` `[k, n]` (a bf16/f16 weight under its own strides): each thread widens the
/// blocks of `rhs` its columns need into a small f32 buffer, exactly (every bf16/f16 is an
/// f32), and multiplies with f32 accumulation. candle's own bf16 matmul widens both whole
/// operands on every call.
///
/// # Safety
/// As [`gemm_on_pool`].
pub(crate) unsafe fn gemm_on_pool_widening<H: Half>(m: usize, n: usize, k: usize, dst: *mut f32, accumulate: bool, lhs: Operand<f32>, rhs: Operand<H>) {
    let dst = SharedPtr(dst);
    // Read the 16-bit operand along its contiguous direction: a row-major block when its
    // columns are adjacent, a column-major one when its rows are.
    let column_major = rhs.row_stride == 1 && rhs.col_stride != 1;
    on_column_parts(n, m * n * k, |c0, c1| {
        let (lhs, rhs) = (&lhs, &rhs);
        let mut buf = vec![0f32; WIDEN_COLS.min(c1 - c0) * WIDEN_INNER.min(k)];
        for cb in (c0..c1).step_by(WIDEN_COLS) {
            let cw = WIDEN_COLS.min(c1 - cb);
            for kb in (0..k).step_by(WIDEN_INNER) {
                let kw = WIDEN_INNER.min(k - kb);
                // SAFETY: (kb + i, cb + j) is inside rhs's [k, n] span, per the contract.
                let at = |i: usize, j: usize| unsafe { *rhs.ptr.offset((kb + i) as isize * rhs.row_stride + (cb + j) as isize * rhs.col_stride) };
                let (brs, bcs) = if column_major {
                    for j in 0..cw {
                        for i in 0..kw {
                            buf[j * kw + i] = at(i, j).widen();
                        }
                    }
                    (1, kw as isize)
                } else {
                    for i in 0..kw {
                        for j in 0..cw {
                            buf[i * cw + j] = at(i, j).widen();
                        }
                    }
                    (cw as isize, 1)
                };
                let read_dst = accumulate || kb > 0;
                // SAFETY: columns cb..cb+cw of dst are this part's; buf spans [kw, cw].
                unsafe {
                    gemm::gemm(
                        m,
                        cw,
                        kw,
                        dst.at(cb),
                        1,
                        n as isize,
                        read_dst,
                        lhs.ptr.offset(kb as isize * lhs.col_stride),
                        lhs.col_stride,
                        lhs.row_stride,
                        buf.as_ptr(),
                        bcs,
                        brs,
                        if read_dst { 1.0 } else { 0.0 },
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
        }
    });
}

/// The output buffer, shared with the pool's workers, each of which writes its own columns.
pub(crate) struct SharedPtr<T>(pub(crate) *mut T);
// SAFETY: only used by the pool gemms, whose parts write disjoint columns.
unsafe impl<T: Send> Sync for SharedPtr<T> {}
impl<T> SharedPtr<T> {
    /// A method, not a field access, so closures capture the whole (Sync) wrapper.
    pub(crate) fn at(&self, offset: usize) -> *mut T {
        // SAFETY: callers stay inside the buffer.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: the operands are only read, by threads that the (blocking) call outlives.
unsafe impl<T: Sync> Sync for Operand<T> {}
unsafe impl<T: Sync> Send for Operand<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bf16 operand in either orientation, across block edges in both directions (inner
    /// 2500 > WIDEN_INNER, columns 1100 > WIDEN_COLS), equals the product of its f32 values.
    #[test]
    fn widening_bf16_equals_the_f32_product() {
        for &(m, n, k, acc, transposed) in &[(3usize, 1100usize, 2500usize, false, false), (5, 700, 1030, true, true), (1, 64, 8, false, true)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
            let r: Vec<half::bf16> = (0..k * n).map(|i| half::bf16::from_f32(((i * 5 % 11) as f32 - 5.0) / 4.0)).collect();
            // R(i, j) stored row-major [k, n], or as its transpose [n, k].
            let (rs, cs) = if transposed { (1, k as isize) } else { (n as isize, 1) };
            let get = |i: usize, j: usize| r[(i as isize * rs + j as isize * cs) as usize].to_f32() as f64;
            let mut dst: Vec<f32> = (0..m * n).map(|i| if acc { (i % 3) as f32 } else { f32::NAN }).collect();
            let before = dst.clone();
            unsafe {
                gemm_on_pool_widening(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    acc,
                    Operand { ptr: a.as_ptr(), row_stride: k as isize, col_stride: 1 },
                    Operand { ptr: r.as_ptr(), row_stride: rs, col_stride: cs },
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * get(p, j)).sum::<f64>() + if acc { before[i * n + j] as f64 } else { 0.0 };
                    assert!((dst[i * n + j] as f64 - want).abs() < 1e-3, "m {m} n {n} k {k} at ({i},{j}): {} vs {want}", dst[i * n + j]);
                }
            }
        }
    }

    /// Every split (single part, uneven blocks, a ragged last block, accumulate) equals the
    /// naive product.
    #[test]
    fn matches_naive_product() {
        for &(m, n, k, acc) in &[(3usize, 5usize, 4usize, false), (64, 384, 96, false), (17, 1000, 33, true), (64, 130, 64, false), (1, 1536, 384, true)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64 - 6.0) / 8.0).collect();
            // rhs stored transposed ([n, k] row-major) to exercise general strides.
            let bt: Vec<f64> = (0..n * k).map(|i| ((i * 5 % 11) as f64 - 5.0) / 4.0).collect();
            let mut dst: Vec<f64> = (0..m * n).map(|i| if acc { (i % 3) as f64 } else { f64::NAN }).collect();
            let before = dst.clone();
            unsafe {
                gemm_on_pool(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    acc,
                    Operand { ptr: a.as_ptr(), row_stride: k as isize, col_stride: 1 },
                    Operand { ptr: bt.as_ptr(), row_stride: 1, col_stride: k as isize },
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f64>() + if acc { before[i * n + j] } else { 0.0 };
                    assert!((dst[i * n + j] - want).abs() < 1e-9, "m {m} n {n} k {k} at ({i},{j}): {} vs {want}", dst[i * n + j]);
                }
            }
        }
    }
}
