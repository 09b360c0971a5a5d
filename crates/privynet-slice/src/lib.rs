//! Slice stage library: ONNX graph surgery that cuts a pretrained CNN into the local network,
//! shape and cost inference for its cut points, and the secret channel selection.

pub mod analyze;
pub mod fold;
pub mod model;
pub mod proto;
pub mod select;
pub mod stage;
pub mod surgery;
pub mod tables;

use std::path::PathBuf;

/// Errors of the slice stage; each names the model, node or cut it is about.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ONNX model: {message}")]
    NotOnnx { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("node `{node}` (op {op}): {message}")]
    Op {
        node: String,
        op: String,
        message: String,
    },
    #[error("no cut point named `{name}` in the model; nearest: {suggestions}")]
    UnknownCut { name: String, suggestions: String },
    #[error("{0}")]
    Selection(String),
    #[error("scoring channels on {path}: {source}")]
    Scoring {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting the flags and the manifest leave missing or invalid; the message names the
    /// flag or key.
    #[error("{0}")]
    Usage(String),
    /// A step of the stage that failed, with the file it was on.
    #[error("{what} {}", path.display())]
    Step {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<SliceError>,
    },
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
}
