//! Extract stage library: ONNX Runtime sessions (the library found in the project's cache),
//! exact preprocessing, the streaming image-to-features loop, and deriving narrower channel
//! counts from a wider extraction, and the stage from its flags (`stage`); and the Fisher
//! scoring of channels the slice binary (which lives here for that reason) uses for
//! `fisher-random`.

pub mod derive;
pub mod extract;
pub mod fisher;
pub mod predict;
pub mod preprocess;
pub mod runtime;
pub mod stage;

/// The name of the local network's output, as written by `privynet-slice`.
pub const FEATURES_OUTPUT: &str = "features";

use std::path::PathBuf;

/// Errors of the extract stage.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(
        "ONNX Runtime library not found (looked at: {looked}). Install it with `make ort` (scripts/install-ort.sh), or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 or later"
    )]
    NoRuntime { looked: String },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
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
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
}

impl<T> From<ort::Error<T>> for ExtractError {
    fn from(e: ort::Error<T>) -> Self {
        ExtractError::Ort(e.to_string())
    }
}
