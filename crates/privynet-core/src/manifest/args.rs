//! The `--manifest` and `--set` arguments every stage binary takes (feature `cli`: clap).

use std::path::PathBuf;

use super::Manifest;
use crate::{CoreError, Result};

/// The `--manifest` and `--set` arguments every stage binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ManifestArgs {
    /// Pipeline manifest (YAML) to take parameters from.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Override a manifest value, e.g. `--set extract.batch_size=64` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ManifestArgs {
    /// Loads the manifest, if one was given.
    pub fn load(&self) -> Result<Option<Manifest>> {
        match &self.manifest {
            Some(p) => Manifest::load(p, &self.set).map(Some),
            None if !self.set.is_empty() => Err(CoreError::Override {
                expr: self.set.join(" "),
                message: "--set needs --manifest".into(),
            }),
            None => Ok(None),
        }
    }

    /// The manifest's name for provenance, or `-` when run from flags alone.
    pub fn label(&self) -> String {
        self.manifest
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into())
    }
}
