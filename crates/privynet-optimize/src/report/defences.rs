//! The report's "Defences" section, written when the grid has any defence: the frontier with
//! and without defences side by side, the choice against the best undefended topology and why
//! it won, what quantisation saves in bytes sent, and the scope of the Fisher-information bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::choose::{Candidate, Limit, Plan};

use super::{bound, optional};

/// Writes the section.
pub(super) fn section(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "## Defences\n");
    grid_line(out, plan);
    side_by_side(out, plan);
    choice(out, plan);
    bytes(out, plan);
    scope(out, plan);
}

/// The defences of the grid, in words.
fn grid_line(out: &mut String, plan: &Plan) {
    let mut defences = Vec::new();
    for c in &plan.candidates {
        let d = c.topo.defence();
        if !defences.contains(&d) {
            defences.push(d);
        }
    }
    let words: Vec<String> = defences
        .iter()
        .map(|d| {
            if d.is_none() {
                "none".to_string()
            } else {
                format!("{} (`{}`)", d.describe(), d.suffix())
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "The grid crosses each cut and channel count with {} defences: {}. A defended topology is its undefended base (same cut, channels, selection and local network) with the defence applied on the user's machine before the features leave; the attackers know the defence and its fitted encoding but not the noise's secret. Each series (a cut under one defence) is fitted on its own.\n",
        defences.len(),
        words.join("; ")
    );
}

/// The most accurate feasible topology that `keep` admits and that leaks at most `psnr` dB.
fn best_at(plan: &Plan, psnr: f64, keep: impl Fn(&Candidate) -> bool) -> Option<&Candidate> {
    plan.best_feasible(|c| c.estimate.psnr <= psnr && keep(c))
        .map(|i| &plan.candidates[i])
}

/// A table cell naming a topology with its accuracy and bytes sent (`-` for none).
fn cell(c: Option<&Candidate>) -> String {
    c.map_or_else(
        || "-".into(),
        |c| {
            format!(
                "{}: {:.4} ({} B/image)",
                c.topo.topology,
                c.estimate.accuracy,
                optional(c.estimate.bytes_per_image, 0)
            )
        },
    )
}

/// The frontier without and with defences, at each privacy level of either.
fn side_by_side(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "### The frontier with and without defences\n");
    let mut levels: Vec<f64> = plan
        .undefended_frontier()
        .iter()
        .chain(plan.frontier().iter())
        .map(|c| c.estimate.psnr)
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    if levels.is_empty() {
        let _ = writeln!(
            out,
            "No topology meets the limits, with or without defences, so there is no frontier.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "At each privacy level of either frontier, the most accurate feasible topology (validation accuracy, bytes sent per image) whose worst-case attack PSNR (the upper end of its interval; predicted plus margin where not measured) is no higher, among the undefended topologies and among all:\n"
    );
    let _ = writeln!(
        out,
        "| worst-case PSNR at most (dB) | without defences | with defences |\n|---|---|---|"
    );
    for psnr in levels {
        let undefended = best_at(plan, psnr, |c| c.topo.defence().is_none());
        let _ = writeln!(
            out,
            "| {psnr:.2} | {} | {} |",
            cell(undefended),
            cell(best_at(plan, psnr, |_| true))
        );
    }
    out.push('\n');
}

/// Limit names with how many of `among` break each, e.g. `psnr (3), bytes_per_image (2)`.
fn tally(among: &[&Candidate]) -> String {
    let mut count: BTreeMap<Limit, usize> = BTreeMap::new();
    for c in among {
        for &l in &c.violates {
            *count.entry(l).or_default() += 1;
        }
    }
    let v: Vec<String> = count
        .iter()
        .map(|(l, n)| format!("{} ({n})", l.name()))
        .collect();
    v.join(", ")
}

/// The choice against the best undefended topology, and why it won.
fn choice(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "### The choice against the best undefended topology\n");
    let undefended = plan.best_undefended().map(|i| &plan.candidates[i]);
    let Some(c) = plan.chosen.map(|i| &plan.candidates[i]) else {
        let _ = writeln!(
            out,
            "No topology meets the limits, defended or not (the nearest are listed under Decision).\n"
        );
        return;
    };
    if c.topo.defence().is_none() {
        let defended = plan
            .best_feasible(|d| !d.topo.defence().is_none())
            .map(|i| &plan.candidates[i]);
        let _ = writeln!(
            out,
            "An undefended topology won: **{}**. No defence made a more accurate topology meet the limits{}.\n",
            c.topo.topology,
            defended.map_or_else(
                || "; no defended topology meets them at all".to_string(),
                |d| format!(
                    "; the best defended one, {}, reaches {:.4}",
                    d.topo.topology, d.estimate.accuracy
                )
            )
        );
        return;
    }
    // The undefended topologies the choice beat on accuracy, and what kept each out.
    let better: Vec<&Candidate> = plan
        .candidates
        .iter()
        .filter(|u| u.topo.defence().is_none() && u.estimate.accuracy > c.estimate.accuracy)
        .collect();
    let kept_out = if better.is_empty() {
        "no undefended topology is more accurate; the choice ranks first on the ties (less leakage, compute, storage, bytes sent)".to_string()
    } else {
        format!(
            "every more accurate undefended topology breaks a limit: {}",
            tally(&better)
        )
    };
    match undefended {
        Some(u) => {
            let _ = writeln!(
                out,
                "**{}** ({}) beat the best undefended topology **{}**: {:.4} against {:.4} validation accuracy ({:+.4}), at {:.2} against {:.2} dB worst-case PSNR, {} against {} bytes per image. Why: {kept_out}.\n",
                c.topo.topology,
                c.topo.defence().describe(),
                u.topo.topology,
                c.estimate.accuracy,
                u.estimate.accuracy,
                c.estimate.accuracy - u.estimate.accuracy,
                c.estimate.psnr,
                u.estimate.psnr,
                optional(c.estimate.bytes_per_image, 0),
                optional(u.estimate.bytes_per_image, 0)
            );
        }
        None => {
            let all: Vec<&Candidate> = plan
                .candidates
                .iter()
                .filter(|u| u.topo.defence().is_none())
                .collect();
            let _ = writeln!(
                out,
                "No undefended topology meets the limits (they break {}); the defence ({}) makes **{}** meet them, at {:.4} validation accuracy.\n",
                tally(&all),
                c.topo.defence().describe(),
                c.topo.topology,
                c.estimate.accuracy
            );
        }
    }
}

/// Bytes sent per image: per defence, how its measured topologies compare with their
/// undefended bases (same cut and channel count).
fn bytes(out: &mut String, plan: &Plan) {
    let measured = |c: &Candidate| c.measured.and_then(|m| m.bytes_per_image);
    let mut ratios: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for c in plan
        .candidates
        .iter()
        .filter(|c| !c.topo.defence().is_none())
    {
        let base = plan.candidates.iter().find(|u| {
            u.topo.defence().is_none()
                && u.topo.cut == c.topo.cut
                && u.topo.channels == c.topo.channels
        });
        if let (Some(b), Some(u)) = (measured(c), base.and_then(measured)) {
            ratios
                .entry(c.topo.defence().suffix())
                .or_default()
                .push(b / u);
        }
    }
    let _ = writeln!(out, "### Bytes sent\n");
    if ratios.is_empty() {
        let _ = writeln!(
            out,
            "No defended topology was measured beside its undefended base, so there is no measured comparison of bytes sent yet (the grid table gives each topology's figure).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Measured bytes per image of each defended topology against its undefended base (same cut and channels), the mean ratio per defence; the grid table gives each topology's figure:\n"
    );
    let _ = writeln!(
        out,
        "| defence | pairs measured | bytes sent, x the undefended |\n|---|---|---|"
    );
    for (suffix, r) in &ratios {
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let _ = writeln!(out, "| `{suffix}` | {} | {mean:.3} |", r.len());
    }
    out.push('\n');
}

/// What the Fisher-information bound says, and what it does not.
fn scope(out: &mut String, plan: &Plan) {
    let _ = writeln!(out, "### The PSNR bound and its scope\n");
    let _ = writeln!(
        out,
        "For topologies with noise, `psnr_bound` is 10 log10 of the diagonal Fisher information (dFIL, Maeng et al. 2023) of the features about the input pixels, per image, averaged over the images like the measured PSNR: the PSNR **no unbiased attacker can exceed on average**. Quantisation after the noise cannot add information, so the bound covers noise and quantisation together. It is not a ceiling on every attacker: attackers with a learned prior (such as the inverse network here) are biased and may exceed it, and the measured attacks are the other side of the picture, what attacks actually achieved. Without noise the features are a deterministic function of the image and there is no bound (`none (no noise)` in the tables)."
    );
    if let Some(limit) = plan.limits.max_psnr_bound {
        let without = plan
            .candidates
            .iter()
            .filter(|c| c.estimate.psnr_bound.is_none())
            .count();
        let _ = writeln!(
            out,
            "\nThe limit `max_psnr_bound` ({limit} dB) is tested against the upper end of the bound's 95% interval (plus the fit's margin where predicted); it excludes the {without} topologies with no bound, as a topology without noise offers no such guarantee."
        );
    }
    let chosen = plan.chosen.map(|i| &plan.candidates[i]);
    if let Some(c) = chosen {
        let _ = writeln!(
            out,
            "\nThe choice's bound: {}.",
            match c.estimate.psnr_bound {
                Some(_) => format!("{} dB", bound(c, c.estimate.psnr_bound)),
                None => bound(c, None),
            }
        );
    }
    out.push('\n');
}
