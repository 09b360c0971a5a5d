//! The pipeline ends with the choice trained for deployment and deployed: the final training
//! (pipelines/smoke.yaml's `final`: twice the train split, early stopping) writes cloud.onnx
//! to the cloud zone; `deploy/` holds local.onnx (the chosen topology's, byte for byte), that
//! cloud.onnx and the card; `privynet predict` runs the pair on the test split and gets the
//! card's test accuracy exactly; a changed decision trains and deploys the new choice, a
//! return to the old one finds its final training done, and an unchanged one skips; bad
//! deploy folders are named. `privynet predict` predicts the same on CIFAR-10's own test
//! batch (read from data/) and with the halves run apart, joined by the features that cross.

use std::path::Path;

use arrow::array::{Array, FixedSizeListArray, Float32Array, Int32Array, StringArray};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

/// The card of a deploy folder, as JSON.
fn card(deploy: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(deploy.join("card.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The decision's topology.
fn decided(out: &Path) -> String {
    let b = read_all(&out.join("optimize/decision.arrow"), ArtifactKind::Decision);
    col::<StringArray>(&b[0], "topology").value(0).to_string()
}

/// Runs `privynet predict` on the test split; returns (correct, images) from its report line
/// and checks the predictions file against it.
fn predict_test_split(out: &Path, deploy: &Path, predictions: &Path) -> (usize, usize) {
    let o = run(
        "privynet",
        &[
            "predict",
            "--deploy",
            deploy.to_str().unwrap(),
            "--images",
            out.join("images.parquet").to_str().unwrap(),
            "--split",
            "test",
            "-o",
            predictions.to_str().unwrap(),
        ],
    );
    ok(&o);
    let line = stdout(&o);
    // "... accuracy 0.4100 (41 of 100) -> ..."
    let accuracy = line.split("accuracy ").nth(1).expect(&line);
    let counts = accuracy
        .split('(')
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let (correct, images) = counts.split_once(" of ").unwrap();
    let (correct, images): (usize, usize) = (correct.parse().unwrap(), images.parse().unwrap());
    let batches = read_all(predictions, ArtifactKind::ImagePredictions);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, images);
    let mut right = 0;
    for b in &batches {
        let (class, label) = (col::<Int32Array>(b, "class"), col::<Int32Array>(b, "label"));
        let probs = col::<FixedSizeListArray>(b, "probabilities");
        for r in 0..b.num_rows() {
            right += usize::from(class.value(r) == label.value(r));
            let p = probs.value(r);
            let p = p.as_any().downcast_ref::<Float32Array>().unwrap();
            let sum: f32 = p.values().iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
            let best = p.values().iter().copied().fold(f32::MIN, f32::max);
            assert_eq!(p.value(class.value(r) as usize), best);
        }
    }
    assert_eq!(right, correct);
    (correct, images)
}

#[test]
fn the_pipeline_deploys_its_choice_and_predict_reproduces_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let m = m.to_str().unwrap();
    let out = dir.path().join("out");
    let deploy = out.join("deploy");
    let o = run("privynet", &["run", m]);
    ok(&o);
    assert!(
        stdout(&o).contains("training the choice for deployment"),
        "{}",
        stdout(&o)
    );
    for f in ["local.onnx", "cloud.onnx", "card.json", "card.md"] {
        assert!(deploy.join(f).is_file(), "deploy/{f} missing");
    }
    let chosen = decided(&out);
    let c = card(&deploy);
    assert_eq!(c["topology"], chosen.as_str());
    final_training_is_deployed(&out, &chosen, &c);
    assert_eq!(
        std::fs::read(deploy.join("local.onnx")).unwrap(),
        std::fs::read(out.join(&chosen).join("local.onnx")).unwrap(),
        "deploy/local.onnx is not the chosen topology's"
    );
    let md = std::fs::read_to_string(deploy.join("card.md")).unwrap();
    assert!(md.contains(&chosen) && md.contains("PSNR"), "{md}");

    let predictions = dir.path().join("predictions.parquet");
    let (correct, images) = predict_test_split(&out, &deploy, &predictions);
    assert_eq!(
        images as i64,
        c["accuracy"]["test_images"].as_i64().unwrap()
    );
    let reported = c["accuracy"]["test"].as_f64().unwrap();
    assert_eq!(
        correct,
        (reported * images as f64).round() as usize,
        "predict's accuracy {correct}/{images} is not the card's {reported}"
    );

    split_halves_equal_one_process(&out, &deploy, dir.path(), &predictions);
    cifar_test_batch_predicts_as_images_parquet(&deploy, dir.path(), &predictions);

    // Nothing changed: nothing runs, the deployment included.
    let o = run("privynet", &["run", m]);
    ok(&o);
    assert!(stdout(&o).contains(": 0 ran"), "{}", stdout(&o));

    // A limit the choice breaks: the decision changes and the new choice is deployed.
    let macs = c["macs"].as_i64().unwrap();
    let limit = format!("optimize.limits.max_macs={}", macs - 1);
    let o = run("privynet", &["run", m, "--set", &limit]);
    ok(&o);
    let now = decided(&out);
    assert_ne!(now, chosen);
    assert_eq!(card(&deploy)["topology"], now.as_str(), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains(&format!("final-train/{now}")), "{text}");
    // Back to the first limits: the first choice's final training is still there (per
    // topology), so only the deployment runs again.
    let o = run("privynet", &["run", m]);
    ok(&o);
    let text = stdout(&o);
    assert_eq!(card(&deploy)["topology"], chosen.as_str(), "{text}");
    let ran: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("ran"))
        .collect();
    assert!(
        !ran.is_empty() && ran.iter().all(|l| !l.contains("final-")),
        "{text}"
    );

    bad_deploy_folders_are_named(&out, &deploy, dir.path());
}

