//! Allocator tuning for tensor workloads.
//!
//! Every candle op allocates its output afresh. glibc serves blocks above its mmap threshold
//! (128 KiB, rising only slowly) with fresh `mmap`s and returns them on free, so each op's
//! output pages are faulted in anew: a 16 × 64 training step took 3.2 million page faults and
//! ~12% of its CPU time in the kernel. Keeping blocks up to 32 MiB on the heap, and not trimming
//! it, lets freed tensors' memory be reused: 114 thousand faults and 12% less CPU time for the
//! same step, with the same peak RSS (`perf stat -e page-faults,task-clock` on
//! `cargo bench --bench train -- step`; docs/benchmarks.md).

/// Apply the tuning. Call once, early in `main`, before large allocations and before any
/// other thread starts.
pub fn tune_for_tensors() {
    pin_thread_count();
    tune_allocator();
}

/// Fix the worker-thread count in `RAYON_NUM_THREADS` when the user has not.
///
/// candle reads its thread count on every matmul (and our fused ops on every call) through
/// `candle_core::utils::get_num_threads`, which without `RAYON_NUM_THREADS` counts the
/// physical cores by parsing `/proc/cpuinfo` each time: 2-4% of a 64-token forward and of
/// a decoding step went to the kernel formatting that file (`perf record` on
/// `cargo bench --bench train -- forward` and `--bench generate -- candle`). Setting the
/// variable once to the same count makes it a lookup. An explicit setting is kept.
fn pin_thread_count() {
    let set = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > 0);
    if !set {
        let n = candle_core::utils::get_num_threads();
        // Called before other threads exist (see `tune_for_tensors`), so nothing reads the
        // environment concurrently.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// glibc's mmap threshold and trimming (the module docs); a no-op where the C library is
/// not glibc.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        // M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1 (glibc's malloc.h).
        libc::mallopt(-3, 32 << 20);
        libc::mallopt(-1, 1 << 30);
    }
}
