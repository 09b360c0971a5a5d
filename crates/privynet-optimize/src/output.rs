//! The optimizer's table artifacts, written with arrow-rs through the core's schema-checked,
//! atomic writer: `predictions.parquet` (the whole grid), `frontier.parquet` and `decision.arrow`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use privynet_core::io::write_artifact;
use privynet_core::manifest::OptimizeMode;
use privynet_core::{ArtifactKind, Provenance};

use crate::OptimizeError;
use crate::choose::{Candidate, Plan, limit_names};

fn utf8<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}
fn i64s(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}
fn f64s(v: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(v))
}
fn opt_f64s(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(v))
}
fn bools(v: impl IntoIterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(v.into_iter().map(Some)))
}

fn write(
    path: &Path,
    kind: ArtifactKind,
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
    prov: &Provenance,
) -> Result<(), OptimizeError> {
    let schema = Schema::new(fields);
    let batch = RecordBatch::try_new(Arc::new(schema.clone()), columns)?;
    write_artifact(path, kind, schema, prov, &[batch])?;
    Ok(())
}

/// Writes `predictions.parquet`: every grid topology with its predictions and measurements.
pub fn write_predictions(path: &Path, plan: &Plan, prov: &Provenance) -> Result<(), OptimizeError> {
    let c = &plan.candidates;
    let f = |name: &str, ty: DataType, nullable: bool| Field::new(name, ty, nullable);
    let fields = vec![
        f("topology", DataType::Utf8, false),
        f("cut", DataType::Utf8, false),
        f("depth", DataType::Int32, false),
        f("cut_channels", DataType::Int64, false),
        f("channels", DataType::Int64, false),
        f("macs", DataType::Int64, false),
        f("weight_bytes", DataType::Int64, false),
        f("sampled", DataType::Boolean, false),
        f("measured", DataType::Boolean, false),
        f("predicted_val_accuracy", DataType::Float64, false),
        f("predicted_psnr", DataType::Float64, false),
        f("predicted_ssim", DataType::Float64, false),
        f("measured_val_accuracy", DataType::Float64, true),
        f("measured_test_accuracy", DataType::Float64, true),
        f("measured_psnr", DataType::Float64, true),
        f("measured_ssim", DataType::Float64, true),
        f("measured_psnr_mean", DataType::Float64, true),
        f("measured_ssim_mean", DataType::Float64, true),
        f("attack_converged", DataType::Boolean, true),
        f("accuracy", DataType::Float64, false),
        f("psnr", DataType::Float64, false),
        f("ssim", DataType::Float64, false),
        f("violates", DataType::Utf8, false),
        f("feasible", DataType::Boolean, false),
        f("on_frontier", DataType::Boolean, false),
        f("chosen", DataType::Boolean, false),
    ];
    let violates: Vec<String> = c
        .iter()
        .map(|x| {
            if x.violates.is_empty() {
                String::new()
            } else {
                limit_names(&x.violates)
            }
        })
        .collect();
    let columns = vec![
        utf8(c.iter().map(|x| x.topo.topology.as_str())),
        utf8(c.iter().map(|x| x.topo.layer.as_str())),
        Arc::new(Int32Array::from_iter_values(c.iter().map(|x| x.topo.depth))) as ArrayRef,
        i64s(c.iter().map(|x| x.topo.cut_channels)),
        i64s(c.iter().map(|x| x.topo.channels)),
        i64s(c.iter().map(|x| x.topo.macs)),
        i64s(c.iter().map(|x| x.topo.weight_bytes)),
        bools(c.iter().map(|x| x.sampled)),
        bools(c.iter().map(|x| x.measured.is_some())),
        f64s(c.iter().map(|x| x.predicted.accuracy)),
        f64s(c.iter().map(|x| x.predicted.psnr)),
        f64s(c.iter().map(|x| x.predicted.ssim)),
        opt_f64s(c.iter().map(|x| x.measured.map(|m| m.accuracy))),
        opt_f64s(c.iter().map(|x| x.measured_test_accuracy)),
        opt_f64s(c.iter().map(|x| x.measured.map(|m| m.psnr))),
        opt_f64s(c.iter().map(|x| x.measured.map(|m| m.ssim))),
        opt_f64s(c.iter().map(|x| x.measured_mean.map(|m| m.0))),
        opt_f64s(c.iter().map(|x| x.measured_mean.map(|m| m.1))),
        Arc::new(BooleanArray::from_iter(
            c.iter().map(|x| x.attack_converged),
        )) as ArrayRef,
        f64s(c.iter().map(|x| x.estimate.accuracy)),
        f64s(c.iter().map(|x| x.estimate.psnr)),
        f64s(c.iter().map(|x| x.estimate.ssim)),
        utf8(violates.iter().map(String::as_str)),
        bools(c.iter().map(|x| x.violates.is_empty())),
        bools(c.iter().map(|x| x.on_frontier)),
        bools(c.iter().map(|x| x.chosen)),
    ];
    write(path, ArtifactKind::Predictions, fields, columns, prov)
}

