//! Keeping the pool's workers awake for the length of a program run.
//!
//! A program is a sequence of short parallel kernels with a little sequential work between
//! them. Rayon puts an idle worker to sleep after a brief spin and wakes it with a futex when
//! the next kernel splits, which costs tens of microseconds on a virtual machine: on MiniLM-L3
//! at 2 threads the fused kernels ran only 1.2x faster than at 1. For the length of a run every
//! other worker instead spins on `rayon::yield_now`, taking each kernel's tasks as soon as they
//! are split (what onnxruntime's spinning thread pool does). A spinner that left for lack of
//! work is spawned again before the next kernel ([`rearm`]).
use rayon::Yield;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One run's spinners: whether the run is over, and how many spinner jobs are out (spawned
/// and not yet returned).
struct Run {
    done: AtomicBool,
    out: AtomicUsize,
    /// The caller's worker index, whose own copy of each broadcast returns at once.
    caller: usize,
    /// Times spinners were spawned for the run.
    #[cfg(test)]
    spawns: AtomicUsize,
}

thread_local! {
    /// The run the caller on this thread is inside of, for [`rearm`].
    static CURRENT: RefCell<Option<Arc<Run>>> = const { RefCell::new(None) };
}

/// Runs `f` on the current pool (the caller must be inside it) while its other workers spin.
pub fn run_warm<R>(f: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    let Some(me) = rayon::current_thread_index() else {
        return f();
    };
    if threads < 2 {
        return f();
    }
    let run = Arc::new(Run {
        done: AtomicBool::new(false),
        out: AtomicUsize::new(0),
        caller: me,
        #[cfg(test)]
        spawns: AtomicUsize::new(0),
    });
    spawn_spinners(&run);
    // Ended and forgotten on return and on unwinding alike (a run inside `f`, which no
    // program makes, puts back the one it was inside of).
    struct Release(Option<Arc<Run>>);
    impl Drop for Release {
        fn drop(&mut self) {
            let outer = self.0.take();
            if let Some(run) = CURRENT.with(|c| c.replace(outer)) {
                run.done.store(true, Ordering::Release);
            }
        }
    }
    let _release = Release(CURRENT.with(|c| c.replace(Some(run))));
    f()
}

/// Spinners again for the run this thread is inside of, when every one it had left for lack
/// of work (see [`IDLE`]). The back end calls it before each kernel: a virtual CPU the host
/// holds up for longer than `IDLE` (the caller's, between two kernels) otherwise let the
/// other workers fall asleep for the rest of the run, and each later kernel waited for a
/// wake-up (~40 us on a KVM guest: ResNet-50 at 2 threads lost ~1.7 ms a run in a busy spell).
pub fn rearm() {
    CURRENT.with(|c| {
        if let Some(run) = c.borrow().as_ref() {
            if run.out.load(Ordering::Acquire) == 0 {
                spawn_spinners(run);
            }
        }
    });
}

/// One spinner job per worker of the current pool but the caller's.
fn spawn_spinners(run: &Arc<Run>) {
    let others = rayon::current_num_threads().saturating_sub(1);
    run.out.fetch_add(others, Ordering::AcqRel);
    #[cfg(test)]
    run.spawns.fetch_add(1, Ordering::AcqRel);
    let run = run.clone();
    // The caller's own copy returns at once (it must never spin: a worker that runs it while
    // waiting inside the run would wait on itself).
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() == run.caller {
            return;
        }
        spin(&run.done);
        run.out.fetch_sub(1, Ordering::AcqRel);
    });
}

/// How long a spinner goes on with nothing to run before it lets its worker sleep: longer
/// than the sequential work between two kernels, short against a run.
const IDLE: Duration = Duration::from_micros(200);

thread_local! {
    /// Whether this worker is inside a spinner (possibly in a task the spinner took).
    static SPINNING: Cell<bool> = const { Cell::new(false) };
}

