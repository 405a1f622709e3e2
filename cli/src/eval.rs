//! `kiln eval`: test accuracy, per class, and the confusion matrix of trained weights.

use crate::model::{CliError, load};
use crate::transforms::{Augment, Normalization, parse_normalize, transforms_for};
use kiln::runtime::Backend;
use kiln::runtime::train::{
    SYNTHETIC_SIZES, TrainConfig, TrainError, Trainer, load_weights_converting, open_training_data_for,
};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The model (.net file).
    model: PathBuf,
    /// Data folder (as for `kiln train`); its test split is evaluated. Without
    /// it, the built-in generated test set.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Weights: a kiln checkpoint or any safetensors file with the model's state_dict keys.
    #[arg(long)]
    weights: PathBuf,
    /// Normalisation after ToTensor, as in training: `MEAN,STD`, a mean
    /// and a std per channel, or `cifar10` (default 0.5,0.5).
    #[arg(long, value_parser = parse_normalize)]
    normalize: Option<Normalization>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Threads of the compiled kernels (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Executor.
    #[arg(long, default_value = "jit")]
    backend: Backend,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn err(e: TrainError) -> CliError {
    CliError::Usage(e.to_string())
}

pub fn run(args: EvalArgs) -> Result<(), CliError> {
    let forward = load(&args.model)?;
    let (params, converted) = load_weights_converting(&args.weights, &forward).map_err(err)?;
    if !converted.is_empty() {
        eprintln!("{}: converted {} tensors to float32", args.weights.display(), converted.join(" and "));
    }
    let data = open_training_data_for(&forward, args.data.as_deref(), SYNTHETIC_SIZES).map_err(err)?;
    eprintln!("{}", data.description);
    let Some(test) = data.test else {
        return Err(CliError::Usage("the data folder has no test split to evaluate".into()));
    };
    let mut config = TrainConfig {
        eval_batch: args.batch as usize,
        backend: args.backend,
        progress: !args.quiet,
        ..TrainConfig::default()
    };
    if let Some(t) = args.threads {
        config.threads = t as usize;
    }
    // The training executor is compiled at batch 1 only to hold the weights.
    config.batch_size = 1;
    let mut trainer = Trainer::with_params(&forward, config, params).map_err(err)?;
    let transforms = transforms_for(&forward, args.normalize.as_ref(), Augment::default())?;
    let start = std::time::Instant::now();
    let metrics = trainer.evaluate(test, transforms).map_err(err)?;
    let secs = start.elapsed().as_secs_f64();
    outln!("{metrics}");
    outln!("Confusion matrix:\n{}", metrics.confusion_table());
    eprintln!(
        "evaluated {} images in {secs:.2} s ({:.0} images/s)",
        metrics.total,
        metrics.total as f64 / secs.max(1e-9)
    );
    Ok(())
}
