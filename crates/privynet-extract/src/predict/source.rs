//! What `--images` points at, told apart by its form (images.parquet, a folder of PNG or JPEG
//! images, CIFAR-10 binaries), and its images in batches preprocessed as the card says. Folders
//! and CIFAR-10 are read with the ingest stage's readers, so an image gets the pixels, label
//! and id that ingest gives it.

use std::path::{Path, PathBuf};

use privynet_core::manifest::Preprocess;
use privynet_ingest::{cifar, folder};

use crate::ExtractError;
use crate::extract::{ExtractConfig, Prepared, prepare};
use crate::preprocess::{SizeMismatch, preprocess_into};

/// The split written for images from a folder, which has no splits.
pub const UNSPLIT: &str = "unsplit";
/// The label written for an image whose class is unknown (a flat folder).
pub const UNKNOWN_LABEL: i32 = -1;
/// The CIFAR-10 batch files, in the order ingest numbers their images, with their splits.
const CIFAR_FILES: [(&str, &str); 6] = [
    ("data_batch_1", "train"),
    ("data_batch_2", "train"),
    ("data_batch_3", "train"),
    ("data_batch_4", "train"),
    ("data_batch_5", "train"),
    (CIFAR_TEST, "test"),
];
const CIFAR_TEST: &str = "test_batch";
/// Ingest numbers test_batch's images after the 50,000 training images; a single batch file
/// read alone starts at 0, so its ids are shifted to match images.parquet's.
const CIFAR_TEST_FIRST_ID: i64 = 50_000;
/// Images per CIFAR-10 batch file (for progress only).
const CIFAR_BATCH_IMAGES: u64 = 10_000;

/// The form of `--images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagesForm {
    /// images.parquet from privynet-ingest.
    Parquet(PathBuf),
    /// One subfolder per class: an image's label is its class folder's index in sorted order,
    /// as ingest labels it.
    ClassFolders(PathBuf),
    /// Images of unknown class, labelled [`UNKNOWN_LABEL`].
    FlatFolder(PathBuf),
    /// CIFAR-10 batch files: a folder holding them (or a subfolder that does), or one file.
    Cifar(PathBuf),
}

/// Tells the form of `path` by what it is, naming what was expected when it is none.
pub fn detect(path: &Path) -> Result<ImagesForm, ExtractError> {
    let none = |found: &str| ExtractError::ImagesForm {
        path: path.to_path_buf(),
        found: found.to_string(),
    };
    if path.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        return if name.ends_with(".parquet") {
            Ok(ImagesForm::Parquet(path.to_path_buf()))
        } else if name.ends_with(".bin") || name.ends_with(".bin.gz") {
            Ok(ImagesForm::Cifar(path.to_path_buf()))
        } else {
            Err(none(
                "a file that is neither .parquet nor a CIFAR-10 batch (.bin, .bin.gz)",
            ))
        };
    }
    if !path.is_dir() {
        return Err(none("no such file or folder"));
    }
    if cifar_dir(path).is_some() {
        return Ok(ImagesForm::Cifar(path.to_path_buf()));
    }
    let subfolders = folder::class_names(path)?;
    let images = folder::files(path)?.into_iter().any(|f| is_image(&f));
    match (subfolders.is_empty(), images) {
        (false, false) => Ok(ImagesForm::ClassFolders(path.to_path_buf())),
        (true, true) => Ok(ImagesForm::FlatFolder(path.to_path_buf())),
        // Which would be meant is a guess: ingest would read the subfolders and skip the rest.
        (false, true) => Err(none("a folder holding both images and subfolders")),
        (true, false) => Err(none(
            "a folder holding no images, class subfolders or CIFAR-10 batch files",
        )),
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg"))
}

