//! `report.md`: the decision in words, predicted against measured, how well the models fit,
//! the frontier, with defences in the grid what they gain (`defences`), the whole grid, and in
//! exhaustive mode the regret of the model-based choice. Accuracies are validation accuracies,
//! except the columns and lines that say test: those report the measured topologies and the
//! baseline comparison, and no choice reads them.

mod defences;

use std::fmt::Write as _;

use privynet_core::manifest::OptimizeMode;

use crate::choose::{Candidate, Metrics, Plan, limit_names};

fn limits_line(plan: &Plan) -> String {
    let l = &plan.limits;
    let mut v = Vec::new();
    if let Some(x) = l.max_psnr {
        v.push(format!("PSNR <= {x} dB"));
    }
    if let Some(x) = l.max_ssim {
        v.push(format!("SSIM <= {x}"));
    }
    if let Some(x) = l.max_macs {
        v.push(format!("local MACs/image <= {x}"));
    }
    if let Some(x) = l.max_weight_bytes {
        v.push(format!("local weights <= {x} bytes"));
    }
    if let Some(x) = l.max_bytes_per_image {
        v.push(format!("bytes sent per image <= {x}"));
    }
    if let Some(x) = l.max_psnr_bound {
        v.push(format!(
            "Fisher-information PSNR bound <= {x} dB (a topology without noise has no bound and fails it)"
        ));
    }
    if v.is_empty() {
        "none (the most accurate topology wins)".into()
    } else {
        v.join("; ")
    }
}

/// A value with `digits` decimals, or `-` when there is none.
fn optional(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// A PSNR bound, or why there is none: `none (no noise)` without noise, `-` when not measured.
fn bound(c: &Candidate, v: Option<f64>) -> String {
    match v {
        Some(b) => format!("{b:.2}"),
        None if c.topo.noise == 0.0 => "none (no noise)".into(),
        None => "-".into(),
    }
}

/// The PSNR bound a grid row shows: the measured upper end with its mean, else the estimate
/// (prediction plus margin).
fn grid_bound(c: &Candidate) -> String {
    match (c.measured.and_then(|m| m.psnr_bound), c.measured_bound_mean) {
        (Some(hi), Some(mean)) => format!("{hi:.2} ({mean:.2})"),
        (Some(hi), None) => format!("{hi:.2}"),
        _ if c.estimate.psnr_bound.is_some() => format!("{} pred", bound(c, c.estimate.psnr_bound)),
        _ => bound(c, None),
    }
}

/// The bytes per image a row shows: measured when measured, else the prediction.
fn grid_bytes(c: &Candidate) -> String {
    match c.measured.and_then(|m| m.bytes_per_image) {
        Some(b) => format!("{b:.0}"),
        None => c
            .predicted
            .bytes_per_image
            .map_or_else(|| "-".into(), |b| format!("{b:.0} pred")),
    }
}

fn grid_row(c: &Candidate) -> String {
    let m = c.measured;
    format!(
        "| {} | {} | {} | {} | {} | {:.4} | {} | {} | {:.2} | {} | {:.3} | {} | {} | {} | {} |{}|",
        c.topo.topology,
        c.topo.channels,
        c.topo.macs,
        c.topo.weight_bytes,
        if c.sampled {
            "sampled"
        } else if m.is_some() {
            "held out"
        } else {
            "predicted"
        },
        c.predicted.accuracy,
        optional(m.map(|m| m.accuracy), 4),
        optional(c.measured_test_accuracy, 4),
        c.predicted.psnr,
        match (m, c.measured_mean) {
            (Some(m), Some(mean)) => format!(
                "{:.2} ({:.2}){}",
                m.psnr,
                mean.0,
                if c.attack_converged == Some(false) {
                    " cap!"
                } else {
                    ""
                }
            ),
            _ => "-".into(),
        },
        c.predicted.ssim,
        optional(m.map(|m| m.ssim), 3),
        grid_bytes(c),
        grid_bound(c),
        if c.violates.is_empty() {
            "yes".to_string()
        } else {
            format!("no ({})", limit_names(&c.violates))
        },
        match (c.chosen, c.on_frontier) {
            (true, _) => " **chosen** ",
            (false, true) => " frontier ",
            _ => " ",
        }
    )
}

fn stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mae = v.iter().map(|x| x.abs()).sum::<f64>() / v.len() as f64;
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    format!("mean {mae:.4}, max {max:.4} (n = {})", v.len())
}

