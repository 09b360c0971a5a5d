//! A features file's rows as the stages read and write them: float32 or float16 values (an
//! extraction), or uint8 codes (a quantising defence, decoded through the file's
//! `privynet.defence` encoding), told apart by the `features` column's item type. Shared by
//! derive, defend and predict so that each reads rows the same way.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Int32Array, Int64Array,
    RecordBatch, StringArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use privynet_core::manifest::FeatureDtype;

/// How a features file stores each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Float values, in this type.
    Float(FeatureDtype),
    /// Integer codes of a quantising defence.
    Codes,
}

/// How the `features` column of `schema` stores its values; `None` when it is not a
/// fixed-size list of float32, float16 or uint8.
pub fn stored(schema: &Schema) -> Option<Stored> {
    let field = schema.field_with_name("features").ok()?;
    let DataType::FixedSizeList(item, _) = field.data_type() else {
        return None;
    };
    match item.data_type() {
        DataType::Float32 => Some(Stored::Float(FeatureDtype::Float32)),
        DataType::Float16 => Some(Stored::Float(FeatureDtype::Float16)),
        DataType::UInt8 => Some(Stored::Codes),
        _ => None,
    }
}

/// Appends the first `len` values of each of `rows` of a float32 or float16 feature column to
/// `out`, as f32. False (nothing appended) when the column holds neither.
pub fn append_floats(
    list: &FixedSizeListArray,
    rows: impl IntoIterator<Item = usize>,
    len: usize,
    out: &mut Vec<f32>,
) -> bool {
    let values = list.values().as_any();
    let starts = rows.into_iter().map(|r| list.value_offset_at(r));
    if let Some(v) = values.downcast_ref::<Float32Array>() {
        starts.for_each(|s| out.extend_from_slice(&v.values()[s..s + len]));
    } else if let Some(v) = values.downcast_ref::<Float16Array>() {
        starts.for_each(|s| out.extend(v.values()[s..s + len].iter().map(|x| x.to_f32())));
    } else {
        return false;
    }
    true
}

/// Appends the first `len` codes of each of `rows` of a uint8 feature column to `out`. False
/// (nothing appended) when the column holds no codes.
pub fn append_codes(
    list: &FixedSizeListArray,
    rows: impl IntoIterator<Item = usize>,
    len: usize,
    out: &mut Vec<u8>,
) -> bool {
    let Some(v) = list.values().as_any().downcast_ref::<UInt8Array>() else {
        return false;
    };
    for r in rows {
        let s = list.value_offset_at(r);
        out.extend_from_slice(&v.values()[s..s + len]);
    }
    true
}

/// The `features` Arrow schema for rows of `len` integer codes.
pub fn codes_schema(len: usize) -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Int32, false),
        Field::new("split", DataType::Utf8, false),
        Field::new(
            "features",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::UInt8, false)),
                len as i32,
            ),
            false,
        ),
    ])
}

/// A features batch of integer codes (rows x len) with their ids, labels and splits.
pub fn codes_batch(
    schema: SchemaRef,
    ids: Vec<i64>,
    labels: Vec<i32>,
    splits: Vec<String>,
    codes: Vec<u8>,
    len: usize,
) -> RecordBatch {
    let codes: ArrayRef = Arc::new(UInt8Array::from(codes));
    list_batch(schema, ids, labels, splits, DataType::UInt8, codes, len)
}

/// A features batch from ids, labels, splits and the flat item array (rows x len) of `item`.
pub fn list_batch(
    schema: SchemaRef,
    ids: Vec<i64>,
    labels: Vec<i32>,
    splits: Vec<String>,
    item: DataType,
    array: ArrayRef,
    len: usize,
) -> RecordBatch {
    let list = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", item, false)),
        len as i32,
        array,
        None,
    )
    .expect("the values should hold rows * len items");
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(Int32Array::from(labels)),
            Arc::new(StringArray::from(splits)),
            Arc::new(list),
        ],
    )
    .expect("columns should match the features schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_floats_read_back_by_row() {
        let schema = Arc::new(codes_schema(2));
        assert_eq!(stored(&schema), Some(Stored::Codes));
        let b = codes_batch(
            schema,
            vec![1, 2],
            vec![0, 1],
            vec!["train".into(), "test".into()],
            vec![1, 2, 3, 4],
            2,
        );
        let list = b
            .column_by_name("features")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let mut codes = vec![];
        assert!(append_codes(list, [1], 2, &mut codes));
        assert_eq!(codes, vec![3, 4]);
        let mut floats = vec![];
        assert!(!append_floats(list, [0], 2, &mut floats));
        assert!(floats.is_empty());
        let f = crate::extract::features_schema(2, FeatureDtype::Float16);
        assert_eq!(stored(&f), Some(Stored::Float(FeatureDtype::Float16)));
    }
}
