//! `fisher-random`, the selection the default and paper-scale manifests use, through the real
//! slice binary on the real SqueezeNet 1.1 and real CIFAR-10 images: its Fisher scores equal
//! the ones this test computes on its own from the extracted features, the selection is the
//! one those scores imply (the top half by score, in a seeded order, first), it differs from
//! `random`, it repeats under a seed, and the default manifest's selection is pinned.

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::{
    Array, FixedSizeListArray, Float32Array, Float64Array, Int32Array, StringArray,
};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

/// The channels and Fisher scores (`None` for `random`) of a selection.arrow, in output order.
fn selection(dir: &Path) -> (Vec<i32>, Vec<Option<f64>>) {
    let b = &read_all(&dir.join("selection.arrow"), ArtifactKind::Selection)[0];
    let channels = col::<Int32Array>(b, "channel").values().to_vec();
    let scores = col::<Float64Array>(b, "fisher_score");
    let scores = (0..scores.len())
        .map(|i| scores.is_valid(i).then(|| scores.value(i)))
        .collect();
    (channels, scores)
}

/// Slices `cut` keeping every channel with `method`, into `out`; returns the slicer's log.
fn slice_all(manifest: &str, images: &str, cut: &str, method: &str, out: &Path) -> String {
    let extra = ["--method", method, "--images", images];
    slice_with(manifest, cut, "all", out, &extra)
}

/// Fisher's ratio per channel (between-class over within-class variance of the spatially
/// averaged activation), written here independently of the slicer's code.
fn fisher_ratio(acts: &[Vec<f64>], labels: &[i32]) -> Vec<f64> {
    let channels = acts[0].len();
    (0..channels)
        .map(|c| {
            let mut by_class: std::collections::BTreeMap<i32, Vec<f64>> = Default::default();
            for (a, &l) in acts.iter().zip(labels) {
                by_class.entry(l).or_default().push(a[c]);
            }
            let all: Vec<f64> = acts.iter().map(|a| a[c]).collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let grand = mean(&all);
            let (mut between, mut within) = (0.0, 0.0);
            for v in by_class.values() {
                let m = mean(v);
                between += v.len() as f64 * (m - grand).powi(2);
                within += v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
            }
            between / within
        })
        .collect()
}

#[test]
fn fisher_random_selects_by_the_scores_it_reports_and_repeats_under_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    ok(&run("privynet-ingest", &["--manifest", ms]));
    let images = dir.path().join("out/images.parquet");
    let images = images.to_str().unwrap();
    let (fisher, again, random) = (
        dir.path().join("fisher"),
        dir.path().join("again"),
        dir.path().join("random"),
    );
    let log = slice_all(ms, images, "conv1", "fisher-random", &fisher);
    // The smoke split holds fewer training images than the 1,000 the manifest lets score.
    assert!(
        log.contains("slice.fisher_images = 1000, but the train split")
            && log.contains("holds 200 images"),
        "{log}"
    );
    slice_all(ms, images, "conv1", "fisher-random", &again);
    slice_all(ms, images, "conv1", "random", &random);
    let (order, scores) = selection(&fisher);
    let scores: Vec<f64> = scores.into_iter().map(|s| s.expect("scored")).collect();
    assert_eq!(
        selection(&again).0,
        order,
        "the same seed gives the same selection"
    );
    let (random_order, random_scores) = selection(&random);
    assert!(random_scores.iter().all(Option::is_none));
    assert_ne!(random_order, order, "fisher-random must differ from random");

    // All channels of the random slice, extracted: their spatial means over the train split
    // (every one of the smoke run's 200, under the manifest's 1,000-image limit).
    let features = dir.path().join("features.parquet");
    extract(ms, &random, &features);
    let c = order.len();
    let (mut acts, mut labels) = (Vec::new(), Vec::new());
    for b in read_all(&features, ArtifactKind::Features) {
        let split = col::<StringArray>(&b, "split");
        let label = col::<Int32Array>(&b, "label");
        let f = col::<FixedSizeListArray>(&b, "features");
        for i in (0..b.num_rows()).filter(|&i| split.value(i) == "train") {
            let row = f.value(i);
            let row = row
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .values();
            let hw = row.len() / c;
            let mut by_channel = vec![0.0; c];
            for (pos, &ch) in random_order.iter().enumerate() {
                let plane = &row[pos * hw..(pos + 1) * hw];
                by_channel[ch as usize] =
                    plane.iter().map(|&v| f64::from(v)).sum::<f64>() / hw as f64;
            }
            acts.push(by_channel);
            labels.push(label.value(i));
        }
    }
    assert_eq!(acts.len(), 200);
    let ours = fisher_ratio(&acts, &labels);
    for (pos, &ch) in order.iter().enumerate() {
        let (theirs, mine) = (scores[pos], ours[ch as usize]);
        assert!(
            (theirs - mine).abs() <= 1e-4 * mine.abs().max(1e-9),
            "channel {ch}: the slicer scored {theirs}, this test {mine}"
        );
    }
    // The first half of the order is the top half by score (top_fraction 0.5), as a set.
    let top = c.div_ceil(2);
    let mut ranked: Vec<usize> = (0..c).collect();
    ranked.sort_by(|&a, &b| ours[b].total_cmp(&ours[a]));
    let head: BTreeSet<i32> = order[..top].iter().copied().collect();
    let best: BTreeSet<i32> = ranked[..top].iter().map(|&i| i as i32).collect();
    assert_eq!(
        head, best,
        "the selection's head is not the top half by Fisher score"
    );
    // And it is not in score order: the head is shuffled by the seed, PrivyNet's secret.
    let head_scores: Vec<f64> = order[..top].iter().map(|&ch| ours[ch as usize]).collect();
    assert!(
        head_scores.windows(2).any(|w| w[0] < w[1]),
        "the head is sorted by score"
    );
}

/// The default manifest's selection at fire3 (D = 16), pinned: a change to the Fisher scoring,
/// the image order, the preprocessing or the seeded shuffle shows up here.
#[test]
fn the_default_manifests_fire3_selection_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let set = format!("out_dir={}", out.display());
    let m = "pipelines/cifar10-squeezenet.yaml";
    ok(&run("privynet-ingest", &["--manifest", m, "--set", &set]));
    let sliced = dir.path().join("fire3-d16");
    let images = out.join("images.parquet");
    let extra = ["--set", &set, "--images", images.to_str().unwrap()];
    let _ = slice_with(m, "fire3", "16", &sliced, &extra);
    let (channels, scores) = selection(&sliced);
    let text: Vec<String> = channels
        .iter()
        .zip(&scores)
        .map(|(c, s)| format!("{c:>3} {:.4e}", s.expect("scored")))
        .collect();
    insta::assert_snapshot!(text.join("\n"));
}
