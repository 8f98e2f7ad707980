//! Keeps a pool's other workers polling for work while inferences run.
//!
//! Why: a rayon worker that finds no work yields 32 times (tens of µs) and then parks on a
//! futex, and waking it again is slow on these VMs: `perf sched latency` over ResNet-50 at 2
//! threads measured 0.1–0.27 ms on average from wake-up to running, several times per
//! inference (its start, and any parallel loop after an uneven one). A one-conv model at 2
//! threads ran 0.57–0.60 ms per inference with workers that kept polling and 0.65–0.74 ms
//! without. ONNX Runtime's pool spins between its parallel sections for the same reason.
//!
//! So when an inference starts, every other worker of its pool runs a *keeper*: a broadcast
//! job that keeps asking rayon for work ([`rayon::yield_now`] steals and runs pending jobs,
//! the next inference's included) and leaves after [`IDLE_LIMIT`] without any, so a long
//! serial stretch or the end of a run does not keep a core busy for long. The keepers change
//! only which thread finds a job when; every kernel's split and order of sums stay the same, so
//! results do not change.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Longest a keeper polls without finding work before it hands its worker back to rayon's
/// parking: far longer than the gaps between a model's parallel loops (µs), short enough that
/// a finished run leaves no core busy for a noticeable time.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_millis(2);

thread_local! {
    /// Whether this thread is inside a keeper (a keeper's jobs may reach another keeper's
    /// broadcast, which must then return at once instead of nesting).
    static POLLING: Cell<bool> = const { Cell::new(false) };
}

/// Starts a keeper on every worker of the current rayon pool but this one (the one about to
/// run the inference). Outside a pool, or with one thread, does nothing.
pub(crate) fn warm_other_workers() {
    let Some(me) = rayon::current_thread_index() else {
        return;
    };
    if rayon::current_num_threads() <= 1 {
        return;
    }
    rayon::spawn_broadcast(move |ctx| {
        // This worker may meet its own copy while it waits inside the inference: a keeper
        // there would hold it past the end of what it waits for.
        if ctx.index() != me {
            keep_polling();
        }
    });
}

/// Why a keeper left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeeperExit {
    /// [`IDLE_LIMIT`] passed without a job.
    Idle,
    /// This thread already runs a keeper further up its stack.
    Nested,
    /// Not on a rayon worker (nothing to poll).
    NoPool,
}

/// A keeper: runs whatever job is pending, else spins briefly, until [`IDLE_LIMIT`] passes
/// without work.
fn keep_polling() -> KeeperExit {
    if POLLING.get() {
        return KeeperExit::Nested;
    }
    POLLING.set(true);
    let _reset = ResetOnDrop;
    let mut idle_since = Instant::now();
    loop {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = Instant::now(),
            Some(rayon::Yield::Idle) => {
                if idle_since.elapsed() > IDLE_LIMIT {
                    return KeeperExit::Idle;
                }
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
            None => return KeeperExit::NoPool,
        }
    }
}

/// Clears [`POLLING`] when its keeper leaves, a panic in a job it ran included.
struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        POLLING.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("test pool")
    }

    #[test]
    fn parallel_loops_after_it_give_the_same_results_on_every_worker() {
        let pool = pool(2);
        let (sum, workers) = pool.install(|| {
            warm_other_workers();
            let mut workers = std::collections::BTreeSet::new();
            let mut sum = 0u64;
            for round in 0..200u64 {
                let part: Vec<(u64, usize)> = (0..64u64)
                    .into_par_iter()
                    .map(|i| {
                        // Enough work per item that both workers take some.
                        let mut v = i + round;
                        for _ in 0..2000 {
                            v = std::hint::black_box(v.wrapping_mul(6364136223846793005) + 1);
                        }
                        (
                            i + round,
                            rayon::current_thread_index().unwrap_or(usize::MAX),
                        )
                    })
                    .collect();
                sum += part.iter().map(|p| p.0).sum::<u64>();
                workers.extend(part.iter().map(|p| p.1));
            }
            (sum, workers)
        });
        let expected: u64 = (0..200u64)
            .map(|r| (0..64u64).map(|i| i + r).sum::<u64>())
            .sum();
        assert_eq!(sum, expected);
        assert_eq!(workers.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn keepers_leave_after_the_idle_limit_do_not_nest_and_need_a_pool() {
        let pool = pool(2);
        let start = Instant::now();
        let (outer, inner) = pool.install(|| {
            // The inner keeper runs as the outer keeper's job: it must return at once.
            let (tx, rx) = std::sync::mpsc::channel();
            rayon::spawn(move || tx.send(keep_polling()).expect("receiver"));
            let outer = keep_polling();
            (outer, rx.recv().expect("inner keeper"))
        });
        assert_eq!(outer, KeeperExit::Idle);
        assert!(start.elapsed() >= IDLE_LIMIT);
        // The spawned job ran on the other worker (a keeper of its own) or inside the outer one.
        assert!(matches!(inner, KeeperExit::Idle | KeeperExit::Nested));
        assert_eq!(keep_polling(), KeeperExit::NoPool);
    }

    #[test]
    fn a_pool_of_one_or_no_pool_starts_nothing() {
        warm_other_workers();
        pool(1).install(warm_other_workers);
        let pool = pool(2);
        let n = pool.install(|| {
            warm_other_workers();
            (0..1000).into_par_iter().count()
        });
        assert_eq!(n, 1000);
    }
}
