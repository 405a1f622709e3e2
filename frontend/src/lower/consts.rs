//! Constant expressions in declarations: integers such as `16 * 5 * 5`,
//! `(h, w)` pairs, floats, booleans, bare words, and shape entries with the
//! batch `N`; and the limits on lengths and element counts they must obey.

use crate::shape::{Dim, Shape};
use quote::ToTokens;
use syn::{BinOp, Expr, Lit, UnOp};

/// Evaluates an integer expression such as `16 * 5 * 5`.
pub fn eval_usize(e: &Expr) -> Result<usize, String> {
    let v = eval_i64(e)?;
    let v = usize::try_from(v).map_err(|_| format!("must not be negative, got {v}"))?;
    check_length(v)
}

/// A dimension index as PyTorch takes it: `-rank..rank`, negative counting
/// from the end.
pub(super) fn eval_axis(e: &Expr, rank: usize) -> Result<usize, String> {
    let v = eval_i64(e)?;
    let r = rank as i64;
    if (-r..r).contains(&v) {
        Ok(if v < 0 { (v + r) as usize } else { v as usize })
    } else {
        Err(format!("must be in -{rank}..{rank} for an input of {rank} axes, got {v}"))
    }
}

/// The longest axis a declaration may give (kernels index with 32-bit tables).
pub const MAX_LENGTH: usize = i32::MAX as usize;
/// The most elements one value may hold per sample: far beyond any machine,
/// but small enough that byte counts of whole batches stay exact in `u64`.
pub const MAX_ELEMENTS: u64 = 1 << 56;

fn check_length(v: usize) -> Result<usize, String> {
    if v > MAX_LENGTH { Err(format!("must be at most {MAX_LENGTH} (2^31 - 1), got {v}")) } else { Ok(v) }
}

/// Elements per sample of `shape` (the batch axis counted once), or `None`
/// past [`MAX_ELEMENTS`].
pub(super) fn elements_per_sample(shape: &Shape) -> Option<u64> {
    shape.0.iter().try_fold(1u64, |n, d| n.checked_mul(d.factor as u64).filter(|&n| n <= MAX_ELEMENTS))
}

fn eval_i64(e: &Expr) -> Result<i64, String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse::<i64>().map_err(|err| err.to_string()),
            _ => Err(format!("expected an integer, got `{}`", e.to_token_stream())),
        },
        Expr::Paren(p) => eval_i64(&p.expr),
        Expr::Group(g) => eval_i64(&g.expr),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => Ok(-eval_i64(&u.expr)?),
        Expr::Binary(b) => {
            let (l, r) = (eval_i64(&b.left)?, eval_i64(&b.right)?);
            let v = match b.op {
                BinOp::Add(_) => l.checked_add(r),
                BinOp::Sub(_) => l.checked_sub(r),
                BinOp::Mul(_) => l.checked_mul(r),
                BinOp::Div(_) if r != 0 => Some(l / r),
                BinOp::Div(_) => return Err("division by zero".into()),
                _ => return Err("only + - * / are allowed in integer expressions".into()),
            };
            v.ok_or_else(|| "integer overflow".into())
        }
        _ => Err(format!("expected an integer, got `{}`", e.to_token_stream())),
    }
}

/// An int or an `(h, w)` pair, as PyTorch accepts for sizes.
pub(super) fn eval_pair(e: &Expr) -> Result<[usize; 2], String> {
    match e {
        Expr::Tuple(t) if t.elems.len() == 2 => Ok([eval_usize(&t.elems[0])?, eval_usize(&t.elems[1])?]),
        Expr::Array(t) if t.elems.len() == 2 => Ok([eval_usize(&t.elems[0])?, eval_usize(&t.elems[1])?]),
        Expr::Tuple(_) | Expr::Array(_) => Err("expected an integer or an `(h, w)` pair".into()),
        e => {
            let v = eval_usize(e)?;
            Ok([v, v])
        }
    }
}

pub(super) fn eval_f64(e: &Expr) -> Result<f64, String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Float(f) => f.base10_parse::<f64>().map_err(|err| err.to_string()),
            Lit::Int(i) => i.base10_parse::<f64>().map_err(|err| err.to_string()),
            _ => Err(format!("expected a number, got `{}`", e.to_token_stream())),
        },
        Expr::Paren(p) => eval_f64(&p.expr),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => Ok(-eval_f64(&u.expr)?),
        _ => Err(format!("expected a number, got `{}`", e.to_token_stream())),
    }
}

pub(super) fn eval_f64_pair(e: &Expr) -> Result<[f64; 2], String> {
    match e {
        Expr::Tuple(t) if t.elems.len() == 2 => Ok([eval_f64(&t.elems[0])?, eval_f64(&t.elems[1])?]),
        e => {
            let v = eval_f64(e)?;
            Ok([v, v])
        }
    }
}

pub(super) fn eval_bool(e: &Expr) -> Result<bool, String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Bool(b) => Ok(b.value),
            _ => Err(format!("expected `true` or `false`, got `{}`", e.to_token_stream())),
        },
        Expr::Path(p) if p.path.is_ident("True") => Ok(true),
        Expr::Path(p) if p.path.is_ident("False") => Ok(false),
        _ => Err(format!("expected `true` or `false`, got `{}`", e.to_token_stream())),
    }
}

/// A bare word or string literal: `replicate`, `"bilinear"`.
pub(super) fn eval_word(e: &Expr) -> Result<String, String> {
    match e {
        Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()).ok_or_else(|| "expected a word".into()),
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Ok(s.value()),
            _ => Err(format!("expected a word, got `{}`", e.to_token_stream())),
        },
        _ => Err(format!("expected a word, got `{}`", e.to_token_stream())),
    }
}

/// A shape entry: `N`, an integer expression, `N * k`, or `-1` (returned as `None`).
pub(super) fn eval_dim(e: &Expr) -> Result<Option<Dim>, String> {
    if contains_batch(e) {
        return eval_batched(e).map(Some);
    }
    match eval_i64(e)? {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(Dim::fixed(check_length(v as usize)?))),
        v => Err(format!("a length must not be negative, got {v}")),
    }
}

fn contains_batch(e: &Expr) -> bool {
    match e {
        Expr::Path(p) => p.path.is_ident("N"),
        Expr::Paren(p) => contains_batch(&p.expr),
        Expr::Binary(b) => contains_batch(&b.left) || contains_batch(&b.right),
        _ => false,
    }
}

fn eval_batched(e: &Expr) -> Result<Dim, String> {
    match e {
        Expr::Path(p) if p.path.is_ident("N") => Ok(Dim::batch()),
        Expr::Paren(p) => eval_batched(&p.expr),
        Expr::Binary(b) if matches!(b.op, BinOp::Mul(_)) => {
            let (l, r) = (&*b.left, &*b.right);
            match (contains_batch(l), contains_batch(r)) {
                (true, false) => Ok(Dim { factor: eval_batched(l)?.factor * eval_usize(r)?, batched: true }),
                (false, true) => Ok(Dim { factor: eval_usize(l)? * eval_batched(r)?.factor, batched: true }),
                _ => Err("N may appear once per axis".into()),
            }
        }
        _ => Err("a batched length must be `N` or `N * k`".into()),
    }
}
