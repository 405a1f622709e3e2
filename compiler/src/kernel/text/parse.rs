//! Reads kernel IR text back into a [`Program`]: the token cursor, the
//! program, its buffers, kernels, statements and matrix products.
//! Expressions are in `parse_expr.rs`.

use super::lex::{Tok, tokenize};
use super::{MAX_NESTING, ParseError, ParseErrorKind, Pos};
use crate::graph::NodeId;
use crate::kernel::*;

pub(super) type PResult<T> = Result<T, ParseError>;

/// Parses the text [`super::write_program`] prints.
pub fn parse_program(text: &str) -> Result<Program, ParseError> {
    let mut p = Parser { toks: tokenize(text)?, at: 0, depth: 0, buffers: 0 };
    let program = p.program()?;
    p.expect_eof()?;
    Ok(program)
}

/// A cursor over the tokens, with the nesting depth and the number of
/// buffers declared so far (for checking `%N`).
pub(super) struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    depth: usize,
    buffers: usize,
}

// The token cursor and the literals every part of the grammar shares.
impl Parser {
    pub(super) fn peek(&self) -> &Tok {
        // `tokenize` always ends with `Eof`, and `next` never moves past it.
        self.toks.get(self.at).map_or(&Tok::Eof, |(t, _)| t)
    }

    pub(super) fn pos(&self) -> Pos {
        self.toks.get(self.at).or(self.toks.last()).map_or(Pos { line: 1, column: 1 }, |&(_, p)| p)
    }

    pub(super) fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if tok != Tok::Eof {
            self.at += 1;
        }
        tok
    }

    /// An error at the current token: `expected`, and what came instead.
    pub(super) fn expected<T>(&self, expected: &str) -> PResult<T> {
        Err(self.error(ParseErrorKind::Expected { expected: expected.to_string(), found: self.peek().describe() }))
    }

    pub(super) fn error(&self, kind: ParseErrorKind) -> ParseError {
        ParseError::new(self.pos(), kind)
    }

    pub(super) fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    pub(super) fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    pub(super) fn eat_punct(&mut self, p: &str) -> bool {
        let found = self.is_punct(p);
        if found {
            self.next();
        }
        found
    }

    pub(super) fn eat_word(&mut self, w: &str) -> bool {
        let found = self.is_word(w);
        if found {
            self.next();
        }
        found
    }

    pub(super) fn expect_punct(&mut self, p: &str) -> PResult<()> {
        if self.eat_punct(p) { Ok(()) } else { self.expected(&format!("`{p}`")) }
    }

    pub(super) fn expect_word(&mut self, w: &str) -> PResult<()> {
        if self.eat_word(w) { Ok(()) } else { self.expected(&format!("`{w}`")) }
    }

    fn expect_eof(&mut self) -> PResult<()> {
        if *self.peek() == Tok::Eof { Ok(()) } else { self.expected("`kernel` or end of input") }
    }

    /// Runs `f` one nesting level deeper, failing past [`MAX_NESTING`].
    pub(super) fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(ParseErrorKind::TooDeep(MAX_NESTING)));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// The height of a node built over children of height `children`.
    pub(super) fn taller(&self, children: usize) -> PResult<usize> {
        if children >= MAX_NESTING { Err(self.error(ParseErrorKind::TooDeep(MAX_NESTING))) } else { Ok(children + 1) }
    }

    /// A non-negative decimal integer of type `ty`.
    fn unsigned<T: TryFrom<u64>>(&mut self, ty: &'static str, what: &str) -> PResult<T> {
        let Tok::Int(text) = self.peek().clone() else { return self.expected(what) };
        let overflow = || self.error(ParseErrorKind::IntegerOverflow { text: text.clone(), ty });
        let value = text.parse::<u64>().ok().and_then(|v| T::try_from(v).ok()).ok_or_else(overflow)?;
        self.next();
        Ok(value)
    }

    pub(super) fn usize(&mut self) -> PResult<usize> {
        self.unsigned("usize", "an integer")
    }

    /// An optionally negative `i64`.
    pub(super) fn i64(&mut self) -> PResult<i64> {
        let start = self.at;
        let negative = self.eat_punct("-");
        let Tok::Int(text) = self.peek().clone() else { return self.expected("an integer") };
        let signed = if negative { format!("-{text}") } else { text.clone() };
        let Ok(value) = signed.parse::<i64>() else {
            self.at = start;
            return Err(self.error(ParseErrorKind::IntegerOverflow { text: signed, ty: "i64" }));
        };
        self.next();
        Ok(value)
    }

    /// A word `prefix` followed by a `u32` (`v3`, `a0`, `n12`), if the next
    /// token is one; `None` leaves the cursor where it was.
    pub(super) fn numbered(&mut self, prefix: char) -> PResult<Option<u32>> {
        let Tok::Ident(word) = self.peek() else { return Ok(None) };
        let Some(digits) = word.strip_prefix(prefix) else { return Ok(None) };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let Ok(n) = digits.parse::<u32>() else {
            return Err(self.error(ParseErrorKind::IntegerOverflow { text: digits.to_string(), ty: "u32" }));
        };
        self.next();
        Ok(Some(n))
    }

    pub(super) fn expect_numbered(&mut self, prefix: char, what: &str) -> PResult<u32> {
        match self.numbered(prefix)? {
            Some(n) => Ok(n),
            None => self.expected(what),
        }
    }

    fn node(&mut self) -> PResult<NodeId> {
        Ok(NodeId::new(self.expect_numbered('n', "a graph node `nN`")? as usize))
    }

    /// `%N`, which must name a declared buffer.
    pub(super) fn buf(&mut self) -> PResult<BufId> {
        let Tok::Buf(digits) = self.peek().clone() else { return self.expected("a buffer `%N`") };
        let count = self.buffers;
        let unknown = |id: u64| self.error(ParseErrorKind::UnknownBuffer { id, count });
        let Ok(id) = digits.parse::<u64>() else {
            return Err(self.error(ParseErrorKind::IntegerOverflow { text: digits, ty: "u64" }));
        };
        let id = usize::try_from(id).ok().filter(|&b| b < count).ok_or_else(|| unknown(id))?;
        self.next();
        Ok(id)
    }

    fn string(&mut self) -> PResult<String> {
        match self.next_if(|t| matches!(t, Tok::Str(_))) {
            Some(Tok::Str(s)) => Ok(s),
            _ => self.expected("a quoted name"),
        }
    }

    fn next_if(&mut self, want: impl Fn(&Tok) -> bool) -> Option<Tok> {
        if want(self.peek()) { Some(self.next()) } else { None }
    }

    /// `[item, item, ...]`.
    pub(super) fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.expect_punct("[")?;
        let mut items = Vec::new();
        if self.eat_punct("]") {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if self.eat_punct("]") {
                return Ok(items);
            }
            if !self.eat_punct(",") {
                return self.expected("`,` or `]`");
            }
        }
    }
}

