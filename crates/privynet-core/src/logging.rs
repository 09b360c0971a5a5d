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
/// whole error chain ([`describe`]) to stderr and exits with status 1.
pub fn run_main<E>(run: impl FnOnce() -> Result<(), E>)
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    init();
    if let Err(e) = run() {
        let e: Box<dyn std::error::Error + Send + Sync + 'static> = e.into();
        eprintln!("error: {}", describe(e.as_ref()));
        std::process::exit(1);
    }
}

/// An error and its causes on one line, `outer: inner: ...`. A cause whose text already ends
/// the line is left out: the library errors quote their source in their own message, and
/// printing it twice ("No such file: No such file") reads as two faults.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let msg = c.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Quoting {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn a_quoted_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Quoting {
            path: "x.parquet".into(),
            source: io,
        })
        .context("slicing");
        let boxed: Box<dyn std::error::Error + Send + Sync> = e.into();
        assert_eq!(
            describe(boxed.as_ref()),
            "slicing: cannot read x.parquet: No such file"
        );
    }
}
