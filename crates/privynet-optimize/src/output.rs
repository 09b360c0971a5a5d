//! The optimizer's outputs: the table artifacts, written with arrow-rs through the core's
//! schema-checked, atomic writer (`predictions.parquet`, the whole grid; `frontier.parquet`;
//! `decision.arrow`), and [`write_all`], which writes them with the report and the plots
//! (`plots/tradeoff.svg`, `plots/channels.svg`, `plots/bytes.svg`).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use privynet_core::io::{write_artifact, write_bytes_atomic};
use privynet_core::manifest::OptimizeMode;
use privynet_core::{ArtifactKind, Provenance};

use crate::OptimizeError;
use crate::choose::{Candidate, Plan, limit_names};
use crate::{plot, report};

/// A named column, as [`ArtifactKind::batch`] takes it.
type NamedColumn = (&'static str, ArrayRef);

fn string_column<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}
fn int_column(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}
fn float_column(values: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}
fn optional_float_column(values: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(values))
}
fn bool_column(values: impl IntoIterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(values.into_iter().map(Some)))
}

// One-row columns of `decision.arrow`, each value possibly null.
fn one_string(value: Option<String>) -> ArrayRef {
    Arc::new(StringArray::from(vec![value]))
}
fn one_int(value: Option<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(vec![value]))
}
fn one_float(value: Option<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(vec![value]))
}
fn one_bool(value: Option<bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(vec![value]))
}

/// Writes one batch of `kind`, laid out (order, types, nullability) by the kind's schema file.
fn write(
    path: &Path,
    kind: ArtifactKind,
    columns: Vec<NamedColumn>,
    prov: &Provenance,
) -> Result<(), OptimizeError> {
    let batch = kind.batch(columns)?;
    write_artifact(path, kind, batch.schema().as_ref().clone(), prov, &[batch])?;
    Ok(())
}

/// Writes every output of a run into `dir`, whose `plots/` folder must exist: the predictions,
/// the frontier, the plots, the report and, last, the decision, whose presence means every
/// other output of the run is in place.
pub fn write_all(
    dir: &Path,
    plan: &Plan,
    prov: &Provenance,
    manifest_label: &str,
) -> Result<(), OptimizeError> {
    write_predictions(&dir.join("predictions.parquet"), plan, prov)?;
    write_frontier(&dir.join("frontier.parquet"), plan, prov)?;
    write_bytes_atomic(
        &dir.join("plots/tradeoff.svg"),
        plot::tradeoff(plan).as_bytes(),
    )?;
    write_bytes_atomic(
        &dir.join("plots/channels.svg"),
        plot::by_channels(plan).as_bytes(),
    )?;
    write_bytes_atomic(
        &dir.join("plots/bytes.svg"),
        plot::by_bytes(plan).as_bytes(),
    )?;
    write_bytes_atomic(
        &dir.join("report.md"),
        report::render(plan, manifest_label).as_bytes(),
    )?;
    write_decision(&dir.join("decision.arrow"), plan, prov)
}

/// Writes `predictions.parquet`: every grid topology with its predictions and measurements.
pub fn write_predictions(path: &Path, plan: &Plan, prov: &Provenance) -> Result<(), OptimizeError> {
    let candidates = &plan.candidates;
    let mut columns = topology_columns(candidates);
    columns.extend(measured_columns(candidates));
    columns.extend(estimate_columns(candidates));
    write(path, ArtifactKind::Predictions, columns, prov)
}

// Columns of `predictions.parquet`, one value per candidate.
fn each_int(candidates: &[Candidate], get: fn(&Candidate) -> i64) -> ArrayRef {
    int_column(candidates.iter().map(get))
}
fn each_float(candidates: &[Candidate], get: fn(&Candidate) -> f64) -> ArrayRef {
    float_column(candidates.iter().map(get))
}
fn each_optional_float(candidates: &[Candidate], get: fn(&Candidate) -> Option<f64>) -> ArrayRef {
    optional_float_column(candidates.iter().map(get))
}
fn each_bool(candidates: &[Candidate], get: fn(&Candidate) -> bool) -> ArrayRef {
    bool_column(candidates.iter().map(get))
}

