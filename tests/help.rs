//! Every binary's `--help` says what that binary does: a summary of its own, not another
//! binary's or a shared crate description, and clap's own consistency checks pass (a bad
//! flag declaration fails `--help` at run time).

use std::collections::BTreeMap;

use privynet_e2e::*;

const BINARIES: [&str; 8] = [
    "privynet",
    "privynet-ingest",
    "privynet-slice",
    "privynet-extract",
    "privynet-train",
    "privynet-attack",
    "privynet-characterize",
    "privynet-optimize",
];

#[test]
fn every_binary_says_what_it_does() {
    let mut by_summary: BTreeMap<String, &str> = BTreeMap::new();
    for b in BINARIES {
        let o = run(b, &["--help"]);
        ok(&o);
        let text = stdout(&o);
        let summary = text.lines().next().unwrap_or_default().to_string();
        assert!(summary.len() > 20, "{b}: `{summary}`");
        assert!(text.contains("Usage:"), "{b}: {text}");
        if let Some(other) = by_summary.insert(summary.clone(), b) {
            panic!("{b} and {other} both say `{summary}`");
        }
    }
    let attack = stdout(&run("privynet-attack", &["--help"]));
    assert!(attack.starts_with("Score a topology's privacy"), "{attack}");
    let train = stdout(&run("privynet-train", &["--help"]));
    assert!(train.starts_with("Train the cloud network"), "{train}");
}

/// A binary older than a source it is built from is refused by name (so `cargo test` alone
/// never runs stale binaries): a copy of a built binary dated 1970 is older than every source
/// of its crate and the crates below it; the build itself is not.
#[test]
fn a_binary_older_than_its_sources_is_named_as_stale() {
    let dir = tempfile::tempdir().unwrap();
    for b in [
        "privynet-slice",
        "privynet-extract",
        "privynet-train",
        "privynet",
    ] {
        let real = bin(b);
        assert_eq!(source_newer_than(b, &real), None, "{b} as built");
        let old = dir.path().join(b);
        std::fs::copy(&real, &old).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
        let newer = source_newer_than(b, &old).expect("a 1970 binary is stale");
        assert!(
            newer.extension().is_some_and(|e| e == "rs" || e == "yaml"),
            "{}",
            newer.display()
        );
    }
}
