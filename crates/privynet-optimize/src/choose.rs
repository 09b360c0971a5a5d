//! The choice: fit per-series models (a series is a cut under one defence) to the sampled
//! topologies, predict the whole grid, keep the topologies whose local cost, bytes sent and
//! privacy loss (plus a safety margin for predictions) meet the limits, and choose the most
//! accurate; name the limit that binds, the Pareto frontier (with and without defences), and in
//! exhaustive mode the regret against the best feasible topology of the measured grid.
//!
//! Accuracy here is always validation accuracy: the fits, the choice, the frontier and the
//! regret use nothing else. Test accuracy rides along with each measured topology, outside
//! [`Metrics`], for the report and the artifacts only, so it cannot influence any decision.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use privynet_core::defence::Defence;
use privynet_core::manifest::{Limits, OptimizeMode, SamplePoint, sample_channels};
use serde::Serialize;

use crate::OptimizeError;
use crate::fit::{Curve, Point, interpolate, loo_residuals};

/// Accuracy, privacy loss (worst case over the attacker modes), bytes sent and the leakage
/// bound of one topology: everything a choice is made on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Validation accuracy (never test accuracy).
    pub accuracy: f64,
    pub psnr: f64,
    pub ssim: f64,
    /// Bytes per image sent to the cloud (None: the table has no figure for it).
    pub bytes_per_image: Option<f64>,
    /// The Fisher-information PSNR bound, the upper end of its 95% interval like `psnr` (None:
    /// no noise, so no bound).
    pub psnr_bound: Option<f64>,
}

/// What identifies a topology and its local cost (exact, not predicted: it depends on the cut).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topo {
    pub topology: String,
    pub cut: String,
    /// The cut's friendly name where it has one (`fire3`), else the tensor name.
    pub layer: String,
    pub depth: i32,
    pub cut_channels: i64,
    pub channels: i64,
    pub macs: i64,
    pub weight_bytes: i64,
    /// The defence: noise as a fraction of each channel's std (0: none), and bits per value
    /// sent (32: float).
    pub noise: f64,
    pub bits: i64,
}

impl Topo {
    /// The topology's defence.
    pub fn defence(&self) -> Defence {
        Defence {
            noise: self.noise,
            bits: u8::try_from(self.bits).unwrap_or(0),
        }
    }

    /// Its series' name: the cut and the defence (`fire3`, `fire3-n0.25-q8`).
    pub fn series(&self) -> String {
        format!("{}{}", self.layer, self.defence().suffix())
    }
}

/// One row of the characterization table.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub topo: Topo,
    /// Validation accuracy, and the upper ends of the 95% intervals of the worst-case mean
    /// PSNR and SSIM: what the fits, the margins and the limits work on, so that a limit holds
    /// against the attacker's uncertainty as well as its mean.
    pub metrics: Metrics,
    /// Test accuracy, reported beside the choice and never used to make it.
    pub test_accuracy: f64,
    /// The worst-case mean PSNR and SSIM themselves (the centres of those intervals).
    pub privacy_mean: (f64, f64),
    /// The mean PSNR bound over the images (`metrics.psnr_bound` is its interval's upper end).
    pub psnr_bound_mean: Option<f64>,
    /// Whether every attacker mode converged (false: one hit `attack.max_epochs`).
    pub attack_converged: bool,
}

/// A limit of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Limit {
    Psnr,
    Ssim,
    Macs,
    WeightBytes,
    BytesPerImage,
    PsnrBound,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Psnr => "psnr",
            Limit::Ssim => "ssim",
            Limit::Macs => "macs",
            Limit::WeightBytes => "weight_bytes",
            Limit::BytesPerImage => "bytes_per_image",
            Limit::PsnrBound => "psnr_bound",
        }
    }
}

/// Joins limit names with commas (`none` for an empty list).
pub fn limit_names(limits: &[Limit]) -> String {
    if limits.is_empty() {
        "none".into()
    } else {
        limits
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One topology of the grid, as the optimizer sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub topo: Topo,
    /// One of the points the models were fitted to.
    pub sampled: bool,
    pub predicted: Metrics,
    pub measured: Option<Metrics>,
    /// The measured test accuracy, for the report only.
    pub measured_test_accuracy: Option<f64>,
    /// The measured worst-case mean PSNR and SSIM (`measured` holds their upper ends).
    pub measured_mean: Option<(f64, f64)>,
    /// The measured mean PSNR bound (`measured` holds its upper end).
    pub measured_bound_mean: Option<f64>,
    /// Whether the measured topology's attackers all converged.
    pub attack_converged: Option<bool>,
    /// What the choice uses: the measurement of a sampled point, else the prediction with the
    /// privacy margins added. A measured point that was not sampled still uses its prediction,
    /// so that evaluating the choice for real never changes the choice.
    pub estimate: Metrics,
    pub violates: Vec<Limit>,
    pub on_frontier: bool,
    pub chosen: bool,
}

/// How well the models fit, for the report and the margins.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FitQuality {
    /// Leave-one-out residuals (measured minus predicted) of interior sampled points.
    pub loo_accuracy: Vec<f64>,
    pub loo_psnr: Vec<f64>,
    pub loo_ssim: Vec<f64>,
    pub loo_psnr_bound: Vec<f64>,
    /// Series with a single sampled point, whose slope was borrowed from the other series.
    pub borrowed: Vec<String>,
    /// Prediction errors (measured minus predicted) at measured topologies that were not
    /// sampled: the test of the models. (topology, accuracy, psnr, ssim)
    pub holdout: Vec<(String, f64, f64, f64)>,
}

/// The exhaustive comparison: the best topology whose measured values meet every limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exhaustive {
    pub best: Option<usize>,
    pub regret: Option<f64>,
}

