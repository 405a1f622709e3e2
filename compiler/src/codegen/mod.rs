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

mod gemm;
pub mod math;
pub mod peak;

use crate::backend::{Backend, BackendError, BackendOptions, NativeCode};
use crate::kernel::lowering::{outer_reductions, vector_reductions};
use crate::kernel::{
    AccId, BinOp, BufId, Cmp, Cond, Emission, Idx, Kernel, Loop, LoopMode, Program, RedOp, Stmt, UnOp, Unroll, Val,
    VarId, VectorTail,
};
use crate::target::Target;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8X16, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, ConstantData, Endianness, FuncRef, Immediate, InstBuilder, MemFlagsData, UserFuncName, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, ModuleReloc};
use std::collections::{HashMap, HashSet};

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
        Target::host_128()
    }

    fn compile(&self, program: &Program, options: &BackendOptions) -> Result<NativeCode, BackendError> {
        if program.target.vector_lanes != LANES {
            return Err(isa_error(format!(
                "the program is scheduled for {}-lane vectors, but Cranelift lowers {LANES}-lane (128-bit) vectors only",
                program.target.vector_lanes
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
    let math_ids = math::declare(&mut module).map_err(isa_error)?;

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
            let funcs = math::Funcs { ln: module.declare_func_in_func(math_ids.ln, b.func) };
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

/// The state of lowering one kernel.
pub(crate) struct Fx<'a, 'f> {
    pub(crate) b: &'a mut FunctionBuilder<'f>,
    /// Address of each buffer used (this thread's copy for per-thread ones).
    pub(crate) bufptr: HashMap<BufId, Value>,
    /// Buffers the kernel writes (their loads are not `readonly`).
    pub(crate) written: HashSet<BufId>,
    /// Current value of each loop variable (lane 0 for the vector loop).
    pub(crate) vars: HashMap<VarId, Value>,
    /// Induction variables: the current value of each affine index form
    /// used inside the loops being lowered (strength-reduced: one add per
    /// iteration instead of the multiplications, which Cranelift would not
    /// hoist out of inner loops).
    pub(crate) ivs: HashMap<Affine, Value>,
    /// In written-out loop copies, each index form's value as the value
    /// before the copies plus a constant, so that converting it to `f32`
    /// is one conversion shared by all copies plus a constant.
    pub(crate) iv_split: HashMap<Affine, (Value, i64)>,
    /// The loop variable being vectorised, if any.
    pub(crate) lane: Option<VarId>,
    /// Shuffle masks made so far, so equal shuffles share one immediate
    /// (Cranelift merges identical instructions only when their immediates
    /// are the same handle).
    pub(crate) shuffle_masks: HashMap<Vec<u8>, Immediate>,
    /// Each live accumulator and whether it holds a vector.
    pub(crate) accs: HashMap<AccId, (Variable, bool)>,
    /// Lane partials of outer accumulators reduced inside the vector loop:
    /// the starting loop's `chains` independent vectors each.
    pub(crate) partials: HashMap<AccId, (Vec<Variable>, RedOp)>,
    /// Which of the partial vectors the vector body being emitted adds into.
    pub(crate) chain: usize,
    /// In an outer tile over wrapped B columns: this vector's B column.
    pub(crate) b_column: Option<gemm::WrappedColumn>,
    /// In an outer tile scattering into wrapped C columns: this vector's.
    pub(crate) c_column: Option<gemm::WrappedColumn>,
    /// The table offset of the scattered C row being finished, when the
    /// tile has read it already.
    pub(crate) c_row_offset: Option<Value>,
    /// In the overlapped last iteration of a vector loop (see
    /// [`VectorTail::Overlap`]): how many of its first lanes the iteration before
    /// already did; they contribute nothing to outer reductions.
    pub(crate) done_lanes: usize,
    pub(crate) math: math::Funcs,
    pub(crate) fma: bool,
    lo: Value,
    hi: Value,
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
    let mut fx = Fx {
        b,
        bufptr,
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

fn int_cc(c: Cmp) -> IntCC {
    match c {
        Cmp::Lt => IntCC::SignedLessThan,
        Cmp::Le => IntCC::SignedLessThanOrEqual,
        Cmp::Eq => IntCC::Equal,
        Cmp::Gt => IntCC::SignedGreaterThan,
        Cmp::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}

fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

impl Fx<'_, '_> {
    /// Flags for loads of `buf`: pure when the kernel never writes it.
    pub(crate) fn load_flags(&self, buf: BufId) -> MemFlagsData {
        if self.written.contains(&buf) {
            MemFlagsData::new().with_notrap()
        } else {
            MemFlagsData::new().with_notrap().with_readonly().with_can_move()
        }
    }

    /// `fma(a, b, c) = a * b + c`, fused when the ISA has FMA.
    pub(crate) fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    pub(crate) fn splat(&mut self, x: Value) -> Value {
        self.b.ins().splat(F32X4, x)
    }

    pub(crate) fn fconst(&mut self, c: f32, vec: bool) -> Value {
        let x = self.b.ins().f32const(c);
        if vec { self.splat(x) } else { x }
    }

    /// A top-tested counted loop `for i in (start..end).step_by(step)`.
    pub(crate) fn counted_loop(&mut self, start: Value, end: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(start)]);
        self.b.switch_to_block(header);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(go, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }

    pub(crate) fn iconst(&mut self, c: i64) -> Value {
        self.b.ins().iconst(I64, c)
    }

    /// An index value; for the vector loop's variable, lane `lane`'s value.
    pub(crate) fn idx(&mut self, i: &Idx, lane: i64) -> Value {
        if let Some(a) = affine(i) {
            if a.terms.is_empty() {
                return self.iconst(a.constant);
            }
            if let Some(&base) = self.ivs.get(&a) {
                let c = self.lane.map_or(0, |v| a.coefficient(v));
                return if c != 0 && lane != 0 { self.b.ins().iadd_imm_s(base, c * lane) } else { base };
            }
        }
        match i {
            Idx::Const(c) => self.iconst(*c),
            Idx::Var(v) => {
                let x = self.vars[v];
                if Some(*v) == self.lane && lane != 0 { self.b.ins().iadd_imm_s(x, lane) } else { x }
            }
            Idx::Add(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().iadd(a, b)
            }
            Idx::Mul(a, k) => {
                let a = self.idx(a, lane);
                self.b.ins().imul_imm_s(a, *k)
            }
            Idx::Div(a, k) => {
                let a = self.idx(a, lane);
                self.b.ins().udiv_imm_s(a, *k)
            }
            Idx::Rem(a, k) => {
                let a = self.idx(a, lane);
                self.b.ins().urem_imm_s(a, *k)
            }
            Idx::Min(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().smin(a, b)
            }
            Idx::Max(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().smax(a, b)
            }
            Idx::FloatTable(t, a) => {
                let a = self.idx(a, lane);
                let addr = self.addr(*t, a);
                let flags = self.load_flags(*t);
                let x = self.b.ins().load(F32, flags, addr, 0);
                self.b.ins().fcvt_to_sint(I64, x)
            }
            Idx::Table(t, a) => {
                let a = self.idx(a, lane);
                let addr = self.addr(*t, a);
                let flags = self.load_flags(*t);
                self.b.ins().sload32(flags, addr, 0)
            }
        }
    }

    /// Address of element `i` of `buf` for lane `lane`: a pointer induction
    /// variable when one is live, else computed.
    pub(crate) fn elem_addr(&mut self, buf: BufId, i: &Idx, lane: i64) -> Value {
        if let Some(mut a) = affine(i) {
            // Pointer induction variables are kept per form without its
            // constant (see `collect_affine`); the constant becomes an
            // immediate offset that the load or store folds in.
            a.buf = Some(buf);
            let constant = std::mem::take(&mut a.constant);
            if let Some(&p) = self.ivs.get(&a) {
                let c = self.lane.map_or(0, |v| a.coefficient(v));
                let off = 4 * (constant + c * lane);
                return if off != 0 { self.b.ins().iadd_imm_s(p, off) } else { p };
            }
        }
        let ix = self.idx(i, lane);
        self.addr(buf, ix)
    }

    /// Address of element `index` (an i64 value) of `buf`.
    pub(crate) fn addr(&mut self, buf: BufId, index: Value) -> Value {
        let base = self.bufptr[&buf];
        let off = self.b.ins().ishl_imm_s(index, 2);
        self.b.ins().iadd(base, off)
    }

    fn uses_lane(&self, i: &Idx) -> bool {
        self.lane.is_some_and(|v| i.uses(v))
    }

    /// `x` with the lanes the overlapped last iteration repeats set to
    /// `identity` (the value that leaves a sum or a maximum unchanged).
    fn without_done_lanes(&mut self, x: Value, identity: f32) -> Value {
        if self.done_lanes == 0 {
            return x;
        }
        let fill = self.f32x4_const([identity; 4]);
        let bits: Vec<u8> = (0..4).flat_map(|l| if l < self.done_lanes { [0u8; 4] } else { [0xffu8; 4] }).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bits));
        let mask = self.b.ins().vconst(F32X4, c);
        self.b.ins().bitselect(mask, x, fill)
    }

    /// Lanes `lanes` (0-3 from `a`, 4-7 from `b`) of two `f32x4` vectors.
    pub(crate) fn shuffle_lanes(&mut self, a: Value, b: Value, lanes: [i64; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |k| (l * 4 + k) as u8)).collect();
        let mask = match self.shuffle_masks.get(&bytes) {
            Some(&m) => m,
            None => {
                let m = self.b.func.dfg.immediates.push(ConstantData::from(bytes.clone()));
                self.shuffle_masks.insert(bytes, m);
                m
            }
        };
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let (a, b) = (self.b.ins().bitcast(I8X16, le, a), self.b.ins().bitcast(I8X16, le, b));
        let r = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(F32X4, le, r)
    }

    /// A constant `f32x4`.
    pub(crate) fn f32x4_const(&mut self, lanes: [f32; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|x| x.to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(F32X4, c)
    }

    /// Builds an F32X4 from four scalar values.
    pub(crate) fn lanes_to_vector(&mut self, lanes: [Value; 4]) -> Value {
        let mut v = self.b.ins().scalar_to_vector(F32X4, lanes[0]);
        for (l, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, l as u8);
        }
        v
    }

    /// Lowers a value; `vec` selects the F32X4 form (one lane per iteration
    /// of the vector loop).
    pub(crate) fn val(&mut self, v: &Val, vec: bool) -> Value {
        match v {
            Val::Const(c) => self.fconst(*c, vec),
            Val::Load(buf, i) => {
                let flags = self.load_flags(*buf);
                if !vec || !self.uses_lane(i) {
                    let a = self.elem_addr(*buf, i, 0);
                    let x = self.b.ins().load(F32, flags, a, 0);
                    return if vec { self.splat(x) } else { x };
                }
                match lane_offsets(i, self.lane.unwrap()) {
                    Some([0, 0, 0, 0]) => {
                        let a = self.elem_addr(*buf, i, 0);
                        let x = self.b.ins().load(F32, flags, a, 0);
                        return self.splat(x);
                    }
                    Some([0, 1, 2, 3]) => {
                        let a = self.elem_addr(*buf, i, 0);
                        return self.b.ins().load(F32X4, flags, a, 0);
                    }
                    // A short constant pattern (stride 2, upsampling): one or
                    // two vector loads and a shuffle instead of four scalar
                    // loads. The extra lanes read at most 7 elements past
                    // the last one used, which the arena's tail slack covers.
                    Some(o) if o.iter().all(|l| (0..8).contains(l)) => {
                        let a = self.elem_addr(*buf, i, 0);
                        let lo = self.b.ins().load(F32X4, flags, a, 0);
                        let hi = if o.iter().all(|&l| l < 4) { lo } else { self.b.ins().load(F32X4, flags, a, 16) };
                        return self.shuffle_lanes(lo, hi, o);
                    }
                    _ => {}
                }
                let lanes = [0, 1, 2, 3].map(|l| {
                    let a = self.elem_addr(*buf, i, l);
                    self.b.ins().load(F32, flags, a, 0)
                });
                self.lanes_to_vector(lanes)
            }
            Val::Acc(a) => {
                let (var, is_vec) = self.accs[a];
                let x = self.b.use_var(var);
                if vec && !is_vec { self.splat(x) } else { x }
            }
            Val::Un(op, x) => {
                let x = self.val(x, vec);
                self.unary(*op, x, vec)
            }
            Val::Bin(op, a, b) => {
                let (a, b) = (self.val(a, vec), self.val(b, vec));
                match op {
                    BinOp::Add => self.b.ins().fadd(a, b),
                    BinOp::Sub => self.b.ins().fsub(a, b),
                    BinOp::Mul => self.b.ins().fmul(a, b),
                    BinOp::Div => self.b.ins().fdiv(a, b),
                }
            }
            Val::Select(c, a, b) => {
                if vec {
                    let m = self.mask(c);
                    let (a, b) = (self.val(a, true), self.val(b, true));
                    let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
                    self.b.ins().bitselect(m, a, b)
                } else {
                    let c = self.cond(c);
                    let (a, b) = (self.val(a, false), self.val(b, false));
                    self.fselect(c, a, b)
                }
            }
            Val::FromIdx(i) => {
                // In a written-out loop, convert the value before the copies
                // (shared) and add this copy's constant offset.
                let split = affine(i).and_then(|a| self.iv_split.get(&a).copied());
                let (ix, off) = match split {
                    Some((base, off)) => (base, off),
                    None => (self.idx(i, 0), 0),
                };
                let root = self.b.ins().fcvt_from_sint(F32, ix);
                let with_offset = |fx: &mut Self| {
                    if off == 0 {
                        root
                    } else {
                        let c = fx.b.ins().f32const(off as f32);
                        fx.b.ins().fadd(root, c)
                    }
                };
                if !vec {
                    return with_offset(self);
                }
                let pattern = self.lane.filter(|_| self.uses_lane(i)).map(|v| lane_offsets(i, v));
                match pattern {
                    None if off == 0 => self.splat(root),
                    None => {
                        let x = self.splat(root);
                        let steps = self.f32x4_const([off as f32; 4]);
                        self.b.ins().fadd(x, steps)
                    }
                    // Lane 0 converted once, the other lanes (and this
                    // copy's offset) a constant step away.
                    Some(Some(o)) => {
                        let x = self.splat(root);
                        let steps = self.f32x4_const(o.map(|l| (l + off) as f32));
                        self.b.ins().fadd(x, steps)
                    }
                    Some(None) => {
                        let x = with_offset(self);
                        let mut lanes = [x; 4];
                        for (l, lane) in lanes.iter_mut().enumerate().skip(1) {
                            let ix = self.idx(i, l as i64);
                            *lane = self.b.ins().fcvt_from_sint(F32, ix);
                        }
                        self.lanes_to_vector(lanes)
                    }
                }
            }
        }
    }

    fn call_math(&mut self, f: FuncRef, x: Value, vec: bool) -> Value {
        if !vec {
            let call = self.b.ins().call(f, &[x]);
            return self.b.inst_results(call)[0];
        }
        let lanes = [0u8, 1, 2, 3].map(|l| {
            let xl = self.b.ins().extractlane(x, l);
            let call = self.b.ins().call(f, &[xl]);
            self.b.inst_results(call)[0]
        });
        self.lanes_to_vector(lanes)
    }

    pub(crate) fn unary(&mut self, op: UnOp, x: Value, vec: bool) -> Value {
        match op {
            UnOp::Neg => self.b.ins().fneg(x),
            UnOp::Relu => {
                // `x <= 0 ? 0 : x`: a NaN stays NaN, as in PyTorch. Done on
                // vectors even for a scalar (a float `select` would branch).
                let zero = self.fconst(0.0, vec);
                let (v, z) = if vec { (x, zero) } else { (self.b.ins().scalar_to_vector(F32X4, x), self.splat(zero)) };
                let m = self.b.ins().fcmp(FloatCC::LessThanOrEqual, v, z);
                let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
                let r = self.b.ins().bitselect(m, z, v);
                if vec { r } else { self.b.ins().extractlane(r, 0) }
            }
            UnOp::Exp if vec => self.exp_f32x4(x),
            UnOp::Exp => self.via_f32x4(x, Self::exp_f32x4),
            UnOp::Tanh if vec => self.tanh_f32x4(x),
            UnOp::Tanh => self.via_f32x4(x, Self::tanh_f32x4),
            UnOp::Ln => self.call_math(self.math.ln, x, vec),
        }
    }

    /// A scalar condition (an `i8` truth value).
    pub(crate) fn cond(&mut self, c: &Cond) -> Value {
        match c {
            Cond::Index(op, a, b) => {
                let (a, b) = (self.idx(a, 0), self.idx(b, 0));
                self.b.ins().icmp(int_cc(*op), a, b)
            }
            Cond::Value(op, a, b) => {
                let (a, b) = (self.val(a, false), self.val(b, false));
                self.b.ins().fcmp(float_cc(*op), a, b)
            }
            Cond::IsNan(a) => {
                let a = self.val(a, false);
                self.b.ins().fcmp(FloatCC::Unordered, a, a)
            }
            Cond::And(a, b) => {
                let (a, b) = (self.cond(a), self.cond(b));
                self.b.ins().band(a, b)
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.cond(a), self.cond(b));
                self.b.ins().bor(a, b)
            }
        }
    }

    /// A lane mask (`i32x4`, all ones where the condition holds).
    fn mask(&mut self, c: &Cond) -> Value {
        match c {
            Cond::Index(op, a, b) => {
                if self.uses_lane(a) || self.uses_lane(b) {
                    let lanes = [0, 1, 2, 3].map(|l| {
                        let (x, y) = (self.idx(a, l), self.idx(b, l));
                        let t = self.b.ins().icmp(int_cc(*op), x, y);
                        self.b.ins().bmask(I32, t)
                    });
                    let mut v = self.b.ins().scalar_to_vector(I32X4, lanes[0]);
                    for (l, &x) in lanes.iter().enumerate().skip(1) {
                        v = self.b.ins().insertlane(v, x, l as u8);
                    }
                    v
                } else {
                    let t = self.cond(c);
                    let m = self.b.ins().bmask(I32, t);
                    self.b.ins().splat(I32X4, m)
                }
            }
            Cond::Value(op, a, b) => {
                let (a, b) = (self.val(a, true), self.val(b, true));
                self.b.ins().fcmp(float_cc(*op), a, b)
            }
            Cond::IsNan(a) => {
                let a = self.val(a, true);
                self.b.ins().fcmp(FloatCC::Unordered, a, a)
            }
            Cond::And(a, b) => {
                let (a, b) = (self.mask(a), self.mask(b));
                self.b.ins().band(a, b)
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.mask(a), self.mask(b));
                self.b.ins().bor(a, b)
            }
        }
    }

    /// `c ? a : b` on scalars without a branch (Cranelift lowers a float
    /// `select` to a jump, which mispredicts on data-dependent choices).
    pub(crate) fn fselect(&mut self, c: Value, a: Value, b: Value) -> Value {
        let m = self.b.ins().bmask(I32, c);
        let m = self.b.ins().scalar_to_vector(I32X4, m);
        let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
        let (av, bv) = (self.b.ins().scalar_to_vector(F32X4, a), self.b.ins().scalar_to_vector(F32X4, b));
        let r = self.b.ins().bitselect(m, av, bv);
        self.b.ins().extractlane(r, 0)
    }

    /// `acc op x` for a reduction.
    pub(crate) fn combine(&mut self, op: RedOp, acc: Value, x: Value, vec: bool) -> Value {
        match op {
            RedOp::Add => self.b.ins().fadd(acc, x),
            RedOp::Max => {
                // `x > acc || isnan(x) ? x : acc` on vectors (also for a
                // scalar: a float `select` would branch).
                let (xv, av) = if vec {
                    (x, acc)
                } else {
                    (self.b.ins().scalar_to_vector(F32X4, x), self.b.ins().scalar_to_vector(F32X4, acc))
                };
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, xv, av);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, xv, xv);
                let c = self.b.ins().bor(gt, nan);
                let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), c);
                let r = self.b.ins().bitselect(m, xv, av);
                if vec { r } else { self.b.ins().extractlane(r, 0) }
            }
        }
    }

    /// Declares a fresh accumulator variable holding `x`.
    pub(crate) fn define_acc(&mut self, acc: AccId, x: Value, vec: bool) {
        let var = self.b.declare_var(if vec { F32X4 } else { F32 });
        self.b.def_var(var, x);
        self.accs.insert(acc, (var, vec));
    }

    pub(crate) fn stmts(&mut self, body: &[Stmt], vec: bool) {
        for s in body {
            self.stmt(s, vec);
        }
    }

    fn stmt(&mut self, s: &Stmt, vec: bool) {
        match s {
            Stmt::Loop(l) => self.lower_loop(l, vec),
            Stmt::Store { buf, idx, val, accumulate } => self.store(*buf, idx, val, *accumulate, vec),
            Stmt::Let { acc, init } => {
                let x = self.val(init, vec);
                self.define_acc(*acc, x, vec);
            }
            Stmt::Reduce { acc, op, val } => {
                let x = self.val(val, vec);
                if vec && let Some((pvars, _)) = self.partials.get(acc) {
                    let pvar = pvars[self.chain % pvars.len()];
                    let x = self.without_done_lanes(x, if *op == RedOp::Max { f32::NEG_INFINITY } else { 0.0 });
                    let p = self.b.use_var(pvar);
                    let r = self.combine(*op, p, x, true);
                    self.b.def_var(pvar, r);
                    return;
                }
                let (var, is_vec) = self.accs[acc];
                let a = self.b.use_var(var);
                let r = self.combine(*op, a, x, is_vec);
                self.b.def_var(var, r);
            }
            Stmt::Set { acc, val } => {
                let (var, is_vec) = self.accs[acc];
                let x = self.val(val, is_vec);
                self.b.def_var(var, x);
            }
            Stmt::If { cond, then, otherwise } => {
                let c = self.cond(cond);
                let (tb, eb, merge) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
                self.b.ins().brif(c, tb, &[], eb, &[]);
                self.b.switch_to_block(tb);
                self.stmts(then, vec);
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(eb);
                self.stmts(otherwise, vec);
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(merge);
            }
            Stmt::Gemm(g) => self.gemm(g),
        }
    }

    fn store(&mut self, buf: BufId, idx: &Idx, val: &Val, accumulate: bool, vec: bool) {
        let x = self.val(val, vec);
        let flags = MemFlagsData::new().with_notrap();
        if !vec {
            let a = self.elem_addr(buf, idx, 0);
            let x = if accumulate {
                let old = self.b.ins().load(F32, flags, a, 0);
                self.b.ins().fadd(old, x)
            } else {
                x
            };
            self.b.ins().store(flags, x, a, 0);
            return;
        }
        if self.uses_lane(idx) && idx.coefficient(self.lane.unwrap()) == Some(1) {
            let a = self.elem_addr(buf, idx, 0);
            let x = if accumulate {
                let old = self.b.ins().load(F32X4, flags, a, 0);
                self.b.ins().fadd(old, x)
            } else {
                x
            };
            self.b.ins().store(flags, x, a, 0);
            return;
        }
        for l in 0..4u8 {
            let xl = self.b.ins().extractlane(x, l);
            let a = self.elem_addr(buf, idx, l as i64);
            let xl = if accumulate {
                let old = self.b.ins().load(F32, flags, a, 0);
                self.b.ins().fadd(old, xl)
            } else {
                xl
            };
            self.b.ins().store(flags, xl, a, 0);
        }
    }

    /// Runs `l`'s body for `var` in `start..end` by `step`, keeping an
    /// induction variable for every affine index of the body that moves
    /// with the loop variable (`ivs` maps each form to its value with the
    /// variables of loops not yet entered at zero).
    fn run_loop(&mut self, l: &Loop, start: Value, start_const: Option<i64>, end: Value, step: i64, vec_body: bool) {
        self.run_loop_copies(l, start, start_const, end, step, vec_body, 1);
    }

    /// [`Self::run_loop`] with the body emitted `copies` times per iteration
    /// (consecutive steps; copy `c` uses reduction chain `c`).
    #[allow(clippy::too_many_arguments)]
    fn run_loop_copies(
        &mut self,
        l: &Loop,
        start: Value,
        start_const: Option<i64>,
        end: Value,
        step: i64,
        vec_body: bool,
        copies: usize,
    ) {
        let mut forms = Vec::new();
        collect_affine(&l.body, &mut forms);
        forms.retain(|f| f.coefficient(l.var) != 0);
        let mut ivars = Vec::with_capacity(forms.len());
        for f in &forms {
            let scale = if f.buf.is_some() { 4 } else { 1 };
            let c = f.coefficient(l.var) * scale;
            let base = match (self.ivs.get(f), f.buf) {
                (Some(&v), _) => v,
                (None, None) => self.iconst(f.constant),
                (None, Some(b)) => self.b.ins().iadd_imm_s(self.bufptr[&b], 4 * f.constant),
            };
            let init = match start_const {
                Some(s0) => {
                    if s0 == 0 {
                        base
                    } else {
                        self.b.ins().iadd_imm_s(base, c * s0)
                    }
                }
                None => {
                    let off = self.b.ins().imul_imm_s(start, c);
                    self.b.ins().iadd(base, off)
                }
            };
            let var = self.b.declare_var(I64);
            self.b.def_var(var, init);
            ivars.push((f.clone(), var, c));
        }
        let saved: Vec<(Affine, Option<Value>)> = forms.iter().map(|f| (f.clone(), self.ivs.get(f).copied())).collect();
        // These forms become loop-carried values: any split from an
        // enclosing written-out copy no longer describes them.
        let saved_split: Vec<(Affine, Option<(Value, i64)>)> =
            forms.iter().map(|f| (f.clone(), self.iv_split.remove(f))).collect();
        let copies_i = copies as i64;
        self.counted_loop(start, end, step * copies_i, |fx, i| {
            let cur: Vec<Value> = ivars.iter().map(|(_, var, _)| fx.b.use_var(*var)).collect();
            for copy in 0..copies_i {
                let iv = if copy == 0 { i } else { fx.b.ins().iadd_imm_s(i, copy * step) };
                fx.vars.insert(l.var, iv);
                for ((f, _, c), &v) in ivars.iter().zip(&cur) {
                    let v = if copy == 0 { v } else { fx.b.ins().iadd_imm_s(v, c * step * copy) };
                    fx.ivs.insert(f.clone(), v);
                }
                fx.chain = copy as usize;
                fx.stmts(&l.body, vec_body);
            }
            fx.chain = 0;
            for ((_, var, c), &v) in ivars.iter().zip(&cur) {
                let next = fx.b.ins().iadd_imm_s(v, c * step * copies_i);
                fx.b.def_var(*var, next);
            }
        });
        for (f, v) in saved {
            match v {
                Some(v) => self.ivs.insert(f, v),
                None => self.ivs.remove(&f),
            };
        }
        for (f, v) in saved_split {
            if let Some(v) = v {
                self.iv_split.insert(f, v);
            }
        }
    }

    /// A short innermost loop, emitted once per iteration with constant
    /// offsets from the enclosing induction variables.
    fn unrolled_loop(&mut self, l: &Loop, vec: bool) {
        self.unrolled_range(l, 0, l.extent as i64, 1, vec);
    }

    /// Iterations `first, first + step, ...` (`count` of them) of `l`, each
    /// emitted inline.
    fn unrolled_range(&mut self, l: &Loop, first: i64, count: i64, step: i64, vec: bool) {
        let mut forms = Vec::new();
        collect_affine(&l.body, &mut forms);
        forms.retain(|f| f.coefficient(l.var) != 0);
        let saved: Vec<(Affine, Option<Value>)> = forms.iter().map(|f| (f.clone(), self.ivs.get(f).copied())).collect();
        let saved_split: Vec<(Affine, Option<(Value, i64)>)> =
            forms.iter().map(|f| (f.clone(), self.iv_split.get(f).copied())).collect();
        for it in (0..count).map(|k| first + k * step) {
            let i = self.iconst(it);
            self.vars.insert(l.var, i);
            for ((f, old), (_, old_split)) in saved.iter().zip(&saved_split) {
                let scale = if f.buf.is_some() { 4 } else { 1 };
                let c = f.coefficient(l.var) * scale;
                let base = match (old, f.buf) {
                    (Some(v), _) => *v,
                    (None, None) => self.iconst(f.constant),
                    (None, Some(b)) => self.b.ins().iadd_imm_s(self.bufptr[&b], 4 * f.constant),
                };
                let v = if it == 0 { base } else { self.b.ins().iadd_imm_s(base, c * it) };
                self.ivs.insert(f.clone(), v);
                if f.buf.is_none() {
                    // Inside an enclosing written-out copy, `base` is itself
                    // that copy's root plus a constant.
                    let (root, off) = old_split.unwrap_or((base, 0));
                    self.iv_split.insert(f.clone(), (root, off + c * it));
                }
            }
            self.stmts(&l.body, vec);
        }
        for (f, v) in saved {
            match v {
                Some(v) => self.ivs.insert(f, v),
                None => self.ivs.remove(&f),
            };
        }
        for (f, v) in saved_split {
            match v {
                Some(v) => self.iv_split.insert(f, v),
                None => self.iv_split.remove(&f),
            };
        }
    }

    /// Starts the lane partials `l` keeps across its iterations (see
    /// [`crate::kernel::LoopLowering::keep_partials`]).
    fn start_kept_partials(&mut self, l: &Loop) -> Vec<AccId> {
        let reduced = vector_reductions(&l.body, false);
        for &acc in &l.lowering.keep_partials {
            let op = reduced.iter().find(|(a, _)| *a == acc).map_or(RedOp::Add, |&(_, op)| op);
            self.start_partial(acc, op, l.lowering.chains);
        }
        l.lowering.keep_partials.clone()
    }

    fn start_partial(&mut self, acc: AccId, op: RedOp, chains: usize) {
        let init = self.fconst(if op == RedOp::Max { f32::NEG_INFINITY } else { 0.0 }, true);
        let vars = self.vars_holding(F32X4, vec![init; chains]);
        self.partials.insert(acc, (vars, op));
    }

    /// Adds the lanes of the partials of `accs` into their accumulators
    /// (in a fixed order) and ends them.
    fn flush_partials(&mut self, mut accs: Vec<AccId>) {
        accs.sort();
        for acc in accs {
            let Some((pvars, op)) = self.partials.remove(&acc) else { continue };
            // The chains pairwise, then the lanes, in a fixed order.
            let mut chains: Vec<Value> = pvars.iter().map(|&v| self.b.use_var(v)).collect();
            while chains.len() > 1 {
                chains = chains
                    .chunks(2)
                    .map(|c| if c.len() == 2 { self.combine(op, c[0], c[1], true) } else { c[0] })
                    .collect();
            }
            let p = chains[0];
            let (var, _) = self.accs[&acc];
            let mut a = self.b.use_var(var);
            for lane in 0..4u8 {
                let x = self.b.ins().extractlane(p, lane);
                a = self.combine(op, a, x, false);
            }
            self.b.def_var(var, a);
        }
    }

    fn lower_loop(&mut self, l: &Loop, vec: bool) {
        match (l.mode, l.lowering.unroll) {
            (LoopMode::Serial, Unroll::WrittenOut) => self.unrolled_loop(l, vec),
            (LoopMode::Serial, Unroll::Rolled) => {
                let kept = self.start_kept_partials(l);
                let (start, end) = (self.iconst(0), self.iconst(l.extent as i64));
                self.run_loop(l, start, Some(0), end, 1, vec);
                self.flush_partials(kept);
            }
            (LoopMode::Parallel, _) => {
                let kept = self.start_kept_partials(l);
                let (start, end) = (self.lo, self.hi);
                self.run_loop(l, start, None, end, 1, vec);
                self.flush_partials(kept);
            }
            (LoopMode::Vector, _) => self.lower_vector_loop(l, vec),
        }
    }

    /// The full vectors (written out, rolled, or rolled with several body
    /// copies per iteration), then the tail the loop records.
    fn lower_vector_loop(&mut self, l: &Loop, vec: bool) {
        let main = (l.extent / 4 * 4) as i64;
        if main > 0 {
            let mut started = Vec::new();
            for (acc, op) in outer_reductions(&l.body) {
                if self.accs.contains_key(&acc) && !self.partials.contains_key(&acc) {
                    self.start_partial(acc, op, l.lowering.chains);
                    started.push(acc);
                }
            }
            let saved_lane = self.lane.replace(l.var);
            let copies = l.lowering.copies as i64;
            match l.lowering.unroll {
                Unroll::WrittenOut => self.unrolled_range(l, 0, main / 4, 4, true),
                Unroll::Rolled if copies > 1 => {
                    let per = 4 * copies;
                    let body_end = main / per * per;
                    let (start, end) = (self.iconst(0), self.iconst(body_end));
                    self.run_loop_copies(l, start, Some(0), end, 4, true, l.lowering.copies);
                    if body_end < main {
                        self.unrolled_range(l, body_end, (main - body_end) / 4, 4, true);
                    }
                }
                Unroll::Rolled => {
                    let (start, end) = (self.iconst(0), self.iconst(main));
                    self.run_loop(l, start, Some(0), end, 4, true);
                }
            }
            if l.lowering.tail == VectorTail::Overlap {
                // One more vector iteration ending at the last element;
                // its first lanes repeat work already done.
                self.done_lanes = 4 - (l.extent - main as usize);
                self.unrolled_range(l, l.extent as i64 - 4, 1, 4, true);
                self.done_lanes = 0;
            }
            self.lane = saved_lane;
            self.flush_partials(started);
        }
        match l.lowering.tail {
            VectorTail::ScalarWrittenOut => self.unrolled_range(l, main, l.extent as i64 - main, 1, vec),
            VectorTail::Scalar => {
                let (start, end) = (self.iconst(main), self.iconst(l.extent as i64));
                self.run_loop(l, start, Some(main), end, 1, vec);
            }
            VectorTail::None | VectorTail::Overlap => {}
        }
    }
}

