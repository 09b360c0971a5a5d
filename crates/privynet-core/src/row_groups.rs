//! Parquet writing with each row group encoded and compressed on its own worker thread while the
//! caller goes on producing rows. Encoding (levels, zstd) is most of the cost of writing wide
//! feature rows; done inline it leaves the other cores idle, and the extract stage's network
//! waits for it. Row groups are appended to the file strictly in order, so the file is the
//! one a single-threaded writer would have produced, row for row.

use std::collections::VecDeque;
use std::io::Write;
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::errors::{ParquetError, Result};
use parquet::file::writer::SerializedFileWriter;

type Encoded = Result<Vec<ArrowColumnChunk>>;

/// How big a row group may grow before it is handed to a worker.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// At most this many rows per group.
    pub rows: usize,
    /// At most this many leaf values per group (a row of a fixed-size list of n counts n): wide
    /// rows get fewer rows. Encoding holds several bytes per value (levels, indices, the
    /// physical values) whatever the Arrow type, so values, not bytes, bound the memory of the
    /// groups in flight.
    pub values: usize,
    /// Row groups encoded at once.
    pub workers: usize,
}

impl GroupLimits {
    /// The default: 4,096 rows or 4 Mi values, one worker per core.
    pub fn default_for_machine() -> Self {
        Self {
            rows: 4096,
            values: 4 << 20,
            workers: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        }
    }
}

/// A Parquet writer that encodes row groups on worker threads.
pub struct ParallelParquet<W: Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Row groups encoded at once.
    workers: usize,
    /// Rows per group, from the limits and the schema's row width.
    group_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    in_flight: VecDeque<JoinHandle<Encoded>>,
    next_index: usize,
}

impl<W: Write + Send + 'static> ParallelParquet<W> {
    /// Takes over an [`ArrowWriter`] that has written nothing yet (it carries the file's
    /// properties and the Arrow schema in the footer metadata).
    pub fn new(writer: ArrowWriter<W>, schema: SchemaRef, limits: GroupLimits) -> Result<Self> {
        let (file, factory) = writer.into_serialized_writer()?;
        let group_rows =
            (limits.values.max(1) / values_per_row(&schema)).clamp(1, limits.rows.max(1));
        Ok(Self {
            file,
            factory,
            schema,
            workers: limits.workers.max(1),
            group_rows,
            pending: Vec::new(),
            pending_rows: 0,
            in_flight: VecDeque::new(),
            next_index: 0,
        })
    }

    /// Buffers a batch; every full row group goes to a worker.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        let mut offset = 0;
        while offset < n {
            let take = (self.group_rows - self.pending_rows).min(n - offset);
            self.pending.push(batch.slice(offset, take));
            self.pending_rows += take;
            offset += take;
            if self.pending_rows >= self.group_rows {
                self.dispatch()?;
            }
        }
        Ok(())
    }

    /// Sends the pending rows to a worker, first appending finished groups so that no more
    /// than `workers` are in flight.
    fn dispatch(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= self.workers {
            self.append_oldest()?;
        }
        let writers = self.factory.create_column_writers(self.next_index)?;
        self.next_index += 1;
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let schema = self.schema.clone();
        let handle = std::thread::Builder::new()
            .name("parquet-encode".into())
            .spawn(move || encode(writers, &schema, &batches))
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        self.in_flight.push_back(handle);
        Ok(())
    }

    fn append_oldest(&mut self) -> Result<()> {
        let Some(handle) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let chunks = handle
            .join()
            .map_err(|_| ParquetError::General("a row-group encoder thread panicked".into()))??;
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }

    /// Encodes what is left, writes the footer and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.dispatch()?;
        while !self.in_flight.is_empty() {
            self.append_oldest()?;
        }
        self.file.into_inner()
    }
}

/// Leaf values per row: a fixed-size list of n (nested or not) counts n, anything else 1.
fn values_per_row(schema: &SchemaRef) -> usize {
    fn width(t: &arrow::datatypes::DataType) -> usize {
        match t {
            arrow::datatypes::DataType::FixedSizeList(item, n) => {
                (*n).max(1) as usize * width(item.data_type())
            }
            arrow::datatypes::DataType::Struct(fields) => {
                fields.iter().map(|f| width(f.data_type())).sum()
            }
            _ => 1,
        }
    }
    schema
        .fields()
        .iter()
        .map(|f| width(f.data_type()))
        .sum::<usize>()
        .max(1)
}

/// One row group: every batch's columns, leaf by leaf, through the group's column writers.
fn encode(
    mut writers: Vec<ArrowColumnWriter>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Encoded {
    for batch in batches {
        let mut leaf = 0;
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for leaves in compute_leaves(field, column)? {
                writers[leaf].write(&leaves)?;
                leaf += 1;
            }
        }
    }
    writers.into_iter().map(ArrowColumnWriter::close).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{FixedSizeListArray, Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn schema(len: usize) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "x",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, false)),
                    len as i32,
                ),
                false,
            ),
        ]))
    }

    fn batch(schema: &SchemaRef, start: i64, n: usize, len: usize) -> RecordBatch {
        let ids = Int64Array::from_iter_values(start..start + n as i64);
        let values =
            Float32Array::from_iter_values((0..n * len).map(|v| (start as f32) + v as f32 * 0.5));
        let list = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            len as i32,
            Arc::new(values),
            None,
        )
        .unwrap();
        RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(list)]).unwrap()
    }

    /// Row groups encoded on two workers, cut inside and across batches, read back in order
    /// and equal to what went in.
    #[test]
    fn groups_come_back_in_order_and_whole() {
        let len = 7;
        let schema = schema(len);
        let w = ArrowWriter::try_new(tempfile::tempfile().unwrap(), schema.clone(), None).unwrap();
        let limits = GroupLimits {
            rows: 10,
            values: usize::MAX,
            workers: 2,
        };
        let mut p = ParallelParquet::new(w, schema.clone(), limits).unwrap();
        let mut want = Vec::new();
        let mut start = 0;
        for n in [3, 9, 1, 14, 0, 6] {
            let b = batch(&schema, start, n, len);
            p.write(&b).unwrap();
            want.push(b);
            start += n as i64;
        }
        let r = ParquetRecordBatchReaderBuilder::try_new(p.into_inner().unwrap()).unwrap();
        let groups: Vec<i64> = r
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, vec![10, 10, 10, 3]);
        let got: Vec<RecordBatch> = r.build().unwrap().map(|b| b.unwrap()).collect();
        let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        let want = arrow::compute::concat_batches(&schema, &want).unwrap();
        assert_eq!(got.columns(), want.columns());
    }

    /// Wide rows get fewer rows per group, so memory in flight stays bounded.
    #[test]
    fn wide_rows_make_smaller_groups() {
        let len = 1000;
        let schema = schema(len);
        let w = ArrowWriter::try_new(tempfile::tempfile().unwrap(), schema.clone(), None).unwrap();
        let limits = GroupLimits {
            rows: 4096,
            values: 10_010,
            workers: 2,
        };
        let mut p = ParallelParquet::new(w, schema.clone(), limits).unwrap();
        p.write(&batch(&schema, 0, 50, len)).unwrap();
        let r = ParquetRecordBatchReaderBuilder::try_new(p.into_inner().unwrap()).unwrap();
        let rows: Vec<i64> = r
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert!(rows.iter().all(|&n| n <= 10), "{rows:?}");
        assert_eq!(rows.iter().sum::<i64>(), 50);
    }
}
