//! Cranelift lowering of the kernel IR: instruction emission only.
//!
//! Each [`Kernel`] becomes one function
//! `extern "C" fn(arena: *mut f32, lo: i64, hi: i64, thread: i64)`: buffers
//! are constant offsets from `arena`; a parallel loop runs `lo..hi`; `thread`
//! selects the per-thread copy of scratch buffers. Loops are tested at the
//! top; loads of buffers the kernel never writes are marked `notrap`,
//! `readonly` and `can_move`; matrix products become F32X4 register tiles
//! (see `shared/design/CRANELIFT.md`; outer-product tiles use FMA, dot
//! tiles a separate multiply and add, see `gemm.rs`; `KILN_GEMM_FMA=1`
//! fuses dot tiles too, to compare). Affine
//! indices become induction variables (index and pointer), because
//! Cranelift does not hoist loop-invariant arithmetic whose operands include
//! a rematerialised constant.
//!
//! This file is the driver (the backend, ISA setup, JIT memory, one
//! function per kernel); `Fx`, the per-kernel lowering state, is in
//! `state.rs`; expressions in `expr.rs`, statements and loops in `stmt.rs`,
//! reductions and lane partials in `reduce.rs`, the affine-index analysis
//! behind induction variables in `affine.rs`.

mod affine;
mod expr;
mod gemm;
mod gemm_micro;
pub mod math;
pub mod micro;
pub mod peak;
mod reduce;
mod state;
mod stmt;

use crate::backend::{Backend, BackendError, BackendOptions, NativeCode};
use crate::kernel::{BufId, Emission, Idx, Kernel, Program, VarId};
use crate::target::{ProductIsa, Target};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, ModuleReloc};
use state::Fx;
use std::collections::HashMap;

pub use crate::backend::KernelFn;

/// The Cranelift JIT backend: x86-64 (or any host Cranelift supports) with
/// 128-bit vectors, code in executable memory of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct CraneliftJit;

impl Backend for CraneliftJit {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn target(&self) -> Target {
        Target::host()
    }

    fn compile(&self, program: &Program, options: &BackendOptions) -> Result<NativeCode, BackendError> {
        if program.target.vector_lanes != LANES {
            return Err(isa_error(format!(
                "the program is scheduled for {}-lane vectors, but Cranelift lowers {LANES}-lane (128-bit) vectors only",
                program.target.vector_lanes
            )));
        }
        let products = program.target.products;
        if !products.available() {
            return Err(isa_error(format!(
                "the program runs its matrix products on {products}, which this CPU does not have (it has {})",
                ProductIsa::host()
            )));
        }
        lower_to_clif(program, options)
    }
}

const BACKEND: &str = "cranelift-jit";

/// `f32` lanes of the vectors this backend emits (`F32X4`); it refuses
/// programs scheduled for another width.
pub const LANES: usize = 4;

/// [`Idx::lane_offsets`] for this backend's four lanes.
pub(crate) fn lane_offsets(i: &Idx, v: VarId) -> Option<[i64; 4]> {
    i.lane_offsets(v, LANES).and_then(|o| o.try_into().ok())
}

/// Why code generation failed (the backend-neutral error).
pub type CodegenError = BackendError;

/// The JIT module's memory: freed when the [`NativeCode`] owning it drops.
struct JitMemory(Option<JITModule>);

impl Drop for JitMemory {
    fn drop(&mut self) {
        if let Some(module) = self.0.take() {
            // SAFETY: the function pointers into this memory live in the same
            // `NativeCode` (dropped before its owner field) and are only
            // called while the `Executable` holding it is alive.
            unsafe { module.free_memory() };
        }
    }
}

fn isa_error(message: impl ToString) -> BackendError {
    BackendError::Target { backend: BACKEND, message: message.to_string() }
}

/// Builds the host ISA: native feature detection, `opt_level` as given
/// (`speed`, or `none` for kernels whose emitted order is their schedule).
pub(crate) fn host_isa(verify: bool, opt_level: &str) -> Result<cranelift_codegen::isa::OwnedTargetIsa, BackendError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(isa_error);
    set(&mut flags, "opt_level", opt_level)?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "enable_verifier", if verify { "true" } else { "false" })?;
    let isa = cranelift_native::builder().map_err(isa_error)?;
    isa.finish(settings::Flags::new(flags)).map_err(isa_error)
}