/// An affine index `constant + sum(coefficient * var)`, terms sorted by variable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Affine {
    /// `Some(buf)`: the byte address of that element of `buf` (a pointer
    /// induction variable); `None`: the index itself.
    buf: Option<BufId>,
    constant: i64,
    terms: Vec<(VarId, i64)>,
}

impl Affine {
    fn coefficient(&self, v: VarId) -> i64 {
        self.terms.iter().find(|t| t.0 == v).map_or(0, |t| t.1)
    }
}

/// The affine form of `i`, if it is one.
pub(crate) fn affine(i: &Idx) -> Option<Affine> {
    fn go(i: &Idx, scale: i64, out: &mut Affine) -> bool {
        match i {
            Idx::Const(c) => {
                out.constant += c * scale;
                true
            }
            Idx::Var(v) => {
                match out.terms.iter_mut().find(|t| t.0 == *v) {
                    Some(t) => t.1 += scale,
                    None => out.terms.push((*v, scale)),
                }
                true
            }
            Idx::Add(a, b) => go(a, scale, out) && go(b, scale, out),
            Idx::Mul(a, k) => go(a, scale * k, out),
            _ => false,
        }
    }
    let mut out = Affine { buf: None, constant: 0, terms: Vec::new() };
    if !go(i, 1, &mut out) {
        return None;
    }
    out.terms.retain(|t| t.1 != 0);
    out.terms.sort();
    Some(out)
}

