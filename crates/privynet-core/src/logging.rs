//! Logging to stderr with `tracing`, and progress bars that hide themselves off a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Sets up `tracing` to write to stderr; `RUST_LOG` overrides the default `info` level.
/// Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// A progress bar on stderr for `len` items of `unit`, hidden when stderr is not a terminal so
/// that logs and CI output stay clean.
pub fn progress(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = format!(
        "{{msg}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("the progress template should be valid")
            .progress_chars("=> "),
    );
    bar
}

/// The body of every stage binary's `main`: sets up logging, runs, and on error prints the
/// whole error chain (`{:#}`) to stderr and exits with status 1.
pub fn run_main<E: std::fmt::Display>(run: impl FnOnce() -> Result<(), E>) {
    init();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