/// The predictions' columns that identify each topology, its cost, and whether it was sampled
/// or measured.
fn topology_columns(candidates: &[Candidate]) -> Vec<NamedColumn> {
    vec![
        (
            "topology",
            string_column(candidates.iter().map(|c| c.topo.topology.as_str())),
        ),
        (
            "cut",
            string_column(candidates.iter().map(|c| c.topo.layer.as_str())),
        ),
        (
            "depth",
            Arc::new(Int32Array::from_iter_values(
                candidates.iter().map(|c| c.topo.depth),
            )),
        ),
        (
            "cut_channels",
            each_int(candidates, |c| c.topo.cut_channels),
        ),
        ("channels", each_int(candidates, |c| c.topo.channels)),
        ("noise", each_float(candidates, |c| c.topo.noise)),
        ("bits", each_int(candidates, |c| c.topo.bits)),
        ("macs", each_int(candidates, |c| c.topo.macs)),
        (
            "weight_bytes",
            each_int(candidates, |c| c.topo.weight_bytes),
        ),
        ("sampled", each_bool(candidates, |c| c.sampled)),
        ("measured", each_bool(candidates, |c| c.measured.is_some())),
    ]
}

/// The predictions' predicted and measured values (the measured ones null where not measured).
fn measured_columns(candidates: &[Candidate]) -> Vec<NamedColumn> {
    let measured = |get: fn(&Candidate) -> Option<f64>| each_optional_float(candidates, get);
    vec![
        (
            "predicted_val_accuracy",
            each_float(candidates, |c| c.predicted.accuracy),
        ),
        (
            "predicted_psnr",
            each_float(candidates, |c| c.predicted.psnr),
        ),
        (
            "predicted_ssim",
            each_float(candidates, |c| c.predicted.ssim),
        ),
        (
            "predicted_bytes_per_image",
            measured(|c| c.predicted.bytes_per_image),
        ),
        ("predicted_psnr_bound", measured(|c| c.predicted.psnr_bound)),
        (
            "measured_val_accuracy",
            measured(|c| c.measured.map(|m| m.accuracy)),
        ),
        (
            "measured_test_accuracy",
            measured(|c| c.measured_test_accuracy),
        ),
        ("measured_psnr", measured(|c| c.measured.map(|m| m.psnr))),
        ("measured_ssim", measured(|c| c.measured.map(|m| m.ssim))),
        (
            "measured_psnr_mean",
            measured(|c| c.measured_mean.map(|m| m.0)),
        ),
        (
            "measured_ssim_mean",
            measured(|c| c.measured_mean.map(|m| m.1)),
        ),
        (
            "measured_bytes_per_image",
            measured(|c| c.measured.and_then(|m| m.bytes_per_image)),
        ),
        (
            "measured_psnr_bound",
            measured(|c| c.measured.and_then(|m| m.psnr_bound)),
        ),
        (
            "measured_psnr_bound_mean",
            measured(|c| c.measured_bound_mean),
        ),
        (
            "attack_converged",
            Arc::new(BooleanArray::from_iter(
                candidates.iter().map(|c| c.attack_converged),
            )),
        ),
    ]
}

/// The predictions' columns of what the choice used: the estimates, the limits broken, and
/// the frontier and choice flags.
fn estimate_columns(candidates: &[Candidate]) -> Vec<NamedColumn> {
    let violates: Vec<String> = candidates
        .iter()
        .map(|c| {
            if c.violates.is_empty() {
                String::new()
            } else {
                limit_names(&c.violates)
            }
        })
        .collect();
    vec![
        ("accuracy", each_float(candidates, |c| c.estimate.accuracy)),
        ("psnr", each_float(candidates, |c| c.estimate.psnr)),
        ("ssim", each_float(candidates, |c| c.estimate.ssim)),
        (
            "bytes_per_image",
            each_optional_float(candidates, |c| c.estimate.bytes_per_image),
        ),
        (
            "psnr_bound",
            each_optional_float(candidates, |c| c.estimate.psnr_bound),
        ),
        (
            "violates",
            string_column(violates.iter().map(String::as_str)),
        ),
        ("feasible", each_bool(candidates, |c| c.violates.is_empty())),
        ("on_frontier", each_bool(candidates, |c| c.on_frontier)),
        ("chosen", each_bool(candidates, |c| c.chosen)),
    ]
}

