//! PrivyNet-rs optimizer: reads the characterization table (polars), fits monotone models of
//! validation accuracy and privacy loss in log D per cut from a few sampled topologies, chooses
//! the most accurate topology (on validation; test accuracy only reports) under privacy,
//! compute and storage limits, and writes the decision, the frontier, the predicted grid, a
//! report and plots. Also renders any artifact with polars for
//! `privynet show`.

pub mod choose;
pub mod fit;
pub mod output;
pub mod plot;
pub mod preview;
pub mod report;
pub mod table;

/// Errors of the optimizer crate; each names the file or the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error(transparent)]
    Core(#[from] privynet_core::CoreError),
    #[error("{path}: {source}")]
    Polars {
        path: String,
        #[source]
        source: polars::prelude::PolarsError,
    },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("building an output table: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
