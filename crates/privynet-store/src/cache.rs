//! The local cache of remote objects: each object's bytes at `objects/<scheme>/<bucket>/<key>`
//! beside a hidden sidecar holding the ETag they were read (or written) at, and the staging
//! folders where stages write what [`crate::Output::publish`] uploads.

use std::path::{Path, PathBuf};

use crate::{Remote, Result, Store, io_err};

impl Store {
    /// Where the cache keeps `r`'s bytes.
    pub(crate) fn cached_path(&self, r: &Remote) -> PathBuf {
        self.cache.join("objects").join(r.cache_rel())
    }

    /// Where a stage writes the outputs bound for the prefix `r`. It stays until they are
    /// uploaded, so a stage that resumes (training) finds its state again after a kill.
    pub(crate) fn staging_dir(&self, r: &Remote) -> PathBuf {
        self.cache.join("staging").join(r.cache_rel())
    }

    /// The cached copy of `r` if it holds the object at `etag` and `size`.
    pub(crate) fn cache_hit(&self, r: &Remote, etag: &str, size: u64) -> Option<PathBuf> {
        let path = self.cached_path(r);
        let recorded = std::fs::read_to_string(sidecar(&path)).ok()?;
        let len = std::fs::metadata(&path).ok()?.len();
        (!etag.is_empty() && recorded == etag && len == size).then_some(path)
    }

    /// Records that the cached copy of `r` is the object at `etag`.
    pub(crate) fn remember(&self, r: &Remote, etag: &str) -> Result<()> {
        let path = sidecar(&self.cached_path(r));
        privynet_core::io::write_bytes_atomic(&path, etag.as_bytes())?;
        Ok(())
    }

    /// Drops what the cache says of `r` before its bytes are replaced, so a kill between the
    /// two never leaves new bytes under an old ETag (or old bytes under a new one).
    pub(crate) fn forget(&self, r: &Remote) -> Result<()> {
        let path = sidecar(&self.cached_path(r));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path, e)),
            _ => Ok(()),
        }
    }
}

/// The ETag sidecar of a cached file.
fn sidecar(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "object".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.etag"))
}
