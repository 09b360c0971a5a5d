//! Monotone models of a metric as a function of the channel count D in one series (a cut under
//! one defence): isotonic regression (pool-adjacent-violators) over the sampled points, then
//! piecewise-linear interpolation in ln D. Accuracy and privacy loss both grow with D (more
//! channels carry more of the image), so the fit is non-decreasing; it passes through the
//! sampled points whenever they are already monotone, and never invents a bump between them.
//! Plain interpolation, for what has no such law (bytes sent per channel), sits beside it.

/// One measured point of a series' curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub channels: i64,
    pub value: f64,
}

/// A fitted non-decreasing curve over ln D.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// ln D of the distinct sampled channel counts, ascending.
    xs: Vec<f64>,
    /// The isotonic fit at `xs`.
    ys: Vec<f64>,
    /// Slope (per unit of ln D) of a curve anchored at one point, borrowed from the other series
    /// (unused with two or more points: those continue their end segments' slopes).
    single_slope: f64,
}

/// Pool-adjacent-violators: the least-squares non-decreasing fit to `ys` (equal weights).
pub fn isotonic(ys: &[f64]) -> Vec<f64> {
    // Blocks of (sum, count); merging while the last block's mean drops below the one before.
    let mut blocks: Vec<(f64, usize)> = Vec::with_capacity(ys.len());
    for &y in ys {
        blocks.push((y, 1));
        while blocks.len() > 1 {
            let (s2, n2) = blocks[blocks.len() - 1];
            let (s1, n1) = blocks[blocks.len() - 2];
            if s1 / n1 as f64 > s2 / n2 as f64 {
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (s1 + s2, n1 + n2);
            } else {
                break;
            }
        }
    }
    blocks
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s / n as f64, n))
        .collect()
}

fn ln(d: i64) -> f64 {
    (d.max(1) as f64).ln()
}

impl Curve {
    /// Fits the points (any order; repeated D are averaged). `None` without points.
    pub fn fit(points: &[Point], borrowed_slope: f64) -> Option<Curve> {
        let mut pts: Vec<Point> = points.to_vec();
        pts.sort_by_key(|p| p.channels);
        let mut xs: Vec<f64> = Vec::new();
        let mut raw: Vec<f64> = Vec::new();
        let mut i = 0;
        while i < pts.len() {
            let d = pts[i].channels;
            let same: Vec<f64> = pts[i..]
                .iter()
                .take_while(|p| p.channels == d)
                .map(|p| p.value)
                .collect();
            xs.push(ln(d));
            raw.push(same.iter().sum::<f64>() / same.len() as f64);
            i += same.len();
        }
        if xs.is_empty() {
            return None;
        }
        let ys = isotonic(&raw);
        Some(Curve {
            xs,
            ys,
            single_slope: borrowed_slope.max(0.0),
        })
    }

    /// The overall slope over the sampled range (per unit of ln D), for borrowing.
    pub fn span_slope(&self) -> Option<f64> {
        let n = self.xs.len();
        (n >= 2).then(|| (self.ys[n - 1] - self.ys[0]) / (self.xs[n - 1] - self.xs[0]))
    }

    /// Whether the curve is anchored at one point only (its slope was borrowed).
    pub fn single(&self) -> bool {
        self.xs.len() == 1
    }

    /// The prediction at `channels`.
    pub fn predict(&self, channels: i64) -> f64 {
        let x = ln(channels);
        let n = self.xs.len();
        if n == 1 {
            return self.ys[0] + self.single_slope * (x - self.xs[0]);
        }
        // Outside the sampled range the end segments continue: above the largest sample this
        // errs towards more privacy loss, the safe side.
        let seg = |i: usize| (self.ys[i + 1] - self.ys[i]) / (self.xs[i + 1] - self.xs[i]);
        if x <= self.xs[0] {
            return self.ys[0] + seg(0) * (x - self.xs[0]);
        }
        if x >= self.xs[n - 1] {
            return self.ys[n - 1] + seg(n - 2) * (x - self.xs[n - 1]);
        }
        let i = self
            .xs
            .windows(2)
            .position(|w| x >= w[0] && x <= w[1])
            .expect("x lies inside the sampled range");
        self.ys[i] + seg(i) * (x - self.xs[i])
    }
}

