//! The report's plots as self-contained SVG (no font or plotting dependency): accuracy against
//! privacy loss for every topology, coloured by cut and shaped by defence, with the frontier
//! (and, with defences in the grid, the frontier without them), the limit and the choice marked;
//! accuracy and PSNR against the channel count per series (a cut under one defence), measured
//! points over the fitted curves; and accuracy against bytes sent per image.

use std::fmt::Write as _;

use privynet_core::defence::Defence;

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

/// The grid's defences, in the order the grid lists them (undefended first).
fn defences(plan: &Plan) -> Vec<Defence> {
    let mut v: Vec<Defence> = Vec::new();
    for c in &plan.candidates {
        let d = c.topo.defence();
        if !v.contains(&d) {
            v.push(d);
        }
    }
    v
}

/// The index of `c`'s defence among `defences`, which picks its marker and dash pattern.
fn defence_index(defences: &[Defence], c: &Candidate) -> usize {
    let d = c.topo.defence();
    defences.iter().position(|x| *x == d).unwrap_or(0)
}

/// Marker shapes, one per defence: circle (undefended), square, triangle, diamond, down
/// triangle, then the shapes again.
const SHAPES: usize = 5;

/// Dash patterns of the series curves, one per defence (solid undefended).
const DASHES: [&str; 5] = ["", "6,3", "2,3", "8,3,2,3", "1,2"];

/// A marker of shape `k` (see [`SHAPES`]) of radius `r` at the origin, with `style` (fill,
/// stroke, ...) and inner content (a title) `inner`.
fn shape(k: usize, r: f64, style: &str, inner: &str) -> String {
    let poly = |pts: &[(f64, f64)]| {
        let p: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x * r, y * r))
            .collect();
        format!(
            r##"<polygon points="{}" {style}>{inner}</polygon>"##,
            p.join(" ")
        )
    };
    match k % SHAPES {
        0 => format!(r##"<circle r="{r}" {style}>{inner}</circle>"##),
        1 => poly(&[(-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)]),
        2 => poly(&[(0.0, -1.2), (1.1, 0.9), (-1.1, 0.9)]),
        3 => poly(&[(0.0, -1.25), (1.25, 0.0), (0.0, 1.25), (-1.25, 0.0)]),
        _ => poly(&[(0.0, 1.2), (1.1, -0.9), (-1.1, -0.9)]),
    }
}

/// A marker of shape `k` placed at canvas point (x, y).
fn marker_at(x: f64, y: f64, k: usize, r: f64, style: &str, inner: &str) -> String {
    format!(
        r##"<g transform="translate({x:.1},{y:.1})">{}</g>"##,
        shape(k, r, style, inner)
    )
}

/// The legend entries of the defences (a grey marker per shape), empty without defences.
fn defence_legend(defences: &[Defence]) -> Vec<(String, String)> {
    if defences.iter().all(Defence::is_none) {
        return Vec::new();
    }
    defences
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let name = if d.is_none() {
                "no defence".to_string()
            } else {
                d.suffix().trim_start_matches('-').to_string()
            };
            (shape(k, 5.0, r##"fill="#888""##, ""), name)
        })
        .collect()
}

fn svg_open(w: f64, h: f64) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##
    )
}

fn legend(svg: &mut String, x: f64, y: f64, cuts: &[String], extra: &[(String, String)]) {
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

/// Legend entries from static marks and texts.
fn entries(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(m, t)| ((*m).to_string(), (*t).to_string()))
        .collect()
}

/// Accuracy against privacy loss (PSNR, or SSIM when only an SSIM limit is set) for every
/// topology of the grid: colour by cut, marker by defence.
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
        y: accuracy_range(plan),
        log2_x: false,
    };
    let (cuts, defences) = (cuts(plan), defences(plan));
    let mut svg = svg_open(820.0, 480.0);
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
    let front = |v: Vec<&Candidate>| {
        v.iter()
            .map(|c| (axis.value(c), c.estimate.accuracy))
            .collect::<Vec<_>>()
    };
    let mut extra = entries(&[
        (r##"<circle r="5" fill="#888"/>"##, "measured"),
        (
            r##"<circle r="5" fill="white" stroke="#888" stroke-width="2"/>"##,
            "predicted",
        ),
        (
            r##"<line x1="-6" x2="6" stroke="#555" stroke-width="1.5"/>"##,
            "frontier",
        ),
    ]);
    if plan.has_defences() {
        // What the defences add: the frontier of the undefended topologies alone, dashed.
        polyline(
            &mut svg,
            &p,
            &front(plan.undefended_frontier()),
            "#555",
            "5,4",
        );
        extra.extend(entries(&[(
            r##"<line x1="-6" x2="6" stroke="#555" stroke-width="1.5" stroke-dasharray="3,2"/>"##,
            "frontier, no defence",
        )]));
    }
    polyline(&mut svg, &p, &front(plan.frontier()), "#555", "");
    for c in &plan.candidates {
        let k = defence_index(&defences, c);
        tradeoff_point(
            &mut svg,
            &p,
            c,
            (axis.value(c), c.estimate.accuracy),
            colour(&cuts, c),
            k,
        );
    }
    extra.extend(entries(&[(
        r##"<circle r="8" fill="none" stroke="black" stroke-width="2"/>"##,
        "choice",
    )]));
    extra.extend(defence_legend(&defences));
    legend(&mut svg, 660.0, 60.0, &cuts, &extra);
    svg.push_str("</svg>\n");
    svg
}

