//! Register tiles for the wide micro-kernels, chosen per product by cost.
//!
//! A tile of `rows x vectors` runs each reduction step as `rows * vectors`
//! multiply-adds; how close to the ISA's FMA peak it gets depends on the
//! CPU, on how its steps are addressed ([`Steps`]) and on how rustc
//! allocated that tile's registers, which no rule predicts (on one Zen 4,
//! 10x2 and 6x4 tiles ran at 85-94 % of the peak while 12x2 and 8x3
//! spilled and ran at 30-55 %; on one Xeon the 12x2 tile stepping through
//! offset tables, its twelve row pointers and two tables more than the
//! sixteen general registers hold, reloaded pointers and shuffled
//! accumulators through the stack every step and ran a 3x3 convolution's
//! weight gradient at 100-170 GFLOP/s where 10x2 ran it at 235). So a
//! tile's speed is a [`TileRates`] entry per kind of steps: measured on the
//! host ([`crate::codegen::micro::calibrate`], kept in a persistent cache)
//! or, where nothing is measured (tests, `TileSource::Model`), the model in
//! [`TileRates::model`]. A product then takes the tile whose blocks cost
//! the least time in total: full and partial row blocks, column blocks
//! rounded up to whole tiles, and the B panel gathered where its columns
//! are not whole adjacent vectors.
//!
//! The tile never changes a result: every element is summed in the same
//! order whatever the tile (see [`crate::codegen::micro`]).

use crate::target::{MAX_TILE_ROWS as MAX_ROWS, ProductIsa};
use std::fmt;

/// Vectors a tile may span, at most: the widest ISA's.
const MAX_VECTORS: usize = ProductIsa::Avx512.max_tile_vectors();

/// How a tile's reduction finds each step's operands: the driver's two
/// loops, which rustc compiles (and allocates registers for) separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steps {
    /// One float apart in A (a row-major A read along its rows) and a
    /// constant distance apart in B, B's vectors adjacent: every address
    /// a constant displacement from a row's pointer.
    Dense,
    /// A constant distance apart in A and in B (a transposed A, and any B
    /// read from a gathered panel): the pointers advance.
    Strided,
    /// From offset tables: A in segments (a convolution's weight gradient
    /// over output rows), or B read in place through a row table or in
    /// segments (a convolution's taps).
    Tables,
    /// From offset tables with the tile's vectors in different rows of B's
    /// wrap (a convolution over images narrower than the tile): each
    /// vector read from its own base, one register each.
    Spread,
}

impl Steps {
    /// Every kind, in the order of the cache text's columns.
    pub const ALL: [Steps; 4] = [Steps::Dense, Steps::Strided, Steps::Tables, Steps::Spread];

    fn index(self) -> usize {
        match self {
            Steps::Dense => 0,
            Steps::Strided => 1,
            Steps::Tables => 2,
            Steps::Spread => 3,
        }
    }

    /// The steps a tile of `vectors` takes on a product whose steps are
    /// `self` and whose B, read in place, wraps in rows of `wrap_row`
    /// columns of `lanes`-lane vectors: when the tile's vectors lie in
    /// different rows (rows of whole vectors that are not whole tiles),
    /// tables become [`Steps::Spread`] and dense steps strided ones.
    pub fn for_tile(self, wrap_row: Option<usize>, vectors: usize, lanes: usize) -> Steps {
        let spread = |w: usize| vectors > 1 && w.is_multiple_of(lanes) && !w.is_multiple_of(vectors * lanes);
        match self {
            Steps::Tables if wrap_row.is_some_and(spread) => Steps::Spread,
            Steps::Dense if wrap_row.is_some_and(spread) => Steps::Strided,
            _ => self,
        }
    }
}

/// Each tile's speed as a fraction of the ISA's FMA peak, per kind of steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TileRates {
    /// The ISA the rates are for.
    pub isa: ProductIsa,
    /// `efficiency[steps][rows - 1][vectors - 1]`: above 0 for the tiles
    /// the ISA has, 0 for the others.
    efficiency: [[[f32; MAX_VECTORS]; MAX_ROWS]; Steps::ALL.len()],
}

