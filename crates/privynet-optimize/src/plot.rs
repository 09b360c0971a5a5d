//! The report's plots as self-contained SVG (no font or plotting dependency): accuracy against
//! privacy loss for every topology, coloured by cut, with the frontier, the limit and the choice
//! marked; and accuracy and PSNR against the channel count per cut, measured points over the
//! fitted curves.

use std::fmt::Write as _;

use crate::choose::{Candidate, Metrics, Plan};

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// A rectangle of the canvas mapped to a data range.
struct Panel {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
    log2_x: bool,
}

impl Panel {
    /// The canvas x of data value `x`.
    fn pixel_x(&self, x: f64) -> f64 {
        let x = if self.log2_x { x.log2() } else { x };
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * self.width
    }
    /// The canvas y of data value `y`.
    fn pixel_y(&self, y: f64) -> f64 {
        self.top + self.height - (y - self.y.0) / (self.y.1 - self.y.0) * self.height
    }
}

/// Rounded tick positions covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if (v * 10.0).fract().abs() < 1e-9 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn axes(svg: &mut String, p: &Panel, xlabel: &str, ylabel: &str, title: &str) {
    let (l, t, w, h) = (p.left, p.top, p.width, p.height);
    let _ = write!(
        svg,
        r##"<rect x="{l}" y="{t}" width="{w}" height="{h}" fill="none" stroke="#333"/>"##
    );
    let xt = if p.log2_x {
        let (a, b) = (p.x.0.ceil() as i32, p.x.1.floor() as i32);
        (a..=b).map(|k| 2f64.powi(k)).collect()
    } else {
        ticks(p.x.0, p.x.1, 6)
    };
    for x in xt {
        let px = p.pixel_x(x);
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="#333"/><text x="{px:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            t + h,
            t + h + 4.0,
            t + h + 17.0,
            fmt_tick(x)
        );
    }
    for y in ticks(p.y.0, p.y.1, 5) {
        let py = p.pixel_y(y);
        let _ = write!(
            svg,
            r##"<line x1="{}" y1="{py:.1}" x2="{l}" y2="{py:.1}" stroke="#333"/><line x1="{l}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            l - 4.0,
            l + w,
            l - 7.0,
            py + 4.0,
            fmt_tick(y)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="13" text-anchor="middle">{xlabel}</text><text transform="translate({},{}) rotate(-90)" font-size="13" text-anchor="middle">{ylabel}</text><text x="{}" y="{}" font-size="14" font-weight="bold" text-anchor="middle">{title}</text>"##,
        l + w / 2.0,
        t + h + 36.0,
        l - 45.0,
        t + h / 2.0,
        l + w / 2.0,
        t - 10.0
    );
}

fn cuts(plan: &Plan) -> Vec<String> {
    let mut v: Vec<(i32, String)> = plan
        .candidates
        .iter()
        .map(|c| (c.topo.depth, c.topo.layer.clone()))
        .collect();
    v.sort();
    v.dedup();
    v.into_iter().map(|(_, n)| n).collect()
}

fn colour(cuts: &[String], c: &Candidate) -> &'static str {
    let i = cuts.iter().position(|n| *n == c.topo.layer).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn svg_open(w: f64, h: f64) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##
    )
}

fn legend(svg: &mut String, x: f64, y: f64, cuts: &[String], extra: &[(&str, &str)]) {
    let mut y = y;
    for (i, n) in cuts.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<circle cx="{x}" cy="{y}" r="5" fill="{}"/><text x="{}" y="{}" font-size="12">{n}</text>"##,
            PALETTE[i % PALETTE.len()],
            x + 10.0,
            y + 4.0
        );
        y += 18.0;
    }
    for (mark, text) in extra {
        let _ = write!(
            svg,
            r##"<g transform="translate({x},{y})">{mark}</g><text x="{}" y="{}" font-size="12">{text}</text>"##,
            x + 10.0,
            y + 4.0
        );
        y += 18.0;
    }
}

/// The privacy metric on the tradeoff plot's x axis: PSNR, or SSIM when only an SSIM limit is
/// set (the one the frontier and the ties use).
#[derive(Clone, Copy)]
struct PrivacyAxis {
    ssim: bool,
}

