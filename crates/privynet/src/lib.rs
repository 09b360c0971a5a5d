//! The PrivyNet-rs runner: expands a manifest into a DAG of stage-binary invocations, decides
//! by content hashes which nodes are up to date, runs the rest (in parallel where the DAG
//! allows), and keeps a lock file and an event log beside the outputs.

pub mod characterize;
pub mod dag;
pub mod exec;
pub mod hold;
pub mod lock;
pub mod pipeline;
pub mod show;
pub mod slurm;
pub mod stage;

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
    #[error(transparent)]
    Store(#[from] privynet_store::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// What the runner was doing (`planning pipelines/smoke.yaml`), with the error that stopped
    /// it as its cause: the binaries print the whole chain.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RunError {
    /// `source`, as the cause of failing at `context`.
    pub fn context(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RunError::Context {
            context: context.into(),
            source: source.into(),
        }
    }
}
