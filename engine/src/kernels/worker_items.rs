//! Hands a kernel's work items to the pool's workers with affinity: worker `w` always uses
//! scratch slot `w` and first takes the `w`-th contiguous share of the items, then helps
//! finish the others' shares.
//!
//! Why: with items handed out by one shared counter and slots by whichever thread picks up a
//! chunk, a worker's packing buffer and its share of each output move between the cores from
//! one call to the next, and on this host a core writing 512 KiB last written by the other
//! core took 1.4× the time of rewriting its own lines (reading them 1.1×; a C microbenchmark
//! with pinned threads). Contiguous shares keep what a worker wrote for one conv (positions in
//! the same order) where the next conv's share of the same worker reads it, as ONNX Runtime's
//! static partition does; helping with the other shares afterwards keeps a descheduled worker
//! from holding the call up for its whole share. Measured (binary against binary, 8
//! alternating runs of `engine profile -t 2`, fastest of each node): Inception-v3 0.976× the
//! run time (node sums 0.978×, its 7×1 / 1×7 and 1×1 convs 0.82–1.03× each), ResNet-50 node
//! sums 0.974×, ResNeXt-50 0.974× (its grouped convs alone 0.99–1.07× in two sittings:
//! noise). At 1 thread nothing changes (one worker runs every item in order).
//!
//! Which worker computes an item never changes its result: items write disjoint outputs and
//! each sums in a fixed order.

use super::gemm::SendPtr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Most workers with their own share and slot (one bit each in the claim mask); larger pools
/// fall back to one shared counter.
const MAX_SHARES: usize = 64;

/// Runs `run(item, slot)` once for every `item < items` on the current rayon pool, each call
/// with a scratch slot (`slot_len` floats of `scratch`, possibly none) no other call uses at
/// the same time.
/// The worker with pool index `w` uses slot and share `w` whenever `w` is below the worker
/// count (always, when the scratch has a slot per thread); with fewer slots than threads, or
/// outside a pool, fewer workers run. `run` must not start parallel work of its own (a nested
/// wait could start another worker's task on this thread while it holds its slot).
pub(crate) fn for_each_item<F>(items: usize, scratch: &mut [f32], slot_len: usize, run: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    for_each_item_init(items, scratch, slot_len, |_| {}, run)
}

/// [`for_each_item`], calling `init(slot)` once in each task that runs, before its first item
/// (a kernel that zeroes the padding of its slot once per call).
pub(crate) fn for_each_item_init<I, F>(
    items: usize,
    scratch: &mut [f32],
    slot_len: usize,
    init: I,
    run: F,
) where
    I: Fn(&mut [f32]) + Sync,
    F: Fn(usize, &mut [f32]) + Sync,
{
    for_each_item_state(items, scratch, slot_len, init, |i, slot, _| run(i, slot))
}

/// [`for_each_item_init`] with a state per task: `init(slot)` makes it before the task's
/// first item and every `run(item, slot, state)` of the task gets it (a kernel that keeps
/// track of what its slot holds from one item to the next).
pub(crate) fn for_each_item_state<S, I, F>(
    items: usize,
    scratch: &mut [f32],
    slot_len: usize,
    init: I,
    run: F,
) where
    I: Fn(&mut [f32]) -> S + Sync,
    F: Fn(usize, &mut [f32], &mut S) + Sync,
{
    use rayon::prelude::*;
    let threads = rayon::current_num_threads().max(1);
    let slots = scratch.len().checked_div(slot_len).unwrap_or(usize::MAX);
    let workers = slots.min(threads).min(items);
    if workers > MAX_SHARES {
        shared_counter(items, scratch, slot_len, workers, &init, &run);
        return;
    }
    if workers <= 1 {
        let slot = &mut scratch[..slot_len];
        if items > 0 {
            let mut state = init(slot);
            (0..items).for_each(|i| run(i, slot, &mut state));
        }
        return;
    }
    // Share w: items [w·items/workers, (w+1)·items/workers); next[w] counts claims from it.
    let next: [AtomicUsize; MAX_SHARES] =
        std::array::from_fn(|w| AtomicUsize::new(w * items / workers));
    let end = |w: usize| (w + 1) * items / workers;
    // Bit w set: slot w is held by a running task.
    let held = AtomicU64::new(0);
    let base = SendPtr(scratch.as_mut_ptr());
    (0..workers).into_par_iter().for_each(|_| {
        let base = &base;
        let own = rayon::current_thread_index().filter(|&w| w < workers);
        let w = claim_slot(&held, own, workers);
        // SAFETY: slot w (inside `scratch`: w < workers ≤ scratch.len() / slot_len, or empty
        // when slot_len is 0) is held
        // by this task alone until it releases the bit below; `run` starts no parallel work,
        // so no other task of this call runs on this thread meanwhile.
        let slot = unsafe { std::slice::from_raw_parts_mut(base.0.add(w * slot_len), slot_len) };
        let mut state = init(slot);
        for k in 0..workers {
            let share = (w + k) % workers;
            loop {
                let i = next[share].fetch_add(1, Ordering::Relaxed);
                if i >= end(share) {
                    break;
                }
                run(i, slot, &mut state);
            }
        }
        held.fetch_and(!(1u64 << w), Ordering::Release);
    });
}