/// The frontier's topologies, least leaky first.
pub fn frontier(plan: &Plan) -> Vec<&Candidate> {
    let mut v: Vec<&Candidate> = plan.candidates.iter().filter(|c| c.on_frontier).collect();
    v.sort_by(|a, b| {
        a.estimate
            .psnr
            .total_cmp(&b.estimate.psnr)
            .then(a.estimate.ssim.total_cmp(&b.estimate.ssim))
    });
    v
}

/// Writes `frontier.parquet`.
pub fn write_frontier(path: &Path, plan: &Plan, prov: &Provenance) -> Result<(), OptimizeError> {
    let c = frontier(plan);
    let f = |name: &str, ty: DataType| Field::new(name, ty, false);
    let fields = vec![
        f("topology", DataType::Utf8),
        f("cut", DataType::Utf8),
        f("channels", DataType::Int64),
        f("macs", DataType::Int64),
        f("weight_bytes", DataType::Int64),
        f("accuracy", DataType::Float64),
        f("psnr", DataType::Float64),
        f("ssim", DataType::Float64),
        f("source", DataType::Utf8),
        f("chosen", DataType::Boolean),
    ];
    let columns = vec![
        utf8(c.iter().map(|x| x.topo.topology.as_str())),
        utf8(c.iter().map(|x| x.topo.layer.as_str())),
        i64s(c.iter().map(|x| x.topo.channels)),
        i64s(c.iter().map(|x| x.topo.macs)),
        i64s(c.iter().map(|x| x.topo.weight_bytes)),
        f64s(c.iter().map(|x| x.estimate.accuracy)),
        f64s(c.iter().map(|x| x.estimate.psnr)),
        f64s(c.iter().map(|x| x.estimate.ssim)),
        utf8(
            c.iter()
                .map(|x| if x.sampled { "measured" } else { "predicted" }),
        ),
        bools(c.iter().map(|x| x.chosen)),
    ];
    write(path, ArtifactKind::Frontier, fields, columns, prov)
}

