//! A bf16 × bf16 → f32 gemm on the AVX512-BF16 dot-product instruction (`vdpbf16ps`).
//!
//! A bf16 frozen base spends most of a step in its linear maps. Widening the bf16 operands
//! to f32 and running an f32 gemm (`pool_gemm::gemm_on_pool_widening`) does f32 arithmetic
//! on half the data: no faster than an f32 base. `vdpbf16ps` multiplies 32 bf16 pairs per
//! instruction into 16 f32 lanes, twice an f32 FMA's work, which is what torch's bf16
//! matmul (oneDNN) runs on CPUs with AVX512-BF16 and no AMX (AMD Zen 4/5, Cooper Lake).
//!
//! The arithmetic: each product of two bf16 values is exact in f32; pairs are summed into
//! the f32 accumulator with round-to-nearest-even and denormals flushed to zero (the
//! instruction ignores MXCSR). So a result differs from the exact f32 dot product of the
//! same bf16 values only by f32 summation order and by denormals, both far below bf16's own
//! rounding of the output, which the caller does once.
//!
//! The layout: `dst[m, n] = lhs[m, k] · rhs[k, n]` with `lhs` contiguous along `k` (the
//! activations or output gradient, rows read in place as bf16 pairs) and `rhs` under any
//! strides (a weight `[n, k]` read transposed for the forward, or as stored for the input
//! gradient). Each thread packs a block of `rhs` into 32-column panels of bf16 pairs, the
//! order `vdpbf16ps` reads them in, and multiplies every 12-row block of `lhs` into it.
//! Without AVX512-BF16 at run time, [`available`] is false and callers keep the widening
//! path: never a crash on another CPU.

use super::pool_gemm::{on_column_parts, Operand, SharedPtr};
use half::bf16;

/// Output columns per panel: two 16-lane registers.
const NR: usize = 32;
/// Rows of `lhs` per micro-kernel call: 12 × 2 accumulators leave registers for the panel.
const MR: usize = 12;
/// Inner (k) elements packed at a time: a panel is KC/2 × 128 B = 32 KiB, an L1's worth.
const KC: usize = 512;
/// Columns packed at a time: 8 panels, 256 KiB, within the L2 each core has.
const NC: usize = 256;
/// Rows of `lhs` multiplied into a packed block at a time: 144 × KC bf16 is 144 KiB, which
/// stays in L2 beside the packed block.
const MC: usize = 12 * MR;