// The program and its parts.
impl Parser {
    fn program(&mut self) -> PResult<Program> {
        self.expect_word("program")?;
        self.expect_word("threads")?;
        let threads = self.usize()?;
        self.expect_word("arena")?;
        let arena_len = self.usize()?;
        let target = if self.is_word("target") { self.target()? } else { Target::baseline() };
        let (buffers, offsets) = self.buffers()?;
        let mut values = Vec::new();
        while self.eat_word("value") {
            let node = self.node()?;
            self.expect_punct("->")?;
            values.push((node, self.buf()?));
        }
        let mut updates = Vec::new();
        while self.eat_word("update") {
            let leaf = self.buf()?;
            self.expect_punct("=")?;
            updates.push((leaf, self.buf()?));
        }
        let mut kernels = Vec::new();
        while self.is_word("kernel") {
            kernels.push(self.kernel(kernels.len())?);
        }
        Ok(Program { buffers, kernels, values, updates, offsets, arena_len, threads, target })
    }

    /// `target lanes 4 registers 16 [fma] l1d 49152 l2 2097152`.
    fn target(&mut self) -> PResult<Target> {
        self.expect_word("target")?;
        self.expect_word("lanes")?;
        let vector_lanes = self.usize()?;
        self.expect_word("registers")?;
        let vector_registers = self.usize()?;
        let fma = self.eat_word("fma");
        self.expect_word("l1d")?;
        let l1d_bytes = self.usize()?;
        self.expect_word("l2")?;
        let l2_bytes = self.usize()?;
        let products = if self.eat_word("products") { self.product_isa()? } else { ProductIsa::Vector128 };
        let tiles = if self.eat_word("tiles") {
            self.expect_word("measured")?;
            TileSource::Measured
        } else {
            TileSource::Model
        };
        Ok(Target { vector_lanes, vector_registers, fma, l1d_bytes, l2_bytes, products, tiles })
    }

    /// `v128`, `avx2` or `avx512`.
    pub(super) fn product_isa(&mut self) -> PResult<ProductIsa> {
        if let Tok::Ident(name) = self.peek()
            && let Some(isa) = ProductIsa::from_name(name)
        {
            self.next();
            return Ok(isa);
        }
        self.expected("`v128`, `avx2` or `avx512`")
    }

