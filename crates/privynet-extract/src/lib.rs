//! Extract stage library: ONNX Runtime sessions (the library found in the project's cache),
//! exact preprocessing, the streaming image-to-features loop, and deriving narrower channel
//! counts from a wider extraction, and the stage from its flags (`stage`); the defend stage
//! (`defend`, binary `privynet-defend`), which makes a defended topology's features (noise
//! drawn from the run's secret, integer codes when quantised) from its undefended base's; the
//! reading and writing of feature rows they share (`rows`: float values or codes); the Fisher
//! scoring of channels the slice binary (which lives here for that reason) uses for
//! `fisher-random`; and the deployed pair run on images or on sent features (`predict`),
//! applying the card's defence to the local half's output before the cloud half.

pub mod defend;
pub mod derive;
pub mod extract;
pub mod fisher;
pub mod predict;
pub mod preprocess;
pub mod rows;
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
    /// A deploy folder without a file the half being run needs.
    #[error(
        "{}: the deploy folder has no {file}, which {half} needs (the deploy stage writes card.json, local.onnx and cloud.onnx)",
        dir.display()
    )]
    DeployFile {
        dir: PathBuf,
        file: String,
        half: &'static str,
    },
    /// Features of one shape where cloud.onnx takes another: both shapes named (C x H x W,
    /// `?` for a dimension a model leaves open).
    #[error(
        "{} {verb} features of shape {found} (C x H x W), but {} takes {expected}",
        from.display(),
        cloud.display()
    )]
    Shape {
        from: PathBuf,
        verb: &'static str,
        found: String,
        cloud: PathBuf,
        expected: String,
    },
    /// `--images` that is none of the forms `privynet-predict` reads.
    #[error(
        "{}: {found}; expected images.parquet (from privynet-ingest), a folder of PNG or JPEG images (flat, or one subfolder per class), or CIFAR-10 binaries (data_batch_N.bin or test_batch.bin, plain or .gz, or a folder holding them)",
        path.display()
    )]
    ImagesForm { path: PathBuf, found: String },
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
    /// The ingest stage's readers, which `privynet-predict` reads folders and CIFAR-10 with.
    #[error(transparent)]
    Ingest(#[from] privynet_ingest::IngestError),
}

impl<T> From<ort::Error<T>> for ExtractError {
    fn from(e: ort::Error<T>) -> Self {
        ExtractError::Ort(e.to_string())
    }
}
