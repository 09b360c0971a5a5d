//! One runner per run folder: `privynet run` holds an exclusive lock on `<out_dir>/.privynet-run`
//! for as long as it runs, so a second run into the same folder refuses at once instead of
//! overwriting the first one's outputs.
//!
//! The lock is the operating system's (`flock` through `File::try_lock`), not the file's
//! existence: it ends with the process that holds it, however that process ends, so a runner
//! killed with SIGKILL leaves nothing to clear by hand and the next run takes the folder over.
//! The file's text (pid, host, start time) is only there to name the holder in the refusal.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::RunError;

/// The name of the lock file inside a run folder.
pub const FILE: &str = ".privynet-run";

/// A run folder held by this process until the value is dropped (or the process ends).
#[derive(Debug)]
pub struct RunFolder {
    _file: File,
    path: PathBuf,
}

impl RunFolder {
    /// Takes `out_dir` for this run, creating it if need be; refuses, naming the holder, when
    /// another live process holds it.
    pub fn hold(out_dir: &Path) -> Result<Self, RunError> {
        std::fs::create_dir_all(out_dir).map_err(|source| RunError::Io {
            path: out_dir.display().to_string(),
            source,
        })?;
        let path = out_dir.join(FILE);
        let io = |source| RunError::Io {
            path: path.display().to_string(),
            source,
        };
        // Opened without truncating: the holder's text must survive a refused attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(in_use(out_dir, &path)),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", holder_text()).map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// "pid 123 on host-a since 1764662400 (unix seconds)": who holds the folder.
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "an unknown host".into());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "pid {} on {host} since {since} (unix seconds)",
        std::process::id()
    )
}

/// The refusal of a held folder, naming the holder and what to do.
fn in_use(out_dir: &Path, path: &Path) -> RunError {
    let holder = std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "a process that has not written its name yet".into());
    RunError::Dag(format!(
        "run folder {} is in use by another `privynet run` ({holder}); wait for it to end or stop it. \
         The lock is the operating system's and ends with that process, so a runner that was killed \
         needs no clearing: start again once it is gone (on a file system without locks, remove {})",
        out_dir.display(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunFolder::hold(dir.path()).unwrap();
        let e = RunFolder::hold(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use by another `privynet run`"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        drop(first);
        // Another test thread's fork may hold the inherited lock until its child execs
        // (close-on-exec): freed within moments, so a second look is allowed.
        let again = (0..100)
            .find_map(|_| {
                RunFolder::hold(dir.path())
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(10)))
                    .ok()
            })
            .expect("freed on drop");
        assert!(again.path().is_file());
    }

    #[test]
    fn a_lock_file_left_behind_without_a_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "pid 1 on gone since 0 (unix seconds)\n",
        )
        .unwrap();
        let held = RunFolder::hold(dir.path()).unwrap();
        let text = std::fs::read_to_string(held.path()).unwrap();
        assert!(
            text.starts_with(&format!("pid {} ", std::process::id())),
            "{text}"
        );
    }
}
