//! Ingest stage library: reads CIFAR-10 (official binary layout, plain, per-file gzip or the
//! official tarball) or an image folder, draws stratified seeded splits and writes
//! `images.parquet`; `stage` resolves the binary's flags over the manifest and runs it.

pub mod cifar;
pub mod folder;
pub mod split;
pub mod stage;
pub mod write;

use std::path::PathBuf;

/// Errors of the ingest stage; each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: truncated CIFAR-10 file: {len} bytes is not a multiple of the 3073-byte record (1 label byte + 3072 pixel bytes)"
    )]
    Truncated { path: PathBuf, len: u64 },
    #[error("{path}: {message}")]
    Dataset { path: PathBuf, message: String },
    #[error("{0}")]
    Split(String),
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
        source: Box<IngestError>,
    },
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
}

impl IngestError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// One decoded image before splitting.
#[derive(Debug, Clone)]
pub struct Record {
    /// Stable id (see the `images` schema).
    pub id: i64,
    pub label: i32,
    /// File and record it came from.
    pub source: String,
    /// HWC RGB u8.
    pub pixels: Vec<u8>,
}

/// A decoded dataset: the pools splits are drawn from.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub class_names: Vec<String>,
    pub height: u32,
    pub width: u32,
    /// Images the `train` and `attacker` splits are drawn from.
    pub train_pool: Vec<Record>,
    /// Images the `test` split is drawn from; `None` when the dataset has no separate test set
    /// (an image folder), and `test` is carved from `train_pool` too.
    pub test_pool: Option<Vec<Record>>,
}