    /// The buffer declarations and the offsets, given per buffer or on one
    /// `offsets` line.
    fn buffers(&mut self) -> PResult<(Vec<Buffer>, Vec<usize>)> {
        let mut buffers = Vec::new();
        let mut offsets = Vec::new();
        let mut per_buffer = None;
        while let Tok::Buf(_) = self.peek() {
            let at = self.pos();
            let (buffer, offset) = self.buffer(buffers.len())?;
            if *per_buffer.get_or_insert(offset.is_some()) != offset.is_some() {
                let why = "not for some buffers only";
                return Err(ParseError::new(at, ParseErrorKind::InconsistentOffsets(why)));
            }
            buffers.push(buffer);
            offsets.extend(offset);
        }
        if self.is_word("offsets") {
            if per_buffer == Some(true) {
                return Err(self.error(ParseErrorKind::InconsistentOffsets("not both")));
            }
            self.next();
            offsets = self.list(Self::usize)?;
        }
        Ok((buffers, offsets))
    }

    /// `%N = kind "name" len L [per_thread] [@ offset] [data]`.
    fn buffer(&mut self, id: usize) -> PResult<(Buffer, Option<usize>)> {
        let Tok::Buf(digits) = self.peek().clone() else { return self.expected("a buffer declaration `%N = ...`") };
        let Ok(found) = digits.parse::<u64>() else {
            return Err(self.error(ParseErrorKind::IntegerOverflow { text: digits, ty: "u64" }));
        };
        if found != id as u64 {
            return Err(self.error(ParseErrorKind::OutOfOrder { what: "buffer", expected: id, found }));
        }
        self.next();
        self.buffers = id + 1;
        self.expect_punct("=")?;
        let kind_at = self.pos();
        let kind = match self.next() {
            Tok::Ident(k) if k == "leaf" => BufferKind::Leaf(self.node()?),
            Tok::Ident(k) if k == "value" => BufferKind::Value(self.node()?),
            Tok::Ident(k) if k == "scratch" => BufferKind::Scratch,
            Tok::Ident(k) if k == "const_f32" => BufferKind::ConstF32(Vec::new()),
            Tok::Ident(k) if k == "const_i32" => BufferKind::ConstI32(Vec::new()),
            found => {
                let expected = "a buffer kind (`leaf`, `value`, `scratch`, `const_f32`, `const_i32`)".to_string();
                return Err(ParseError::new(kind_at, ParseErrorKind::Expected { expected, found: found.describe() }));
            }
        };
        let name = self.string()?;
        self.expect_word("len")?;
        let len = self.usize()?;
        let per_thread = self.eat_word("per_thread");
        let offset = if self.eat_punct("@") { Some(self.usize()?) } else { None };
        let kind = match kind {
            BufferKind::ConstF32(_) => BufferKind::ConstF32(self.list(Self::f32_literal)?),
            BufferKind::ConstI32(_) => BufferKind::ConstI32(self.list(Self::i32)?),
            other => other,
        };
        Ok((Buffer { name, len, kind, per_thread }, offset))
    }

    fn i32(&mut self) -> PResult<i32> {
        let at = self.pos();
        let v = self.i64()?;
        i32::try_from(v)
            .map_err(|_| ParseError::new(at, ParseErrorKind::IntegerOverflow { text: v.to_string(), ty: "i32" }))
    }

    /// `kernel N "name" threads T flops F { nodes [..] reads [..] writes [..] in_place [..] body }`.
    fn kernel(&mut self, index: usize) -> PResult<Kernel> {
        self.expect_word("kernel")?;
        let number_at = self.pos();
        let number: u64 = self.unsigned("u64", "the kernel's number")?;
        if number != index as u64 {
            let kind = ParseErrorKind::OutOfOrder { what: "kernel", expected: index, found: number };
            return Err(ParseError::new(number_at, kind));
        }
        let name = self.string()?;
        self.expect_word("threads")?;
        let threads = self.usize()?;
        self.expect_word("flops")?;
        let flops = self.unsigned("u64", "an integer")?;
        let emission = if self.eat_word("as_scheduled") { Emission::AsScheduled } else { Emission::Optimised };
        self.expect_punct("{")?;
        self.expect_word("nodes")?;
        let nodes = self.list(Self::node)?;
        self.expect_word("reads")?;
        let reads = self.list(Self::buf)?;
        self.expect_word("writes")?;
        let writes = self.list(Self::buf)?;
        self.expect_word("in_place")?;
        let in_place = self.list(|p| {
            let input = p.buf()?;
            p.expect_punct("->")?;
            Ok((input, p.buf()?))
        })?;
        let body = self.statements()?;
        Ok(Kernel { name, nodes, body, reads, writes, in_place, flops, threads, emission })
    }

    /// Statements up to and including the closing `}` (the `{` is already read).
    fn statements(&mut self) -> PResult<Vec<Stmt>> {
        self.nested(|p| {
            let mut body = Vec::new();
            while !p.eat_punct("}") {
                body.push(p.statement()?);
            }
            Ok(body)
        })
    }

