//! Defences end to end on the smoke slice of real data: fire3-d8 under noise {0, 1, 4} x bits
//! {32, 8}, the cloud zone in its own folder, and a limit on bytes sent that only 8-bit codes
//! meet. The attacks' PSNR does not rise as noise grows, the Fisher bound falls, 8-bit features
//! are at most 30% of the float ones, the secret appears in no cloud-zone file and no log or
//! lock line, and the quantised choice is deployed with its encoding: `privynet predict`, given
//! the secret, reproduces the card's test accuracy.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

/// One characterized topology's figures.
#[derive(Debug)]
struct Row {
    noise: f64,
    bits: i64,
    psnr: f64,
    psnr_hi: f64,
    bytes: f64,
    bound: Option<f64>,
}

fn characterization(out: &Path) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for b in read_all(
        &out.join("characterization.parquet"),
        ArtifactKind::Characterization,
    ) {
        let f = |name| col::<Float64Array>(&b, name);
        let (bound, bytes) = (f("psnr_bound"), f("bytes_per_image"));
        for r in 0..b.num_rows() {
            rows.insert(
                col::<StringArray>(&b, "topology").value(r).to_string(),
                Row {
                    noise: f("noise").value(r),
                    bits: col::<Int64Array>(&b, "bits").value(r),
                    psnr: f("psnr_worst").value(r),
                    psnr_hi: f("psnr_worst_hi").value(r),
                    bytes: bytes.value(r),
                    bound: (!bound.is_null(r)).then(|| bound.value(r)),
                },
            );
        }
    }
    rows
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn defences_are_searched_measured_and_deployed_without_leaking_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = dir.path().join("cloud");
    let m = smoke_manifest(
        dir.path(),
        &format!("storage: {{cloud: {}}}\n", cloud.display()),
    );
    let m = m.to_str().unwrap();
    let out = dir.path().join("out");
    let sets = [
        "sweep.cuts=[fire3]",
        "sweep.channels=[8]",
        "sweep.noise=[0,1,4]",
        "sweep.bits=[32,8]",
        "optimize.limits.max_bytes_per_image=400",
    ];
    let mut args = vec!["run", m];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let o = run("privynet", &args);
    ok(&o);

    let rows = characterization(&out);
    assert_eq!(rows.len(), 6, "{rows:?}");
    let levels = ["fire3-d8", "fire3-d8-n1", "fire3-d8-n4"];
    for (i, l) in levels.iter().enumerate() {
        let r = &rows[*l];
        assert_eq!((r.noise, r.bits), ([0.0, 1.0, 4.0][i], 32), "{l}");
        let q = &rows[&format!("{l}-q8")];
        assert_eq!(q.bits, 8, "{l}-q8");
        // Integer codes: at most 30% of the float features' bytes once noise makes the floats
        // incompressible; without noise the ReLU's zeros already shrink the floats to about a
        // byte per value (513 bytes for fire3-d8's 512), and 8-bit codes take 32% of that.
        let most = if r.noise > 0.0 { 0.3 } else { 0.35 };
        assert!(q.bytes <= most * r.bytes, "{l}: {} vs {}", q.bytes, r.bytes);
    }
    // More noise: the attacks do no better (within the last level's interval), and the Fisher
    // bound, null without noise, falls.
    for pair in levels.windows(2) {
        let (a, b) = (&rows[pair[0]], &rows[pair[1]]);
        assert!(b.psnr <= a.psnr_hi, "{pair:?}: {} then {}", a.psnr, b.psnr);
    }
    assert_eq!(rows["fire3-d8"].bound, None);
    let (b1, b4) = (rows["fire3-d8-n1"].bound, rows["fire3-d8-n4"].bound);
    assert!(b1.unwrap() > b4.unwrap(), "{b1:?} {b4:?}");

    secret_stays_local(&out, &cloud, &o);
    the_quantised_choice_is_deployed(&out, &cloud, dir.path());
}

/// The secret's bytes (raw or hex) are in no cloud-zone file, no other file but itself, and no
/// log line; the cloud zone holds no secret file.
fn secret_stays_local(out: &Path, cloud: &Path, o: &std::process::Output) {
    let secret = std::fs::read(out.join("secret.key")).unwrap();
    assert_eq!(secret.len(), 32);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let needles = [secret.as_slice(), hex.as_bytes()];
    let mut all = files(out);
    all.extend(files(cloud));
    for f in all.iter().filter(|f| !f.ends_with("secret.key")) {
        let bytes = std::fs::read(f).unwrap();
        for n in needles {
            assert!(!contains(&bytes, n), "{} holds the secret", f.display());
        }
    }
    for n in needles {
        assert!(
            !contains(&o.stdout, n) && !contains(&o.stderr, n),
            "a log holds the secret"
        );
    }
    assert!(
        files(cloud).iter().all(|f| !f.ends_with("secret.key")),
        "the secret is in the cloud zone"
    );
}

/// Only 8-bit codes meet the bytes limit: the choice is quantised, the card carries its
/// encoding, and predict with the secret reproduces the card's test accuracy.
fn the_quantised_choice_is_deployed(out: &Path, cloud: &Path, tmp: &Path) {
    let b = read_all(&out.join("optimize/decision.arrow"), ArtifactKind::Decision);
    let chosen = col::<StringArray>(&b[0], "topology").value(0).to_string();
    assert!(chosen.ends_with("-q8"), "{chosen}");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("deploy/card.json")).unwrap())
            .unwrap();
    assert_eq!(card["topology"], chosen.as_str());
    assert_eq!(card["local"]["defence"]["defence"]["bits"], 8, "{card}");
    let base = chosen.split("-n").next().unwrap().trim_end_matches("-q8");
    assert_eq!(
        std::fs::read(out.join("deploy/local.onnx")).unwrap(),
        std::fs::read(out.join(base).join("local.onnx")).unwrap(),
        "deploy/local.onnx is not the base topology's"
    );
    assert!(
        cloud
            .join("final")
            .join(&chosen)
            .join("features.parquet")
            .exists(),
        "the final training's defended features are not in the cloud zone"
    );
    let report = std::fs::read_to_string(out.join("optimize/report.md")).unwrap();
    assert!(report.contains("Defences"), "{report}");

    let predictions = tmp.join("predictions.parquet");
    let o = run(
        "privynet",
        &[
            "predict",
            "--deploy",
            out.join("deploy").to_str().unwrap(),
            "--images",
            out.join("images.parquet").to_str().unwrap(),
            "--split",
            "test",
            "--secret",
            out.join("secret.key").to_str().unwrap(),
            "-o",
            predictions.to_str().unwrap(),
        ],
    );
    ok(&o);
    let line = stdout(&o);
    let counts = line.split("accuracy ").nth(1).expect(&line);
    let counts = counts.split('(').nth(1).unwrap().split(')').next().unwrap();
    let (correct, images) = counts.split_once(" of ").unwrap();
    let (correct, images): (f64, f64) = (correct.parse().unwrap(), images.parse().unwrap());
    let reported = card["accuracy"]["test"].as_f64().unwrap();
    assert_eq!(
        correct,
        (reported * images).round(),
        "predict's {correct}/{images} is not the card's {reported}"
    );
}
