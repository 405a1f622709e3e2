//! Each register tile's measured speed on this CPU, for choosing tiles
//! ([`crate::passes::tiles`]), kept in a persistent cache.
//!
//! Every tile the ISA has runs a small product (two reduction blocks) with
//! each kind of [`Steps`]: dense operands (B's rows, in place, a constant
//! distance apart), the same with A transposed, B's rows through a table, overlapping as a
//! convolution's taps do and read in place (the driver's other reduction
//! loops, which rustc allocates registers for apart), the same with B's
//! columns wrapping in rows of one vector, best of several runs,
//! all tiles interleaved over two rounds so a drifting clock shifts them
//! alike; its GFLOP/s over the ISA's single-thread FMA peak is its
//! efficiency. That takes tens of milliseconds once per machine: the table
//! is written to the cache directory ([`cache_dir`]) under a name keyed by
//! the ISA, the CPU's model and kiln's version, and read back by every
//! later process. A cache file that does not parse is measured again and
//! replaced; one that cannot be written only costs the next process a new
//! measurement.

use super::{GemmCall, run};
use crate::passes::tiles::{Steps, TileRates};
use crate::target::ProductIsa;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming the cache directory.
pub const CACHE_DIR_VARIABLE: &str = "KILN_CACHE_DIR";

/// Bumped when the drivers change how fast a tile runs, so old tables are
/// not read.
const DRIVER_REVISION: u32 = 11;

/// Where a table came from, for `kiln bench`.
#[derive(Clone, Debug)]
pub enum Origin {
    /// Read from this cache file.
    Cache(PathBuf),
    /// Measured now, taking this long, and written to the file if any.
    Measured(Duration, Option<PathBuf>),
}

/// The measured table of `isa` (`None` when the CPU lacks the ISA or it
/// has no micro-kernels), from the cache or measured once per process.
pub fn rates(isa: ProductIsa) -> Option<&'static (TileRates, Origin)> {
    static AVX2: OnceLock<Option<(TileRates, Origin)>> = OnceLock::new();
    static AVX512: OnceLock<Option<(TileRates, Origin)>> = OnceLock::new();
    let cell = match isa {
        ProductIsa::Vector128 => return None,
        ProductIsa::Avx2 => &AVX2,
        ProductIsa::Avx512 => &AVX512,
    };
    cell.get_or_init(|| load_or_measure(isa)).as_ref()
}

fn load_or_measure(isa: ProductIsa) -> Option<(TileRates, Origin)> {
    if !isa.available() {
        return None;
    }
    let file = cache_dir().map(|d| d.join(file_name(isa)));
    if let Some(path) = &file
        && let Ok(text) = std::fs::read_to_string(path)
        && let Some(rates) = TileRates::parse(isa, &text)
    {
        return Some((rates, Origin::Cache(path.clone())));
    }
    let start = Instant::now();
    let rates = measure(isa)?;
    let took = start.elapsed();
    let written = file.filter(|path| write_atomically(path, &rates).is_ok());
    Some((rates, Origin::Measured(took, written)))
}

/// `KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var(CACHE_DIR_VARIABLE)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("kiln")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("kiln")))
}

/// `tiles-ISA-CPU-VERSION.txt`, the CPU's model reduced to a file name.
fn file_name(isa: ProductIsa) -> String {
    let cpu: String =
        cpu_model().chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    format!("tiles-{isa}-{cpu}-{}-r{DRIVER_REVISION}.txt", env!("CARGO_PKG_VERSION"))
}

