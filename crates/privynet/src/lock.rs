//! The lock file (`privynet.lock.json` beside the outputs): per node, the content hashes of its
//! inputs and outputs, its parameters and its binary's hash, plus a stat cache (size and
//! modification time per path) so an unchanged file is not hashed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use privynet_store::Store;

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
    /// The object store remote inputs and outputs are stat-ed and read through, made on first
    /// use.
    #[serde(skip)]
    store: OnceLock<Arc<Store>>,
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
        if privynet_store::is_remote(p) {
            return self.hash_remote(p);
        }
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

impl LockFile {
    /// The store remote paths go through.
    pub fn store(&self) -> &Store {
        self.store.get_or_init(|| Arc::new(Store::from_env()))
    }

    /// Whether any remote path was looked at (the run's summary then says what it cost).
    pub fn used_store(&self) -> bool {
        self.store.get().is_some()
    }

    /// An object's hash: the ETag and size are its signature (one HEAD); only when they
    /// changed is it read (from the cache, which the uploading stage seeded, or downloaded)
    /// and hashed.
    fn hash_remote(&mut self, p: &Path) -> Result<Option<String>, RunError> {
        let Some(stat) = self.store().stat(p)? else {
            return Ok(None);
        };
        let sig = format!("{}:{}", stat.size, stat.etag);
        let key = p.display().to_string();
        if let Some(e) = self.stat.get(&key)
            && e.signature == sig
        {
            return Ok(Some(e.hash.clone()));
        }
        let local = self.store().fetch_stat(p, &stat)?;
        let hash = privynet_core::hash::hash_path(&local)?;
        let entry = StatEntry {
            signature: sig,
            hash: hash.clone(),
        };
        self.stat.insert(key, entry);
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