impl PrivacyAxis {
    fn of(plan: &Plan) -> Self {
        PrivacyAxis {
            ssim: plan.limits.max_psnr.is_none() && plan.limits.max_ssim.is_some(),
        }
    }
    /// A topology's privacy loss on this axis.
    fn value(self, c: &Candidate) -> f64 {
        if self.ssim {
            c.estimate.ssim
        } else {
            c.estimate.psnr
        }
    }
    /// The limit on this axis, if set.
    fn limit(self, plan: &Plan) -> Option<f64> {
        if self.ssim {
            plan.limits.max_ssim
        } else {
            plan.limits.max_psnr
        }
    }
    fn label(self) -> &'static str {
        if self.ssim {
            "privacy loss: attacker SSIM (worst attack)"
        } else {
            "privacy loss: attacker PSNR, dB (worst attack)"
        }
    }
}

/// Accuracy against privacy loss (PSNR, or SSIM when only an SSIM limit is set) for every
/// topology of the grid.
pub fn tradeoff(plan: &Plan) -> String {
    let axis = PrivacyAxis::of(plan);
    let limit = axis.limit(plan);
    let mut xs: Vec<f64> = plan.candidates.iter().map(|c| axis.value(c)).collect();
    xs.extend(limit);
    let p = Panel {
        left: 70.0,
        top: 40.0,
        width: 560.0,
        height: 380.0,
        x: range(xs.into_iter()),
        y: range(
            plan.candidates
                .iter()
                .map(|c| c.estimate.accuracy)
                .chain(plan.baseline.map(|b| b.val_accuracy)),
        ),
        log2_x: false,
    };
    let cuts = cuts(plan);
    let mut svg = svg_open(800.0, 480.0);
    axes(
        &mut svg,
        &p,
        axis.label(),
        "validation accuracy",
        "Accuracy against privacy loss",
    );
    if let Some(x) = limit {
        limit_line(&mut svg, &p, x);
    }
    // The accuracy without any split, on the same (validation) split as the points: the gap
    // below it is what privacy costs.
    if let Some(b) = plan.baseline.map(|b| b.val_accuracy) {
        baseline_line(&mut svg, &p, b);
    }
    frontier_line(&mut svg, &p, plan, axis);
    for c in &plan.candidates {
        tradeoff_point(&mut svg, &p, c, axis.value(c), colour(&cuts, c));
    }
    legend(
        &mut svg,
        660.0,
        60.0,
        &cuts,
        &[
            (r##"<circle r="5" fill="#888"/>"##, "measured"),
            (
                r##"<circle r="5" fill="white" stroke="#888" stroke-width="2"/>"##,
                "predicted",
            ),
            (
                r##"<line x1="-6" x2="6" stroke="#555" stroke-width="1.5"/>"##,
                "frontier",
            ),
            (
                r##"<circle r="8" fill="none" stroke="black" stroke-width="2"/>"##,
                "choice",
            ),
        ],
    );
    svg.push_str("</svg>\n");
    svg
}

/// The privacy limit, a dashed vertical line at `x`.
fn limit_line(svg: &mut String, p: &Panel, x: f64) {
    let lx = p.pixel_x(x);
    let _ = write!(
        svg,
        r##"<line x1="{lx:.1}" y1="{}" x2="{lx:.1}" y2="{}" stroke="#c00" stroke-dasharray="6,4"/><text x="{:.1}" y="{}" font-size="11" fill="#c00">limit {}</text>"##,
        p.top,
        p.top + p.height,
        lx + 4.0,
        p.top + 12.0,
        fmt_tick(x)
    );
}

/// The raw-image baseline's validation accuracy, a dashed horizontal line.
fn baseline_line(svg: &mut String, p: &Panel, accuracy: f64) {
    let by = p.pixel_y(accuracy);
    let _ = write!(
        svg,
        r##"<line x1="{}" y1="{by:.1}" x2="{}" y2="{by:.1}" stroke="#06c" stroke-dasharray="6,4"/><text x="{}" y="{:.1}" font-size="11" fill="#06c">raw images, no split {:.3} (validation)</text>"##,
        p.left,
        p.left + p.width,
        p.left + 4.0,
        by - 4.0,
        accuracy
    );
}

/// The frontier, a line through its topologies (none for fewer than two).
fn frontier_line(svg: &mut String, p: &Panel, plan: &Plan, axis: PrivacyAxis) {
    let front = plan.frontier();
    if front.len() > 1 {
        let pts: Vec<String> = front
            .iter()
            .map(|c| {
                format!(
                    "{:.1},{:.1}",
                    p.pixel_x(axis.value(c)),
                    p.pixel_y(c.estimate.accuracy)
                )
            })
            .collect();
        let _ = write!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#555" stroke-width="1.5"/>"##,
            pts.join(" ")
        );
    }
}

