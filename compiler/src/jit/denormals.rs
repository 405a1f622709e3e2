//! Denormal floats flushed to zero while kernels run.
//!
//! A value below `f32::MIN_POSITIVE` takes a microcode assist on x86-64
//! cores (about a hundred cycles per instruction), and training makes such
//! values: a momentum buffer whose gradient is zero shrinks by the momentum
//! every step until it is denormal, and stays there. LeNet's SGD updates at
//! batch 4 took 64 us each for fc1 and fc2 after 4 s of training instead
//! of 3 (`kiln bench`). So kernels run with the SSE control register's
//! flush-to-zero and denormals-are-zero bits set, as TensorFlow's and
//! oneDNN's threads do: results differ only where a value or an operand
//! is below `f32::MIN_POSITIVE`, and stay the same from run to run and
//! for any thread count (every thread that runs a kernel sets them).

/// Flush-to-zero (results) and denormals-are-zero (operands) in MXCSR.
#[cfg(target_arch = "x86_64")]
const FLUSH_BITS: u32 = (1 << 15) | (1 << 6);

/// Sets the bits for the current thread until dropped, then puts back
/// what the thread had (the caller's floating-point mode is its own).
pub(super) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    pub(super) fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read();
            write(saved | FLUSH_BITS);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }

    /// Sets the bits for the rest of the current thread's life (a pool
    /// worker, which runs nothing but kernels).
    pub(super) fn for_this_thread() {
        #[cfg(target_arch = "x86_64")]
        write(read() | FLUSH_BITS);
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write(self.saved);
    }
}

#[cfg(target_arch = "x86_64")]
fn read() -> u32 {
    let mut csr = 0u32;
    // SAFETY: `stmxcsr` stores the 4-byte control register into `csr`,
    // a live local; it has no other effect.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn write(csr: u32) {
    // SAFETY: `ldmxcsr` loads the control register from `csr`, a live
    // local holding a value `stmxcsr` produced with only the flush bits
    // (valid, non-reserved) changed; it changes how later SSE/AVX
    // arithmetic on this thread rounds denormals, nothing else.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside the guard a denormal product is flushed; after it the
    /// thread's mode is back.
    #[test]
    fn denormals_are_flushed_only_inside_the_guard() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!((tiny * half) > 0.0, "a denormal before the guard");
        {
            let _flush = FlushDenormals::new();
            let product = std::hint::black_box(tiny) * std::hint::black_box(half);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(product, 0.0, "flushed inside the guard");
            let _ = product;
        }
        assert!(std::hint::black_box(tiny) * std::hint::black_box(half) > 0.0, "restored after the guard");
    }
}
