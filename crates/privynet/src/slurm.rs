//! The Slurm executor: each node a batch job running exactly the command line the local
//! executor would run, queued at once behind `--dependency=afterok:` on the jobs of the nodes
//! it depends on. Success is a marker file the job writes when its command exits 0 (not
//! accounting, which many sites do not expose); a job that leaves the queue without one failed,
//! with Slurm's reason. Needs the run folder on a filesystem the nodes share.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use privynet_core::Zone;
use privynet_core::manifest::SlurmSpec;

use crate::RunError;
use crate::dag::Stage;
use crate::exec::{Executor, Finished, Job, LocalExecutor, shell_word};

/// How often the queue is read while waiting.
const POLL: Duration = Duration::from_millis(250);

/// A job in the queue.
#[derive(Debug)]
struct Submitted {
    node: usize,
    job_id: String,
    marker: PathBuf,
    log: PathBuf,
    sbatch_line: String,
}

/// Submits nodes with `sbatch` and follows them with `squeue`.
#[derive(Debug)]
pub struct SlurmExecutor {
    spec: SlurmSpec,
    /// Where job scripts and success markers go (`<run>/slurm`).
    dir: PathBuf,
    /// Every job's name starts with this, so `privynet status` finds the run's jobs.
    prefix: String,
    /// `RAYON_NUM_THREADS` from the job's CPUs, unless the user set it (then it is inherited).
    set_threads: bool,
    submitted: HashMap<usize, Submitted>,
    /// Ends already known (a submission that failed, jobs cancelled on interrupt).
    ended: VecDeque<Finished>,
    interrupted: Arc<AtomicBool>,
}

/// The job-name prefix of a run folder's jobs.
pub fn job_prefix(out_dir: &Path) -> String {
    let full = std::path::absolute(out_dir).unwrap_or_else(|_| out_dir.to_path_buf());
    let tag = blake3::hash(full.display().to_string().as_bytes()).to_hex();
    format!("privynet-{}:", &tag[..8])
}

