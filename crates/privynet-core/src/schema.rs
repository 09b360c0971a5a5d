//! Artifact schemas: one YAML file per artifact kind under `schemas/` at the repository root,
//! compiled into the binaries so that every stage checks the same contract on write and on read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use arrow::datatypes::{DataType, Schema};
use serde::Deserialize;

use crate::{CoreError, Result};

/// Which side of the privacy boundary an artifact lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Stays on the user's machine: raw images, the secret channel selection.
    Local,
    /// May be sent to the cloud: features, labels, cloud models and their metrics.
    Cloud,
}

impl std::fmt::Display for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Zone::Local => "local",
            Zone::Cloud => "cloud",
        })
    }
}

/// The file format an artifact kind is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Arrow,
}

/// One column of an artifact schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    /// A type name such as `int64` or `fixed_size_list<float32>`; `a|b` allows either.
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub nullable: bool,
    #[serde(default)]
    pub description: String,
}

/// The schema of one artifact kind, as written in `schemas/<kind>.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSchema {
    pub kind: String,
    pub zone: Zone,
    pub format: Format,
    pub description: String,
    pub fields: Vec<FieldSpec>,
    /// Key-value metadata keys every file of this kind must carry.
    #[serde(default)]
    pub metadata: Vec<String>,
}

/// Every kind of artifact that stages exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArtifactKind {
    Images,
    CutPoints,
    Topology,
    Selection,
    Features,
    TrainMetrics,
    TrainSummary,
    Privacy,
    AttackSummary,
    AttackMetrics,
    Characterization,
    Predictions,
    Frontier,
    Decision,
    ImagePredictions,
}

impl ArtifactKind {
    /// All kinds, for listings and tests.
    pub const ALL: [ArtifactKind; 15] = [
        ArtifactKind::Images,
        ArtifactKind::CutPoints,
        ArtifactKind::Topology,
        ArtifactKind::Selection,
        ArtifactKind::Features,
        ArtifactKind::TrainMetrics,
        ArtifactKind::TrainSummary,
        ArtifactKind::Privacy,
        ArtifactKind::AttackSummary,
        ArtifactKind::AttackMetrics,
        ArtifactKind::Characterization,
        ArtifactKind::Predictions,
        ArtifactKind::Frontier,
        ArtifactKind::Decision,
        ArtifactKind::ImagePredictions,
    ];

    /// The kind's name, as in its schema file and in `privynet.kind` metadata.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Images => "images",
            ArtifactKind::CutPoints => "cut_points",
            ArtifactKind::Topology => "topology",
            ArtifactKind::Selection => "selection",
            ArtifactKind::Features => "features",
            ArtifactKind::TrainMetrics => "train_metrics",
            ArtifactKind::TrainSummary => "train_summary",
            ArtifactKind::Privacy => "privacy",
            ArtifactKind::AttackSummary => "attack_summary",
            ArtifactKind::AttackMetrics => "attack_metrics",
            ArtifactKind::Characterization => "characterization",
            ArtifactKind::Predictions => "predictions",
            ArtifactKind::Frontier => "frontier",
            ArtifactKind::Decision => "decision",
            ArtifactKind::ImagePredictions => "image_predictions",
        }
    }

    /// Looks a kind up by its name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    fn source(self) -> &'static str {
        match self {
            ArtifactKind::Images => include_str!("../../../schemas/images.yaml"),
            ArtifactKind::CutPoints => include_str!("../../../schemas/cut_points.yaml"),
            ArtifactKind::Topology => include_str!("../../../schemas/topology.yaml"),
            ArtifactKind::Selection => include_str!("../../../schemas/selection.yaml"),
            ArtifactKind::Features => include_str!("../../../schemas/features.yaml"),
            ArtifactKind::TrainMetrics => include_str!("../../../schemas/train_metrics.yaml"),
            ArtifactKind::TrainSummary => include_str!("../../../schemas/train_summary.yaml"),
            ArtifactKind::Privacy => include_str!("../../../schemas/privacy.yaml"),
            ArtifactKind::AttackSummary => include_str!("../../../schemas/attack_summary.yaml"),
            ArtifactKind::AttackMetrics => include_str!("../../../schemas/attack_metrics.yaml"),
            ArtifactKind::Characterization => {
                include_str!("../../../schemas/characterization.yaml")
            }
            ArtifactKind::Predictions => include_str!("../../../schemas/predictions.yaml"),
            ArtifactKind::Frontier => include_str!("../../../schemas/frontier.yaml"),
            ArtifactKind::Decision => include_str!("../../../schemas/decision.yaml"),
            ArtifactKind::ImagePredictions => {
                include_str!("../../../schemas/image_predictions.yaml")
            }
        }
    }

    /// The parsed schema of this kind. The YAML is compiled in, so a malformed schema file is a
    /// build defect; it is still reported as an error rather than a panic.
    pub fn schema(self) -> Result<&'static ArtifactSchema> {
        static CACHE: OnceLock<
            BTreeMap<ArtifactKind, std::result::Result<ArtifactSchema, String>>,
        > = OnceLock::new();
        let cache = CACHE.get_or_init(|| {
            ArtifactKind::ALL
                .into_iter()
                .map(|k| {
                    let parsed = serde_norway::from_str::<ArtifactSchema>(k.source())
                        .map_err(|e| e.to_string())
                        .and_then(|s| {
                            if s.kind == k.name() {
                                Ok(s)
                            } else {
                                Err(format!("its `kind` is `{}`", s.kind))
                            }
                        });
                    (k, parsed)
                })
                .collect()
        });
        cache
            .get(&self)
            .expect("every kind should be in the cache")
            .as_ref()
            .map_err(|message| CoreError::BuiltinSchema {
                kind: self.name().to_string(),
                message: message.clone(),
            })
    }

    /// The zone of this kind.
    pub fn zone(self) -> Result<Zone> {
        Ok(self.schema()?.zone)
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The Arrow type of a scalar schema-file type name (`bool`, `int64`, `float64`, `utf8`, ...);
/// `None` for list types and alternatives, whose Arrow type the writer must give itself.
fn scalar_type(name: &str) -> Option<DataType> {
    Some(match name {
        "bool" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        _ => return None,
    })
}

impl ArtifactKind {
    /// A record batch of this kind from named columns, in the order and with the types and
    /// nullability its schema file declares, so a writer never spells the schema out again.
    /// Every declared field must be given once (all scalar types); a missing, extra or
    /// mistyped column is an error naming it.
    pub fn batch(
        self,
        columns: Vec<(&str, arrow::array::ArrayRef)>,
    ) -> Result<arrow::array::RecordBatch> {
        let spec = self.schema()?;
        let bad = |message: String| CoreError::BuiltinSchema {
            kind: self.name().into(),
            message,
        };
        let mut by_name: BTreeMap<&str, arrow::array::ArrayRef> = BTreeMap::new();
        for (name, col) in columns {
            if by_name.insert(name, col).is_some() {
                return Err(bad(format!("column `{name}` given twice")));
            }
        }
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for f in &spec.fields {
            let ty = scalar_type(&f.ty)
                .ok_or_else(|| bad(format!("field `{}` of type {} is not scalar", f.name, f.ty)))?;
            let col = by_name
                .remove(f.name.as_str())
                .ok_or_else(|| bad(format!("no column for field `{}`", f.name)))?;
            fields.push(arrow::datatypes::Field::new(&f.name, ty, f.nullable));
            arrays.push(col);
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(bad(format!("column `{extra}` is not in the schema")));
        }
        arrow::array::RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| bad(e.to_string()))
    }
}

