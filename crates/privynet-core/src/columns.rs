//! Typed access to an artifact batch's columns by name: the one downcast every reader needs,
//! with the file named when the column is missing or of another type.

use std::path::Path;

use arrow::array::{Array, RecordBatch};

use crate::{CoreError, Result};

/// The column `name` of `batch`, read from `path`, as the Arrow array type `T`. Batches read
/// through the core's readers were checked against their schema, so an error here means the
/// caller asked for a column its kind does not declare; it still names the file and column.
pub fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
    path: &Path,
) -> Result<&'a T> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| CoreError::Invalid {
            path: path.to_path_buf(),
            message: format!("no column `{name}`"),
        })?;
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| CoreError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "column `{name}` is {}, not the expected {}",
                crate::schema::type_name(col.data_type()),
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("type")
            ),
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn finds_typed_columns_and_names_the_file_otherwise() {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(vec![3, 4]))],
        )
        .unwrap();
        let p = Path::new("runs/x/features.parquet");
        assert_eq!(column::<Int64Array>(&batch, "id", p).unwrap().value(1), 4);
        let e = column::<StringArray>(&batch, "id", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("features.parquet") && e.contains("int64"), "{e}");
        let e = column::<Int64Array>(&batch, "label", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column `label`"), "{e}");
    }
}
