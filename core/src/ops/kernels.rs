//! Row kernels shared by the fused ops: a small float trait for f32/f64, vectorisable row
//! reductions and a row-parallel driver on scoped threads.

use candle_core::WithDType;

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
        for x in v {
            *x = x.exp();
        }
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

/// Below this many elements per thread, spawning is slower than the work itself.
const MIN_ELEMS_PER_THREAD: usize = 1 << 15;

/// Fill `dst` (whole rows of `row_len`) by `work(first_row, rows_chunk)`, split over up to
/// candle's thread count (`RAYON_NUM_THREADS`, else the physical cores) on scoped threads.
pub(crate) fn par_rows<T: Send>(dst: &mut [T], row_len: usize, work: impl Fn(usize, &mut [T]) + Sync) {
    let threads = candle_core::utils::get_num_threads().min(dst.len() / MIN_ELEMS_PER_THREAD);
    par_rows_on(threads, dst, row_len, work)
}

/// [`par_rows`] on at most `threads` threads.
pub(crate) fn par_rows_on<T: Send>(threads: usize, dst: &mut [T], row_len: usize, work: impl Fn(usize, &mut [T]) + Sync) {
    let rows = dst.len().checked_div(row_len).unwrap_or(0);
    let threads = threads.min(rows).max(1);
    if threads == 1 {
        work(0, dst);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let mut chunks = dst.chunks_mut(per * row_len).enumerate();
        let (_, first) = chunks.next().expect("at least one row");
        for (i, chunk) in chunks {
            let work = &work;
            s.spawn(move || work(i * per, chunk));
        }
        work(0, first);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_rows_covers_every_row_once() {
        for (threads, rows) in [(1, 5), (2, 5), (3, 7), (4, 3), (8, 1), (3, 0)] {
            let d = 3;
            let mut dst = vec![0usize; rows * d];
            par_rows_on(threads, &mut dst, d, |row0, chunk| {
                assert_eq!(chunk.len() % d, 0);
                for (r, row) in chunk.chunks_exact_mut(d).enumerate() {
                    for (i, v) in row.iter_mut().enumerate() {
                        *v += (row0 + r) * d + i + 1;
                    }
                }
            });
            assert_eq!(dst, (1..=rows * d).collect::<Vec<_>>(), "threads {threads}, rows {rows}");
        }
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
