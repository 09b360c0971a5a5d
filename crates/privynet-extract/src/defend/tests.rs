//! The defend stage on tiny features files made here: smooth random rows split by split, an
//! undefended topology, and secrets of a repeated byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, FixedSizeListArray, Int64Array, StringArray};
use rand::{Rng, SeedableRng};

use privynet_core::defence::{Defence, Encoding, METADATA_KEY, SECRET_LEN, image_rng};
use privynet_core::io::{ArtifactWriter, open_parquet, stored_bytes_per_row, write_artifact};
use privynet_core::manifest::FeatureDtype;
use privynet_core::{ArtifactKind, Provenance, Topology};

use super::*;
use crate::extract::{features_batch, features_schema};
use crate::rows::{append_codes, append_floats};

const SHAPE: [usize; 3] = [8, 4, 4];
const LEN: usize = 8 * 4 * 4;

/// The undefended topology of `SHAPE`.
fn topology() -> Topology {
    Topology {
        cut: "fire3".into(),
        layer: Some("fire3".into()),
        input_size: 32,
        cut_channels: 16,
        channels: SHAPE[0] as i64,
        method: "random".into(),
        height: SHAPE[1] as i64,
        width: SHAPE[2] as i64,
        feature_len: LEN as i64,
        macs: 1,
        params: 1,
        weight_bytes: 1,
        noise: 0.0,
        bits: 32,
    }
}

/// One image's smooth features: a sine per channel over the plane, its own phase and level,
/// and a little jitter.
fn row(rng: &mut impl Rng) -> Vec<f32> {
    let phase: f32 = rng.random_range(0.0..6.0);
    let mut v = Vec::with_capacity(LEN);
    for c in 0..SHAPE[0] {
        for y in 0..SHAPE[1] {
            for x in 0..SHAPE[2] {
                let wave = (0.7 * y as f32 + 0.3 * (x * (c + 1)) as f32 + phase).sin();
                v.push(c as f32 - 3.0 + (1.0 + c as f32) * wave + rng.random_range(-0.05..0.05));
            }
        }
    }
    v
}

/// A base features.parquet of `rows` rows (70% train, then val, then test) and its
/// topology.arrow, in `dir`.
fn base(dir: &Path, rows: usize) -> (PathBuf, PathBuf) {
    let t = topology();
    let topo = dir.join("topology.arrow");
    let b = ArtifactKind::Topology.batch(t.columns()).unwrap();
    let p = Provenance::new("slice", "-");
    write_artifact(
        &topo,
        ArtifactKind::Topology,
        b.schema().as_ref().clone(),
        &p,
        &[b],
    )
    .unwrap();
    let mut p = Provenance::new("extract", "-");
    p.set("feature_shape", "8,4,4");
    p.set("topology", serde_json::to_string(&t).unwrap());
    p.set("preprocess", r#"{"resize":"none"}"#);
    let features = dir.join("features.parquet");
    let schema = features_schema(LEN, FeatureDtype::Float32);
    let mut w = ArtifactWriter::create(&features, ArtifactKind::Features, schema, &p).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let split = |i: usize| match i * 10 / rows {
        0..7 => "train",
        7 => "val",
        _ => "test",
    };
    for start in (0..rows).step_by(64) {
        let ids: Vec<usize> = (start..rows.min(start + 64)).collect();
        let values: Vec<f32> = ids.iter().flat_map(|_| row(&mut rng)).collect();
        let batch = features_batch(
            w.schema(),
            ids.iter().map(|&i| 1000 + i as i64).collect(),
            ids.iter().map(|&i| (i % 10) as i32).collect(),
            ids.iter().map(|&i| split(i).to_string()).collect(),
            values,
            LEN,
            FeatureDtype::Float32,
        );
        w.write(&batch).unwrap();
    }
    w.finish().unwrap();
    (features, topo)
}

fn secret(dir: &Path, byte: u8) -> PathBuf {
    let p = dir.join(format!("secret-{byte}.key"));
    std::fs::write(&p, [byte; SECRET_LEN]).unwrap();
    p
}

fn request(
    features: &Path,
    topo: &Path,
    secret: &Path,
    noise: f64,
    bits: u8,
    out: &Path,
) -> DefendRequest {
    DefendRequest {
        features: Fetched::local(features),
        topology: Fetched::local(topo),
        secret: secret.to_path_buf(),
        defence: Defence::new(noise, bits).unwrap(),
        encoding_from: None,
        output: out.to_path_buf(),
        topology_output: None,
    }
}

/// A features file's ids, splits, float values or codes (whichever it holds), and metadata.
struct Read {
    ids: Vec<i64>,
    splits: Vec<String>,
    floats: Vec<f32>,
    codes: Vec<u8>,
    meta: HashMap<String, String>,
}

fn read(path: &Path) -> Read {
    let (schema, reader) = open_parquet(path, ArtifactKind::Features, None, 50).unwrap();
    let mut r = Read {
        ids: vec![],
        splits: vec![],
        floats: vec![],
        codes: vec![],
        meta: schema.metadata().clone().into(),
    };
    for b in reader {
        let b = b.unwrap();
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        r.ids.extend(ids.values().iter().copied());
        let s = b.column_by_name("split").unwrap();
        let s = s.as_any().downcast_ref::<StringArray>().unwrap();
        r.splits
            .extend((0..s.len()).map(|i| s.value(i).to_string()));
        let f = b.column_by_name("features").unwrap();
        let f = f.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
        let _ = append_floats(f, 0..b.num_rows(), LEN, &mut r.floats)
            || append_codes(f, 0..b.num_rows(), LEN, &mut r.codes);
    }
    r
}

fn encoding(r: &Read) -> Encoding {
    Encoding::from_metadata(r.meta.get(METADATA_KEY))
        .unwrap()
        .unwrap()
}

#[test]
fn no_noise_at_32_bits_gives_the_base_values_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (features, topo) = base(dir.path(), 50);
    let out = dir.path().join("out.parquet");
    let s = secret(dir.path(), 1);
    let report = defend(&request(&features, &topo, &s, 0.0, 32, &out), "-").unwrap();
    assert_eq!(report.rows, 50);
    let (a, b) = (read(&features), read(&out));
    assert_eq!(a.ids, b.ids);
    assert_eq!(a.splits, b.splits);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.floats), bits(&b.floats));
    for key in ["privynet.feature_shape", "privynet.preprocess"] {
        assert_eq!(a.meta[key], b.meta[key], "{key}");
    }
    assert_eq!(encoding(&b).defence, Defence::default());
}

