//! The pipeline ends with the choice deployed: `deploy/` holds local.onnx (the chosen
//! topology's, byte for byte), cloud.onnx (its trained cloud network, exported) and the card;
//! `privynet predict` runs the pair on the test split and gets the card's test accuracy
//! exactly; a changed decision redeploys and an unchanged one skips; bad deploy folders are
//! named.

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
        stdout(&o).contains("deploying the choice"),
        "{}",
        stdout(&o)
    );
    for f in ["local.onnx", "cloud.onnx", "card.json", "card.md"] {
        assert!(deploy.join(f).is_file(), "deploy/{f} missing");
    }
    let chosen = decided(&out);
    let c = card(&deploy);
    assert_eq!(c["topology"], chosen.as_str());
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

    bad_deploy_folders_are_named(&out, &deploy, dir.path());
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
