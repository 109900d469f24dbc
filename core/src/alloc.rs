//! Allocator tuning for tensor workloads.
//!
//! Every candle op allocates its output afresh. glibc serves blocks above its mmap threshold
//! (128 KiB, rising only slowly) with fresh `mmap`s and returns them on free, so each op's
//! output pages are faulted in anew: a 16 × 64 training step took 3.2 million page faults and
//! ~12% of its CPU time in the kernel. Keeping blocks up to 32 MiB on the heap, and not trimming
//! it, lets freed tensors' memory be reused: 114 thousand faults and 12% less CPU time for the
//! same step, with the same peak RSS (`perf stat -e page-faults,task-clock` on
//! `cargo bench --bench train -- step`; docs/benchmarks.md).

/// Apply the tuning. Call once, early in `main`, before large allocations; a no-op where the
/// C library is not glibc.
pub fn tune_for_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        // M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1 (glibc's malloc.h).
        libc::mallopt(-3, 32 << 20);
        libc::mallopt(-1, 1 << 30);
    }
}
