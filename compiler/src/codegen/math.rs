//! Math the kernels need beyond Cranelift's instructions: `exp`, `tanh` and `erf`
//! inline on `f32x4` (below), and `ln`, which kernels call: it only appears
//! in losses, a handful of values per step.
//!
//! `ln` calls the same `f32` function the reference interpreter uses, so it
//! is bit-identical to it.

use crate::target::ProductIsa;
use cranelift_codegen::ir::{AbiParam, FuncRef, types::F32};
use cranelift_jit::JITBuilder;
use cranelift_module::{FuncId, Linkage, Module};

extern "C" fn kiln_lnf(x: f32) -> f32 {
    x.ln()
}

/// Makes the math symbols and the micro-kernel drivers resolvable by the
/// JIT linker.
pub fn register(builder: &mut JITBuilder) {
    builder.symbol("kiln_lnf", kiln_lnf as *const u8);
    super::micro::register(builder);
}

/// The module-level ids of the functions kernels call.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    /// `ln x`.
    pub ln: FuncId,
    /// The micro-kernel driver of the program's product ISA, if it has one.
    pub micro: Option<FuncId>,
}

/// The functions kernels call, as referenced from one function being built.
#[derive(Clone, Copy, Debug)]
pub struct Funcs {
    /// `ln x`.
    pub ln: FuncRef,
    /// The micro-kernel driver (one pointer argument, see
    /// [`super::micro::GemmCall`]).
    pub micro: Option<FuncRef>,
}

/// Declares the functions kernels call as imports of `module`: `ln` and
/// the driver of `products`.
pub fn declare<M: Module>(module: &mut M, products: ProductIsa) -> Result<Ids, Box<cranelift_module::ModuleError>> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(F32));
    sig.returns.push(AbiParam::new(F32));
    let ln = module.declare_function("kiln_lnf", Linkage::Import, &sig).map_err(Box::new)?;
    let micro = match super::micro::symbol(products) {
        Some(name) => {
            let mut sig = module.make_signature();
            sig.params.push(AbiParam::new(cranelift_codegen::ir::types::I64));
            Some(module.declare_function(name, Linkage::Import, &sig).map_err(Box::new)?)
        }
        None => None,
    };
    Ok(Ids { ln, micro })
}

// ---------------------------------------------------------------------------
// `exp` and `tanh` on f32x4, inline. A call per lane cost a sigmoid, tanh or
// ELU layer four calls and the vector shuffles around them (LeNet with tanh
// trained 3.4x slower than with ReLU); these stay in registers. Both are
// within a few ulp of Rust's `f32::exp` / `f32::tanh` (the tests allow 4),
// which the interpreter uses, and keep their special values:
// NaN stays NaN, `exp(-inf) = 0`, `exp(inf) = inf`, `tanh(±inf) = ±1`.

use super::Fx;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32X4, I32X4};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

