//! Parquet as other tools write it: a features file rewritten by Python pyarrow and by Python
//! polars in every codec they write (Snappy, the default of pandas, pyarrow and Spark; gzip,
//! LZ4, zstd, Brotli, none) reads back with the same values. pyarrow keeps the file's
//! key-value metadata, so its rewrites go through the project's own checked reader and
//! `privynet show`; polars drops that metadata, so its rewrites are decoded with the parquet
//! crate directly (the codecs are what is under test). Needs Python polars and pyarrow under
//! .cache/python (`make test` installs them); fails without them unless `python` is opted out.

use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Int64Array};
use arrow::datatypes::DataType;
use privynet_core::ArtifactKind;
use privynet_e2e::*;

/// The codecs both writers offer, by the name they take; `none` is `uncompressed` to polars.
const CODECS: [&str; 6] = ["snappy", "gzip", "lz4", "zstd", "brotli", "none"];

/// A small features file with distinct values, and its (id, values) rows.
fn source(dir: &Path) -> (std::path::PathBuf, Vec<(i64, Vec<f32>)>) {
    let rows: Vec<(i64, i32, &str, Vec<f32>)> = (0..40)
        .map(|i| {
            let split = ["train", "val", "attacker", "test"][i as usize % 4];
            let values = (0..8).map(|k| (i * 8 + k) as f32 * 0.37 - 3.0).collect();
            (i, (i % 10) as i32, split, values)
        })
        .collect();
    let path = dir.join("features.parquet");
    write_features(&path, [2, 2, 2], &rows);
    (path, rows.into_iter().map(|r| (r.0, r.3)).collect())
}

/// Row `i` of a list column, whether it came back fixed-size (with the Arrow schema a writer
/// kept) or as a plain list (polars writes its arrays as Parquet lists).
fn list_value(col: &ArrayRef, i: usize) -> ArrayRef {
    match col.data_type() {
        DataType::FixedSizeList(..) => col.as_fixed_size_list().value(i),
        DataType::List(..) => col.as_list::<i32>().value(i),
        DataType::LargeList(..) => col.as_list::<i64>().value(i),
        other => panic!("features came back as {other}"),
    }
}

/// The (id, values) rows of record batches with `id` and `features` columns.
fn rows_of(batches: &[arrow::array::RecordBatch]) -> Vec<(i64, Vec<f32>)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b["id"].as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            let v = list_value(&b["features"], i);
            let v = v.as_any().downcast_ref::<Float32Array>().unwrap();
            out.push((ids.value(i), v.values().to_vec()));
        }
    }
    out
}

/// Runs a Python script with `dir` as its argument, printing the codec each file ended with.
fn python_writes(script: &str, src: &Path, dir: &Path) -> Option<String> {
    let mut py = python()?;
    let o = py
        .args(["-c", script])
        .arg(src)
        .arg(dir)
        .args(CODECS)
        .output()
        .unwrap();
    ok(&o);
    Some(stdout(&o))
}

#[test]
fn features_rewritten_by_pyarrow_in_every_codec_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (src, rows) = source(dir.path());
    let script = "import sys, pyarrow.parquet as pq\n\
         src, out, codecs = sys.argv[1], sys.argv[2], sys.argv[3:]\n\
         t = pq.read_table(src)\n\
         for c in codecs:\n\
         \x20   p = f'{out}/pyarrow-{c}.parquet'\n\
         \x20   pq.write_table(t, p, compression=c)\n\
         \x20   print(c, pq.ParquetFile(p).metadata.row_group(0).column(3).compression)\n";
    let Some(used) = python_writes(script, &src, dir.path()) else {
        return;
    };
    for c in CODECS {
        // The file really is in that codec (pyarrow's own word for it).
        let expected = match c {
            "none" => "UNCOMPRESSED",
            "lz4" => "LZ4",
            other => &other.to_uppercase(),
        };
        let line = used
            .lines()
            .find(|l| l.starts_with(&format!("{c} ")))
            .unwrap();
        // LZ4 is written as LZ4_RAW by current pyarrow, LZ4 (Hadoop framing) by older ones.
        assert!(
            line[c.len() + 1..].starts_with(expected),
            "{c}: pyarrow says {line}"
        );
        let p = dir.path().join(format!("pyarrow-{c}.parquet"));
        assert_eq!(
            rows_of(&read_all(&p, ArtifactKind::Features)),
            rows,
            "{c}: values differ after pyarrow's rewrite"
        );
        let shown = run("privynet", &["show", p.to_str().unwrap(), "--rows", "1"]);
        ok(&shown);
        assert!(
            stdout(&shown).contains("features"),
            "{c}: {}",
            stdout(&shown)
        );
    }
}

#[test]
fn parquet_written_by_polars_in_every_codec_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, rows) = source(dir.path());
    let script = "import sys, polars as pl\n\
         src, out, codecs = sys.argv[1], sys.argv[2], sys.argv[3:]\n\
         df = pl.read_parquet(src)\n\
         for c in codecs:\n\
         \x20   df.write_parquet(f'{out}/polars-{c}.parquet', compression='uncompressed' if c == 'none' else c)\n\
         \x20   print(c)\n";
    if python_writes(script, &src, dir.path()).is_none() {
        return;
    }
    for c in CODECS {
        let p = dir.path().join(format!("polars-{c}.parquet"));
        let file = std::fs::File::open(&p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{c}: {e}"))
            .build()
            .unwrap();
        let batches: Vec<_> = reader
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_eq!(
            rows_of(&batches),
            rows,
            "{c}: values differ after polars' rewrite"
        );
    }
}