/// Everything the optimizer decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub mode: OptimizeMode,
    pub limits: Limits,
    pub candidates: Vec<Candidate>,
    pub chosen: Option<usize>,
    pub binding: Vec<Limit>,
    /// Infeasible: the closest topologies, nearest first.
    pub nearest: Vec<usize>,
    pub margin_psnr: f64,
    pub margin_ssim: f64,
    pub margin_psnr_bound: f64,
    pub fit: FitQuality,
    /// Series of the grid (cut, or cut with a defence) that have no characterized row (not
    /// predicted).
    pub uncharacterized: Vec<String>,
    pub exhaustive: Option<Exhaustive>,
    /// The same cloud network trained on the raw images (no split), when the run has one:
    /// what the split costs is measured against it.
    pub baseline: Option<Baseline>,
}

/// The raw-image baseline's final accuracy on both splits, so each comparison is like with
/// like: validation beside the (validation) estimates in plots, test for what the split costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Baseline {
    pub val_accuracy: f64,
    pub test_accuracy: f64,
}

impl Plan {
    /// The frontier's topologies, least leaky first (by estimated PSNR, then SSIM). It lives
    /// with the choice: the writers, the plots and the report all draw this one list.
    pub fn frontier(&self) -> Vec<&Candidate> {
        let mut v: Vec<&Candidate> = self.candidates.iter().filter(|c| c.on_frontier).collect();
        v.sort_by(|a, b| by_leakage(a, b));
        v
    }

    /// The frontier the grid would have without its defences: the same Pareto rule over the
    /// feasible undefended topologies only, least leaky first.
    pub fn undefended_frontier(&self) -> Vec<&Candidate> {
        let mut v: Vec<&Candidate> = pareto(&self.candidates, &self.limits, |c| {
            c.topo.defence().is_none()
        })
        .into_iter()
        .map(|i| &self.candidates[i])
        .collect();
        v.sort_by(|a, b| by_leakage(a, b));
        v
    }

    /// Whether any topology of the grid has a defence.
    pub fn has_defences(&self) -> bool {
        self.candidates.iter().any(|c| !c.topo.defence().is_none())
    }

    /// The topology the choice would have been without defences: the first feasible undefended
    /// topology in preference order.
    pub fn best_undefended(&self) -> Option<usize> {
        self.best_feasible(|c| c.topo.defence().is_none())
    }

    /// The first feasible topology `keep` admits, in the choice's preference order.
    pub fn best_feasible(&self, keep: impl Fn(&Candidate) -> bool) -> Option<usize> {
        (0..self.candidates.len())
            .filter(|&i| {
                let c = &self.candidates[i];
                c.violates.is_empty() && keep(c)
            })
            .min_by(|&a, &b| better(&self.candidates[a], &self.candidates[b], &self.limits))
    }

    /// Topologies the model-based search trains: the samples, plus the choice if not sampled.
    pub fn trained_model_based(&self) -> usize {
        let sampled = self.candidates.iter().filter(|c| c.sampled).count();
        let extra = usize::from(self.chosen.is_some_and(|i| !self.candidates[i].sampled));
        sampled + extra
    }

    /// Measured topologies whose attacker hit `attack.max_epochs` before it converged.
    pub fn unconverged(&self) -> Vec<String> {
        self.candidates
            .iter()
            .filter(|c| c.attack_converged == Some(false))
            .map(|c| c.topo.topology.clone())
            .collect()
    }

    /// Raw-image baseline test accuracy minus the chosen topology's measured test accuracy:
    /// what the split costs, on the split that only reports (None without a baseline or until
    /// the choice is measured).
    pub fn accuracy_cost(&self) -> Option<f64> {
        let t = self.candidates[self.chosen?].measured_test_accuracy?;
        Some(self.baseline?.test_accuracy - t)
    }

    /// Whether the chosen topology's measured values meet every limit (None until measured).
    pub fn measured_feasible(&self) -> Option<bool> {
        let c = &self.candidates[self.chosen?];
        c.measured
            .map(|m| violations(&c.topo, &m, &self.limits).is_empty())
    }
}

/// Least leaky first: by estimated PSNR, then SSIM.
fn by_leakage(a: &Candidate, b: &Candidate) -> Ordering {
    a.estimate
        .psnr
        .total_cmp(&b.estimate.psnr)
        .then(a.estimate.ssim.total_cmp(&b.estimate.ssim))
}

/// One series' grid: a cut (the label of its topologies) under one defence, and its channel
/// counts. Each series is fitted on its own, as a cut without defences is.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesGrid {
    pub cut: String,
    pub defence: Defence,
    pub channels: Vec<i64>,
}

impl SeriesGrid {
    /// Whether `t` belongs to this series.
    fn holds(&self, t: &Topo) -> bool {
        t.cut == self.cut && t.defence() == self.defence
    }

    /// The series' name: the cut and the defence's suffix.
    pub fn name(&self) -> String {
        format!("{}{}", self.cut, self.defence.suffix())
    }

    /// The series in words, for messages: the cut, and its defence when it has one.
    fn describe(&self) -> String {
        if self.defence.is_none() {
            format!("cut `{}`", self.cut)
        } else {
            format!("cut `{}` with {}", self.cut, self.defence.describe())
        }
    }
}

/// The limits `t` with `m` breaks. A value equal to its limit meets it (`max_psnr: 16` allows
/// 16 dB). Safety margins are already in a predicted topology's estimate. A topology with no
/// bytes figure cannot show it meets a bytes limit, and one with no bound (no noise) cannot
/// meet a bound limit: both break them.
fn violations(t: &Topo, m: &Metrics, l: &Limits) -> Vec<Limit> {
    let mut v = Vec::new();
    if l.max_psnr.is_some_and(|x| m.psnr > x) {
        v.push(Limit::Psnr);
    }
    if l.max_ssim.is_some_and(|x| m.ssim > x) {
        v.push(Limit::Ssim);
    }
    if l.max_macs.is_some_and(|x| t.macs > x) {
        v.push(Limit::Macs);
    }
    if l.max_weight_bytes.is_some_and(|x| t.weight_bytes > x) {
        v.push(Limit::WeightBytes);
    }
    if l.max_bytes_per_image
        .is_some_and(|x| m.bytes_per_image.is_none_or(|b| b > x as f64))
    {
        v.push(Limit::BytesPerImage);
    }
    if l.max_psnr_bound
        .is_some_and(|x| m.psnr_bound.is_none_or(|b| b > x))
    {
        v.push(Limit::PsnrBound);
    }
    v
}

