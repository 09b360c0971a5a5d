//! CIFAR-10 in the official binary layout: records of 1 label byte and 3072 pixel bytes (R, G
//! and B planes of 32x32), 10,000 per batch file. Accepts plain `.bin` files, per-file `.bin.gz`
//! and the official `cifar-10-binary.tar.gz`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::{Dataset, IngestError, Record};

const RECORD: usize = 3073;
const SIDE: usize = 32;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
];
const TEST_FILE: &str = "test_batch";
const TARBALL: &str = "cifar-10-binary.tar.gz";

/// The CIFAR-10 class names, used when the folder has no `batches.meta.txt`.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Decodes the records of one batch file's bytes; `first_id` numbers them.
pub fn parse_batch(
    path: &Path,
    bytes: &[u8],
    first_id: i64,
    name: &str,
) -> Result<Vec<Record>, IngestError> {
    if !bytes.len().is_multiple_of(RECORD) || bytes.is_empty() {
        return Err(IngestError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(bytes.len() / RECORD);
    for (k, rec) in bytes.chunks_exact(RECORD).enumerate() {
        let label = rec[0];
        if label > 9 {
            return Err(IngestError::Dataset {
                path: path.to_path_buf(),
                message: format!("record {k} has label {label}, expected 0..9"),
            });
        }
        let planes = &rec[1..];
        // The file stores channel planes (CHW); images.parquet stores HWC.
        let mut hwc = vec![0u8; 3 * SIDE * SIDE];
        for c in 0..3 {
            for p in 0..SIDE * SIDE {
                hwc[p * 3 + c] = planes[c * SIDE * SIDE + p];
            }
        }
        out.push(Record {
            id: first_id + k as i64,
            label: i32::from(label),
            source: format!("{name}#{k}"),
            pixels: hwc,
        });
    }
    Ok(out)
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, IngestError> {
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        // Name the format: "corrupt deflate stream" alone does not say the file is gzip.
        GzDecoder::new(file).read_to_end(&mut bytes).map_err(|e| {
            let what = std::io::Error::new(e.kind(), format!("not a valid gzip file ({e})"));
            IngestError::io(path, what)
        })?;
    } else {
        let mut file = file;
        file.read_to_end(&mut bytes)
            .map_err(|e| IngestError::io(path, e))?;
    }
    Ok(bytes)
}

/// The first file (in sorted path order) anywhere under `root` whose name satisfies `wanted`.
fn find_first(root: &Path, wanted: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())) {
                found.push(p);
            }
        }
    }
    found.sort();
    found.into_iter().next()
}

/// Finds `stem.bin` or `stem.bin.gz` anywhere under `root` (the mirror nests them one level down).
fn find_batch(root: &Path, stem: &str) -> Option<PathBuf> {
    let (plain, gz) = (format!("{stem}.bin"), format!("{stem}.bin.gz"));
    find_first(root, |n| n == plain || n == gz)
}

fn find_file(root: &Path, name: &str) -> Option<PathBuf> {
    find_first(root, |n| n == name)
}

fn parse_meta(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads CIFAR-10 from `path`: a folder of batch files, a folder holding the official tarball,
/// the tarball itself, or a single batch file (then it is the training pool and there is no
/// test pool).
pub fn read(path: &Path) -> Result<Dataset, IngestError> {
    if !path.exists() {
        return Err(IngestError::Dataset {
            path: path.to_path_buf(),
            message: "no such file or folder (run `make data` to fetch CIFAR-10)".into(),
        });
    }
    if path.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".tar.gz") {
            return read_tarball(path);
        }
        let bytes = read_maybe_gz(path)?;
        let stem = name.split('.').next().unwrap_or_default().to_string();
        let first = TRAIN_FILES
            .iter()
            .position(|f| *f == stem)
            .map_or(0, |i| i as i64 * 10_000);
        let records = parse_batch(path, &bytes, first, &name)?;
        return Ok(dataset(default_names(), records, None));
    }
    if let Some(tar) = find_file(path, TARBALL) {
        return read_tarball(&tar);
    }
    let mut train = Vec::new();
    for (i, stem) in TRAIN_FILES.iter().enumerate() {
        let file = find_batch(path, stem).ok_or_else(|| IngestError::Dataset {
            path: path.to_path_buf(),
            message: format!(
                "no {stem}.bin or {stem}.bin.gz found (expected CIFAR-10 in the official binary layout, or {TARBALL}; run `make data`)"
            ),
        })?;
        tracing::info!(file = %file.display(), "reading CIFAR-10 batch");
        let bytes = read_maybe_gz(&file)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        train.extend(parse_batch(&file, &bytes, i as i64 * 10_000, &name)?);
    }
    let test_file = find_batch(path, TEST_FILE).ok_or_else(|| IngestError::Dataset {
        path: path.to_path_buf(),
        message: format!("no {TEST_FILE}.bin or {TEST_FILE}.bin.gz found"),
    })?;
    let bytes = read_maybe_gz(&test_file)?;
    let name = test_file.file_name().unwrap_or_default().to_string_lossy();
    let test = parse_batch(&test_file, &bytes, 50_000, &name)?;
    let names = match find_file(path, "batches.meta.txt") {
        Some(meta) => {
            parse_meta(&std::fs::read_to_string(&meta).map_err(|e| IngestError::io(&meta, e))?)
        }
        None => default_names(),
    };
    if names.len() != 10 {
        return Err(IngestError::Dataset {
            path: path.to_path_buf(),
            message: format!(
                "batches.meta.txt lists {} class names, expected 10",
                names.len()
            ),
        });
    }
    Ok(dataset(names, train, Some(test)))
}