/// Writes `decision.arrow`, one row.
pub fn write_decision(path: &Path, plan: &Plan, prov: &Provenance) -> Result<(), OptimizeError> {
    let chosen = plan.chosen.map(|i| &plan.candidates[i]);
    let l = &plan.limits;
    let nf = |name: &str, ty: DataType| Field::new(name, ty, true);
    let f = |name: &str, ty: DataType| Field::new(name, ty, false);
    let fields = vec![
        f("status", DataType::Utf8),
        f("mode", DataType::Utf8),
        nf("topology", DataType::Utf8),
        nf("cut", DataType::Utf8),
        nf("channels", DataType::Int64),
        nf("macs", DataType::Int64),
        nf("weight_bytes", DataType::Int64),
        nf("predicted_val_accuracy", DataType::Float64),
        nf("predicted_psnr", DataType::Float64),
        nf("predicted_ssim", DataType::Float64),
        nf("measured_val_accuracy", DataType::Float64),
        nf("measured_test_accuracy", DataType::Float64),
        nf("measured_psnr", DataType::Float64),
        nf("measured_ssim", DataType::Float64),
        nf("measured_psnr_mean", DataType::Float64),
        nf("measured_ssim_mean", DataType::Float64),
        nf("attack_converged", DataType::Boolean),
        nf("unconverged", DataType::Utf8),
        nf("measured_feasible", DataType::Boolean),
        nf("max_psnr", DataType::Float64),
        nf("max_ssim", DataType::Float64),
        nf("max_macs", DataType::Int64),
        nf("max_weight_bytes", DataType::Int64),
        f("margin_psnr", DataType::Float64),
        f("margin_ssim", DataType::Float64),
        f("binding", DataType::Utf8),
        nf("nearest", DataType::Utf8),
        f("grid_topologies", DataType::Int64),
        f("trained_model_based", DataType::Int64),
        nf("trained_exhaustive", DataType::Int64),
        nf("best_topology", DataType::Utf8),
        nf("best_val_accuracy", DataType::Float64),
        nf("regret", DataType::Float64),
        nf("baseline_val_accuracy", DataType::Float64),
        nf("baseline_test_accuracy", DataType::Float64),
        nf("accuracy_cost", DataType::Float64),
    ];
    let s1 = |v: Option<String>| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let i1 = |v: Option<i64>| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
    let f1 = |v: Option<f64>| -> ArrayRef { Arc::new(Float64Array::from(vec![v])) };
    let nearest = (!plan.nearest.is_empty()).then(|| {
        plan.nearest
            .iter()
            .map(|&i| plan.candidates[i].topo.topology.clone())
            .collect::<Vec<_>>()
            .join(",")
    });
    let ex = plan.exhaustive.as_ref();
    let best = ex.and_then(|e| e.best).map(|i| &plan.candidates[i]);
    let mode = match plan.mode {
        OptimizeMode::Model => "model",
        OptimizeMode::Exhaustive => "exhaustive",
    };
    let columns = vec![
        s1(Some(
            if chosen.is_some() {
                "chosen"
            } else {
                "infeasible"
            }
            .into(),
        )),
        s1(Some(mode.into())),
        s1(chosen.map(|c| c.topo.topology.clone())),
        s1(chosen.map(|c| c.topo.layer.clone())),
        i1(chosen.map(|c| c.topo.channels)),
        i1(chosen.map(|c| c.topo.macs)),
        i1(chosen.map(|c| c.topo.weight_bytes)),
        f1(chosen.map(|c| c.predicted.accuracy)),
        f1(chosen.map(|c| c.predicted.psnr)),
        f1(chosen.map(|c| c.predicted.ssim)),
        f1(chosen.and_then(|c| c.measured.map(|m| m.accuracy))),
        f1(chosen.and_then(|c| c.measured_test_accuracy)),
        f1(chosen.and_then(|c| c.measured.map(|m| m.psnr))),
        f1(chosen.and_then(|c| c.measured.map(|m| m.ssim))),
        f1(chosen.and_then(|c| c.measured_mean.map(|m| m.0))),
        f1(chosen.and_then(|c| c.measured_mean.map(|m| m.1))),
        Arc::new(BooleanArray::from(vec![
            chosen.and_then(|c| c.attack_converged),
        ])),
        s1(Some(plan.unconverged().join(",")).filter(|v| !v.is_empty())),
        Arc::new(BooleanArray::from(vec![plan.measured_feasible()])),
        f1(l.max_psnr),
        f1(l.max_ssim),
        i1(l.max_macs),
        i1(l.max_weight_bytes),
        f1(Some(plan.margin_psnr)),
        f1(Some(plan.margin_ssim)),
        s1(Some(limit_names(&plan.binding))),
        s1(nearest),
        i1(Some(plan.candidates.len() as i64)),
        i1(Some(plan.trained_model_based() as i64)),
        i1(ex.map(|_| {
            plan.candidates
                .iter()
                .filter(|c| c.measured.is_some())
                .count() as i64
        })),
        s1(best.map(|c| c.topo.topology.clone())),
        f1(best.and_then(|c| c.measured.map(|m| m.accuracy))),
        f1(ex.and_then(|e| e.regret)),
        f1(plan.baseline.map(|b| b.val_accuracy)),
        f1(plan.baseline.map(|b| b.test_accuracy)),
        f1(plan.accuracy_cost()),
    ];
    write(path, ArtifactKind::Decision, fields, columns, prov)
}