/// Renders the report.
pub fn render(plan: &Plan, manifest: &str) -> String {
    let mut out = String::new();
    header(&mut out, plan, manifest);
    let _ = writeln!(out, "## Decision\n");
    match plan.chosen.map(|i| &plan.candidates[i]) {
        Some(c) => decision(&mut out, plan, c),
        None => infeasible(&mut out, plan),
    }
    search_cost(&mut out, plan);
    models(&mut out, plan);
    frontier(&mut out, plan);
    if plan.has_defences() {
        defences::section(&mut out, plan);
    }
    convergence(&mut out, plan);
    grid(&mut out, plan);
    out
}

/// The title, and what the limits and the accuracies mean.
fn header(out: &mut String, plan: &Plan, manifest: &str) {
    let _ = writeln!(out, "# PrivyNet topology decision\n");
    let _ = writeln!(
        out,
        "Manifest `{manifest}`, mode `{}`. Limits: {}. Privacy loss is the worst case over the enabled attacker modes and families (the learned inverse network and the optimisation attack through the local network), and limits are tested against the upper end of its 95% interval over the attacked images (plus the fit's margin for predicted topologies), so a limit holds against the attacker's uncertainty and not only its mean. Accuracy is validation accuracy, what the models are fitted to and the choice is made on; test accuracy is reported for the measured topologies and never used to choose. Bytes per image are what the features take in Parquet, what crosses to the cloud.\n",
        match plan.mode {
            OptimizeMode::Model => "model",
            OptimizeMode::Exhaustive => "exhaustive",
        },
        limits_line(plan)
    );
}

/// The chosen topology, the limit that binds, and its predicted, estimated and measured values.
fn decision(out: &mut String, plan: &Plan, c: &Candidate) {
    let _ = writeln!(
        out,
        "Chosen: **{}** (cut `{}`, {} of {} channels; {} MACs/image, {} bytes of local weights; defence: {}; {} bytes sent per image{}).\n",
        c.topo.topology,
        c.topo.layer,
        c.topo.channels,
        c.topo.cut_channels,
        c.topo.macs,
        c.topo.weight_bytes,
        c.topo.defence().describe(),
        optional(c.estimate.bytes_per_image, 0),
        match c.estimate.psnr_bound {
            Some(b) => format!("; Fisher-information PSNR bound {b:.2} dB"),
            None if c.topo.noise == 0.0 => "; no PSNR bound (no noise)".into(),
            None => "; PSNR bound not measured".into(),
        }
    );
    let _ = writeln!(
        out,
        "Binding limit: {}.\n",
        if plan.binding.is_empty() {
            "none: the most accurate topology of the grid meets every limit".to_string()
        } else {
            format!(
                "{} (it excludes the topologies that would be more accurate)",
                limit_names(&plan.binding)
            )
        }
    );
    let _ = writeln!(
        out,
        "| | val accuracy | test accuracy | PSNR (dB) | SSIM |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| predicted | {:.4} | - | {:.2} | {:.3} |",
        c.predicted.accuracy, c.predicted.psnr, c.predicted.ssim
    );
    let _ = writeln!(
        out,
        "| used for the choice{} | {:.4} | not used | {:.2} | {:.3} |",
        if c.sampled {
            " (measured)"
        } else {
            " (predicted + margin)"
        },
        c.estimate.accuracy,
        c.estimate.psnr,
        c.estimate.ssim
    );
    match c.measured {
        Some(m) => measured(out, plan, c, &m),
        None => {
            let _ = writeln!(
                out,
                "| measured | not yet | | |\n\nThe runner evaluates the chosen topology next and this report is written again with its measured values.\n"
            );
        }
    }
}