/// How far a topology is from meeting the limits: the sum of its relative excesses. A missing
/// bytes figure or bound under its limit is infinitely far: no change of D makes it appear.
fn excess(t: &Topo, m: &Metrics, l: &Limits) -> f64 {
    let rel =
        |v: f64, lim: Option<f64>| lim.map_or(0.0, |x| ((v - x) / x.abs().max(1e-12)).max(0.0));
    let rel_or_never = |v: Option<f64>, lim: Option<f64>| match (v, lim) {
        (_, None) => 0.0,
        (None, Some(_)) => f64::INFINITY,
        (Some(v), lim) => rel(v, lim),
    };
    rel(m.psnr, l.max_psnr)
        + rel(m.ssim, l.max_ssim)
        + rel(t.macs as f64, l.max_macs.map(|x| x as f64))
        + rel(t.weight_bytes as f64, l.max_weight_bytes.map(|x| x as f64))
        + rel_or_never(m.bytes_per_image, l.max_bytes_per_image.map(|x| x as f64))
        + rel_or_never(m.psnr_bound, l.max_psnr_bound)
}

/// The privacy metric the frontier and ties use: PSNR unless only an SSIM limit is set.
fn privacy(m: &Metrics, l: &Limits) -> f64 {
    if l.max_psnr.is_none() && l.max_ssim.is_some() {
        m.ssim
    } else {
        m.psnr
    }
}

/// The preference order: higher accuracy; on a tie, lower privacy loss, less compute, less
/// storage, fewer bytes sent (unknown last), fewer channels, then the name (so the choice never
/// depends on row order).
fn better(a: &Candidate, b: &Candidate, l: &Limits) -> Ordering {
    let bytes = |c: &Candidate| c.estimate.bytes_per_image.unwrap_or(f64::INFINITY);
    b.estimate
        .accuracy
        .total_cmp(&a.estimate.accuracy)
        .then(privacy(&a.estimate, l).total_cmp(&privacy(&b.estimate, l)))
        .then(a.topo.macs.cmp(&b.topo.macs))
        .then(a.topo.weight_bytes.cmp(&b.topo.weight_bytes))
        .then(bytes(a).total_cmp(&bytes(b)))
        .then(a.topo.channels.cmp(&b.topo.channels))
        .then(a.topo.topology.cmp(&b.topo.topology))
}

/// The label of `layer`'s topology with `d` channels under `defence` (as the runner names it).
fn label(layer: &str, d: i64, defence: &Defence) -> String {
    privynet_core::topology::label(layer, d, *defence)
}

/// Fits, predicts, and chooses. `grid` lists each series' channel counts; `rows` are the
/// measured topologies (the samples, and any others that were evaluated).
pub fn optimize(
    rows: &[Measurement],
    grid: &[SeriesGrid],
    sample: &[SamplePoint],
    limits: &Limits,
    margin_scale: f64,
    mode: OptimizeMode,
) -> Result<Plan, OptimizeError> {
    if rows.is_empty() {
        return Err(OptimizeError::Input(
            "the characterization table has no rows: nothing to fit".into(),
        ));
    }
    let (samples, uncharacterized) = sample_series(rows, grid, sample)?;
    let (fits, mut fit) = fit_series(&samples, grid);
    let largest_error = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let margins = Margins {
        psnr: margin_scale * largest_error(&fit.loo_psnr),
        ssim: margin_scale * largest_error(&fit.loo_ssim),
        psnr_bound: margin_scale * largest_error(&fit.loo_psnr_bound),
    };
    let mut candidates = predict_grid(grid, &samples, &fits, margins, limits);
    fit.holdout = candidates.iter().filter_map(holdout_error).collect();
    // Rows the grid does not hold (a topology measured outside the sweep) are ignored.
    let (chosen, binding, nearest) = choose(&mut candidates, limits);
    mark_frontier(&mut candidates, limits);
    let exhaustive =
        (mode == OptimizeMode::Exhaustive).then(|| exhaustive(&candidates, chosen, limits));
    Ok(Plan {
        mode,
        limits: *limits,
        candidates,
        chosen,
        binding,
        nearest,
        margin_psnr: margins.psnr,
        margin_ssim: margins.ssim,
        margin_psnr_bound: margins.psnr_bound,
        fit,
        uncharacterized,
        exhaustive,
        baseline: None,
    })
}

/// Indices into [`SeriesSamples::points`]: the values a series' curves are fitted to.
const ACCURACY: usize = 0;
const PSNR: usize = 1;
const SSIM: usize = 2;
const BOUND: usize = 3;

/// One characterized series of the grid: its rows, its sampled channel counts, the sampled
/// points of accuracy, PSNR, SSIM and the PSNR bound the curves are fitted to (no bound points
/// without noise), and the bytes sent per channel at the sampled points that have a figure.
struct SeriesSamples<'r> {
    rows: Vec<&'r Measurement>,
    sampled_channels: Vec<i64>,
    points: [Vec<Point>; 4],
    bytes_per_channel: Vec<Point>,
}

/// The characterized series by their index in the grid, in a fixed order for the fits.
type SampledSeries<'r> = BTreeMap<usize, SeriesSamples<'r>>;

/// The privacy margins added to predicted PSNR, SSIM and PSNR bound.
#[derive(Debug, Clone, Copy)]
struct Margins {
    psnr: f64,
    ssim: f64,
    psnr_bound: f64,
}