#[test]
fn eight_bit_codes_decode_to_within_half_a_step_of_the_noisy_values() {
    let dir = tempfile::tempdir().unwrap();
    let (features, topo) = base(dir.path(), 60);
    let out = dir.path().join("out.parquet");
    let s = secret(dir.path(), 2);
    let mut req = request(&features, &topo, &s, 0.25, 8, &out);
    req.topology_output = Some(dir.path().join("defended.arrow"));
    let report = defend(&req, "-").unwrap();
    let (a, b) = (read(&features), read(&out));
    let e = encoding(&b);
    let label = "fire3-d8-n0.25-q8";
    assert_eq!(report.topology.label(), label);
    let t: Topology = serde_json::from_str(&b.meta["privynet.topology"]).unwrap();
    assert_eq!(t.label(), label);
    assert_eq!(
        Topology::read(&dir.path().join("defended.arrow")).unwrap(),
        t
    );
    assert!(e.sigma.iter().all(|&s| s > 0.0));
    let mut decoded = vec![];
    e.dequantise(&b.codes, 16, &mut decoded);
    for ((noisy_row, got), &id) in a.floats.chunks(LEN).zip(decoded.chunks(LEN)).zip(&a.ids) {
        let mut noisy = noisy_row.to_vec();
        e.add_noise(&mut noisy, 16, &mut image_rng(&[2; SECRET_LEN], label, id));
        for (i, (want, got)) in noisy.iter().zip(got).enumerate() {
            let c = i / 16;
            let (lo, hi) = (e.offset[c], e.offset[c] + 255.0 * e.scale[c]);
            let want = want.clamp(lo, hi);
            assert!(
                (want - got).abs() <= e.scale[c] / 2.0 + 1e-5,
                "row {id} value {i}"
            );
        }
    }
    // The codes span the fitted range on the train rows they were fitted on.
    let train_codes = &b.codes[..42 * LEN];
    assert_eq!(train_codes.iter().min(), Some(&0));
    assert_eq!(train_codes.iter().max(), Some(&255));
}

#[test]
fn eight_bit_codes_take_at_most_30_percent_of_the_float32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (features, topo) = base(dir.path(), 200);
    let s = secret(dir.path(), 3);
    let stored = |bits: u8| {
        let out = dir.path().join(format!("q{bits}.parquet"));
        defend(&request(&features, &topo, &s, 0.1, bits, &out), "-").unwrap();
        stored_bytes_per_row(&out).unwrap()
    };
    let float = stored_bytes_per_row(&features).unwrap();
    let (q8, q4) = (stored(8), stored(4));
    assert!(
        q8 <= 0.3 * float,
        "8-bit {q8} bytes per row, float32 {float}"
    );
    assert!(q4 < q8, "4-bit {q4} bytes per row, 8-bit {q8}");
}

