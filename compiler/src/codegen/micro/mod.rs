//! Matrix-product micro-kernels with 256- and 512-bit vectors, which the
//! Cranelift kernels call for products scheduled as
//! [`GemmTile::Micro`](crate::kernel::GemmTile::Micro).
//!
//! Cranelift lowers 128-bit vectors only, while this machine's FMA peak
//! needs 256- or 512-bit ones. XNNPACK's way is taken rather than oneDNN's
//! run-time assembler: the kernels are Rust functions compiled for each
//! ISA with `#[target_feature]` (rustc's register allocator and scheduler
//! for the inner loop, no assembler to link into users' builds), one driver
//! text shared by both ISAs through [`driver!`], and the ISA is chosen when
//! the program is scheduled, from the CPU's features ([`ProductIsa::host`]).
//!
//! What the driver computes is exactly [`GemmCall`]'s product: `C = A B`
//! (or `C += A B`), each element summed over `p` in order, a reduction
//! block continuing from the sums the block before stored, so a result
//! depends neither on how the rows or columns were split across threads
//! nor on the blocks' lengths ([`block_steps`]). Epilogues (bias,
//! activation, masks) are applied by the calling kernel afterwards.
//!
//! [`ProductIsa::host`]: crate::target::ProductIsa::host

#[macro_use]
mod tile;
#[macro_use]
mod driver;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod calibrate;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod transpose;

use crate::target::ProductIsa;

/// Reduction block: the B rows one pass over C reads (gathered, a panel of
/// `KC` rows of the tile's width, 16 to 64 KiB with 512-bit vectors, which
/// every row block reuses).
pub const KC: usize = 256;

/// The longest reduction block, a quarter past [`KC`]: a reduction at
/// most a quarter of `KC` past a whole number of `KC` blocks (a 3x3
/// convolution's 288 taps of 32 channels, 576 of 64) runs as that many
/// blocks, not a short block besides, whose tiles cost about as much as
/// whole ones (each loads and stores its sums and sets up its operands
/// for a few steps).
pub const KC_MAX: usize = KC + KC / 4;

/// Steps of each reduction block of a `k`-step product, the last block
/// taking the rest: blocks of about [`KC`] (at most [`KC_MAX`]), of equal
/// lengths.
pub fn block_steps(k: usize) -> usize {
    let mut blocks = k.div_ceil(KC).max(1);
    if blocks > 1 && k - (blocks - 1) * KC <= KC / 4 {
        blocks -= 1;
    }
    k.div_ceil(blocks).max(1)
}

/// Reduction steps whose offsets (B's rows, A's columns) a call works out
/// once, up front (32 KiB for each operand on the driver's stack); a longer
/// reduction works them out per block, for each column block again.
pub const HELD_STEPS: usize = 16 * KC;

/// Sets of the level-1 data cache: 64-byte lines indexed by address
/// bits 6 to 11 (32 KiB of 8 ways, 48 KiB of 12: every x86-64 core
/// with AVX2).
const L1_SETS: usize = 64;
/// Lines of one set a block of B may take in place: the 8 ways of
/// the smallest such cache; more cannot all stay.
const L1_SET_SHARE: u16 = 8;
/// The smallest such level-1 data cache, in bytes.
const L1_BYTES: usize = L1_SETS * 64 * L1_SET_SHARE as usize;

/// Whether a block of B read in place (each row's `width` floats
/// from `b_at + b_steps[p]`) would evict itself from the level-1
/// cache before the block's next row tile reads it again: more of
/// its lines in one set than [`L1_SET_SHARE`]. Rows a multiple of 4
/// KiB apart (a 1x1 convolution's channels of 32x32 images, a
/// linear layer's 1024-wide inputs) all fall in one set. A line the
/// step before read too (a convolution's neighbouring taps) is counted
/// once.
pub(crate) fn evicts_itself(b_at: *const f32, b_steps: &[isize], width: usize) -> bool {
    let mut lines = [0u16; L1_SETS];
    let mut before = 0..0;
    for &step in b_steps {
        let first = b_at.wrapping_offset(step) as usize;
        let row = first >> 6..((first + width * 4 - 1) >> 6) + 1;
        for line in row.clone().filter(|l| !before.contains(l)) {
            let count = &mut lines[line % L1_SETS];
            *count += 1;
            if *count > L1_SET_SHARE {
                return true;
            }
        }
        before = row;
    }
    false
}