/// Each characterized series' samples, and the series of the grid with no row. A series none
/// of whose sampled channel counts was measured is an error.
fn sample_series<'r>(
    rows: &'r [Measurement],
    grid: &[SeriesGrid],
    sample: &[SamplePoint],
) -> Result<(SampledSeries<'r>, Vec<String>), OptimizeError> {
    let mut samples = BTreeMap::new();
    let mut uncharacterized = Vec::new();
    for (k, g) in grid.iter().enumerate() {
        let series_rows: Vec<&Measurement> = rows.iter().filter(|r| g.holds(&r.topo)).collect();
        let Some(first) = series_rows.first() else {
            uncharacterized.push(g.name());
            continue;
        };
        let sampled_channels = sample_channels(&g.channels, first.topo.cut_channels, sample);
        let sampled: Vec<&Measurement> = series_rows
            .iter()
            .copied()
            .filter(|r| sampled_channels.contains(&r.topo.channels))
            .collect();
        if sampled.is_empty() {
            let have: Vec<String> = series_rows
                .iter()
                .map(|r| r.topo.topology.clone())
                .collect();
            return Err(OptimizeError::Input(format!(
                "{}: none of its sampled channel counts {sampled_channels:?} is in the characterization table (it has {}); run the sampled topologies first",
                g.describe(),
                have.join(", ")
            )));
        }
        let series = SeriesSamples {
            points: sampled_points(&sampled, &g.defence),
            bytes_per_channel: sampled
                .iter()
                .filter_map(|r| {
                    let bytes = r.metrics.bytes_per_image?;
                    Some(Point {
                        channels: r.topo.channels,
                        value: bytes / r.topo.channels.max(1) as f64,
                    })
                })
                .collect(),
            rows: series_rows,
            sampled_channels,
        };
        samples.insert(k, series);
    }
    if samples.is_empty() {
        return Err(OptimizeError::Input(format!(
            "no cut of the grid ({}) has a row in the characterization table",
            uncharacterized.join(", ")
        )));
    }
    Ok((samples, uncharacterized))
}

/// The sampled points of accuracy, PSNR, SSIM and (with noise, where measured) the PSNR bound.
fn sampled_points(sampled: &[&Measurement], defence: &Defence) -> [Vec<Point>; 4] {
    let each = |get: fn(&Metrics) -> Option<f64>| -> Vec<Point> {
        sampled
            .iter()
            .filter_map(|r| {
                get(&r.metrics).map(|value| Point {
                    channels: r.topo.channels,
                    value,
                })
            })
            .collect()
    };
    [
        each(|m| Some(m.accuracy)),
        each(|m| Some(m.psnr)),
        each(|m| Some(m.ssim)),
        // Without noise there is no bound to fit, whatever the table says.
        if defence.noise > 0.0 {
            each(|m| m.psnr_bound)
        } else {
            Vec::new()
        },
    ]
}

/// The slope to lend to series with a single sample, for the values `which` (an index into
/// [`SeriesSamples::points`]): the mean span slope of the series that have one.
fn lent_slope(samples: &SampledSeries<'_>, which: usize) -> f64 {
    let slopes: Vec<f64> = samples
        .values()
        .filter_map(|s| Curve::fit(&s.points[which], 0.0).and_then(|c| c.span_slope()))
        .collect();
    if slopes.is_empty() {
        0.0
    } else {
        slopes.iter().sum::<f64>() / slopes.len() as f64
    }
}

/// One series' fitted curves: accuracy, PSNR and SSIM, and the PSNR bound where the series has
/// noise and measured bounds.
struct SeriesFit {
    metrics: [Curve; 3],
    bound: Option<Curve>,
}

/// Per series, its curves, and how well they fit (all but the held-out errors, which need the
/// predictions).
fn fit_series(
    samples: &SampledSeries<'_>,
    grid: &[SeriesGrid],
) -> (BTreeMap<usize, SeriesFit>, FitQuality) {
    let lent = [ACCURACY, PSNR, SSIM, BOUND].map(|w| lent_slope(samples, w));
    let mut fit = FitQuality::default();
    let mut fits = BTreeMap::new();
    for (&k, s) in samples {
        let curve = |w: usize| Curve::fit(&s.points[w], lent[w]);
        let metrics =
            [ACCURACY, PSNR, SSIM].map(|w| curve(w).expect("a sampled series has points"));
        if metrics[ACCURACY].single() {
            fit.borrowed.push(grid[k].name());
        }
        fit.loo_accuracy.extend(loo_residuals(&s.points[ACCURACY]));
        fit.loo_psnr.extend(loo_residuals(&s.points[PSNR]));
        fit.loo_ssim.extend(loo_residuals(&s.points[SSIM]));
        fit.loo_psnr_bound.extend(loo_residuals(&s.points[BOUND]));
        let bound = curve(BOUND);
        fits.insert(k, SeriesFit { metrics, bound });
    }
    (fits, fit)
}

/// Every topology of the grid's characterized series, predicted, with the estimate the choice
/// uses and the limits it breaks.
fn predict_grid(
    grid: &[SeriesGrid],
    samples: &SampledSeries<'_>,
    fits: &BTreeMap<usize, SeriesFit>,
    margins: Margins,
    limits: &Limits,
) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for (k, g) in grid.iter().enumerate() {
        let (Some(fit), Some(series)) = (fits.get(&k), samples.get(&k)) else {
            continue;
        };
        for &d in &g.channels {
            candidates.push(candidate(series, fit, d, margins, limits));
        }
    }
    candidates
}

/// The predictions of a series' fits at `d` channels. Bytes sent grow in proportion to D: the
/// bytes per channel of the sampled points, interpolated in ln D between them.
fn predict(series: &SeriesSamples<'_>, fit: &SeriesFit, d: i64) -> Metrics {
    let [acc, psnr, ssim] = &fit.metrics;
    Metrics {
        accuracy: acc.predict(d).clamp(0.0, 1.0),
        psnr: psnr.predict(d),
        ssim: ssim.predict(d).min(1.0),
        bytes_per_image: interpolate(&series.bytes_per_channel, d).map(|b| b * d as f64),
        psnr_bound: fit.bound.as_ref().map(|c| c.predict(d)),
    }
}

