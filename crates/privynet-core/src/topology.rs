//! The topology of one local network (cut, channel count, shapes, local cost): what may be said
//! about it without revealing the channel selection. Carried in features metadata so a reader
//! can check it was given the features it expects.

use std::path::Path;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};

use crate::{ArtifactKind, CoreError, Result};

/// The topology of one local network: what may be said about it without the selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub cut: String,
    pub layer: Option<String>,
    pub input_size: i64,
    pub cut_channels: i64,
    pub channels: i64,
    pub method: String,
    pub height: i64,
    pub width: i64,
    pub feature_len: i64,
    pub macs: i64,
    pub params: i64,
    pub weight_bytes: i64,
    /// The defence's noise, as a fraction of each selected channel's std (0: none).
    #[serde(default)]
    pub noise: f64,
    /// Bits per value sent: 32 for float features, 8 or 4 for integer codes.
    #[serde(default = "float_bits")]
    pub bits: i64,
}

fn float_bits() -> i64 {
    32
}

impl Topology {
    /// Names the first field that differs from `other`, with both values.
    pub fn mismatch(&self, other: &Topology) -> Option<String> {
        let a = serde_json::to_value(self).expect("a topology should serialise");
        let b = serde_json::to_value(other).expect("a topology should serialise");
        let (a, b) = (a.as_object()?, b.as_object()?);
        a.iter().find_map(|(k, v)| {
            let w = &b[k];
            (v != w).then(|| format!("`{k}` is {v} in the file, expected {w}"))
        })
    }
}

impl Topology {
    /// Reads the one row of a `topology.arrow`.
    pub fn read(path: &Path) -> Result<Self> {
        let (_, batches) = crate::io::read_arrow(path, ArtifactKind::Topology)?;
        let b = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .ok_or_else(|| CoreError::Invalid {
                path: path.to_path_buf(),
                message: "the topology table has no row".into(),
            })?;
        let s = |name: &str| crate::column::<StringArray>(b, name, path);
        let i = |name: &str| crate::column::<Int64Array>(b, name, path).map(|c| c.value(0));
        let layer = s("layer")?;
        Ok(Self {
            cut: s("cut")?.value(0).to_string(),
            layer: (!layer.is_null(0)).then(|| layer.value(0).to_string()),
            input_size: i("input_size")?,
            cut_channels: i("cut_channels")?,
            channels: i("channels")?,
            method: s("method")?.value(0).to_string(),
            height: i("height")?,
            width: i("width")?,
            feature_len: i("feature_len")?,
            macs: i("macs")?,
            params: i("params")?,
            weight_bytes: i("weight_bytes")?,
            noise: crate::column::<Float64Array>(b, "noise", path)?.value(0),
            bits: i("bits")?,
        })
    }

    /// The columns of its `topology.arrow` row, in the schema's order.
    pub fn columns(&self) -> Vec<(&'static str, ArrayRef)> {
        let one = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
        vec![
            ("cut", Arc::new(StringArray::from(vec![self.cut.as_str()]))),
            (
                "layer",
                Arc::new(StringArray::from(vec![self.layer.as_deref()])),
            ),
            ("input_size", one(self.input_size)),
            ("cut_channels", one(self.cut_channels)),
            ("channels", one(self.channels)),
            (
                "method",
                Arc::new(StringArray::from(vec![self.method.as_str()])),
            ),
            ("height", one(self.height)),
            ("width", one(self.width)),
            ("feature_len", one(self.feature_len)),
            ("macs", one(self.macs)),
            ("params", one(self.params)),
            ("weight_bytes", one(self.weight_bytes)),
            ("noise", Arc::new(Float64Array::from(vec![self.noise]))),
            ("bits", one(self.bits)),
        ]
    }

    /// Its defence (none for a topology as sliced).
    pub fn defence(&self) -> crate::defence::Defence {
        crate::defence::Defence {
            noise: self.noise,
            bits: u8::try_from(self.bits).unwrap_or(0),
        }
    }

    /// The same topology under `defence` (a defended topology's row, made from its base's).
    pub fn with_defence(&self, defence: crate::defence::Defence) -> Topology {
        Topology {
            noise: defence.noise,
            bits: i64::from(defence.bits),
            ..self.clone()
        }
    }

    /// The undefended topology it was derived from: the same, without noise or quantisation.
    pub fn undefended(&self) -> Topology {
        self.with_defence(crate::defence::Defence::default())
    }

    /// A short label such as `fire3-d8`, or `fire3-d8-n0.25-q8` with a defence.
    pub fn label(&self) -> String {
        label(
            self.layer.as_deref().unwrap_or(&self.cut),
            self.channels,
            self.defence(),
        )
    }
}

/// The label of `layer`'s topology of `channels` channels under `defence` (`fire3-d8`,
/// `fire3-d8-n0.25-q8`): the name of its folders, node ids and table rows, in every stage.
pub fn label(layer: &str, channels: i64, defence: crate::defence::Defence) -> String {
    format!(
        "{}-d{channels}{}",
        layer.replace('/', "_"),
        defence.suffix()
    )
}

/// Checks that a features file (or every part of a folder of parts) was made for `expected`,
/// naming the first field of the topology that differs.
pub fn check_features(path: &Path, expected: &Topology) -> Result<()> {
    for part in crate::io::dataset_parts(path)? {
        let schema = crate::io::read_schema(&part)?;
        ArtifactKind::Features.schema()?.check(&part, &schema)?;
        let raw = schema
            .metadata()
            .get("privynet.topology")
            .expect("a checked features file has privynet.topology");
        let found: Topology = serde_json::from_str(raw).map_err(|e| CoreError::Invalid {
            path: part.clone(),
            message: format!("`privynet.topology` metadata is not a topology: {e}"),
        })?;
        if let Some(diff) = found.mismatch(expected) {
            return Err(CoreError::Invalid {
                path: part,
                message: format!(
                    "these features were made for topology {} but {} was expected: {diff}",
                    found.label(),
                    expected.label()
                ),
            });
        }
    }
    Ok(())
}

/// Reads the channel indices of a `selection.arrow` (a LOCAL artifact), in output order.
pub fn read_selection(path: &Path) -> Result<Vec<i64>> {
    let (_, batches) = crate::io::read_arrow(path, ArtifactKind::Selection)?;
    let mut out = Vec::new();
    for b in batches {
        let col = crate::column::<arrow::array::Int32Array>(&b, "channel", path)?;
        out.extend(col.values().iter().map(|&v| i64::from(v)));
    }
    Ok(out)
}
