//! Elementwise loops that go parallel (on the current rayon pool) for large inputs.
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Smallest amount of work (elements) worth a rayon task.
pub const MIN_PAR: usize = 1 << 16;

/// Tasks per thread where work splits into parts: a thread that the machine holds up (a
/// shared host preempts a virtual CPU for milliseconds) leaves its later parts to the others
/// instead of every kernel waiting for its one share. MiniLM-L3's products in four parts per
/// thread instead of one, 2 threads on a busy Zen 3: run medians 15.6 against 17.6 ms in one
/// set of alternating runs, 19.2 against 19.1 in another (the host's noise is as large); the
/// split costs nothing measurable at 1 or 2 threads.
pub const TASKS_PER_THREAD: usize = 4;

/// `part` over the ranges of `0..units` that `threads` share out, [`TASKS_PER_THREAD`] per
/// thread as far as there are units, their lengths at most one apart; all of it as one range
/// on the calling thread when `threads` is 1. (Ranges of `ceil(units / tasks)` left the
/// last ones short or missing: 28 units went as seven ranges of four, and one of two threads
/// had to take 16 of them. Alone, a 1 x 1 convolution of 28 such units at 56 x 56 was
/// within the noise either way, 0.28-0.30 ms at 2 threads on a Zen 5 host.)
pub fn for_ranges(units: usize, threads: usize, part: impl Fn(std::ops::Range<usize>) + Sync) {
    if threads > 1 && units > 1 {
        let tasks = units.min(threads * TASKS_PER_THREAD);
        (0..tasks)
            .into_par_iter()
            .for_each(|t| part(range_of(t, tasks, units)));
    } else {
        part(0..units);
    }
}

/// Range `t` of `0..units` cut into `tasks` ranges whose lengths are at most one apart, the
/// longer ones spread out: the first `k` ranges hold `k * units / tasks` units, so each half
/// of the tasks (how rayon splits them between threads) holds half of the units. (With the
/// longer ranges first, 28 units in eight ranges were four of four then four of three: one
/// thread of two had 16 units to the other's 12, and stealing a whole range back leaves it
/// still uneven: ResNet-50's kernels of 28 and 14 units, traced at 2 threads.)
fn range_of(t: usize, tasks: usize, units: usize) -> std::ops::Range<usize> {
    let start = |t: usize| t * units / tasks;
    start(t)..start(t + 1)
}

/// `f` over every element; parallel for large inputs, each piece compiled for the CPU's
/// vector extension ([`crate::simd`]).
pub fn map<A, O, F>(a: &[A], f: F) -> Vec<O>
where
    A: Copy + Sync,
    O: Send,
    F: Fn(A) -> O + Sync + Send,
{
    build(
        a.len(),
        #[inline(always)]
        |start, out| {
            let a = &a[start..start + out.len()];
            for (o, &x) in out.iter_mut().zip(a) {
                o.write(f(x));
            }
        },
    )
}

pub fn zip<A, B, O, F>(a: &[A], b: &[B], f: F) -> Vec<O>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Send,
    F: Fn(A, B) -> O + Sync + Send,
{
    assert_eq!(a.len(), b.len(), "par::zip: operand lengths differ");
    build(
        a.len(),
        #[inline(always)]
        |start, out| {
            let end = start + out.len();
            for ((o, &x), &y) in out.iter_mut().zip(&a[start..end]).zip(&b[start..end]) {
                o.write(f(x, y));
            }
        },
    )
}

pub fn zip3<A, B, C, O, F>(a: &[A], b: &[B], c: &[C], f: F) -> Vec<O>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    O: Send,
    F: Fn(A, B, C) -> O + Sync + Send,
{
    assert!(
        a.len() == b.len() && b.len() == c.len(),
        "par::zip3: operand lengths differ"
    );
    build(
        a.len(),
        #[inline(always)]
        |start, out| {
            let end = start + out.len();
            let abc = a[start..end].iter().zip(&b[start..end]).zip(&c[start..end]);
            for (o, ((&x, &y), &z)) in out.iter_mut().zip(abc) {
                o.write(f(x, y, z));
            }
        },
    )
}

/// Initialises `dst` with `src` (of the same length), for the pieces of [`build`].
#[inline(always)]
pub fn write_from<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        d.write(x);
    }
}

/// `x` as the values it holds.
///
/// # Safety
/// Every element of `x` is initialised.
pub unsafe fn assume_init_mut<T>(x: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the caller vouches for the values.
    unsafe { &mut *(x as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A vector of `len` elements whose every element `fill` writes (it is given them
/// uninitialised), or `fill`'s error.
///
/// # Safety
/// When `fill` returns `Ok`, it wrote every element of its slice.
pub unsafe fn try_filled<T, E>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]) -> std::result::Result<(), E>,
) -> std::result::Result<Vec<T>, E> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len])?;
    // SAFETY: the caller's contract.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// [`try_filled`] for a `fill` that cannot fail.
///
/// # Safety
/// `fill` writes every element of its slice.
pub unsafe fn filled<T>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let fill = |out: &mut [MaybeUninit<T>]| -> std::result::Result<(), std::convert::Infallible> {
        fill(out);
        Ok(())
    };
    // SAFETY: the caller's contract.
    let Ok(out) = unsafe { try_filled(len, fill) };
    out
}

