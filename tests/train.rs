//! End-to-end tests of `privynet-train`: real training on real features beats chance, a
//! stopped run continues to the result of an uninterrupted one, and bad input is refused with
//! the rows or split named.

use arrow::array::Float64Array;
use privynet_core::ArtifactKind;
use privynet_e2e::*;

#[test]
fn training_on_real_fire3_features_beats_chance() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    let sizes = "dataset.splits={train: 2000, val: 300, attacker: 100, test: 500}";
    ok(&run(
        "privynet",
        &[
            "run",
            ms,
            "--set",
            sizes,
            // The smoke manifest's final training takes 400 images, fewer than this train split.
            "--set",
            "final.train_images=all",
            "--set",
            "sweep.cuts=[fire3]",
            "--set",
            "sweep.channels=[all]",
            "--until",
            "extract",
        ],
    ));
    let topo = dir.path().join("out/fire3-d128");
    let out = dir.path().join("train");
    ok(&run(
        "privynet-train",
        &[
            "--manifest",
            ms,
            "--set",
            sizes,
            // The smoke manifest's final training takes 400 images, fewer than this train split.
            "--set",
            "final.train_images=all",
            "--set",
            "train.epochs=3",
            "--set",
            "train.width=32",
            "--features",
            topo.join("features.parquet").to_str().unwrap(),
            "--topology",
            topo.join("topology.arrow").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    let summary = read_all(&out.join("train_summary.arrow"), ArtifactKind::TrainSummary);
    // Chance is 0.10 on CIFAR-10's ten balanced classes.
    for split in ["val", "test"] {
        let acc = col::<Float64Array>(&summary[0], &format!("final_{split}_accuracy")).value(0);
        assert!(
            acc > 0.25,
            "{split} accuracy {acc} does not beat chance clearly"
        );
    }
    assert_eq!(
        col::<arrow::array::Int64Array>(&summary[0], "val_samples").value(0),
        300
    );
    let metrics = read_all(&out.join("train_metrics.arrow"), ArtifactKind::TrainMetrics);
    assert_eq!(metrics[0].num_rows(), 3);
    // The summary reports the last epoch, on both splits.
    for split in ["val", "test"] {
        assert_eq!(
            col::<Float64Array>(&metrics[0], &format!("{split}_accuracy")).value(2),
            col::<Float64Array>(&summary[0], &format!("final_{split}_accuracy")).value(0)
        );
    }
    assert!(out.join("cloud_model.bpk").is_file());
}

fn rows(n: usize, split: &str, start: i64) -> Vec<(i64, i32, &str, Vec<f32>)> {
    (0..n)
        .map(|i| {
            (
                start + i as i64,
                (i % 3) as i32,
                split,
                // Values vary along each row, so a horizontal flip changes what the network sees.
                (0..8).map(|j| i as f32 * 0.1 + j as f32 * 0.01).collect(),
            )
        })
        .collect()
}

/// `f.parquet` in `dir`: `train`, `val` and `test` rows of 2x2x2 features.
fn small_features(dir: &std::path::Path, train: usize, test: usize) -> std::path::PathBuf {
    let f = dir.join("f.parquet");
    let mut r = rows(train, "train", 0);
    r.extend(rows(test, "val", 500));
    r.extend(rows(test, "test", 1000));
    write_features(&f, [2, 2, 2], &r);
    f
}

#[test]
fn a_stopped_run_continues_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let f = small_features(dir.path(), 64, 16);
    let m = smoke_manifest(dir.path(), "");
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "--manifest",
            m.to_str().unwrap(),
            "--set",
            "train.epochs=4",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.flip=true",
            "--features",
            f.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        run("privynet-train", &a)
    };
    // Every column but the wall time, with its bits: equal losses mean equal weights, optimizer
    // state and shuffling.
    let metrics = |out: &std::path::Path| {
        let b = &read_all(&out.join("train_metrics.arrow"), ArtifactKind::TrainMetrics)[0];
        [
            "lr",
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "test_loss",
            "test_accuracy",
        ]
        .map(|c| {
            col::<Float64Array>(b, c)
                .values()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        })
        .to_vec()
    };
    let whole = dir.path().join("whole");
    ok(&train(&whole, &[]));
    assert!(
        !whole.join("resume").exists(),
        "a finished run keeps no state"
    );

    let split = dir.path().join("split");
    ok(&train(&split, &["--stop-after-epoch", "2"]));
    assert!(split.join("resume/state.json").is_file());
    // The unfinished run's model is only under resume/: nothing at the output looks whole.
    assert!(split.join("resume/epoch-0002/model.bpk").is_file());
    assert!(!split.join("cloud_model.bpk").exists());
    assert!(!split.join("train_summary.arrow").exists());
    // A state saved under other settings is refused, naming what differs, and kept.
    fails_with(
        &train(&split, &["--resume", "--set", "train.lr=0.01"]),
        &["cannot continue", "train.lr: saved 0.001, now 0.01"],
    );
    assert!(split.join("resume/state.json").is_file());
    // A stop the run is already at trains nothing; then one more epoch, then the rest.
    let o = train(&split, &["--resume", "--stop-after-epoch", "2"]);
    ok(&o);
    assert!(
        stderr(&o).contains("stopped after epoch 2 of 4"),
        "{}",
        stderr(&o)
    );
    ok(&train(&split, &["--resume", "--stop-after-epoch", "3"]));
    assert!(!split.join("train_summary.arrow").exists());
    let o = train(&split, &["--resume"]);
    ok(&o);
    assert!(stderr(&o).contains("continuing after epoch 3 of 4"));
    assert!(!split.join("resume").exists());
    assert!(split.join("cloud_model.bpk").is_file());
    assert_eq!(metrics(&split), metrics(&whole));
    assert_eq!(metrics(&whole)[0].len(), 4);
}

