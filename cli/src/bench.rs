//! `kiln bench`: compile time, training and inference throughput, per-kernel
//! time and GFLOP/s against the machine's measured FMA peak of the vectors
//! each kernel's products run on (Cranelift's 128-bit ones, or the wide
//! ISA of its micro-kernels).

use crate::model::{CliError, LossArg, load};
use kiln::compiler::codegen::micro::{self, calibrate};
use kiln::compiler::codegen::peak::measure_fma_peak;
use kiln::compiler::jit::{self, Executable, JitOptions};
use kiln::compiler::target::ProductIsa;
use kiln::compiler::{Graph, Loss, NodeId, Op, Sgd, autodiff};
use kiln::runtime::{ExecError, Model};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The model (.net file).
    model: PathBuf,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,64,256", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Vec<u32>,
    /// Threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Loss of the training step.
    #[arg(long, value_enum, default_value = "cross-entropy")]
    loss: LossArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

struct Measured {
    batch: usize,
    mode: &'static str,
    images_per_s: f64,
    compile_ms: f64,
    kernels: Vec<(String, Duration, u64, ProductIsa)>,
}

/// Measured FMA peaks in GFLOP/s: Cranelift's 128-bit vectors and the wide
/// ISA products run on.
#[derive(Clone, Copy)]
struct Peaks {
    v128: Option<f64>,
    wide: Option<(ProductIsa, f64)>,
}

impl Peaks {
    fn of(&self, isa: ProductIsa) -> Option<f64> {
        match (isa, self.wide) {
            (ProductIsa::Vector128, _) => self.v128,
            (isa, Some((w, p))) if w == isa => Some(p),
            _ => None,
        }
    }
}

pub fn run(args: BenchArgs) -> Result<(), CliError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(CliError::Usage(format!("--seconds must be positive, got {}", args.seconds)));
    }
    let threads =
        args.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    let forward = load(&args.model)?;
    let loss: Loss = args.loss.into();
    let sgd = Sgd { lr: 0.001, momentum: 0.9, ..Sgd::default() };
    let training = autodiff::derive_training(&forward, loss, sgd)?;
    let window = Duration::from_secs_f64(args.seconds);
    // The tile table first, so every compile below has it warm; its cold
    // cost is measured apart.
    let tiles = TileTable::load(ProductIsa::host());
    let mut results = Vec::new();
    for &b in &args.batch {
        let batch = b as usize;
        results.push(measure(&training, batch, threads, window, "train")?);
        results.push(measure(&forward, batch, threads, window, "infer")?);
    }
    let wide = ProductIsa::host();
    let peak = Peaks {
        v128: measure_fma_peak(threads, Duration::from_millis(500)).ok(),
        wide: micro::measure_fma_peak(wide, threads, Duration::from_millis(500)).map(|p| (wide, p)),
    };
    if args.json {
        print_json(&results, peak, &tiles);
    } else {
        print_table(&forward.name, threads, &results, peak, &tiles);
    }
    Ok(())
}

/// Where this run's register-tile speeds came from, and what measuring
/// them from a cold cache costs.
struct TileTable {
    /// "read from PATH", "measured and cached in PATH", ...; `None` when
    /// products run on the 128-bit tiles.
    origin: Option<String>,
    /// One fresh measurement of the table.
    cold: Duration,
}

impl TileTable {
    fn load(isa: ProductIsa) -> TileTable {
        let origin = calibrate::rates(isa).map(|(_, origin)| match origin {
            calibrate::Origin::Cache(path) => format!("read from {}", path.display()),
            calibrate::Origin::Measured(_, Some(path)) => format!("measured and cached in {}", path.display()),
            calibrate::Origin::Measured(_, None) => "measured (no writable cache directory)".to_string(),
        });
        let start = Instant::now();
        let cold = if origin.is_some() && calibrate::measure(isa).is_some() { start.elapsed() } else { Duration::ZERO };
        TileTable { origin, cold }
    }
}

fn measure(
    graph: &Graph,
    batch: usize,
    threads: usize,
    window: Duration,
    mode: &'static str,
) -> Result<Measured, CliError> {
    let options = JitOptions { threads, verify: false, ..JitOptions::default() };
    let start = Instant::now();
    let mut exe = jit::compile(graph, batch, &options).map_err(ExecError::from)?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    fill_leaves(graph, &mut exe, batch)?;
    let batches = data_batches(graph, batch);
    exe.run().map_err(ExecError::from)?;
    let start = Instant::now();
    let mut steps = 0u64;
    while start.elapsed() < window {
        // A different batch each step, copied in as a training loop does.
        for (id, data) in &batches[steps as usize % batches.len()] {
            exe.set(*id, data).map_err(ExecError::from)?;
        }
        exe.run().map_err(ExecError::from)?;
        steps += 1;
    }
    let images_per_s = (steps as f64 * batch as f64) / start.elapsed().as_secs_f64();
    let runs = ((steps / 4).clamp(3, 200)) as usize;
    let flops: Vec<(u64, ProductIsa)> =
        exe.program().kernels.iter().map(|k| (k.flops, k.product_isa().unwrap_or(ProductIsa::Vector128))).collect();
    let kernels = exe.profile(runs).into_iter().zip(flops).map(|((name, t), (f, isa))| (name, t, f, isa)).collect();
    Ok(Measured { batch, mode, images_per_s, compile_ms, kernels })
}

