//! Running the DAG: decide per node whether it is up to date (and say why not), run stale
//! nodes as separate stage-binary processes, up to `jobs` at once, record each success in the
//! lock file at once (atomically), stop the dependants of a failed node and keep its siblings'
//! results, and append every event to `events.jsonl`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::RunError;
use crate::dag::Dag;
use crate::lock::{LockFile, NodeRecord};

/// Whether a node must run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    UpToDate,
    Run(String),
}

/// How a node ended in this run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ran { seconds: f64, reason: String },
    Skipped,
    Failed { message: String },
    Blocked { by: String },
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Nodes to consider; `None` means all.
    pub selected: Option<HashSet<usize>>,
    /// Nodes to run even when up to date.
    pub force: HashSet<usize>,
    pub jobs: usize,
    /// Worker threads each stage process gets (`RAYON_NUM_THREADS`, which burn's CPU backend
    /// reads); `None` leaves the runner's own environment to the stages.
    pub threads: Option<usize>,
    /// Folder holding the stage binaries.
    pub bin_dir: PathBuf,
}

/// Path of a stage binary; an error names it if it is missing.
pub fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf, RunError> {
    let p = bin_dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(RunError::MissingBinary {
            name: name.to_string(),
            path: p.display().to_string(),
        })
    }
}