/// Every maximal affine sub-expression of the indices in `body` (including
/// matrix offsets of products), each once.
fn collect_affine(body: &[Stmt], out: &mut Vec<Affine>) {
    fn idx(i: &Idx, out: &mut Vec<Affine>) {
        if let Some(a) = affine(i) {
            if !a.terms.is_empty() && !out.contains(&a) {
                out.push(a);
            }
            return;
        }
        match i {
            Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) | Idx::Table(_, a) | Idx::FloatTable(_, a) => idx(a, out),
            Idx::Add(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                idx(a, out);
                idx(b, out)
            }
            Idx::Const(_) | Idx::Var(_) => {}
        }
    }
    // One pointer per address form up to a constant: the taps of a window
    // or a stencil share it (fewer loop-carried pointers to keep in
    // registers) and differ only in the immediate offset of their access.
    fn address(buf: BufId, i: &Idx, out: &mut Vec<Affine>) {
        if let Some(mut a) = affine(i) {
            a.buf = Some(buf);
            a.constant = 0;
            if !a.terms.is_empty() && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    fn val(v: &Val, out: &mut Vec<Affine>) {
        v.visit(&mut |n| match n {
            crate::kernel::Node::Idx(i) => idx(i, out),
            crate::kernel::Node::Val(Val::Load(b, i)) => address(*b, i, out),
            _ => {}
        });
    }
    for s in body {
        match s {
            Stmt::Loop(l) => collect_affine(&l.body, out),
            Stmt::Store { buf, idx: i, val: v, .. } => {
                idx(i, out);
                address(*buf, i, out);
                val(v, out);
            }
            Stmt::Let { init: v, .. } | Stmt::Reduce { val: v, .. } | Stmt::Set { val: v, .. } => val(v, out),
            Stmt::If { cond, then, otherwise } => {
                cond.visit(&mut |n| {
                    if let crate::kernel::Node::Idx(i) = n {
                        idx(i, out)
                    }
                });
                collect_affine(then, out);
                collect_affine(otherwise, out);
            }
            Stmt::Gemm(g) => {
                for m in [&g.a, &g.b, &g.c] {
                    idx(&m.offset, out);
                }
                if let Some(crate::kernel::Bias::PerRow(_, o) | crate::kernel::Bias::PerColumn(_, o)) = &g.epilogue.bias
                {
                    idx(o, out);
                }
                for m in g.epilogue.pre_activation.iter().chain(g.epilogue.grad_mask.as_ref().map(|(_, m)| m)) {
                    idx(&m.offset, out);
                }
            }
        }
    }
}
