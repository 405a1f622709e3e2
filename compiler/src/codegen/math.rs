//! Rust math functions that compiled kernels call (Cranelift has no `exp`).
//!
//! Calling the same `f32` functions the reference interpreter uses keeps
//! `exp`, `ln` and `tanh` bit-identical to it.

use cranelift_codegen::ir::{AbiParam, FuncRef, types::F32};
use cranelift_jit::JITBuilder;
use cranelift_module::{FuncId, Linkage, Module};

extern "C" fn kiln_expf(x: f32) -> f32 {
    x.exp()
}

extern "C" fn kiln_lnf(x: f32) -> f32 {
    x.ln()
}

extern "C" fn kiln_tanhf(x: f32) -> f32 {
    x.tanh()
}

/// Makes the math symbols resolvable by the JIT linker.
pub fn register(builder: &mut JITBuilder) {
    builder.symbol("kiln_expf", kiln_expf as *const u8);
    builder.symbol("kiln_lnf", kiln_lnf as *const u8);
    builder.symbol("kiln_tanhf", kiln_tanhf as *const u8);
}

/// The module-level ids of the math functions.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    /// `e^x`.
    pub exp: FuncId,
    /// `ln x`.
    pub ln: FuncId,
    /// `tanh x`.
    pub tanh: FuncId,
}

/// The math functions as referenced from one function being built.
#[derive(Clone, Copy, Debug)]
pub struct Funcs {
    /// `e^x`.
    pub exp: FuncRef,
    /// `ln x`.
    pub ln: FuncRef,
    /// `tanh x`.
    pub tanh: FuncRef,
}

/// Declares the math functions as imports of `module`.
pub fn declare<M: Module>(module: &mut M) -> Result<Ids, Box<cranelift_module::ModuleError>> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(F32));
    sig.returns.push(AbiParam::new(F32));
    Ok(Ids {
        exp: module.declare_function("kiln_expf", Linkage::Import, &sig).map_err(Box::new)?,
        ln: module.declare_function("kiln_lnf", Linkage::Import, &sig).map_err(Box::new)?,
        tanh: module.declare_function("kiln_tanhf", Linkage::Import, &sig).map_err(Box::new)?,
    })
}
