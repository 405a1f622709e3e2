//! Checkpoints: parameters, optimizer state and the run's progress in one
//! safetensors file, written atomically.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_compiler::{Graph, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::error::TrainError;
use super::metrics::EpochRecord;

/// The `format` metadata value of a kiln checkpoint.
const FORMAT: &str = "kiln.checkpoint.v1";
/// Prefix of optimizer-state tensor names in a checkpoint.
const OPTIM_PREFIX: &str = "optimizer/";

/// Everything needed to continue a run: parameters (state_dict keys and
/// layouts, so the file is also a plain weights file), optimizer state, and
/// where the run stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model's name.
    pub model: String,
    /// Parameters in state_dict order.
    pub params: Vec<(String, Tensor)>,
    /// Optimizer buffers by name (`momentum_<key>` for SGD, `adam_m.<key>`
    /// and `adam_v.<key>` for Adam).
    pub optim_state: Vec<(String, Tensor)>,
    /// The optimizer's configuration (`{"kind": "sgd", ...}`).
    pub optimizer: serde_json::Value,
    /// Adam's step count (0 for SGD).
    pub adam_t: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Training steps completed.
    pub step: u64,
    /// The run's seed (shuffling, transforms, initialisation).
    pub seed: u64,
    /// The batch size the run trains with.
    pub batch_size: usize,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    /// The dtypes of tensors the file held that were converted to float32
    /// on reading (`["F16"]` for a half-precision state_dict).
    pub converted: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint as safetensors bytes.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] if a tensor's data does not match its shape.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .params
            .iter()
            .map(|(k, t)| (k.clone(), t))
            .chain(self.optim_state.iter().map(|(k, t)| (format!("{OPTIM_PREFIX}{k}"), t)))
            .map(|(k, t)| (k, t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (k, shape, data) in &bytes {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| TrainError::Checkpoint {
                path: PathBuf::from("<checkpoint>"),
                message: format!("tensor {k}: {e}"),
            })?;
            views.push((k.clone(), view));
        }
        let history: Vec<serde_json::Value> = self.history.iter().map(EpochRecord::to_json).collect();
        // safetensors sorts tensors by name; keep the state_dict order here.
        let order: Vec<serde_json::Value> = bytes.iter().map(|(k, _, _)| serde_json::Value::from(k.as_str())).collect();
        let meta: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("model", self.model.clone()),
            ("optimizer", self.optimizer.to_string()),
            ("adam_t", self.adam_t.to_string()),
            ("epoch", self.epoch.to_string()),
            ("step", self.step.to_string()),
            ("seed", self.seed.to_string()),
            ("batch_size", self.batch_size.to_string()),
            ("history", serde_json::Value::Array(history).to_string()),
            ("order", serde_json::Value::Array(order).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, Some(meta))
            .map_err(|e| TrainError::Checkpoint { path: PathBuf::from("<checkpoint>"), message: e.to_string() })
    }

    /// Writes the checkpoint to `path` atomically: to a temporary file in
    /// the same folder, flushed to disk, then renamed over `path`. A crash
    /// at any point leaves either the previous file or the new one, whole.
    ///
    /// # Errors
    /// [`TrainError::Write`] when the file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint (or a plain safetensors weights file, which gives
    /// a checkpoint at epoch 0 without optimizer state).
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] naming the file for a missing, truncated or
    /// corrupt file or a tensor that is not float32.
    pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
        Checkpoint::from_bytes(&bytes, path)
    }

    /// Parses checkpoint bytes; `path` is only used in messages.
    ///
    /// # Errors
    /// As [`Checkpoint::load`].
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, TrainError> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(path, format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(path, format!("not a valid safetensors file (truncated or corrupt?): {e}")))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let mut params = Vec::new();
        let mut optim_state = Vec::new();
        // The order the tensors were written in (state_dict order), when
        // recorded; then any others by name.
        let recorded: Vec<String> = meta
            .get("order")
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
            .and_then(|v| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()))
            .unwrap_or_default();
        let mut names: Vec<String> = recorded.into_iter().filter(|n| st.names().contains(&n.as_str())).collect();
        let mut rest: Vec<String> =
            st.names().into_iter().filter(|n| !names.iter().any(|m| m == n)).map(String::from).collect();
        rest.sort();
        names.extend(rest);
        let mut converted: Vec<String> = Vec::new();
        for name in names {
            let view = st.tensor(&name).map_err(|e| bad(path, format!("tensor {name}: {e}")))?;
            if crate::weights::is_step_counter(&name, view.dtype()) {
                continue;
            }
            let Some((data, from)) = crate::weights::to_f32(&view) else {
                return Err(bad(
                    path,
                    format!(
                        "tensor {name} has dtype {:?}; kiln reads float32 (F32) tensors, and converts F16, BF16 and F64",
                        view.dtype()
                    ),
                ));
            };
            if let Some(from) = from.map(|d| format!("{d:?}"))
                && !converted.contains(&from)
            {
                converted.push(from);
            }
            let t = Tensor { shape: view.shape().to_vec(), data };
            match name.strip_prefix(OPTIM_PREFIX) {
                Some(k) => optim_state.push((k.to_string(), t)),
                None => params.push((name, t)),
            }
        }
        let num = |k: &str| -> Result<u64, TrainError> {
            match meta.get(k) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| bad(path, format!("metadata `{k}` = {v:?} is not a number"))),
            }
        };
        let history = match meta.get("history") {
            None => Vec::new(),
            Some(h) => {
                let v: serde_json::Value =
                    serde_json::from_str(h).map_err(|e| bad(path, format!("metadata `history` is not JSON: {e}")))?;
                v.as_array().map(|a| a.iter().filter_map(EpochRecord::from_json).collect()).unwrap_or_default()
            }
        };
        let optimizer = match meta.get("optimizer") {
            None => serde_json::Value::Null,
            Some(o) => {
                serde_json::from_str(o).map_err(|e| bad(path, format!("metadata `optimizer` is not JSON: {e}")))?
            }
        };
        Ok(Checkpoint {
            model: meta.get("model").cloned().unwrap_or_default(),
            params,
            optim_state,
            optimizer,
            adam_t: num("adam_t")?,
            epoch: num("epoch")?,
            step: num("step")?,
            seed: num("seed")?,
            batch_size: num("batch_size")? as usize,
            history,
            converted,
        })
    }

    /// Whether the file carries kiln's checkpoint metadata (not just weights).
    pub fn is_kiln_checkpoint(&self) -> bool {
        !self.optimizer.is_null()
    }
}