/// How the driver cuts `rows` rows into register tiles of at most
/// `height`: `(tiles, short, tall)`, `tiles` tiles of `short` rows, the
/// first `tall` of them one row more. One rule for the driver and the
/// tile cost model ([`crate::passes::tiles::choose`]).
pub fn row_tiles(rows: usize, height: usize) -> (usize, usize, usize) {
    let tiles = rows.div_ceil(height.max(1));
    if tiles == 0 { (0, 0, 0) } else { (tiles, rows / tiles, rows % tiles) }
}

/// Whether the driver cuts B's wrap rows of `row` columns (not whole
/// vectors of `lanes`) into blocks of their own, read in place with the
/// last vector of each partial, rather than blocks spanning rows that are
/// gathered into panels. Per row and reduction step, in lanes of vector
/// multiply-adds: in place computes `m * ceil(row / lanes) * lanes`;
/// gathering computes `m * row` and copies `row` elements, a scalar load
/// and store each, about two vector multiply-adds' time (two issue per
/// cycle). Measured interleaved on LeNet at batch 64 (avx2), gathering
/// instead of row blocks: conv2 (16 rows, rows of 10) 418-482 -> 578-584
/// us, its input gradient (6 rows, rows of 14) 554-642 -> 2075-2106 us.
pub fn row_blocks_pay(m: usize, row: usize, lanes: usize) -> bool {
    m * row.div_ceil(lanes) * lanes <= m * row + 2 * row * lanes
}

/// Whether the driver cuts a product's B, its columns wrapping in rows of
/// `wrap_row` (0: no wrap), into row blocks: rows that are not whole
/// vectors, C's columns adjacent (the blocks' partial stores are runs),
/// and [`row_blocks_pay`]. The one rule the driver follows and the
/// scheduler and tile cost model ([`crate::passes::tiles::choose`]) price.
pub fn cuts_row_blocks(m: usize, wrap_row: usize, lanes: usize, c_adjacent: bool) -> bool {
    wrap_row > 0 && !wrap_row.is_multiple_of(lanes) && c_adjacent && row_blocks_pay(m, wrap_row, lanes)
}

/// Whether the driver applies a product's bias and ReLU itself (to each
/// column block's finished sums while they are in the level-1 cache),
/// given C's layout in the driver's terms: rows dense (no table, no
/// wrap), and columns adjacent or, a transposed product's, rows adjacent
/// (summed in the driver's buffer). Any other C, or another epilogue,
/// takes a pass over C by the calling kernel.
pub fn finishes_epilogue(c_row: i64, c_col: i64, c_rows_table: bool, c_wrap_row: i64) -> bool {
    !c_rows_table && c_wrap_row == 0 && (c_col == 1 || (c_row == 1 && transposes_in_registers()))
}

/// Whether blocks of a buffered C move to and from C transposed in
/// registers (an AVX2 CPU: every one with the driver's ISAs).
fn transposes_in_registers() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        transpose::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the driver runs `g` one reduction block at a time, each over
/// all of C, rather than each column block over the whole reduction: B
/// transposed (gathered into a panel per block either way), so the only
/// difference is that A's columns of the block stay in the level-2 cache
/// across column blocks; C's columns adjacent (not summed in a buffer);
/// no segments or row tables along the reduction; several reduction and
/// column blocks. A linear layer's 3072 inputs at batch 256 were read from
/// memory once per 32 outputs.
pub fn reduction_blocks_outermost(g: &GemmCall, width: usize) -> bool {
    let b_transposed = g.b_row == 1 && g.b_col != 1 && g.b_rows.is_null() && g.b_seg == 0 && g.wrap_row == 0;
    b_transposed && g.a_seg == 0 && g.c_col == 1 && g.k > KC_MAX as i64 && g.n > width as i64
}

