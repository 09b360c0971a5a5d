//! Image-quality metrics on images scaled to [0, 1]: PSNR with peak 1, and SSIM as in Wang et
//! al. 2004 (Gaussian window of sigma 1.5 truncated at 3.5 sigma, i.e. 11x11; K1 = 0.01,
//! K2 = 0.03; population covariances), computed per channel and averaged. The filtering
//! reflects at the borders and the SSIM map is averaged over the pixels at least 5 from the
//! border, as scikit-image's `structural_similarity(gaussian_weights=True,
//! use_sample_covariance=False, data_range=1)` does; unit tests pin values computed with it.

/// Mean squared error of two equal-length slices.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// The PSNR a single image counts for at most in a mean, so that a perfect reconstruction
/// (infinite PSNR) keeps the mean finite.
pub const PSNR_CAP: f64 = 100.0;

/// PSNR in dB with peak 1; identical images give `f64::INFINITY` (never NaN).
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let m = mse(a, b);
    if m == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * m.log10()
    }
}

const SIGMA: f64 = 1.5;
const RADIUS: usize = 5; // int(3.5 * 1.5 + 0.5)

fn kernel() -> [f64; 2 * RADIUS + 1] {
    let mut k = [0.0; 2 * RADIUS + 1];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-0.5 * x * x / (SIGMA * SIGMA)).exp();
    }
    let s: f64 = k.iter().sum();
    k.map(|v| v / s)
}

/// Index with half-sample symmetric reflection (scipy's `reflect`: d c b a | a b c d).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - 1 - i;
    }
    i as usize
}

/// Separable Gaussian filter of one h x w plane.
fn filter(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    let k = kernel();
    let mut tmp = vec![0.0; h * w];
    for y in 0..h {
        for c in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                s += kv * x[y * w + reflect(c as isize + j as isize - RADIUS as isize, w)];
            }
            tmp[y * w + c] = s;
        }
    }
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for c in 0..w {
            let mut s = 0.0;
            for (j, kv) in k.iter().enumerate() {
                s += kv * tmp[reflect(y as isize + j as isize - RADIUS as isize, h) * w + c];
            }
            out[y * w + c] = s;
        }
    }
    out
}