/// The validation accuracies' range, the baseline's included.
fn accuracy_range(plan: &Plan) -> (f64, f64) {
    range(
        plan.candidates
            .iter()
            .map(|c| c.estimate.accuracy)
            .chain(plan.baseline.map(|b| b.val_accuracy)),
    )
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

/// A line through data points `pts` (none for fewer than two), dashed by `dash` when not empty.
fn polyline(svg: &mut String, p: &Panel, pts: &[(f64, f64)], col: &str, dash: &str) {
    if pts.len() < 2 {
        return;
    }
    let pts: Vec<String> = pts
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", p.pixel_x(x), p.pixel_y(y)))
        .collect();
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(r##" stroke-dasharray="{dash}""##)
    };
    let _ = write!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="{col}" stroke-width="1.5"{dash}/>"##,
        pts.join(" ")
    );
}

/// One topology at data point `at`, with marker `shape`: filled when measured, faded when it
/// breaks a limit, ringed and named when chosen.
fn tradeoff_point(
    svg: &mut String,
    p: &Panel,
    c: &Candidate,
    at: (f64, f64),
    col: &str,
    shape: usize,
) {
    let (x, y) = (p.pixel_x(at.0), p.pixel_y(at.1));
    let fill = if c.sampled { col } else { "white" };
    // Topologies that break a limit stay visible but faded, so the frontier reads clearly.
    let opacity = if c.violates.is_empty() { 1.0 } else { 0.35 };
    let title = format!(
        "<title>{} acc {:.4} psnr {:.2} ssim {:.3}{}{}{}</title>",
        c.topo.topology,
        c.estimate.accuracy,
        c.estimate.psnr,
        c.estimate.ssim,
        c.estimate
            .bytes_per_image
            .map_or_else(String::new, |b| format!(" bytes {b:.0}")),
        c.estimate
            .psnr_bound
            .map_or_else(String::new, |b| format!(" bound {b:.2}")),
        if c.violates.is_empty() {
            String::new()
        } else {
            format!(" (breaks {})", crate::choose::limit_names(&c.violates))
        }
    );
    let style = format!(r##"fill="{fill}" stroke="{col}" stroke-width="2" opacity="{opacity}""##);
    svg.push_str(&marker_at(x, y, shape, 5.0, &style, &title));
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

/// Accuracy against the bytes each topology sends to the cloud per image (log scale), with the
/// bytes limit; topologies without a bytes figure are left out (and counted in the title).
pub fn by_bytes(plan: &Plan) -> String {
    let with: Vec<&Candidate> = plan
        .candidates
        .iter()
        .filter(|c| c.estimate.bytes_per_image.is_some_and(|b| b > 0.0))
        .collect();
    let limit = plan.limits.max_bytes_per_image.map(|x| x as f64);
    let logs = with
        .iter()
        .filter_map(|c| c.estimate.bytes_per_image)
        .chain(limit)
        .map(f64::log2);
    // Half an octave each side, so a single figure still gets a tick.
    let (lo, hi) = range(logs);
    let (lo, hi) = (lo - 0.5, hi + 0.5);
    let p = Panel {
        left: 70.0,
        top: 40.0,
        width: 560.0,
        height: 380.0,
        x: (lo, hi),
        y: accuracy_range(plan),
        log2_x: true,
    };
    let (cuts, defences) = (cuts(plan), defences(plan));
    let mut svg = svg_open(820.0, 480.0);
    let missing = plan.candidates.len() - with.len();
    let title = if missing == 0 {
        "Accuracy against bytes sent".to_string()
    } else {
        format!("Accuracy against bytes sent ({missing} topologies without a figure left out)")
    };
    axes(
        &mut svg,
        &p,
        "bytes sent to the cloud per image (log scale)",
        "validation accuracy",
        &title,
    );
    if let Some(x) = limit.filter(|&x| x > 0.0) {
        limit_line(&mut svg, &p, x);
    }
    for c in with {
        let at = (
            c.estimate.bytes_per_image.unwrap_or(1.0),
            c.estimate.accuracy,
        );
        let k = defence_index(&defences, c);
        tradeoff_point(&mut svg, &p, c, at, colour(&cuts, c), k);
    }
    let mut extra = entries(&[
        (r##"<circle r="5" fill="#888"/>"##, "measured"),
        (
            r##"<circle r="5" fill="white" stroke="#888" stroke-width="2"/>"##,
            "predicted",
        ),
        (
            r##"<circle r="8" fill="none" stroke="black" stroke-width="2"/>"##,
            "choice",
        ),
    ]);
    extra.extend(defence_legend(&defences));
    legend(&mut svg, 660.0, 60.0, &cuts, &extra);
    svg.push_str("</svg>\n");
    svg
}

/// Reads one metric (accuracy or PSNR) of a topology.
type MetricOf = fn(&Metrics) -> f64;

/// Accuracy and PSNR against the channel count D (log scale), per series (a cut under one
/// defence: colour by cut, dash and marker by defence): the fitted curves and the measured
/// points.
pub fn by_channels(plan: &Plan) -> String {
    let (cuts, defences) = (cuts(plan), defences(plan));
    let (lo, hi) = plan
        .candidates
        .iter()
        .map(|c| c.topo.channels as f64)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), d| {
            (a.min(d), b.max(d))
        });
    let x = (lo.log2() - 0.3, hi.log2() + 0.3);
    let mut svg = svg_open(1120.0, 460.0);
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
            for (k, defence) in defences.iter().enumerate() {
                let series = Series {
                    cut,
                    defence,
                    colour: PALETTE[i % PALETTE.len()],
                    style: k,
                };
                series_curve(&mut svg, &p, plan, &series, get);
            }
        }
    }
    let mut extra = entries(&[
        (
            r##"<line x1="-6" x2="6" stroke="#555" stroke-width="1.5"/>"##,
            "model",
        ),
        (r##"<circle r="4.5" fill="#888"/>"##, "sampled"),
        (
            r##"<circle r="4.5" fill="white" stroke="#888" stroke-width="2"/>"##,
            "held out",
        ),
    ]);
    extra.extend(defence_legend(&defences));
    legend(&mut svg, 990.0, 60.0, &cuts, &extra);
    svg.push_str("</svg>\n");
    svg
}

