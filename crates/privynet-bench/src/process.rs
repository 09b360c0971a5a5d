//! Running the stage binaries as the benchmarks measure them: located as the end-to-end tests
//! locate them, timed, and their peak memory polled.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A stage binary, located as the end-to-end tests locate it (`PRIVYNET_BIN_DIR` honoured).
pub fn bin(name: &str) -> Result<PathBuf> {
    privynet_e2e::built(name).map_err(anyhow::Error::msg)
}

/// Runs a command, polling its peak RSS (VmHWM) from /proc; returns (seconds, peak MiB).
pub fn timed(cmd: &mut Command) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(line) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak_kb = peak_kb.max(kb);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("{cmd:?} failed: {err}");
    }
    Ok((t.elapsed().as_secs_f64(), peak_kb as f64 / 1024.0))
}