/// The chosen topology's measured values: the interval the limit is tested against, what the
/// split costs against the raw-image baseline, and whether the measurement meets the limits.
fn measured(out: &mut String, plan: &Plan, c: &Candidate, m: &Metrics) {
    let _ = writeln!(
        out,
        "| measured: 95% upper end | {:.4} | {} | {:.2} | {:.3} |",
        m.accuracy,
        optional(c.measured_test_accuracy, 4),
        m.psnr,
        m.ssim
    );
    if let Some((p, s)) = c.measured_mean {
        let _ = writeln!(out, "| measured: mean | | | {p:.2} | {s:.3} |\n");
    }
    let _ = writeln!(
        out,
        "The privacy limit is tested against the upper end ({:.2} dB), not the mean ({}); {}.\n",
        m.psnr,
        c.measured_mean
            .map_or("-".into(), |x| format!("{:.2} dB", x.0)),
        if c.measured_mean
            .is_some_and(|x| plan.limits.max_psnr.is_some_and(|l| x.0 <= l && m.psnr > l))
        {
            "the mean alone would pass the limit, its interval does not"
        } else {
            "the upper end is what binds"
        }
    );
    if let (Some(b), Some(cost)) = (plan.baseline, plan.accuracy_cost()) {
        let _ = writeln!(
            out,
            "The same cloud network trained on the raw images (no split, nothing private) reaches {:.4} test accuracy ({:.4} validation): on the test split, which no choice was made on, the split costs {cost:.4} in accuracy ({:.1}% of it).\n",
            b.test_accuracy,
            b.val_accuracy,
            100.0 * cost / b.test_accuracy
        );
    }
    if plan.measured_feasible() == Some(false) {
        let _ = writeln!(
            out,
            "**Warning:** measured for real, the chosen topology breaks a limit the models predicted it would meet. Raise `optimize.margin_scale`, sample more channel counts, or use `mode: exhaustive`.\n"
        );
    } else {
        let _ = writeln!(out, "Measured for real, it meets every limit.\n");
    }
}

/// No feasible topology: the binding limit and the nearest topologies.
fn infeasible(out: &mut String, plan: &Plan) {
    let _ = writeln!(
        out,
        "**No topology meets the limits.** Binding: {}.\n\nNearest topologies (smallest total relative excess over the limits):\n",
        limit_names(&plan.binding)
    );
    for &i in &plan.nearest {
        let c = &plan.candidates[i];
        let _ = writeln!(
            out,
            "- {}: accuracy {:.4}, PSNR {:.2} dB, SSIM {:.3}, {} MACs, {} bytes, {} bytes sent per image, PSNR bound {}; breaks {}",
            c.topo.topology,
            c.estimate.accuracy,
            c.estimate.psnr,
            c.estimate.ssim,
            c.topo.macs,
            c.topo.weight_bytes,
            optional(c.estimate.bytes_per_image, 0),
            bound(c, c.estimate.psnr_bound),
            limit_names(&c.violates)
        );
    }
    out.push('\n');
}

/// Topologies each search trained, and in exhaustive mode the regret of the model-based choice.
fn search_cost(out: &mut String, plan: &Plan) {
    let sampled = plan.candidates.iter().filter(|c| c.sampled).count();
    let _ = writeln!(out, "## Search cost\n");
    let _ = writeln!(
        out,
        "Grid: {} topologies. The model-based search trained {} ({} sampled{}).",
        plan.candidates.len(),
        plan.trained_model_based(),
        sampled,
        if plan.trained_model_based() > sampled {
            " plus the choice"
        } else {
            ""
        }
    );
    if let Some(ex) = &plan.exhaustive {
        let trained = plan
            .candidates
            .iter()
            .filter(|c| c.measured.is_some())
            .count();
        let _ = writeln!(out, "The exhaustive search trained {trained}.");
        match (ex.best.map(|i| &plan.candidates[i]), ex.regret) {
            (Some(b), Some(reg)) => {
                let _ = writeln!(
                    out,
                    "Best feasible topology of the measured grid: **{}** (validation accuracy {:.4}). Regret of the model-based choice: **{:.4}** validation accuracy.",
                    b.topo.topology,
                    b.measured.map_or(f64::NAN, |m| m.accuracy),
                    reg
                );
            }
            (Some(b), None) => {
                let _ = writeln!(
                    out,
                    "Best feasible topology of the measured grid: **{}**; the model-based search found none, so its regret is that topology's whole accuracy.",
                    b.topo.topology
                );
            }
            (None, _) => {
                let _ = writeln!(out, "No topology of the measured grid meets the limits.");
            }
        }
    }
    out.push('\n');
}

