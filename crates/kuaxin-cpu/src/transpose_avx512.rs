//! A 16 x 16 tile of 32-bit elements transposed in AVX-512 registers: sixteen loads, four
//! rounds of sixteen shuffles, sixteen stores. Element by element, a map read back from the
//! blocked layout (`[.., H * W, 16]` as `[.., 16, H * W]`) took about a cycle per element.
//! The shuffles move bits, so any 32-bit type (f32 with its NaN payloads, i32, u32) comes out
//! as it went in.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`tile16`] runs on this CPU.
pub fn available() -> bool {
    crate::panels::available()
}

/// `out[r * out_stride + c] = src[c * src_step + r]` for `r` and `c` in `0..16`.
///
/// # Safety
/// The CPU has AVX-512F; the sixteen runs of sixteen elements from `src + c * src_step` are
/// readable, the sixteen from `out + r * out_stride` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn tile16(src: *const u32, src_step: isize, out: *mut u32, out_stride: usize) {
    // SAFETY (loads and stores): the caller's contract.
    let mut a: [__m512; 16] = std::array::from_fn(|c| unsafe {
        _mm512_loadu_ps(src.offset(c as isize * src_step).cast())
    });
    let mut b = [_mm512_setzero_ps(); 16];
    // Pairs of rows: their elements interleaved one at a time.
    for i in 0..8 {
        b[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
    }
    // Then two at a time, across pairs.
    for i in 0..4 {
        for j in 0..2 {
            let (x, y) = (
                _mm512_castps_pd(b[4 * i + j]),
                _mm512_castps_pd(b[4 * i + j + 2]),
            );
            a[4 * i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
            a[4 * i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
        }
    }
    // Then 128-bit lanes, across groups of four rows, and across groups of eight.
    for h in 0..2 {
        for j in 0..4 {
            let (x, y) = (a[8 * h + j], a[8 * h + j + 4]);
            b[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(x, y);
            b[8 * h + j + 4] = _mm512_shuffle_f32x4::<0xdd>(x, y);
        }
    }
    for j in 0..8 {
        a[j] = _mm512_shuffle_f32x4::<0x88>(b[j], b[j + 8]);
        a[j + 8] = _mm512_shuffle_f32x4::<0xdd>(b[j], b[j + 8]);
    }
    for (r, v) in a.iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm512_storeu_ps(out.add(r * out_stride).cast(), *v) };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn a_tile_comes_out_transposed_bit_for_bit() {
        if !available() {
            eprintln!("skipped: the CPU has no AVX-512");
            return;
        }
        // Rows 19 elements apart, read from an offset; the output 21 wide; NaN payloads and
        // negative zero among the values.
        let (step, stride) = (19usize, 21usize);
        let src: Vec<u32> = (0..3 + 16 * step as u32)
            .map(|i| match i % 7 {
                0 => 0x7fc0_0000 | i,
                1 => 0x8000_0000,
                _ => i.wrapping_mul(2_654_435_761),
            })
            .collect();
        let mut out = vec![u32::MAX; 16 * stride];
        // SAFETY: AVX-512 is there; the reads stay in `src`, the writes in `out`.
        unsafe { tile16(src[3..].as_ptr(), step as isize, out.as_mut_ptr(), stride) };
        for r in 0..16 {
            for c in 0..16 {
                assert_eq!(
                    out[r * stride + c],
                    src[3 + c * step + r],
                    "row {r}, column {c}"
                );
            }
            assert!(out[r * stride + 16..(r + 1) * stride]
                .iter()
                .all(|&v| v == u32::MAX));
        }
    }
}
