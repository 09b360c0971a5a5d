//! End-to-end tests of the optimizer: the runner's two-pass model-based search on the smoke
//! pipeline (the choice is evaluated for real and the decision gets its measured values), the
//! optimizer binary on infeasible limits, and its errors on wrong inputs.

use arrow::array::{Array, BooleanArray, Float64Array, StringArray};
use privynet_core::ArtifactKind;
use privynet_e2e::*;

#[test]
fn the_choice_is_evaluated_for_real_and_infeasible_limits_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    // One sample per cut (its widest): the slopes have nothing to learn from, so every D of a
    // cut is predicted alike and the tie goes to the fewest channels: a `-d4` topology that was
    // not sampled, which the runner must then evaluate.
    let sets = [
        "--set",
        "sweep.channels=[4, all]",
        "--set",
        "optimize.sample=[largest]",
    ];
    let mut args = vec!["run", ms];
    args.extend(sets);
    let first = run("privynet", &args);
    ok(&first);
    let out = stdout(&first);
    assert!(out.contains("not sampled: evaluating it"), "{out}");
    let o = dir.path().join("out");
    let d = read_all(&o.join("optimize/decision.arrow"), ArtifactKind::Decision);
    let b = &d[0];
    assert_eq!(col::<StringArray>(b, "status").value(0), "chosen");
    let chosen = col::<StringArray>(b, "topology").value(0).to_string();
    assert!(chosen.ends_with("-d4"), "{chosen}");
    let measured = col::<Float64Array>(b, "measured_accuracy");
    assert!(measured.is_valid(0), "the choice was measured");
    assert!(col::<BooleanArray>(b, "measured_feasible").value(0));
    assert_eq!(col::<StringArray>(b, "binding").value(0), "none");
    let report = std::fs::read_to_string(o.join("optimize/report.md")).unwrap();
    assert!(
        report.contains(&format!("Chosen: **{chosen}**")),
        "{report}"
    );
    assert!(report.contains("Measured for real"), "{report}");
    for f in ["plots/tradeoff.svg", "plots/channels.svg"] {
        let svg = std::fs::read_to_string(o.join("optimize").join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(&chosen), "{f}");
    }
    // The grid: 2 cuts x {4, all}; 2 sampled + the choice measured.
    let p = read_all(
        &o.join("optimize/predictions.parquet"),
        ArtifactKind::Predictions,
    );
    assert_eq!(p.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
    // The summary shows the decision.
    let show = stdout(&run("privynet", &["show", o.to_str().unwrap()]));
    assert!(show.contains(&format!("Chosen: **{chosen}**")), "{show}");
    // A rerun finds everything up to date, the evaluated choice included.
    let again = stdout(&run("privynet", &args));
    assert!(
        !again.lines().any(|l| l.trim_start().starts_with("ran")),
        "{again}"
    );

    // Limits nothing meets: a clear answer, the binding limit and the nearest topologies.
    let c = o.join("characterization.parquet");
    let out2 = dir.path().join("strict");
    let strict = run(
        "privynet-optimize",
        &[
            "--manifest",
            ms,
            "--set",
            "sweep.channels=[4, all]",
            "--characterization",
            c.to_str().unwrap(),
            "--max-psnr",
            "1",
            "--output",
            out2.to_str().unwrap(),
        ],
    );
    ok(&strict);
    assert!(stdout(&strict).contains("infeasible"));
    let d = read_all(&out2.join("decision.arrow"), ArtifactKind::Decision);
    assert_eq!(col::<StringArray>(&d[0], "status").value(0), "infeasible");
    assert_eq!(col::<StringArray>(&d[0], "binding").value(0), "psnr");
    assert!(col::<StringArray>(&d[0], "nearest").is_valid(0));
    let report = std::fs::read_to_string(out2.join("report.md")).unwrap();
    assert!(report.contains("No topology meets the limits"), "{report}");
    let f = read_all(&out2.join("frontier.parquet"), ArtifactKind::Frontier);
    assert_eq!(f.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

    // Wrong inputs: a missing file, and a file of another kind, each named.
    let o = run(
        "privynet-optimize",
        &[
            "--manifest",
            ms,
            "--characterization",
            "/nonexistent/characterization.parquet",
            "--output",
            out2.to_str().unwrap(),
        ],
    );
    fails_with(&o, &["/nonexistent/characterization.parquet"]);
    let images = dir.path().join("out/images.parquet");
    let o = run(
        "privynet-optimize",
        &[
            "--manifest",
            ms,
            "--characterization",
            images.to_str().unwrap(),
            "--output",
            out2.to_str().unwrap(),
        ],
    );
    fails_with(&o, &["images.parquet", "characterization"]);
}