/// How the models fit: the margins, the held-out errors, borrowed slopes and left-out cuts.
fn models(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "## Models\n");
    let _ = writeln!(
        out,
        "Per series (a cut under one defence), a non-decreasing (isotonic) fit to the sampled points, interpolated linearly in ln D; bytes per image grow in proportion to D from the series' sampled points. Safety margin on predicted privacy loss: {:.3} dB PSNR, {:.4} SSIM ({} x the largest leave-one-out error).\n",
        plan.margin_psnr,
        plan.margin_ssim,
        if plan.fit.loo_psnr.is_empty() {
            "no interior sample, so no held-out error: 0".to_string()
        } else {
            "margin_scale".to_string()
        }
    );
    let _ = writeln!(
        out,
        "| error (measured - predicted) | accuracy | PSNR (dB) | SSIM |\n|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| leave-one-out, sampled | {} | {} | {} |",
        stats(&plan.fit.loo_accuracy),
        stats(&plan.fit.loo_psnr),
        stats(&plan.fit.loo_ssim)
    );
    if !plan.fit.holdout.is_empty() {
        let metric = |k: usize| -> Vec<f64> {
            plan.fit
                .holdout
                .iter()
                .map(|h| [h.1, h.2, h.3][k])
                .collect()
        };
        let _ = writeln!(
            out,
            "| measured but not sampled | {} | {} | {} |",
            stats(&metric(0)),
            stats(&metric(1)),
            stats(&metric(2))
        );
    }
    out.push('\n');
    if plan
        .candidates
        .iter()
        .any(|c| c.predicted.psnr_bound.is_some())
    {
        let _ = writeln!(
            out,
            "PSNR bound fits (noisy series), leave-one-out error: {}; safety margin on predicted bounds: {:.3} dB.\n",
            stats(&plan.fit.loo_psnr_bound),
            plan.margin_psnr_bound
        );
    }
    if !plan.fit.borrowed.is_empty() {
        let _ = writeln!(
            out,
            "Series with one sample, whose slope in ln D was borrowed from the other series: {}.\n",
            plan.fit.borrowed.join(", ")
        );
    }
    if !plan.uncharacterized.is_empty() {
        let _ = writeln!(
            out,
            "Series of the sweep with no characterized topology (left out): {}.\n",
            plan.uncharacterized.join(", ")
        );
    }
}

/// The frontier's topologies, least leaky first.
fn frontier(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "## Frontier\n");
    let front = plan.frontier();
    if front.is_empty() {
        let _ = writeln!(out, "No feasible topology, so no frontier.\n");
        return;
    }
    let _ = writeln!(
        out,
        "Feasible topologies no other feasible topology beats on both accuracy and privacy loss, least leaky first:\n"
    );
    let _ = writeln!(
        out,
        "| topology | val accuracy | PSNR (dB) | SSIM | bytes/image | PSNR bound (dB) | source |\n|---|---|---|---|---|---|---|"
    );
    for c in front {
        let _ = writeln!(
            out,
            "| {}{} | {:.4} | {:.2} | {:.3} | {} | {} | {} |",
            c.topo.topology,
            if c.chosen { " (chosen)" } else { "" },
            c.estimate.accuracy,
            c.estimate.psnr,
            c.estimate.ssim,
            optional(c.estimate.bytes_per_image, 0),
            bound(c, c.estimate.psnr_bound),
            if c.sampled { "measured" } else { "predicted" }
        );
    }
    out.push('\n');
}

/// A warning naming the measured topologies whose attacker did not converge (none: nothing).
fn convergence(out: &mut String, plan: &Plan) {
    let unconverged = plan.unconverged();
    if !unconverged.is_empty() {
        let _ = writeln!(
            out,
            "## Attacker convergence\n\n**Privacy loss may be understated** for {}: the attacker reached `attack.max_epochs` while its held-out PSNR was still rising (marked `cap!` below). Raise `attack.max_epochs` and run again.\n",
            unconverged.join(", ")
        );
    }
}

/// Every topology of the grid, one row each, and the plots.
fn grid(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "## Every topology of the grid\n");
    let _ = writeln!(
        out,
        "Measured PSNR, SSIM and PSNR bound are the upper ends of their 95% intervals (the means in brackets); predicted ones are the fit to those upper ends (`pred`: predicted, the bound with its margin). Bytes per image are measured where measured, else predicted.\n"
    );
    let _ = writeln!(
        out,
        "| topology | D | MACs | weight bytes | status | val acc pred | val acc meas | test acc | PSNR pred | PSNR meas | SSIM pred | SSIM meas | bytes/image | PSNR bound | feasible | |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for c in &plan.candidates {
        let _ = writeln!(out, "{}", grid_row(c));
    }
    let _ = writeln!(
        out,
        "\n![accuracy against privacy loss](plots/tradeoff.svg)\n\n![accuracy and PSNR against channels](plots/channels.svg)\n\n![accuracy against bytes sent per image](plots/bytes.svg)"
    );
}