/// Rows at most of a tile stepping through offset tables: x86-64's sixteen
/// general registers less the two tables, B's pointer, the step counter
/// and its end, and the stack pointer leave ten for its row pointers.
/// With more, rustc reloads pointers every step and (11 and 12 rows by 2
/// vectors, `--emit asm`) moves accumulators through the stack inside the
/// loop, which ran a 3x3 convolution's weight gradient at 100-170 GFLOP/s
/// where 10 rows ran it at 235, the slow end when the stack's addresses
/// alias the operands' (`setarch -R`). The calibration shows it too
/// (11x2 and 12x2 at about 0.42 of the peak, 10x2 at 0.66), but how badly
/// depends on where the stack falls, so the rule is the registers'.
pub const TABLE_ROW_REGISTERS: usize = 10;

/// The most rows a tile of `vectors` may have on `isa` with `steps`: with
/// [`Steps::Spread`], each vector's base takes the register B's pointer
/// took.
pub fn max_rows(isa: ProductIsa, vectors: usize, steps: Steps) -> usize {
    match steps {
        Steps::Dense | Steps::Strided => isa.max_tile_rows(vectors),
        Steps::Tables => isa.max_tile_rows(vectors).min(TABLE_ROW_REGISTERS),
        Steps::Spread => isa.max_tile_rows(vectors).min((TABLE_ROW_REGISTERS + 1).saturating_sub(vectors).max(1)),
    }
}

impl TileRates {
    /// Rates with every tile at 0 (none usable) until set.
    pub fn empty(isa: ProductIsa) -> TileRates {
        TileRates { isa, efficiency: [[[0.0; MAX_VECTORS]; MAX_ROWS]; Steps::ALL.len()] }
    }

    /// The tiles `isa` has, as `(rows, vectors)`.
    pub fn tiles(isa: ProductIsa) -> impl Iterator<Item = (usize, usize)> {
        (1..=isa.max_tile_vectors()).flat_map(move |v| (1..=isa.max_tile_rows(v)).map(move |r| (r, v)))
    }

    /// A model of a tile's efficiency from instruction counts: each step
    /// issues `rows * vectors` multiply-adds next to `vectors` loads of B,
    /// `rows` broadcasts of A and about 5 instructions of loop overhead
    /// (counted at half an FMA each, two of them issuing per multiply-add's
    /// slot), stepping through tables 2 loads more, and fewer than 4 independent
    /// accumulators leave the FMA unit waiting on its latency.
    pub fn model(isa: ProductIsa) -> TileRates {
        let mut rates = TileRates::empty(isa);
        for steps in Steps::ALL {
            for (rows, vectors) in TileRates::tiles(isa) {
                let acc = (rows * vectors) as f64;
                let tables = match steps {
                    Steps::Dense | Steps::Strided => 0,
                    Steps::Tables => 2,
                    Steps::Spread => 2 + vectors,
                };
                let overhead = (rows + vectors + 5 + tables) as f64 / 2.0;
                let latency = (acc / 4.0).min(1.0);
                rates.set(steps, rows, vectors, latency * acc / (acc + overhead));
            }
        }
        rates
    }

    /// Sets one tile's efficiency (clamped to `[0, 1.5]`: a measured one
    /// may pass a peak measured a little low); ignored for a tile the ISA
    /// does not have.
    pub fn set(&mut self, steps: Steps, rows: usize, vectors: usize, efficiency: f64) {
        if (1..=self.isa.max_tile_vectors()).contains(&vectors) && (1..=self.isa.max_tile_rows(vectors)).contains(&rows)
        {
            self.efficiency[steps.index()][rows - 1][vectors - 1] = efficiency.clamp(0.0, 1.5) as f32;
        }
    }

    /// The efficiency of a tile, 0 for one the ISA does not have.
    pub fn get(&self, steps: Steps, rows: usize, vectors: usize) -> f64 {
        if rows == 0 || vectors == 0 || rows > MAX_ROWS || vectors > MAX_VECTORS {
            return 0.0;
        }
        f64::from(self.efficiency[steps.index()][rows - 1][vectors - 1])
    }

