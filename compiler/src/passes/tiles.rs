//! Register tiles for the wide micro-kernels, chosen per product by cost.
//!
//! A tile of `rows x vectors` runs each reduction step as `rows * vectors`
//! multiply-adds; how close to the ISA's FMA peak it gets depends on the
//! CPU and on how rustc allocated that tile's registers, which no rule
//! predicts (on one Zen 4, 10x2 and 6x4 tiles ran at 85-94 % of the peak
//! while 12x2 and 8x3 spilled and ran at 30-55 %). So a tile's speed is a
//! [`TileRates`] entry: measured on the host
//! ([`crate::codegen::micro::calibrate`], kept in a persistent cache) or,
//! where nothing is measured (tests, `TileSource::Model`), the model in
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

/// Each tile's speed as a fraction of the ISA's FMA peak.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TileRates {
    /// The ISA the rates are for.
    pub isa: ProductIsa,
    /// `efficiency[rows - 1][vectors - 1]`: above 0 for the tiles the ISA
    /// has, 0 for the others.
    efficiency: [[f32; MAX_VECTORS]; MAX_ROWS],
}

impl TileRates {
    /// Rates with every tile at 0 (none usable) until set.
    pub fn empty(isa: ProductIsa) -> TileRates {
        TileRates { isa, efficiency: [[0.0; MAX_VECTORS]; MAX_ROWS] }
    }

    /// The tiles `isa` has, as `(rows, vectors)`.
    pub fn tiles(isa: ProductIsa) -> impl Iterator<Item = (usize, usize)> {
        (1..=isa.max_tile_vectors()).flat_map(move |v| (1..=isa.max_tile_rows(v)).map(move |r| (r, v)))
    }

    /// A model of a tile's efficiency from instruction counts: each step
    /// issues `rows * vectors` multiply-adds next to `vectors` loads of B,
    /// `rows` broadcasts of A and about 5 instructions of loop and table
    /// overhead (counted at half an FMA each, two of them issuing per
    /// multiply-add's slot), and fewer than 4 independent accumulators
    /// leave the FMA unit waiting on its latency.
    pub fn model(isa: ProductIsa) -> TileRates {
        let mut rates = TileRates::empty(isa);
        for (rows, vectors) in TileRates::tiles(isa) {
            let acc = (rows * vectors) as f64;
            let overhead = (rows + vectors + 5) as f64 / 2.0;
            let latency = (acc / 4.0).min(1.0);
            rates.set(rows, vectors, latency * acc / (acc + overhead));
        }
        rates
    }

    /// Sets one tile's efficiency (clamped to `[0, 1.5]`: a measured one
    /// may pass a peak measured a little low); ignored for a tile the ISA
    /// does not have.
    pub fn set(&mut self, rows: usize, vectors: usize, efficiency: f64) {
        if (1..=self.isa.max_tile_vectors()).contains(&vectors) && (1..=self.isa.max_tile_rows(vectors)).contains(&rows)
        {
            self.efficiency[rows - 1][vectors - 1] = efficiency.clamp(0.0, 1.5) as f32;
        }
    }

    /// The efficiency of a tile, 0 for one the ISA does not have.
    pub fn get(&self, rows: usize, vectors: usize) -> f64 {
        if rows == 0 || vectors == 0 || rows > MAX_ROWS || vectors > MAX_VECTORS {
            return 0.0;
        }
        f64::from(self.efficiency[rows - 1][vectors - 1])
    }

    /// Whether every tile of the ISA has a usable rate.
    pub fn complete(&self) -> bool {
        TileRates::tiles(self.isa).all(|(r, v)| self.get(r, v) > 0.0)
    }

