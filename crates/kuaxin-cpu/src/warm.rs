//! Keeping the pool's workers awake for the length of a program run.
//!
//! A program is a sequence of short parallel kernels with a little sequential work between
//! them. Rayon puts an idle worker to sleep after a brief spin and wakes it with a futex when
//! the next kernel splits, which costs tens of microseconds on a virtual machine: on MiniLM-L3
//! at 2 threads the fused kernels ran only 1.2x faster than at 1. For the length of a run every
//! other worker instead spins on `rayon::yield_now`, taking each kernel's tasks as soon as they
//! are split (what onnxruntime's spinning thread pool does).
use rayon::Yield;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs `f` on the current pool (the caller must be inside it) while its other workers spin.
pub fn run_warm<R>(f: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    let Some(me) = rayon::current_thread_index() else {
        return f();
    };
    if threads < 2 {
        return f();
    }
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    // One job per worker; the caller's own copy returns at once (it must never spin: a
    // worker that runs it while waiting inside `f` would wait on itself).
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() == me {
            return;
        }
        while !flag.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(Yield::Executed) {
                std::hint::spin_loop();
            }
        }
    });
    struct Release(Arc<AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    // Released on return and on unwinding alike.
    let _release = Release(done);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn work_runs_and_the_spinners_stop() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool of 3 threads");
        for _ in 0..20 {
            let sum: u64 = pool.install(|| run_warm(|| (0..100_000u64).into_par_iter().sum()));
            assert_eq!(sum, 100_000 * 99_999 / 2);
        }
        // The spinners left: a blocking job on every thread still completes.
        let n = pool.install(|| rayon::broadcast(|ctx| ctx.index()).len());
        assert_eq!(n, 3);
    }
}
