//! Running the DAG: decide per node whether it is up to date (and say why not), run stale
//! nodes as separate stage-binary processes, up to `jobs` at once, record each success in the
//! lock file at once (atomically), stop the dependants of a failed node and keep its siblings'
//! results, and append every event to `events.jsonl`. The scheduling, lock file and reports
//! are [`run_with`]'s; starting a node's process and waiting for it are an [`Executor`]'s
//! ([`LocalExecutor`] runs them on this machine), so another can run them elsewhere.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::RunError;
use crate::dag::{Dag, Stage};
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

/// Appends one line to the run's `events.jsonl`.
///
/// The line goes out in one `write` on an append-mode file: `writeln!` on an unbuffered file
/// issues a write per formatted piece, and a reader following the log (`tail -f`, a test
/// polling mid-run) then sees half a JSON object.
pub(crate) fn event(out_dir: &Path, node: &str, kind: &str, detail: &str, seconds: Option<f64>) {
    let mut line = serde_json::json!({
        "ts": now(), "node": node, "event": kind, "detail": detail, "seconds": seconds,
    })
    .to_string();
    line.push('\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out_dir.join("events.jsonl"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The shell-ready command line of node `i`, for the user to rerun by hand.
pub fn command_line(dag: &Dag, i: usize, bin_dir: &Path) -> String {
    let n = &dag.nodes[i];
    let mut parts = vec![shell_word(
        &bin_dir.join(n.stage.binary()).display().to_string(),
    )];
    parts.extend(n.args.iter().map(|a| shell_word(a)));
    parts.join(" ")
}

/// `word` as one shell word: as it is when it is plain, else single-quoted.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A node the scheduler starts, for an [`Executor`] to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The node's index in the DAG.
    pub node: usize,
    /// The node's id (`train/fire3-d8`) and stage, for names and per-stage resources.
    pub id: String,
    pub stage: Stage,
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// Where the process's stdout and stderr go.
    pub log: PathBuf,
    /// Started nodes this one must wait for (only given to an executor that
    /// [queues](Executor::queues) this stage's jobs).
    pub after: Vec<usize>,
    /// Nothing else runs here or is ready to start, and the stage
    /// [takes idle cores](Stage::takes_idle_cores): a local executor gives it every core.
    pub alone: bool,
}

/// A started node's process ended: after so many seconds of wall time, or with the reason it
/// failed (ending with its log's last lines).
#[derive(Debug, Clone)]
pub struct Finished {
    pub node: usize,
    pub result: Result<f64, String>,
    /// The job never ran because a dependency did not succeed (a batch system cancelled it).
    pub never_started: bool,
}

/// Runs the processes of the nodes the scheduler starts: the part of a run that differs
/// between running stages on this machine ([`LocalExecutor`]) and handing each to a batch
/// system. The scheduler ([`run_with`]) decides what to start and when, records results in the
/// lock file and reports; an executor only starts processes and says when they end.
pub trait Executor {
    /// Starts a job; its end is reported by exactly one later [`Executor::wait`].
    fn start(&mut self, job: Job);
    /// Blocks until one started job ends. Called only while some job is running.
    fn wait(&mut self) -> Finished;
    /// Whether a `stage` job may be started before the jobs it depends on have ended (a batch
    /// system holding each until its dependencies succeed), when those are queued too. The
    /// scheduler then starts such nodes as soon as their dependencies are started, with no
    /// limit of its own on how many run.
    fn queues(&self, stage: Stage) -> bool {
        let _ = stage;
        false
    }
}

/// Runs each node as a child process of the runner, waited for on a thread of its own.
pub struct LocalExecutor {
    threads: Option<usize>,
    /// The threads of a node that runs [alone](Job::alone): every slot's.
    alone_threads: Option<usize>,
    sender: mpsc::Sender<Finished>,
    receiver: mpsc::Receiver<Finished>,
}

impl LocalExecutor {
    /// `threads`: the `RAYON_NUM_THREADS` each of `jobs` processes gets (see
    /// [`RunOptions::threads`]); a node alone gets `jobs` times as many.
    pub fn new(threads: Option<usize>, jobs: usize) -> Self {
        let (sender, receiver) = mpsc::channel();
        LocalExecutor {
            threads,
            alone_threads: threads.map(|t| t * jobs.max(1)),
            sender,
            receiver,
        }
    }
}

impl Executor for LocalExecutor {
    fn start(&mut self, job: Job) {
        let sender = self.sender.clone();
        let threads = if job.alone {
            self.alone_threads
        } else {
            self.threads
        };
        std::thread::spawn(move || {
            let started = Instant::now();
            let result = run_process(&job.binary, &job.args, &job.log, threads);
            let result = result.map(|()| started.elapsed().as_secs_f64());
            let _ = sender.send(Finished {
                node: job.node,
                result,
                never_started: false,
            });
        });
    }

    fn wait(&mut self) -> Finished {
        self.receiver
            .recv()
            .expect("a running node should report back")
    }
}

impl LocalExecutor {
    /// A node that ended within `timeout`, if any.
    pub fn try_wait(&mut self, timeout: std::time::Duration) -> Option<Finished> {
        self.receiver.recv_timeout(timeout).ok()
    }
}

/// Runs the DAG, each node as a local process; returns the outcome of every considered node.
pub fn run(dag: &Dag, opts: &RunOptions) -> Result<BTreeMap<usize, Outcome>, RunError> {
    run_with(dag, opts, &mut LocalExecutor::new(opts.threads, opts.jobs))
}

/// Runs the DAG with `executor` running the nodes' processes; returns the outcome of every
/// considered node.
pub fn run_with(
    dag: &Dag,
    opts: &RunOptions,
    executor: &mut dyn Executor,
) -> Result<BTreeMap<usize, Outcome>, RunError> {
    let considered = considered_nodes(dag, opts)?;
    std::fs::create_dir_all(dag.out_dir.join("logs")).map_err(|e| RunError::Io {
        path: dag.out_dir.display().to_string(),
        source: e,
    })?;
    let mut scheduler = Scheduler {
        dag,
        opts,
        total: considered.len(),
        considered,
        lock: LockFile::load(&dag.out_dir)?,
        outcomes: BTreeMap::new(),
        running: HashMap::new(),
        started: Instant::now(),
    };
    loop {
        scheduler.start_ready(executor)?;
        if scheduler.running.is_empty() {
            break;
        }
        scheduler.finish(executor.wait())?;
        scheduler.report_progress();
    }
    // Save the stat cache even when nothing ran, so the next check is fast.
    scheduler.lock.save(&dag.out_dir)?;
    if scheduler.lock.used_store() {
        let c = scheduler.lock.store().counts();
        println!(
            "object store, the runner's own requests: {} HEAD, {} GET ({} bytes)",
            c.heads, c.gets, c.bytes_down
        );
    }
    Ok(scheduler.outcomes)
}

/// The nodes a run considers, in the order it tries to start them; every one's binary checked
/// before anything runs.
fn considered_nodes(dag: &Dag, opts: &RunOptions) -> Result<Vec<usize>, RunError> {
    let mut considered: Vec<usize> = dag
        .order()?
        .into_iter()
        .filter(|i| opts.selected.as_ref().is_none_or(|s| s.contains(i)))
        .collect();
    // Of the ready nodes, start first those `Stage::start_rank` puts first. A node starts only
    // once its dependencies are done, so any order of this list is safe.
    considered.sort_by_key(|&i| dag.nodes[i].stage.start_rank());
    for &i in &considered {
        binary(&opts.bin_dir, dag.nodes[i].stage.binary())?;
    }
    Ok(considered)
}

/// Whether a node can start now.
enum Readiness {
    /// A dependency this run considers has not ended yet.
    Waiting,
    /// A dependency failed or was blocked (its id).
    Blocked(String),
    Ready,
}

/// The state of one run: what has ended and how, what is running (with why it runs), and the
/// lock file, updated as each node succeeds.
struct Scheduler<'a> {
    dag: &'a Dag,
    opts: &'a RunOptions,
    considered: Vec<usize>,
    total: usize,
    lock: LockFile,
    outcomes: BTreeMap<usize, Outcome>,
    running: HashMap<usize, String>,
    started: Instant,
}

