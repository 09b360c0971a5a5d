//! burn models and training loops of PrivyNet-rs: loading features into memory, the cloud
//! network and its training (the train stage), and the privacy audit (the attack stage: the
//! attacker's IRN trained to convergence, the optimisation attack through the local network
//! rebuilt in burn, their scores and intervals), on burn's pure-Rust flex CPU backend.

pub mod audit;
pub mod data;
pub mod deploy;
pub mod kernels;
pub mod memory;
pub mod metrics;
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
    /// An input a stage refuses (wrong zone, missing split, mismatched shapes...).
    #[error("{0}")]
    Input(String),
    /// A failure in a step of a stage, said first: `loading features.parquet: ...`.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

    /// Wraps an error in what the stage was doing (`loading X`), for `map_err`. The stage
    /// binaries print an error with its causes, so this reads `loading X: <the cause>`.
    pub(crate) fn context<E>(context: String) -> impl FnOnce(E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        move |e| Self::Context {
            context,
            source: e.into(),
        }
    }
}