/// `stem.bin` or `stem.bin.gz` in `dir`.
fn batch_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.bin"), format!("{stem}.bin.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The folder holding CIFAR-10 batch files: `root` or one of its subfolders (the data mirror
/// nests them one level down, as ingest allows).
fn cifar_dir(root: &Path) -> Option<PathBuf> {
    let subfolders = folder::class_names(root).unwrap_or_default();
    std::iter::once(root.to_path_buf())
        .chain(subfolders.into_iter().map(|n| root.join(n)))
        .find(|d| CIFAR_FILES.iter().any(|(s, _)| batch_file(d, s).is_some()))
}

/// What the images are read for: the splits, and the local network's input.
#[derive(Debug, Clone)]
pub(crate) struct Look {
    pub(crate) splits: Vec<String>,
    pub(crate) preprocess: Preprocess,
    pub(crate) size: u32,
    pub(crate) batch_size: usize,
    /// The classes the cloud network knows: a class folder must hold as many subfolders.
    pub(crate) classes: usize,
}

impl Look {
    fn wants(&self, split: &str) -> bool {
        self.splits.is_empty() || self.splits.iter().any(|s| s == split)
    }
}

/// A stream of preprocessed batches.
pub(crate) type Batches = Box<dyn Iterator<Item = Result<Prepared, ExtractError>>>;

/// The images of `form` in the wanted splits, in preprocessed batches, and how many images
/// the stream will read (for progress).
pub(crate) fn open(form: &ImagesForm, look: &Look) -> Result<(Batches, u64), ExtractError> {
    check_splits(form, look)?;
    match form {
        ImagesForm::Parquet(path) => open_parquet(path, look),
        ImagesForm::ClassFolders(root) => {
            let entries = class_entries(root, look.classes)?;
            Ok(folder_batches(entries, look))
        }
        ImagesForm::FlatFolder(root) => {
            let entries = folder::files(root)?
                .into_iter()
                .map(|f| (UNKNOWN_LABEL, f))
                .collect();
            Ok(folder_batches(entries, look))
        }
        ImagesForm::Cifar(path) => Ok(cifar_batches(cifar_files(path, look)?, look)),
    }
}

/// Refuses a `--split` the form has no images of: a folder has no splits, CIFAR-10 only
/// `train` and `test`.
fn check_splits(form: &ImagesForm, look: &Look) -> Result<(), ExtractError> {
    let (allowed, what): (&[&str], &str) = match form {
        ImagesForm::Parquet(_) => return Ok(()),
        ImagesForm::ClassFolders(_) | ImagesForm::FlatFolder(_) => (
            &[UNSPLIT],
            "a folder of images has no splits (its images are written with split `unsplit`)",
        ),
        ImagesForm::Cifar(_) => (
            &["train", "test"],
            "CIFAR-10 binaries hold the splits `train` (data_batch_1 to 5) and `test` (test_batch)",
        ),
    };
    match look.splits.iter().find(|s| !allowed.contains(&s.as_str())) {
        Some(s) => Err(ExtractError::Usage(format!("--split {s}: {what}"))),
        None => Ok(()),
    }
}

fn open_parquet(path: &Path, look: &Look) -> Result<(Batches, u64), ExtractError> {
    let wanted = (!look.splits.is_empty()).then_some(look.splits.as_slice());
    let (_, reader, total) = privynet_core::io::open_parquet_splits(
        path,
        privynet_core::ArtifactKind::Images,
        Some(&["id", "label", "split", "height", "width", "pixels"]),
        look.batch_size,
        wanted,
    )?;
    // The extract stage's own preparation: the same split filter, preprocessing and errors.
    let cfg = ExtractConfig {
        images: path.to_path_buf(),
        model: PathBuf::new(),
        output: PathBuf::new(),
        topology: None,
        preprocess: look.preprocess.clone(),
        input_size: look.size,
        splits: look.splits.clone(),
        batch_size: look.batch_size,
        dtype: privynet_core::manifest::FeatureDtype::Float32,
        threads: None,
        shard: None,
    };
    Ok((Box::new(reader.map(move |b| prepare(&cfg, b))), total))
}

/// Every image of a class folder with its label, which must mean what the cloud network
/// learnt: as many class subfolders as it has classes.
fn class_entries(root: &Path, classes: usize) -> Result<Vec<(i32, PathBuf)>, ExtractError> {
    let names = folder::class_names(root)?;
    if names.len() != classes {
        return Err(ExtractError::Input {
            path: root.to_path_buf(),
            message: format!(
                "{} class subfolders, but the cloud network knows {classes} classes: an image's label is its subfolder's index in sorted order, so the folder needs one subfolder per class (or use a flat folder of images, whose labels are unknown)",
                names.len()
            ),
        });
    }
    let mut entries = Vec::new();
    for (label, name) in names.iter().enumerate() {
        let files = folder::files(&root.join(name))?;
        entries.extend(files.into_iter().map(|f| (label as i32, f)));
    }
    Ok(entries)
}

/// One image before preprocessing, with where it came from for errors.
struct Raw {
    id: i64,
    label: i32,
    split: String,
    file: PathBuf,
    /// The record inside `file` (CIFAR-10), when the file holds several images.
    record: Option<String>,
    height: u32,
    width: u32,
    pixels: Vec<u8>,
}

/// Splits `items` into batches of `n` without copying them.
fn in_batches<T>(items: Vec<T>, n: usize) -> impl Iterator<Item = Vec<T>> {
    let mut items = items.into_iter();
    std::iter::from_fn(move || {
        let b: Vec<T> = items.by_ref().take(n.max(1)).collect();
        (!b.is_empty()).then_some(b)
    })
}

/// A folder's images (label, file), decoded a batch at a time so memory does not grow with
/// the folder; ids are positions in sorted order, as ingest numbers them.
fn folder_batches(entries: Vec<(i32, PathBuf)>, look: &Look) -> (Batches, u64) {
    let total = entries.len() as u64;
    let numbered: Vec<(i64, i32, PathBuf)> = entries
        .into_iter()
        .enumerate()
        .map(|(id, (label, file))| (id as i64, label, file))
        .collect();
    let look = look.clone();
    let batches = in_batches(numbered, look.batch_size).map(move |chunk| {
        let raws = chunk
            .into_iter()
            .map(|(id, label, file)| {
                let rgb = folder::decode(&file)?;
                Ok(Raw {
                    id,
                    label,
                    split: UNSPLIT.to_string(),
                    file,
                    record: None,
                    height: rgb.height(),
                    width: rgb.width(),
                    pixels: rgb.into_raw(),
                })
            })
            .collect::<Result<Vec<_>, ExtractError>>()?;
        preprocess_batch(raws, &look)
    });
    (Box::new(batches), total)
}

/// The batch files to read and their splits: the one file given, or the folder's files of the
/// wanted splits (all of them for a named split, naming the one that is missing).
fn cifar_files(path: &Path, look: &Look) -> Result<Vec<(&'static str, PathBuf)>, ExtractError> {
    if path.is_file() {
        // A single file holds one split, by its name; ingest reads any other as training.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let split = if name.starts_with(&format!("{CIFAR_TEST}.")) {
            "test"
        } else {
            "train"
        };
        let wanted = look.wants(split).then(|| (split, path.to_path_buf()));
        return Ok(wanted.into_iter().collect());
    }
    let dir = cifar_dir(path).unwrap_or_else(|| path.to_path_buf());
    let mut out = Vec::new();
    for (stem, split) in CIFAR_FILES {
        match batch_file(&dir, stem) {
            Some(f) if look.wants(split) => out.push((split, f)),
            None if !look.splits.is_empty() && look.wants(split) => {
                return Err(ExtractError::Input {
                    path: dir,
                    message: format!(
                        "no {stem}.bin or {stem}.bin.gz, which the `{split}` split needs"
                    ),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

type RawBatches = Box<dyn Iterator<Item = Result<Vec<Raw>, ExtractError>>>;

/// The images of CIFAR-10 batch files, read one file at a time with ingest's reader.
fn cifar_batches(files: Vec<(&'static str, PathBuf)>, look: &Look) -> (Batches, u64) {
    let total = files.len() as u64 * CIFAR_BATCH_IMAGES;
    let n = look.batch_size;
    let look = look.clone();
    let batches = files
        .into_iter()
        .flat_map(move |(split, file)| -> RawBatches {
            match read_cifar(split, &file) {
                Ok(raws) => Box::new(in_batches(raws, n).map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        })
        .map(move |raws| raws.and_then(|r| preprocess_batch(r, &look)));
    (Box::new(batches), total)
}

/// One batch file's images, numbered as ingest numbers them in a folder.
fn read_cifar(split: &str, file: &Path) -> Result<Vec<Raw>, ExtractError> {
    // A single file is read as a training pool: its records come back in `train_pool`.
    let data = cifar::read(file)?;
    let shift = if split == "test" {
        CIFAR_TEST_FIRST_ID
    } else {
        0
    };
    Ok(data
        .train_pool
        .into_iter()
        .map(|r| Raw {
            id: r.id + shift,
            label: r.label,
            split: split.to_string(),
            file: file.to_path_buf(),
            record: Some(r.source),
            height: data.height,
            width: data.width,
            pixels: r.pixels,
        })
        .collect())
}

/// Preprocesses a batch of images into the local network's input.
fn preprocess_batch(raws: Vec<Raw>, look: &Look) -> Result<Prepared, ExtractError> {
    let per_image = 3 * (look.size * look.size) as usize;
    let mut input = vec![0.0; raws.len() * per_image];
    for (r, out) in raws.iter().zip(input.chunks_mut(per_image)) {
        preprocess_into(
            &r.pixels,
            r.height,
            r.width,
            &look.preprocess,
            look.size,
            out,
        )
        .map_err(|e| size_error(r, &e))?;
    }
    Ok(Prepared {
        read: raws.len(),
        ids: raws.iter().map(|r| r.id).collect(),
        labels: raws.iter().map(|r| r.label).collect(),
        splits: raws.into_iter().map(|r| r.split).collect(),
        input,
    })
}

/// An image the card does not resize to the local network's input, named by file (and
/// record).
fn size_error(r: &Raw, e: &SizeMismatch) -> ExtractError {
    let record = r
        .record
        .as_ref()
        .map(|s| format!("{s}: "))
        .unwrap_or_default();
    ExtractError::Input {
        path: r.file.clone(),
        message: format!(
            "{record}image is {}x{} (HxW), but the local network takes {n}x{n} and card.json's preprocess does not resize (`resize: none`)",
            e.height,
            e.width,
            n = e.input_size
        ),
    }
}
