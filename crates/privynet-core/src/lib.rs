//! Shared ground for every PrivyNet-rs stage: manifests, artifact schemas, atomic Arrow/Parquet
//! I/O, provenance, zones and logging. Depends on none of ort, burn or polars, so every stage
//! can use it without pulling in another stage's heavy dependencies.

pub mod card;
pub mod columns;
pub mod defence;
pub mod error;
pub mod guard;
pub mod hash;
pub mod io;
pub mod logging;
pub mod manifest;
pub mod provenance;
pub mod row_groups;
pub mod schema;
pub mod topology;

pub use columns::column;
pub use error::{CoreError, Result};
pub use manifest::Manifest;
pub use provenance::Provenance;
pub use schema::{ArtifactKind, Zone};
pub use topology::Topology;

/// The version of the toolkit, written into every artifact's provenance.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
