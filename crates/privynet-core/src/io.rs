//! Atomic, schema-checked Arrow IPC and Parquet I/O. Writers write to a hidden temporary file in
//! the destination folder, fsync it and rename it into place, so a killed stage never leaves a
//! file at the final path that looks complete. Readers check the file's schema against the
//! artifact kind before handing out a single row.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tempfile::NamedTempFile;

use crate::row_groups::{GroupLimits, ParallelParquet};
use crate::schema::Format;
use crate::{ArtifactKind, CoreError, Provenance, Result};

/// A file that appears at its final path only once it is complete.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Creates a hidden temporary file beside `path` (creating the folder if needed).
    pub fn create(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::write(&dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "artifact".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| CoreError::write(&dir, e))?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The file to write to.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Splits into the temporary file handle and the object that can later commit it.
    fn into_parts(self) -> (NamedTempFile, PathBuf) {
        (self.tmp, self.path)
    }

    /// Flushes to disk and renames into place.
    pub fn commit(self) -> Result<()> {
        let (tmp, path) = self.into_parts();
        commit_tmp(tmp, &path)
    }
}

fn commit_tmp(tmp: NamedTempFile, path: &Path) -> Result<()> {
    // Temporary files are created owner-only; a finished artifact gets ordinary permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| CoreError::write(path, e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| CoreError::write(path, e))?;
    tmp.persist(path)
        .map_err(|e| CoreError::write(path, e.error))?;
    // Make the rename itself durable.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(path)?;
    f.file()
        .write_all(bytes)
        .map_err(|e| CoreError::write(path, e))?;
    f.commit()
}

/// Attaches provenance metadata to a schema and checks it against the kind's schema.
pub fn artifact_schema(
    path: &Path,
    kind: ArtifactKind,
    schema: Schema,
    provenance: &Provenance,
) -> Result<SchemaRef> {
    let mut metadata = schema.metadata().clone();
    metadata.extend(provenance.metadata(kind));
    let schema = schema.with_metadata(metadata);
    kind.schema()?.check(path, &schema)?;
    Ok(Arc::new(schema))
}

enum Inner {
    Parquet(ParallelParquet<NamedTempFile>),
    Arrow(arrow::ipc::writer::FileWriter<NamedTempFile>),
}

