//! The AVX-512 register tile of [`crate::conv_direct`]: fourteen output positions by 32
//! output channels, `C^T[14 x 32] = X[14 x k] * W^T[k x 32]`, the input read through the same
//! offset tables as [`crate::tile_direct`]'s AVX2 tile ([`DirectTile`]). Each step loads two
//! vectors of a weight panel (32 channels, packed once: the panels of [`crate::panels`]) and
//! broadcasts the fourteen positions' input values into them: 28 independent fused
//! multiply-adds, 28 accumulators and two weight vectors in 30 of the 32 vector registers,
//! sixteen loads (fourteen broadcasts, two weight vectors) for the 28.
//!
//! Fourteen positions fit ResNet-50's maps: 7 x 7 in four tiles (49 of 56), 14 x 14 and
//! 28 x 28 and 56 x 56 in whole tiles.
//!
//! With `accumulate` the sums start from C's values, so a product run in blocks of the depth
//! is the same chain of roundings as one run over all of it.
#[cfg(target_arch = "x86_64")]
use crate::tile::finish;
#[cfg(target_arch = "x86_64")]
use crate::tile_direct::DirectTile;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Positions of a tile.
pub const MR: usize = 14;
/// Channels of a tile (two 16-lane vectors; the weight's panel width).
pub const NR: usize = 32;

/// Runs the tile for `rows` (1..=MR) positions over `k` steps.
///
/// # Safety
/// [`crate::panels::available`] is true (AVX-512); otherwise as for
/// [`crate::tile_direct::run`], with panels of 32 channels and `cols` up to 32.
#[cfg(target_arch = "x86_64")]
pub unsafe fn run(rows: usize, k: usize, t: &DirectTile) {
    // SAFETY: the caller's contract.
    let o: &[usize] = unsafe { std::slice::from_raw_parts(t.origins, rows) };
    // SAFETY: the caller's contract, for the row count each arm names; the runs each arm
    // names are the origins' (`runs`).
    unsafe {
        macro_rules! split_at {
            ($r:literal, $dx:literal, $split:expr) => {
                match $split {
                    1 => tile::<$r, $dx, 1>(k, t),
                    2 => tile::<$r, $dx, 2>(k, t),
                    3 => tile::<$r, $dx, 3>(k, t),
                    4 => tile::<$r, $dx, 4>(k, t),
                    5 => tile::<$r, $dx, 5>(k, t),
                    6 => tile::<$r, $dx, 6>(k, t),
                    7 => tile::<$r, $dx, 7>(k, t),
                    8 => tile::<$r, $dx, 8>(k, t),
                    9 => tile::<$r, $dx, 9>(k, t),
                    10 => tile::<$r, $dx, 10>(k, t),
                    11 => tile::<$r, $dx, 11>(k, t),
                    12 => tile::<$r, $dx, 12>(k, t),
                    13 => tile::<$r, $dx, 13>(k, t),
                    _ => tile::<$r, $dx, $r>(k, t),
                }
            };
        }
        match (rows, runs(o, 1), runs(o, 2)) {
            (MR, Some(split), _) => split_at!(14, 1, split),
            (MR, None, Some(split)) => split_at!(14, 2, split),
            (7, Some(7), _) => tile::<7, 1, 7>(k, t),
            (7, None, Some(7)) => tile::<7, 2, 7>(k, t),
            (1, ..) => tile::<1, 0, 0>(k, t),
            (2, ..) => tile::<2, 0, 0>(k, t),
            (3, ..) => tile::<3, 0, 0>(k, t),
            (4, ..) => tile::<4, 0, 0>(k, t),
            (5, ..) => tile::<5, 0, 0>(k, t),
            (6, ..) => tile::<6, 0, 0>(k, t),
            (7, ..) => tile::<7, 0, 0>(k, t),
            (8, ..) => tile::<8, 0, 0>(k, t),
            (9, ..) => tile::<9, 0, 0>(k, t),
            (10, ..) => tile::<10, 0, 0>(k, t),
            (11, ..) => tile::<11, 0, 0>(k, t),
            (12, ..) => tile::<12, 0, 0>(k, t),
            (13, ..) => tile::<13, 0, 0>(k, t),
            _ => tile::<MR, 0, 0>(k, t),
        }
    }
}

/// Where `o` splits into two runs of origins each `dx` apart: the first position of the
/// second run (`o.len()` for one run), or `None` when they are not two such runs. A tile of
/// a map at least 13 positions wide crosses at most one row boundary, so it is two runs
/// (SqueezeNet's 3 x 3 layers at 55 x 55 and 27 x 27, its stem at 111 x 111).
fn runs(o: &[usize], dx: usize) -> Option<usize> {
    let spaced = |o: &[usize]| o.iter().enumerate().all(|(r, &v)| v == o[0] + r * dx);
    let split = (1..o.len())
        .find(|&r| o[r] != o[0] + r * dx)
        .unwrap_or(o.len());
    spaced(&o[split..]).then_some(split)
}

