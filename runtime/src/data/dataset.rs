//! The `Dataset` trait and a subset adaptor.

use std::sync::Arc;

use super::error::DataError;
use super::sample::Sample;

/// A finite, indexable collection of labelled images, like PyTorch's
/// map-style `Dataset`.
///
/// `get` takes `&self` and implementations are `Send + Sync`, so loader
/// workers read one data set from several threads at once.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` (`0..len()`), decoded but not transformed.
    ///
    /// # Errors
    /// [`DataError::Index`] past the end; whatever reading the sample can
    /// fail with (a lazily decoded image file that is corrupt, say).
    fn get(&self, index: usize) -> Result<Sample, DataError>;

    /// The class names, in label order: label `i` is `class_names()[i]`.
    fn class_names(&self) -> &[String];

    /// Number of classes.
    fn num_classes(&self) -> usize {
        self.class_names().len()
    }

    /// Where sample `index` comes from (a file and record, say), for error
    /// messages.
    fn describe(&self, index: usize) -> String {
        format!("sample {index}")
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        (**self).get(index)
    }
    fn class_names(&self) -> &[String] {
        (**self).class_names()
    }
    fn describe(&self, index: usize) -> String {
        (**self).describe(index)
    }
}

/// Some samples of another data set, in a given order (for a train /
/// validation split, or a quick run on the first N samples).
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The samples `indices` of `inner`.
    ///
    /// # Errors
    /// [`DataError::Index`] when an index is past the end of `inner`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset, DataError> {
        let len = inner.len();
        if let Some(&index) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::Index { index, len });
        }
        Ok(Subset { inner, indices })
    }

    /// The first `n` samples of `inner` (all of them when it has fewer).
    pub fn first(inner: Arc<dyn Dataset>, n: usize) -> Subset {
        let n = n.min(inner.len());
        Subset {
            inner,
            indices: (0..n).collect(),
        }
    }

    /// The indices into the inner data set.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("len", &self.indices.len())
            .finish_non_exhaustive()
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let &inner = self.indices.get(index).ok_or(DataError::Index {
            index,
            len: self.indices.len(),
        })?;
        self.inner.get(inner)
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn describe(&self, index: usize) -> String {
        match self.indices.get(index) {
            Some(&inner) => self.inner.describe(inner),
            None => format!("sample {index} (out of range)"),
        }
    }
}

/// Checks `index < len`.
pub(crate) fn check_index(index: usize, len: usize) -> Result<(), DataError> {
    if index < len {
        Ok(())
    } else {
        Err(DataError::Index { index, len })
    }
}
