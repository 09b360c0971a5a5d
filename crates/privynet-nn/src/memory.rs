//! The training binaries' allocator setting: memory they free stays in the process.

use libmimalloc_sys::mi_option_t;

/// mimalloc's `mi_option_purge_delay`: its index in the `mi_option_e` enum of the mimalloc v3
/// sources `libmimalloc-sys` builds (the crate names no constant for it; the test below checks
/// the index against the option's default there, 1,000 ms).
const PURGE_DELAY: mi_option_t = 15;

/// Tells mimalloc, the global allocator of the training binaries and the bench, never to
/// return freed memory to the OS.
///
/// By default it returns ("purges") memory that has stayed free for a second. Training still
/// faulted pages back in all the time: 2,200 page faults a second in steady state in the IRN's
/// bench step, the kernel zeroing each page first (`clear_page_erms`: 5% of the step's time,
/// in bursts of up to 44% of a second); with this setting, none after the first steps (10
/// faults in 11 s). The process keeps its peak memory until it exits, which it reaches in the
/// first steps anyway.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option of mimalloc's, which it reads atomically; no pointers.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index names the purge delay: its default, 1,000 ms, then the setting.
    #[test]
    fn the_purge_delay_is_set_to_never() {
        #[allow(unsafe_code)]
        // SAFETY: reads one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(get(), 1000, "mi_option_purge_delay's default");
        keep_freed_memory();
        assert_eq!(get(), -1);
    }
}
