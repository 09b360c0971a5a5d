//! End-to-end tests of `privynet-attack` on a slice of real CIFAR-10 and the real SqueezeNet.

use arrow::array::{BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

fn summary(dir: &std::path::Path) -> Vec<(String, f64, f64, Option<i64>)> {
    let b = read_all(
        &dir.join("attack_summary.arrow"),
        ArtifactKind::AttackSummary,
    );
    let b = &b[0];
    let family = col::<StringArray>(b, "family");
    let modes = col::<StringArray>(b, "mode");
    let psnr = col::<Float64Array>(b, "mean_psnr");
    let floor = col::<Float64Array>(b, "floor_psnr");
    let matched = col::<Int64Array>(b, "channels_matched");
    // The IRN rows; the optimisation family is checked on its own below.
    (0..b.num_rows())
        .filter(|&i| family.value(i) == "irn")
        .map(|i| {
            let m = arrow::array::Array::is_valid(matched, i).then(|| matched.value(i));
            (modes.value(i).to_string(), psnr.value(i), floor.value(i), m)
        })
        .collect()
}

#[test]
fn attacks_at_conv1_and_fire3_on_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    let sets = [
        "--set",
        "dataset.splits={train: 100, attacker: 400, test: 300}",
        "--set",
        "sweep.channels=[8, all]",
        "--set",
        "attack.max_epochs=3",
        "--set",
        "attack.optimization.iterations=40",
    ];
    let mut args = vec!["run", ms, "--until", "attack"];
    args.extend_from_slice(&sets);
    ok(&run("privynet", &args));
    let out = dir.path().join("out");

    // The shallowest cut with all channels: the attacker is clearly better than the floor.
    let s = summary(&out.join("conv1-d64/attack"));
    let known = s.iter().find(|r| r.0 == "known-selection").unwrap();
    assert!(
        known.1 > known.2 + 3.0,
        "known-selection {:.2} dB vs floor {:.2} dB",
        known.1,
        known.2
    );

    // SSIM too: the known-selection attacker's mean SSIM is within its interval, a valid SSIM,
    // and clearly above the floor's (the pool's mean image shown to every victim).
    let b = &read_all(
        &out.join("conv1-d64/attack/attack_summary.arrow"),
        ArtifactKind::AttackSummary,
    )[0];
    let i = (0..b.num_rows())
        .find(|&i| {
            col::<StringArray>(b, "family").value(i) == "irn"
                && col::<StringArray>(b, "mode").value(i) == "known-selection"
        })
        .unwrap();
    let f = |c: &str| col::<Float64Array>(b, c).value(i);
    let (ssim, lo, hi, floor) = (f("mean_ssim"), f("ssim_lo"), f("ssim_hi"), f("floor_ssim"));
    assert!(lo <= ssim && ssim <= hi, "SSIM {ssim} outside [{lo}, {hi}]");
    assert!((-1.0..=1.0).contains(&ssim), "SSIM {ssim}");
    assert!(
        lo > floor + 0.1,
        "known-selection SSIM [{lo:.3}, {hi:.3}] vs floor {floor:.3}"
    );

    // fire3 with 8 of 128 channels: the matching attacker recovers the secret selection and
    // does as well as the attacker who knows it; the naive guesser does not.
    let s = summary(&out.join("fire3-d8/attack"));
    let get = |m: &str| s.iter().find(|r| r.0 == m).unwrap().clone();
    let (known, unknown, matched) = (
        get("known-selection"),
        get("unknown-selection"),
        get("matched-selection"),
    );
    assert!(
        matched.3.unwrap() >= 7,
        "matched {} of 8 channels",
        matched.3.unwrap()
    );
    assert!(
        (matched.1 - known.1).abs() < 0.5,
        "matched {:.2} dB vs known {:.2} dB",
        matched.1,
        known.1
    );
    if matched.3 == Some(8) {
        // Every channel in place: the same training pairs, so the reused attacker gives the
        // known-selection numbers exactly.
        assert_eq!(
            matched.1, known.1,
            "matched and known PSNR with all 8 channels found"
        );
    }
    assert!(
        unknown.1 < known.1,
        "unknown {:.2} dB vs known {:.2} dB",
        unknown.1,
        known.1
    );

    // Per-image rows for every mode, and the picture.
    let rows: usize = read_all(
        &out.join("fire3-d8/attack/privacy.parquet"),
        ArtifactKind::Privacy,
    )
    .iter()
    .map(|b| b.num_rows())
    .sum();
    assert_eq!(rows, 3 * 2 * 300, "3 modes x 2 families x 300 victims");
    // The picture: a label column, 8 columns of 2x images, a title, originals and 3 modes of
    // 2 families.
    let png = image::open(out.join("fire3-d8/attack/reconstructions.png")).unwrap();
    assert_eq!((png.width(), png.height()), (160 + 8 * 68, 20 + 7 * 78));
    for topo in ["conv1-d64", "fire3-d8"] {
        refinement_matches_the_features_better(&out.join(topo).join("attack"));
    }

    // How the attacker was trained, and how sure each number is.
    for topo in ["conv1-d64", "fire3-d8", "fire3-d128"] {
        let dir = out.join(topo).join("attack");
        let b = &read_all(
            &dir.join("attack_summary.arrow"),
            ArtifactKind::AttackSummary,
        )[0];
        let f = |name| col::<Float64Array>(b, name);
        let (mean, lo, hi) = (f("mean_psnr"), f("psnr_lo"), f("psnr_hi"));
        let epochs = col::<Int32Array>(b, "epochs");
        let best = col::<Int32Array>(b, "best_epoch");
        for i in 0..b.num_rows() {
            assert!(
                lo.value(i) < mean.value(i) && mean.value(i) < hi.value(i),
                "{topo}: {} not inside [{}, {}]",
                mean.value(i),
                lo.value(i),
                hi.value(i)
            );
            assert!(hi.value(i) - lo.value(i) < 2.0, "{topo}: interval too wide");
            assert!((1..=epochs.value(i)).contains(&best.value(i)) && epochs.value(i) <= 3);
        }
        let curve = &read_all(
            &dir.join("attack_metrics.arrow"),
            ArtifactKind::AttackMetrics,
        )[0];
        let kept = col::<BooleanArray>(curve, "kept");
        assert_eq!(
            kept.true_count(),
            b.num_rows() / 2,
            "{topo}: one kept epoch per mode's IRN"
        );
        let worst = col::<BooleanArray>(b, "worst");
        assert_eq!(worst.true_count(), 1, "{topo}: one worst attack");
    }
    // The attacker's capacity follows the cut, not the channels kept.
    let width = |topo: &str| {
        let dir = out.join(topo).join("attack");
        let b = &read_all(
            &dir.join("attack_summary.arrow"),
            ArtifactKind::AttackSummary,
        )[0];
        col::<Int64Array>(b, "irn_width").value(0)
    };
    assert_eq!(width("fire3-d8"), width("fire3-d128"));
}