/// Takes the pool's tasks until `done`. A worker may be handed a spinner while it waits
/// inside a task, even one its own spinner took (one run's spinner takes a task of the next
/// run, and in that task's join the next run's spinner comes up). Spinning there would hold
/// the task, which the run waits for, until the run ends: a deadlock. So a spinner started
/// inside another returns at once, and any spinner leaves after `IDLE` with nothing to run
/// (a wait it sits in then resumes).
fn spin(done: &AtomicBool) {
    if SPINNING.with(|s| s.replace(true)) {
        return;
    }
    let mut idle_since = Instant::now();
    let mut idle_steps = 0u32;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(Yield::Executed) {
            idle_steps = 0;
            continue;
        }
        std::hint::spin_loop();
        idle_steps += 1;
        // The clock read once in 64 idle steps.
        if idle_steps == 1 {
            idle_since = Instant::now();
        } else if idle_steps.is_multiple_of(64) && idle_since.elapsed() > IDLE {
            break;
        }
    }
    SPINNING.with(|s| s.set(false));
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

    /// (spinner jobs out, times spawned) for the run this thread is inside of.
    fn spinners() -> (usize, usize) {
        CURRENT.with(|c| {
            c.borrow().as_ref().map_or((0, 0), |r| {
                (
                    r.out.load(Ordering::Acquire),
                    r.spawns.load(Ordering::Acquire),
                )
            })
        })
    }

    /// Polls `cond` until it holds; false if it does not within a minute (a liveness check,
    /// not a speed limit: each wait here is for a few hundred microseconds).
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        false
    }

    #[test]
    fn spinners_that_left_for_lack_of_work_come_back_for_the_next_kernel() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool of 2 threads");
        let (outer, after) = pool.install(|| {
            let outer = run_warm(|| {
                assert_eq!(spinners(), (1, 1), "one spinner, the other worker's");
                // The caller held up past IDLE (a preempted virtual CPU): the spinner leaves.
                assert!(eventually(|| spinners().0 == 0), "the idle spinner left");
                rearm();
                assert_eq!(spinners().1, 2, "rearm spawned the spinners again");
                // (Whether a second rearm spawns depends on whether the new spinner has left
                // again, which a test thread held up by the machine cannot know.)
                let sum: u64 = (0..100_000u64).into_par_iter().sum();
                assert_eq!(sum, 100_000 * 99_999 / 2);
                CURRENT.with(|c| c.borrow().clone()).expect("inside a run")
            });
            // The run is forgotten when it ends: a rearm after it finds nothing to spawn for.
            rearm();
            (outer, spinners())
        });
        assert_eq!(after, (0, 0));
        assert!(outer.done.load(Ordering::Acquire), "the run ended");
        assert!(
            eventually(|| outer.out.load(Ordering::Acquire) == 0),
            "the spinners stopped with the run"
        );
    }

    /// Runs back to back, each of nested parallel work (joins inside stolen tasks, as a
    /// convolution's blocks are), on a preempted pool: a worker still spinning for one run
    /// may take a task of the next and, inside that task's join, be handed the next run's
    /// spinner, which must not hold the task until the run ends (see `spin`). A smoke test:
    /// it has not caught that race with the old spinner here; what did, every time, was
    /// `kuaxin bench squeezenet.onnx --threads 2` beside two busy processes (hung 4 of 4
    /// times before the fix, none of 5 after).
    #[test]
    fn back_to_back_runs_of_nested_work_finish() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool of 2 threads");
        // Two busy threads besides the pool's two: workers get preempted mid-task, as on a
        // shared machine, which is what opens the window.
        let finished = Arc::new(AtomicBool::new(false));
        for _ in 0..2 {
            let finished = finished.clone();
            std::thread::spawn(move || {
                while !finished.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for run in 0..3000u64 {
                let sum: u64 = pool.install(|| {
                    run_warm(|| {
                        (0..8u64)
                            .into_par_iter()
                            .map(|i| (0..64u64).into_par_iter().map(|j| i * j + run).sum::<u64>())
                            .sum()
                    })
                });
                let want: u64 = (0..8u64)
                    .map(|i| (0..64).map(|j| i * j + run).sum::<u64>())
                    .sum();
                assert_eq!(sum, want);
            }
            let _ = tx.send(());
        });
        // A liveness check, not a speed limit: the runs take about a second; deadlocked, they
        // never end.
        let ended = rx.recv_timeout(std::time::Duration::from_secs(120)).is_ok();
        finished.store(true, Ordering::Relaxed);
        assert!(
            ended,
            "runs of nested parallel work under run_warm deadlocked"
        );
    }
}