fn default_names() -> Vec<String> {
    CLASS_NAMES.iter().map(|s| s.to_string()).collect()
}

fn dataset(class_names: Vec<String>, train: Vec<Record>, test: Option<Vec<Record>>) -> Dataset {
    Dataset {
        class_names,
        height: SIDE as u32,
        width: SIDE as u32,
        train_pool: train,
        test_pool: test,
    }
}

/// Streams the official tarball: members `cifar-10-batches-bin/{data_batch_N,test_batch}.bin`
/// and `batches.meta.txt`.
fn read_tarball(path: &Path) -> Result<Dataset, IngestError> {
    tracing::info!(file = %path.display(), "reading the CIFAR-10 tarball");
    let file = File::open(path).map_err(|e| IngestError::io(path, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut train: Vec<Option<Vec<Record>>> = vec![None; 5];
    let mut test = None;
    let mut names = default_names();
    for entry in archive.entries().map_err(|e| IngestError::io(path, e))? {
        let mut entry = entry.map_err(|e| IngestError::io(path, e))?;
        let member = entry
            .path()
            .map_err(|e| IngestError::io(path, e))?
            .to_string_lossy()
            .into_owned();
        let base = member.rsplit('/').next().unwrap_or_default().to_string();
        let mut bytes = Vec::new();
        let stem = base.trim_end_matches(".bin");
        let is_batch = base.ends_with(".bin");
        if is_batch || base == "batches.meta.txt" {
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| IngestError::io(path, e))?;
        }
        let label = format!("{}:{member}", path.display());
        if let Some(i) = TRAIN_FILES.iter().position(|f| *f == stem) {
            train[i] = Some(parse_batch(
                Path::new(&label),
                &bytes,
                i as i64 * 10_000,
                &base,
            )?);
        } else if stem == TEST_FILE && is_batch {
            test = Some(parse_batch(Path::new(&label), &bytes, 50_000, &base)?);
        } else if base == "batches.meta.txt" {
            names = parse_meta(&String::from_utf8_lossy(&bytes));
        }
    }
    let mut all = Vec::new();
    for (i, part) in train.into_iter().enumerate() {
        all.extend(part.ok_or_else(|| IngestError::Dataset {
            path: path.to_path_buf(),
            message: format!("the tarball has no {}.bin", TRAIN_FILES[i]),
        })?);
    }
    let test = test.ok_or_else(|| IngestError::Dataset {
        path: path.to_path_buf(),
        message: "the tarball has no test_batch.bin".into(),
    })?;
    Ok(dataset(names, all, Some(test)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_become_hwc() {
        let mut rec = vec![3u8];
        rec.extend(std::iter::repeat_n(10u8, 1024));
        rec.extend(std::iter::repeat_n(20u8, 1024));
        rec.extend(std::iter::repeat_n(30u8, 1024));
        let r = parse_batch(Path::new("x"), &rec, 7, "x").unwrap();
        assert_eq!(r[0].id, 7);
        assert_eq!(r[0].label, 3);
        assert_eq!(&r[0].pixels[..6], &[10, 20, 30, 10, 20, 30]);
    }

    #[test]
    fn truncated_file_is_refused() {
        let e = parse_batch(Path::new("b.bin"), &[0u8; 3074], 0, "b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.bin") && e.contains("3073"), "{e}");
    }
}