/// One topology at privacy loss `privacy`: filled when measured, faded when it breaks a limit,
/// ringed and named when chosen.
fn tradeoff_point(svg: &mut String, p: &Panel, c: &Candidate, privacy: f64, col: &str) {
    let (x, y) = (p.pixel_x(privacy), p.pixel_y(c.estimate.accuracy));
    let fill = if c.sampled { col } else { "white" };
    // Topologies that break a limit stay visible but faded, so the frontier reads clearly.
    let opacity = if c.violates.is_empty() { 1.0 } else { 0.35 };
    let _ = write!(
        svg,
        r##"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{fill}" stroke="{col}" stroke-width="2" opacity="{opacity}"><title>{} acc {:.4} psnr {:.2} ssim {:.3}{}</title></circle>"##,
        c.topo.topology,
        c.estimate.accuracy,
        c.estimate.psnr,
        c.estimate.ssim,
        if c.violates.is_empty() {
            String::new()
        } else {
            format!(" (breaks {})", crate::choose::limit_names(&c.violates))
        }
    );
    if c.chosen {
        let _ = write!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="10" fill="none" stroke="black" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold">{}</text>"##,
            x + 12.0,
            y - 8.0,
            c.topo.topology
        );
    }
}

/// Reads one metric (accuracy or PSNR) of a topology.
type MetricOf = fn(&Metrics) -> f64;

/// Accuracy and PSNR against the channel count D (log scale), per cut: the fitted curves and
/// the measured points.
pub fn by_channels(plan: &Plan) -> String {
    let cuts = cuts(plan);
    let (lo, hi) = plan
        .candidates
        .iter()
        .map(|c| c.topo.channels as f64)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), d| {
            (a.min(d), b.max(d))
        });
    let x = (lo.log2() - 0.3, hi.log2() + 0.3);
    let mut svg = svg_open(1100.0, 460.0);
    let panels: [(&str, MetricOf, f64); 2] = [
        ("validation accuracy", |m| m.accuracy, 70.0),
        ("attacker PSNR, dB (worst attack)", |m| m.psnr, 560.0),
    ];
    for (ylabel, get, left) in panels {
        let vals = plan.candidates.iter().flat_map(|c| {
            [Some(get(&c.predicted)), c.measured.as_ref().map(get)]
                .into_iter()
                .flatten()
        });
        let p = Panel {
            left,
            top: 40.0,
            width: 400.0,
            height: 340.0,
            x,
            y: range(vals),
            log2_x: true,
        };
        axes(&mut svg, &p, "channels D (log scale)", ylabel, ylabel);
        for (i, cut) in cuts.iter().enumerate() {
            cut_curve(&mut svg, &p, plan, cut, PALETTE[i % PALETTE.len()], get);
        }
    }
    legend(
        &mut svg,
        990.0,
        60.0,
        &cuts,
        &[
            (
                r##"<line x1="-6" x2="6" stroke="#555" stroke-width="1.5"/>"##,
                "model",
            ),
            (r##"<circle r="4.5" fill="#888"/>"##, "sampled"),
            (
                r##"<circle r="4.5" fill="white" stroke="#888" stroke-width="2"/>"##,
                "held out",
            ),
        ],
    );
    svg.push_str("</svg>\n");
    svg
}

/// One cut's predicted curve of metric `get` against D, and its measured points (filled when
/// sampled, hollow when held out).
fn cut_curve(svg: &mut String, p: &Panel, plan: &Plan, cut: &str, col: &str, get: MetricOf) {
    let mut own: Vec<&Candidate> = plan
        .candidates
        .iter()
        .filter(|c| c.topo.layer == cut)
        .collect();
    own.sort_by_key(|c| c.topo.channels);
    let pts: Vec<String> = own
        .iter()
        .map(|c| {
            format!(
                "{:.1},{:.1}",
                p.pixel_x(c.topo.channels as f64),
                p.pixel_y(get(&c.predicted))
            )
        })
        .collect();
    let _ = write!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="{col}" stroke-width="1.5"/>"##,
        pts.join(" ")
    );
    for c in own {
        if let Some(m) = &c.measured {
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{}" stroke="{col}" stroke-width="2"><title>{} {:.4}</title></circle>"##,
                p.pixel_x(c.topo.channels as f64),
                p.pixel_y(get(m)),
                if c.sampled { col } else { "white" },
                c.topo.topology,
                get(m)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!(
            t.iter()
                .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
                .all(|(a, b)| (a - b).abs() < 1e-9)
        );
        let t = ticks(12.3, 19.8, 6);
        assert!(t.first().unwrap() >= &12.3 && t.last().unwrap() <= &19.8);
        assert!(t.len() >= 3);
    }
}
