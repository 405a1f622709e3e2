//! The micro-kernel drivers alone: GFLOP/s of each ISA's driver per tile
//! shape on dense products (A rows apart, B rows contiguous), stepping at a
//! constant stride and through a table of B's rows, next to the ISA's
//! measured FMA peak on one thread.
//!
//! `cargo bench -p kiln-compiler --bench micro` (run on a quiet machine).

use kiln_compiler::codegen::micro::{calibrate, measure_fma_peak};
use kiln_compiler::passes::tiles::Steps;
use kiln_compiler::target::ProductIsa;
use std::time::Duration;

/// GFLOP/s of `C (m x n) = A (m x k) B (k x n)` on `isa` with the tile.
fn measure(isa: ProductIsa, [m, n, k]: [usize; 3], tile: [usize; 2], steps: Steps) -> f64 {
    2.0 * (m * n * k) as f64 / calibrate::seconds_per_run(isa, [m, n, k], tile, steps, 40) / 1e9
}

fn main() {
    for isa in [ProductIsa::Avx2, ProductIsa::Avx512] {
        let Some(peak) = measure_fma_peak(isa, 1, Duration::from_millis(300)) else {
            continue;
        };
        println!("{} peak {peak:.1} GFLOP/s (1 thread)", isa.name());
        let lanes = isa.lanes();
        for shape in [[96, 2 * lanes, 256], [192, 4 * lanes, 512], [256, 64, 3072], [64, 1024, 576]] {
            for vectors in 1..=isa.max_tile_vectors() {
                for rows in [4, 6, 8, 9, 10, 12] {
                    if rows > isa.max_tile_rows(vectors) {
                        continue;
                    }
                    for steps in Steps::ALL {
                        let g = measure(isa, shape, [rows, vectors], steps);
                        let pct = 100.0 * g / peak;
                        println!("  {shape:?} tile {rows}x{vectors} {steps:?}: {g:6.1} GFLOP/s {pct:3.0}%");
                    }
                }
            }
        }
    }
}
