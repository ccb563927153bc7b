//! Elementwise loops that go parallel (on the current rayon pool) for large inputs.
use rayon::prelude::*;

/// Smallest amount of work (elements) worth a rayon task.
pub const MIN_PAR: usize = 1 << 16;

pub fn map<A, O, F>(a: &[A], f: F) -> Vec<O>
where
    A: Copy + Sync,
    O: Send,
    F: Fn(A) -> O + Sync + Send,
{
    if a.len() >= MIN_PAR && rayon::current_num_threads() > 1 {
        a.par_iter().with_min_len(MIN_PAR).map(|&x| f(x)).collect()
    } else {
        a.iter().map(|&x| f(x)).collect()
    }
}

pub fn zip<A, B, O, F>(a: &[A], b: &[B], f: F) -> Vec<O>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Send,
    F: Fn(A, B) -> O + Sync + Send,
{
    debug_assert_eq!(a.len(), b.len());
    if a.len() >= MIN_PAR && rayon::current_num_threads() > 1 {
        a.par_iter()
            .zip(b.par_iter())
            .with_min_len(MIN_PAR)
            .map(|(&x, &y)| f(x, y))
            .collect()
    } else {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    }
}

pub fn zip3<A, B, C, O, F>(a: &[A], b: &[B], c: &[C], f: F) -> Vec<O>
where
    A: Copy + Sync,
    B: Copy + Sync,
    C: Copy + Sync,
    O: Send,
    F: Fn(A, B, C) -> O + Sync + Send,
{
    debug_assert!(a.len() == b.len() && b.len() == c.len());
    if a.len() >= MIN_PAR && rayon::current_num_threads() > 1 {
        a.par_iter()
            .zip(b.par_iter())
            .zip(c.par_iter())
            .with_min_len(MIN_PAR)
            .map(|((&x, &y), &z)| f(x, y, z))
            .collect()
    } else {
        a.iter()
            .zip(b)
            .zip(c)
            .map(|((&x, &y), &z)| f(x, y, z))
            .collect()
    }
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
