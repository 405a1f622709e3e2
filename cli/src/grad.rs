//! `kiln grad`: outputs, loss and every gradient of a model on given
//! parameters and data, as .npy files: how kiln is checked against other frameworks.

use crate::model::{CliError, LossArg, with_label_smoothing};
use kiln::compiler::autodiff;
use kiln::compiler::mode::Mode;
use kiln::compiler::ops::{Adam, Optim, Update};
use kiln::compiler::{Graph, NodeId, Sgd, Tensor};
use kiln::runtime::{Backend, ExecOptions, Executor, npy};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct GradArgs {
    /// The model (.net file).
    model: PathBuf,
    /// Directory holding `<key>.npy` for every parameter (PyTorch state_dict keys and layouts).
    #[arg(long)]
    params: PathBuf,
    /// The input batch (.npy, float32), e.g. [N, 3, 32, 32].
    #[arg(long)]
    input: PathBuf,
    /// Integer class labels [N] (.npy; int64, int32 or uint8) for cross-entropy.
    #[arg(long, conflicts_with = "target")]
    labels: Option<PathBuf>,
    /// Target tensor (.npy, float32) for mse or perceptron.
    #[arg(long)]
    target: Option<PathBuf>,
    /// The loss.
    #[arg(long, value_enum)]
    loss: LossArg,
    /// Cross-entropy against smoothed labels (PyTorch's `label_smoothing`, in [0, 1]).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Run this many SGD steps on the batch and write `losses.npy` and `after_<key>.npy`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    steps: Option<u32>,
    /// Learning rate of the steps.
    #[arg(long, default_value_t = 0.01)]
    lr: f32,
    /// Momentum of the steps (PyTorch semantics, dampening 0).
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    /// Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Clip the gradients' global 2-norm to this before each step
    /// (PyTorch's `clip_grad_norm_`).
    #[arg(long)]
    clip_grad_norm: Option<f32>,
    /// The optimizer of the steps, with PyTorch's update rules (Adam's and
    /// AdamW's betas 0.9, 0.999 and eps 1e-8; `--weight-decay` is Adam's L2
    /// term and AdamW's decoupled decay).
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: GradOptimizer,
    /// Evaluation mode (PyTorch's `model.eval()`): normalisation layers use
    /// and keep their running statistics.
    #[arg(long)]
    eval: bool,
    /// Executor.
    #[arg(long, default_value = "jit")]
    backend: Backend,
    /// Directory the results are written to (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// `--optimizer`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum GradOptimizer {
    Sgd,
    Adam,
    Adamw,
}

