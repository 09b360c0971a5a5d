//! Fuzzed parsers: the manifest parser and the artifact readers, fed mutated real inputs (the
//! smoke manifest; a selection in Arrow IPC and a privacy table in Parquet, written by the
//! project's own writer), must answer `Ok` or an `Err` that names the file, and never panic;
//! mutations that must be refused (an unknown key, a file cut short) are, by name. `make test` runs
//! proptest's default 256 cases per property; `make fuzz` sets `PROPTEST_CASES` (which
//! proptest's default configuration reads) to 20,000.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use proptest::prelude::*;

use privynet_core::io::{open_parquet, read_arrow, write_artifact};
use privynet_core::manifest::Manifest;
use privynet_core::{ArtifactKind, Provenance};

const SMOKE: &str = include_str!("../../../pipelines/smoke.yaml");

/// One edit of a byte string; positions are taken modulo its length when applied.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
}

/// Bytes that mean something to YAML, Arrow IPC or Parquet framing, besides random ones.
fn insertion() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..8),
        proptest::sample::select(vec![
            b": ".to_vec(),
            b"\n- ".to_vec(),
            b"{".to_vec(),
            b"[".to_vec(),
            b"\t".to_vec(),
            b"&a ".to_vec(),
            b"*a".to_vec(),
            b"!!binary ".to_vec(),
            b".nan".to_vec(),
            b"-1".to_vec(),
            b"99999999999999999999".to_vec(),
            b"PAR1".to_vec(),
            b"ARROW1".to_vec(),
            vec![0xff, 0xff, 0xff, 0x7f],
        ]),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), insertion()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 1..6)
}

fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for e in edits {
        let at = |i: usize, b: &Vec<u8>| if b.is_empty() { 0 } else { i % b.len() };
        match e {
            Edit::Flip(i, x) => {
                if !b.is_empty() {
                    let i = at(*i, &b);
                    b[i] ^= x;
                }
            }
            Edit::Delete(i, n) => {
                let i = at(*i, &b);
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Insert(i, v) => {
                let i = at(*i, &b);
                b.splice(i..i, v.iter().copied());
            }
            Edit::Truncate(i) => {
                let i = at(*i, &b);
                b.truncate(i);
            }
        }
    }
    b
}

/// The bytes of a valid selection (Arrow IPC) and privacy table (Parquet), written once.
static REAL: LazyLock<(Vec<u8>, Vec<u8>)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    real_artifacts(dir.path())
});

/// A valid selection (Arrow IPC) and privacy table (Parquet), as the stages write them.
fn real_artifacts(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut p = Provenance::new("fuzz", "-");
    p.set("seed", "7");
    p.set("method", "random");
    let sel = ArtifactKind::Selection
        .batch(vec![
            (
                "position",
                Arc::new(Int32Array::from(vec![0, 1, 2])) as ArrayRef,
            ),
            ("channel", Arc::new(Int32Array::from(vec![5, 0, 9]))),
            (
                "fisher_score",
                Arc::new(Float64Array::from(vec![Some(1.5), None, Some(0.25)])),
            ),
        ])
        .unwrap();
    let sel_path = dir.join("selection.arrow");
    write_artifact(
        &sel_path,
        ArtifactKind::Selection,
        (*sel.schema()).clone(),
        &p,
        &[sel],
    )
    .unwrap();
    let n = 300;
    let privacy = ArtifactKind::Privacy
        .batch(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            (
                "mode",
                Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                    if i % 2 == 0 {
                        "known-selection"
                    } else {
                        "matched-selection"
                    }
                }))),
            ),
            (
                "family",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| if i % 3 == 0 { "irn" } else { "optimization" }),
                )),
            ),
            (
                "psnr",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| 10.0 + i as f64 / 30.0),
                )),
            ),
            (
                "ssim",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 / n as f64),
                )),
            ),
            (
                "mse",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| 1.0 / (1.0 + i as f64)),
                )),
            ),
            (
                "feature_error",
                Arc::new(Float64Array::from(
                    (0..n)
                        .map(|i| (i % 5 != 0).then_some(i as f64 / 100.0))
                        .collect::<Vec<_>>(),
                )),
            ),
        ])
        .unwrap();
    let pq_path = dir.join("privacy.parquet");
    let pp = Provenance::new("fuzz", "-");
    write_artifact(
        &pq_path,
        ArtifactKind::Privacy,
        (*privacy.schema()).clone(),
        &pp,
        &[privacy],
    )
    .unwrap();
    (
        std::fs::read(&sel_path).unwrap(),
        std::fs::read(&pq_path).unwrap(),
    )
}

proptest! {
    /// Any mutation of the smoke manifest parses or is refused naming the manifest; never a
    /// panic.
    #[test]
    fn mutated_manifests_never_panic(e in edits()) {
        let text = String::from_utf8_lossy(&apply(SMOKE.as_bytes(), &e)).into_owned();
        if let Err(err) = Manifest::parse(Path::new("fuzz.yaml"), &text, &[]) {
            prop_assert!(err.to_string().contains("fuzz.yaml"), "{err}");
        }
    }

    /// An unknown top-level key, wherever the mutation put the rest, is refused by its name.
    #[test]
    fn an_unknown_key_is_refused_by_name(n in 0u32..1_000_000) {
        let key = format!("zz_unknown_{n}");
        let text = format!("{SMOKE}\n{key}: 1\n");
        let err = Manifest::parse(Path::new("fuzz.yaml"), &text, &[]).unwrap_err();
        prop_assert!(err.to_string().contains(&key), "{err}");
    }

    /// Any mutation of a real Arrow IPC artifact reads or is refused naming the file; never a
    /// panic.
    #[test]
    fn mutated_arrow_artifacts_never_panic(e in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mutated.arrow");
        std::fs::write(&path, apply(&REAL.0, &e)).unwrap();
        if let Err(err) = read_arrow(&path, ArtifactKind::Selection) {
            prop_assert!(err.to_string().contains("mutated.arrow"), "{err}");
        }
    }

    /// Any mutation of a real Parquet artifact reads (every batch) or is refused, the opening
    /// naming the file; never a panic.
    #[test]
    fn mutated_parquet_artifacts_never_panic(e in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mutated.parquet");
        std::fs::write(&path, apply(&REAL.1, &e)).unwrap();
        match open_parquet(&path, ArtifactKind::Privacy, None, 64) {
            Ok((_, reader)) => {
                for batch in reader {
                    if batch.is_err() {
                        break;
                    }
                }
            }
            Err(err) => prop_assert!(err.to_string().contains("mutated.parquet"), "{err}"),
        }
    }

    /// A file cut short (its footer gone) must be refused, naming the file: it never reads
    /// as a whole artifact. Both formats keep their footer at the end.
    #[test]
    fn truncated_artifacts_are_refused_by_name(keep in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let arrow_path = dir.path().join("cut.arrow");
        std::fs::write(&arrow_path, &REAL.0[..(REAL.0.len() as f64 * keep) as usize]).unwrap();
        let err = read_arrow(&arrow_path, ArtifactKind::Selection).unwrap_err();
        prop_assert!(err.to_string().contains("cut.arrow"), "{err}");
        let pq_path = dir.path().join("cut.parquet");
        std::fs::write(&pq_path, &REAL.1[..(REAL.1.len() as f64 * keep) as usize]).unwrap();
        let err = open_parquet(&pq_path, ArtifactKind::Privacy, None, 64).unwrap_err();
        prop_assert!(err.to_string().contains("cut.parquet"), "{err}");
    }
}