/// Whether this CPU runs `vdpbf16ps`, so a bf16 base's linear maps multiply bf16 natively
/// (std caches the answer). Public as `ops::bf16_native` for benches and `reft check`.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`) in f32, `dst` row-major
/// `[m, n]`, `lhs` `[m, k]` with unit column stride, `rhs` `[k, n]` under its strides,
/// parallel over the columns of `dst` on candle's worker pool.
///
/// # Safety
/// [`available`] must be true; `dst` must hold `m * n` elements nothing else touches during
/// the call; `lhs` must span `[m, k]` with `col_stride == 1`, `rhs` `[k, n]` under its
/// strides.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn gemm_bf16(m: usize, n: usize, k: usize, dst: *mut f32, accumulate: bool, lhs: Operand<bf16>, rhs: Operand<bf16>) {
    debug_assert!(available() && lhs.col_stride == 1);
    if k == 0 {
        if !accumulate {
            // SAFETY: dst holds m * n elements (the contract).
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    let dst = SharedPtr(dst);
    on_column_parts(n, m * n * k, |c0, c1| {
        let (lhs, rhs) = (&lhs, &rhs);
        let pairs_max = KC.min(k).div_ceil(2);
        let mut packed = vec![0u32; NC.min(c1 - c0).div_ceil(NR) * NR * pairs_max];
        for cb in (c0..c1).step_by(NC) {
            let cw = NC.min(c1 - cb);
            for kb in (0..k).step_by(KC) {
                let kw = KC.min(k - kb);
                // SAFETY: the block lies inside rhs's [k, n] span (the contract).
                unsafe { pack_rhs(rhs, kb, kw, cb, cw, &mut packed) };
                let first = kb == 0 && !accumulate;
                let pairs = kw.div_ceil(2);
                // Rows in blocks of MC, so the block of lhs stays in L2 while every panel
                // of the packed block passes over it.
                for m0 in (0..m).step_by(MC) {
                    for p in 0..cw.div_ceil(NR) {
                        let panel = &packed[p * NR * pairs..(p + 1) * NR * pairs];
                        let cols = NR.min(cw - p * NR);
                        let col = cb + p * NR;
                        for r0 in (m0..m.min(m0 + MC)).step_by(MR) {
                            let rows = MR.min(m - r0);
                            // SAFETY: rows r0.., columns col..col+cols of dst are this
                            // part's; lhs rows r0..r0+rows span kb..kb+kw.
                            unsafe {
                                let a = lhs.ptr.offset(r0 as isize * lhs.row_stride + kb as isize);
                                let c = dst.at(r0 * n + col);
                                micro_kernel(rows, a, lhs.row_stride, kw, panel, c, n, cols, first);
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Pack `rhs[kb..kb+kw, cb..cb+cw]` as panels of 32 columns: for each pair of rows `(2q,
/// 2q+1)`, 32 `u32`s each holding `(rhs[2q, j], rhs[2q+1, j])` (low half first), zeros past
/// the block's edges.
///
/// # Safety
/// The block must lie inside `rhs`'s span.
#[cfg(target_arch = "x86_64")]
unsafe fn pack_rhs(rhs: &Operand<bf16>, kb: usize, kw: usize, cb: usize, cw: usize, packed: &mut [u32]) {
    let pairs = kw.div_ceil(2);
    let bits = |i: usize, j: usize| -> u32 {
        // SAFETY: callers pass (i, j) inside the block.
        unsafe { (*rhs.ptr.offset((kb + i) as isize * rhs.row_stride + (cb + j) as isize * rhs.col_stride)).to_bits() as u32 }
    };
    // Whole panels of even depth take the fast paths: no edge tests in the inner loop, and
    // reads along whichever direction is contiguous (a weight's rows or its columns).
    if kw.is_multiple_of(2) && cw.is_multiple_of(NR) {
        for p in 0..cw / NR {
            let panel = &mut packed[p * NR * pairs..(p + 1) * NR * pairs];
            if rhs.row_stride == 1 {
                // Adjacent inner elements: each pair is one u32 read, column by column.
                for j in 0..NR {
                    // SAFETY: column p*NR + j, rows 0..kw, inside the block.
                    let col = unsafe { rhs.ptr.offset((cb + p * NR + j) as isize * rhs.col_stride + kb as isize) } as *const u32;
                    for q in 0..pairs {
                        // SAFETY: rows 2q, 2q+1 < kw of this column; read unaligned.
                        panel[q * NR + j] = unsafe { col.add(q).read_unaligned() };
                    }
                }
            } else {
                for q in 0..pairs {
                    for j in 0..NR {
                        panel[q * NR + j] = bits(2 * q, p * NR + j) | (bits(2 * q + 1, p * NR + j) << 16);
                    }
                }
            }
        }
        return;
    }
    let at = |i: usize, j: usize| -> u32 {
        if i < kw && j < cw {
            // SAFETY: inside the block (the contract).
            unsafe { (*rhs.ptr.offset((kb + i) as isize * rhs.row_stride + (cb + j) as isize * rhs.col_stride)).to_bits() as u32 }
        } else {
            0
        }
    };
    for p in 0..cw.div_ceil(NR) {
        let panel = &mut packed[p * NR * pairs..(p + 1) * NR * pairs];
        for q in 0..pairs {
            for j in 0..NR {
                let col = p * NR + j;
                panel[q * NR + j] = at(2 * q, col) | (at(2 * q + 1, col) << 16);
            }
        }
    }
}

/// `c[rows, cols] (+)= a[rows, kw] · panel`, `a` bf16 rows with stride `lda`, `c` f32 rows
/// with stride `ldc`; overwrite when `first`, else accumulate.
///
/// # Safety
/// `a` spans `rows × kw`, `c` spans `rows × cols` under their strides; `rows ≤ MR`,
/// `cols ≤ NR`; `panel` holds `kw.div_ceil(2)` packed pairs of 32 columns; AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel(rows: usize, a: *const bf16, lda: isize, kw: usize, panel: &[u32], c: *mut f32, ldc: usize, cols: usize, first: bool) {
    // One monomorphised body per row count, so the accumulators are registers.
    macro_rules! dispatch {
        ($($r:literal)*) => {
            match rows {
                $($r => unsafe { tile::<$r>(a, lda, kw, panel, c, ldc, cols, first) },)*
                _ => unreachable!("rows {rows} > MR"),
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(a: *const bf16, lda: isize, kw: usize, panel: &[u32], c: *mut f32, ldc: usize, cols: usize, first: bool) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let full = kw / 2;
    let b = panel.as_ptr();
    for q in 0..full {
        // SAFETY: q < kw/2 pairs of the panel; each row holds 2q, 2q+1 < kw.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR + 16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let pair = (a.offset(r as isize * lda + 2 * q as isize) as *const u32).read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
    }
    if kw % 2 == 1 {
        // The last inner element alone: its pair's second half is zero in the panel, and
        // the row must not be read past its end.
        // SAFETY: as above, for the element kw - 1.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(full * NR) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(full * NR + 16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let lone = (*a.offset(r as isize * lda + kw as isize - 1)).to_bits() as u32;
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(lone as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
    }
    let m0: __mmask16 = if cols >= 16 { 0xffff } else { (1u32 << cols) as u16 - 1 };
    let m1: __mmask16 = if cols >= 32 { 0xffff } else if cols <= 16 { 0 } else { (1u32 << (cols - 16)) as u16 - 1 };
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of c holds `cols` elements; masked lanes are neither read nor written.
        unsafe {
            let row = c.add(r * ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if !first {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.add(16)));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row.add(16), m1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edge (a ragged last panel, a ragged row block, odd k, k across KC, columns across
    /// NC, accumulate, both orientations of rhs) equals the f64 product of the same bf16
    /// values, to f32 summation error.
    #[test]
    fn equals_the_exact_product_of_the_bf16_values() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16 (the widening path serves it)");
            return;
        }
        for &(m, n, k, acc, transposed) in &[(1usize, 1usize, 1usize, false, false), (13, 45, 7, false, true), (25, 300, 1030, true, false), (12, 32, 512, false, true), (7, 600, 513, true, true), (64, 96, 384, false, false)] {
            let a: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32(((i * 7 % 13) as f32 - 6.0) / 8.0 + (i % 5) as f32 * 1e-3)).collect();
            let r: Vec<bf16> = (0..k * n).map(|i| bf16::from_f32(((i * 5 % 11) as f32 - 5.0) / 4.0 - (i % 3) as f32 * 1e-2)).collect();
            let (rs, cs) = if transposed { (1, k as isize) } else { (n as isize, 1) };
            let get = |i: usize, j: usize| r[(i as isize * rs + j as isize * cs) as usize].to_f64();
            let mut dst: Vec<f32> = (0..m * n).map(|i| if acc { (i % 3) as f32 } else { f32::NAN }).collect();
            let before = dst.clone();
            unsafe {
                gemm_bf16(
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
                    let terms = (0..k).map(|p| a[i * k + p].to_f64() * get(p, j));
                    let scale: f64 = terms.clone().map(f64::abs).sum::<f64>() + 1.0;
                    let want = terms.sum::<f64>() + if acc { before[i * n + j] as f64 } else { 0.0 };
                    let err = (dst[i * n + j] as f64 - want).abs();
                    assert!(err <= scale * 1e-6, "m {m} n {n} k {k} acc {acc} transposed {transposed} at ({i},{j}): {} vs {want}", dst[i * n + j]);
                }
            }
        }
    }
}
