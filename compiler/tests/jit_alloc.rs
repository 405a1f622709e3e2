//! A compiled training step allocates nothing: a counting global allocator
//! (this test binary only) sees zero allocations over many steps after the
//! first, with one thread and with two.

mod jit_support;

use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::jit::JitOptions;
use kiln_compiler::ops::{Loss, Sgd};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn training_steps_allocate_nothing() {
    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap();
    for threads in [1, 2] {
        let feeds = random_feeds(&g, 4, 9);
        let options =
            JitOptions { threads, verify: true, keep_all: false, inspect: false, input_grads: false, target: None };
        let mut exe = compile_with(&g, 4, &feeds, &options);
        exe.run().unwrap();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for step in 0..50 {
            if step % 10 == 9 {
                // Let the workers fall asleep: waking them must not allocate either.
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            exe.run().unwrap();
            let loss = exe.get(g.training.as_ref().unwrap().loss).unwrap()[0];
            assert!(loss.is_finite());
        }
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(after - before, 0, "{threads} threads: {} allocations in 50 steps", after - before);
    }
}