pub fn run(args: GradArgs) -> Result<(), CliError> {
    let loss = with_label_smoothing(args.loss.into(), args.label_smoothing)?;
    let sgd = Sgd { lr: args.lr, momentum: args.momentum, nesterov: args.nesterov, weight_decay: args.weight_decay };
    let optim = match args.optimizer {
        GradOptimizer::Sgd => Optim::Sgd(sgd),
        GradOptimizer::Adam => Optim::Adam(Adam { lr: args.lr, weight_decay: args.weight_decay, ..Adam::default() }),
        GradOptimizer::Adamw => Optim::Adam(Adam { lr: args.lr, weight_decay: args.weight_decay, ..Adam::adamw() }),
    };
    if !matches!(optim, Optim::Sgd(_)) && (args.momentum != 0.0 || args.nesterov) {
        return Err(CliError::Usage("--momentum and --nesterov are SGD's; Adam keeps its own moments".into()));
    }
    let mode = if args.eval { Mode::Eval } else { Mode::Train };
    let forward = crate::model::load(&args.model)?;
    if let Some(c) = args.clip_grad_norm
        && !(c.is_finite() && c > 0.0)
    {
        return Err(CliError::Usage(format!("--clip-grad-norm must be a positive number, got {c}")));
    }
    let update = Update { optim, clip_grad_norm: args.clip_grad_norm };
    let graph = autodiff::derive_training_with(mode, &forward, loss, update)?;
    let training = graph.training.clone().ok_or_else(|| CliError::Usage("no training graph".into()))?;
    let [input_node] = graph.inputs[..] else {
        return Err(CliError::Usage(format!(
            "kiln grad takes models with one input; {} has {}",
            graph.name,
            graph.inputs.len()
        )));
    };

    let input = npy::read_f32(&args.input)?;
    let batch = check_batched(&graph, input_node, &input, &args.input)?;
    let target = match (loss, &args.labels, &args.target) {
        (l, Some(path), _) if l.takes_labels() => npy::read_labels(path)?,
        (l, None, _) if l.takes_labels() => return Err(CliError::Usage("--loss cross-entropy needs --labels".into())),
        (_, _, Some(path)) => npy::read_f32(path)?,
        (_, _, None) => return Err(CliError::Usage(format!("--loss {} needs --target", loss.name()))),
    };
    let target_shape = graph.node(training.target).shape.at_batch(batch);
    if target.shape != target_shape {
        let path = args.labels.as_ref().or(args.target.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
        return Err(CliError::Usage(format!(
            "{path} has shape {:?}, but the model's output needs {} of shape {target_shape:?}",
            target.shape,
            graph.node(training.target).name
        )));
    }

    let mut exec =
        Executor::with_options(graph.clone(), batch, args.backend, ExecOptions { threads: 1, input_grads: true })?;
    for &p in &graph.params {
        let node = graph.node(p);
        let path = args.params.join(format!("{}.npy", node.name));
        if !path.exists() {
            return Err(CliError::Usage(format!("missing parameter {}: {} does not exist", node.name, path.display())));
        }
        let t = npy::read_f32_shaped(&path, &node.shape.at_batch(batch))?;
        exec.set(p, &t.data)?;
    }
    exec.set(input_node, &input.data)?;
    exec.set(training.target, &target.data)?;
    let set_corrections = |exec: &mut Executor, t: u64| -> Result<(), CliError> {
        if let (Some((step_size, bc2_sqrt)), Optim::Adam(adam)) = (training.adam_corrections, optim) {
            let (s, b) = adam.bias_corrections(adam.lr, t);
            exec.set(step_size, &[s])?;
            exec.set(bc2_sqrt, &[b])?;
        }
        Ok(())
    };
    set_corrections(&mut exec, 1)?;
    exec.run()?;

    std::fs::create_dir_all(&args.out).map_err(|source| CliError::Write { path: args.out.clone(), source })?;
    let out = |name: &str| args.out.join(name);
    write(&out("output.npy"), &exec.tensor(graph.outputs[0])?)?;
    let first_loss = exec.get(training.loss)?[0];
    write(&out("loss.npy"), &Tensor::scalar(first_loss))?;
    for &(param, grad) in &training.param_grads {
        write(&out(&format!("grad_{}.npy", graph.node(param).name)), &exec.tensor(grad)?)?;
    }
    for &(_, grad) in &training.input_grads {
        write(&out("grad_input.npy"), &exec.tensor(grad)?)?;
    }
    if let Some(steps) = args.steps {
        let mut losses = vec![first_loss];
        for t in 2..=u64::from(steps) {
            set_corrections(&mut exec, t)?;
            exec.run()?;
            losses.push(exec.get(training.loss)?[0]);
        }
        write(&out("losses.npy"), &Tensor { shape: vec![losses.len()], data: losses })?;
        for &p in &graph.params {
            write(&out(&format!("after_{}.npy", graph.node(p).name)), &exec.tensor(p)?)?;
        }
    }
    eprintln!("wrote results for {} (batch {batch}, loss {first_loss}) to {}", graph.name, args.out.display());
    Ok(())
}

/// Checks a data file against a batched leaf and returns the batch size.
fn check_batched(graph: &Graph, node: NodeId, t: &Tensor, path: &Path) -> Result<usize, CliError> {
    let n = graph.node(node);
    let batch = t.shape.first().copied().unwrap_or(0);
    if batch == 0 || t.shape != n.shape.at_batch(batch) {
        return Err(CliError::Usage(format!(
            "{} has shape {:?}, but the model's input `{}` is {}",
            path.display(),
            t.shape,
            n.name,
            n.shape
        )));
    }
    Ok(batch)
}

fn write(path: &Path, t: &Tensor) -> Result<(), CliError> {
    Ok(npy::write_f32(path, t)?)
}
