//! The machine a program is scheduled for.
//!
//! Every decision in `kernel/` and `passes/` that depends on the hardware
//! reads a [`Target`]: how many `f32` lanes a vector holds (weight splats,
//! which output rows are whole vectors, how wrapped columns block, flat
//! loops split across threads), how many vector registers a register tile
//! may fill, whether FMA exists, and the cache sizes. A program records the
//! target it was scheduled for, so a backend can refuse one it cannot emit
//! (the Cranelift JIT lowers 4-lane vectors only) instead of silently
//! producing something else.
//!
//! The target is the host's features seen through a backend: the same
//! AVX-512 machine is a 4-lane target for Cranelift and a 16-lane one for a
//! backend that emits zmm code. Tests override it to run every path on any
//! machine.
//!
//! Matrix products may leave the backend's own vectors for a wider
//! [`ProductIsa`] (the Cranelift JIT calls 256- or 512-bit micro-kernels):
//! the host's best one by default, any one on request, so tests run every
//! path the machine has.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// The environment variable that limits [`ProductIsa::host`]
/// (`v128`, `avx2` or `avx512`).
pub const MAX_ISA_VARIABLE: &str = "KILN_MAX_ISA";

/// [`ProductIsa::limit`]'s value as its discriminant; anything else: unset.
static MAX_ISA: AtomicU8 = AtomicU8::new(u8::MAX);

/// The most rows a micro-kernel register tile has on any ISA (the A row
/// pointers the general-purpose registers hold).
pub const MAX_TILE_ROWS: usize = 12;

/// The vectors matrix-product cores run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProductIsa {
    /// The backend's own 128-bit vectors (the products are emitted inline).
    Vector128,
    /// 256-bit AVX2 with FMA: 8 lanes, 16 registers.
    Avx2,
    /// 512-bit AVX-512F: 16 lanes, 32 registers.
    Avx512,
}

impl ProductIsa {
    /// Every ISA, narrowest first.
    pub const ALL: [ProductIsa; 3] = [ProductIsa::Vector128, ProductIsa::Avx2, ProductIsa::Avx512];

    /// The widest ISA this CPU runs, up to the process's limit
    /// ([`ProductIsa::limit`], else the `KILN_MAX_ISA` environment variable).
    pub fn host() -> ProductIsa {
        let cap = ProductIsa::cap();
        ProductIsa::ALL.into_iter().rev().find(|isa| *isa <= cap && isa.available()).unwrap_or(ProductIsa::Vector128)
    }

    /// Makes [`ProductIsa::host`] return nothing wider than `isa` from now
    /// on, for the whole process (as oneDNN's `set_max_cpu_isa`): how the
    /// CLI's `--isa` selects a path for every command, and how a user pins
    /// results to one ISA's rounding.
    pub fn limit(isa: ProductIsa) {
        MAX_ISA.store(isa as u8, Ordering::Relaxed);
    }

    /// The limit in force: [`ProductIsa::limit`]'s, else `KILN_MAX_ISA`'s
    /// (an unknown name there is ignored; the CLI refuses it), else none.
    fn cap() -> ProductIsa {
        match MAX_ISA.load(Ordering::Relaxed) {
            x if x == ProductIsa::Vector128 as u8 => ProductIsa::Vector128,
            x if x == ProductIsa::Avx2 as u8 => ProductIsa::Avx2,
            x if x == ProductIsa::Avx512 as u8 => ProductIsa::Avx512,
            _ => std::env::var(MAX_ISA_VARIABLE)
                .ok()
                .and_then(|name| ProductIsa::from_name(name.trim()))
                .unwrap_or(ProductIsa::Avx512),
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            ProductIsa::Vector128 => true,
            #[cfg(target_arch = "x86_64")]
            ProductIsa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            ProductIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `f32` lanes of one vector.
    pub fn lanes(self) -> usize {
        match self {
            ProductIsa::Vector128 => 4,
            ProductIsa::Avx2 => 8,
            ProductIsa::Avx512 => 16,
        }
    }

    /// The most column vectors a micro-kernel register tile may span.
    pub const fn max_tile_vectors(self) -> usize {
        match self {
            ProductIsa::Vector128 => 0,
            ProductIsa::Avx2 => 3,
            ProductIsa::Avx512 => 4,
        }
    }

    /// The most rows a micro-kernel register tile of `vectors` vectors may
    /// have: accumulators, one B vector per column vector and the
    /// broadcast A element fit the ISA's registers (16 ymm, 32 zmm); at
    /// most 12, the A row pointers the general-purpose registers hold.
    /// 0 when the ISA has no such tile.
    pub const fn max_tile_rows(self, vectors: usize) -> usize {
        if vectors == 0 || vectors > self.max_tile_vectors() {
            return 0;
        }
        let registers = match self {
            ProductIsa::Vector128 => return 0,
            ProductIsa::Avx2 => 16,
            ProductIsa::Avx512 => 32,
        };
        let rows = (registers - vectors - 1) / vectors;
        if rows < MAX_TILE_ROWS { rows } else { MAX_TILE_ROWS }
    }

    /// The name the kernel-IR text and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            ProductIsa::Vector128 => "v128",
            ProductIsa::Avx2 => "avx2",
            ProductIsa::Avx512 => "avx512",
        }
    }

