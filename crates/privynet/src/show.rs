//! `privynet show PATH`: an artifact's kind, schema, provenance and first rows.

use std::path::Path;

use crate::RunError;

fn polars_err(e: privynet_optimize::OptimizeError) -> RunError {
    RunError::Dag(e.to_string())
}

/// A one-screen summary of a finished pipeline folder: its characterization table and the
/// optimizer's decision.
pub fn summary(dir: &Path) -> Result<String, RunError> {
    let path = dir.join("characterization.parquet");
    if !path.is_file() {
        return Err(RunError::Dag(format!(
            "{} has no characterization.parquet yet (run the pipeline through `characterize`)",
            dir.display()
        )));
    }
    let df = privynet_optimize::preview::first_rows(&path, 10_000).map_err(polars_err)?;
    // A defended topology's label names its defence (`fire3-d8-n0.5-q8`); its bound is shown
    // when any topology has one.
    let keep = [
        "topology",
        "channels",
        "macs",
        "bytes_per_image",
        "val_accuracy",
        "test_accuracy",
        "psnr_known",
        "psnr_unknown",
        "psnr_matched",
        "psnr_worst",
        "ssim_worst",
        "psnr_bound",
        "floor_psnr",
    ];
    let cols: Vec<&str> = keep
        .iter()
        .copied()
        .filter(|k| match df.column(k) {
            Ok(c) if *k == "psnr_bound" => c.null_count() < c.len(),
            Ok(_) => true,
            Err(_) => false,
        })
        .collect();
    let df = df
        .select(cols)
        .map_err(|e| RunError::Dag(format!("{}: {e}", path.display())))?;
    let mut out = format!(
        "{}\n{}",
        path.display(),
        privynet_optimize::preview::render(&df)
    );
    // The decision, as the optimizer's report words it.
    let report = dir.join("optimize/report.md");
    if let Ok(text) = std::fs::read_to_string(&report) {
        let start = text.find("## Decision").unwrap_or(0);
        let end = text.find("## Models").unwrap_or(text.len());
        out.push_str(&format!(
            "\n{}\n{}\n(full report: {})\n",
            report.display(),
            text[start..end].trim_end(),
            report.display()
        ));
    }
    Ok(out)
}

/// Renders an artifact for the terminal; a pipeline folder gets its summary; an object URL
/// (`s3://bucket/key`) is read through the local cache, with the environment's credentials.
pub fn render(path: &Path, rows: usize) -> Result<String, RunError> {
    if privynet_store::is_remote(path) {
        let local = privynet_store::Store::from_env().fetch(path)?;
        return render_file(&local, path, rows);
    }
    if path.is_dir() {
        return summary(path);
    }
    render_file(path, path, rows)
}

/// Renders the artifact at `path`, named `shown` (its place, when `path` is a cached copy).
fn render_file(path: &Path, shown: &Path, rows: usize) -> Result<String, RunError> {
    let schema = privynet_core::io::read_schema(path)?;
    let mut out = String::new();
    let kind = schema
        .metadata()
        .get("privynet.kind")
        .cloned()
        .unwrap_or_else(|| "(not a PrivyNet artifact)".into());
    out.push_str(&format!("{}\nkind: {kind}", shown.display()));
    if let Some(k) = privynet_core::ArtifactKind::from_name(&kind) {
        out.push_str(&format!(" (zone: {})", k.zone()?));
        if let Err(e) = k.schema()?.check(path, &schema) {
            out.push_str(&format!("\nSCHEMA CHECK FAILED: {e}"));
        }
    }
    out.push_str("\n\nschema:\n");
    for f in schema.fields() {
        out.push_str(&format!(
            "  {:<14} {}{}\n",
            f.name(),
            privynet_core::schema::type_name(f.data_type()),
            if f.is_nullable() { " (nullable)" } else { "" }
        ));
    }
    out.push_str("\nprovenance:\n");
    let mut meta: Vec<_> = schema
        .metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("privynet."))
        .collect();
    meta.sort();
    for (k, v) in meta {
        let v = if v.len() > 200 {
            format!("{}…", &v[..v.floor_char_boundary(200)])
        } else {
            v.clone()
        };
        out.push_str(&format!("  {k}: {v}\n"));
    }
    let df = privynet_optimize::preview::first_rows(path, rows).map_err(polars_err)?;
    out.push_str(&format!(
        "\nfirst {} rows (polars):\n{}",
        df.height(),
        privynet_optimize::preview::render(&df)
    ));
    Ok(out)
}
