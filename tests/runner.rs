//! End-to-end tests of `privynet run` on pipelines/smoke.yaml through the real binaries.

use privynet_e2e::*;

fn lines_with<'a>(out: &'a str, word: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.trim_start().starts_with(word))
        .collect()
}

#[test]
fn smoke_pipeline_runs_then_skips_then_reruns_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    let first = run("privynet", &["run", ms]);
    ok(&first);
    let out = stdout(&first);
    assert_eq!(lines_with(&out, "ran").len(), 24, "{out}");
    let o = dir.path().join("out");
    for t in ["conv1-d8", "conv1-d64", "fire3-d8", "fire3-d128"] {
        assert!(o.join(t).join("features.parquet").is_file(), "{t}");
    }
    // The raw-image baseline ran, and the decision says what the split costs against it.
    let d = &read_all(
        &o.join("optimize/decision.arrow"),
        privynet_core::ArtifactKind::Decision,
    )[0];
    let f = |c: &str| col::<arrow::array::Float64Array>(d, c).value(0);
    let baseline = f("baseline_test_accuracy");
    assert!(baseline > 0.0 && baseline <= 1.0, "{baseline}");
    let val = f("baseline_val_accuracy");
    assert!(val > 0.0 && val <= 1.0, "{val}");
    // What the split costs compares like with like: test against test.
    assert_eq!(
        f("accuracy_cost").to_bits(),
        (baseline - f("measured_test_accuracy")).to_bits()
    );
    let report = std::fs::read_to_string(o.join("optimize/report.md")).unwrap();
    assert!(report.contains("trained on the raw images"), "{report}");
    let plot = std::fs::read_to_string(o.join("optimize/plots/tradeoff.svg")).unwrap();
    assert!(plot.contains("raw images, no split"));
    // A topology's train summary passed as the baseline is refused, naming the topology.
    fails_with(
        &run(
            "privynet-optimize",
            &[
                "--manifest",
                ms,
                "--characterization",
                o.join("characterization.parquet").to_str().unwrap(),
                "--baseline",
                o.join("fire3-d8/train/train_summary.arrow")
                    .to_str()
                    .unwrap(),
                "-o",
                dir.path().join("what-if").to_str().unwrap(),
            ],
        ),
        &[
            "train summary of `fire3-d8`",
            "not of the raw-image baseline",
        ],
    );
    // The summary of the finished pipeline: one row per topology.
    let show = stdout(&run("privynet", &["show", o.to_str().unwrap()]));
    for t in ["conv1-d8", "conv1-d64", "fire3-d8", "fire3-d128"] {
        assert!(show.contains(t), "{show}");
    }
    assert!(
        show.contains("psnr_worst")
            && show.contains("val_accuracy")
            && show.contains("test_accuracy"),
        "{show}"
    );
    assert!(o.join("events.jsonl").is_file());

    let second = run("privynet", &["run", ms]);
    ok(&second);
    let out = stdout(&second);
    assert_eq!(lines_with(&out, "skipped").len(), 24, "{out}");
    assert!(lines_with(&out, "ran").is_empty(), "{out}");

    // An output deleted by hand: only its node reruns (it writes the same bytes, so the
    // training that reads it stays up to date).
    std::fs::remove_file(o.join("fire3-d8/features.parquet")).unwrap();
    let st = stdout(&run("privynet", &["status", ms]));
    assert!(
        st.contains("extract/fire3-d8") && st.contains("missing"),
        "{st}"
    );
    let third = stdout(&run("privynet", &["run", ms]));
    let ran = lines_with(&third, "ran");
    assert_eq!(ran.len(), 1, "{third}");
    assert!(
        ran[0].contains("extract/fire3-d8") && ran[0].contains("missing"),
        "{third}"
    );

    // A parameter of one stage: only that stage's nodes and their dependants rerun; ingest and
    // slice stay up to date.
    let fourth = stdout(&run(
        "privynet",
        &["run", ms, "--set", "extract.batch_size=32"],
    ));
    let ran = lines_with(&fourth, "ran");
    assert_eq!(ran.len(), 17, "{fourth}");
    assert!(
        ran.iter()
            .all(|l| !l.contains("ingest") && !l.contains("slice/")),
        "{fourth}"
    );
    assert_eq!(
        ran.iter()
            .filter(|l| l.contains("`extract.batch_size` changed"))
            .count(),
        3,
        "{fourth}"
    );
    // Skipped: ingest, the final training's images, the four slices and the raw-image
    // baseline; the two wide extractions and the final one reran.
    assert_eq!(lines_with(&fourth, "skipped").len(), 7, "{fourth}");

    // One stage alone, forced.
    let fifth = stdout(&run(
        "privynet",
        &[
            "run",
            ms,
            "--stage",
            "slice",
            "--topology",
            "fire3-d8",
            "--force",
        ],
    ));
    assert_eq!(lines_with(&fifth, "ran").len(), 1, "{fifth}");
}