/// The card describes the final training (pipelines/smoke.yaml: 400 images, patience 1), next
/// to the characterization's accuracy of the same topology, and deploy/cloud.onnx is the one
/// the final training wrote to the cloud zone.
fn final_training_is_deployed(out: &Path, chosen: &str, c: &serde_json::Value) {
    let trained = &c["trained_on"];
    assert_eq!(trained["final_training"], true, "{c}");
    assert_eq!(trained["train_images"], 400, "{c}");
    assert_eq!(trained["patience"], 1, "{c}");
    let epochs = trained["epochs"].as_i64().unwrap();
    assert!((1..=3).contains(&epochs), "{c}");
    let characterized = c["accuracy"]["characterized_test"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&characterized), "{c}");
    let final_dir = out.join("final").join(chosen);
    assert_eq!(
        std::fs::read(out.join("deploy/cloud.onnx")).unwrap(),
        std::fs::read(final_dir.join("train/cloud.onnx")).unwrap(),
        "deploy/cloud.onnx is not the final training's"
    );
    // The final features: the characterization's val and test images, twice the train split.
    let b = read_all(&final_dir.join("features.parquet"), ArtifactKind::Features);
    let mut per_split = std::collections::BTreeMap::new();
    for batch in &b {
        let split = col::<StringArray>(batch, "split");
        for r in 0..batch.num_rows() {
            *per_split.entry(split.value(r).to_string()).or_insert(0) += 1;
        }
    }
    let expected = [("test", 100), ("train", 400), ("val", 100)];
    assert_eq!(
        per_split,
        expected.map(|(k, v)| (k.to_string(), v)).into(),
        "splits"
    );
    let md = std::fs::read_to_string(out.join("deploy/card.md")).unwrap();
    assert!(md.contains("at the characterization's budget"), "{md}");
}

/// Each prediction by id: (split, label, class, probabilities).
type Rows = std::collections::BTreeMap<i64, (String, i32, i32, Vec<f32>)>;

fn by_id(path: &Path) -> Rows {
    let mut rows = Rows::new();
    for b in read_all(path, ArtifactKind::ImagePredictions) {
        let ids = col::<arrow::array::Int64Array>(&b, "id");
        let split = col::<StringArray>(&b, "split");
        let (label, class) = (
            col::<Int32Array>(&b, "label"),
            col::<Int32Array>(&b, "class"),
        );
        let probs = col::<FixedSizeListArray>(&b, "probabilities");
        for r in 0..b.num_rows() {
            let p = probs.value(r);
            let p = p.as_any().downcast_ref::<Float32Array>().unwrap();
            let row = (split.value(r).to_string(), label.value(r), class.value(r));
            rows.insert(ids.value(r), (row.0, row.1, row.2, p.values().to_vec()));
        }
    }
    rows
}