/// One step of the depth: `acc[r] += x[r][step] * b[..32]`.
///
/// # Safety
/// The CPU has AVX-512F; every `x[r] + step` and 32 floats from `b` are valid to read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn step<const R: usize>(
    acc: &mut [[__m512; 2]; R],
    x: &[*const f32; R],
    step: usize,
    b: *const f32,
) {
    // SAFETY: the contract above.
    unsafe {
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (acc, x) in acc.iter_mut().zip(x) {
            let v = _mm512_set1_ps(*x.add(step));
            acc[0] = _mm512_fmadd_ps(v, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(v, b1, acc[1]);
        }
    }
}

/// One step of the depth for positions in two runs, each `DX` elements apart: positions
/// below `SPLIT` from `x0`, the rest from `x1`: `acc[r] += x0[r DX] * b[..32]` and so on.
/// Two pointers for all the positions, their distances immediates: with a pointer per
/// position (fourteen, and the loop's own) LLVM kept five of them on the stack, reloaded
/// every step, and ResNet-50's 3 x 3 layers at 14 x 14 to 56 x 56 took 15% longer.
///
/// # Safety
/// As for [`step`], for `x0 + r DX` (r < `SPLIT`) and `x1 + (r - SPLIT) DX`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn step_runs<const R: usize, const DX: usize, const SPLIT: usize>(
    acc: &mut [[__m512; 2]; R],
    (x0, x1): (*const f32, *const f32),
    b: *const f32,
) {
    // SAFETY: the contract above.
    unsafe {
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = if r < SPLIT {
                x0.add(r * DX)
            } else {
                x1.add((r - SPLIT) * DX)
            };
            let v = _mm512_set1_ps(*x);
            acc[0] = _mm512_fmadd_ps(v, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(v, b1, acc[1]);
        }
    }
}

/// Asks for the input of a step `AHEAD` steps on to be brought into L1: the positions' first
/// and last elements of each run. A 1 x 1 layer's steps are its input channels, a plane
/// apart: the hardware prefetchers do not follow hundreds of such streams, and ResNet-50's
/// 1 x 1 layers at 56 x 56 went from 1.34-1.49 to 1.00 ms when the tile asked.
///
/// # Safety
/// None needed to prefetch (a hint; it never faults); `steps + s` is valid to read.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_step<const R: usize, const DX: usize, const SPLIT: usize>(
    (x0, x1): (*const f32, *const f32),
    step: usize,
) {
    let last = |n: usize| (n.max(1) - 1) * DX;
    for (x, n) in [(x0, SPLIT), (x1, R - SPLIT)] {
        if n > 0 {
            let p = x.wrapping_add(step);
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(last(n)) as *const i8);
        }
    }
}

/// Steps ahead of the one multiplied that [`prefetch_step`] asks for.
const AHEAD: usize = 16;

/// The tile for `R` positions; `DX` > 0 when their origins are two runs each `DX` elements
/// apart, split at `SPLIT` (`R` for one run; then read through two pointers,
/// [`step_runs`]), 0 for any origins.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
unsafe fn tile<const R: usize, const DX: usize, const SPLIT: usize>(k: usize, t: &DirectTile) {
    let all = crate::tile::mask(t.cols);
    let (lo, hi) = (all as u16, (all >> 16) as u16);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY (every access below): within the operand windows the caller vouches for; masked
    // loads and stores touch only the first `cols` channels.
    unsafe {
        if t.accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.ldc);
                *acc = [
                    _mm512_maskz_loadu_ps(lo, c),
                    _mm512_maskz_loadu_ps(hi, c.add(16)),
                ];
            }
        }
        let mut b = t.b;
        let mut s = 0;
        if DX > 0 {
            let x0 = t.x.add(*t.origins);
            // Past the last position when one run (never read then).
            let x1 = t.x.wrapping_add(*t.origins.add(SPLIT.min(R - 1)));
            let at = |s: usize| (x0.add(*t.steps.add(s)), x1.wrapping_add(*t.steps.add(s)));
            while s + 1 < k {
                if s + AHEAD + 1 < k {
                    prefetch_step::<R, DX, SPLIT>((x0, x1), *t.steps.add(s + AHEAD));
                    prefetch_step::<R, DX, SPLIT>((x0, x1), *t.steps.add(s + AHEAD + 1));
                }
                step_runs::<R, DX, SPLIT>(&mut acc, at(s), b);
                step_runs::<R, DX, SPLIT>(&mut acc, at(s + 1), b.add(NR));
                b = b.add(2 * NR);
                s += 2;
            }
            if s < k {
                step_runs::<R, DX, SPLIT>(&mut acc, at(s), b);
            }
        } else {
            let x: [*const f32; R] = std::array::from_fn(|r| t.x.add(*t.origins.add(r)));
            while s + 1 < k {
                step(&mut acc, &x, *t.steps.add(s), b);
                step(&mut acc, &x, *t.steps.add(s + 1), b.add(NR));
                b = b.add(2 * NR);
                s += 2;
            }
            if s < k {
                step(&mut acc, &x, *t.steps.add(s), b);
            }
        }
        for (r, [mut v0, mut v1]) in acc.into_iter().enumerate() {
            if let Some(f) = &t.finish {
                (v0, v1) = finish(f, (lo, hi), (v0, v1), r * t.ldc);
            }
            let c = t.c.add(r * t.ldc);
            _mm512_mask_storeu_ps(c, lo, v0);
            _mm512_mask_storeu_ps(c.add(16), hi, v1);
        }
    }
}