/// Writes `frontier.parquet`.
pub fn write_frontier(path: &Path, plan: &Plan, prov: &Provenance) -> Result<(), OptimizeError> {
    let front = plan.frontier();
    let each_int = |get: fn(&Candidate) -> i64| int_column(front.iter().map(|c| get(c)));
    let each_float = |get: fn(&Candidate) -> f64| float_column(front.iter().map(|c| get(c)));
    let each_optional =
        |get: fn(&Candidate) -> Option<f64>| optional_float_column(front.iter().map(|c| get(c)));
    let columns: Vec<NamedColumn> = vec![
        (
            "topology",
            string_column(front.iter().map(|c| c.topo.topology.as_str())),
        ),
        (
            "cut",
            string_column(front.iter().map(|c| c.topo.layer.as_str())),
        ),
        ("channels", each_int(|c| c.topo.channels)),
        ("noise", each_float(|c| c.topo.noise)),
        ("bits", each_int(|c| c.topo.bits)),
        ("macs", each_int(|c| c.topo.macs)),
        ("weight_bytes", each_int(|c| c.topo.weight_bytes)),
        ("accuracy", each_float(|c| c.estimate.accuracy)),
        ("psnr", each_float(|c| c.estimate.psnr)),
        ("ssim", each_float(|c| c.estimate.ssim)),
        (
            "bytes_per_image",
            each_optional(|c| c.estimate.bytes_per_image),
        ),
        ("psnr_bound", each_optional(|c| c.estimate.psnr_bound)),
        (
            "source",
            string_column(
                front
                    .iter()
                    .map(|c| if c.sampled { "measured" } else { "predicted" }),
            ),
        ),
        ("chosen", bool_column(front.iter().map(|c| c.chosen))),
    ];
    write(path, ArtifactKind::Frontier, columns, prov)
}

/// Writes `decision.arrow`, one row.
pub fn write_decision(path: &Path, plan: &Plan, prov: &Provenance) -> Result<(), OptimizeError> {
    let chosen = plan.chosen.map(|i| &plan.candidates[i]);
    let status = if chosen.is_some() {
        "chosen"
    } else {
        "infeasible"
    };
    let mode = match plan.mode {
        OptimizeMode::Model => "model",
        OptimizeMode::Exhaustive => "exhaustive",
    };
    let mut columns: Vec<NamedColumn> = vec![
        ("status", one_string(Some(status.into()))),
        ("mode", one_string(Some(mode.into()))),
    ];
    columns.extend(choice_columns(chosen));
    columns.extend(limit_columns(plan));
    columns.extend(search_columns(plan));
    write(path, ArtifactKind::Decision, columns, prov)
}

/// The decision's columns about the chosen topology (all null when infeasible).
fn choice_columns(chosen: Option<&Candidate>) -> Vec<NamedColumn> {
    let each_float = |get: fn(&Candidate) -> Option<f64>| one_float(chosen.and_then(get));
    vec![
        (
            "topology",
            one_string(chosen.map(|c| c.topo.topology.clone())),
        ),
        ("cut", one_string(chosen.map(|c| c.topo.layer.clone()))),
        ("channels", one_int(chosen.map(|c| c.topo.channels))),
        ("noise", each_float(|c| Some(c.topo.noise))),
        ("bits", one_int(chosen.map(|c| c.topo.bits))),
        ("macs", one_int(chosen.map(|c| c.topo.macs))),
        ("weight_bytes", one_int(chosen.map(|c| c.topo.weight_bytes))),
        (
            "predicted_val_accuracy",
            each_float(|c| Some(c.predicted.accuracy)),
        ),
        ("predicted_psnr", each_float(|c| Some(c.predicted.psnr))),
        ("predicted_ssim", each_float(|c| Some(c.predicted.ssim))),
        (
            "measured_val_accuracy",
            each_float(|c| c.measured.map(|m| m.accuracy)),
        ),
        (
            "measured_test_accuracy",
            each_float(|c| c.measured_test_accuracy),
        ),
        ("measured_psnr", each_float(|c| c.measured.map(|m| m.psnr))),
        ("measured_ssim", each_float(|c| c.measured.map(|m| m.ssim))),
        (
            "measured_psnr_mean",
            each_float(|c| c.measured_mean.map(|m| m.0)),
        ),
        (
            "measured_ssim_mean",
            each_float(|c| c.measured_mean.map(|m| m.1)),
        ),
        (
            "bytes_per_image",
            each_float(|c| c.estimate.bytes_per_image),
        ),
        (
            "measured_bytes_per_image",
            each_float(|c| c.measured.and_then(|m| m.bytes_per_image)),
        ),
        ("psnr_bound", each_float(|c| c.estimate.psnr_bound)),
        (
            "measured_psnr_bound",
            each_float(|c| c.measured.and_then(|m| m.psnr_bound)),
        ),
        (
            "measured_psnr_bound_mean",
            each_float(|c| c.measured_bound_mean),
        ),
        (
            "attack_converged",
            one_bool(chosen.and_then(|c| c.attack_converged)),
        ),
    ]
}

