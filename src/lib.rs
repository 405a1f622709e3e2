//! kiln: declare, compile and train neural networks in Rust.
//!
//! Declare a network with [`net!`]: every shape is checked by rustc, and the
//! macro generates a typed wrapper around a [`Model`] (parameters in
//! PyTorch's state_dict order, safetensors checkpoints, forward and training
//! steps on the JIT).
#![warn(missing_docs)]

pub use kiln_compiler as compiler;
pub use kiln_runtime as runtime;

pub use kiln_compiler::{Loss, Sgd};
pub use kiln_runtime::{Backend, Mode, Model, ModelError, Tensor};

/// Declares a network in the `.net` declaration language; every shape is
/// checked at compile time and a typed API is generated.
///
/// The input is a struct whose fields are layers (`name: Ctor(args)`, with
/// PyTorch's constructor names and keyword arguments) and a `fn forward`
/// whose arguments and result carry shapes (`N` is the batch size). The
/// macro runs kiln's front end on it, unchanged (the same parser, shape
/// checker and errors as `.net` files and the `kiln` CLI), and reports every
/// error at once as a rustc error at the tokens that caused it:
///
/// ```text
/// error: fc1 expects 256 input features but receives 400 (conv2 -> pool gives [N, 16, 5, 5])
///   --> src/main.rs:9:13
///    |
///  9 |         fc1: Linear(16 * 4 * 4, 120),
///    |              ^^^^^^^^^^^^^^^^^^^^^^^
/// ```
///
/// # Generated code
///
/// For `pub struct LeNet { ... }` the macro generates `pub struct LeNet`
/// (keeping its doc comments and visibility) wrapping a [`Model`], with:
///
/// - `LeNet::init(seed)` (PyTorch's default initialisation: every weight and
///   bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from a seeded ChaCha8
///   stream), `LeNet::zeros()`, `LeNet::from_safetensors(path)`;
/// - `state_dict()`, `param(key)`, `load_state_dict(map)` with PyTorch's keys
///   (`conv1.weight`, ...) and layouts (`[out, in, kh, kw]`, `[out, in]`);
/// - `save(path)` / `load(path)` as safetensors, `load_npy_dir(dir)` for a
///   directory of `<key>.npy` files;
/// - `forward(x, ...)` with one `&Tensor` argument per declared input,
///   returning a `Tensor` (or a tuple for a tuple result); the batch size is
///   read from the tensors and a wrong-shaped tensor is an error naming the
///   input and both shapes;
/// - `train_step(x, ..., target, loss, sgd)`: forward, loss, backward and an
///   SGD update in one compiled step, returning the loss;
/// - `train()` / `eval()` / `is_training()`: PyTorch's modes (training by
///   default). Batch normalisation uses the batch's statistics and updates
///   its running ones in training mode, the running ones in evaluation mode;
///   dropout masks only in training mode. `forward` and `train_step` both
///   follow the mode;
/// - `graph()` for inspection, and `model()` / `model_mut()` for the
///   [`Model`] (e.g. [`Model::set_backend`] to run on the reference
///   interpreter instead of the JIT);
/// - constants: `SOURCE`, `INPUT_NAMES`, `INPUT_SHAPES`, `OUTPUT_SHAPES`
///   (with [`compiler::Dim`]s, `batched` marking `N`), `PARAM_NAMES`,
///   `PARAM_SHAPES`, `NUM_PARAMETERS`.
///
/// The generated type embeds the declaration text and rebuilds its graph at
/// run time through the same front end (once per type); the macro has
/// already proved at compile time that this succeeds. Generating the graph
/// construction node by node would duplicate the lowering logic; re-running
/// the front end keeps a single definition of what a declaration means.
///
/// Warnings of the front end (such as a layer `forward` never uses) cannot be
/// emitted by a procedural macro on stable Rust and are dropped; `kiln
/// inspect` shows them for the same text in a `.net` file.
///
/// # Example: the lecture's CIFAR-10 classifier
///
/// ```
/// use kiln::{Loss, Sgd, Tensor};
///
/// kiln::net! {
///     /// The lecture's CIFAR-10 classifier.
///     pub struct LeNet {
///         conv1: Conv2d(3, 6, 5),
///         pool: MaxPool2d(2, 2),
///         conv2: Conv2d(6, 16, 5),
///         fc1: Linear(16 * 5 * 5, 120),
///         fc2: Linear(120, 84),
///         fc3: Linear(84, 10),
///     }
///     fn forward(x: [N, 3, 32, 32]) -> [N, 10] {
///         let x = pool(relu(conv1(x)));
///         let x = pool(relu(conv2(x)));
///         let x = x.reshape([N, 16 * 5 * 5]);
///         let x = relu(fc1(x));
///         let x = relu(fc2(x));
///         fc3(x)
///     }
/// }
///
/// # fn main() -> Result<(), kiln::ModelError> {
/// let mut net = LeNet::init(0);
/// assert_eq!(LeNet::NUM_PARAMETERS, 62006);
/// assert_eq!(LeNet::PARAM_NAMES[0], "conv1.weight");
/// assert_eq!(net.param("conv1.weight").unwrap().shape, [6, 3, 5, 5]);
///
/// let x = Tensor::zeros(&[2, 3, 32, 32]);
/// let logits = net.forward(&x)?;
/// assert_eq!(logits.shape, [2, 10]);
///
/// // A wrong shape is an error naming the input and both shapes.
/// let err = net.forward(&Tensor::zeros(&[2, 3, 28, 28])).unwrap_err();
/// assert!(err.to_string().contains("input `x`"));
///
/// let labels = Tensor::new(vec![2], vec![3.0, 7.0]).unwrap();
/// let sgd = Sgd { lr: 0.001, momentum: 0.9, ..Sgd::default() };
/// let loss = net.train_step(&x, &labels, Loss::CrossEntropy, sgd)?;
/// assert!(loss.is_finite());
/// # Ok(())
/// # }
/// ```
pub use kiln_macros::net;