impl SlurmExecutor {
    /// An executor for the run in `out_dir`; `interrupted` is set by the runner's Ctrl-C
    /// handler, and the executor then cancels every job it submitted.
    pub fn new(
        spec: SlurmSpec,
        out_dir: &Path,
        set_threads: bool,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, RunError> {
        let stages: Vec<&str> = Stage::all().map(|s| s.name()).collect();
        spec.validate(&stages).map_err(RunError::Dag)?;
        let dir = out_dir.join("slurm");
        std::fs::create_dir_all(&dir).map_err(|e| RunError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        for tool in ["sbatch", "squeue", "scancel"] {
            if which(tool).is_none() {
                return Err(RunError::Dag(format!(
                    "the slurm executor needs `{tool}` on PATH (Slurm's client commands)"
                )));
            }
        }
        Ok(SlurmExecutor {
            spec,
            dir,
            prefix: job_prefix(out_dir),
            set_threads,
            submitted: HashMap::new(),
            ended: VecDeque::new(),
            interrupted,
        })
    }

    /// Writes the job script and submits it; the sbatch command line for the user.
    fn submit(&mut self, job: &Job) -> Result<Submitted, String> {
        let name = job.id.replace('/', "__");
        let script = self.dir.join(format!("{name}.sh"));
        let marker = self.dir.join(format!("{name}.ok"));
        let _ = std::fs::remove_file(&marker);
        let cpus = self.spec.resources(job.stage.name()).cpus.unwrap_or(1);
        std::fs::write(
            &script,
            job_script(job, &marker, self.set_threads.then_some(cpus)),
        )
        .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let mut args = self.sbatch_args(job, cpus);
        let after: Vec<&str> = job
            .after
            .iter()
            .filter_map(|d| self.submitted.get(d).map(|s| s.job_id.as_str()))
            .collect();
        if !after.is_empty() {
            args.push(format!("--dependency=afterok:{}", after.join(":")));
            // A job whose dependency failed is cancelled, not left pending forever.
            args.push("--kill-on-invalid-dep=yes".into());
        }
        args.push(script.display().to_string());
        let line = std::iter::once("sbatch".to_string())
            .chain(args.iter().map(|a| shell_word(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let out = Command::new("sbatch")
            .args(&args)
            .output()
            .map_err(|e| format!("cannot run sbatch: {e}\n           sbatch line: {line}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints `jobid` or `jobid;cluster`.
        let job_id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if !out.status.success() || job_id.is_empty() {
            return Err(format!(
                "sbatch refused the job: {}\n           sbatch line: {line}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        eprintln!("           submitted {} as Slurm job {job_id}", job.id);
        // The run folder is the slurm folder's parent: the job id goes into its event log.
        if let Some(out_dir) = self.dir.parent() {
            crate::exec::event(
                out_dir,
                &job.id,
                "submitted",
                &format!("slurm job {job_id}"),
                None,
            );
        }
        Ok(Submitted {
            node: job.node,
            job_id,
            marker,
            log: job.log.clone(),
            sbatch_line: line,
        })
    }

    /// The sbatch flags of a job, from the manifest's `executor.slurm` section.
    fn sbatch_args(&self, job: &Job, cpus: u32) -> Vec<String> {
        let r = self.spec.resources(job.stage.name());
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}{}", self.prefix, job.id),
            format!("--output={}", job.log.display()),
            format!("--chdir={}", cwd.display()),
            format!("--cpus-per-task={cpus}"),
        ];
        let optional = [
            ("partition", &self.spec.partition),
            ("account", &self.spec.account),
            ("time", &r.time),
            ("mem", &r.mem),
            ("gres", &r.gres),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                args.push(format!("--{flag}={v}"));
            }
        }
        args.extend(self.spec.extra.iter().cloned());
        args.extend(r.extra);
        args
    }

    /// Reads the queue once and moves every job that has left it to `ended`.
    fn poll(&mut self) {
        let Some(queued) = queued_ids() else {
            return; // squeue failed this time (controller busy): try again next poll
        };
        let gone: Vec<usize> = self
            .submitted
            .iter()
            .filter(|(_, s)| !queued.contains_key(&s.job_id))
            .map(|(&node, _)| node)
            .collect();
        for node in gone {
            let s = self.submitted.remove(&node).expect("listed above");
            self.ended.push_back(settle(&s));
        }
    }

    /// Cancels every job still queued or running; each ends as failed.
    fn cancel_all(&mut self) {
        let ids: Vec<String> = self.submitted.values().map(|s| s.job_id.clone()).collect();
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).status();
            eprintln!("  interrupted: cancelled Slurm jobs {}", ids.join(", "));
        }
        for (node, s) in self.submitted.drain() {
            self.ended.push_back(Finished {
                node,
                result: Err(format!(
                    "interrupted: Slurm job {} cancelled; log {}",
                    s.job_id,
                    s.log.display()
                )),
                never_started: false,
            });
        }
    }
}

impl Executor for SlurmExecutor {
    fn start(&mut self, job: Job) {
        if self.interrupted.load(Ordering::SeqCst) {
            self.ended.push_back(Finished {
                node: job.node,
                result: Err("interrupted before it was submitted".into()),
                never_started: false,
            });
            return;
        }
        match self.submit(&job) {
            Ok(s) => {
                self.submitted.insert(job.node, s);
            }
            Err(message) => self.ended.push_back(Finished {
                node: job.node,
                result: Err(message),
                never_started: false,
            }),
        }
    }

    fn wait(&mut self) -> Finished {
        loop {
            if let Some(f) = self.try_wait() {
                return f;
            }
            std::thread::sleep(POLL);
        }
    }

    fn queues(&self, _stage: Stage) -> bool {
        true
    }
}

impl SlurmExecutor {
    /// A job that has ended, after reading the queue once if none is known to have; `None`
    /// if every submitted job is still queued or running.
    pub fn try_wait(&mut self) -> Option<Finished> {
        if self.ended.is_empty() {
            if self.interrupted.load(Ordering::SeqCst) {
                self.cancel_all();
            } else {
                self.poll();
            }
        }
        self.ended.pop_front()
    }

    /// Whether any submitted job has not been reported as ended.
    pub fn has_jobs(&self) -> bool {
        !self.submitted.is_empty() || !self.ended.is_empty()
    }
}

/// With the cloud zone in object storage: the cloud stages (training) run as Slurm jobs that
/// read and write the bucket, and the local stages (which read the images and the selections)
/// run on this machine, as the local executor runs them.
pub struct ZoneSplit {
    here: LocalExecutor,
    batch: SlurmExecutor,
}

impl ZoneSplit {
    pub fn new(here: LocalExecutor, batch: SlurmExecutor) -> Self {
        ZoneSplit { here, batch }
    }
}

impl Executor for ZoneSplit {
    fn start(&mut self, job: Job) {
        if self.queues(job.stage) {
            self.batch.start(job);
        } else {
            self.here.start(job);
        }
    }

    fn wait(&mut self) -> Finished {
        loop {
            if self.batch.has_jobs()
                && let Some(f) = self.batch.try_wait()
            {
                return f;
            }
            if let Some(f) = self.here.try_wait(POLL) {
                return f;
            }
        }
    }

    fn queues(&self, stage: Stage) -> bool {
        stage.zone() == Zone::Cloud
    }
}

/// The batch script of a job: the node's command line, then the success marker (the job's
/// start and end in seconds since the epoch) written atomically only if it exited 0.
fn job_script(job: &Job, marker: &Path, threads: Option<u32>) -> String {
    let command = std::iter::once(job.binary.display().to_string())
        .chain(job.args.iter().cloned())
        .map(|w| shell_word(&w))
        .collect::<Vec<_>>()
        .join(" ");
    let threads = threads
        .map(|t| format!("export RAYON_NUM_THREADS={t}\n"))
        .unwrap_or_default();
    let marker = shell_word(&marker.display().to_string());
    format!(
        "#!/bin/sh\n# privynet node {id}\n{threads}start=$(date +%s.%N)\n{command}\nstatus=$?\n\
         if [ $status -eq 0 ]; then\n  echo \"$start $(date +%s.%N)\" > {marker}.tmp && mv {marker}.tmp {marker}\nfi\n\
         exit $status\n",
        id = job.id
    )
}

/// How a job that left the queue ended: its marker's run time, or Slurm's state and reason
/// with its log's last lines and the sbatch line to resubmit it.
fn settle(s: &Submitted) -> Finished {
    if let Ok(text) = std::fs::read_to_string(&s.marker) {
        let times: Vec<f64> = text
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        if let [start, end] = times[..] {
            return Finished {
                node: s.node,
                result: Ok((end - start).max(0.0)),
                never_started: false,
            };
        }
    }
    let state = job_state(&s.job_id)
        .unwrap_or_else(|| "left the queue (no longer known to Slurm)".to_string());
    let tail = log_tail(&s.log, 5);
    Finished {
        never_started: state.contains("DependencyNeverSatisfied"),
        node: s.node,
        result: Err(format!(
            "Slurm job {} {state}; log {}:\n{tail}\n           resubmit: {}",
            s.job_id,
            s.log.display(),
            s.sbatch_line
        )),
    }
}

/// `ended FAILED (NonZeroExitCode)` and the like, from `scontrol`, while Slurm still knows
/// the job.
fn job_state(job_id: &str) -> Option<String> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job_id])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .map(str::to_string)
    };
    let state = field("JobState=")?;
    let reason = field("Reason=").unwrap_or_default();
    let exit = field("ExitCode=").unwrap_or_default();
    Some(format!("ended {state} (reason {reason}, exit code {exit})"))
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter()
        .rev()
        .map(|l| format!("           | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The user's queued and running jobs: id to `(name, state, reason)`; `None` when squeue
/// cannot be read.
fn queued_ids() -> Option<HashMap<String, (String, String, String)>> {
    let out = Command::new("squeue")
        .args(["--me", "-h", "-o", "%i|%j|%T|%r"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.splitn(4, '|');
                let id = f.next()?.trim().to_string();
                let name = f.next()?.to_string();
                let state = f.next()?.to_string();
                let reason = f.next().unwrap_or("").to_string();
                Some((id, (name, state, reason)))
            })
            .collect(),
    )
}

/// The run's jobs still in the queue, as `privynet status --executor slurm` prints them.
pub fn queue_lines(out_dir: &Path) -> Result<Vec<String>, RunError> {
    let prefix = job_prefix(out_dir);
    let queued = queued_ids()
        .ok_or_else(|| RunError::Dag("cannot read the Slurm queue (squeue failed)".into()))?;
    let mut lines: Vec<String> = queued
        .into_iter()
        .filter_map(|(id, (name, state, reason))| {
            let node = name.strip_prefix(&prefix)?.to_string();
            Some(format!("{node:<28} job {id:<8} {state:<10} {reason}"))
        })
        .collect();
    lines.sort();
    Ok(lines)
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            node: 3,
            id: "train/fire3-d8".into(),
            stage: Stage::Train,
            binary: PathBuf::from("/opt/bin/privynet-train"),
            args: vec!["--features".into(), "runs/a b/features.parquet".into()],
            log: PathBuf::from("runs/x/logs/train__fire3-d8.log"),
            after: vec![1],
            alone: false,
        }
    }

    #[test]
    fn the_script_runs_the_command_line_and_marks_success_only() {
        let s = job_script(&job(), Path::new("runs/x/slurm/t.ok"), Some(4));
        assert!(s.contains("export RAYON_NUM_THREADS=4\n"), "{s}");
        assert!(
            s.contains("/opt/bin/privynet-train --features 'runs/a b/features.parquet'\n"),
            "{s}"
        );
        assert!(s.contains("if [ $status -eq 0 ]"), "{s}");
        assert!(s.ends_with("exit $status\n"), "{s}");
        assert!(!job_script(&job(), Path::new("m"), None).contains("RAYON"));
    }

    #[test]
    fn sbatch_flags_come_from_the_manifest() {
        let train = privynet_core::manifest::SlurmResources {
            cpus: Some(8),
            gres: Some("gpu:1".into()),
            extra: vec!["--qos=long".into()],
            ..Default::default()
        };
        let spec = SlurmSpec {
            partition: Some("gpu".into()),
            account: Some("lab".into()),
            default: privynet_core::manifest::SlurmResources {
                mem: Some("4G".into()),
                ..Default::default()
            },
            stages: [("train".to_string(), train)].into(),
            ..Default::default()
        };
        let exec = SlurmExecutor {
            spec,
            dir: PathBuf::from("d"),
            prefix: "privynet-0123abcd:".into(),
            set_threads: true,
            submitted: HashMap::new(),
            ended: VecDeque::new(),
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        let args = exec.sbatch_args(&job(), 8);
        for want in [
            "--job-name=privynet-0123abcd:train/fire3-d8",
            "--cpus-per-task=8",
            "--partition=gpu",
            "--account=lab",
            "--mem=4G",
            "--gres=gpu:1",
            "--qos=long",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
    }

    #[test]
    fn a_run_folder_has_one_job_prefix() {
        let a = job_prefix(Path::new("/tmp/run-a"));
        assert_eq!(a, job_prefix(Path::new("/tmp/run-a")));
        assert_ne!(a, job_prefix(Path::new("/tmp/run-b")));
        assert!(a.starts_with("privynet-") && a.ends_with(':'));
    }
}