/// The topology of `series` with `d` channels.
fn candidate(
    series: &SeriesSamples<'_>,
    fit: &SeriesFit,
    d: i64,
    margins: Margins,
    limits: &Limits,
) -> Candidate {
    let first = series.rows[0];
    let row = series.rows.iter().find(|r| r.topo.channels == d);
    let topo = Topo {
        topology: row.map_or_else(
            || label(&first.topo.layer, d, &first.topo.defence()),
            |r| r.topo.topology.clone(),
        ),
        channels: d,
        ..first.topo.clone()
    };
    let predicted = predict(series, fit, d);
    let measured = row.map(|r| r.metrics);
    let sampled = series.sampled_channels.contains(&d) && measured.is_some();
    let estimate = match (sampled, measured) {
        (true, Some(m)) => m,
        _ => Metrics {
            psnr: predicted.psnr + margins.psnr,
            ssim: predicted.ssim + margins.ssim,
            psnr_bound: predicted.psnr_bound.map(|b| b + margins.psnr_bound),
            ..predicted
        },
    };
    let violates = violations(&topo, &estimate, limits);
    Candidate {
        topo,
        sampled,
        predicted,
        measured,
        measured_test_accuracy: row.map(|r| r.test_accuracy),
        measured_mean: row.map(|r| r.privacy_mean),
        measured_bound_mean: row.and_then(|r| r.psnr_bound_mean),
        attack_converged: row.map(|r| r.attack_converged),
        estimate,
        violates,
        on_frontier: false,
        chosen: false,
    }
}

/// The prediction error (measured minus predicted) of a measured topology that was not
/// sampled: the test of the models.
fn holdout_error(c: &Candidate) -> Option<(String, f64, f64, f64)> {
    match (c.sampled, c.measured) {
        (false, Some(m)) => Some((
            c.topo.topology.clone(),
            m.accuracy - c.predicted.accuracy,
            m.psnr - c.predicted.psnr,
            m.ssim - c.predicted.ssim,
        )),
        _ => None,
    }
}

/// The choice: the first feasible candidate in preference order, marked chosen. Also the limits
/// that bind (those that exclude the topology that would win without limits, or when none is
/// feasible, those the nearest breaks) and, when none is feasible, the nearest topologies.
fn choose(
    candidates: &mut [Candidate],
    limits: &Limits,
) -> (Option<usize>, Vec<Limit>, Vec<usize>) {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| better(&candidates[a], &candidates[b], limits));
    let chosen = order
        .iter()
        .copied()
        .find(|&i| candidates[i].violates.is_empty());
    let mut binding = Vec::new();
    let mut nearest = Vec::new();
    match chosen {
        Some(ci) => {
            candidates[ci].chosen = true;
            if let Some(&top) = order.first()
                && top != ci
            {
                binding = candidates[top].violates.clone();
            }
        }
        None => {
            nearest = nearest_topologies(candidates, limits);
            if let Some(&n) = nearest.first() {
                binding = candidates[n].violates.clone();
            }
        }
    }
    (chosen, binding, nearest)
}

/// The three topologies closest to meeting the limits (smallest total relative excess), nearest
/// first.
fn nearest_topologies(candidates: &[Candidate], limits: &Limits) -> Vec<usize> {
    let mut by_excess: Vec<usize> = (0..candidates.len()).collect();
    by_excess.sort_by(|&a, &b| {
        let ea = excess(&candidates[a].topo, &candidates[a].estimate, limits);
        let eb = excess(&candidates[b].topo, &candidates[b].estimate, limits);
        ea.total_cmp(&eb)
            .then(better(&candidates[a], &candidates[b], limits))
    });
    by_excess.into_iter().take(3).collect()
}

/// The Pareto frontier among the feasible candidates `keep` admits: by privacy loss, each that
/// is more accurate than every less leaky one.
fn pareto(
    candidates: &[Candidate],
    limits: &Limits,
    keep: impl Fn(&Candidate) -> bool,
) -> Vec<usize> {
    let mut feasible: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].violates.is_empty() && keep(&candidates[i]))
        .collect();
    feasible.sort_by(|&a, &b| {
        privacy(&candidates[a].estimate, limits)
            .total_cmp(&privacy(&candidates[b].estimate, limits))
            .then(better(&candidates[a], &candidates[b], limits))
    });
    let mut best = f64::NEG_INFINITY;
    let mut front = Vec::new();
    for i in feasible {
        if candidates[i].estimate.accuracy > best {
            best = candidates[i].estimate.accuracy;
            front.push(i);
        }
    }
    front
}

/// Marks the Pareto frontier among all feasible topologies, defended or not.
fn mark_frontier(candidates: &mut [Candidate], limits: &Limits) {
    for i in pareto(candidates, limits, |_| true) {
        candidates[i].on_frontier = true;
    }
}

