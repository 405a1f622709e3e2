//! Index, value and condition expressions, and the `f32` and activation
//! literals. Each rule returns its tree with the tree's height, so that a
//! long operator chain (which the parser reads in a loop, not by recursion)
//! is held to [`super::MAX_NESTING`] as well as nested parentheses are:
//! nothing built here is too deep to print, compare or drop.

use super::lex::Tok;
use super::parse::{PResult, Parser};
use super::{ParseError, ParseErrorKind};
use crate::kernel::*;
use crate::ops::{Activation, GeluForm};

type Tall<T> = (T, usize);

/// Builds `Idx::Mul`, `Idx::Div` or `Idx::Rem` from an operand and a constant.
type ByConstant = fn(Box<Idx>, i64) -> Idx;

impl Parser {
    /// An index expression.
    pub(super) fn idx(&mut self) -> PResult<Idx> {
        Ok(self.idx_tall()?.0)
    }

    /// A value expression.
    pub(super) fn val(&mut self) -> PResult<Val> {
        Ok(self.val_tall()?.0)
    }

    /// A condition.
    pub(super) fn cond(&mut self) -> PResult<Cond> {
        Ok(self.cond_tall()?.0)
    }

    fn idx_tall(&mut self) -> PResult<Tall<Idx>> {
        self.nested(|p| {
            let (mut sum, mut height) = p.idx_product()?;
            while p.eat_punct("+") {
                let (term, h) = p.idx_product()?;
                height = p.taller(height.max(h))?;
                sum = Idx::Add(Box::new(sum), Box::new(term));
            }
            Ok((sum, height))
        })
    }

    /// Products, quotients and remainders by constants.
    fn idx_product(&mut self) -> PResult<Tall<Idx>> {
        let (mut product, mut height) = self.idx_primary()?;
        loop {
            let (make, divides): (ByConstant, bool) = if self.eat_punct("*") {
                (Idx::Mul, false)
            } else if self.eat_punct("/") {
                (Idx::Div, true)
            } else if self.eat_punct("%") {
                (Idx::Rem, true)
            } else {
                return Ok((product, height));
            };
            let at = self.pos();
            let k = self.i64()?;
            // Index analysis divides by it: zero would be a crash later.
            if divides && k <= 0 {
                let kind =
                    ParseErrorKind::Expected { expected: "a positive divisor".to_string(), found: k.to_string() };
                return Err(ParseError::new(at, kind));
            }
            height = self.taller(height)?;
            product = make(Box::new(product), k);
        }
    }

    fn idx_primary(&mut self) -> PResult<Tall<Idx>> {
        if self.eat_punct("(") {
            let inner = self.idx_tall()?;
            self.expect_punct(")")?;
            return Ok(inner);
        }
        if self.is_punct("-") || matches!(self.peek(), Tok::Int(_)) {
            return Ok((Idx::Const(self.i64()?), 1));
        }
        if let Some(v) = self.numbered('v')? {
            return Ok((Idx::Var(v), 1));
        }
        if let Tok::Buf(_) = self.peek() {
            let (table, index, h) = self.element()?;
            return Ok((Idx::Table(table, Box::new(index)), self.taller(h)?));
        }
        for (word, make) in [("min", Idx::Min as fn(_, _) -> _), ("max", Idx::Max), ("xor", Idx::Xor)] {
            if self.eat_word(word) {
                self.expect_punct("(")?;
                let (a, ha) = self.idx_tall()?;
                self.expect_punct(",")?;
                let (b, hb) = self.idx_tall()?;
                self.expect_punct(")")?;
                return Ok((make(Box::new(a), Box::new(b)), self.taller(ha.max(hb))?));
            }
        }
        if self.eat_word("int") {
            self.expect_punct("(")?;
            let (buf, index, h) = self.element()?;
            self.expect_punct(")")?;
            return Ok((Idx::FloatTable(buf, Box::new(index)), self.taller(h)?));
        }
        self.expected("an index expression")
    }

    /// `%N[index]`.
    fn element(&mut self) -> PResult<(BufId, Idx, usize)> {
        let buf = self.buf()?;
        self.expect_punct("[")?;
        let (index, h) = self.idx_tall()?;
        self.expect_punct("]")?;
        Ok((buf, index, h))
    }

