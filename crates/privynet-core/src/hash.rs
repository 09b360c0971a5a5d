//! Content hashes (blake3) of files and folders, used in provenance and by the runner's lock file.

use std::io::Read;
use std::path::Path;

use crate::{CoreError, Result};

/// Returns the blake3 hex digest of a file, or of every file under a folder (in sorted path order,
/// with the relative paths mixed in so that a rename changes the digest).
pub fn hash_path(path: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, path, &mut files)?;
        files.sort();
        for rel in files {
            hasher.update(rel.as_bytes());
            hasher.update(&[0]);
            hash_file_into(&path.join(&rel), &mut hasher)?;
        }
    } else {
        hash_file_into(path, &mut hasher)?;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn hash_file_into(path: &Path, hasher: &mut blake3::Hasher) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| CoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        let p = entry.path();
        if p.is_dir() {
            collect_files(root, &p, out)?;
        } else {
            let rel = p
                .strip_prefix(root)
                .expect("a walked path should lie under its root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Returns the blake3 hex digest of a byte string.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_hash_changes_with_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"1").unwrap();
        let h1 = hash_path(dir.path()).unwrap();
        std::fs::write(dir.path().join("a"), b"2").unwrap();
        let h2 = hash_path(dir.path()).unwrap();
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
        let h3 = hash_path(dir.path()).unwrap();
        assert_ne!(h1, h2);
        assert_ne!(h2, h3);
        assert_eq!(h3, hash_path(dir.path()).unwrap());
    }
}
