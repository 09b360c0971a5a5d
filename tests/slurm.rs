//! The Slurm executor on a real single-node Slurm cluster (scripts/slurm-up.sh, which CI runs):
//! the smoke pipeline as batch jobs ends with the values of a local run and reruns as nothing;
//! a job that fails blocks only its dependants, with its log and the sbatch line to resubmit;
//! Ctrl-C cancels every submitted job and leaves a valid lock file. Skipped, saying so, only
//! where Slurm is not installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use privynet_e2e::compare::{TIME_FIELDS, artifacts, values_except};
use privynet_e2e::*;

fn status_lines(manifest: &Path) -> String {
    let o = run(
        "privynet",
        &["status", manifest.to_str().unwrap(), "--executor", "slurm"],
    );
    ok(&o);
    stdout(&o)
}

fn assert_lock_file_parses(out: &Path) {
    let text = std::fs::read_to_string(out.join("privynet.lock.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).expect("the lock file should be valid JSON");
}

#[test]
fn the_dag_runs_as_slurm_jobs_with_the_outputs_of_a_local_run() {
    if !slurm_cluster() {
        return;
    }
    let local = tempfile::tempdir().unwrap();
    let m = smoke_manifest(local.path(), "");
    ok(&run("privynet", &["run", m.to_str().unwrap()]));

    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "executor: {kind: slurm}\n");
    let o = run("privynet", &["run", m.to_str().unwrap()]);
    ok(&o);
    assert!(stderr(&o).contains("as Slurm job"), "{}", stderr(&o));
    assert!(stdout(&o).contains("0 failed, 0 blocked"), "{}", stdout(&o));
    // Every node that ran was a Slurm job: the event log holds its job id.
    let events = std::fs::read_to_string(dir.path().join("out/events.jsonl")).unwrap();
    let kinds = |kind: &str| event_nodes(&dir.path().join("out"), kind);
    let (ran, submitted) = (kinds("ran"), kinds("submitted"));
    assert_eq!(ran.len(), 24, "{events}");
    for node in &ran {
        assert!(submitted.contains(node), "{node} ran without a Slurm job");
    }
    assert!(events.contains("\"slurm job "), "{events}");

    let (a, b) = (local.path().join("out"), dir.path().join("out"));
    let files = artifacts(&a);
    assert_eq!(files, artifacts(&b));
    assert!(files.len() >= 30, "{files:?}");
    for f in &files {
        let (va, _) = values_except(&a.join(f), &TIME_FIELDS);
        let (vb, _) = values_except(&b.join(f), &TIME_FIELDS);
        assert!(
            va == vb,
            "{} differs between the local and the Slurm run",
            f.display()
        );
    }

    // A rerun submits nothing: the runner's content hashes say everything is up to date.
    let o = run("privynet", &["run", m.to_str().unwrap()]);
    ok(&o);
    assert!(stdout(&o).contains(" 0 ran,"), "{}", stdout(&o));
    assert!(!stderr(&o).contains("Slurm job"), "{}", stderr(&o));
    assert!(status_lines(&m).contains("0 Slurm jobs of this run in the queue"));
}

#[test]
fn a_failed_job_blocks_only_its_dependants_and_says_how_to_resubmit() {
    if !slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "executor: {kind: slurm}\n");
    // Extraction needs ONNX Runtime; the jobs inherit the runner's environment, so every
    // extract job fails for real, and everything after it must be blocked.
    let o = Command::new(bin("privynet"))
        .args(["run", m.to_str().unwrap()])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    for want in [
        "ran      ingest",
        "FAILED   extract/",
        "resubmit: sbatch",
        "--parsable",
        "blocked  train/",
        "blocked  attack/",
        "blocked  characterize",
    ] {
        assert!(text.contains(want), "`{want}` in:\n{text}");
    }
    assert!(text.contains("| "), "the log's tail is shown:\n{text}");
    assert!(!text.contains("FAILED   train/"), "{text}");
    assert_lock_file_parses(&dir.path().join("out"));
    assert!(status_lines(&m).contains("0 Slurm jobs of this run in the queue"));
}

#[test]
fn ctrl_c_cancels_the_submitted_jobs_and_leaves_a_valid_lock_file() {
    if !slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "executor: {kind: slurm}\n");
    let err_path = dir.path().join("stderr.txt");
    let mut child = Command::new(bin("privynet"))
        .args(["run", m.to_str().unwrap()])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // Wait until the whole DAG is queued (the optimizer is submitted last).
    let t = Instant::now();
    while !std::fs::read_to_string(&err_path)
        .unwrap_or_default()
        .contains("submitted optimize")
    {
        assert!(t.elapsed() < Duration::from_secs(60), "nothing was queued");
        std::thread::sleep(Duration::from_millis(100));
    }
    let queued = status_lines(&m);
    assert!(!queued.starts_with("0 Slurm jobs"), "{queued}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(err.contains("interrupted: cancelled Slurm jobs"), "{err}");
    assert!(status_lines(&m).contains("0 Slurm jobs of this run in the queue"));
    assert_lock_file_parses(&dir.path().join("out"));
}

#[test]
fn a_job_that_vanishes_is_reported_failed_with_slurms_reason() {
    if !slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "executor: {kind: slurm}\n");
    let out_path = dir.path().join("stdout.txt");
    let err_path = dir.path().join("stderr.txt");
    let mut child = Command::new(bin("privynet"))
        .args(["run", m.to_str().unwrap()])
        .current_dir(root())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // The job of one attack, as the queue lists it, cancelled behind the runner's back (what
    // preemption, a node failure or an administrator does).
    let t = Instant::now();
    let job = loop {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the attack was never queued"
        );
        let line = status_lines(&m)
            .lines()
            .find(|l| l.trim_start().starts_with("attack/conv1-d8 "))
            .map(str::to_string);
        if let Some(line) = line {
            break line.split_whitespace().nth(2).unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Command::new("scancel").arg(&job).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(text.contains("FAILED   attack/conv1-d8"), "{text}");
    assert!(
        text.contains(&format!("Slurm job {job} ended CANCELLED")),
        "{text}"
    );
    assert!(text.contains("blocked  characterize"), "{text}");
    assert!(text.contains("ran      train/conv1-d8"), "{text}");
}
