//! The audit's files: `privacy.parquet` (per victim and mode), `attack_summary.arrow` (per
//! mode, with intervals and how the attacker was trained), `attack_metrics.arrow` (the
//! training curves) and `reconstructions.png` (labelled originals and reconstructions). Every
//! table takes its schema from `schemas/` through [`ArtifactKind::batch`].

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};

use privynet_core::io::{write_artifact, write_bytes_atomic};
use privynet_core::manifest::AttackFamily;
use privynet_core::{ArtifactKind, Provenance};

use super::assess::{AttackResult, Audit};
use super::dfil::Bound;
use crate::NnError;

/// What the files say besides the audit itself.
#[derive(Debug, Clone, Copy)]
pub struct OutputContext<'a> {
    /// The topology's label, for the picture's title.
    pub label: &'a str,
    /// The victims' ids and original images ([n, 3, size, size] flat).
    pub ids: &'a [i64],
    pub originals: &'a [f32],
    pub size: usize,
    /// Channels the topology keeps.
    pub channels: usize,
    pub max_epochs: usize,
    /// The topology's Fisher-information bound (with noise only), the same on every row.
    pub bound: Option<Bound>,
}

/// Writes all four files into `out` (created if needed), each atomically.
pub fn write_outputs(
    out: &Path,
    prov: &Provenance,
    audit: &Audit,
    ctx: OutputContext<'_>,
) -> Result<(), NnError> {
    std::fs::create_dir_all(out).map_err(|e| NnError::save(out, e))?;
    let batches = audit
        .attacks
        .iter()
        .map(|r| privacy_rows(r, ctx.ids))
        .collect::<Result<Vec<_>, _>>()?;
    write(
        out,
        "privacy.parquet",
        ArtifactKind::Privacy,
        prov,
        &batches,
    )?;
    let summary = summary_rows(audit, &ctx)?;
    write(
        out,
        "attack_summary.arrow",
        ArtifactKind::AttackSummary,
        prov,
        &[summary],
    )?;
    let curves = metrics_rows(audit)?;
    write(
        out,
        "attack_metrics.arrow",
        ArtifactKind::AttackMetrics,
        prov,
        &[curves],
    )?;
    let png = picture(audit, &ctx)?;
    write_bytes_atomic(&out.join("reconstructions.png"), &png)?;
    Ok(())
}

fn write(
    out: &Path,
    name: &str,
    kind: ArtifactKind,
    prov: &Provenance,
    batches: &[arrow::array::RecordBatch],
) -> Result<(), NnError> {
    let schema = batches
        .first()
        .map(|b| b.schema().as_ref().clone())
        .ok_or_else(|| NnError::Training(format!("no rows to write to {name}")))?;
    write_artifact(&out.join(name), kind, schema, prov, batches)?;
    Ok(())
}

/// Arrow columns from plain values, for [`ArtifactKind::batch`].
fn string_array<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}
fn f64_array(v: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(v))
}
fn i64_array(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}
fn i32_array(v: impl IntoIterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(v))
}
fn bool_array(v: impl IntoIterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(v.into_iter().collect::<Vec<_>>()))
}
/// `n` copies of a value that may be null.
fn bound_array(v: Option<f64>, n: usize) -> ArrayRef {
    Arc::new(Float64Array::from(vec![v; n]))
}

fn privacy_rows(r: &AttackResult, ids: &[i64]) -> Result<arrow::array::RecordBatch, NnError> {
    Ok(ArtifactKind::Privacy.batch(vec![
        ("id", i64_array(ids.iter().copied())),
        (
            "mode",
            string_array(std::iter::repeat_n(r.mode.name(), ids.len())),
        ),
        (
            "family",
            string_array(std::iter::repeat_n(r.family.name(), ids.len())),
        ),
        ("psnr", f64_array(r.psnr.iter().copied())),
        ("ssim", f64_array(r.ssim.iter().copied())),
        ("mse", f64_array(r.mse.iter().copied())),
        (
            "feature_error",
            Arc::new(Float64Array::from(match &r.feature_error {
                Some(e) => e.iter().copied().map(Some).collect::<Vec<_>>(),
                None => vec![None; ids.len()],
            })),
        ),
    ])?)
}