/// Plain piecewise-linear interpolation of `points` in ln D (repeated D averaged), flat beyond
/// the ends; `None` without points. For quantities with no monotone law, such as the bytes sent
/// per channel (higher at small D, where a row's fixed overhead weighs more).
pub fn interpolate(points: &[Point], channels: i64) -> Option<f64> {
    let mut pts = points.to_vec();
    pts.sort_by_key(|p| p.channels);
    let mut xy: Vec<(f64, f64)> = Vec::new();
    for group in pts.chunk_by(|a, b| a.channels == b.channels) {
        let mean = group.iter().map(|p| p.value).sum::<f64>() / group.len() as f64;
        xy.push((ln(group[0].channels), mean));
    }
    let x = ln(channels);
    let (first, last) = (*xy.first()?, *xy.last()?);
    if x <= first.0 {
        return Some(first.1);
    }
    if x >= last.0 {
        return Some(last.1);
    }
    let i = xy.windows(2).position(|w| x <= w[1].0)?;
    let ((x0, y0), (x1, y1)) = (xy[i], xy[i + 1]);
    Some(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
}

/// Leave-one-out residuals (measured minus predicted) of the interior points: each is
/// predicted from a fit to the others, which interpolates between its neighbours. End points are
/// left out because predicting them would extrapolate, which the grid never needs when the
/// smallest and largest D are sampled.
pub fn loo_residuals(points: &[Point]) -> Vec<f64> {
    let mut pts = points.to_vec();
    pts.sort_by_key(|p| p.channels);
    pts.dedup_by_key(|p| p.channels);
    (1..pts.len().saturating_sub(1))
        .filter_map(|i| {
            let rest: Vec<Point> = pts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| *p)
                .collect();
            Curve::fit(&rest, 0.0).map(|c| pts[i].value - c.predict(pts[i].channels))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(i64, f64)]) -> Vec<Point> {
        v.iter()
            .map(|&(channels, value)| Point { channels, value })
            .collect()
    }

    #[test]
    fn isotonic_pools_violators() {
        assert_eq!(isotonic(&[1.0, 3.0, 2.0, 4.0]), vec![1.0, 2.5, 2.5, 4.0]);
        assert_eq!(isotonic(&[3.0, 2.0, 1.0]), vec![2.0, 2.0, 2.0]);
        assert_eq!(isotonic(&[1.0, 2.0]), vec![1.0, 2.0]);
    }

    #[test]
    fn fit_is_exact_on_monotone_samples_and_linear_in_log_d() {
        // y = 2 + 3 ln D sampled at 4, 16, 256: any D on the grid is recovered exactly.
        let f = |d: i64| 2.0 + 3.0 * (d as f64).ln();
        let c = Curve::fit(&pts(&[(4, f(4)), (16, f(16)), (256, f(256))]), 0.0).unwrap();
        for d in [4, 8, 16, 32, 64, 128, 256] {
            assert!((c.predict(d) - f(d)).abs() < 1e-9, "D={d}");
        }
        assert!((c.span_slope().unwrap() - 3.0).abs() < 1e-9);
        assert!(loo_residuals(&pts(&[(4, f(4)), (16, f(16)), (256, f(256))]))[0].abs() < 1e-9);
    }

    #[test]
    fn one_point_borrows_a_slope() {
        let c = Curve::fit(&pts(&[(8, 1.0)]), 0.5).unwrap();
        assert!(c.single());
        assert!((c.predict(8) - 1.0).abs() < 1e-12);
        assert!((c.predict(16) - (1.0 + 0.5 * 2f64.ln())).abs() < 1e-12);
        // A negative borrowed slope would break monotonicity; it is clamped to flat.
        let c = Curve::fit(&pts(&[(8, 1.0)]), -1.0).unwrap();
        assert_eq!(c.predict(64), 1.0);
        assert!(Curve::fit(&[], 0.0).is_none());
    }

    #[test]
    fn interpolation_is_exact_at_points_linear_in_log_d_and_flat_beyond() {
        let p = pts(&[(4, 10.0), (16, 8.0), (16, 6.0)]);
        assert_eq!(interpolate(&p, 4), Some(10.0));
        assert_eq!(interpolate(&p, 16), Some(7.0));
        assert!((interpolate(&p, 8).unwrap() - 8.5).abs() < 1e-12);
        assert_eq!(interpolate(&p, 2), Some(10.0));
        assert_eq!(interpolate(&p, 64), Some(7.0));
        assert_eq!(interpolate(&[], 8), None);
    }

    #[test]
    fn loo_residual_measures_curvature() {
        // Concave data: the middle point sits above the chord between its neighbours.
        let r = loo_residuals(&pts(&[(4, 0.5), (16, 0.7), (64, 0.75)]));
        assert_eq!(r.len(), 1);
        assert!((r[0] - (0.7 - 0.625)).abs() < 1e-9, "{r:?}");
        assert!(loo_residuals(&pts(&[(4, 0.5), (64, 0.75)])).is_empty());
    }

    proptest::proptest! {
        /// Whatever the samples, the fitted curve never decreases along the grid.
        #[test]
        fn fitted_curves_are_monotone(
            ys in proptest::collection::vec(-10.0f64..10.0, 1..7),
            slope in -1.0f64..1.0,
        ) {
            let points: Vec<Point> = ys
                .iter()
                .enumerate()
                .map(|(i, &value)| Point { channels: 1 << (i + 1), value })
                .collect();
            let c = Curve::fit(&points, slope).unwrap();
            let grid: Vec<f64> = (0..10).map(|k| c.predict(1 << k)).collect();
            for w in grid.windows(2) {
                proptest::prop_assert!(w[1] >= w[0] - 1e-9, "{grid:?}");
            }
        }
    }
}
