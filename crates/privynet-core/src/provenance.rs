//! Provenance carried in every artifact's key-value metadata: the producing stage, the tool
//! version, the manifest, the stage's parameters and the content hashes of its inputs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{ArtifactKind, Result, TOOL_VERSION, hash};

/// Where this process's inputs came from when they are local copies: the object store's cache
/// path of a fetched object to the object's URL. The store notes each fetch here, so that
/// provenance names a remote input by its URL, as the user named it, rather than by the cache
/// file a stage happened to read (which lives on one machine only). Process-wide because the
/// stage libraries that record inputs never see the store.
static ORIGINS: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());

/// Records that the file at `local` is a copy of `origin` (a URL), for [`Provenance::add_input`].
pub fn note_origin(local: &Path, origin: &str) {
    let mut origins = ORIGINS.lock().unwrap_or_else(|e| e.into_inner());
    origins.insert(local.to_path_buf(), origin.to_string());
}

/// The name provenance gives an input: its origin if it is a noted copy, else its path.
pub fn input_name(path: &Path) -> String {
    let origins = ORIGINS.lock().unwrap_or_else(|e| e.into_inner());
    origins
        .get(path)
        .cloned()
        .unwrap_or_else(|| path.display().to_string())
}

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

    /// Hashes an input file or folder and records it, by its URL if it is a fetched copy.
    pub fn add_input(&mut self, path: &Path) -> Result<()> {
        let digest = hash::hash_path(path)?;
        self.inputs.insert(input_name(path), digest);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_input_is_named_by_its_origin_and_a_local_one_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (copy, plain) = (dir.path().join("copy.bin"), dir.path().join("plain.bin"));
        std::fs::write(&copy, b"remote bytes").unwrap();
        std::fs::write(&plain, b"local bytes").unwrap();
        note_origin(&copy, "s3://bucket/run/features.parquet");
        let mut p = Provenance::new("test", "-");
        p.add_input(&copy).unwrap();
        p.add_input(&plain).unwrap();
        let names: Vec<&String> = p.inputs.keys().collect();
        let plain_name = plain.display().to_string();
        assert_eq!(
            names,
            [&plain_name, &"s3://bucket/run/features.parquet".to_string()]
        );
        assert_eq!(
            p.inputs["s3://bucket/run/features.parquet"],
            hash::hash_path(&copy).unwrap()
        );
    }
}