/// Distinct batches the timed loop cycles through (PyTorch's script cycles
/// through 64 pre-made batches): together larger than the L2 cache, so the
/// input is not found in cache just because it was read the step before.
const DATA_BATCHES: usize = 16;

/// PyTorch-initialised parameters and a first batch of data.
fn fill_leaves(graph: &Graph, exe: &mut Executable, batch: usize) -> Result<(), CliError> {
    let forward_params = Model::init(graph.clone(), 0);
    for (key, tensor) in forward_params.state_dict() {
        if let Some(id) = graph.find(&key) {
            exe.set(id, &tensor.data).map_err(ExecError::from)?;
        }
    }
    for (id, data) in &data_batches(graph, batch)[0] {
        exe.set(*id, data).map_err(ExecError::from)?;
    }
    Ok(())
}

/// [`DATA_BATCHES`] batches of every data leaf: inputs and targets in
/// [-1, 1), valid labels.
fn data_batches(graph: &Graph, batch: usize) -> Vec<Vec<(NodeId, Vec<f32>)>> {
    let classes = graph.outputs.first().and_then(|&o| graph.node(o).shape.0.last()).map_or(1, |d| d.at_batch(batch));
    (0..DATA_BATCHES)
        .map(|b| {
            graph
                .node_ids()
                .filter_map(|id| {
                    let n = graph.node(id).shape.numel_at(batch);
                    let data: Vec<f32> = match graph.node(id).op {
                        Op::Input | Op::Target => {
                            (0..n).map(|i| (((i + 1013 * b) * 7919) % 2000) as f32 / 1000.0 - 1.0).collect()
                        }
                        Op::Labels => (0..n).map(|i| ((i + b) % classes) as f32).collect(),
                        _ => return None,
                    };
                    Some((id, data))
                })
                .collect()
        })
        .collect()
}

fn print_table(name: &str, threads: usize, results: &[Measured], peak: Peaks, tiles: &TileTable) {
    outln!("{name}: {threads} thread(s)");
    match peak.v128 {
        Some(p) => outln!("measured 128-bit FMA peak: {p:.1} GFLOP/s"),
        None => outln!("measured 128-bit FMA peak: unavailable (no AVX+FMA)"),
    }
    match peak.wide {
        Some((isa, p)) => outln!("measured {isa} FMA peak: {p:.1} GFLOP/s (products run on {isa})"),
        None => outln!("products run on Cranelift's 128-bit vectors (no wide ISA, or --isa v128)"),
    }
    if let Some(origin) = &tiles.origin {
        outln!(
            "register tiles: speeds {origin}; measuring them takes {:.1} ms, which a compile adds once per machine \
             (compile ms below: with the table warm)",
            tiles.cold.as_secs_f64() * 1e3
        );
    }
    outln!("\n{:>6} {:>6} {:>14} {:>12}", "batch", "mode", "images/s", "compile ms");
    for r in results {
        outln!("{:>6} {:>6} {:>14.0} {:>12.1}", r.batch, r.mode, r.images_per_s, r.compile_ms);
    }
    for r in results {
        outln!("\nkernels, batch {} {}:", r.batch, r.mode);
        outln!("  {:<44} {:>10} {:>9} {:>8} {:>7}", "kernel", "us/run", "GFLOP/s", "% peak", "vectors");
        for (kernel, t, flops, isa) in &r.kernels {
            let gflops = *flops as f64 / t.as_secs_f64().max(1e-12) / 1e9;
            let share = peak.of(*isa).map(|p| format!("{:.0}%", 100.0 * gflops / p)).unwrap_or_default();
            outln!("  {:<44} {:>10.1} {:>9.1} {:>8} {:>7}", kernel, t.as_secs_f64() * 1e6, gflops, share, isa.name());
        }
    }
}

fn print_json(results: &[Measured], peak: Peaks, tiles: &TileTable) {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "batch": r.batch, "mode": r.mode, "images_per_s": r.images_per_s, "compile_ms": r.compile_ms,
            })
        })
        .collect();
    let kernels: Vec<serde_json::Value> = results
        .iter()
        .flat_map(|r| {
            r.kernels.iter().map(move |(name, t, flops, isa)| {
                serde_json::json!({
                    "batch": r.batch, "mode": r.mode, "name": name, "us": t.as_secs_f64() * 1e6, "flops": flops,
                    "gflops": *flops as f64 / t.as_secs_f64().max(1e-12) / 1e9, "vectors": isa.name(),
                })
            })
        })
        .collect();
    let doc = serde_json::json!({
        "results": rows, "kernels": kernels, "peak_gflops": peak.v128,
        "tile_table": tiles.origin.as_ref().map(|origin| serde_json::json!({
            "origin": origin, "cold_ms": tiles.cold.as_secs_f64() * 1e3,
        })),
        "wide_peak": peak.wide.map(|(isa, p)| serde_json::json!({ "vectors": isa.name(), "gflops": p })),
    });
    outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}
