//! Comparing run folders: the artifacts under a folder and their values, without the
//! measured times that differ between any two runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use privynet_core::ArtifactKind;

use crate::read_all;

/// The files under `dir`, relative to it and sorted, without the hidden temporaries and
/// without any file or folder named in `skip`.
pub fn walk(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || skip.contains(&name.as_str()) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Every Arrow IPC and Parquet artifact under `dir` (not the training's resume state).
pub fn artifacts(dir: &Path) -> Vec<PathBuf> {
    walk(dir, &["resume"])
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "parquet" || e == "arrow")
        })
        .collect()
}

/// The artifact's kind from its own metadata.
pub fn kind_of(path: &Path) -> ArtifactKind {
    let schema = privynet_core::io::read_schema(path)
        .unwrap_or_else(|e| panic!("{} does not open: {e}", path.display()));
    let name = schema
        .metadata()
        .get("privynet.kind")
        .unwrap_or_else(|| panic!("{} has no privynet.kind", path.display()));
    ArtifactKind::from_name(name).unwrap_or_else(|| panic!("unknown kind {name}"))
}

/// The columns that hold measured durations and speeds, which differ between any two runs.
pub const TIME_FIELDS: [&str; 4] = [
    "seconds",
    "samples_per_second",
    "train_seconds",
    "attack_seconds",
];

/// The artifact's columns and metadata as comparable data, without the `skip` columns and the
/// input digests.
pub fn values_except(
    path: &Path,
    skip: &[&str],
) -> (Vec<(String, arrow::array::ArrayData)>, String) {
    let batches: Vec<RecordBatch> = read_all(path, kind_of(path));
    let schema = batches[0].schema();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let cols = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !skip.contains(&f.name().as_str()))
        .map(|(i, f)| (f.name().clone(), all.column(i).to_data()))
        .collect();
    // The digests of the inputs differ wherever an input holds times (the characterization
    // table behind the optimizer's outputs): the inputs' own values are compared file by file.
    let meta: BTreeMap<_, _> = schema
        .metadata()
        .iter()
        .filter(|(k, _)| k.as_str() != "privynet.inputs")
        .collect();
    (cols, format!("{meta:?}"))
}
