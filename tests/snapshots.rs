//! Snapshot tests of CLI output and of the artifact schemas, so a change to either is seen in
//! review.

use privynet_e2e::*;

#[test]
fn squeezenet_cut_points_at_32() {
    let o = run(
        "privynet-slice",
        &[
            "--list",
            squeezenet().to_str().unwrap(),
            "--input-size",
            "32",
        ],
    );
    ok(&o);
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn squeezenet_cut_points_at_64() {
    let o = run(
        "privynet-slice",
        &[
            "--list",
            squeezenet().to_str().unwrap(),
            "--input-size",
            "64",
        ],
    );
    ok(&o);
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn artifact_schemas() {
    let mut all = String::new();
    for kind in privynet_core::ArtifactKind::ALL {
        let s = kind.schema().unwrap();
        all.push_str(&format!("{} ({}, {:?})\n", s.kind, s.zone, s.format));
        for f in &s.fields {
            all.push_str(&format!(
                "  {}: {}{}\n",
                f.name,
                f.ty,
                if f.nullable { " (nullable)" } else { "" }
            ));
        }
        all.push_str(&format!("  metadata: {}\n", s.metadata.join(", ")));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn listing_as_arrow_matches_the_printed_table() {
    use arrow::array::{Int64Array, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cut_points.arrow");
    ok(&run(
        "privynet-slice",
        &[
            "--list",
            squeezenet().to_str().unwrap(),
            "--input-size",
            "32",
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    let b = read_all(&out, privynet_core::ArtifactKind::CutPoints);
    let rows: usize = b.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 66);
    let b = &b[0];
    let layers = col::<StringArray>(b, "layer");
    let i = (0..b.num_rows())
        .find(|&i| arrow::array::Array::is_valid(layers, i) && layers.value(i) == "fire3")
        .expect("fire3 is listed");
    assert_eq!(col::<Int64Array>(b, "channels").value(i), 128);
    assert_eq!(col::<Int64Array>(b, "macs").value(i), 1_542_848);
    assert_eq!(col::<Int64Array>(b, "weight_bytes").value(i), 51_264);
}