    /// Reads the text [`fmt::Display`] writes; `None` when it is not a
    /// complete table for `isa`.
    pub fn parse(isa: ProductIsa, text: &str) -> Option<TileRates> {
        let mut rates = TileRates::empty(isa);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut words = line.split_whitespace();
            let (Some(shape), Some(value), None) = (words.next(), words.next(), words.next()) else {
                return None;
            };
            let (rows, vectors) = shape.split_once('x')?;
            let (rows, vectors): (usize, usize) = (rows.parse().ok()?, vectors.parse().ok()?);
            let value: f64 = value.parse().ok()?;
            if !(value > 0.0 && value <= 1.5) {
                return None;
            }
            rates.set(rows, vectors, value);
        }
        rates.complete().then_some(rates)
    }
}

impl fmt::Display for TileRates {
    /// One line per tile: `ROWSxVECTORS EFFICIENCY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (rows, vectors) in TileRates::tiles(self.isa) {
            writeln!(f, "{rows}x{vectors} {:.4}", self.get(rows, vectors))?;
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
}

/// The tile of `product` with the least estimated time among those of
/// `vectors` (each at most the ISA's) and the rows the ISA allows: the sum
/// over row and column blocks (as the driver cuts them) of each block's
/// multiply-adds, lanes past a partial vector included, divided by its
/// tile's efficiency, plus one multiply-add's time per element gathered
/// into a panel (a load and a store, as costly as a vector multiply-add).
/// Ties go to the earlier of `vectors` and to fewer rows.
pub fn choose(product: DriverProduct, rates: &TileRates, vectors: &[usize]) -> Option<(usize, usize)> {
    let isa = rates.isa;
    let lanes = isa.lanes();
    let DriverProduct { m, n, k, b_adjacent, b_wrap_row } = product;
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
        for rows in 1..=isa.max_tile_rows(v) {
            let full = (m / rows) as f64;
            let rest = m % rows;
            let time = |r: usize, u: usize| {
                let e = rates.get(r, u);
                if e > 0.0 { (r * u) as f64 * k / e } else { f64::INFINITY }
            };
            let per_block = |u: usize| full * time(rows, u) + if rest > 0 { time(rest, u) } else { 0.0 };
            let total = shape
                .iter()
                .filter(|(count, _)| *count > 0)
                .map(|&(count, u)| count as f64 * per_block(u))
                .sum::<f64>()
                + gather;
            if best.is_none_or(|(t, _)| total < t * (1.0 - 1e-9)) {
                best = Some((total, (rows, v)));
            }
        }
    }
    best.filter(|(t, _)| t.is_finite()).map(|(_, tile)| tile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(m: usize, n: usize, k: usize) -> DriverProduct {
        DriverProduct { m, n, k, b_adjacent: true, b_wrap_row: None }
    }

    #[test]
    fn the_model_rates_every_tile_and_round_trips_as_text() {
        for isa in [ProductIsa::Avx2, ProductIsa::Avx512] {
            let rates = TileRates::model(isa);
            assert!(rates.complete(), "{isa}");
            let back = TileRates::parse(isa, &rates.to_string()).expect("parses");
            for (r, v) in TileRates::tiles(isa) {
                assert!((back.get(r, v) - rates.get(r, v)).abs() < 1e-4, "{isa} {r}x{v}");
            }
        }
    }

    #[test]
    fn a_broken_cache_text_is_refused() {
        let isa = ProductIsa::Avx512;
        let good = TileRates::model(isa).to_string();
        let missing: String = good.lines().skip(1).map(|l| format!("{l}\n")).collect();
        for bad in
            [String::new(), missing, good.replace("1x1", "1y1"), good.replacen(" 0.", " -0.", 1), "13x1 0.5\n".into()]
        {
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
        for (r, v) in TileRates::tiles(isa) {
            rates.set(r, v, 0.3);
        }
        rates.set(10, 2, 0.9);
        rates.set(6, 4, 0.9);
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
        rates.set(6, 2, 0.6);
        assert_eq!(choose(lenet, &rates, &all), Some((6, 2)));
        // Only the vectors allowed are considered.
        assert_eq!(choose(dense(40, 32, 256), &rates, &[1]).map(|t| t.1), Some(1));
    }
}
