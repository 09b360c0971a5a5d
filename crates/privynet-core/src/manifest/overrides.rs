//! `--set key.path=value` overrides, applied to the YAML tree before the manifest is checked.

use serde_norway::Value;

use crate::{CoreError, Result};

/// Applies one `a.b.c=value` override to a YAML tree. The value is parsed as YAML, so numbers,
/// lists and strings all work (`--set sweep.channels=[8,all]`).
pub fn apply_override(root: &mut Value, expr: &str) -> Result<()> {
    let bad = |message: &str| CoreError::Override {
        expr: expr.to_string(),
        message: message.to_string(),
    };
    let (key, raw) = expr
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. extract.batch_size=64"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("the key has an empty part"));
    }
    let value: Value = serde_norway::from_str(raw).map_err(|e| bad(&e.to_string()))?;
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let map = node.as_mapping_mut().ok_or_else(|| {
            bad(&format!(
                "`{}` is not a mapping, so it has no key `{part}`",
                parts[..i].join(".")
            ))
        })?;
        let k = Value::String(part.to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    unreachable!("the loop returns at the last key part")
}