/// The CPU's brand string (CPUID leaves 0x80000002-4), or "unknown".
fn cpu_model() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // Leaf 0x80000000 says whether the brand-string leaves exist.
        let top = __cpuid(0x8000_0000).eax;
        if top >= 0x8000_0004 {
            let mut bytes = Vec::with_capacity(48);
            for leaf in 0x8000_0002u32..=0x8000_0004 {
                let r = __cpuid(leaf);
                for word in [r.eax, r.ebx, r.ecx, r.edx] {
                    bytes.extend_from_slice(&word.to_le_bytes());
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let model = text.trim_matches(char::from(0)).trim();
            if !model.is_empty() {
                return model.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
    }
    "unknown".to_string()
}

/// Writes the table beside its final name and renames it there, so a
/// reader never sees half a file.
fn write_atomically(path: &std::path::Path, rates: &TileRates) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    let text = format!("# kiln register-tile efficiency (fraction of the FMA peak), {}\n{rates}", cpu_model());
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// Measures every tile of `isa` on this thread.
pub fn measure(isa: ProductIsa) -> Option<TileRates> {
    let peak = super::measure_fma_peak(isa, 1, Duration::from_millis(20))? * 1e9;
    let lanes = isa.lanes();
    let tiles: Vec<(Steps, (usize, usize))> =
        Steps::ALL.into_iter().flat_map(|s| TileRates::tiles(isa).map(move |t| (s, t))).collect();
    let mut best = vec![f64::MAX; tiles.len()];
    for _round in 0..2 {
        for (slot, &(steps, (rows, vectors))) in best.iter_mut().zip(&tiles) {
            let shape = [rows * 4, vectors * lanes * 2, 512];
            *slot = slot.min(seconds_per_run(isa, shape, [rows, vectors], steps, 8));
        }
    }
    let mut rates = TileRates::empty(isa);
    for (&(steps, (rows, vectors)), &seconds) in tiles.iter().zip(&best) {
        let flops = 2.0 * (rows * 4 * vectors * lanes * 2 * 512) as f64;
        rates.set(steps, rows, vectors, (flops / seconds / peak).max(1e-3));
    }
    rates.complete().then_some(rates)
}

/// The fastest of `runs` runs of an `m x n x k` product with the tile (A's
/// rows `k` apart, B's `n`, at a constant stride; with [`Steps::Strided`]
/// A's columns `m` apart instead) or, with
/// [`Steps::Tables`], B's rows through a table of their offsets, each one
/// float after the last (a one-dimensional convolution's taps: overlapping
/// rows, which the driver reads in place as it does a convolution's), with
/// [`Steps::Spread`] also its columns wrapping in rows of one vector, in
/// seconds.
pub fn seconds_per_run(isa: ProductIsa, [m, n, k]: [usize; 3], tile: [usize; 2], steps: Steps, runs: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.25).collect();
    // With `Steps::Spread`, B's columns wrap in rows of one vector, each
    // row two vectors after the last (a narrow image's output rows).
    let lanes = isa.lanes();
    let b: Vec<f32> = (0..k * n + k + 2 * n + lanes).map(|i| (i % 5) as f32 * 0.25).collect();
    let b_rows: Vec<i32> = (0..k).map(|p| i32::try_from(p).unwrap_or(i32::MAX)).collect();
    let mut c = vec![0f32; m * n];
    // With `Steps::Strided`, A is stored transposed (a weight gradient's).
    let (a_row, a_col) = if steps == Steps::Strided { (1, m as i64) } else { (k as i64, 1) };
    let mut call = GemmCall::dense(
        [m, n, k],
        (a.as_ptr(), a_row, a_col),
        (b.as_ptr(), n as i64, 1),
        (c.as_mut_ptr(), n as i64),
        false,
        tile,
    );
    if matches!(steps, Steps::Tables | Steps::Spread) {
        call.b_rows = b_rows.as_ptr();
    }
    if steps == Steps::Spread {
        call.wrap_row = lanes as i64;
        call.wrap_stride = 2 * lanes as i64;
    }
    let mut best = f64::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        // SAFETY: A, B and C hold the `m x k`, `k x n` and `m x n` elements
        // the call describes (B's row table, `k` offsets of rows inside B,
        // lives as long), and C is its own allocation.
        unsafe { run(isa, &call) };
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    best.max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A measured table covers every tile, and the cache round-trips it.
    #[test]
    fn measured_tables_are_complete_and_cached() {
        for isa in [ProductIsa::Avx2, ProductIsa::Avx512].into_iter().filter(|i| i.available()) {
            let rates = measure(isa).expect("the CPU has the ISA");
            assert!(rates.complete());
            let dir = std::env::temp_dir().join(format!("kiln-tiles-{}", std::process::id()));
            let path = dir.join(file_name(isa));
            write_atomically(&path, &rates).expect("writes");
            let text = std::fs::read_to_string(&path).expect("reads");
            let back = TileRates::parse(isa, &text).expect("parses");
            for (s, (r, v)) in Steps::ALL.into_iter().flat_map(|s| TileRates::tiles(isa).map(move |t| (s, t))) {
                assert!((back.get(s, r, v) - rates.get(s, r, v)).abs() < 1e-3);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
