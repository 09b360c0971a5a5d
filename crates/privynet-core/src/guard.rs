//! Untrusted bytes through third-party decoders: arrow's IPC reader and parquet's reader panic
//! on some malformed files (an out-of-range buffer slice; a negative column chunk range: found
//! by `tests/fuzz.rs`) instead of returning an error.
//! [`decode`] turns such a panic into an error that names the file, and keeps the panic's own
//! message off stderr, so a user who passes a damaged file reads one clear error, not a crash.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use crate::{CoreError, Result};

thread_local! {
    /// Set while this thread runs a guarded decoder: its panics are reported as errors.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once per process, a panic hook that stays quiet for guarded decoders and passes
/// every other panic (a real bug) to the hook that was there before.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with its panics caught and kept off stderr; a panic becomes its message.
pub fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_hook();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "the decoder panicked".into())
    })
}

/// Runs `f`, which decodes the file at `path`; a panic inside it becomes
/// [`CoreError::Malformed`] naming the file and the decoder's complaint.
pub fn decode<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch(f).unwrap_or_else(|message| {
        Err(CoreError::Malformed {
            path: path.to_path_buf(),
            message,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_file() {
        let e = decode::<()>(Path::new("x.arrow"), || panic!("slice offset out of range"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.arrow") && e.contains("slice offset out of range"),
            "{e}"
        );
        // Ordinary results pass through, and the guard is lifted afterwards.
        assert_eq!(decode(Path::new("y"), || Ok(3)).unwrap(), 3);
        assert!(!GUARDED.with(Cell::get));
    }
}
