//! End-to-end tests of `privynet-ingest` on the real first CIFAR-10 batch, on image folders the
//! tests make, and on bad input.

use arrow::array::{FixedSizeListArray, Int32Array, Int64Array, StringArray, UInt8Array};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

#[test]
fn real_first_batch_keeps_its_class_counts_and_stratifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("images.parquet");
    let o = run(
        "privynet-ingest",
        &[
            "--format",
            "cifar10-binary",
            "--dataset",
            cifar_batch1().to_str().unwrap(),
            "--train",
            "8700",
            "--val",
            "300",
            "--attacker",
            "500",
            "--test",
            "500",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    ok(&o);
    let batches = read_all(&out, ArtifactKind::Images);
    let mut counts = [0usize; 10];
    let mut per_split: std::collections::BTreeMap<String, [usize; 10]> = Default::default();
    let mut ids: std::collections::BTreeMap<String, std::collections::BTreeSet<i64>> =
        Default::default();
    for b in &batches {
        let labels = col::<Int32Array>(b, "label");
        let splits = col::<StringArray>(b, "split");
        let id = col::<Int64Array>(b, "id");
        for i in 0..b.num_rows() {
            ids.entry(splits.value(i).to_string())
                .or_default()
                .insert(id.value(i));
            counts[labels.value(i) as usize] += 1;
            per_split.entry(splits.value(i).to_string()).or_default()[labels.value(i) as usize] +=
                1;
        }
    }
    // The per-class counts of data_batch_1 from ../shared/data/SOURCES.md.
    assert_eq!(
        counts,
        [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    );
    // Stratified: the 500 test images follow the class shares within one image.
    for (c, &n) in per_split["test"].iter().enumerate() {
        let want = counts[c] as f64 * 500.0 / 10_000.0;
        assert!((n as f64 - want).abs() <= 1.0, "class {c}: {n} vs {want}");
    }
    assert_eq!(per_split["attacker"].iter().sum::<usize>(), 500);
    // A validation split exists, stratified like the others, and shares no image with any
    // other split (every id is in exactly one split; the four sizes add up to the batch).
    assert_eq!(ids["val"].len(), 300);
    for (c, &n) in per_split["val"].iter().enumerate() {
        let want = counts[c] as f64 * 300.0 / 10_000.0;
        assert!((n as f64 - want).abs() <= 1.0, "class {c}: {n} vs {want}");
    }
    for other in ["train", "attacker", "test"] {
        assert!(
            ids["val"].is_disjoint(&ids[other]),
            "val and {other} overlap"
        );
    }
    assert_eq!(ids.values().map(|s| s.len()).sum::<usize>(), 10_000);
    // The first record of the batch is a frog (label 6), and its pixels are the file's planes
    // (1,024 red, then green, then blue bytes) interleaved as HWC RGB, read here on their own.
    let raw = {
        use std::io::Read;
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(cifar_batch1()).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    assert_eq!(raw[0], 6, "the first record of data_batch_1 is a frog");
    let (b, i) = batches
        .iter()
        .find_map(|b| {
            let id = col::<Int64Array>(b, "id");
            (0..b.num_rows())
                .find(|&i| id.value(i) == 0)
                .map(|i| (b, i))
        })
        .expect("record 0 is in some split");
    assert_eq!(col::<Int32Array>(b, "label").value(i), 6);
    let pixels = col::<FixedSizeListArray>(b, "pixels");
    assert_eq!(pixels.value_length(), 3072);
    let row = pixels.value(i);
    let row = row.as_any().downcast_ref::<UInt8Array>().unwrap().values();
    for y in 0..32 {
        for x in 0..32 {
            for c in 0..3 {
                assert_eq!(
                    row[(y * 32 + x) * 3 + c],
                    raw[1 + c * 1024 + y * 32 + x],
                    "pixel ({y}, {x}) channel {c}"
                );
            }
        }
    }
    // Not a constant image: the order is tested by the values themselves.
    assert!(row.iter().any(|&v| v != row[0]));
}

#[test]
fn same_seed_same_file_other_seed_other_split() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        ok(&run(
            "privynet-ingest",
            &[
                "--format",
                "cifar10-binary",
                "--dataset",
                cifar_batch1().to_str().unwrap(),
                "--train",
                "100",
                "--attacker",
                "50",
                "--test",
                "50",
                "--seed",
                seed,
                "--output",
                out.to_str().unwrap(),
            ],
        ));
        out
    };
    let a = std::fs::read(mk("a.parquet", "1")).unwrap();
    let b = std::fs::read(mk("b.parquet", "1")).unwrap();
    let c = std::fs::read(mk("c.parquet", "2")).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn write_png(path: &std::path::Path, h: u32, w: u32, v: u8) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, x as u8, y as u8]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folder_roundtrips_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for (c, class) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for k in 0..3 {
            write_png(
                &root.join(class).join(format!("{k}.png")),
                4,
                5,
                (c * 100 + k) as u8,
            );
        }
    }
    let out = dir.path().join("images.parquet");
    ok(&run(
        "privynet-ingest",
        &[
            "--format",
            "image-folder",
            "--dataset",
            root.to_str().unwrap(),
            "--train",
            "2",
            "--attacker",
            "2",
            "--test",
            "2",
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    let batches = read_all(&out, ArtifactKind::Images);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 6);
    for b in &batches {
        let names = col::<StringArray>(b, "class_name");
        let sources = col::<StringArray>(b, "source");
        let pixels = col::<FixedSizeListArray>(b, "pixels");
        for i in 0..b.num_rows() {
            let px = pixels.value(i);
            let px = px.as_any().downcast_ref::<UInt8Array>().unwrap();
            assert_eq!(px.len(), 4 * 5 * 3);
            // Pixel (x=1, y=0) is [v, 1, 0] in RGB order.
            assert_eq!(&px.values()[3..6], &[px.value(0), 1, 0]);
            assert!(sources.value(i).starts_with(names.value(i)));
        }
    }
}

#[test]
fn image_folder_refuses_non_images_and_silent_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    std::fs::create_dir_all(root.join("a")).unwrap();
    write_png(&root.join("a/0.png"), 4, 4, 1);
    write_png(&root.join("a/1.png"), 6, 4, 1);
    let out = dir.path().join("images.parquet");
    let args = |extra: &[&'static str]| {
        let mut v = vec![
            "--format",
            "image-folder",
            "--dataset",
            root.to_str().unwrap(),
            "--train",
            "1",
            "--test",
            "1",
            "--output",
            out.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run_args = |a: Vec<String>| {
        run(
            "privynet-ingest",
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    fails_with(&run_args(args(&[])), &["a/1.png", "6x4", "resize"]);
    assert!(!out.exists());
    ok(&run_args(args(&["--resize", "4,4"])));
    std::fs::write(root.join("a/notes.txt"), "not an image").unwrap();
    std::fs::remove_file(&out).unwrap();
    fails_with(
        &run_args(args(&["--resize", "4,4"])),
        &["notes.txt", "not a readable PNG or JPEG"],
    );
    assert!(!out.exists());
}

#[test]
fn truncated_cifar_file_and_oversized_splits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("data_batch_1.bin");
    std::fs::write(&bad, vec![0u8; 3073 * 2 + 100]).unwrap();
    let out = dir.path().join("images.parquet");
    let o = run(
        "privynet-ingest",
        &[
            "--format",
            "cifar10-binary",
            "--dataset",
            bad.to_str().unwrap(),
            "--train",
            "1",
            "--test",
            "1",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    fails_with(&o, &["data_batch_1.bin", "truncated", "3073"]);
    let o = run(
        "privynet-ingest",
        &[
            "--format",
            "cifar10-binary",
            "--dataset",
            cifar_batch1().to_str().unwrap(),
            "--train",
            "9999",
            "--test",
            "2",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    fails_with(&o, &["10001 images", "has 10000"]);
    let o = run(
        "privynet-ingest",
        &[
            "--format",
            "cifar10-binary",
            "--dataset",
            "/nonexistent/cifar",
            "--train",
            "1",
            "--test",
            "1",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    fails_with(&o, &["/nonexistent/cifar", "make data"]);
    assert!(!out.exists());
}

#[test]
fn manifest_typo_names_key_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "extrct: {}\n");
    let o = run("privynet-ingest", &["--manifest", m.to_str().unwrap()]);
    fails_with(&o, &["manifest.yaml:", "unknown field `extrct`"]);
    let m = smoke_manifest(dir.path(), "");
    let o = run(
        "privynet-ingest",
        &[
            "--manifest",
            m.to_str().unwrap(),
            "--set",
            "dataset.splits.trian=5",
        ],
    );
    fails_with(&o, &["trian"]);
}

#[test]
fn killed_ingest_leaves_no_file_at_the_final_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("images.parquet");
    let child = std::process::Command::new(bin("privynet-ingest"))
        .args([
            "--format",
            "cifar10-binary",
            "--dataset",
            data("cifar-10").to_str().unwrap(),
            "--train",
            "45000",
            "--attacker",
            "5000",
            "--test",
            "10000",
            "--output",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    kill_while_writing(child, &out);
    assert!(!out.exists(), "a killed ingest left {}", out.display());
}