/// The exhaustive comparison: the most accurate topology whose measured values meet every
/// limit, and the regret of the model-based choice against it.
fn exhaustive(candidates: &[Candidate], chosen: Option<usize>, limits: &Limits) -> Exhaustive {
    let truly_feasible = |c: &Candidate| {
        c.measured
            .is_some_and(|m| violations(&c.topo, &m, limits).is_empty())
    };
    let best = (0..candidates.len())
        .filter(|&i| truly_feasible(&candidates[i]))
        .max_by(|&a, &b| {
            let (ma, mb) = (
                candidates[a].measured.unwrap(),
                candidates[b].measured.unwrap(),
            );
            ma.accuracy
                .total_cmp(&mb.accuracy)
                .then(privacy(&mb, limits).total_cmp(&privacy(&ma, limits)))
                .then(
                    candidates[b]
                        .topo
                        .topology
                        .cmp(&candidates[a].topo.topology),
                )
        });
    let regret = match (best, chosen) {
        (Some(b), Some(c)) => candidates[c]
            .measured
            .map(|m| candidates[b].measured.unwrap().accuracy - m.accuracy),
        _ => None,
    };
    Exhaustive { best, regret }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privynet_core::manifest::SampleRule;

    const SAMPLE: [SamplePoint; 3] = [
        SamplePoint::Rule(SampleRule::Smallest),
        SamplePoint::Rule(SampleRule::Middle),
        SamplePoint::Rule(SampleRule::Largest),
    ];

    /// A synthetic table: accuracy and PSNR both linear in ln D, shallower cuts leak more and
    /// compute less.
    fn table(cuts: &[(&str, i64, i64)], ds: &[i64]) -> (Vec<Measurement>, Vec<SeriesGrid>) {
        let mut rows = Vec::new();
        let mut grid = Vec::new();
        for (k, &(cut, c, macs)) in cuts.iter().enumerate() {
            let ds: Vec<i64> = ds.iter().copied().filter(|&d| d <= c).collect();
            for &d in &ds {
                let x = (d as f64).ln();
                rows.push(Measurement {
                    topo: Topo {
                        topology: format!("{cut}-d{d}"),
                        cut: cut.into(),
                        layer: cut.into(),
                        depth: k as i32 + 1,
                        cut_channels: c,
                        channels: d,
                        macs,
                        weight_bytes: macs / 10,
                        noise: 0.0,
                        bits: 32,
                    },
                    metrics: Metrics {
                        accuracy: 0.4 + 0.05 * x - 0.02 * k as f64,
                        psnr: 12.0 + 1.5 * x - 1.0 * k as f64,
                        ssim: 0.2 + 0.08 * x - 0.05 * k as f64,
                        bytes_per_image: Some(4.0 * d as f64 * 49.0),
                        psnr_bound: None,
                    },
                    // Falls with D: a choice made on test accuracy would differ.
                    test_accuracy: 0.6 - 0.05 * x + 0.02 * k as f64,
                    privacy_mean: (11.5 + 1.5 * x - 1.0 * k as f64, 0.18 + 0.08 * x),
                    psnr_bound_mean: None,
                    attack_converged: true,
                });
            }
            grid.push(SeriesGrid {
                cut: cut.into(),
                defence: Defence::default(),
                channels: ds,
            });
        }
        (rows, grid)
    }

    fn sampled_only(rows: &[Measurement], grid: &[SeriesGrid]) -> Vec<Measurement> {
        rows.iter()
            .filter(|r| {
                let g = grid.iter().find(|g| g.holds(&r.topo)).unwrap();
                sample_channels(&g.channels, r.topo.cut_channels, &SAMPLE)
                    .contains(&r.topo.channels)
            })
            .cloned()
            .collect()
    }

    const CUTS: [(&str, i64, i64); 3] = [("a", 64, 100), ("b", 128, 200), ("c", 256, 300)];
    const DS: [i64; 7] = [4, 8, 16, 32, 64, 128, 256];

    #[test]
    fn known_optimum_from_samples_matches_the_exhaustive_grid() {
        let (rows, grid) = table(&CUTS, &DS);
        let limits = Limits {
            max_psnr: Some(16.5),
            ..Limits::default()
        };
        // psnr = 12 + 1.5 ln D - k <= 16.5: a: D <= 20 (16), b: D <= 39 (32), c: D <= 76 (64).
        // accuracy = 0.4 + 0.05 ln D - 0.02 k: a-d16 0.539, b-d32 0.553, c-d64 0.568: c-d64,
        // which is not one of c's samples (4, 32, 256).
        let sampled = sampled_only(&rows, &grid);
        let plan = optimize(&sampled, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        let c = &plan.candidates[plan.chosen.unwrap()];
        assert_eq!(c.topo.topology, "c-d64");
        assert!(!c.sampled && c.measured.is_none());
        assert!(plan.margin_psnr < 1e-9, "exact linear data fits exactly");
        assert_eq!(plan.binding, vec![Limit::Psnr]);
        assert_eq!(plan.trained_model_based(), 10);
        // Every candidate, predicted or measured, carries its own channel count.
        for c in &plan.candidates {
            assert_eq!(
                c.topo.topology,
                format!("{}-d{}", c.topo.cut, c.topo.channels)
            );
        }
        // The exhaustive run over the whole grid agrees: no regret.
        let plan = optimize(
            &rows,
            &grid,
            &SAMPLE,
            &limits,
            1.0,
            OptimizeMode::Exhaustive,
        )
        .unwrap();
        let ex = plan.exhaustive.as_ref().unwrap();
        assert_eq!(plan.candidates[ex.best.unwrap()].topo.topology, "c-d64");
        assert!(ex.regret.unwrap().abs() < 1e-12);
        assert_eq!(plan.candidates.len(), 5 + 6 + 7);
        assert!(
            plan.fit
                .holdout
                .iter()
                .all(|h| h.1.abs() < 1e-9 && h.2.abs() < 1e-9)
        );
        // Frontier: feasible and Pareto-optimal, sorted by leakage, accuracy rising.
        let front: Vec<&Candidate> = plan.candidates.iter().filter(|c| c.on_frontier).collect();
        assert!(front.iter().any(|c| c.chosen));
        for c in &plan.candidates {
            if !c.violates.is_empty() {
                assert!(!c.on_frontier);
                continue;
            }
            let dominated = plan.candidates.iter().any(|o| {
                o.violates.is_empty()
                    && o.estimate.accuracy > c.estimate.accuracy
                    && o.estimate.psnr <= c.estimate.psnr
            });
            assert_eq!(c.on_frontier, !dominated, "{}", c.topo.topology);
        }
    }

    /// The plan with every test accuracy blanked: what must not depend on them.
    fn without_test(mut plan: Plan) -> Plan {
        for c in &mut plan.candidates {
            c.measured_test_accuracy = None;
        }
        plan
    }

    #[test]
    fn shuffled_test_accuracies_leave_the_choice_unchanged() {
        let (rows, grid) = table(&CUTS, &DS);
        let limits = Limits {
            max_psnr: Some(16.5),
            ..Limits::default()
        };
        for (mode, rows) in [
            (OptimizeMode::Model, sampled_only(&rows, &grid)),
            (OptimizeMode::Exhaustive, rows.clone()),
        ] {
            let plan = optimize(&rows, &grid, &SAMPLE, &limits, 1.0, mode).unwrap();
            let chosen = plan.chosen.unwrap();
            // The test accuracies fall with D, so choosing on them would pick another topology.
            let by_test = rows
                .iter()
                .filter(|r| r.metrics.psnr <= 16.5)
                .max_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy))
                .unwrap();
            assert_ne!(by_test.topo.topology, plan.candidates[chosen].topo.topology);
            // Each measured topology carries its own test accuracy into the plan.
            for c in &plan.candidates {
                let row = rows.iter().find(|r| r.topo.topology == c.topo.topology);
                assert_eq!(c.measured_test_accuracy, row.map(|r| r.test_accuracy));
            }
            // Every rotation of the test-accuracy column, its reverse, and extreme values.
            let n = rows.len();
            let column: Vec<f64> = rows.iter().map(|r| r.test_accuracy).collect();
            let mut variants: Vec<Vec<f64>> = (1..n)
                .map(|k| (0..n).map(|i| column[(i + k) % n]).collect())
                .collect();
            variants.push(column.iter().rev().copied().collect());
            variants.push((0..n).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect());
            for v in variants {
                let shuffled: Vec<Measurement> = rows
                    .iter()
                    .zip(&v)
                    .map(|(r, &t)| Measurement {
                        test_accuracy: t,
                        ..r.clone()
                    })
                    .collect();
                let again = optimize(&shuffled, &grid, &SAMPLE, &limits, 1.0, mode).unwrap();
                assert_ne!(again.candidates, plan.candidates, "the column did change");
                assert_eq!(without_test(again), without_test(plan.clone()));
            }
        }
    }

    #[test]
    fn compute_and_storage_limits_bind() {
        let (rows, grid) = table(&CUTS, &DS);
        let limits = Limits {
            max_macs: Some(200),
            ..Limits::default()
        };
        let plan = optimize(&rows, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        // Without limits c-d256 wins; MACs exclude cut c, so b's widest wins.
        assert_eq!(
            plan.candidates[plan.chosen.unwrap()].topo.topology,
            "b-d128"
        );
        assert_eq!(plan.binding, vec![Limit::Macs]);
        let limits = Limits {
            max_weight_bytes: Some(10),
            ..Limits::default()
        };
        let plan = optimize(&rows, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        assert_eq!(plan.candidates[plan.chosen.unwrap()].topo.topology, "a-d64");
        assert_eq!(plan.binding, vec![Limit::WeightBytes]);
        let plan = optimize(
            &rows,
            &grid,
            &SAMPLE,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap();
        assert_eq!(
            plan.candidates[plan.chosen.unwrap()].topo.topology,
            "c-d256"
        );
        assert!(plan.binding.is_empty());
    }

    #[test]
    fn a_topology_exactly_at_its_limits_meets_them() {
        let (rows, grid) = table(&CUTS, &DS);
        let a4 = rows.iter().find(|r| r.topo.topology == "a-d4").unwrap();
        // Every limit set to a-d4's own measured value: it is feasible, and the only one.
        let limits = Limits {
            max_psnr: Some(a4.metrics.psnr),
            max_ssim: Some(a4.metrics.ssim),
            max_macs: Some(a4.topo.macs),
            max_weight_bytes: Some(a4.topo.weight_bytes),
            max_bytes_per_image: a4.metrics.bytes_per_image.map(|b| b as i64),
            ..Limits::default()
        };
        let sampled = sampled_only(&rows, &grid);
        let plan = optimize(&sampled, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        let c = plan
            .candidates
            .iter()
            .find(|c| c.topo.topology == "a-d4")
            .unwrap();
        assert!(c.violates.is_empty(), "{:?}", c.violates);
        assert_eq!(plan.candidates[plan.chosen.unwrap()].topo.topology, "a-d4");
    }

    #[test]
    fn the_ssim_limit_is_feasible_binding_or_infeasible() {
        let (rows, grid) = table(&CUTS, &DS);
        let sampled = sampled_only(&rows, &grid);
        let plan_for = |max_ssim: f64| {
            let limits = Limits {
                max_ssim: Some(max_ssim),
                ..Limits::default()
            };
            optimize(&sampled, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap()
        };
        // Loose: every topology meets it, the choice is the unconstrained one.
        let plan = plan_for(0.9);
        assert_eq!(
            plan.candidates[plan.chosen.unwrap()].topo.topology,
            "c-d256"
        );
        assert!(plan.binding.is_empty());
        // Binding: ssim = 0.2 + 0.08 ln D - 0.05 k <= 0.4 keeps a-d8, b-d16, c-d32; accuracy
        // 0.504, 0.519, 0.533: c-d32, and the SSIM limit is what bound it.
        let plan = plan_for(0.4);
        let c = &plan.candidates[plan.chosen.unwrap()];
        assert_eq!(c.topo.topology, "c-d32");
        assert!(c.estimate.ssim <= 0.4 && c.estimate.ssim > 0.37);
        assert_eq!(plan.binding, vec![Limit::Ssim]);
        for other in &plan.candidates {
            assert_eq!(
                other.violates.contains(&Limit::Ssim),
                other.estimate.ssim > 0.4,
                "{}",
                other.topo.topology
            );
        }
        // With only an SSIM limit, the frontier is drawn on SSIM: feasible, sorted by it.
        let front: Vec<&Candidate> = plan.candidates.iter().filter(|c| c.on_frontier).collect();
        assert!(!front.is_empty() && front.iter().all(|c| c.estimate.ssim <= 0.4));
        // Infeasible: even the least leaky topology, c-d4 (0.211), is above 0.05.
        let plan = plan_for(0.05);
        assert!(plan.chosen.is_none());
        assert_eq!(plan.binding, vec![Limit::Ssim]);
        assert_eq!(plan.candidates[plan.nearest[0]].topo.topology, "c-d4");
    }

    #[test]
    fn infeasible_limits_name_the_binding_limit_and_the_nearest() {
        let (rows, grid) = table(&CUTS, &DS);
        let limits = Limits {
            max_psnr: Some(5.0),
            ..Limits::default()
        };
        let plan = optimize(&rows, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        assert!(plan.chosen.is_none());
        assert_eq!(plan.binding, vec![Limit::Psnr]);
        // The least leaky topology is the deepest cut's narrowest.
        assert_eq!(plan.candidates[plan.nearest[0]].topo.topology, "c-d4");
        assert_eq!(plan.nearest.len(), 3);
        assert!(!plan.candidates.iter().any(|c| c.on_frontier));
    }

    #[test]
    fn ties_break_towards_less_leakage_then_less_compute() {
        let (mut rows, grid) = table(&[("a", 8, 100), ("b", 8, 200)], &[4, 8]);
        for r in &mut rows {
            r.metrics.accuracy = 0.5;
            r.metrics.psnr = if r.topo.cut == "a" { 14.0 } else { 13.0 };
        }
        let plan = optimize(
            &rows,
            &grid,
            &SAMPLE,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap();
        // Equal accuracy everywhere: b leaks less; of b's two, the cheaper (fewer channels).
        assert_eq!(plan.candidates[plan.chosen.unwrap()].topo.topology, "b-d4");
        for r in &mut rows {
            r.metrics.psnr = 13.0;
        }
        let plan = optimize(
            &rows,
            &grid,
            &SAMPLE,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap();
        assert_eq!(plan.candidates[plan.chosen.unwrap()].topo.topology, "a-d4");
        // The choice does not depend on the row order.
        rows.reverse();
        let again = optimize(
            &rows,
            &grid,
            &SAMPLE,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap();
        assert_eq!(
            again.candidates[again.chosen.unwrap()].topo.topology,
            "a-d4"
        );
    }

    #[test]
    fn margin_comes_from_held_out_error_and_measuring_the_choice_keeps_it() {
        // Concave PSNR (saturating): the middle sample sits above the chord, so the fit has a
        // held-out error and predictions get a margin.
        let (mut rows, grid) = table(&[("a", 64, 100)], &[4, 8, 16, 32, 64]);
        for r in &mut rows {
            let x = (r.topo.channels as f64).log2();
            r.metrics.psnr = 20.0 - 8.0 / x;
            r.metrics.ssim = 0.8 - 0.8 / x;
        }
        let limits = Limits {
            max_psnr: Some(17.8),
            ..Limits::default()
        };
        let sampled = sampled_only(&rows, &grid);
        let plan = optimize(&sampled, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        // LOO at D=16: measured 18, the chord between 4 (16) and 64 (18.667) gives 17.333.
        assert!(
            (plan.margin_psnr - 2.0 / 3.0).abs() < 1e-9,
            "{}",
            plan.margin_psnr
        );
        // The SSIM margin likewise (0.8 - 0.8 / log2 D: 0.667 at 16 against the chord's
        // 0.6), and a predicted topology's estimate carries both margins.
        assert!(
            (plan.margin_ssim - 1.0 / 15.0).abs() < 1e-9,
            "{}",
            plan.margin_ssim
        );
        let d8 = plan
            .candidates
            .iter()
            .find(|c| c.topo.topology == "a-d8")
            .unwrap();
        assert!(!d8.sampled);
        assert!((d8.estimate.psnr - (d8.predicted.psnr + plan.margin_psnr)).abs() < 1e-12);
        assert!((d8.estimate.ssim - (d8.predicted.ssim + plan.margin_ssim)).abs() < 1e-12);
        // D=8 is predicted at 17.0, plus the margin 17.667 <= 17.8; D=16 measured 18 is not.
        let chosen = plan.candidates[plan.chosen.unwrap()].clone();
        assert_eq!(chosen.topo.topology, "a-d8");
        assert_eq!(plan.measured_feasible(), None);
        // Evaluating the choice for real adds a row but does not move the choice.
        let mut with_choice = sampled.clone();
        with_choice.push(
            rows.iter()
                .find(|r| r.topo.topology == "a-d8")
                .unwrap()
                .clone(),
        );
        let again = optimize(
            &with_choice,
            &grid,
            &SAMPLE,
            &limits,
            1.0,
            OptimizeMode::Model,
        )
        .unwrap();
        assert_eq!(
            again.candidates[again.chosen.unwrap()].topo.topology,
            "a-d8"
        );
        assert_eq!(again.measured_feasible(), Some(true));
        assert_eq!(again.fit.holdout.len(), 1);
        // At 18.5 dB the margin keeps D=32 (predicted 18.333, +0.667) out; without a margin
        // the choice is bolder.
        let limits = Limits {
            max_psnr: Some(18.5),
            ..Limits::default()
        };
        let safe = optimize(&sampled, &grid, &SAMPLE, &limits, 1.0, OptimizeMode::Model).unwrap();
        assert_eq!(safe.candidates[safe.chosen.unwrap()].topo.topology, "a-d16");
        let bold = optimize(&sampled, &grid, &SAMPLE, &limits, 0.0, OptimizeMode::Model).unwrap();
        assert_eq!(bold.candidates[bold.chosen.unwrap()].topo.topology, "a-d32");
    }

    #[test]
    fn a_cut_with_one_sample_borrows_the_slope_of_the_others() {
        let (rows, grid) = table(&CUTS, &DS);
        let sample = [SamplePoint::Count(8), SamplePoint::Count(64)];
        let mut rows: Vec<Measurement> = rows
            .into_iter()
            .filter(|r| [8, 64].contains(&r.topo.channels))
            .collect();
        // Keep one row of cut c only.
        rows.retain(|r| !(r.topo.cut == "c" && r.topo.channels == 64));
        let plan = optimize(
            &rows,
            &grid,
            &sample,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap();
        assert_eq!(plan.fit.borrowed, vec!["c".to_string()]);
        let c64 = plan
            .candidates
            .iter()
            .find(|c| c.topo.topology == "c-d64")
            .unwrap();
        // The true slope is shared by every cut, so the borrowed line is exact.
        let truth = 12.0 + 1.5 * 64f64.ln() - 2.0;
        assert!((c64.predicted.psnr - truth).abs() < 1e-9);
    }

    #[test]
    fn a_cut_without_its_samples_is_an_error_and_an_empty_table_too() {
        let (rows, grid) = table(&CUTS, &DS);
        let rows: Vec<Measurement> = rows.into_iter().filter(|r| r.topo.channels == 8).collect();
        let e = optimize(
            &rows,
            &grid,
            &SAMPLE,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cut `a`") && e.contains("a-d8"), "{e}");
        let e = optimize(
            &[],
            &grid,
            &SAMPLE,
            &Limits::default(),
            1.0,
            OptimizeMode::Model,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no rows"), "{e}");
    }
}

#[cfg(test)]
mod defence_tests;
