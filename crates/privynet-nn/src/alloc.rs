//! The allocator setting the training binaries start with: mimalloc told never to give freed
//! memory back to the OS while the process runs.
//!
//! A training step frees and reallocates the same large activation and gradient buffers every
//! step. mimalloc's default (v3: purge what stayed free for 1 s) returns some of them to the OS,
//! and a later step faults the pages in again and the kernel clears them: without purging the
//! cloud network's steps ran 10-45% faster (`make bench BENCH=steps`, README). The cost is that
//! the process holds its peak memory until it exits, which it needs again next step anyway.
//! `MIMALLOC_PURGE_DELAY` in the environment still wins (mimalloc reads it at start).

#![allow(unsafe_code)]

use std::ffi::{c_int, c_long};

/// The global allocator of the training binaries (`#[global_allocator]` in each `main`).
/// Naming it here also links mimalloc's C library into everything that uses this module.
pub use mimalloc::MiMalloc;

// From mimalloc.h (libmimalloc-sys 0.1.49, the v3 it builds by default): `mi_option_purge_delay`
// is the 16th entry of `mi_option_t`. The `extended` feature that would name it needs a crate that
// is not vendored here, so the two functions are declared directly; the symbols are linked in
// through the `mimalloc` crate.
const PURGE_DELAY: c_int = 15;
/// mimalloc v3's default purge delay (ms, `options.c`): checked before changing it, so that a
/// renumbered enum in a future mimalloc is noticed instead of setting some other option.
const DEFAULT_PURGE_DELAY: c_long = 1000;

unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// The purge delay mimalloc runs with now (ms; -1: never purge).
pub fn purge_delay() -> c_long {
    // SAFETY: reads one option of mimalloc's option table; any index below `_mi_option_last`
    // is valid and 15 is below it in every mimalloc the crate ships.
    unsafe { mi_option_get(PURGE_DELAY) }
}

/// Keeps freed memory in the process (purge delay -1) unless `MIMALLOC_PURGE_DELAY` is set.
/// Call first thing in `main`, before any other thread starts (mimalloc's options are not
/// thread safe to set).
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let now = purge_delay();
    if now != DEFAULT_PURGE_DELAY {
        tracing::warn!(
            "mimalloc option {PURGE_DELAY} is {now}, not the purge delay's default \
             {DEFAULT_PURGE_DELAY}: allocator left as it is (training may run slower)"
        );
        return;
    }
    // SAFETY: sets the option checked above; called before other threads exist.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the hard-coded index: the option read at 15 has the purge delay's default, and
    /// setting it takes effect. (Tests run single-threaded on this option only here.)
    #[test]
    fn index_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(purge_delay(), DEFAULT_PURGE_DELAY);
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
