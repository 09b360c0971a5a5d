//! The core crate's error type: every variant names the file (and field or key) it is about.

use std::path::PathBuf;

/// Result alias for the core crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Errors raised while reading manifests, checking schemas and reading or writing artifacts.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{path} is damaged or not a valid Arrow/Parquet file: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Manifest {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    ManifestValue { path: PathBuf, message: String },
    #[error("bad override `{expr}`: {message}")]
    Override { expr: String, message: String },
    #[error("{path}: schema mismatch for a `{kind}` artifact: {message}")]
    Schema {
        path: PathBuf,
        kind: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("built-in schema `{kind}` is malformed: {message}")]
    BuiltinSchema { kind: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl CoreError {
    /// A failure to create or write `path` (a folder, an artifact, its temporary file).
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