    fn block(&mut self) -> PResult<Vec<Stmt>> {
        self.expect_punct("{")?;
        self.statements()
    }

    /// One statement, told apart by its first token. Each form has its own
    /// function so that the frames on the recursive path stay small.
    fn statement(&mut self) -> PResult<Stmt> {
        if self.eat_word("for") {
            return self.loop_statement();
        }
        if self.eat_word("let") {
            let acc = self.expect_numbered('a', "an accumulator `aN`")?;
            self.expect_punct("=")?;
            return Ok(Stmt::Let { acc, init: self.val()? });
        }
        if self.eat_word("if") {
            return self.if_statement();
        }
        if self.eat_word("gemm") {
            return Ok(Stmt::Gemm(Box::new(self.gemm()?)));
        }
        if let Tok::Buf(_) = self.peek() {
            return self.store();
        }
        if let Some(acc) = self.numbered('a')? {
            return self.accumulator_update(acc);
        }
        self.expected("a statement (`for`, `let`, `if`, `gemm`, `%N[...]` or `aN`) or `}`")
    }

    /// `vN in 0..EXTENT [vector|parallel] LOWERING { ... }` after `for`.
    fn loop_statement(&mut self) -> PResult<Stmt> {
        let var = self.expect_numbered('v', "a loop variable `vN`")?;
        self.expect_word("in")?;
        if !matches!(self.peek(), Tok::Int(s) if s.bytes().all(|b| b == b'0')) {
            return self.expected("`0` (loops start at 0)");
        }
        self.next();
        self.expect_punct("..")?;
        let extent = self.usize()?;
        let mode = if self.eat_word("vector") {
            LoopMode::Vector
        } else if self.eat_word("parallel") {
            LoopMode::Parallel
        } else {
            LoopMode::Serial
        };
        let lowering = self.loop_lowering()?;
        Ok(Stmt::Loop(Loop { var, extent, mode, body: self.block()?, lowering }))
    }

    /// `[written_out] [tail overlap|scalar|scalar_written_out] [copies N]
    /// [chains N] [keep [aN, ...]]`, each left out at its default.
    fn loop_lowering(&mut self) -> PResult<LoopLowering> {
        let mut l = LoopLowering::default();
        if self.eat_word("written_out") {
            l.unroll = Unroll::WrittenOut;
        }
        if self.eat_word("tail") {
            l.tail = if self.eat_word("overlap") {
                VectorTail::Overlap
            } else if self.eat_word("scalar") {
                VectorTail::Scalar
            } else if self.eat_word("scalar_written_out") {
                VectorTail::ScalarWrittenOut
            } else {
                return self.expected("`overlap`, `scalar` or `scalar_written_out`");
            };
        }
        if self.eat_word("copies") {
            l.copies = self.usize()?;
        }
        if self.eat_word("chains") {
            l.chains = self.usize()?;
        }
        if self.eat_word("keep") {
            l.keep_partials = self.list(|p| p.expect_numbered('a', "an accumulator `aN`"))?;
        }
        Ok(l)
    }

    /// `COND { ... } [else { ... }]` after `if`.
    fn if_statement(&mut self) -> PResult<Stmt> {
        let cond = self.cond()?;
        let then = self.block()?;
        let otherwise = if self.eat_word("else") { self.block()? } else { Vec::new() };
        Ok(Stmt::If { cond, then, otherwise })
    }

    /// `%N[INDEX] = VALUE` or `%N[INDEX] += VALUE`.
    fn store(&mut self) -> PResult<Stmt> {
        let buf = self.buf()?;
        self.expect_punct("[")?;
        let idx = self.idx()?;
        self.expect_punct("]")?;
        let accumulate = if self.eat_punct("+=") {
            true
        } else if self.eat_punct("=") {
            false
        } else {
            return self.expected("`=` or `+=`");
        };
        Ok(Stmt::Store { buf, idx, val: self.val()?, accumulate })
    }

    /// `= VALUE`, `+= VALUE` or `max= VALUE` after `aN`.
    fn accumulator_update(&mut self, acc: AccId) -> PResult<Stmt> {
        if self.eat_punct("+=") {
            return Ok(Stmt::Reduce { acc, op: RedOp::Add, val: self.val()? });
        }
        if self.eat_word("max") {
            self.expect_punct("=")?;
            return Ok(Stmt::Reduce { acc, op: RedOp::Max, val: self.val()? });
        }
        if self.eat_punct("=") {
            return Ok(Stmt::Set { acc, val: self.val()? });
        }
        self.expected("`=`, `+=` or `max=`")
    }
}
