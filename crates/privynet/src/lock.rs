//! The lock file (`privynet.lock.json` beside the outputs): per node, the content hashes of its
//! inputs and outputs, its parameters and its binary's hash, plus a stat cache (size and
//! modification time per path) so an unchanged file is not hashed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RunError;

/// What was true when a node last ran successfully.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub inputs: BTreeMap<String, String>,
    pub params: BTreeMap<String, Value>,
    pub binary: String,
    pub outputs: BTreeMap<String, String>,
    pub seconds: f64,
}

/// A path's size and modification time with the hash computed for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatEntry {
    pub signature: String,
    pub hash: String,
}

/// The whole lock file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LockFile {
    pub nodes: BTreeMap<String, NodeRecord>,
    #[serde(default)]
    pub stat: BTreeMap<String, StatEntry>,
}

/// The lock file's path for an output folder.
pub fn path(out_dir: &Path) -> PathBuf {
    out_dir.join("privynet.lock.json")
}

impl LockFile {
    /// Reads the lock file; a missing one is empty, a corrupt one is an error naming it.
    pub fn load(out_dir: &Path) -> Result<Self, RunError> {
        let p = path(out_dir);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                RunError::Dag(format!(
                    "{} is not a valid lock file ({e}); delete it to rerun everything",
                    p.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RunError::Io {
                path: p.display().to_string(),
                source: e,
            }),
        }
    }

    /// Writes the lock file atomically, so an interrupted run leaves the previous valid one.
    pub fn save(&self, out_dir: &Path) -> Result<(), RunError> {
        let bytes = serde_json::to_vec_pretty(self).expect("a lock file should serialise");
        privynet_core::io::write_bytes_atomic(&path(out_dir), &bytes)?;
        Ok(())
    }

    /// The content hash of a file or folder, or `None` if it does not exist. Reuses the cached
    /// hash when the path's size and modification time are unchanged.
    pub fn hash(&mut self, p: &Path) -> Result<Option<String>, RunError> {
        let Some(sig) = signature(p) else {
            return Ok(None);
        };
        let key = p.display().to_string();
        if let Some(e) = self.stat.get(&key)
            && e.signature == sig
        {
            return Ok(Some(e.hash.clone()));
        }
        let hash = privynet_core::hash::hash_path(p)?;
        self.stat.insert(
            key,
            StatEntry {
                signature: sig,
                hash: hash.clone(),
            },
        );
        Ok(Some(hash))
    }
}

fn stat_one(p: &Path) -> Option<String> {
    let m = std::fs::metadata(p).ok()?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Some(format!("{}:{mtime}", m.len()))
}

/// Size and modification time of a file, or of every file under a folder.
fn signature(p: &Path) -> Option<String> {
    if p.is_dir() {
        let mut parts = Vec::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).ok()?.flatten() {
                let q = e.path();
                if q.is_dir() {
                    stack.push(q);
                } else {
                    parts.push(format!("{}={}", q.display(), stat_one(&q)?));
                }
            }
        }
        parts.sort();
        Some(privynet_core::hash::hash_bytes(parts.join("\n").as_bytes()))
    } else {
        stat_one(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_and_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"x").unwrap();
        let mut lock = LockFile::default();
        let h1 = lock.hash(&f).unwrap().unwrap();
        assert_eq!(lock.stat.len(), 1);
        assert_eq!(lock.hash(&f).unwrap().unwrap(), h1);
        assert_eq!(lock.hash(&dir.path().join("missing")).unwrap(), None);
        lock.save(dir.path()).unwrap();
        let again = LockFile::load(dir.path()).unwrap();
        assert_eq!(again.stat, lock.stat);
    }
}
