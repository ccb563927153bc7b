//! The machine's memory bandwidth, measured in the same run as a benchmark: a large parallel
//! memcpy, counting bytes read plus bytes written.
use rayon::prelude::*;
use std::time::Instant;

/// Best of `rounds` parallel copies of `bytes`; returns GB/s of traffic (read + write).
pub fn memcpy_gbps(bytes: usize, rounds: usize) -> f64 {
    let n = bytes / 4;
    let src: Vec<f32> = (0..n).into_par_iter().map(|i| i as f32).collect();
    let mut dst = vec![0f32; n];
    let chunk = (n / (rayon::current_num_threads() * 8)).max(1 << 16);
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    (2 * n * 4) as f64 / best / 1e9
}