impl Scheduler<'_> {
    /// Starts (or settles as skipped or blocked) every node that is ready, while there is room.
    fn start_ready(&mut self, executor: &mut dyn Executor) -> Result<(), RunError> {
        // `considered` is in start-rank order, not dependency order: a queueing executor takes
        // a node once its dependencies are started, so repeat until a pass starts nothing.
        loop {
            let settled = self.outcomes.len() + self.running.len();
            for k in 0..self.considered.len() {
                let i = self.considered[k];
                if self.outcomes.contains_key(&i) || self.running.contains_key(&i) {
                    continue;
                }
                let queued = executor.queues(self.dag.nodes[i].stage);
                match self.readiness(i, &*executor) {
                    Readiness::Waiting => continue,
                    Readiness::Blocked(by) => {
                        self.block(i, by);
                        continue;
                    }
                    Readiness::Ready => {}
                }
                if !queued && self.running_here(&*executor) >= self.opts.jobs.max(1) {
                    continue;
                }
                self.start(i, executor)?;
            }
            if self.outcomes.len() + self.running.len() == settled {
                return Ok(());
            }
        }
    }

    /// Running nodes that count against `jobs`: those not in a batch system's queue.
    fn running_here(&self, executor: &dyn Executor) -> usize {
        let queued = |j: &usize| executor.queues(self.dag.nodes[*j].stage);
        self.running.keys().filter(|j| !queued(j)).count()
    }

    fn readiness(&self, i: usize, executor: &dyn Executor) -> Readiness {
        let deps = &self.dag.nodes[i].deps;
        let queued = |j: usize| executor.queues(self.dag.nodes[j].stage);
        // A queueing executor holds a job until the jobs it depends on succeed, so a started
        // dependency is as good as an ended one when both are in its queue.
        let pending_dep = deps.iter().any(|&d| {
            self.considered.contains(&d)
                && !self.outcomes.contains_key(&d)
                && !(queued(i) && queued(d) && self.running.contains_key(&d))
        });
        if pending_dep {
            return Readiness::Waiting;
        }
        match self.failed_dep(i) {
            Some(by) => Readiness::Blocked(by),
            None => Readiness::Ready,
        }
    }

    /// Whether node `i` would run alone: nothing runs here, and no other node is ready.
    fn alone(&self, i: usize, executor: &dyn Executor) -> bool {
        let idle = |j: &usize| !self.outcomes.contains_key(j) && !self.running.contains_key(j);
        self.running_here(executor) == 0
            && !self
                .considered
                .iter()
                .filter(|&&j| j != i && idle(&j))
                .any(|&j| matches!(self.readiness(j, executor), Readiness::Ready))
    }

    /// The id of a dependency of node `i` still running (or else its first), for a job that
    /// was cancelled because of it.
    fn unfinished_dep(&self, i: usize) -> String {
        let deps = &self.dag.nodes[i].deps;
        let d = deps
            .iter()
            .find(|d| self.running.contains_key(d))
            .or(deps.first());
        d.map_or_else(|| "a dependency".into(), |&d| self.dag.nodes[d].id.clone())
    }

    /// The id of a dependency of node `i` that failed or was blocked, if any.
    fn failed_dep(&self, i: usize) -> Option<String> {
        let deps = &self.dag.nodes[i].deps;
        let failed = deps.iter().find(|d| {
            matches!(
                self.outcomes.get(d),
                Some(Outcome::Failed { .. } | Outcome::Blocked { .. })
            )
        })?;
        Some(self.dag.nodes[*failed].id.clone())
    }

    fn block(&mut self, i: usize, by: String) {
        let id = &self.dag.nodes[i].id;
        println!("  blocked  {id:<28} ({by} did not finish)");
        event(&self.dag.out_dir, id, "blocked", &by, None);
        self.outcomes.insert(i, Outcome::Blocked { by });
    }

    /// Skips a ready node that is up to date, or hands it to the executor.
    fn start(&mut self, i: usize, executor: &mut dyn Executor) -> Result<(), RunError> {
        let node = &self.dag.nodes[i];
        let bin = binary(&self.opts.bin_dir, node.stage.binary())?;
        let after: Vec<usize> = node
            .deps
            .iter()
            .copied()
            .filter(|d| self.running.contains_key(d))
            .collect();
        let decision = if self.opts.force.contains(&i) {
            Decision::Run("forced".into())
        } else if let Some(&d) = after.first() {
            // Queued behind a dependency that is still to run: its inputs will be rewritten.
            Decision::Run(format!("after {}", self.dag.nodes[d].id))
        } else {
            decide(self.dag, &mut self.lock, i, &bin)?
        };
        match decision {
            Decision::UpToDate => {
                println!("  skipped  {:<28} (up to date)", node.id);
                event(&self.dag.out_dir, &node.id, "skipped", "up to date", None);
                self.outcomes.insert(i, Outcome::Skipped);
            }
            Decision::Run(reason) => {
                eprintln!("  running  {:<28} ({reason})", node.id);
                tracing::debug!("{}", command_line(self.dag, i, &self.opts.bin_dir));
                event(&self.dag.out_dir, &node.id, "start", &reason, None);
                let log = self.dag.out_dir.join("logs");
                let alone = node.stage.takes_idle_cores() && self.alone(i, &*executor);
                executor.start(Job {
                    node: i,
                    id: node.id.clone(),
                    stage: node.stage,
                    binary: bin,
                    args: node.args.clone(),
                    log: log.join(format!("{}.log", log_name(&node.id))),
                    after,
                    alone,
                });
                self.running.insert(i, reason);
            }
        }
        Ok(())
    }

    /// Settles a node whose process ended: a success is recorded in the lock file at once.
    fn finish(&mut self, finished: Finished) -> Result<(), RunError> {
        let i = finished.node;
        let reason = self
            .running
            .remove(&i)
            .expect("a finished node should be running");
        let seconds = match finished.result {
            Ok(seconds) => seconds,
            Err(_) if finished.never_started => {
                // A queued job whose dependency failed is cancelled by the batch system, maybe
                // before the scheduler has heard of that dependency's end: blocked, not broken.
                let by = self.failed_dep(i).unwrap_or_else(|| self.unfinished_dep(i));
                self.block(i, by);
                return Ok(());
            }
            Err(message) => {
                self.fail(i, message, None);
                let rerun = command_line(self.dag, i, &self.opts.bin_dir);
                println!("           rerun by hand: {rerun}");
                return Ok(());
            }
        };
        let (record, missing) = self.record(i, seconds)?;
        if let Some(missing) = missing {
            self.fail(
                i,
                format!("finished but did not write {missing}"),
                Some(seconds),
            );
            return Ok(());
        }
        let id = &self.dag.nodes[i].id;
        self.lock.nodes.insert(id.clone(), record);
        self.lock.save(&self.dag.out_dir)?;
        println!("  ran      {id:<28} {seconds:>7.1}s  ({reason})");
        event(&self.dag.out_dir, id, "ran", &reason, Some(seconds));
        self.outcomes.insert(i, Outcome::Ran { seconds, reason });
        Ok(())
    }

    /// What the lock file records of a node that just ran, and the last of its outputs it did
    /// not write, if any.
    fn record(&mut self, i: usize, seconds: f64) -> Result<(NodeRecord, Option<String>), RunError> {
        let node = &self.dag.nodes[i];
        let mut record = NodeRecord {
            params: node.params.clone(),
            seconds,
            ..NodeRecord::default()
        };
        let bin = binary(&self.opts.bin_dir, node.stage.binary())?;
        record.binary = self.lock.hash(&bin)?.unwrap_or_default();
        for inp in &node.inputs {
            if let Some(h) = self.lock.hash(&inp.path)? {
                record.inputs.insert(inp.path.display().to_string(), h);
            }
        }
        let mut missing = None;
        for out in &node.outputs {
            match self.lock.hash(out)? {
                Some(h) => {
                    record.outputs.insert(out.display().to_string(), h);
                }
                None => missing = Some(out.display().to_string()),
            }
        }
        Ok((record, missing))
    }

    fn fail(&mut self, i: usize, message: String, seconds: Option<f64>) {
        let id = &self.dag.nodes[i].id;
        println!("  FAILED   {id:<28} {message}");
        event(&self.dag.out_dir, id, "failed", &message, seconds);
        self.outcomes.insert(i, Outcome::Failed { message });
    }

    fn report_progress(&self) {
        let done = self.outcomes.len();
        eprintln!(
            "  [{done}/{} done, {} running, {} pending, {:.0}s]",
            self.total,
            self.running.len(),
            self.total - done - self.running.len(),
            self.started.elapsed().as_secs_f64()
        );
    }
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::dag::{Input, Node, Stage};

    /// A stage "binary" that runs its one argument as a shell command, so each test node says
    /// what it does in its arguments.
    fn fake_bins(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bins = dir.join("bin");
        std::fs::create_dir_all(&bins).unwrap();
        for stage in Stage::all() {
            let path = bins.join(stage.binary());
            std::fs::write(&path, "#!/bin/sh\nexec sh -c \"$1\"\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        bins
    }

    fn node(id: &str, stage: Stage, inputs: &[&Path], output: &Path, script: &str) -> Node {
        Node {
            id: id.into(),
            stage,
            topology: None,
            inputs: inputs
                .iter()
                .map(|p| Input {
                    path: p.to_path_buf(),
                    kind: None,
                })
                .collect(),
            outputs: vec![output.to_path_buf()],
            params: BTreeMap::new(),
            args: vec![script.into()],
            deps: vec![],
        }
    }

    /// A temporary folder with the fake stage binaries, a run folder `out` in it, and the
    /// paths of five files there (`a.txt` to `e.txt`) for the test nodes to write.
    fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf, [PathBuf; 5]) {
        let dir = tempfile::tempdir().unwrap();
        let bins = fake_bins(dir.path());
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let files = ["a", "b", "c", "d", "e"].map(|n| out.join(format!("{n}.txt")));
        (dir, bins, out, files)
    }

    fn options(bin_dir: &Path) -> RunOptions {
        RunOptions {
            selected: None,
            force: HashSet::new(),
            jobs: 2,
            threads: None,
            bin_dir: bin_dir.to_path_buf(),
        }
    }

    #[test]
    fn runs_skips_fails_and_blocks() {
        let (_dir, bins, out, [a, b, c, d, e]) = workspace();
        let write_a = format!("echo a > {}", a.display());
        let copy_b = format!("cat {} > {}", a.display(), b.display());
        let mut dag = Dag {
            nodes: vec![
                node("ingest", Stage::Ingest, &[], &a, &write_a),
                node("slice/t", Stage::Slice, &[&a], &b, &copy_b),
                node("extract/t", Stage::Extract, &[&a], &c, "echo oops; exit 3"),
                node("train/t", Stage::Train, &[&c], &d, "true"),
                node("attack/t", Stage::Attack, &[&a], &e, "true"),
            ],
            out_dir: out.clone(),
        };
        dag.link().unwrap();
        let first = run(&dag, &options(&bins)).unwrap();
        assert!(matches!(&first[&0], Outcome::Ran { reason, .. } if reason == "never ran"));
        assert!(matches!(&first[&1], Outcome::Ran { .. }));
        assert!(
            matches!(&first[&2], Outcome::Failed { message } if message.contains("exited with") && message.contains("| oops")),
            "{:?}",
            first[&2]
        );
        assert_eq!(
            first[&3],
            Outcome::Blocked {
                by: "extract/t".into()
            }
        );
        assert!(
            matches!(&first[&4], Outcome::Failed { message } if message == &format!("finished but did not write {}", e.display())),
            "{:?}",
            first[&4]
        );
        let lock = LockFile::load(&out).unwrap();
        let recorded: Vec<&str> = lock.nodes.keys().map(String::as_str).collect();
        assert_eq!(recorded, ["ingest", "slice/t"]);
        assert!(out.join("logs/extract__t.log").is_file());
        let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
        assert_eq!(events.lines().count(), 9, "{events}");

        // Nothing changed: the two good nodes are up to date; a forced one reruns.
        let mut opts = options(&bins);
        opts.selected = Some(HashSet::from([0, 1]));
        let second = run(&dag, &opts).unwrap();
        assert_eq!(second.len(), 2);
        assert!(second.values().all(|o| *o == Outcome::Skipped));
        opts.force = HashSet::from([1]);
        let forced = run(&dag, &opts).unwrap();
        assert_eq!(forced[&0], Outcome::Skipped);
        assert!(matches!(&forced[&1], Outcome::Ran { reason, .. } if reason == "forced"));

        // A changed input reruns its reader, and says which input changed.
        std::fs::write(&a, "changed\n").unwrap();
        opts.force.clear();
        opts.selected = Some(HashSet::from([1]));
        let third = run(&dag, &opts).unwrap();
        assert!(
            matches!(&third[&1], Outcome::Ran { reason, .. } if reason == &format!("input {} changed", a.display())),
            "{:?}",
            third[&1]
        );
    }

    #[test]
    fn a_node_alone_takes_every_core_if_its_stage_allows() {
        let (_dir, bins, out, [a, b, c, d, e]) = workspace();
        let threads = |to: &Path| format!("echo $RAYON_NUM_THREADS > {}", to.display());
        let touch_d = format!("touch {}", d.display());
        let mut dag = Dag {
            nodes: vec![
                // Alone, but ingest is not declared thread-invariant.
                node("ingest", Stage::Ingest, &[], &a, &threads(&a)),
                // Two trainings ready at once: each its share.
                node("train/x", Stage::Train, &[&a], &b, &threads(&b)),
                node("train/y", Stage::Train, &[&a], &c, &threads(&c)),
                node("optimize", Stage::Optimize, &[&b, &c], &d, &touch_d),
                // Alone at the end: every core.
                node("final-train/x", Stage::FinalTrain, &[&d], &e, &threads(&e)),
            ],
            out_dir: out.clone(),
        };
        dag.link().unwrap();
        let mut opts = options(&bins);
        opts.threads = Some(3);
        let outcomes = run(&dag, &opts).unwrap();
        assert!(outcomes.values().all(|o| matches!(o, Outcome::Ran { .. })));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
        assert_eq!(
            [read(&a), read(&b), read(&c), read(&e)],
            ["3", "3", "3", "6"]
        );
    }
}