#[test]
fn the_same_secret_gives_the_same_rows_and_another_secret_other_noise() {
    let dir = tempfile::tempdir().unwrap();
    let (features, topo) = base(dir.path(), 40);
    let (s1, s2) = (secret(dir.path(), 4), secret(dir.path(), 5));
    let run = |s: &Path, bits: u8, name: &str| {
        let out = dir.path().join(name);
        defend(&request(&features, &topo, s, 0.5, bits, &out), "-").unwrap();
        read(&out)
    };
    let (a, b, c) = (run(&s1, 32, "a"), run(&s1, 32, "b"), run(&s2, 32, "c"));
    assert_eq!(a.floats, b.floats);
    assert_eq!(a.meta, b.meta);
    assert_ne!(a.floats, c.floats);
    assert_eq!(
        encoding(&a),
        encoding(&c),
        "the fit does not depend on the noise at 32 bits"
    );
    let (a, b, c) = (run(&s1, 8, "a8"), run(&s1, 8, "b8"), run(&s2, 8, "c8"));
    assert_eq!((&a.codes, &a.meta), (&b.codes, &b.meta));
    assert_ne!(a.codes, c.codes);
    // Nothing of the secret in the metadata: not its bytes, nor its path.
    let s1_name = s1.display().to_string();
    assert!(
        a.meta
            .values()
            .all(|v| !v.contains(&s1_name) && !v.contains("secret"))
    );
}

#[test]
fn an_encoding_of_another_defence_or_width_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (features, topo) = base(dir.path(), 40);
    let s = secret(dir.path(), 6);
    let first = dir.path().join("first.parquet");
    defend(&request(&features, &topo, &s, 0.25, 8, &first), "-").unwrap();

    let out = dir.path().join("out.parquet");
    let mut req = request(&features, &topo, &s, 0.5, 8, &out);
    req.encoding_from = Some(Fetched::local(&first));
    req.topology_output = Some(dir.path().join("t.arrow"));
    let e = defend(&req, "-").unwrap_err().to_string();
    assert!(
        e.contains("first.parquet") && e.contains("noise 0.25") && e.contains("--noise 0.5"),
        "{e}"
    );
    assert!(!out.exists() && !dir.path().join("t.arrow").exists());

    // The same defence reuses the encoding: the same rows as the file it came from.
    req.defence = Defence::new(0.25, 8).unwrap();
    defend(&req, "-").unwrap();
    let (a, b) = (read(&first), read(&out));
    assert_eq!(encoding(&a), encoding(&b));
    assert_eq!(a.codes, b.codes);
    std::fs::remove_file(&out).unwrap();

    // An encoding of another channel count.
    let mut narrow = encoding(&a);
    narrow.sigma.truncate(4);
    narrow.scale.truncate(4);
    narrow.offset.truncate(4);
    let other = dir.path().join("narrow.parquet");
    let mut p = Provenance::new("defend", "-");
    p.set("feature_shape", "4,4,4");
    p.set("topology", "null");
    p.set("preprocess", "{}");
    p.set("defence", narrow.to_metadata());
    let w = ArtifactWriter::create(&other, ArtifactKind::Features, codes_schema(64), &p).unwrap();
    w.finish().unwrap();
    req.encoding_from = Some(Fetched::local(&other));
    let e = defend(&req, "-").unwrap_err().to_string();
    assert!(
        e.contains("narrow.parquet") && e.contains("for 4 channels") && e.contains("have 8"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn a_short_secret_or_a_defended_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (features, topo) = base(dir.path(), 20);
    let short = dir.path().join("short.key");
    std::fs::write(&short, b"too short").unwrap();
    let out = dir.path().join("out.parquet");
    let e = defend(&request(&features, &topo, &short, 0.25, 8, &out), "-").unwrap_err();
    let e = e.to_string();
    assert!(e.contains("short.key") && e.contains("32 bytes"), "{e}");
    assert!(!out.exists());

    let s = secret(dir.path(), 7);
    defend(&request(&features, &topo, &s, 0.0, 8, &out), "-").unwrap();
    let again = dir.path().join("again.parquet");
    let e = defend(&request(&out, &topo, &s, 0.0, 8, &again), "-").unwrap_err();
    assert!(e.to_string().contains("holds defended features"), "{e}");
}