/// stack (every field 8 bytes, in this order). With `seg(p; len, stride,
/// step)` = `(p / len) * stride + (p % len) * step` (`p * step` when `len`
/// is 0: a reduction in segments, such as a convolution's output rows):
///
/// - `A[i, p]` is at `a + row(i) + seg(p; a_seg, a_seg_stride, a_col)`,
///   `row(i)` being `a_rows[i]` when that table is not null, else
///   `i * a_row`;
/// - row `p` of B starts at `b + b_rows[p]`, or `b + seg(p; b_seg,
///   b_seg_stride, b_row)`, and `B[p, j]` is `column(j)` further:
///   `j * b_col`, or with a wrap (`wrap_row > 0`) `(j / wrap_row) *
///   wrap_stride + (j % wrap_row) * b_col` (a convolution's output
///   positions in its input's wider rows);
/// - row `i` of C starts at `c + c_rows[i]` or `c + i * c_row`, and
///   `C[i, j]` is `j * c_col`, or `(j / c_wrap_row) * c_wrap_stride + (j %
///   c_wrap_row) * c_col`, further (a convolution's input gradient added
///   into the image, taps overlapping: rows are stored one after another).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GemmCall {
    /// Rows of C.
    pub m: i64,
    /// Columns of C.
    pub n: i64,
    /// Reduction length.
    pub k: i64,
    /// A's origin.
    pub a: *const f32,
    /// Distance between A's rows (without `a_rows`).
    pub a_row: i64,
    /// Distance between A's columns (within a segment).
    pub a_col: i64,
    /// Offsets of A's rows from `a` (`m` of them), or null.
    pub a_rows: *const i32,
    /// Length of A's reduction segments, or 0 for none.
    pub a_seg: i64,
    /// Distance between A's segments.
    pub a_seg_stride: i64,
    /// B's origin.
    pub b: *const f32,
    /// Distance between B's rows (within a segment, without `b_rows`).
    pub b_row: i64,
    /// Distance between B's columns (within a wrap row).
    pub b_col: i64,
    /// Offsets of B's rows from `b` (`k` of them), or null.
    pub b_rows: *const i32,
    /// Length of B's reduction segments, or 0 for none.
    pub b_seg: i64,
    /// Distance between B's segments.
    pub b_seg_stride: i64,
    /// Columns of B per row of its wrap, or 0 for none.
    pub wrap_row: i64,
    /// Distance between the rows of B's wrap.
    pub wrap_stride: i64,
    /// One past the last element of B's allocation the driver may read,
    /// or null: a column block that ends inside a wrap row, its last
    /// vector partial, is read in place when that whole vector lies below
    /// this (its lanes past the row are computed and never stored), else
    /// gathered.
    pub b_end: *const f32,
    /// C's origin.
    pub c: *mut f32,
    /// Distance between C's rows (without `c_rows`).
    pub c_row: i64,
    /// Distance between C's columns (within a wrap row).
    pub c_col: i64,
    /// Offsets of C's rows from `c` (`m` of them), or null.
    pub c_rows: *const i32,
    /// Columns of C per row of its wrap, or 0 for none.
    pub c_wrap_row: i64,
    /// Distance between the rows of C's wrap.
    pub c_wrap_stride: i64,
    /// Non-zero: add the product to C's previous contents.
    pub accumulate: i64,
    /// A bias added to every finished sum, or null: `bias[i]` to row `i`
    /// when `bias_per_row` is non-zero, else `bias[j]` to column `j`.
    /// Only for a C the driver finishes itself ([`finishes_epilogue`]).
    pub bias: *const f32,
    /// Non-zero: the bias is per row of C, else per column.
    pub bias_per_row: i64,
    /// Non-zero: `x <= 0 ? 0 : x` on every finished sum (after the bias;
    /// a NaN stays NaN), as the kernels' ReLU.
    pub relu: i64,
    /// Rows of the register tile (clamped to what the ISA's registers hold).
    pub rows: i64,
    /// Vectors across the register tile (1 to the ISA's `max_tile_vectors`).
    pub vectors: i64,
}

impl GemmCall {
    /// A product with every optional layout off: A, B and C dense with the
    /// given strides (C's columns adjacent).
    #[allow(clippy::too_many_arguments)]
    pub fn dense(
        [m, n, k]: [usize; 3],
        (a, a_row, a_col): (*const f32, i64, i64),
        (b, b_row, b_col): (*const f32, i64, i64),
        (c, c_row): (*mut f32, i64),
        accumulate: bool,
        [rows, vectors]: [usize; 2],
    ) -> GemmCall {
        GemmCall {
            m: m as i64,
            n: n as i64,
            k: k as i64,
            a,
            a_row,
            a_col,
            a_rows: std::ptr::null(),
            a_seg: 0,
            a_seg_stride: 0,
            b,
            b_row,
            b_col,
            b_rows: std::ptr::null(),
            b_seg: 0,
            b_seg_stride: 0,
            wrap_row: 0,
            wrap_stride: 0,
            b_end: std::ptr::null(),
            c,
            c_row,
            c_col: 1,
            c_rows: std::ptr::null(),
            c_wrap_row: 0,
            c_wrap_stride: 0,
            accumulate: i64::from(accumulate),
            bias: std::ptr::null(),
            bias_per_row: 0,
            relu: 0,
            rows: rows as i64,
            vectors: vectors as i64,
        }
    }
}