/// The schema-file name of an Arrow data type (`int64`, `fixed_size_list<float32>`, ...).
pub fn type_name(ty: &DataType) -> String {
    match ty {
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 => "float16".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::LargeUtf8 => "large_utf8".into(),
        DataType::Utf8View => "utf8_view".into(),
        DataType::Binary => "binary".into(),
        DataType::FixedSizeList(f, _) => format!("fixed_size_list<{}>", type_name(f.data_type())),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::LargeList(f) => format!("large_list<{}>", type_name(f.data_type())),
        other => format!("{other}"),
    }
}

impl ArtifactSchema {
    /// Checks an Arrow schema (with its metadata) against this artifact schema, naming the file
    /// and the first field or key that does not match.
    pub fn check(&self, path: &Path, schema: &Schema) -> Result<()> {
        let err = |message: String| CoreError::Schema {
            path: path.to_path_buf(),
            kind: self.kind.clone(),
            message,
        };
        if let Some(found) = schema.metadata().get("privynet.kind")
            && found != &self.kind
        {
            return Err(err(format!(
                "the file is a `{found}` artifact, expected a `{}` artifact",
                self.kind
            )));
        }
        for spec in &self.fields {
            let field = schema.field_with_name(&spec.name).map_err(|_| {
                err(format!(
                    "missing field `{}` (expected type {})",
                    spec.name, spec.ty
                ))
            })?;
            let got = type_name(field.data_type());
            if !spec.ty.split('|').any(|t| t.trim() == got) {
                return Err(err(format!(
                    "field `{}` has type {got}, expected {}",
                    spec.name, spec.ty
                )));
            }
            if field.is_nullable() && !spec.nullable {
                return Err(err(format!(
                    "field `{}` is nullable, expected non-nullable",
                    spec.name
                )));
            }
        }
        for field in schema.fields() {
            if !self.fields.iter().any(|s| &s.name == field.name()) {
                return Err(err(format!(
                    "unexpected field `{}` (expected only: {})",
                    field.name(),
                    self.fields
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        for key in &self.metadata {
            if !schema.metadata().contains_key(key) {
                return Err(err(format!("missing metadata key `{key}`")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn every_builtin_schema_parses() {
        for kind in ArtifactKind::ALL {
            let s = kind.schema().unwrap();
            assert_eq!(s.kind, kind.name());
            assert!(!s.fields.is_empty());
        }
    }

    #[test]
    fn mismatch_names_the_field() {
        let spec = ArtifactKind::Selection.schema().unwrap();
        let schema = Schema::new(vec![
            Field::new("position", DataType::Int32, false),
            Field::new("channel", DataType::Utf8, false),
        ]);
        let e = spec.check(Path::new("x.arrow"), &schema).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x.arrow"), "{msg}");
        assert!(
            msg.contains("field `channel` has type utf8, expected int32"),
            "{msg}"
        );
        let schema = Schema::new(vec![Field::new("channel", DataType::Int32, false)]);
        let msg = spec
            .check(Path::new("x.arrow"), &schema)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing field `position`"), "{msg}");
    }

    #[test]
    fn type_names_are_stable() {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        assert_eq!(
            type_name(&DataType::FixedSizeList(item, 4)),
            "fixed_size_list<float32>"
        );
    }
}