/// SSIM of one plane.
fn ssim_plane(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    let (c1, c2) = ((0.01f64).powi(2), (0.03f64).powi(2));
    let ux = filter(a, h, w);
    let uy = filter(b, h, w);
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let uxx = filter(&prod(a, a), h, w);
    let uyy = filter(&prod(b, b), h, w);
    let uxy = filter(&prod(a, b), h, w);
    let (mut sum, mut n) = (0.0, 0usize);
    for y in RADIUS..h.saturating_sub(RADIUS) {
        for c in RADIUS..w.saturating_sub(RADIUS) {
            let i = y * w + c;
            let vx = uxx[i] - ux[i] * ux[i];
            let vy = uyy[i] - uy[i] * uy[i];
            let vxy = uxy[i] - ux[i] * uy[i];
            let s = ((2.0 * ux[i] * uy[i] + c1) * (2.0 * vxy + c2))
                / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2));
            sum += s;
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

/// SSIM of two CHW images with `c` channels of `h x w`, averaged over channels.
pub fn ssim(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
    let plane = h * w;
    (0..c)
        .map(|ch| {
            let pa: Vec<f64> = a[ch * plane..(ch + 1) * plane]
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            let pb: Vec<f64> = b[ch * plane..(ch + 1) * plane]
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            ssim_plane(&pa, &pb, h, w)
        })
        .sum::<f64>()
        / c as f64
}

/// Mean of `v`, 0 for an empty slice.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Mean PSNR with each image capped at [`PSNR_CAP`].
pub fn mean_capped_psnr(v: &[f64]) -> f64 {
    v.iter().map(|p| p.min(PSNR_CAP)).sum::<f64>() / v.len().max(1) as f64
}

/// A 95% interval of a mean over images.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// The 95% percentile-bootstrap interval of the mean of `v` (values above [`PSNR_CAP`] count
/// as the cap, as in the reported mean): `resamples` seeded resamples with replacement. With
/// fewer than 2 values there is no spread to resample and the interval is the mean itself.
pub fn bootstrap_mean(v: &[f64], resamples: usize, seed: u64) -> Interval {
    let v: Vec<f64> = v.iter().map(|x| x.min(PSNR_CAP)).collect();
    let m = mean(&v);
    let (lo, hi) = percentile_bootstrap(&v, resamples, seed);
    Interval {
        lo: lo.min(m),
        hi: hi.max(m),
    }
}

/// The 2.5% and 97.5% percentiles of `resamples` seeded resampled means of `v`, uncapped (the
/// mean itself, twice, when there is no spread to resample).
pub fn percentile_bootstrap(v: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    use rand::{Rng, SeedableRng};
    let m = mean(v);
    if v.len() < 2 || resamples == 0 {
        return (m, m);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            (0..v.len())
                .map(|_| v[rng.random_range(0..v.len())])
                .sum::<f64>()
                / v.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_without_spread_is_the_mean_and_two_values_have_one() {
        // No resamples, one value, or none: no spread to resample, the interval is the mean.
        let mean_only = |v: &[f64], resamples| {
            let i = bootstrap_mean(v, resamples, 3);
            (i.lo, i.hi)
        };
        assert_eq!(mean_only(&[10.0, 20.0], 0), (15.0, 15.0));
        assert_eq!(mean_only(&[12.5], 1000), (12.5, 12.5));
        assert_eq!(mean_only(&[], 1000), (0.0, 0.0));
        // Two different values already spread: the interval is wider than a point.
        let two = bootstrap_mean(&[10.0, 20.0], 1000, 3);
        assert!(two.lo < 15.0 && two.hi > 15.0, "{two:?}");
    }

    #[test]
    fn bootstrap_interval_contains_the_mean_and_narrows_with_more_images() {
        let values = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| 12.0 + ((i * 7919) % 97) as f64 / 10.0)
                .collect()
        };
        let few = values(50);
        let many = values(2000);
        let a = bootstrap_mean(&few, 1000, 1);
        let b = bootstrap_mean(&many, 1000, 1);
        for (v, i) in [(&few, a), (&many, b)] {
            let m = mean(v);
            assert!(i.lo < m && m < i.hi, "{i:?} around {m}");
        }
        assert!(b.hi - b.lo < 0.5 * (a.hi - a.lo), "{a:?} vs {b:?}");
        // Same seed, same interval.
        assert_eq!(a, bootstrap_mean(&few, 1000, 1));
        // Infinite PSNR (a perfect image) counts as the cap, like the reported mean.
        let i = bootstrap_mean(&[f64::INFINITY, 20.0], 200, 3);
        assert!(i.hi <= PSNR_CAP && i.lo >= 20.0);
    }

    /// The fixed test images: a[i] = ((i * 37) % 101) / 100, b[i] = ((i * 53 + 7) % 97) / 96.
    fn images(n: usize) -> (Vec<f32>, Vec<f32>) {
        (
            (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect(),
            (0..n).map(|i| ((i * 53 + 7) % 97) as f32 / 96.0).collect(),
        )
    }

    #[test]
    fn identical_images() {
        let (a, _) = images(3 * 16 * 16);
        assert_eq!(psnr(&a, &a), f64::INFINITY);
        assert!((ssim(&a, &a, 3, 16, 16) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn matches_scikit_image() {
        // Values from scikit-image 0.26 `structural_similarity(A, B, gaussian_weights=True,
        // use_sample_covariance=False, data_range=1.0, channel_axis=0, sigma=1.5)` and
        // `peak_signal_noise_ratio(A, B, data_range=1.0)` on these arrays (3 x 16 x 16).
        let (a, b) = images(3 * 16 * 16);
        assert!((ssim(&a, &b, 3, 16, 16) - 0.008733349499732744).abs() < 1e-6);
        assert!((psnr(&a, &b) - 7.887805239928884).abs() < 1e-5);
        let c: Vec<f32> = a.iter().map(|v| (v * 0.8 + 0.1).clamp(0.0, 1.0)).collect();
        assert!((ssim(&a, &c, 3, 16, 16) - 0.9757407502065792).abs() < 1e-6);
    }

    #[test]
    fn psnr_known_value() {
        // MSE 0.01 is 20 dB.
        let a = vec![0.5f32; 100];
        let b = vec![0.6f32; 100];
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-4);
    }
}