/// Lanes `first..end` of a tile's column vector `vector`, stored from `offset`
/// (lane `l` at `offset + l`) relative to the block's first column.
#[derive(Clone, Copy, Debug)]
struct Piece {
    vector: usize,
    first: usize,
    end: usize,
    offset: isize,
}

/// The fields of [`GemmCall`] in memory order: what the calling kernel
/// stores, each at `8 * index`.
pub const GEMM_CALL_FIELDS: usize = 30;
const _: () = assert!(std::mem::size_of::<GemmCall>() == 8 * GEMM_CALL_FIELDS);

/// The symbol of `isa`'s driver, which the JIT resolves.
pub fn symbol(isa: ProductIsa) -> Option<&'static str> {
    match isa {
        ProductIsa::Vector128 => None,
        ProductIsa::Avx2 => Some("kiln_gemm_avx2"),
        ProductIsa::Avx512 => Some("kiln_gemm_avx512"),
    }
}

/// Makes the drivers resolvable by the JIT linker.
pub fn register(builder: &mut cranelift_jit::JITBuilder) {
    #[cfg(target_arch = "x86_64")]
    {
        builder.symbol("kiln_gemm_avx2", avx2::kiln_gemm_avx2 as *const u8);
        builder.symbol("kiln_gemm_avx512", avx512::kiln_gemm_avx512 as *const u8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = builder;
}

/// Where `isa`'s reduction loops for a `rows x vectors` register tile
/// start: B's rows and A's columns through offset tables, B's vectors
/// spread over wrap rows, A read along its rows (dense), and A transposed
/// at a constant stride (the driver picks one per block at run time, as
/// `tiles::Steps` prices them): what `kiln inspect --emit asm`
/// disassembles. `None` for the 128-bit path (Cranelift's own code) and
/// tiles the driver has not.
pub fn reduction_entries(isa: ProductIsa, rows: usize, vectors: usize) -> Option<[(&'static str, *const u8); 4]> {
    #[cfg(target_arch = "x86_64")]
    let entries = match isa {
        ProductIsa::Vector128 => None,
        ProductIsa::Avx2 => avx2::reductions(rows, vectors),
        ProductIsa::Avx512 => avx512::reductions(rows, vectors),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let entries: Option<[*const u8; 4]> = {
        let _ = (isa, rows, vectors);
        None
    };
    entries.map(|[tables, spread, dense, strided]| {
        [
            ("steps through offset tables", tables),
            ("B's vectors spread over wrap rows", spread),
            ("A read along its rows", dense),
            ("A transposed, steps a constant distance apart", strided),
        ]
    })
}

/// Flops of one round of `fma_loop`: 12 vectors of multiply-adds.
fn flops_per_round(isa: ProductIsa) -> u64 {
    (12 * isa.lanes() * 2) as u64
}

/// Measures `isa`'s FMA throughput with `threads` threads for about
/// `duration`; GFLOP/s summed over the threads, or `None` when the CPU
/// lacks the ISA (or it is the backend's own, measured by
/// [`super::peak::measure_fma_peak`]).
pub fn measure_fma_peak(isa: ProductIsa, threads: usize, duration: std::time::Duration) -> Option<f64> {
    if isa == ProductIsa::Vector128 || !isa.available() {
        return None;
    }
    let rounds: u64 = 2_000_000;
    let run = move || -> f64 {
        let start = std::time::Instant::now();
        let mut done = 0u64;
        let mut sink = 0.0;
        while start.elapsed() < duration {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the ISA (checked above); the loop touches
            // no memory but its locals.
            unsafe {
                sink += match isa {
                    ProductIsa::Avx2 => avx2::fma_loop(rounds),
                    _ => avx512::fma_loop(rounds),
                };
            }
            done += rounds;
        }
        std::hint::black_box(sink);
        (done * flops_per_round(isa)) as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(run)).collect();
        Some(handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum())
    })
}

/// Runs `call` on `isa`'s driver (for tests and benchmarks of the drivers
/// alone). Returns false, computing nothing, when the CPU lacks the ISA.
///
/// # Safety
/// Every element [`GemmCall`] describes must lie inside live allocations,
/// and C must not overlap A or B.
pub unsafe fn run(isa: ProductIsa, call: &GemmCall) -> bool {
    if !isa.available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the ISA is available (checked above); the caller vouches for
    // the matrices.
    unsafe {
        match isa {
            ProductIsa::Avx2 => avx2::kiln_gemm_avx2(call),
            ProductIsa::Avx512 => avx512::kiln_gemm_avx512(call),
            ProductIsa::Vector128 => return false,
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = call;
        false
    }
}