    /// Whether every tile of the ISA has a usable rate for every kind of steps.
    pub fn complete(&self) -> bool {
        Steps::ALL.iter().all(|&s| TileRates::tiles(self.isa).all(|(r, v)| self.get(s, r, v) > 0.0))
    }

    /// Reads the text [`fmt::Display`] writes; `None` when it is not a
    /// complete table for `isa`.
    pub fn parse(isa: ProductIsa, text: &str) -> Option<TileRates> {
        let mut rates = TileRates::empty(isa);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut words = line.split_whitespace();
            let (rows, vectors) = words.next()?.split_once('x')?;
            let (rows, vectors): (usize, usize) = (rows.parse().ok()?, vectors.parse().ok()?);
            for steps in Steps::ALL {
                let value: f64 = words.next()?.parse().ok()?;
                if !(value > 0.0 && value <= 1.5) {
                    return None;
                }
                rates.set(steps, rows, vectors, value);
            }
            if words.next().is_some() {
                return None;
            }
        }
        rates.complete().then_some(rates)
    }
}

impl fmt::Display for TileRates {
    /// One line per tile: `ROWSxVECTORS DENSE STRIDED TABLES SPREAD`, its
    /// efficiency with each kind of [`Steps`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (rows, vectors) in TileRates::tiles(self.isa) {
            let [dense, strided, tables, spread] = Steps::ALL.map(|s| self.get(s, rows, vectors));
            writeln!(f, "{rows}x{vectors} {dense:.4} {strided:.4} {tables:.4} {spread:.4}")?;
        }
        Ok(())
    }
}

/// A product as the driver sees it (after transposing, for a transposed
/// tile): `m x n` results from `k` steps, and which of B's column blocks
/// it reads in place.
#[derive(Clone, Copy, Debug)]
pub struct DriverProduct {
    /// Rows of the driver's C.
    pub m: usize,
    /// Columns of the driver's C.
    pub n: usize,
    /// Reduction steps.
    pub k: usize,
    /// B's columns are adjacent (column stride 1).
    pub b_adjacent: bool,
    /// Columns per row of B's wrap, if its columns wrap.
    pub b_wrap_row: Option<usize>,
    /// How the reduction finds its steps.
    pub steps: Steps,
}