/// The decision's columns about the limits: which the choice meets, their values, the margins,
/// which binds, and the nearest topologies when none meets them.
fn limit_columns(plan: &Plan) -> Vec<NamedColumn> {
    let limits = &plan.limits;
    let nearest = (!plan.nearest.is_empty()).then(|| {
        plan.nearest
            .iter()
            .map(|&i| plan.candidates[i].topo.topology.clone())
            .collect::<Vec<_>>()
            .join(",")
    });
    vec![
        (
            "unconverged",
            one_string(Some(plan.unconverged().join(",")).filter(|v| !v.is_empty())),
        ),
        ("measured_feasible", one_bool(plan.measured_feasible())),
        ("max_psnr", one_float(limits.max_psnr)),
        ("max_ssim", one_float(limits.max_ssim)),
        ("max_macs", one_int(limits.max_macs)),
        ("max_weight_bytes", one_int(limits.max_weight_bytes)),
        ("max_bytes_per_image", one_int(limits.max_bytes_per_image)),
        ("max_psnr_bound", one_float(limits.max_psnr_bound)),
        ("margin_psnr", one_float(Some(plan.margin_psnr))),
        ("margin_ssim", one_float(Some(plan.margin_ssim))),
        ("margin_psnr_bound", one_float(Some(plan.margin_psnr_bound))),
        ("binding", one_string(Some(limit_names(&plan.binding)))),
        ("nearest", one_string(nearest)),
    ]
}

/// The decision's columns about the search: its cost, the exhaustive comparison, what the
/// choice would have been without defences, and the raw-image baseline.
fn search_columns(plan: &Plan) -> Vec<NamedColumn> {
    let undefended = plan.best_undefended().map(|i| &plan.candidates[i]);
    let exhaustive = plan.exhaustive.as_ref();
    let best = exhaustive.and_then(|e| e.best).map(|i| &plan.candidates[i]);
    let trained_exhaustive = exhaustive.map(|_| {
        plan.candidates
            .iter()
            .filter(|c| c.measured.is_some())
            .count() as i64
    });
    vec![
        (
            "grid_topologies",
            one_int(Some(plan.candidates.len() as i64)),
        ),
        (
            "trained_model_based",
            one_int(Some(plan.trained_model_based() as i64)),
        ),
        ("trained_exhaustive", one_int(trained_exhaustive)),
        (
            "best_topology",
            one_string(best.map(|c| c.topo.topology.clone())),
        ),
        (
            "best_val_accuracy",
            one_float(best.and_then(|c| c.measured.map(|m| m.accuracy))),
        ),
        ("regret", one_float(exhaustive.and_then(|e| e.regret))),
        (
            "undefended_topology",
            one_string(undefended.map(|c| c.topo.topology.clone())),
        ),
        (
            "undefended_val_accuracy",
            one_float(undefended.map(|c| c.estimate.accuracy)),
        ),
        (
            "baseline_val_accuracy",
            one_float(plan.baseline.map(|b| b.val_accuracy)),
        ),
        (
            "baseline_test_accuracy",
            one_float(plan.baseline.map(|b| b.test_accuracy)),
        ),
        ("accuracy_cost", one_float(plan.accuracy_cost())),
    ]
}