/// State_dict entries in order: `(key, tensor)`.
pub type StateDict = Vec<(String, Tensor)>;

/// Reads the parameters of `graph` from a safetensors file (a kiln
/// checkpoint or any weights file with the model's state_dict keys; extra
/// tensors are ignored), in state_dict order.
///
/// # Errors
/// [`TrainError::Checkpoint`] for an unreadable file, a missing parameter or
/// one of the wrong shape.
pub fn load_weights(path: &Path, graph: &Graph) -> Result<Vec<(String, Tensor)>, TrainError> {
    Ok(load_weights_converting(path, graph)?.0)
}

/// [`load_weights`], and the dtypes converted to float32 on the way
/// ([`Checkpoint::converted`]), for saying so.
///
/// # Errors
/// As [`load_weights`].
pub fn load_weights_converting(path: &Path, graph: &Graph) -> Result<(StateDict, Vec<String>), TrainError> {
    let ck = Checkpoint::load(path)?;
    Ok((match_params(path, graph, ck.params)?, ck.converted))
}

/// Puts `params` in `graph`'s state_dict order, checking names and shapes.
pub(crate) fn match_params(
    path: &Path,
    graph: &Graph,
    params: Vec<(String, Tensor)>,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let mut by_name: HashMap<String, Tensor> = params.into_iter().collect();
    let mut out = Vec::with_capacity(graph.params.len());
    for &p in &graph.params {
        let node = graph.node(p);
        let want = node.shape.at_batch(1);
        let t = by_name.remove(&node.name).ok_or_else(|| {
            bad(path, format!("has no tensor `{}` (model {} expects shape {want:?})", node.name, graph.name))
        })?;
        if t.shape != want {
            return Err(bad(
                path,
                format!("tensor `{}` has shape {:?}, but model {} expects {want:?}", node.name, t.shape, graph.name),
            ));
        }
        out.push((node.name.clone(), t));
    }
    Ok(out)
}

fn bad(path: &Path, message: String) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), message }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it is
/// written and flushed to disk, then renamed over `path`, and the folder is
/// flushed. A crash at any moment leaves the old file or the new one, never
/// a mix; a leftover temporary file is harmless.
///
/// # Errors
/// [`TrainError::Write`] when writing, flushing or renaming fails (the
/// temporary file is removed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let werr = |source| TrainError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().ok_or_else(|| werr(std::io::Error::other("not a file path")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform
        // lets a folder be opened and synced).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}