/// `n` elements preset to `v`, for a fill function under test (an element it leaves
/// unwritten keeps `v`, which [`values_of`] then shows).
#[cfg(test)]
pub fn preset<T: Copy>(v: T, n: usize) -> Vec<MaybeUninit<T>> {
    vec![MaybeUninit::new(v); n]
}

/// The values of a [`preset`] vector.
#[cfg(test)]
pub fn values_of<T: Copy>(c: &[MaybeUninit<T>]) -> Vec<T> {
    // SAFETY: `preset` initialised every element, and fills write only values.
    c.iter().map(|v| unsafe { v.assume_init() }).collect()
}

/// Checks a [`build`] fill function: every piece, starting and ending anywhere, holds `want`'s
/// elements there (each element is preset to `preset` first, so a piece left unwritten shows).
#[cfg(test)]
pub fn check_pieces<T: Copy + PartialEq + std::fmt::Debug>(
    want: &[T],
    preset: T,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]),
) {
    for start in 0..want.len() {
        for end in start..=want.len() {
            let mut out = vec![MaybeUninit::new(preset); end - start];
            fill(start, &mut out);
            // SAFETY: every element was initialised (to `preset`, then by `fill`).
            let got: Vec<T> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(got, want[start..end], "elements {start}..{end}");
        }
    }
}

/// A vector of `len` elements, written piece by piece by `fill(start, piece)`, which must
/// write every element of its piece; pieces of `MIN_PAR` run in parallel.
#[inline(always)]
pub fn build<O, F>(len: usize, fill: F) -> Vec<O>
where
    O: Send,
    F: Fn(usize, &mut [MaybeUninit<O>]) + Sync + Send,
{
    let mut out: Vec<O> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    let piece = |(i, p): (usize, &mut [MaybeUninit<O>])| {
        crate::simd::vectorized(
            #[inline(always)]
            || fill(i * MIN_PAR, p),
        )
    };
    if len >= 2 * MIN_PAR && rayon::current_num_threads() > 1 {
        spare.par_chunks_mut(MIN_PAR).enumerate().for_each(piece);
    } else {
        spare.chunks_mut(MIN_PAR).enumerate().for_each(piece);
    }
    // SAFETY: `fill` wrote every element of every piece, and the pieces cover `0..len`.
    unsafe { out.set_len(len) };
    out
}

/// Runs `f(chunk_index, chunk)` over `out` split into chunks of `chunk` elements, in parallel
/// when there is at least `MIN_PAR` work in total (`work_per_chunk` elements each).
pub fn for_chunks<T, F>(out: &mut [T], chunk: usize, work_per_chunk: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    let chunk = chunk.max(1);
    let n_chunks = out.len().div_ceil(chunk);
    let total = n_chunks.saturating_mul(work_per_chunk.max(1));
    if total >= MIN_PAR && n_chunks > 1 && rayon::current_num_threads() > 1 {
        let min_len = (MIN_PAR / work_per_chunk.max(1)).max(1);
        out.par_chunks_mut(chunk)
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ranges_cover_the_units_once_in_lengths_at_most_one_apart() {
        for units in 1..60 {
            for tasks in 1..=units.min(12) {
                let ranges: Vec<_> = (0..tasks).map(|t| range_of(t, tasks, units)).collect();
                let mut next = 0;
                for r in &ranges {
                    assert_eq!(r.start, next, "{units} units in {tasks}: {ranges:?}");
                    next = r.end;
                }
                assert_eq!(next, units, "{units} units in {tasks}: {ranges:?}");
                let lens = ranges.iter().map(|r| r.len());
                let (lo, hi) = (lens.clone().min(), lens.max());
                assert!(
                    hi.zip(lo).is_some_and(|(hi, lo)| hi - lo <= 1 && lo >= 1),
                    "{units} units in {tasks}: {ranges:?}"
                );
                // Rayon splits an even number of tasks in halves, one a thread of two: the
                // halves hold units at most one apart.
                if tasks % 2 == 0 {
                    let first: usize = ranges[..tasks / 2].iter().map(|r| r.len()).sum();
                    assert!(
                        first.abs_diff(units - first) <= 1,
                        "{units} units in {tasks}: halves of {first} and {}",
                        units - first
                    );
                }
            }
        }
    }

    #[test]
    fn every_unit_runs_once_on_any_thread_count() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool of two threads");
        for threads in [1, 2, 3] {
            for units in [0, 1, 7, 28, 29] {
                let runs: Vec<AtomicUsize> = (0..units).map(|_| AtomicUsize::new(0)).collect();
                pool.install(|| {
                    for_ranges(units, threads, |r| {
                        r.for_each(|u| {
                            runs[u].fetch_add(1, Ordering::Relaxed);
                        })
                    })
                });
                let counts: Vec<usize> = runs.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                assert!(
                    counts.iter().all(|&c| c == 1),
                    "{units} units on {threads} threads ran {counts:?} times"
                );
            }
        }
    }
}