#[test]
fn bad_features_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.parquet");
    let out = dir.path().join("out");
    let train = |f: &std::path::Path, extra: &[&str]| {
        let mut a = vec![
            "--features",
            f.to_str().unwrap(),
            "--epochs",
            "1",
            "--output",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        run("privynet-train", &a)
    };
    // NaN and infinite values: the rows are named.
    let mut r = rows(6, "train", 0);
    r.extend(rows(3, "test", 100));
    r[2].3[1] = f32::NAN;
    r[4].3[0] = f32::INFINITY;
    write_features(&f, [2, 2, 2], &r);
    fails_with(
        &train(&f, &[]),
        &["2 rows hold NaN or infinite", "ids 2, 4"],
    );
    // A label outside the class count.
    let mut r = rows(6, "train", 0);
    r.extend(rows(3, "test", 100));
    r[5].1 = 12;
    write_features(&f, [2, 2, 2], &r);
    fails_with(&train(&f, &[]), &["id 5", "label 12", "outside 0..10"]);
    // No validation split: refused, naming the manifest key that carves one.
    let mut r = rows(6, "train", 0);
    r.extend(rows(3, "test", 100));
    write_features(&f, [2, 2, 2], &r);
    fails_with(
        &train(&f, &[]),
        &[
            "no `val` rows",
            "dataset.splits.val",
            "test split only reports",
        ],
    );
    // An empty test split.
    let mut r = rows(6, "train", 0);
    r.extend(rows(3, "val", 100));
    write_features(&f, [2, 2, 2], &r);
    fails_with(&train(&f, &[]), &["`test` split is empty"]);
    assert!(!out.join("train_summary.arrow").exists());
}

#[test]
fn a_loss_that_becomes_nan_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = small_features(dir.path(), 64, 8);
    let m = smoke_manifest(dir.path(), "");
    let out = dir.path().join("out");
    let o = run(
        "privynet-train",
        &[
            "--manifest",
            m.to_str().unwrap(),
            "--set",
            "train.optimizer=sgd",
            "--set",
            "train.lr=1e38",
            "--set",
            "train.schedule=constant",
            "--set",
            "train.epochs=5",
            "--set",
            "train.batch_size=8",
            "--features",
            f.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    fails_with(&o, &["the training loss became", "last good model"]);
    assert!(!out.join("train_summary.arrow").exists());
}

#[test]
fn the_cloud_stage_refuses_local_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    ok(&run(
        "privynet-ingest",
        &["--manifest", m.to_str().unwrap()],
    ));
    let images = dir.path().join("out/images.parquet");
    let o = run(
        "privynet-train",
        &[
            "--features",
            images.to_str().unwrap(),
            "--output",
            dir.path().join("t").to_str().unwrap(),
        ],
    );
    fails_with(&o, &["`images` artifact of the LOCAL zone"]);
}
