//! `kiln train`: the lecture's training loop on a `.net` model, with
//! evaluation, metrics, a chart, checkpoints and resume.

use crate::model::{CliError, load};
use crate::transforms::{Augment, Normalization, parse_augment, parse_normalize, transforms_for};
use kiln::compiler::Sgd;
use kiln::runtime::Backend;
use kiln::runtime::train::{
    Adam, LrSchedule, Optimizer, SYNTHETIC_SIZES, Schedule, TrainConfig, TrainError, Trainer, open_training_data_for,
    write_chart,
};
use std::io::Write;
use std::path::PathBuf;

/// Which optimizer `kiln train` uses.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OptimizerArg {
    /// SGD with momentum (PyTorch semantics, dampening 0), compiled into the step.
    Sgd,
    /// Adam (PyTorch semantics, --weight-decay as an L2 term), compiled into the step.
    Adam,
    /// AdamW (PyTorch semantics, --weight-decay decoupled), compiled into the step.
    Adamw,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The model (.net file); its output must be class logits [N, classes].
    model: PathBuf,
    /// Data folder: CIFAR-10 binary batches, <split>/<class>/ image folders or
    /// <split>_images.npy + <split>_labels.npy. Without it kiln trains on a
    /// built-in generated image set and says so.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Images per training step.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Total epochs (a resumed run counts the epochs it already did).
    #[arg(long, default_value_t = 10)]
    epochs: u64,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: OptimizerArg,
    /// Learning rate.
    #[arg(long, default_value_t = 0.001)]
    lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    nesterov: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Cross-entropy against smoothed labels (PyTorch's `label_smoothing`, in [0, 1]).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Learning-rate schedule, stepped per batch: `constant`, `cosine[:MIN_LR]`
    /// (CosineAnnealingLR over the run), `onecycle[:PCT_START]` (OneCycleLR
    /// with max_lr = --lr, no momentum cycling) or `step:EPOCHS:GAMMA` (StepLR).
    #[arg(long, default_value = "constant", value_parser = parse_schedule)]
    schedule: Schedule,
    /// Clip the gradients' global 2-norm to this before each update
    /// (PyTorch's `clip_grad_norm_`).
    #[arg(long)]
    clip_grad_norm: Option<f32>,
    /// Linear warm-up over this many steps before the schedule.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Normalisation after ToTensor: `MEAN,STD` for every channel, a mean
    /// and a std per channel, or `cifar10` (default 0.5,0.5).
    #[arg(long, value_parser = parse_normalize)]
    normalize: Option<Normalization>,
    /// Training augmentation: `crop=PAD` (random crop of the input's size
    /// after zero padding) and/or `flip[=P]` (random horizontal flip,
    /// P = 0.5), e.g. `crop=4,flip`. Evaluation leaves it out.
    #[arg(long, default_value = "none", value_parser = parse_augment)]
    augment: Augment,
    /// Seed of initialisation, shuffling and random transforms (default 0,
    /// or the checkpoint's when resuming).
    #[arg(long)]
    seed: Option<u64>,
    /// Background data-loading threads (results do not depend on it).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads of the compiled kernels (default: every core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Executor.
    #[arg(long, default_value = "jit")]
    backend: Backend,
    /// Batch size of evaluation.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    eval_batch: u32,
    /// Write a checkpoint (safetensors: weights, optimizer state, progress) here after every epoch, atomically.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (bit-identical with the same settings).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Append one JSON line per epoch to this file.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Write the training curves (loss and accuracy per epoch) as SVG here
    /// (default: beside the checkpoint, with extension .svg).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Size of the generated training set used without --data.
    #[arg(long, default_value_t = SYNTHETIC_SIZES.0)]
    synthetic_train: usize,
    /// Size of the generated test set used without --data.
    #[arg(long, default_value_t = SYNTHETIC_SIZES.1)]
    synthetic_test: usize,
    /// Instead of training: time one epoch with the real loader against the
    /// bare compiled steps on pre-made batches, and print the loop's overhead.
    #[arg(long)]
    profile_overhead: bool,
    /// Rounds (bare steps, then an epoch) of --profile-overhead.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    profile_rounds: u32,
}

fn err(e: TrainError) -> CliError {
    CliError::Usage(e.to_string())
}

