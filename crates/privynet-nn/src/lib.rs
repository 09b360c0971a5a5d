//! burn models and training loops of PrivyNet-rs: loading features into memory, the cloud
//! network and its training (the train stage), and the privacy audit (the attack stage: the
//! attacker's IRN trained to convergence, its scores and their intervals), on burn's pure-Rust
//! flex CPU backend.

pub mod attack;
pub mod audit;
pub mod audit_output;
pub mod cloud;
pub mod data;
pub mod irn;
pub mod matching;
pub mod metrics;
pub mod resume;
pub mod train;

use std::path::{Path, PathBuf};

/// Errors of training and of the data it reads.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("{0}")]
    Training(String),
    #[error("{path}: {message}")]
    Save { path: PathBuf, message: String },
    #[error("cannot continue from {path}: {message}")]
    Resume { path: PathBuf, message: String },
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
}

impl NnError {
    /// A failure to write `path` (a model, an optimizer state, a folder of them).
    pub(crate) fn save(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::Save {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}