/// The tile of `product` with the least estimated time among those of
/// `vectors` (each at most the ISA's) and the rows the ISA allows with the
/// product's steps ([`max_rows`]): the sum over row and column blocks (as
/// the driver cuts them: [`crate::codegen::micro::row_tiles`]) of each
/// block's multiply-adds, lanes past a partial vector included, divided by its
/// tile's efficiency, plus one multiply-add's time per element gathered
/// into a panel (a load and a store, as costly as a vector multiply-add).
/// Ties go to the earlier of `vectors` and to fewer rows.
pub fn choose(product: DriverProduct, rates: &TileRates, vectors: &[usize]) -> Option<(usize, usize)> {
    let isa = rates.isa;
    let lanes = isa.lanes();
    let DriverProduct { m, n, k, b_adjacent, b_wrap_row, steps } = product;
    let (m, n, k) = (m.max(1), n.max(1), k.max(1) as f64);
    let mut best: Option<(f64, (usize, usize))> = None;
    for &v in vectors {
        let width = v * lanes;
        // Column blocks as `(count, vectors)`: wrap rows that are not whole
        // vectors are cut into blocks of their own, the last of each row
        // with fewer (and a partial) vectors, all read in place; else
        // blocks of `width`, the last partial.
        let row = b_wrap_row.filter(|&w| b_adjacent && crate::codegen::micro::cuts_row_blocks(m, w, lanes, true));
        let (shape, gathered) = match row {
            Some(row) => {
                let (rows_of_b, tail) = (n / row, n % row);
                let mut shape = vec![(rows_of_b * (row / width), v)];
                if !row.is_multiple_of(width) {
                    shape.push((rows_of_b, (row % width).div_ceil(lanes)));
                }
                if tail > 0 {
                    shape.push((tail / width, v));
                    shape.push((usize::from(!tail.is_multiple_of(width)), (tail % width).div_ceil(lanes)));
                }
                (shape, 0)
            }
            None => {
                let blocks = n.div_ceil(width);
                // All gathered when B's columns are apart or wrap across
                // rows that split the block's vectors (a block's vectors
                // may lie in different rows, each whole in one), else the
                // last block when it is partial.
                let split = |w: usize| !w.is_multiple_of(lanes) && !w.is_multiple_of(width);
                let all = !b_adjacent || b_wrap_row.is_some_and(split);
                (vec![(blocks, v)], if all { blocks } else { usize::from(!n.is_multiple_of(width)) })
            }
        };
        let gather = (gathered * width) as f64 * k;
        let steps = steps.for_tile(b_wrap_row.filter(|_| b_adjacent), v, lanes);
        for rows in 1..=max_rows(isa, v, steps) {
            let (tiles, short, tall) = crate::codegen::micro::row_tiles(m, rows);
            let time = |r: usize, u: usize| {
                let e = rates.get(steps, r, u);
                if e > 0.0 { (r * u) as f64 * k / e } else { f64::INFINITY }
            };
            let per_block = |u: usize| {
                let shorter = if tiles > tall { (tiles - tall) as f64 * time(short, u) } else { 0.0 };
                let taller = if tall > 0 { tall as f64 * time(short + 1, u) } else { 0.0 };
                shorter + taller
            };
            let total = shape
                .iter()
                .filter(|(count, _)| *count > 0)
                .map(|&(count, u)| count as f64 * per_block(u))
                .sum::<f64>()
                + gather;
            // The tallest tile the driver then runs: heights that cut
            // the rows alike are one tile.
            let tallest = short + usize::from(tall > 0);
            if best.is_none_or(|(t, _)| total < t * (1.0 - 1e-9)) {
                best = Some((total, (tallest, v)));
            }
        }
    }
    best.filter(|(t, _)| t.is_finite()).map(|(_, tile)| tile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(m: usize, n: usize, k: usize) -> DriverProduct {
        DriverProduct { m, n, k, b_adjacent: true, b_wrap_row: None, steps: Steps::Strided }
    }

    #[test]
    fn the_model_rates_every_tile_and_round_trips_as_text() {
        for isa in [ProductIsa::Avx2, ProductIsa::Avx512] {
            let rates = TileRates::model(isa);
            assert!(rates.complete(), "{isa}");
            let back = TileRates::parse(isa, &rates.to_string()).expect("parses");
            for (s, (r, v)) in Steps::ALL.into_iter().flat_map(|s| TileRates::tiles(isa).map(move |t| (s, t))) {
                assert!((back.get(s, r, v) - rates.get(s, r, v)).abs() < 1e-4, "{isa} {r}x{v} {s:?}");
            }
        }
    }

    /// A tile's vectors spread over wrap rows when the rows are whole
    /// vectors but not whole tiles; then tables are priced as spread steps
    /// and dense ones as strided.
    #[test]
    fn spread_steps_are_told_apart_per_tile() {
        let lanes = 16;
        assert_eq!(Steps::Tables.for_tile(Some(16), 4, lanes), Steps::Spread);
        assert_eq!(Steps::Tables.for_tile(Some(32), 4, lanes), Steps::Spread);
        assert_eq!(Steps::Tables.for_tile(Some(64), 4, lanes), Steps::Tables);
        assert_eq!(Steps::Tables.for_tile(Some(16), 1, lanes), Steps::Tables);
        // Rows that are not whole vectors are cut into blocks of their own.
        assert_eq!(Steps::Tables.for_tile(Some(28), 2, lanes), Steps::Tables);
        assert_eq!(Steps::Tables.for_tile(None, 4, lanes), Steps::Tables);
        assert_eq!(Steps::Dense.for_tile(Some(16), 2, lanes), Steps::Strided);
        assert_eq!(Steps::Dense.for_tile(Some(32), 2, lanes), Steps::Dense);
        assert_eq!(max_rows(ProductIsa::Avx512, 2, Steps::Spread), TABLE_ROW_REGISTERS + 1 - 2);
    }

    #[test]
    fn a_broken_cache_text_is_refused() {
        let isa = ProductIsa::Avx512;
        let good = TileRates::model(isa).to_string();
        let missing: String = good.lines().skip(1).map(|l| format!("{l}\n")).collect();
        for bad in [
            String::new(),
            missing,
            good.replace("1x1", "1y1"),
            good.replacen(" 0.", " -0.", 1),
            "13x1 0.5 0.5\n".into(),
            // A table of one kind of steps only (an older cache).
            good.lines().map(|l| l.rsplit_once(' ').map_or(l, |(head, _)| head)).map(|l| format!("{l}\n")).collect(),
        ] {
            assert!(TileRates::parse(isa, &bad).is_none(), "accepted {bad:?}");
        }
    }

    /// The fastest tile wins, a shape that wastes lanes or rows loses, and
    /// wrapped rows that are not whole vectors count as the driver's
    /// blocks of one row each.
    #[test]
    fn the_cheapest_tile_is_chosen() {
        let isa = ProductIsa::Avx512;
        let all: Vec<usize> = (1..=4).collect();
        let mut rates = TileRates::empty(isa);
        for (s, (r, v)) in Steps::ALL.into_iter().flat_map(|s| TileRates::tiles(isa).map(move |t| (s, t))) {
            rates.set(s, r, v, 0.3);
        }
        rates.set(Steps::Strided, 10, 2, 0.9);
        rates.set(Steps::Strided, 6, 4, 0.9);
        // 40 rows, 32 columns: two vectors fill the columns, 10 rows the rows.
        assert_eq!(choose(dense(40, 32, 256), &rates, &all), Some((10, 2)));
        // 36 rows, 64 columns: 6x4 covers them in whole tiles, 10x2 leaves
        // a 6-row block at the slow rate in each of its two column blocks.
        assert_eq!(choose(dense(36, 64, 256), &rates, &all), Some((6, 4)));
        // Wrapped rows of 32 hold whole vectors: a 4-vector block spans two
        // rows and is still read in place.
        let whole = DriverProduct { b_wrap_row: Some(32), ..dense(36, 64, 256) };
        assert_eq!(choose(whole, &rates, &all), Some((6, 4)));
        // Wrapped rows of 28 on 16 lanes: each row is a block of two
        // vectors, the second partial; one vector per block would take
        // two blocks per row at the same rate.
        let lenet = DriverProduct { b_wrap_row: Some(28), ..dense(6, 28 * 28, 75) };
        rates.set(Steps::Strided, 6, 2, 0.6);
        assert_eq!(choose(lenet, &rates, &all), Some((6, 2)));
        // Steps through tables are priced at their own rates: a tile fast
        // with strided steps and slow with tables (registers spilled) loses.
        rates.set(Steps::Tables, 10, 2, 0.2);
        rates.set(Steps::Tables, 8, 2, 0.8);
        let taps = DriverProduct { steps: Steps::Tables, ..dense(40, 32, 256) };
        assert_eq!(choose(taps, &rates, &all), Some((8, 2)));
        // However fast it measured, a tile stepping through tables has no
        // more rows than the registers hold pointers for.
        rates.set(Steps::Tables, 12, 2, 1.5);
        let rows = choose(DriverProduct { steps: Steps::Tables, ..dense(48, 32, 256) }, &rates, &all).map(|t| t.0);
        assert!(rows.is_some_and(|r| r <= TABLE_ROW_REGISTERS), "{rows:?}");
        rates.set(Steps::Strided, 12, 2, 1.5);
        assert_eq!(choose(dense(48, 32, 256), &rates, &all), Some((12, 2)));
        // Only the vectors allowed are considered.
        assert_eq!(choose(dense(40, 32, 256), &rates, &[1]).map(|t| t.1), Some(1));
    }
}
