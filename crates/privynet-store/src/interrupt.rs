//! A termination signal (SIGTERM from `scancel` or a timeout, SIGINT from Ctrl-C) that arrives
//! during a multipart upload aborts the upload before the process dies, so its parts do not
//! linger in the bucket, unseen but paid for. Outside an upload the signals act as they always
//! do. SIGKILL cannot be caught: its parts stay until the bucket's lifecycle rule removes them.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::signal::{SIGINT, SIGTERM};

/// True while no multipart upload is under way: a termination signal then acts as by default.
static IDLE: AtomicBool = AtomicBool::new(true);
/// The termination signal that arrived during an upload, 0 while none has.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Installs the handlers once per process: the default action when idle (registered first, so
/// it runs first), else a note of the signal for the upload loop to see between parts.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [SIGTERM, SIGINT] {
            let idle = signal_hook::flag::register_conditional_default(sig, &IDLE);
            let note = signal_hook::flag::register_usize(sig, &PENDING, sig as usize);
            if let Err(e) = idle.and(note) {
                // Without the handlers a signal still kills the process as before; only the
                // clean-up of a killed upload's parts is lost.
                tracing::warn!("cannot watch for signal {sig} during uploads: {e}");
            }
        }
    });
}

/// Held for the length of a multipart upload. When it is dropped, after the upload completed or
/// was aborted, a signal that arrived meanwhile takes its default effect: the process dies of it,
/// as it would have without the upload.
#[derive(Debug)]
pub(crate) struct Uploading(());

impl Uploading {
    pub(crate) fn begin() -> Self {
        install();
        IDLE.store(false, Ordering::SeqCst);
        Uploading(())
    }

    /// The termination signal that arrived during the upload, if one did.
    pub(crate) fn requested(&self) -> Option<i32> {
        match PENDING.load(Ordering::SeqCst) {
            0 => None,
            sig => i32::try_from(sig).ok(),
        }
    }
}

impl Drop for Uploading {
    fn drop(&mut self) {
        IDLE.store(true, Ordering::SeqCst);
        if let Some(sig) = self.requested() {
            tracing::warn!("ending on signal {sig}, as asked during the upload");
            if signal_hook::low_level::emulate_default_handler(sig).is_err() {
                signal_hook::low_level::exit(128 + sig);
            }
        }
    }
}