/// The optimisation family, per victim and mode: its kept reconstruction never matches the
/// received features worse than the IRN's it started from, and on average clearly better.
fn refinement_matches_the_features_better(dir: &std::path::Path) {
    use std::collections::HashMap;
    let mut error: HashMap<(String, String, i64), f64> = HashMap::new();
    for b in read_all(&dir.join("privacy.parquet"), ArtifactKind::Privacy) {
        let (id, mode, family) = (
            col::<Int64Array>(&b, "id"),
            col::<StringArray>(&b, "mode"),
            col::<StringArray>(&b, "family"),
        );
        let fe = col::<Float64Array>(&b, "feature_error");
        for i in 0..b.num_rows() {
            let key = (mode.value(i).into(), family.value(i).into(), id.value(i));
            error.insert(key, fe.value(i));
        }
    }
    let (mut irn_sum, mut opt_sum, mut n) = (0.0, 0.0, 0);
    for ((mode, family, id), irn) in &error {
        if family != "irn" {
            continue;
        }
        let opt = error[&(mode.clone(), "optimization".to_string(), *id)];
        assert!(
            opt <= *irn,
            "{}: {mode} victim {id}: optimisation feature error {opt} above the IRN's {irn}",
            dir.display()
        );
        irn_sum += irn;
        opt_sum += opt;
        n += 1;
    }
    assert!(n > 0);
    assert!(
        opt_sum < 0.9 * irn_sum,
        "{}: mean feature error {} (optimisation) vs {} (IRN)",
        dir.display(),
        opt_sum / n as f64,
        irn_sum / n as f64
    );
}
