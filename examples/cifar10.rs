//! The lecture's practice: the LeNet-style classifier trained on CIFAR-10
//! exactly as the lecture does in PyTorch: batch 4, SGD with lr 0.001 and
//! momentum 0.9, 10 epochs, `Normalize(0.5, 0.5)`, then the test accuracy
//! overall and per class.
//!
//! ```text
//! cargo run --release --example cifar10 -- --data DIR   # CIFAR-10 in DIR (binary batches, image folders or .npy)
//! cargo run --release --example cifar10                 # no data at hand: a short run on generated images
//! ```
//!
//! Without `--data` it trains for 3 epochs on kiln's built-in generated
//! 10-class image set (5,000 training and 1,000 test images) and says so.

use clap::Parser;
use kiln::compiler::Sgd;
use kiln::compiler::frontend::compile_str;
use kiln::runtime::train::{
    EpochRecord, Optimizer, SYNTHETIC_SIZES, TrainConfig, TrainError, Trainer, lecture_transforms, open_training_data,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// The lecture's CIFAR-10 run.
#[derive(Parser)]
struct Args {
    /// CIFAR-10 folder (e.g. one holding cifar-10-batches-bin/); without it, generated images.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Epochs (default: 10 on real data as in the lecture, 3 on generated images).
    #[arg(long)]
    epochs: Option<u64>,
    /// Seed of initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Background data-loading threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads of the compiled kernels (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Save a checkpoint here after every epoch.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let lowered = compile_str(include_str!("lenet.net"))
        .map_err(|d| d.render("examples/lenet.net", include_str!("lenet.net")))?;
    let net = lowered.graph;
    let data = open_training_data(args.data.as_deref(), SYNTHETIC_SIZES)?;
    eprintln!("{}", data.description);
    let epochs = args.epochs.unwrap_or(if args.data.is_some() { 10 } else { 3 });
    let mut config = TrainConfig {
        batch_size: 4,
        epochs,
        optimizer: Optimizer::Sgd(Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 }),
        seed: args.seed,
        workers: args.workers,
        progress: !args.quiet,
        ..TrainConfig::default()
    };
    if let Some(t) = args.threads {
        config.threads = t;
    }
    eprintln!(
        "training {} ({} parameters) for {epochs} epochs: batch 4, SGD lr 0.001 momentum 0.9, Normalize(0.5, 0.5), {} threads",
        net.name,
        kiln::runtime::Model::new(net.clone()).num_parameters(),
        config.threads
    );
    let transforms = lecture_transforms(&net)?;
    let mut trainer = Trainer::new(&net, config)?;
    let start = std::time::Instant::now();
    let mut on_epoch = |t: &Trainer, r: &EpochRecord| -> Result<(), TrainError> {
        eprintln!(
            "epoch {:2}: train loss {:.3}, test accuracy {:.1} % ({:.1} s, {:.0} images/s)",
            r.epoch,
            r.train_loss,
            100.0 * r.test_accuracy.unwrap_or(f64::NAN),
            r.seconds,
            r.images_per_s
        );
        if let Some(path) = &args.checkpoint {
            t.save_checkpoint(path)?;
        }
        Ok(())
    };
    trainer.fit(data.train, data.test.clone(), transforms.clone(), &mut on_epoch)?;
    let train_time = start.elapsed().as_secs_f64();
    eprintln!("Finished Training in {train_time:.1} s (including evaluation after each epoch)");
    if let Some(test) = data.test {
        let metrics = trainer.evaluate_after_fit(test, &transforms)?;
        print!("{metrics}");
        if args.data.is_none() {
            println!("(generated images, not CIFAR-10: chance is 10 %)");
        }
    }
    Ok(())
}
