//! Provenance carried in every artifact's key-value metadata: the producing stage, the tool
//! version, the manifest, the stage's parameters and the content hashes of its inputs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::{ArtifactKind, Result, TOOL_VERSION, hash};

/// What produced an artifact. Turned into `privynet.*` metadata keys when the artifact is written.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub stage: String,
    pub manifest: String,
    pub params: serde_json::Value,
    /// Input path (as given) to its blake3 digest.
    pub inputs: BTreeMap<String, String>,
    /// Further `privynet.*` keys a kind requires (shape, topology, ...), without the prefix.
    pub extra: BTreeMap<String, String>,
}

impl Provenance {
    /// Starts the provenance of a stage run under a manifest (or `-` when run from flags).
    pub fn new(stage: &str, manifest: &str) -> Self {
        Self {
            stage: stage.to_string(),
            manifest: manifest.to_string(),
            params: serde_json::Value::Null,
            inputs: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Records the stage's parameters.
    pub fn with_params<T: serde::Serialize>(mut self, params: &T) -> Self {
        self.params = serde_json::to_value(params).unwrap_or(serde_json::Value::Null);
        self
    }

    /// Hashes an input file or folder and records it.
    pub fn add_input(&mut self, path: &Path) -> Result<()> {
        let digest = hash::hash_path(path)?;
        self.inputs.insert(path.display().to_string(), digest);
        Ok(())
    }

    /// Sets an extra `privynet.<key>` metadata entry.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.extra.insert(key.to_string(), value.into());
    }

    /// The key-value metadata for an artifact of `kind`.
    pub fn metadata(&self, kind: ArtifactKind) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("privynet.kind".into(), kind.name().into());
        m.insert("privynet.stage".into(), self.stage.clone());
        m.insert("privynet.version".into(), TOOL_VERSION.into());
        m.insert("privynet.manifest".into(), self.manifest.clone());
        m.insert("privynet.params".into(), self.params.to_string());
        m.insert(
            "privynet.inputs".into(),
            serde_json::to_string(&self.inputs).expect("a string map should serialise"),
        );
        for (k, v) in &self.extra {
            m.insert(format!("privynet.{k}"), v.clone());
        }
        m
    }
}