/// A streaming, schema-checked, atomic writer for one artifact. Rows appear at the final path
/// only after [`ArtifactWriter::finish`]; dropping the writer earlier removes the temporary file.
pub struct ArtifactWriter {
    inner: Inner,
    path: PathBuf,
    schema: SchemaRef,
    rows: usize,
}

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ArtifactWriter {
    /// Opens a writer for an artifact of `kind` at `path`; the schema gets the provenance
    /// metadata and must match the kind's schema.
    pub fn create(
        path: &Path,
        kind: ArtifactKind,
        schema: Schema,
        provenance: &Provenance,
    ) -> Result<Self> {
        let schema = artifact_schema(path, kind, schema, provenance)?;
        let (tmp, _) = AtomicFile::create(path)?.into_parts();
        let inner = match kind.schema()?.format {
            Format::Parquet => {
                let kv = schema
                    .metadata()
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect();
                let mut props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(
                        ZstdLevel::try_new(1).expect("zstd level 1 should be valid"),
                    ))
                    .set_key_value_metadata(Some(kv));
                if kind == ArtifactKind::Features && !holds_codes(&schema) {
                    // Float activations almost never repeat: dictionary encoding and per-page
                    // statistics on them cost most of the write time and save nothing. The
                    // small columns keep theirs, so readers can skip row groups by split.
                    // Integer codes (a quantising defence) take at most 256 values: there the
                    // dictionary's bit-packed indices are what makes 4-bit codes small.
                    let features =
                        ColumnPath::from(vec!["features".into(), "list".into(), "item".into()]);
                    props = props
                        .set_column_dictionary_enabled(features.clone(), false)
                        .set_column_statistics_enabled(features, EnabledStatistics::None);
                }
                let props = props.build();
                let parquet_err = |e| CoreError::Parquet {
                    path: path.to_path_buf(),
                    source: e,
                };
                let writer =
                    ArrowWriter::try_new(tmp, schema.clone(), Some(props)).map_err(parquet_err)?;
                Inner::Parquet(
                    ParallelParquet::new(
                        writer,
                        schema.clone(),
                        GroupLimits::default_for_machine(),
                    )
                    .map_err(parquet_err)?,
                )
            }
            Format::Arrow => Inner::Arrow(
                arrow::ipc::writer::FileWriter::try_new(tmp, &schema).map_err(|e| {
                    CoreError::Arrow {
                        path: path.to_path_buf(),
                        source: e,
                    }
                })?,
            ),
        };
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            schema,
            rows: 0,
        })
    }

    /// The schema (with metadata) that batches must have.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends a batch; its columns must be those of [`ArtifactWriter::schema`].
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let batch = if batch.schema().metadata() == self.schema.metadata() {
            batch.clone()
        } else {
            batch
                .clone()
                .with_schema(self.schema.clone())
                .map_err(|e| self.arrow_err(e))?
        };
        self.rows += batch.num_rows();
        match &mut self.inner {
            Inner::Parquet(w) => w.write(&batch).map_err(|e| CoreError::Parquet {
                path: self.path.clone(),
                source: e,
            }),
            Inner::Arrow(w) => w.write(&batch).map_err(|e| CoreError::Arrow {
                path: self.path.clone(),
                source: e,
            }),
        }
    }

    fn arrow_err(&self, e: arrow::error::ArrowError) -> CoreError {
        CoreError::Arrow {
            path: self.path.clone(),
            source: e,
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Finishes the file, fsyncs it and renames it to its final path. Returns the row count.
    pub fn finish(self) -> Result<usize> {
        let tmp = match self.inner {
            Inner::Parquet(w) => w.into_inner().map_err(|e| CoreError::Parquet {
                path: self.path.clone(),
                source: e,
            })?,
            Inner::Arrow(mut w) => {
                w.finish().map_err(|e| CoreError::Arrow {
                    path: self.path.clone(),
                    source: e,
                })?;
                w.into_inner().map_err(|e| CoreError::Arrow {
                    path: self.path.clone(),
                    source: e,
                })?
            }
        };
        commit_tmp(tmp, &self.path)?;
        Ok(self.rows)
    }
}

/// Writes a whole artifact from batches.
pub fn write_artifact(
    path: &Path,
    kind: ArtifactKind,
    schema: Schema,
    provenance: &Provenance,
    batches: &[RecordBatch],
) -> Result<usize> {
    let mut w = ArtifactWriter::create(path, kind, schema, provenance)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

/// Reads the Arrow schema (with metadata) of a Parquet or Arrow IPC file, by its extension.
pub fn read_schema(path: &Path) -> Result<SchemaRef> {
    crate::guard::decode(path, || read_schema_unguarded(path))
}

fn read_schema_unguarded(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    if is_parquet(path) {
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| CoreError::Parquet {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(b.schema().clone())
    } else {
        let r =
            arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| CoreError::Arrow {
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(r.schema())
    }
}

fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet")
}

/// Reads a whole Arrow IPC artifact of `kind`, checking its schema.
pub fn read_arrow(path: &Path, kind: ArtifactKind) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    crate::guard::decode(path, || read_arrow_unguarded(path, kind))
}

fn read_arrow_unguarded(path: &Path, kind: ArtifactKind) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let r = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| CoreError::Arrow {
        path: path.to_path_buf(),
        source: e,
    })?;
    let schema = r.schema();
    kind.schema()?.check(path, &schema)?;
    let batches = r
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CoreError::Arrow {
            path: path.to_path_buf(),
            source: e,
        })?;
    Ok((schema, batches))
}

/// Whether a features schema holds integer codes (a quantising defence) rather than floats.
fn holds_codes(schema: &Schema) -> bool {
    schema
        .field_with_name("features")
        .is_ok_and(|f| match f.data_type() {
            arrow::datatypes::DataType::FixedSizeList(item, _) => {
                item.data_type() == &arrow::datatypes::DataType::UInt8
            }
            _ => false,
        })
}

/// The bytes a Parquet dataset stores per row: its column chunks' compressed sizes (what
/// crosses to the cloud, footer aside) over its rows, every part together.
pub fn stored_bytes_per_row(path: &Path) -> Result<f64> {
    let (mut bytes, mut rows) = (0i64, 0i64);
    for part in dataset_parts(path)? {
        let file = File::open(&part).map_err(|e| CoreError::io(&part, e))?;
        let reader = crate::guard::decode(&part, || {
            parquet::file::reader::SerializedFileReader::new(file).map_err(|e| CoreError::Parquet {
                path: part.clone(),
                source: e,
            })
        })?;
        use parquet::file::reader::FileReader;
        for g in reader.metadata().row_groups() {
            rows += g.num_rows();
            bytes += g.compressed_size();
        }
    }
    if rows == 0 {
        return Err(CoreError::Invalid {
            path: path.to_path_buf(),
            message: "the dataset has no rows to measure bytes per row on".into(),
        });
    }
    Ok(bytes as f64 / rows as f64)
}