/// Compiles every kernel of `program` to native code.
pub fn lower_to_clif(program: &Program, options: &BackendOptions) -> Result<NativeCode, BackendError> {
    let isa = host_isa(options.verify, "speed")?;
    let in_order_isa = host_isa(options.verify, "none")?;
    let flag = |name: &str| isa.isa_flags().iter().any(|v| v.name == name && v.as_bool() == Some(true));
    let fma = flag("has_avx") && flag("has_fma");
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    math::register(&mut jb);
    let mut module = JITModule::new(jb);

    let mut sig = module.make_signature();
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    let math_ids = math::declare(&mut module, program.target.products).map_err(isa_error)?;

    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut ids = Vec::new();
    let mut clif = Vec::new();
    let mut code = Vec::new();
    for (i, kernel) in program.kernels.iter().enumerate() {
        let err = |message: String| BackendError::Kernel { backend: BACKEND, kernel: kernel.name.clone(), message };
        let id =
            module.declare_function(&format!("kernel{i}"), Linkage::Local, &sig).map_err(|e| err(e.to_string()))?;
        ctx.func.signature = sig.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let funcs = math::Funcs {
                ln: module.declare_func_in_func(math_ids.ln, b.func),
                micro: math_ids.micro.map(|id| module.declare_func_in_func(id, b.func)),
            };
            emit_kernel(&mut b, program, kernel, funcs, fma);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        if options.keep_ir_text {
            clif.push(ctx.func.display().to_string());
        }
        ctx.want_disasm = false;
        if kernel.emission == Emission::AsScheduled {
            // Without the e-graph pass Cranelift keeps the order in which the
            // tile was emitted; with it, pure loads and products are
            // re-elaborated accumulator by accumulator, which stretches the
            // operands' live ranges until they spill.
            let compiled = ctx.compile(&*in_order_isa, &mut Default::default()).map_err(|e| err(format!("{e:?}")))?;
            let (alignment, bytes) = (u64::from(compiled.buffer.alignment), compiled.code_buffer().to_vec());
            let mach_relocs = compiled.buffer.relocs().to_vec();
            let relocs: Vec<ModuleReloc> =
                mach_relocs.iter().map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect();
            module.define_function_bytes(id, alignment, &bytes, &relocs).map_err(|e| err(e.to_string()))?;
        } else {
            module.define_function(id, &mut ctx).map_err(|e| err(format!("{e:?}")))?;
        }
        if options.keep_machine_code {
            code.push(ctx.compiled_code().map(|c| c.code_buffer().to_vec()).unwrap_or_default());
        }
        module.clear_context(&mut ctx);
        ids.push(id);
    }
    module.finalize_definitions().map_err(isa_error)?;
    let functions = ids
        .into_iter()
        .map(|id| {
            let ptr = module.get_finalized_function(id);
            // SAFETY: the function was compiled with exactly the signature
            // `KernelFn` describes (four i64 parameters, no results, the
            // platform's default calling convention).
            unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) }
        })
        .collect();
    Ok(NativeCode { functions, ir_text: clif, machine_code: code, owner: Box::new(JitMemory(Some(module))) })
}

fn emit_kernel(b: &mut FunctionBuilder<'_>, prog: &Program, kernel: &Kernel, math: math::Funcs, fma: bool) {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (base, lo, hi, thread) = (params[0], params[1], params[2], params[3]);
    let mut bufptr = HashMap::new();
    for &buf in kernel.reads.iter().chain(&kernel.writes) {
        if bufptr.contains_key(&buf) {
            continue;
        }
        let offset = (prog.offsets[buf] * 4) as i64;
        let mut p = b.ins().iadd_imm_s(base, offset);
        if prog.buffers[buf].per_thread {
            let t = b.ins().imul_imm_s(thread, (prog.buffers[buf].len * 4) as i64);
            p = b.ins().iadd(p, t);
        }
        bufptr.insert(buf, p);
    }
    // Pass the addresses through block parameters so Cranelift keeps them
    // computed once instead of re-materialising them inside loops.
    let start = b.create_block();
    let mut order: Vec<BufId> = bufptr.keys().copied().collect();
    order.sort();
    let args: Vec<BlockArg> = order.iter().map(|k| BlockArg::Value(bufptr[k])).collect();
    for &k in &order {
        let p = b.append_block_param(start, I64);
        bufptr.insert(k, p);
    }
    b.ins().jump(start, &args);
    b.switch_to_block(start);
    let buf_len = bufptr.keys().map(|&buf| (buf, (prog.buffers[buf].len, prog.buffers[buf].per_thread))).collect();
    let mut fx = Fx {
        b,
        bufptr,
        buf_len,
        written: kernel.writes.iter().copied().collect(),
        vars: HashMap::new(),
        ivs: HashMap::new(),
        iv_split: HashMap::new(),
        lane: None,
        shuffle_masks: HashMap::new(),
        accs: HashMap::new(),
        partials: HashMap::new(),
        chain: 0,
        b_column: None,
        c_column: None,
        c_row_offset: None,
        done_lanes: 0,
        math,
        fma,
        lo,
        hi,
    };
    fx.stmts(&kernel.body, false);
    fx.b.ins().return_(&[]);
}
