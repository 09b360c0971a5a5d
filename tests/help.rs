//! Every binary's `--help` says what that binary does: a summary of its own, not another
//! binary's or a shared crate description, and clap's own consistency checks pass (a bad
//! flag declaration fails `--help` at run time).

use std::collections::BTreeMap;

use privynet_e2e::*;

/// The runner, `privynet-predict` (which runs a deployment, not a stage), and every declared
/// stage's binary, as `privynet stages` lists them.
fn binaries() -> Vec<String> {
    let listing = stdout(&run("privynet", &["stages"]));
    let mut out = vec!["privynet".to_string(), "privynet-predict".to_string()];
    for line in listing.lines() {
        if let Some(b) = line.trim().strip_prefix("binary: ")
            && !out.iter().any(|o| o == b)
        {
            out.push(b.to_string());
        }
    }
    out
}

#[test]
fn every_binary_says_what_it_does() {
    let binaries = binaries();
    assert!(binaries.len() >= 10, "{binaries:?}");
    let mut by_summary: BTreeMap<String, &str> = BTreeMap::new();
    for b in &binaries {
        let o = run(b, &["--help"]);
        ok(&o);
        let text = stdout(&o);
        let summary = text.lines().next().unwrap_or_default().to_string();
        assert!(summary.len() > 20, "{b}: `{summary}`");
        assert!(text.contains("Usage:"), "{b}: {text}");
        if let Some(other) = by_summary.insert(summary.clone(), b.as_str()) {
            panic!("{b} and {other} both say `{summary}`");
        }
    }
    let attack = stdout(&run("privynet-attack", &["--help"]));
    assert!(attack.starts_with("Score a topology's privacy"), "{attack}");
    let train = stdout(&run("privynet-train", &["--help"]));
    assert!(train.starts_with("Train the cloud network"), "{train}");
}

/// `make <stage>` exists for exactly the declared stages: the Makefile reads their names from
/// the declarations, and this catches the day that reading breaks.
#[test]
fn the_makefile_has_a_target_per_declared_stage() {
    let declared = stdout(&run("privynet", &["stages", "--names"]));
    let declared: Vec<&str> = declared.lines().collect();
    let o = std::process::Command::new("make")
        .args(["-s", "--no-print-directory", "stage-names"])
        .current_dir(root())
        .output()
        .unwrap();
    ok(&o);
    let targets = stdout(&o);
    assert_eq!(targets.split_whitespace().collect::<Vec<_>>(), declared);
    assert!(
        declared.contains(&"deploy") && declared.len() >= 9,
        "{declared:?}"
    );
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