/// One series as drawn: its cut and defence, the cut's colour, and the defence's dash pattern
/// and marker (`style`).
struct Series<'a> {
    cut: &'a str,
    defence: &'a Defence,
    colour: &'a str,
    style: usize,
}

/// One series' predicted curve of metric `get` against D, and its measured points (filled when
/// sampled, hollow when held out).
fn series_curve(svg: &mut String, p: &Panel, plan: &Plan, s: &Series<'_>, get: MetricOf) {
    let mut own: Vec<&Candidate> = plan
        .candidates
        .iter()
        .filter(|c| c.topo.layer == s.cut && c.topo.defence() == *s.defence)
        .collect();
    own.sort_by_key(|c| c.topo.channels);
    let pts: Vec<(f64, f64)> = own
        .iter()
        .map(|c| (c.topo.channels as f64, get(&c.predicted)))
        .collect();
    if let [(x, y)] = pts[..] {
        // A single point still shows where its series lies.
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="1.5"/>"##,
            p.pixel_x(x) - 6.0,
            p.pixel_y(y),
            p.pixel_x(x) + 6.0,
            p.pixel_y(y),
            s.colour
        );
    }
    polyline(svg, p, &pts, s.colour, DASHES[s.style % DASHES.len()]);
    for c in own {
        if let Some(m) = &c.measured {
            let style = format!(
                r##"fill="{}" stroke="{}" stroke-width="2""##,
                if c.sampled { s.colour } else { "white" },
                s.colour
            );
            let title = format!("<title>{} {:.4}</title>", c.topo.topology, get(m));
            svg.push_str(&marker_at(
                p.pixel_x(c.topo.channels as f64),
                p.pixel_y(get(m)),
                s.style,
                4.5,
                &style,
                &title,
            ));
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