pub fn run(args: TrainArgs) -> Result<(), CliError> {
    let forward = load(&args.model)?;
    let optimizer = match args.optimizer {
        OptimizerArg::Sgd => Optimizer::Sgd(Sgd {
            lr: args.lr,
            momentum: args.momentum,
            nesterov: args.nesterov,
            weight_decay: args.weight_decay,
        }),
        OptimizerArg::Adam => Optimizer::Adam(Adam { lr: args.lr, weight_decay: args.weight_decay, ..Adam::default() }),
        OptimizerArg::Adamw => Optimizer::Adam(Adam { lr: args.lr, weight_decay: args.weight_decay, ..Adam::adamw() }),
    };
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(CliError::Usage(format!("--lr must be a positive number, got {}", args.lr)));
    }
    if args.nesterov && (args.momentum <= 0.0 || !matches!(args.optimizer, OptimizerArg::Sgd)) {
        return Err(CliError::Usage("--nesterov needs --optimizer sgd and a positive --momentum".into()));
    }
    let resumed = match &args.resume {
        Some(path) => Some(kiln::runtime::train::Checkpoint::load(path).map_err(err)?),
        None => None,
    };
    let seed = args.seed.or(resumed.as_ref().map(|c| c.seed)).unwrap_or(0);
    let mut config = TrainConfig {
        batch_size: args.batch as usize,
        epochs: args.epochs,
        optimizer,
        label_smoothing: args.label_smoothing,
        clip_grad_norm: args.clip_grad_norm,
        schedule: LrSchedule { schedule: args.schedule, warmup_steps: args.warmup },
        seed,
        workers: args.workers,
        backend: args.backend,
        eval_batch: args.eval_batch as usize,
        progress: !args.quiet,
        ..TrainConfig::default()
    };
    if let Some(t) = args.threads {
        config.threads = t as usize;
    }

    let data = open_training_data_for(&forward, args.data.as_deref(), (args.synthetic_train, args.synthetic_test))
        .map_err(err)?;
    eprintln!("{}", data.description);
    let transforms = transforms_for(&forward, args.normalize.as_ref(), args.augment)?;
    let mut trainer = Trainer::new(&forward, config).map_err(err)?;
    if let (Some(ck), Some(path)) = (resumed, &args.resume) {
        if ck.batch_size != 0 && ck.batch_size != args.batch as usize {
            eprintln!(
                "warning: {} was trained with batch {}; continuing with batch {} is not the same run",
                path.display(),
                ck.batch_size,
                args.batch
            );
        }
        trainer.restore(ck, path).map_err(err)?;
        eprintln!("resuming {} after epoch {} (step {})", path.display(), trainer.epoch(), trainer.steps());
    }

    if args.profile_overhead {
        let report = trainer.profile_overhead(data.train, transforms, args.profile_rounds as usize).map_err(err)?;
        outln!("{report}");
        return Ok(());
    }

    let checkpoint = args.checkpoint.clone().or(args.resume.clone());
    let chart = args.chart.clone().or_else(|| checkpoint.as_ref().map(|c| c.with_extension("svg")));
    // Fail now, not after the first epoch, when an output cannot be written.
    for path in [&checkpoint, &chart, &args.metrics].into_iter().flatten() {
        let werr = |source| CliError::Write { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
    }
    if let Some(path) = &args.metrics {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| CliError::Write { path: path.clone(), source })?;
    }
    let title = format!("{} ({})", forward.name, args.model.display());
    let mut on_epoch = |t: &Trainer, r: &kiln::runtime::train::EpochRecord| -> Result<(), TrainError> {
        let test = match (r.test_loss, r.test_accuracy) {
            (Some(l), Some(a)) => format!(", test loss {l:.4}, test accuracy {:.2} %", 100.0 * a),
            _ => String::new(),
        };
        eprintln!(
            "epoch {}/{}: train loss {:.4}{test} ({:.1} s, {:.0} images/s)",
            r.epoch,
            t.config().epochs,
            r.train_loss,
            r.seconds,
            r.images_per_s
        );
        if let Some(path) = &args.metrics {
            let line = r.to_json().to_string();
            let werr = |source| TrainError::Write { path: path.clone(), source };
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(werr)?;
            writeln!(f, "{line}").map_err(werr)?;
        }
        if let Some(path) = &checkpoint {
            t.save_checkpoint(path)?;
        }
        if let Some(path) = &chart {
            write_chart(path, &title, t.history())?;
        }
        Ok(())
    };
    if trainer.epoch() >= args.epochs {
        eprintln!("the run already has {} epochs (--epochs {}): nothing to train", trainer.epoch(), args.epochs);
    }
    trainer.fit(data.train, data.test.clone(), transforms.clone(), &mut on_epoch).map_err(err)?;
    if let Some(test) = data.test {
        let metrics = trainer.evaluate_after_fit(test, &transforms).map_err(err)?;
        outln!("{metrics}");
        outln!("Confusion matrix:\n{}", metrics.confusion_table());
    }
    if let Some(path) = &checkpoint {
        eprintln!("checkpoint: {}", path.display());
    }
    if let Some(path) = &chart {
        eprintln!("chart: {}", path.display());
    }
    Ok(())
}

/// `constant`, `cosine[:MIN_LR]`, `onecycle[:PCT_START]` or `step:EPOCHS:GAMMA`.
fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let mut parts = text.split(':');
    let kind = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let number = |s: &str, what: &str| s.parse::<f32>().map_err(|_| format!("{what} must be a number, got `{s}`"));
    let schedule = match (kind, rest.as_slice()) {
        ("constant", []) => Schedule::Constant,
        ("cosine", []) => Schedule::Cosine { min_lr: 0.0 },
        ("cosine", [min]) => Schedule::Cosine { min_lr: number(min, "the cosine schedule's minimum rate")? },
        ("onecycle", []) => Schedule::OneCycle { pct_start: 0.3 },
        ("onecycle", [pct]) => {
            let pct_start = number(pct, "onecycle's rising fraction")?;
            if !(pct_start > 0.0 && pct_start < 1.0) {
                return Err(format!("onecycle's rising fraction must be in (0, 1), got {pct_start}"));
            }
            Schedule::OneCycle { pct_start }
        }
        ("step", [every, gamma]) => Schedule::Step {
            every: every
                .parse()
                .ok()
                .filter(|&e: &u64| e > 0)
                .ok_or_else(|| format!("step's epochs between decays must be a positive integer, got `{every}`"))?,
            gamma: number(gamma, "step's decay factor")?,
        },
        _ => {
            return Err(format!(
                "expected `constant`, `cosine[:MIN_LR]`, `onecycle[:PCT_START]` or `step:EPOCHS:GAMMA`, got `{text}`"
            ));
        }
    };
    Ok(schedule)
}
