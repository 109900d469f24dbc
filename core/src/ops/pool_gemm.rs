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

use super::kernels::Real;

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
    let pool = candle_core::utils::barrier_pool();
    let threads = pool.n_workers() + 1;
    let blocks = n.div_ceil(COLUMN_ALIGN);
    let parts = threads.min(blocks);
    let dst = SharedPtr(dst);
    // The columns `[c0, c1)` of the product.
    let part = |c0: usize, c1: usize| {
        if c0 >= c1 {
            return;
        }
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
    };
    if parts < 2 || m * n * k < MIN_PARALLEL_MACS {
        part(0, n);
        return;
    }
    pool.execute(|tid| {
        if tid < parts {
            // Whole blocks per part, the remainder spread over the first parts.
            let (per, extra) = (blocks / parts, blocks % parts);
            let b0 = tid * per + tid.min(extra);
            let b1 = b0 + per + usize::from(tid < extra);
            part((b0 * COLUMN_ALIGN).min(n), (b1 * COLUMN_ALIGN).min(n));
        }
    });
}

/// The output buffer, shared with the pool's workers, each of which writes its own columns.
struct SharedPtr<T>(*mut T);
// SAFETY: only used by `gemm_on_pool`, whose parts write disjoint columns.
unsafe impl<T: Send> Sync for SharedPtr<T> {}
impl<T> SharedPtr<T> {
    /// A method, not a field access, so closures capture the whole (Sync) wrapper.
    fn at(&self, offset: usize) -> *mut T {
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