fn summary_rows(a: &Audit, ctx: &OutputContext<'_>) -> Result<arrow::array::RecordBatch, NnError> {
    let m = &a.attacks;
    let n = m.len();
    let worst = a.worst();
    let each = |f: fn(&AttackResult) -> f64| f64_array(m.iter().map(f));
    Ok(ArtifactKind::AttackSummary.batch(vec![
        ("mode", string_array(m.iter().map(|r| r.mode.name()))),
        ("family", string_array(m.iter().map(|r| r.family.name()))),
        (
            "images",
            i64_array(std::iter::repeat_n(ctx.ids.len() as i64, n)),
        ),
        ("mean_psnr", each(AttackResult::mean_psnr)),
        ("psnr_lo", each(|r| r.psnr_interval.lo)),
        ("psnr_hi", each(|r| r.psnr_interval.hi)),
        ("mean_ssim", each(AttackResult::mean_ssim)),
        ("ssim_lo", each(|r| r.ssim_interval.lo)),
        ("ssim_hi", each(|r| r.ssim_interval.hi)),
        ("mean_mse", each(|r| crate::metrics::mean(&r.mse))),
        (
            "mean_feature_error",
            Arc::new(Float64Array::from(
                m.iter()
                    .map(|r| r.feature_error.as_deref().map(crate::metrics::mean))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "iterations",
            Arc::new(Int64Array::from(
                m.iter()
                    .map(|r| r.iterations.map(|i| i as i64))
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "floor_psnr",
            f64_array(std::iter::repeat_n(a.floor_psnr, n)),
        ),
        (
            "floor_ssim",
            f64_array(std::iter::repeat_n(a.floor_ssim, n)),
        ),
        (
            "channels",
            i64_array(std::iter::repeat_n(ctx.channels as i64, n)),
        ),
        (
            "channels_matched",
            Arc::new(Int64Array::from(
                m.iter().map(|r| r.matched).collect::<Vec<_>>(),
            )),
        ),
        (
            "irn_width",
            i64_array(m.iter().map(|r| r.training.spec.width as i64)),
        ),
        (
            "irn_params",
            i64_array(m.iter().map(|r| r.training.params as i64)),
        ),
        (
            "train_samples",
            i64_array(m.iter().map(|r| r.training.train_samples as i64)),
        ),
        (
            "heldout_samples",
            i64_array(m.iter().map(|r| r.training.heldout_samples as i64)),
        ),
        (
            "epochs",
            i32_array(m.iter().map(|r| r.training.curve.len() as i32)),
        ),
        (
            "best_epoch",
            i32_array(m.iter().map(|r| r.training.best_epoch as i32)),
        ),
        (
            "max_epochs",
            i32_array(std::iter::repeat_n(ctx.max_epochs as i32, n)),
        ),
        (
            "converged",
            bool_array(m.iter().map(|r| r.training.converged)),
        ),
        ("heldout_psnr", each(|r| r.training.heldout_psnr())),
        (
            "samples_per_second",
            each(|r| r.training.samples_per_second),
        ),
        ("seconds", each(|r| r.seconds)),
        ("worst", bool_array((0..n).map(|i| Some(i) == worst))),
        ("psnr_bound", bound_array(ctx.bound.map(|b| b.mean), n)),
        ("psnr_bound_lo", bound_array(ctx.bound.map(|b| b.lo), n)),
        ("psnr_bound_hi", bound_array(ctx.bound.map(|b| b.hi), n)),
    ])?)
}

fn metrics_rows(a: &Audit) -> Result<arrow::array::RecordBatch, NnError> {
    // The curves are the IRNs' (an optimisation row shares its mode's IRN).
    let rows: Vec<_> = a
        .attacks
        .iter()
        .filter(|r| r.family == AttackFamily::Irn)
        .flat_map(|r| r.training.curve.iter().map(move |e| (r, e)))
        .collect();
    Ok(ArtifactKind::AttackMetrics.batch(vec![
        (
            "mode",
            string_array(rows.iter().map(|(r, _)| r.mode.name())),
        ),
        ("epoch", i32_array(rows.iter().map(|(_, e)| e.epoch as i32))),
        ("lr", f64_array(rows.iter().map(|(_, e)| e.lr))),
        (
            "train_loss",
            f64_array(rows.iter().map(|(_, e)| e.train_loss)),
        ),
        (
            "heldout_psnr",
            f64_array(rows.iter().map(|(_, e)| e.heldout_psnr)),
        ),
        (
            "heldout_ssim",
            f64_array(rows.iter().map(|(_, e)| e.heldout_ssim)),
        ),
        ("seconds", f64_array(rows.iter().map(|(_, e)| e.seconds))),
        (
            "kept",
            bool_array(rows.iter().map(|(r, e)| e.epoch == r.training.best_epoch)),
        ),
    ])?)
}

/// Pixels of one glyph cell of the 8x8 font.
const GLYPH: usize = 8;
const INK: image::Rgb<u8> = image::Rgb([0, 0, 0]);

/// Draws `text` with its top-left corner at (x, y), one 8x8 glyph per character.
fn text(img: &mut image::RgbImage, x: usize, y: usize, s: &str) {
    use font8x8::UnicodeFonts;
    for (k, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH {
                let (px, py) = ((x + k * GLYPH + col) as u32, (y + row) as u32);
                if bits >> col & 1 == 1 && px < img.width() && py < img.height() {
                    img.put_pixel(px, py, INK);
                }
            }
        }
    }
}

/// The picture: a title line, then a row of up to 8 originals and one row of reconstructions
/// per attack (mode and family), each labelled on the left with them and its mean PSNR and SSIM, and each
/// reconstruction captioned with its own PSNR.
fn picture(a: &Audit, ctx: &OutputContext<'_>) -> Result<Vec<u8>, NnError> {
    let size = ctx.size;
    let k = ctx.ids.len().min(8);
    let scale = 2;
    let cell_w = size * scale + 4;
    let cell_h = size * scale + GLYPH + 6;
    let label_w = 20 * GLYPH;
    let top = 2 * GLYPH + 4;
    let (w, h) = (label_w + k * cell_w, top + (1 + a.attacks.len()) * cell_h);
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    let bound = ctx
        .bound
        .map_or(String::new(), |b| format!(", PSNR bound {:.1} dB", b.mean));
    text(
        &mut img,
        2,
        2,
        &format!("{}: {} victims{bound}", ctx.label, ctx.ids.len()),
    );
    text(&mut img, 2, 2 + GLYPH + 2, "PSNR dB / SSIM, mean [95% CI]");
    let image_len = 3 * size * size;
    let put = |img: &mut image::RgbImage, row: usize, col: usize, px: &[f32]| {
        let (x0, y0) = (label_w + col * cell_w, top + row * cell_h);
        for y in 0..size * scale {
            for x in 0..size * scale {
                let p = (y / scale) * size + x / scale;
                let rgb = [0, 1, 2]
                    .map(|c| (px[c * size * size + p].clamp(0.0, 1.0) * 255.0).round() as u8);
                img.put_pixel((x0 + x) as u32, (y0 + y) as u32, image::Rgb(rgb));
            }
        }
    };
    text(&mut img, 2, top + 2, "original");
    for col in 0..k {
        put(
            &mut img,
            0,
            col,
            &ctx.originals[col * image_len..(col + 1) * image_len],
        );
    }
    for (r, m) in a.attacks.iter().enumerate() {
        let y = top + (r + 1) * cell_h;
        text(&mut img, 2, y + 2, &m.label());
        text(
            &mut img,
            2,
            y + 4 + GLYPH,
            &format!(
                "{:.2} [{:.2},{:.2}]",
                m.mean_psnr(),
                m.psnr_interval.lo,
                m.psnr_interval.hi
            ),
        );
        text(
            &mut img,
            2,
            y + 6 + 2 * GLYPH,
            &format!("SSIM {:.3}", m.mean_ssim()),
        );
        for col in 0..k {
            put(
                &mut img,
                r + 1,
                col,
                &m.recon[col * image_len..(col + 1) * image_len],
            );
            let caption = format!("{:.1}", m.psnr[col].min(crate::metrics::PSNR_CAP));
            text(
                &mut img,
                label_w + col * cell_w,
                y + size * scale + 2,
                &caption,
            );
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| NnError::Training(format!("encoding reconstructions.png: {e}")))?;
    Ok(png)
}