impl Fx<'_, '_> {
    /// `e^x` lane by lane: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6
    /// polynomial for `e^r`, and `2^n` built from exponent bits in two
    /// halves (so results down to the smallest denormal are right).
    pub(crate) fn exp_f32x4(&mut self, x: Value) -> Value {
        // Past 89, 2^128 overflows to inf; below -104 everything rounds to 0.
        let x = self.clamp_f32x4(x, -104.0, 89.0);
        let log2e = self.fconst(std::f32::consts::LOG2_E, true);
        let t = self.b.ins().fmul(x, log2e);
        let n = self.b.ins().nearest(t);
        // r = x - n ln 2, with ln 2 split so that n * LN2_HI is exact.
        let ln2_hi = self.fconst(-0.693_145_75, true);
        let ln2_lo = self.fconst(-1.428_606_8e-6, true);
        let r = self.fma(n, ln2_hi, x);
        let r = self.fma(n, ln2_lo, r);
        let mut p = self.fconst(1.0 / 720.0, true);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            let c = self.fconst(c, true);
            p = self.fma(p, r, c);
        }
        // 2^n = 2^(n >> 1) * 2^(n - (n >> 1)), each half a normal number.
        let ni = self.b.ins().fcvt_to_sint_sat(I32X4, n);
        let n1 = self.b.ins().sshr_imm_s(ni, 1);
        let n2 = self.b.ins().isub(ni, n1);
        let bias = self.b.ins().iconst(cranelift_codegen::ir::types::I32, 127);
        let bias = self.b.ins().splat(I32X4, bias);
        let le = MemFlagsData::new();
        let scales: Vec<Value> = [n1, n2]
            .into_iter()
            .map(|h| {
                let e = self.b.ins().iadd(h, bias);
                let e = self.b.ins().ishl_imm_s(e, 23);
                self.b.ins().bitcast(F32X4, le, e)
            })
            .collect();
        let y = self.b.ins().fmul(p, scales[0]);
        self.b.ins().fmul(y, scales[1])
    }

    /// `tanh x` lane by lane: an odd rational function `x P(x^2) / Q(x^2)`
    /// of degrees 13 and 6 on `[-9, 9]` (past it, `tanh` is `±1` in
    /// `f32`), within a few ulp of Rust's `f32::tanh` (see the tests); the
    /// coefficients are the minimax fit Eigen and XLA use. One division and
    /// ten multiply-adds: the form through `e^(2|x|)` it replaces took
    /// about 35 instructions a vector and half of a tanh convolution's
    /// time (wide5's first layer at batch 64: 3.3 ms, 1.55 ms with ReLU).
    pub(crate) fn tanh_f32x4(&mut self, x: Value) -> Value {
        const P: [f32; 7] = [
            -2.760_768_5e-16,
            2.000_188e-13,
            -8.604_672e-11,
            5.122_297e-8,
            1.485_722_4e-5,
            6.372_619_3e-4,
            4.893_524_6e-3,
        ];
        const Q: [f32; 4] = [1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3];
        let x = self.clamp_f32x4(x, -9.0, 9.0);
        let r = self.odd_rational_f32x4(x, &P, &Q);
        // The fit passes 1 by an ulp near the clamp: `tanh` never does.
        self.clamp_f32x4(r, -1.0, 1.0)
    }

    /// `erf x` lane by lane: an odd rational function `x P(x^2) / Q(x^2)` of
    /// degrees 13 and 8 up to 3.9 in magnitude (past it, `erf` is `±1` in `f32`),
    /// within a few ulp of libm's `erff` (see the tests). The
    /// coefficients are the minimax fit Eigen and XLA use.
    pub(crate) fn erf_f32x4(&mut self, x: Value) -> Value {
        const P: [f32; 7] = [
            -2.726_142_3e-10,
            2.770_681_4e-8,
            -2.101_024e-6,
            -5.692_506_4e-5,
            -7.349_906_3e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ];
        const Q: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];
        let x = self.clamp_f32x4(x, -4.0, 4.0);
        let r = self.odd_rational_f32x4(x, &P, &Q);
        // Past 3.9, erf rounds to ±1 in f32; the fit is an ulp short of it.
        let ax = self.b.ins().fabs(x);
        let edge = self.fconst(3.9, true);
        let saturated = self.b.ins().fcmp(FloatCC::GreaterThan, ax, edge);
        let saturated = self.b.ins().bitcast(F32X4, MemFlagsData::new(), saturated);
        let one = self.fconst(1.0, true);
        let sign = self.fconst(-0.0, true);
        let unit = self.b.ins().bitselect(sign, x, one);
        self.b.ins().bitselect(saturated, unit, r)
    }

    /// `x P(x^2) / Q(x^2)`, each polynomial by Horner's rule from its
    /// highest coefficient.
    fn odd_rational_f32x4(&mut self, x: Value, p: &[f32], q: &[f32]) -> Value {
        let x2 = self.b.ins().fmul(x, x);
        let horner = |this: &mut Self, coefficients: &[f32]| {
            let mut v = this.fconst(coefficients[0], true);
            for c in &coefficients[1..] {
                let c = this.fconst(*c, true);
                v = this.fma(v, x2, c);
            }
            v
        };
        let p = horner(self, p);
        let p = self.b.ins().fmul(p, x);
        let q = horner(self, q);
        self.b.ins().fdiv(p, q)
    }

    /// `x` clamped to `[lo, hi]`; a NaN stays NaN.
    fn clamp_f32x4(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        let (lo, hi) = (self.fconst(lo, true), self.fconst(hi, true));
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        let below = self.b.ins().bitcast(F32X4, MemFlagsData::new(), below);
        let x = self.b.ins().bitselect(below, lo, x);
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let above = self.b.ins().bitcast(F32X4, MemFlagsData::new(), above);
        self.b.ins().bitselect(above, hi, x)
    }

    /// `f` of a scalar through its vector form (so scalar tails and vector
    /// bodies give the same values).
    pub(crate) fn via_f32x4(&mut self, x: Value, f: fn(&mut Self, Value) -> Value) -> Value {
        let v = self.b.ins().splat(F32X4, x);
        let r = f(self, v);
        self.b.ins().extractlane(r, 0)
    }
}