    fn val_tall(&mut self) -> PResult<Tall<Val>> {
        self.nested(|p| {
            let (mut sum, mut height) = p.val_product()?;
            loop {
                let op = if p.eat_punct("+") {
                    BinOp::Add
                } else if p.eat_punct("-") {
                    BinOp::Sub
                } else {
                    return Ok((sum, height));
                };
                let (term, h) = p.val_product()?;
                height = p.taller(height.max(h))?;
                sum = Val::bin(op, sum, term);
            }
        })
    }

    fn val_product(&mut self) -> PResult<Tall<Val>> {
        let (mut product, mut height) = self.val_primary()?;
        loop {
            let op = if self.eat_punct("*") {
                BinOp::Mul
            } else if self.eat_punct("/") {
                BinOp::Div
            } else {
                return Ok((product, height));
            };
            let (factor, h) = self.val_primary()?;
            height = self.taller(height.max(h))?;
            product = Val::bin(op, product, factor);
        }
    }

    fn val_primary(&mut self) -> PResult<Tall<Val>> {
        if self.eat_punct("(") {
            let inner = self.val_tall()?;
            self.expect_punct(")")?;
            return Ok(inner);
        }
        if let Tok::Buf(_) = self.peek() {
            let (buf, index, h) = self.element()?;
            return Ok((Val::Load(buf, index), self.taller(h)?));
        }
        if let Some(a) = self.numbered('a')? {
            return Ok((Val::Acc(a), 1));
        }
        let unary = [
            ("neg", UnOp::Neg),
            ("exp", UnOp::Exp),
            ("ln", UnOp::Ln),
            ("tanh", UnOp::Tanh),
            ("relu", UnOp::Relu),
            ("erf", UnOp::Erf),
            ("sqrt", UnOp::Sqrt),
        ];
        for (word, op) in unary {
            if self.eat_word(word) {
                self.expect_punct("(")?;
                let (x, h) = self.val_tall()?;
                self.expect_punct(")")?;
                return Ok((x.un(op), self.taller(h)?));
            }
        }
        if self.eat_word("select") {
            self.expect_punct("(")?;
            let (c, hc) = self.cond_tall()?;
            self.expect_punct(",")?;
            let (a, ha) = self.val_tall()?;
            self.expect_punct(",")?;
            let (b, hb) = self.val_tall()?;
            self.expect_punct(")")?;
            return Ok((Val::select(c, a, b), self.taller(hc.max(ha).max(hb))?));
        }
        if self.eat_word("float") {
            self.expect_punct("(")?;
            let (i, h) = self.idx_tall()?;
            self.expect_punct(")")?;
            return Ok((Val::FromIdx(i), self.taller(h)?));
        }
        if self.starts_f32() {
            return Ok((Val::Const(self.f32_literal()?), 1));
        }
        self.expected("a value expression")
    }

    fn starts_f32(&self) -> bool {
        matches!(self.peek(), Tok::Int(_) | Tok::Float(_) | Tok::Punct("-"))
            || self.is_word("inf")
            || self.is_word("nan")
    }

    /// A decimal (`1.5`, `-0.0`, `1e-7`), `inf`, `-inf` or `nan(0xBITS)`.
    pub(super) fn f32_literal(&mut self) -> PResult<f32> {
        if self.eat_word("nan") {
            self.expect_punct("(")?;
            let Tok::Hex(digits) = self.peek().clone() else { return self.expected("the NaN's bits `0x...`") };
            let bits = u32::from_str_radix(&digits, 16)
                .map_err(|_| self.error(ParseErrorKind::IntegerOverflow { text: format!("0x{digits}"), ty: "u32" }))?;
            let x = f32::from_bits(bits);
            if !x.is_nan() {
                return self.expected("the bits of a NaN");
            }
            self.next();
            self.expect_punct(")")?;
            return Ok(x);
        }
        let negative = self.eat_punct("-");
        let magnitude = if self.eat_word("inf") {
            f32::INFINITY
        } else {
            let (Tok::Int(text) | Tok::Float(text)) = self.peek().clone() else {
                return self.expected("an f32 constant");
            };
            // Rust rounds an overlong decimal to infinity; only `inf` means that.
            let x = text.parse::<f32>().ok().filter(|x| x.is_finite());
            let x = x.ok_or_else(|| self.error(ParseErrorKind::BadFloat(text)))?;
            self.next();
            x
        };
        Ok(if negative { -magnitude } else { magnitude })
    }