/// The files of a Parquet dataset: the file itself, or every `*.parquet` in a folder of parts
/// (sorted by name), so that sharded outputs read as one dataset.
pub fn dataset_parts(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CoreError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                is_parquet(p)
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        parts.sort();
        if parts.is_empty() {
            return Err(CoreError::Invalid {
                path: path.to_path_buf(),
                message: "the folder holds no .parquet parts".into(),
            });
        }
        Ok(parts)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(CoreError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ))
    }
}

/// Opens one Parquet file of `kind` for streaming, checking its schema, with an optional column
/// projection (by name) and batch size.
pub fn open_parquet(
    path: &Path,
    kind: ArtifactKind,
    columns: Option<&[&str]>,
    batch_size: usize,
) -> Result<(SchemaRef, ParquetReader)> {
    open_parquet_splits(path, kind, columns, batch_size, None).map(|(s, r, _)| (s, r))
}

/// As [`open_parquet`], skipping the row groups whose `split` column statistics show that they
/// hold none of `splits` (rows of other splits may still come back: filter them as before).
/// Artifacts are written split by split, so reading one split decodes about that split only.
/// Also returns how many rows the reader will yield (for progress).
pub fn open_parquet_splits(
    path: &Path,
    kind: ArtifactKind,
    columns: Option<&[&str]>,
    batch_size: usize,
    splits: Option<&[String]>,
) -> Result<(SchemaRef, ParquetReader, u64)> {
    let (schema, inner, rows) = crate::guard::decode(path, || {
        open_unguarded(path, kind, columns, batch_size, splits)
    })?;
    let reader = ParquetReader {
        inner,
        path: path.to_path_buf(),
        failed: false,
    };
    Ok((schema, reader, rows))
}

/// A Parquet artifact's batches, each decoded under [`crate::guard`]: parquet's reader panics
/// on some damaged files, and a damaged file must give an error naming it, not a crash.
pub struct ParquetReader {
    inner: ParquetRecordBatchReader,
    path: PathBuf,
    /// Set once the decoder panicked: its state is unknown, so the reader ends there.
    failed: bool,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader")
            .field("path", &self.path)
            .finish()
    }
}

impl Iterator for ParquetReader {
    type Item = std::result::Result<RecordBatch, arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let inner = &mut self.inner;
        crate::guard::catch(|| inner.next()).unwrap_or_else(|message| {
            self.failed = true;
            let e = CoreError::Malformed {
                path: self.path.clone(),
                message,
            };
            Some(Err(arrow::error::ArrowError::ExternalError(Box::new(e))))
        })
    }
}

