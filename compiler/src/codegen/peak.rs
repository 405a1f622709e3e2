//! The machine's measured 128-bit FMA peak: a Cranelift-compiled loop of
//! independent F32X4 multiply-adds, the yardstick `kiln bench` reports kernel
//! GFLOP/s against.

use super::{CodegenError, host_isa};
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use std::time::{Duration, Instant};

/// Independent accumulators: enough to cover FMA latency on both pipes.
const ACCUMULATORS: usize = 10;
/// Flops per loop iteration: accumulators x 4 lanes x (multiply + add).
const FLOPS_PER_ITER: u64 = (ACCUMULATORS * 4 * 2) as u64;

/// `fn(iterations: i64, out: *mut f32)`.
type PeakFn = unsafe extern "C" fn(i64, i64);

/// Measures FMA throughput with `threads` threads for about `duration`;
/// returns GFLOP/s summed over the threads.
pub fn measure_fma_peak(threads: usize, duration: Duration) -> Result<f64, CodegenError> {
    let isa = host_isa(false, "speed")?;
    let flag = |name: &str| isa.isa_flags().iter().any(|v| v.name == name && v.as_bool() == Some(true));
    if !(flag("has_avx") && flag("has_fma")) {
        return Err(CodegenError::Target {
            backend: "fma-peak",
            message: "the host has no AVX+FMA, so there is no FMA peak to measure".into(),
        });
    }
    let mut module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
    let mut ctx = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(I64));
    ctx.func.signature.params.push(AbiParam::new(I64));
    let err = |e: String| CodegenError::Kernel { backend: "fma-peak", kernel: "fma_peak".into(), message: e };
    let id =
        module.declare_function("fma_peak", Linkage::Local, &ctx.func.signature).map_err(|e| err(e.to_string()))?;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let (n, out) = (b.block_params(entry)[0], b.block_params(entry)[1]);
        let lane = |b: &mut FunctionBuilder, v: f32| {
            let s = b.ins().f32const(v);
            b.ins().splat(F32X4, s)
        };
        let m = lane(&mut b, 0.999_999);
        let a = lane(&mut b, 1e-7);
        let accs: Vec<_> = (0..ACCUMULATORS).map(|i| lane(&mut b, i as f32)).collect();
        let zero = b.ins().iconst(I64, 0);
        // Top-tested loop: the header's block parameters are the loop state.
        b.append_block_param(header, I64);
        for _ in 0..ACCUMULATORS {
            b.append_block_param(header, F32X4);
        }
        let mut args: Vec<cranelift_codegen::ir::BlockArg> = vec![zero.into()];
        args.extend(accs.iter().map(|&v| cranelift_codegen::ir::BlockArg::from(v)));
        b.ins().jump(header, &args);

        b.switch_to_block(header);
        let params = b.block_params(header).to_vec();
        let done = b.ins().icmp(cranelift_codegen::ir::condcodes::IntCC::SignedGreaterThanOrEqual, params[0], n);
        b.ins().brif(done, exit, &[], body, &[]);

        b.switch_to_block(body);
        let next = b.ins().iadd_imm_s(params[0], 1);
        let mut args: Vec<cranelift_codegen::ir::BlockArg> = vec![next.into()];
        for &acc in &params[1..] {
            args.push(b.ins().fma(acc, m, a).into());
        }
        b.ins().jump(header, &args);

        b.switch_to_block(exit);
        // Sum the accumulators and store one lane so the loop is not dead.
        let mut sum = params[1];
        for &acc in &params[2..] {
            sum = b.ins().fadd(sum, acc);
        }
        let first = b.ins().extractlane(sum, 0);
        debug_assert_eq!(b.func.dfg.value_type(first), F32);
        b.ins().store(MemFlagsData::new().with_notrap(), first, out, 0);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(id, &mut ctx).map_err(|e| err(format!("{e:?}")))?;
    module.finalize_definitions().map_err(|e| err(e.to_string()))?;
    // SAFETY: the function was just compiled with signature (i64, i64) -> ()
    // in the default calling convention, which `PeakFn` describes.
    let f: PeakFn = unsafe { std::mem::transmute::<*const u8, PeakFn>(module.get_finalized_function(id)) };

    let iterations: i64 = 2_000_000;
    let run = move || -> (u64, Duration) {
        let mut sink = 0.0f32;
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < duration {
            // SAFETY: `f` reads no memory and writes one f32 to the address
            // passed, which points at `sink`, alive for the whole call.
            unsafe { f(iterations, &mut sink as *mut f32 as i64) };
            done += iterations as u64;
        }
        std::hint::black_box(sink);
        (done * FLOPS_PER_ITER, start.elapsed())
    };
    let results: Vec<(u64, Duration)> = std::thread::scope(|s| {
        (0..threads.max(1))
            .map(|_| s.spawn(run))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap_or((0, Duration::from_secs(1))))
            .collect()
    });
    // Keep the module (and its code) alive until every thread has finished.
    drop(module);
    Ok(results.iter().map(|&(flops, t)| flops as f64 / t.as_secs_f64() / 1e9).sum())
}