/// Claims slot `own` if free, else the lowest free one. There are as many slots as tasks and
/// each task holds one, so one is always free.
fn claim_slot(held: &AtomicU64, own: Option<usize>, workers: usize) -> usize {
    if let Some(w) = own {
        if held.fetch_or(1u64 << w, Ordering::Acquire) & (1u64 << w) == 0 {
            return w;
        }
    }
    loop {
        let now = held.load(Ordering::Acquire);
        let free = (!now).trailing_zeros() as usize;
        assert!(free < workers, "every slot held");
        let bit = 1u64 << free;
        if held.fetch_or(bit, Ordering::Acquire) & bit == 0 {
            return free;
        }
    }
}

/// The plain dynamic hand-out for pools wider than [`MAX_SHARES`].
fn shared_counter<S, I, F>(
    items: usize,
    scratch: &mut [f32],
    slot_len: usize,
    workers: usize,
    init: &I,
    run: &F,
) where
    I: Fn(&mut [f32]) -> S + Sync,
    F: Fn(usize, &mut [f32], &mut S) + Sync,
{
    use rayon::prelude::*;
    let next = AtomicUsize::new(0);
    scratch[..slot_len * workers]
        .par_chunks_mut(slot_len)
        .for_each(|slot| {
            let mut state = init(slot);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items {
                    break;
                }
                run(i, slot, &mut state);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::with_threads;
    use std::sync::Mutex;

    /// Every item runs exactly once, each with a slot no concurrent call shares, for pools of
    /// 1–4 threads and more or fewer slots than threads.
    #[test]
    fn every_item_runs_once_with_a_private_slot() {
        for threads in 1..=4 {
            for slots in [1, 2, 3, 8] {
                for items in [0, 1, 5, 64, 1000] {
                    let mut scratch = vec![0.0f32; slots * 16];
                    let seen = Mutex::new(vec![0u32; items]);
                    with_threads(threads, || {
                        for_each_item(items, &mut scratch, 16, |i, slot| {
                            // Mark the slot as taken, check nobody else holds it.
                            assert_eq!(slot[0], 0.0, "slot shared by two calls");
                            slot[0] = 1.0;
                            std::hint::black_box(&slot);
                            seen.lock().expect("lock")[i] += 1;
                            slot[0] = 0.0;
                        })
                    });
                    let seen = seen.into_inner().expect("lock");
                    assert!(
                        seen.iter().all(|&c| c == 1),
                        "threads {threads} slots {slots} items {items}"
                    );
                }
            }
        }
    }

    /// With a slot per thread, the worker with pool index w always gets slot w.
    #[test]
    fn each_worker_keeps_its_own_slot() {
        let mut scratch = vec![0.0f32; 2 * 8];
        let slots = Mutex::new(Vec::new());
        with_threads(2, || {
            for _ in 0..20 {
                for_each_item(100, &mut scratch, 8, |_, slot| {
                    let w = rayon::current_thread_index().expect("in the pool");
                    slots
                        .lock()
                        .expect("lock")
                        .push((w, slot.as_ptr() as usize));
                })
            }
        });
        let base = scratch.as_ptr() as usize;
        for (w, at) in slots.into_inner().expect("lock") {
            assert_eq!(at, base + w * 8 * 4, "worker {w} used another slot");
        }
    }
}