#[test]
fn a_cut_the_model_lacks_is_caught_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let o = run(
        "privynet",
        &[
            "run",
            m.to_str().unwrap(),
            "--set",
            "sweep.cuts=[conv1, fire33]",
        ],
    );
    fails_with(&o, &["`fire33`", "`fire3`"]);
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_missing_stage_binary_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("bin");
    std::fs::create_dir_all(&lonely).unwrap();
    std::fs::copy(bin("privynet"), lonely.join("privynet")).unwrap();
    let m = smoke_manifest(dir.path(), "");
    let o = std::process::Command::new(lonely.join("privynet"))
        .args(["run", m.to_str().unwrap()])
        .current_dir(root())
        .output()
        .unwrap();
    fails_with(&o, &["stage binary `privynet-ingest` not found"]);
}

#[test]
fn show_prints_schema_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    ok(&run(
        "privynet",
        &[
            "run",
            m.to_str().unwrap(),
            "--until",
            "slice",
            "--set",
            "sweep.cuts=[conv1]",
        ],
    ));
    let o = run(
        "privynet",
        &[
            "show",
            dir.path()
                .join("out/conv1-d8/selection.arrow")
                .to_str()
                .unwrap(),
        ],
    );
    ok(&o);
    let s = stdout(&o);
    assert!(s.contains("kind: selection (zone: local)"), "{s}");
    assert!(s.contains("privynet.stage: slice"), "{s}");
    assert!(s.contains("channel"), "{s}");
}

/// Starts `privynet run MANIFEST` in its own process group (so a signal to the group reaches
/// the runner and its stage processes together, as Ctrl-C in a terminal does), and waits until
/// at least one node has finished and an attack (seconds long, where the gathering stages take
/// milliseconds) has started but not finished, before any training: a signal then cuts real
/// work short, instead of racing a stage that ends before it lands and lets the run exit 0.
fn start_and_wait_mid_run(ms: &str, out: &std::path::Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(bin("privynet"))
        .args(["run", ms])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let events = out.join("events.jsonl");
        let (starts, ends) = if events.exists() {
            (event_nodes(out, "start"), event_nodes(out, "ran"))
        } else {
            (vec![], vec![])
        };
        // An attack under way and no training started yet: every training is still to come,
        // so the run cannot end before the signal lands.
        let attacking = starts
            .iter()
            .any(|n| n.starts_with("attack/") && !ends.contains(n));
        let training = starts.iter().any(|n| n.starts_with("train/"));
        if !ends.is_empty() && attacking && !training {
            return child;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no node finished in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_leaves_a_valid_lock_file_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    let out = dir.path().join("out");
    let mut child = start_and_wait_mid_run(ms, &out);
    let status = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let ended = child.wait().unwrap();
    assert!(
        !ended.success(),
        "an interrupted run must not exit 0: {ended}"
    );
    let cut_short: Vec<String> = event_nodes(&out, "start")
        .into_iter()
        .filter(|n| !event_nodes(&out, "ran").contains(n))
        .collect();
    assert!(!cut_short.is_empty(), "no node was cut short");
    // The lock file is whole and records the nodes that finished, and only those.
    let text = std::fs::read_to_string(out.join("privynet.lock.json"))
        .expect("the lock file should exist after a node finished");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the lock file parses");
    let nodes = v["nodes"].as_object().expect("the lock file has nodes");
    assert!(!nodes.is_empty(), "{text}");
    for n in &cut_short {
        assert!(
            !nodes.contains_key(n),
            "{n} was cut short but is locked: {text}"
        );
    }
    // No temporary file is left looking like a final artifact, and the next run finishes,
    // running the nodes that were cut short.
    let again = run("privynet", &["run", ms]);
    ok(&again);
    let text = stdout(&again);
    assert!(text.contains("0 failed, 0 blocked"), "{text}");
    for n in &cut_short {
        assert!(
            event_nodes(&out, "ran").iter().filter(|r| *r == n).count() == 1,
            "{n}"
        );
    }
    let third = stdout(&run("privynet", &["run", ms]));
    assert_eq!(lines_with(&third, "skipped").len(), 24, "{third}");
}

#[test]
fn a_second_runner_on_the_same_folder_is_refused_and_a_killed_ones_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    let out = dir.path().join("out");
    let mut first = start_and_wait_mid_run(ms, &out);
    // Refused at once, naming the holder; nothing of the first run's is touched.
    let lock_before = std::fs::read(out.join("privynet.lock.json")).ok();
    let second = run("privynet", &["run", ms]);
    fails_with(
        &second,
        &[
            "in use by another `privynet run`",
            &format!("pid {}", first.id()),
            &out.display().to_string(),
        ],
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run should still be running"
    );
    let lock_now = std::fs::read(out.join("privynet.lock.json")).ok();
    assert!(
        lock_before.is_none() || lock_now.is_some(),
        "the refused run must not remove the first one's lock file"
    );
    // A runner killed outright (no chance to clean up) leaves its lock file; the next run
    // takes the folder over without any clearing by hand and finishes.
    std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", first.id())])
        .status()
        .unwrap();
    first.wait().unwrap();
    assert!(out.join(".privynet-run").is_file());
    let again = run("privynet", &["run", ms]);
    ok(&again);
    assert!(
        stdout(&again).contains("0 failed, 0 blocked"),
        "{}",
        stdout(&again)
    );
}
