//! A matrix product's block: `gemm m M n N k K { field... }`, one field per
//! line in any order, each at most once; `tile`, `a`, `b` and `c` required.

use super::lex::Tok;
use super::parse::{PResult, Parser};
use super::{ParseError, ParseErrorKind, Pos};
use crate::kernel::*;

/// Stores `value` in `slot`, or fails at `at` (the field's name) if the
/// field was already given.
fn set_once<T>(slot: &mut Option<T>, value: T, field: &'static str, at: Pos) -> PResult<()> {
    if slot.is_some() {
        return Err(ParseError::new(at, ParseErrorKind::DuplicateField(field)));
    }
    *slot = Some(value);
    Ok(())
}

impl Parser {
    /// The product after the `gemm` keyword.
    pub(super) fn gemm(&mut self) -> PResult<Gemm> {
        self.expect_word("m")?;
        let m = self.usize()?;
        self.expect_word("n")?;
        let n = self.usize()?;
        self.expect_word("k")?;
        let k = self.usize()?;
        self.expect_punct("{")?;
        let (mut tile, mut a, mut b, mut c) = (None, None, None, None);
        let (mut b_rows, mut k_split, mut b_wrap, mut c_rows, mut c_wrap) = (None, None, None, None, None);
        let (mut a_splat, mut accumulate) = (None, None);
        let (mut bias, mut activation, mut pre_activation, mut grad_mask) = (None, None, None, None);
        while !self.is_punct("}") {
            let at = self.pos();
            let field = match self.peek() {
                Tok::Ident(word) => word.clone(),
                _ => return self.expected("a gemm field or `}`"),
            };
            self.next();
            match field.as_str() {
                "tile" => set_once(&mut tile, self.tile()?, "tile", at)?,
                "a" => set_once(&mut a, self.matrix()?, "a", at)?,
                "b" => set_once(&mut b, self.matrix()?, "b", at)?,
                "c" => set_once(&mut c, self.matrix()?, "c", at)?,
                "b_rows" => set_once(&mut b_rows, self.buf()?, "b_rows", at)?,
                "c_rows" => set_once(&mut c_rows, self.buf()?, "c_rows", at)?,
                "k_split" => set_once(&mut k_split, self.k_split()?, "k_split", at)?,
                "b_wrap" => set_once(&mut b_wrap, self.wrap()?, "b_wrap", at)?,
                "c_wrap" => set_once(&mut c_wrap, self.wrap()?, "c_wrap", at)?,
                "a_splat" => set_once(&mut a_splat, (), "a_splat", at)?,
                "accumulate" => set_once(&mut accumulate, (), "accumulate", at)?,
                "bias" => set_once(&mut bias, self.bias()?, "bias", at)?,
                "activation" => set_once(&mut activation, self.activation()?, "activation", at)?,
                "pre_activation" => set_once(&mut pre_activation, self.matrix()?, "pre_activation", at)?,
                "grad_mask" => {
                    let mask = (self.activation()?, self.matrix()?);
                    set_once(&mut grad_mask, mask, "grad_mask", at)?
                }
                _ => {
                    let kind = ParseErrorKind::Expected {
                        expected: "a gemm field (`tile`, `a`, `b`, `c`, `b_rows`, `k_split`, `b_wrap`, `c_rows`, \
                                   `c_wrap`, `a_splat`, `accumulate`, `bias`, `activation`, `pre_activation`, \
                                   `grad_mask`) or `}`"
                            .to_string(),
                        found: format!("`{field}`"),
                    };
                    return Err(ParseError::new(at, kind));
                }
            }
        }
        let missing = |p: &Parser, field| p.error(ParseErrorKind::MissingField(field));
        let tile = tile.ok_or_else(|| missing(self, "tile"))?;
        let a = a.ok_or_else(|| missing(self, "a"))?;
        let b = b.ok_or_else(|| missing(self, "b"))?;
        let c = c.ok_or_else(|| missing(self, "c"))?;
        self.next();
        let epilogue = Epilogue { accumulate: accumulate.is_some(), bias, activation, pre_activation, grad_mask };
        Ok(Gemm {
            m,
            n,
            k,
            a,
            b,
            b_rows,
            k_split,
            b_wrap,
            c_rows,
            c_wrap,
            a_splat: a_splat.is_some(),
            c,
            epilogue,
            tile,
        })
    }

    /// `outer rows R vectors V unroll U`, `dot rows R cols C [steps N|written_out]`
    /// or `micro ISA rows R vectors V [transposed]`.
    fn tile(&mut self) -> PResult<GemmTile> {
        if self.eat_word("outer") {
            self.expect_word("rows")?;
            let rows = self.usize()?;
            self.expect_word("vectors")?;
            let vectors = self.usize()?;
            self.expect_word("unroll")?;
            let unroll = self.usize()?;
            return Ok(GemmTile::Outer { rows, vectors, unroll });
        }
        if self.eat_word("dot") {
            self.expect_word("rows")?;
            let rows = self.usize()?;
            self.expect_word("cols")?;
            let cols = self.usize()?;
            let steps = if !self.eat_word("steps") {
                DotSteps::Rolled(1)
            } else if self.eat_word("written_out") {
                DotSteps::WrittenOut
            } else {
                DotSteps::Rolled(self.usize()?)
            };
            return Ok(GemmTile::Dot { rows, cols, steps });
        }
        if self.eat_word("micro") {
            let isa = self.product_isa()?;
            self.expect_word("rows")?;
            let rows = self.usize()?;
            self.expect_word("vectors")?;
            let vectors = self.usize()?;
            let transposed = self.eat_word("transposed");
            return Ok(GemmTile::Micro { isa, rows, vectors, transposed });
        }
        self.expected("`outer`, `dot` or `micro`")
    }

    /// `%N[offset] stride ROW COL`.
    fn matrix(&mut self) -> PResult<MatrixRef> {
        let buf = self.buf()?;
        self.expect_punct("[")?;
        let offset = self.idx()?;
        self.expect_punct("]")?;
        self.expect_word("stride")?;
        let row_stride = self.i64()?;
        let col_stride = self.i64()?;
        Ok(MatrixRef { buf, offset, row_stride, col_stride })
    }

    /// `outer S a_stride A b_stride B`.
    fn k_split(&mut self) -> PResult<KSplit> {
        self.expect_word("outer")?;
        let outer = self.usize()?;
        self.expect_word("a_stride")?;
        let a_stride = self.i64()?;
        self.expect_word("b_stride")?;
        let b_stride = self.i64()?;
        Ok(KSplit { outer, a_stride, b_stride })
    }

    /// `row R stride S`.
    fn wrap(&mut self) -> PResult<ColumnWrap> {
        self.expect_word("row")?;
        let row = self.usize()?;
        self.expect_word("stride")?;
        let stride = self.i64()?;
        Ok(ColumnWrap { row, stride })
    }

    /// `per_row %N[offset]` or `per_column %N[offset]`.
    fn bias(&mut self) -> PResult<Bias> {
        let make = if self.eat_word("per_row") {
            Bias::PerRow
        } else if self.eat_word("per_column") {
            Bias::PerColumn
        } else {
            return self.expected("`per_row` or `per_column`");
        };
        let buf = self.buf()?;
        self.expect_punct("[")?;
        let offset = self.idx()?;
        self.expect_punct("]")?;
        Ok(make(buf, offset))
    }
}
