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
