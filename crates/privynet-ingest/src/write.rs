//! Writes the split images as `images.parquet`, streaming row groups so memory stays flat.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    FixedSizeListArray, Int32Array, Int64Array, RecordBatch, StringArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema};

use privynet_core::io::ArtifactWriter;
use privynet_core::{ArtifactKind, Provenance};

use crate::split::Splits;
use crate::{IngestError, Record};

const CHUNK: usize = 4096;

/// The `images` Arrow schema for images of `height x width`.
pub fn images_schema(height: u32, width: u32) -> Schema {
    let len = (height * width * 3) as i32;
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Int32, false),
        Field::new("class_name", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("height", DataType::Int32, false),
        Field::new("width", DataType::Int32, false),
        Field::new(
            "pixels",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::UInt8, false)), len),
            false,
        ),
    ])
}

/// Writes the splits (train, val, attacker, test in that order) and returns the rows per split.
pub fn write_images(
    path: &Path,
    splits: &Splits,
    class_names: &[String],
    height: u32,
    width: u32,
    mut provenance: Provenance,
) -> Result<[usize; 4], IngestError> {
    provenance.set(
        "class_names",
        serde_json::to_string(class_names).expect("names should serialise"),
    );
    provenance.set("image_shape", format!("{height},{width},3"));
    let schema = images_schema(height, width);
    let mut w = ArtifactWriter::create(path, ArtifactKind::Images, schema, &provenance)?;
    let parts = [
        ("train", &splits.train),
        ("val", &splits.val),
        ("attacker", &splits.attacker),
        ("test", &splits.test),
    ];
    for (name, records) in parts {
        for chunk in records.chunks(CHUNK) {
            let batch = batch(w.schema(), chunk, name, class_names, height, width)?;
            w.write(&batch)?;
        }
    }
    w.finish()?;
    Ok([
        splits.train.len(),
        splits.val.len(),
        splits.attacker.len(),
        splits.test.len(),
    ])
}

fn batch(
    schema: arrow::datatypes::SchemaRef,
    records: &[Record],
    split: &str,
    class_names: &[String],
    height: u32,
    width: u32,
) -> Result<RecordBatch, IngestError> {
    let n = records.len();
    let len = (height * width * 3) as i32;
    let mut pixels = Vec::with_capacity(n * len as usize);
    for r in records {
        pixels.extend_from_slice(&r.pixels);
    }
    let item = Arc::new(Field::new("item", DataType::UInt8, false));
    let list = FixedSizeListArray::try_new(item, len, Arc::new(UInt8Array::from(pixels)), None)
        .map_err(|e| IngestError::Split(format!("building the pixel column: {e}")))?;
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.id))),
        Arc::new(Int32Array::from_iter_values(
            records.iter().map(|r| r.label),
        )),
        Arc::new(StringArray::from_iter_values(
            records
                .iter()
                .map(|r| class_names[r.label as usize].as_str()),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(split, n))),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(Int32Array::from_value(height as i32, n)),
        Arc::new(Int32Array::from_value(width as i32, n)),
        Arc::new(list),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| IngestError::Split(format!("building a batch of images: {e}")))
}
