//! End-to-end tests of the optimizer: the runner's two-pass model-based search on the smoke
//! pipeline (the choice is evaluated for real and the decision gets its measured values), a
//! decision that test accuracies cannot move, the optimizer binary on infeasible limits, and
//! its errors on wrong inputs.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
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
    let measured = col::<Float64Array>(b, "measured_val_accuracy");
    assert!(measured.is_valid(0), "the choice was measured");
    assert!(col::<Float64Array>(b, "measured_test_accuracy").is_valid(0));
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
    let show = run("privynet", &["show", o.to_str().unwrap()]);
    ok(&show);
    let show = stdout(&show);
    assert!(show.contains(&format!("Chosen: **{chosen}**")), "{show}");
    // A rerun succeeds and finds everything up to date, the evaluated choice included.
    let again = run("privynet", &args);
    ok(&again);
    let again = stdout(&again);
    assert!(again.contains(" 0 ran,"), "{again}");
    assert!(
        !again.lines().any(|l| l.trim_start().starts_with("ran")),
        "{again}"
    );

    // Test accuracies cannot move the decision: the optimizer on the same table with the test
    // column reversed, or made to fall where validation accuracy rises, decides the same.
    let c = o.join("characterization.parquet");
    test_accuracy_cannot_move_the_decision(ms, &c, dir.path());

    // Limits nothing meets: a clear answer, the binding limit and the nearest topologies.
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

/// Runs the optimizer on `table` with the smoke run's grid and sample; returns its decision
/// and predictions.
fn optimize_table(ms: &str, table: &Path, out: &Path) -> (RecordBatch, Vec<RecordBatch>) {
    ok(&run(
        "privynet-optimize",
        &[
            "--manifest",
            ms,
            "--set",
            "sweep.channels=[4, all]",
            "--set",
            "optimize.sample=[largest]",
            "--characterization",
            table.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    (
        read_all(&out.join("decision.arrow"), ArtifactKind::Decision).remove(0),
        read_all(&out.join("predictions.parquet"), ArtifactKind::Predictions),
    )
}

/// Every column but the ones that report test accuracy, as (name, data).
fn without_test(batches: &[RecordBatch]) -> Vec<(String, arrow::array::ArrayData)> {
    let reports_test = |n: &str| n.contains("test") || n == "accuracy_cost";
    batches
        .iter()
        .flat_map(|b| {
            b.schema()
                .fields()
                .iter()
                .zip(b.columns())
                .filter(|(f, _)| !reports_test(f.name()))
                .map(|(f, c)| (f.name().clone(), c.to_data()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn test_accuracy_cannot_move_the_decision(ms: &str, table: &Path, dir: &Path) {
    let (decision, predictions) = optimize_table(ms, table, &dir.join("opt-original"));
    let rows = read_all(table, ArtifactKind::Characterization);
    assert_eq!(rows.len(), 1);
    let t = &rows[0];
    let val = col::<Float64Array>(t, "val_accuracy");
    let test = col::<Float64Array>(t, "test_accuracy");
    let n = t.num_rows();
    assert!(n >= 3, "{n} characterized topologies");
    let variants: [Vec<f64>; 2] = [
        (0..n).map(|i| test.value(n - 1 - i)).collect(),
        (0..n).map(|i| 1.0 - val.value(i)).collect(),
    ];
    for (k, v) in variants.into_iter().enumerate() {
        let columns: Vec<ArrayRef> = t
            .schema()
            .fields()
            .iter()
            .zip(t.columns())
            .map(|(f, c)| {
                if f.name() == "test_accuracy" {
                    Arc::new(Float64Array::from(v.clone())) as ArrayRef
                } else {
                    c.clone()
                }
            })
            .collect();
        let schema = arrow::datatypes::Schema::new(t.schema().fields().clone());
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), columns).unwrap();
        let shuffled = dir.join(format!("shuffled-{k}.parquet"));
        privynet_core::io::write_artifact(
            &shuffled,
            ArtifactKind::Characterization,
            schema,
            &privynet_core::Provenance::new("test", "-"),
            &[batch],
        )
        .unwrap();
        let (d, p) = optimize_table(ms, &shuffled, &dir.join(format!("opt-shuffled-{k}")));
        assert_eq!(
            without_test(std::slice::from_ref(&d)),
            without_test(std::slice::from_ref(&decision)),
            "variant {k}: the decision moved with the test accuracies"
        );
        assert_eq!(without_test(&p), without_test(&predictions), "variant {k}");
        // The decision reports the chosen topology's own numbers: validation from the
        // validation column, test from the (changed) test column.
        let chosen = col::<StringArray>(&d, "topology").value(0);
        let topologies = col::<StringArray>(t, "topology");
        let i = (0..n).find(|&i| topologies.value(i) == chosen).unwrap();
        assert_eq!(
            col::<Float64Array>(&d, "measured_val_accuracy").value(0),
            val.value(i)
        );
        assert_eq!(
            col::<Float64Array>(&d, "measured_test_accuracy").value(0),
            v[i]
        );
    }
}