impl arrow::record_batch::RecordBatchReader for ParquetReader {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

fn open_unguarded(
    path: &Path,
    kind: ArtifactKind,
    columns: Option<&[&str]>,
    batch_size: usize,
    splits: Option<&[String]>,
) -> Result<(SchemaRef, ParquetRecordBatchReader, u64)> {
    let parquet_err = |e| CoreError::Parquet {
        path: path.to_path_buf(),
        source: e,
    };
    let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let schema = builder.schema().clone();
    kind.schema()?.check(path, &schema)?;
    let builder = match columns {
        Some(cols) => {
            let parquet_schema = builder.parquet_schema();
            let roots: Vec<usize> = cols
                .iter()
                .map(|c| schema.index_of(c).expect("checked columns should exist"))
                .collect();
            let mask = parquet::arrow::ProjectionMask::roots(parquet_schema, roots);
            builder.with_projection(mask)
        }
        None => builder,
    };
    let meta = builder.metadata().clone();
    let groups = match splits {
        Some(splits) => groups_with_splits(&meta, splits),
        None => (0..meta.num_row_groups()).collect(),
    };
    let rows = groups
        .iter()
        .map(|&g| meta.row_group(g).num_rows().max(0) as u64)
        .sum();
    let reader = builder
        .with_row_groups(groups)
        .with_batch_size(batch_size)
        .build()
        .map_err(parquet_err)?;
    Ok((schema, reader, rows))
}

/// The row groups that may hold a row of one of `splits`: those whose `split` statistics
/// bound one of them, and every group without statistics.
fn groups_with_splits(
    meta: &parquet::file::metadata::ParquetMetaData,
    splits: &[String],
) -> Vec<usize> {
    let column = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "split");
    (0..meta.num_row_groups())
        .filter(|&g| {
            let Some(stats) = column.and_then(|c| meta.row_group(g).column(c).statistics()) else {
                return true;
            };
            match (stats.min_bytes_opt(), stats.max_bytes_opt()) {
                (Some(min), Some(max)) => splits
                    .iter()
                    .any(|s| min <= s.as_bytes() && s.as_bytes() <= max),
                _ => true,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array};
    use arrow::datatypes::{DataType, Field};

    fn selection_batch() -> (Schema, RecordBatch) {
        let schema = Schema::new(vec![
            Field::new("position", DataType::Int32, false),
            Field::new("channel", DataType::Int32, false),
            Field::new("fisher_score", DataType::Float64, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![
                Arc::new(Int32Array::from(vec![0, 1])),
                Arc::new(Int32Array::from(vec![5, 2])),
                Arc::new(Float64Array::from(vec![None, Some(1.0)])),
            ],
        )
        .unwrap();
        (schema, batch)
    }

    fn prov() -> Provenance {
        let mut p = Provenance::new("test", "-");
        p.set("seed", "1");
        p.set("method", "random");
        p
    }

    #[test]
    fn arrow_roundtrip_with_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selection.arrow");
        let (schema, batch) = selection_batch();
        write_artifact(&path, ArtifactKind::Selection, schema, &prov(), &[batch]).unwrap();
        let (schema, batches) = read_arrow(&path, ArtifactKind::Selection).unwrap();
        assert_eq!(schema.metadata()["privynet.stage"], "test");
        assert_eq!(batches[0].num_rows(), 2);
        // Only the final file is left: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selection.arrow");
        let (schema, batch) = selection_batch();
        let mut w =
            ArtifactWriter::create(&path, ArtifactKind::Selection, schema, &prov()).unwrap();
        w.write(&batch).unwrap();
        drop(w);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn wrong_kind_is_refused_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selection.arrow");
        let (schema, batch) = selection_batch();
        write_artifact(&path, ArtifactKind::Selection, schema, &prov(), &[batch]).unwrap();
        let e = read_arrow(&path, ArtifactKind::Topology)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`selection` artifact"), "{e}");
    }

    #[test]
    fn write_side_check_names_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selection.arrow");
        let schema = Schema::new(vec![Field::new("position", DataType::Int64, false)]);
        let e = ArtifactWriter::create(&path, ArtifactKind::Selection, schema, &prov())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`position` has type int64, expected int32"),
            "{e}"
        );
        assert!(!path.exists());
    }

    /// A features file keeps statistics on its small columns only, and a reader asking for one
    /// split skips the row groups that hold none of it.
    #[test]
    fn features_row_groups_are_skipped_by_split() {
        use arrow::array::{FixedSizeListArray, Float32Array, Int64Array, StringArray};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.parquet");
        let len = 100usize;
        // Groups of 4,096 rows: two of train only, then one of train, attacker and test.
        let sizes = [("train", 8292), ("attacker", 100), ("test", 3000)];
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Int32, false),
            Field::new("split", DataType::Utf8, false),
            Field::new(
                "features",
                DataType::FixedSizeList(item.clone(), len as i32),
                false,
            ),
        ]);
        let mut p = prov();
        p.set("feature_shape", "1,10,10");
        p.set("topology", "null");
        p.set("preprocess", "{}");
        let mut w = ArtifactWriter::create(&path, ArtifactKind::Features, schema, &p).unwrap();
        let n: usize = sizes.iter().map(|s| s.1).sum();
        let split: Vec<&str> = sizes
            .iter()
            .flat_map(|&(s, k)| std::iter::repeat_n(s, k))
            .collect();
        let values = Float32Array::from_iter_values((0..n * len).map(|v| v as f32));
        let batch = RecordBatch::try_new(
            w.schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
                Arc::new(Int32Array::from(vec![0; n])),
                Arc::new(StringArray::from(split)),
                Arc::new(
                    FixedSizeListArray::try_new(item, len as i32, Arc::new(values), None).unwrap(),
                ),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();

        let file = File::open(&path).unwrap();
        let meta = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .metadata()
            .clone();
        assert_eq!(meta.num_row_groups(), 3);
        for g in meta.row_groups() {
            assert!(
                g.column(2).statistics().is_some(),
                "split keeps its statistics"
            );
            assert!(g.column(3).statistics().is_none(), "features have none");
        }
        let want = vec!["test".to_string()];
        let (_, r, expected) =
            open_parquet_splits(&path, ArtifactKind::Features, None, 1024, Some(&want)).unwrap();
        let rows: usize = r.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows as u64, expected);
        // The two train-only groups are skipped (min = max = "train").
        assert_eq!(rows, n - 8192);
        let (_, r) = open_parquet(&path, ArtifactKind::Features, None, 1024).unwrap();
        assert_eq!(r.map(|b| b.unwrap().num_rows()).sum::<usize>(), n);
    }
}
