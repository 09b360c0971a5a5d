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
use tempfile::NamedTempFile;

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
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::io(&dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "artifact".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| CoreError::io(&dir, e))?;
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
            .map_err(|e| CoreError::io(path, e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| CoreError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| CoreError::io(path, e.error))?;
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
        .map_err(|e| CoreError::io(path, e))?;
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
    Parquet(ArrowWriter<NamedTempFile>),
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
                    .set_max_row_group_row_count(Some(4096))
                    .set_key_value_metadata(Some(kv));
                if kind == ArtifactKind::Features {
                    // Float activations almost never repeat: dictionary encoding and per-page
                    // statistics cost most of the write time and save nothing.
                    props = props
                        .set_dictionary_enabled(false)
                        .set_statistics_enabled(EnabledStatistics::None);
                }
                let props = props.build();
                Inner::Parquet(
                    ArrowWriter::try_new(tmp, schema.clone(), Some(props)).map_err(|e| {
                        CoreError::Parquet {
                            path: path.to_path_buf(),
                            source: e,
                        }
                    })?,
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

/// The number of rows in a Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| CoreError::Parquet {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(b.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Opens one Parquet file of `kind` for streaming, checking its schema, with an optional column
/// projection (by name) and batch size.
pub fn open_parquet(
    path: &Path,
    kind: ArtifactKind,
    columns: Option<&[&str]>,
    batch_size: usize,
) -> Result<(SchemaRef, ParquetRecordBatchReader)> {
    let perr = |e| CoreError::Parquet {
        path: path.to_path_buf(),
        source: e,
    };
    let file = File::open(path).map_err(|e| CoreError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
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
    let reader = builder.with_batch_size(batch_size).build().map_err(perr)?;
    Ok((schema, reader))
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
}