/// Decides whether node `i` is up to date against the lock file.
pub fn decide(dag: &Dag, lock: &mut LockFile, i: usize, bin: &Path) -> Result<Decision, RunError> {
    let n = &dag.nodes[i];
    let Some(rec) = lock.nodes.get(&n.id).cloned() else {
        return Ok(Decision::Run("never ran".into()));
    };
    let bin_hash = lock.hash(bin)?.unwrap_or_default();
    if rec.binary != bin_hash {
        return Ok(Decision::Run(format!(
            "binary {} changed",
            n.stage.binary()
        )));
    }
    for (k, v) in &n.params {
        if rec.params.get(k) != Some(v) {
            return Ok(Decision::Run(format!("parameter `{k}` changed")));
        }
    }
    if let Some(k) = rec.params.keys().find(|k| !n.params.contains_key(*k)) {
        return Ok(Decision::Run(format!("parameter `{k}` removed")));
    }
    for inp in &n.inputs {
        let key = inp.path.display().to_string();
        match lock.hash(&inp.path)? {
            None => return Ok(Decision::Run(format!("input {key} missing"))),
            Some(h) if rec.inputs.get(&key) != Some(&h) => {
                return Ok(Decision::Run(format!("input {key} changed")));
            }
            Some(_) => {}
        }
    }
    for out in &n.outputs {
        let key = out.display().to_string();
        match lock.hash(out)? {
            None => return Ok(Decision::Run(format!("output {key} missing"))),
            Some(h) if rec.outputs.get(&key) != Some(&h) => {
                return Ok(Decision::Run(format!(
                    "output {key} changed since it was written"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Decision::UpToDate)
}

fn log_name(id: &str) -> String {
    id.replace('/', "__")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn event(out_dir: &Path, node: &str, kind: &str, detail: &str, seconds: Option<f64>) {
    let line = serde_json::json!({
        "ts": now(), "node": node, "event": kind, "detail": detail, "seconds": seconds,
    });
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out_dir.join("events.jsonl"))
    {
        let _ = writeln!(f, "{line}");
    }
}

/// The shell-ready command line of node `i`, for the user to rerun by hand.
pub fn command_line(dag: &Dag, i: usize, bin_dir: &Path) -> String {
    let n = &dag.nodes[i];
    let mut parts = vec![bin_dir.join(n.stage.binary()).display().to_string()];
    parts.extend(n.args.iter().map(|a| {
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
        {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    }));
    parts.join(" ")
}

/// Runs the DAG; returns the outcome of every considered node.
pub fn run(dag: &Dag, opts: &RunOptions) -> Result<BTreeMap<usize, Outcome>, RunError> {
    let order = dag.order()?;
    let mut considered: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| opts.selected.as_ref().is_none_or(|s| s.contains(i)))
        .collect();
    // Of the ready nodes, start first those `Stage::start_rank` puts first. The loop below
    // starts a node only once its dependencies are done, so any order of this list is safe.
    considered.sort_by_key(|&i| dag.nodes[i].stage.start_rank());
    // Check every binary before anything runs.
    for &i in &considered {
        binary(&opts.bin_dir, dag.nodes[i].stage.binary())?;
    }
    std::fs::create_dir_all(dag.out_dir.join("logs")).map_err(|e| RunError::Io {
        path: dag.out_dir.display().to_string(),
        source: e,
    })?;
    let mut lock = LockFile::load(&dag.out_dir)?;
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut running: HashSet<usize> = HashSet::new();
    let (tx, rx) = mpsc::channel::<(usize, Result<f64, String>, String)>();
    let total = considered.len();
    let start = Instant::now();
    loop {
        // Start every ready node while there is room.
        for &i in &considered {
            if outcomes.contains_key(&i) || running.contains(&i) {
                continue;
            }
            let deps = &dag.nodes[i].deps;
            let pending_dep = deps
                .iter()
                .any(|d| considered.contains(d) && !outcomes.contains_key(d));
            if pending_dep {
                continue;
            }
            if let Some(bad) = deps.iter().find(|d| {
                matches!(
                    outcomes.get(d),
                    Some(Outcome::Failed { .. } | Outcome::Blocked { .. })
                )
            }) {
                let by = dag.nodes[*bad].id.clone();
                println!("  blocked  {:<28} ({by} did not finish)", dag.nodes[i].id);
                event(&dag.out_dir, &dag.nodes[i].id, "blocked", &by, None);
                outcomes.insert(i, Outcome::Blocked { by });
                continue;
            }
            if running.len() >= opts.jobs.max(1) {
                continue;
            }
            let bin = binary(&opts.bin_dir, dag.nodes[i].stage.binary())?;
            let decision = if opts.force.contains(&i) {
                Decision::Run("forced".into())
            } else {
                decide(dag, &mut lock, i, &bin)?
            };
            match decision {
                Decision::UpToDate => {
                    println!("  skipped  {:<28} (up to date)", dag.nodes[i].id);
                    event(
                        &dag.out_dir,
                        &dag.nodes[i].id,
                        "skipped",
                        "up to date",
                        None,
                    );
                    outcomes.insert(i, Outcome::Skipped);
                }
                Decision::Run(reason) => {
                    eprintln!("  running  {:<28} ({reason})", dag.nodes[i].id);
                    tracing::debug!("{}", command_line(dag, i, &opts.bin_dir));
                    event(&dag.out_dir, &dag.nodes[i].id, "start", &reason, None);
                    running.insert(i);
                    let tx = tx.clone();
                    let args = dag.nodes[i].args.clone();
                    let threads = opts.threads;
                    let log = dag
                        .out_dir
                        .join("logs")
                        .join(format!("{}.log", log_name(&dag.nodes[i].id)));
                    std::thread::spawn(move || {
                        let t = Instant::now();
                        let res = run_process(&bin, &args, &log, threads);
                        let _ = tx.send((i, res.map(|()| t.elapsed().as_secs_f64()), reason));
                    });
                }
            }
        }
        if running.is_empty() {
            break;
        }
        let (i, res, reason) = rx.recv().expect("a running node should report back");
        running.remove(&i);
        let n = &dag.nodes[i];
        match res {
            Ok(seconds) => {
                let mut rec = NodeRecord {
                    params: n.params.clone(),
                    seconds,
                    ..NodeRecord::default()
                };
                let bin = binary(&opts.bin_dir, n.stage.binary())?;
                rec.binary = lock.hash(&bin)?.unwrap_or_default();
                for inp in &n.inputs {
                    if let Some(h) = lock.hash(&inp.path)? {
                        rec.inputs.insert(inp.path.display().to_string(), h);
                    }
                }
                let mut missing = None;
                for out in &n.outputs {
                    match lock.hash(out)? {
                        Some(h) => {
                            rec.outputs.insert(out.display().to_string(), h);
                        }
                        None => missing = Some(out.display().to_string()),
                    }
                }
                if let Some(m) = missing {
                    let message = format!("finished but did not write {m}");
                    println!("  FAILED   {:<28} {message}", n.id);
                    event(&dag.out_dir, &n.id, "failed", &message, Some(seconds));
                    outcomes.insert(i, Outcome::Failed { message });
                } else {
                    lock.nodes.insert(n.id.clone(), rec);
                    lock.save(&dag.out_dir)?;
                    println!("  ran      {:<28} {:>7.1}s  ({reason})", n.id, seconds);
                    event(&dag.out_dir, &n.id, "ran", &reason, Some(seconds));
                    outcomes.insert(i, Outcome::Ran { seconds, reason });
                }
            }
            Err(message) => {
                println!("  FAILED   {:<28} {message}", n.id);
                println!(
                    "           rerun by hand: {}",
                    command_line(dag, i, &opts.bin_dir)
                );
                event(&dag.out_dir, &n.id, "failed", &message, None);
                outcomes.insert(i, Outcome::Failed { message });
            }
        }
        let done = outcomes.len();
        eprintln!(
            "  [{done}/{total} done, {} running, {} pending, {:.0}s]",
            running.len(),
            total - done - running.len(),
            start.elapsed().as_secs_f64()
        );
    }
    // Save the stat cache even when nothing ran, so the next check is fast.
    lock.save(&dag.out_dir)?;
    Ok(outcomes)
}

fn run_process(
    bin: &Path,
    args: &[String],
    log: &Path,
    threads: Option<usize>,
) -> Result<(), String> {
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    if let Some(t) = threads {
        cmd.env("RAYON_NUM_THREADS", t.to_string());
    }
    let status = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .status()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    if status.success() {
        Ok(())
    } else {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "exited with {status}; log {}:\n{}",
            log.display(),
            tail.iter()
                .map(|l| format!("           | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }
}
