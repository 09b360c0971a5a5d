//! `privynet show PATH`: an artifact's kind, schema, provenance and first rows.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;

use crate::RunError;

fn first_rows(path: &Path, n: usize) -> Result<Vec<RecordBatch>, RunError> {
    let file = std::fs::File::open(path).map_err(|e| RunError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let err = |e: String| RunError::Dag(format!("{}: {e}", path.display()));
    let batches: Vec<RecordBatch> = if path.extension().is_some_and(|e| e == "parquet") {
        // Parquet readers stop at the first batch; `n` bounds it.
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| err(e.to_string()))?
            .with_batch_size(n)
            .with_limit(n)
            .build()
            .map_err(|e| err(e.to_string()))?
            .take(1)
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?
    } else {
        arrow::ipc::reader::FileReader::try_new(file, None)
            .map_err(|e| err(e.to_string()))?
            .take(1)
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?
    };
    Ok(batches
        .into_iter()
        .map(|b| b.slice(0, n.min(b.num_rows())))
        .collect())
}

/// A one-screen summary of a finished pipeline folder: its characterization table.
pub fn summary(dir: &Path) -> Result<String, RunError> {
    let path = dir.join("characterization.parquet");
    if !path.is_file() {
        return Err(RunError::Dag(format!(
            "{} has no characterization.parquet yet (run the pipeline through `characterize`)",
            dir.display()
        )));
    }
    let batches = first_rows(&path, 10_000)?;
    let keep = [
        "topology",
        "channels",
        "macs",
        "weight_bytes",
        "test_accuracy",
        "psnr_known",
        "psnr_unknown",
        "psnr_matched",
        "channels_matched",
        "psnr_worst",
        "ssim_worst",
        "floor_psnr",
    ];
    let projected: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let idx: Vec<usize> = keep
                .iter()
                .filter_map(|k| b.schema().index_of(k).ok())
                .collect();
            b.project(&idx).expect("projected columns exist")
        })
        .collect();
    let table = pretty_format_batches(&projected).map_err(|e| RunError::Dag(e.to_string()))?;
    Ok(format!(
        "{}
{table}
",
        path.display()
    ))
}

/// Renders an artifact for the terminal; a pipeline folder gets its summary.
pub fn render(path: &Path, rows: usize) -> Result<String, RunError> {
    if path.is_dir() {
        return summary(path);
    }
    let schema = privynet_core::io::read_schema(path)?;
    let mut out = String::new();
    let kind = schema
        .metadata()
        .get("privynet.kind")
        .cloned()
        .unwrap_or_else(|| "(not a PrivyNet artifact)".into());
    out.push_str(&format!("{}\nkind: {kind}", path.display()));
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
    // Long list columns would drown the table; show their first values only.
    let batches: Vec<RecordBatch> = first_rows(path, rows)?
        .into_iter()
        .map(|b| {
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&i| !matches!(b.schema().field(i).data_type(), arrow::datatypes::DataType::FixedSizeList(_, n) if *n > 8))
                .collect();
            b.project(&keep).expect("projected columns exist")
        })
        .collect();
    let table = pretty_format_batches(&batches).map_err(|e| RunError::Dag(e.to_string()))?;
    out.push_str(&format!(
        "\nfirst {rows} rows (long list columns hidden):\n{table}\n"
    ));
    Ok(out)
}