/// The local half alone writes the features that cross (a features artifact of the card's
/// shape); the cloud half alone, from a folder without local.onnx, predicts on them exactly
/// what the one-process run predicted.
fn split_halves_equal_one_process(out: &Path, deploy: &Path, tmp: &Path, one: &Path) {
    let sent = tmp.join("sent.parquet");
    let o = run(
        "privynet",
        &[
            "predict",
            "--deploy",
            deploy.to_str().unwrap(),
            "--images",
            out.join("images.parquet").to_str().unwrap(),
            "--split",
            "test",
            "--local-only",
            "--features-out",
            sent.to_str().unwrap(),
        ],
    );
    ok(&o);
    let features = read_all(&sent, ArtifactKind::Features);
    let rows: usize = features.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, by_id(one).len());
    let schema = privynet_core::io::read_schema(&sent).unwrap();
    let shape = card(deploy)["local"]["features_shape"].to_string();
    let shape = shape.trim_matches(|c| c == '[' || c == ']');
    assert_eq!(schema.metadata()["privynet.feature_shape"], shape);
    let cloud_side = tmp.join("cloud-side");
    std::fs::create_dir_all(&cloud_side).unwrap();
    for f in ["card.json", "cloud.onnx"] {
        std::fs::copy(deploy.join(f), cloud_side.join(f)).unwrap();
    }
    let two = tmp.join("two.parquet");
    let o = run(
        "privynet-predict",
        &[
            "--deploy",
            cloud_side.to_str().unwrap(),
            "--features",
            sent.to_str().unwrap(),
            "-o",
            two.to_str().unwrap(),
        ],
    );
    ok(&o);
    assert_eq!(
        by_id(&two),
        by_id(one),
        "the halves apart predict otherwise"
    );
}

/// CIFAR-10's test batch read from the data folder: every image labelled, ids as ingest gives
/// them, and the test split's images predicted as from images.parquet.
fn cifar_test_batch_predicts_as_images_parquet(deploy: &Path, tmp: &Path, one: &Path) {
    let out = tmp.join("cifar-test.parquet");
    let o = run(
        "privynet-predict",
        &[
            "--deploy",
            deploy.to_str().unwrap(),
            "--images",
            data("cifar-10").to_str().unwrap(),
            "--split",
            "test",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    ok(&o);
    let text = stdout(&o);
    assert!(
        text.contains("10000 images") && text.contains("10000 with labels"),
        "{text}"
    );
    let all = by_id(&out);
    assert_eq!(all.len(), 10_000);
    for (id, row) in by_id(one) {
        assert_eq!(all.get(&id), Some(&row), "image {id}");
    }
}

/// A deploy folder without its card, or with a cloud.onnx that is not a cloud network, is
/// refused by name.
fn bad_deploy_folders_are_named(out: &Path, deploy: &Path, tmp: &Path) {
    let images = out.join("images.parquet");
    let predict = |folder: &Path| {
        let o = run(
            "privynet-predict",
            &[
                "--deploy",
                folder.to_str().unwrap(),
                "--images",
                images.to_str().unwrap(),
                "-o",
                tmp.join("p.parquet").to_str().unwrap(),
            ],
        );
        assert!(
            !tmp.join("p.parquet").exists(),
            "a failed predict left its output"
        );
        o
    };
    let bad = tmp.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for f in ["local.onnx", "cloud.onnx"] {
        std::fs::copy(deploy.join(f), bad.join(f)).unwrap();
    }
    fails_with(&predict(&bad), &["card.json"]);
    std::fs::copy(deploy.join("card.json"), bad.join("card.json")).unwrap();
    // The local network where the cloud one should be: no `logits` output.
    std::fs::copy(deploy.join("local.onnx"), bad.join("cloud.onnx")).unwrap();
    fails_with(&predict(&bad), &["cloud.onnx", "logits"]);
}