    /// The ISA named `name` (`v128`, `avx2`, `avx512`).
    pub fn from_name(name: &str) -> Option<ProductIsa> {
        ProductIsa::ALL.into_iter().find(|isa| isa.name() == name)
    }
}

impl fmt::Display for ProductIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What scheduling knows of the machine and the backend's vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// `f32` lanes in one vector register the backend emits.
    pub vector_lanes: usize,
    /// Vector registers a kernel may keep live (accumulators, operands).
    pub vector_registers: usize,
    /// Fused multiply-add instructions exist.
    pub fma: bool,
    /// Level-1 data cache per core, in bytes.
    pub l1d_bytes: usize,
    /// Level-2 cache per core, in bytes.
    pub l2_bytes: usize,
    /// The vectors matrix products run on.
    pub products: ProductIsa,
    /// Where the micro-kernels' tile speeds come from.
    pub tiles: TileSource,
}

/// Where [`crate::passes::tiles`] takes each register tile's speed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TileSource {
    /// The instruction-count model: the same plan on every machine (tests,
    /// and programs planned for another CPU).
    #[default]
    Model,
    /// Measured on this CPU once and cached
    /// ([`crate::codegen::micro::calibrate`]); the model where the CPU
    /// lacks the ISA.
    Measured,
}

impl Target {
    /// 128-bit vectors (SSE, NEON) with 16 registers: what the Cranelift JIT
    /// emits on x86-64, with the host's FMA and caches, products included.
    pub fn host_128() -> Target {
        let (l1d_bytes, l2_bytes) = host_caches();
        Target {
            vector_lanes: 4,
            vector_registers: 16,
            fma: host_has_fma(),
            l1d_bytes,
            l2_bytes,
            products: ProductIsa::Vector128,
            tiles: TileSource::Model,
        }
    }

    /// What the Cranelift JIT schedules for on this host: its 128-bit
    /// vectors, with matrix products on the widest ISA the CPU has and
    /// their tiles chosen from this CPU's measured tile speeds.
    pub fn host() -> Target {
        Target { products: ProductIsa::host(), tiles: TileSource::Measured, ..Target::host_128() }
    }

    /// This target with matrix products on `isa`.
    pub fn with_products(self, isa: ProductIsa) -> Target {
        Target { products: isa, ..self }
    }

    /// 128-bit vectors and 16 registers without FMA, 32 KiB L1d and 1 MiB
    /// L2: the target a kernel-IR text implies when it names none.
    pub fn baseline() -> Target {
        Target {
            vector_lanes: 4,
            vector_registers: 16,
            fma: false,
            l1d_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            products: ProductIsa::Vector128,
            tiles: TileSource::Model,
        }
    }

    /// This target with `lanes`-wide vectors (and, for 512-bit vectors,
    /// AVX-512's 32 registers): how tests schedule for a wider machine.
    pub fn with_lanes(self, lanes: usize) -> Target {
        let vector_registers = if lanes >= 16 { 32 } else { self.vector_registers };
        Target { vector_lanes: lanes, vector_registers, ..self }
    }

    /// Whether a target is usable for scheduling: a power-of-two lane count
    /// of at least 2 and at most 64, and registers for a tile.
    pub fn check(&self) -> Result<(), String> {
        if !(2..=64).contains(&self.vector_lanes) || !self.vector_lanes.is_power_of_two() {
            return Err(format!("vector lanes must be a power of two from 2 to 64, got {}", self.vector_lanes));
        }
        if self.vector_registers < 8 {
            return Err(format!("a target needs at least 8 vector registers, got {}", self.vector_registers));
        }
        Ok(())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lanes {} registers {}{} l1d {} l2 {}",
            self.vector_lanes,
            self.vector_registers,
            if self.fma { " fma" } else { "" },
            self.l1d_bytes,
            self.l2_bytes
        )?;
        if self.products != ProductIsa::Vector128 {
            write!(f, " products {}", self.products)?;
        }
        if self.tiles == TileSource::Measured {
            write!(f, " tiles measured")?;
        }
        Ok(())
    }
}

fn host_has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// L1 data and L2 sizes of CPU 0 from Linux's sysfs; common sizes where
/// they cannot be read.
fn host_caches() -> (usize, usize) {
    let mut l1d = None;
    let mut l2 = None;
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |file: &str| std::fs::read_to_string(format!("{dir}/{file}")).ok();
        let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
        let Some(bytes) = parse_cache_size(size.trim()) else { continue };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => l1d = Some(bytes),
            ("2", _) => l2 = Some(bytes),
            _ => {}
        }
    }
    (l1d.unwrap_or(32 << 10), l2.unwrap_or(1 << 20))
}

/// `48K`, `2048K`, `1M` as bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: usize = digits.parse().ok()?;
    match unit {
        "" => Some(n),
        "K" => n.checked_mul(1 << 10),
        "M" => n.checked_mul(1 << 20),
        "G" => n.checked_mul(1 << 30),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_with_units() {
        assert_eq!(parse_cache_size("48K"), Some(48 << 10));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("12Q"), None);
    }

    #[test]
    fn targets_are_checked() {
        let t = Target::host_128();
        assert_eq!(t.vector_lanes, 4);
        assert!(t.check().is_ok());
        assert_eq!(t.with_lanes(16).vector_registers, 32);
        assert!(t.with_lanes(6).check().unwrap_err().contains("power of two"));
    }
}
