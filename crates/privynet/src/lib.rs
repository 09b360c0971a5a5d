//! The PrivyNet-rs runner: expands a manifest into a DAG of stage-binary invocations, decides
//! by content hashes which nodes are up to date, runs the rest (in parallel where the DAG
//! allows), and keeps a lock file and an event log beside the outputs.

pub mod dag;
pub mod exec;
pub mod lock;
pub mod show;

/// Errors the runner reports before or while running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Dag(String),
    #[error(
        "stage binary `{name}` not found at {path} (build it with `cargo build --release --workspace`, or `make build`)"
    )]
    MissingBinary { name: String, path: String },
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
    #[error(transparent)]
    Slice(#[from] privynet_slice::SliceError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
