//! Classification metrics and per-epoch records.

use std::fmt;

use crate::data::CIFAR10_CLASSES;

/// The class names the lecture prints for CIFAR-10.
pub const LECTURE_CLASSES: [&str; 10] =
    ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The names to print for a data set's classes: the lecture's short names
/// for CIFAR-10's classes, the data set's own names otherwise.
pub fn display_class_names(names: &[String]) -> Vec<String> {
    if names.len() == CIFAR10_CLASSES.len() && names.iter().zip(CIFAR10_CLASSES).all(|(a, b)| a == b) {
        LECTURE_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    }
}

/// The result of evaluating a classifier on a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalMetrics {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Samples classified correctly.
    pub correct: u64,
    /// Samples evaluated.
    pub total: u64,
    /// Class names, in label order.
    pub class_names: Vec<String>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

impl EvalMetrics {
    /// Empty metrics over `class_names`.
    pub fn new(class_names: Vec<String>) -> EvalMetrics {
        let c = class_names.len();
        EvalMetrics { loss: 0.0, correct: 0, total: 0, class_names, confusion: vec![vec![0; c]; c] }
    }

    /// Adds a batch of logits `[n, classes]` (row-major) and labels; returns
    /// the batch's summed loss. Ties go to the first maximum, as `torch.max` does.
    pub(crate) fn add_batch(&mut self, logits: &[f32], labels: &[usize], classes: usize) -> f64 {
        let mut loss_sum = 0.0f64;
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            let max = f64::from(row[best]);
            let lse = max + row.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
            loss_sum += lse - f64::from(row[label.min(classes - 1)]);
            if best == label {
                self.correct += 1;
            }
            if label < self.confusion.len() && best < self.confusion.len() {
                self.confusion[label][best] += 1;
            }
            self.total += 1;
        }
        loss_sum
    }

    /// Overall accuracy in `[0, 1]`.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.correct as f64 / self.total as f64 }
    }

    /// Accuracy of each class in `[0, 1]` (0 for a class with no samples).
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: u64 = row.iter().sum();
                if n == 0 { 0.0 } else { row[c] as f64 / n as f64 }
            })
            .collect()
    }

    /// The confusion matrix as a text table (rows: true class, columns: predicted).
    pub fn confusion_table(&self) -> String {
        let names = &self.class_names;
        let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(6);
        let mut s = format!("{:>w$} | predicted\n", "true");
        s.push_str(&format!("{:>w$} |", ""));
        for n in names {
            s.push_str(&format!(" {:>w$}", truncate(n, w)));
        }
        s.push('\n');
        for (name, row) in names.iter().zip(&self.confusion) {
            s.push_str(&format!("{:>w$} |", truncate(name, w)));
            for v in row {
                s.push_str(&format!(" {v:>w$}"));
            }
            s.push('\n');
        }
        s
    }
}

fn truncate(s: &str, w: usize) -> &str {
    match s.char_indices().nth(w) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for EvalMetrics {
    /// The lecture's report: overall accuracy, then one line per class.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Accuracy of the network on the {} test images: {:.1} % (loss {:.4})",
            self.total,
            100.0 * self.accuracy(),
            self.loss
        )?;
        for (name, acc) in self.class_names.iter().zip(self.per_class_accuracy()) {
            writeln!(f, "Accuracy for class: {name:5} is {:.1} %", 100.0 * acc)?;
        }
        Ok(())
    }
}

/// What one epoch of training gave: one line of `--metrics`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// The epoch, 1-based.
    pub epoch: u64,
    /// Mean training loss over the epoch's samples.
    pub train_loss: f64,
    /// Mean test loss, when a test set was given.
    pub test_loss: Option<f64>,
    /// Test accuracy in `[0, 1]`, when a test set was given.
    pub test_accuracy: Option<f64>,
    /// Test accuracy of each class in `[0, 1]`.
    pub per_class_accuracy: Vec<f64>,
    /// The class names of `per_class_accuracy`.
    pub class_names: Vec<String>,
    /// Wall time of the training epoch (without evaluation), seconds.
    pub seconds: f64,
    /// Training images per second over the epoch.
    pub images_per_s: f64,
}

impl EpochRecord {
    /// The record as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "classes": self.class_names,
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
        })
    }

    /// Reads a record written by [`EpochRecord::to_json`]; `None` if malformed.
    pub fn from_json(v: &serde_json::Value) -> Option<EpochRecord> {
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        Some(EpochRecord {
            epoch: v.get("epoch")?.as_u64()?,
            train_loss: f("train_loss")?,
            test_loss: f("test_loss"),
            test_accuracy: f("test_accuracy"),
            per_class_accuracy: v.get("per_class_accuracy")?.as_array()?.iter().filter_map(|x| x.as_f64()).collect(),
            class_names: v
                .get("classes")
                .and_then(|c| c.as_array())
                .map(|c| c.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            seconds: f("seconds")?,
            images_per_s: f("images_per_s")?,
        })
    }
}
