//! A node of the DAG: one stage-binary invocation, the files it reads and writes, and the
//! parameters that make it stale.

use std::collections::BTreeMap;
use std::path::PathBuf;

use privynet_core::ArtifactKind;
use serde_json::Value;

use crate::stage::Stage;

/// One input of a node: a file and the artifact kind it holds (for the zone check).
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub kind: Option<ArtifactKind>,
}

/// One node of the DAG.
#[derive(Debug, Clone)]
pub struct Node {
    /// `stage` or `stage/topology`, e.g. `slice/fire3-d8`.
    pub id: String,
    pub stage: Stage,
    pub topology: Option<String>,
    pub inputs: Vec<Input>,
    pub outputs: Vec<PathBuf>,
    /// The parameters this node reads, by key; compared with the lock file's record.
    pub params: BTreeMap<String, Value>,
    /// Arguments to the stage binary.
    pub args: Vec<String>,
    /// Indices of the nodes that produce this node's inputs.
    pub deps: Vec<usize>,
}
