//! The thread pool that runs a kernel's parallel loop.
//!
//! A small persistent thread pool. A launch publishes the kernel and a
//! word holding (launch number, next iteration); the caller and the workers
//! claim runs of iterations of the parallel loop with compare-and-swap
//! until none are left, so a worker that is slow to wake (or descheduled on a
//! busy machine) never delays a launch: the caller does its share. Runs are
//! guided: each claim takes half of an even share of what is left (at least
//! one iteration), so a launch costs a few dozen claims and ends within an
//! iteration of balanced. Claimed one at a time, the 2048 planes of a 2x2
//! average pool over 16x16 images cost a contended compare-and-swap and
//! counter update each, as long as the pooling itself (wide5's second pool
//! at batch 64: 300 us). Which
//! thread runs an iteration does not change any result (iterations write
//! disjoint elements; scratch is per thread). Idle workers spin briefly, then
//! yield, then sleep on a condition variable.

use super::JitError;
use crate::backend::KernelFn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The current launch, published to workers.
struct Shared {
    /// High 32 bits: launch number; low 32 bits: next unclaimed iteration.
    claim: AtomicU64,
    /// Iterations of the current launch completed.
    finished: AtomicUsize,
    func: AtomicUsize,
    arena: AtomicUsize,
    extent: AtomicUsize,
    /// Threads running launches: the caller and the workers.
    threads: u64,
    quit: AtomicBool,
    /// Workers that finished starting up.
    started: AtomicUsize,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

pub(super) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Shared {
    /// Claims and runs iterations of launch `launch` until none are left.
    fn work(&self, launch: u64, thread: usize) {
        loop {
            let cur = self.claim.load(Ordering::Acquire);
            let (l, next) = (cur >> 32, cur & 0xffff_ffff);
            let extent = self.extent.load(Ordering::Acquire) as u64;
            if l != launch || next >= extent {
                return;
            }
            // Read the kernel before claiming: a successful claim proves the
            // launch was still running, so these values were its own.
            let f = self.func.load(Ordering::Acquire);
            let arena = self.arena.load(Ordering::Acquire) as *mut f32;
            // Half of an even share of what is left.
            let count = ((extent - next) / (2 * self.threads)).max(1);
            if self.claim.compare_exchange_weak(cur, cur + count, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            // SAFETY: `f` is a `KernelFn` published by `Pool::run` for this
            // launch; `Pool::run` does not return (so the arena stays valid
            // and exclusively used by this launch) until every claimed
            // iteration has finished; iterations `next..next + count` (inside
            // the extent) write elements no other iteration writes, and
            // `thread` is unique among the threads running the launch
            // (per-thread scratch).
            unsafe {
                let f = std::mem::transmute::<usize, KernelFn>(f);
                f(arena, next as i64, (next + count) as i64, thread as i64)
            };
            self.finished.fetch_add(count as usize, Ordering::AcqRel);
        }
    }
}

impl Pool {
    pub(super) fn new(threads: usize) -> Result<Pool, JitError> {
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            func: AtomicUsize::new(0),
            arena: AtomicUsize::new(0),
            extent: AtomicUsize::new(0),
            threads: threads as u64,
            quit: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let mut pool = Pool { shared: Arc::clone(&shared), workers: Vec::with_capacity(threads - 1) };
        for t in 1..threads {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new().name(format!("kiln-worker-{t}")).spawn(move || worker(s, t)) {
                Ok(handle) => pool.workers.push(handle),
                // Dropping `pool` stops and joins the workers already started.
                Err(e) => return Err(JitError::InvalidOptions(format!("cannot start {threads} threads: {e}"))),
            }
        }
        // Wait for the workers' own start-up (thread-local set-up allocates),
        // so that no allocation happens during later runs.
        while shared.started.load(Ordering::Acquire) < threads - 1 {
            std::thread::yield_now();
        }
        Ok(pool)
    }

    /// Runs iterations `0..extent` of `f`'s parallel loop on the caller and
    /// the workers; returns when all are done.
    pub(super) fn run(&self, f: KernelFn, arena: *mut f32, extent: usize) {
        let s = &self.shared;
        let launch = (s.claim.load(Ordering::Relaxed) >> 32) + 1;
        s.func.store(f as usize, Ordering::Release);
        s.arena.store(arena as usize, Ordering::Release);
        s.extent.store(extent, Ordering::Release);
        s.finished.store(0, Ordering::Release);
        s.claim.store(launch << 32, Ordering::Release);
        {
            let sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            if *sleepers > 0 {
                s.wake.notify_all();
            }
        }
        s.work(launch, 0);
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < extent {
            // A worker still runs an iteration it claimed; if it was
            // descheduled, give it the core back instead of spinning.
            spins += 1;
            if spins < 2_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        {
            let _guard = self.shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: Arc<Shared>, t: usize) {
    super::denormals::FlushDenormals::for_this_thread();
    let mut seen = 0u64;
    // Touch everything the idle path uses once before reporting ready.
    drop(s.sleepers.lock().unwrap_or_else(|e| e.into_inner()));
    std::thread::yield_now();
    s.started.fetch_add(1, Ordering::Release);
    loop {
        let mut spins = 0u32;
        let launch = loop {
            if s.quit.load(Ordering::Acquire) {
                return;
            }
            let l = s.claim.load(Ordering::Acquire) >> 32;
            if l != seen {
                break l;
            }
            spins += 1;
            if spins < 4_000 {
                std::hint::spin_loop();
            } else if spins < 8_000 {
                std::thread::yield_now();
            } else {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                *sleepers += 1;
                while s.claim.load(Ordering::Acquire) >> 32 == seen && !s.quit.load(Ordering::Acquire) {
                    sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                }
                *sleepers -= 1;
                spins = 0;
            }
        };
        seen = launch;
        s.work(launch, t);
    }
}