    /// `relu`, `sigmoid`, `tanh`, `gelu`, `gelu_tanh`, `silu`, `step`,
    /// `leaky_relu(slope)` or `elu(alpha)`.
    pub(super) fn activation(&mut self) -> PResult<Activation> {
        let plain = [
            ("relu", Activation::Relu),
            ("sigmoid", Activation::Sigmoid),
            ("tanh", Activation::Tanh),
            ("gelu_tanh", Activation::Gelu(GeluForm::Tanh)),
            ("gelu", Activation::Gelu(GeluForm::Exact)),
            ("silu", Activation::Silu),
        ];
        for (word, a) in plain {
            if self.eat_word(word) {
                return Ok(a);
            }
        }
        if self.eat_word("step") {
            return Ok(Activation::Step);
        }
        for (word, make) in [("leaky_relu", Activation::LeakyRelu as fn(f32) -> _), ("elu", Activation::Elu)] {
            if self.eat_word(word) {
                self.expect_punct("(")?;
                let parameter = self.f32_literal()?;
                self.expect_punct(")")?;
                return Ok(make(parameter));
            }
        }
        self.expected(
            "an activation (`relu`, `sigmoid`, `tanh`, `gelu`, `gelu_tanh`, `silu`, `step`, `leaky_relu(..)`, `elu(..)`)",
        )
    }

    fn cond_tall(&mut self) -> PResult<Tall<Cond>> {
        self.nested(|p| {
            let (mut any, mut height) = p.cond_all()?;
            while p.eat_punct("||") {
                let (c, h) = p.cond_all()?;
                height = p.taller(height.max(h))?;
                any = Cond::Or(Box::new(any), Box::new(c));
            }
            Ok((any, height))
        })
    }

    fn cond_all(&mut self) -> PResult<Tall<Cond>> {
        let (mut all, mut height) = self.cond_primary()?;
        while self.eat_punct("&&") {
            let (c, h) = self.cond_primary()?;
            height = self.taller(height.max(h))?;
            all = Cond::And(Box::new(all), Box::new(c));
        }
        Ok((all, height))
    }

    fn cond_primary(&mut self) -> PResult<Tall<Cond>> {
        if self.eat_punct("(") {
            let inner = self.cond_tall()?;
            self.expect_punct(")")?;
            return Ok(inner);
        }
        if self.eat_word("icmp") {
            let (a, ha) = self.idx_tall()?;
            let op = self.cmp()?;
            let (b, hb) = self.idx_tall()?;
            return Ok((Cond::Index(op, a, b), self.taller(ha.max(hb))?));
        }
        if self.eat_word("fcmp") {
            let (a, ha) = self.val_tall()?;
            let op = self.cmp()?;
            let (b, hb) = self.val_tall()?;
            return Ok((Cond::Value(op, Box::new(a), Box::new(b)), self.taller(ha.max(hb))?));
        }
        if self.eat_word("isnan") {
            self.expect_punct("(")?;
            let (x, h) = self.val_tall()?;
            self.expect_punct(")")?;
            return Ok((Cond::IsNan(Box::new(x)), self.taller(h)?));
        }
        self.expected("a condition (`icmp`, `fcmp`, `isnan` or `(`)")
    }

    fn cmp(&mut self) -> PResult<Cmp> {
        for (p, c) in [("<", Cmp::Lt), ("<=", Cmp::Le), ("==", Cmp::Eq), (">", Cmp::Gt), (">=", Cmp::Ge)] {
            if self.eat_punct(p) {
                return Ok(c);
            }
        }
        self.expected("a comparison (`<`, `<=`, `==`, `>`, `>=`)")
    }
}
