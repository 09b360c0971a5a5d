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
