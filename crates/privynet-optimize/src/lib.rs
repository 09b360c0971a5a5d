//! PrivyNet-rs optimizer: reads the characterization table (polars), fits monotone models of
//! validation accuracy, privacy loss and the Fisher-information PSNR bound in log D per series
//! (a cut under one defence) from a few sampled topologies, chooses the most accurate topology
//! (on validation; test accuracy only reports) under privacy, compute, storage and bytes-sent
//! limits, and writes the decision, the frontier, the predicted grid, a report and plots,
//! compared with the raw-image baseline where there is one and, with defences in the grid,
//! with the best undefended topology. Also renders any
//! artifact with polars for `privynet show`. `stage` is the `privynet-optimize` binary's run
//! from its flags.

pub mod baseline;
pub mod choose;
pub mod fit;
pub mod output;
pub mod plot;
pub mod preview;
pub mod report;
pub mod stage;
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
    /// A step of the stage that failed, with the file it was on.
    #[error("{what} {path}")]
    Step {
        what: &'static str,
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Maps a polars error on `path` to [`OptimizeError::Polars`], naming the file.
pub(crate) fn polars_error(
    path: &std::path::Path,
) -> impl Fn(polars::prelude::PolarsError) -> OptimizeError + '_ {
    move |source| OptimizeError::Polars {
        path: path.display().to_string(),
        source,
    }
}

/// Maps an I/O error on `path` to [`OptimizeError::Io`], naming the file.
pub(crate) fn io_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> OptimizeError + '_ {
    move |source| OptimizeError::Io {
        path: path.display().to_string(),
        source,
    }
}
