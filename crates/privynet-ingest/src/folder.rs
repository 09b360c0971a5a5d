//! An image folder: one subfolder per class (sorted names give the label order), each holding
//! PNG or JPEG files. Every file must decode as an image; sizes must agree unless a resize is
//! asked for, so a resize is never silent.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::{Dataset, IngestError, Record};

fn hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The class subfolders of `root`, sorted: a class's label is its index here (also what
/// `privynet-predict` labels an image folder by).
pub fn class_names(root: &Path) -> Result<Vec<String>, IngestError> {
    let entries = std::fs::read_dir(root).map_err(|e| IngestError::io(root, e))?;
    let mut classes: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir() && !hidden(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    Ok(classes)
}

/// The files of `dir` (not its subfolders), sorted, hidden ones left out.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| IngestError::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !hidden(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Decodes one image file as RGB, naming the file when it is not a readable image.
pub fn decode(file: &Path) -> Result<image::RgbImage, IngestError> {
    let img = image::open(file).map_err(|e| IngestError::Dataset {
        path: file.to_path_buf(),
        message: format!("not a readable PNG or JPEG image: {e}"),
    })?;
    Ok(img.to_rgb8())
}

/// Reads an image folder; `resize` is `[height, width]`.
pub fn read(root: &Path, resize: Option<[u32; 2]>) -> Result<Dataset, IngestError> {
    let classes = class_names(root)?;
    if classes.is_empty() {
        return Err(IngestError::Dataset {
            path: root.to_path_buf(),
            message: "no class subfolders found (expected one subfolder per class holding PNG or JPEG files)".into(),
        });
    }
    let mut records = Vec::new();
    let mut size: Option<(u32, u32, String)> = None;
    for (label, class) in classes.iter().enumerate() {
        for file in files(&root.join(class))? {
            let rel = file
                .strip_prefix(root)
                .expect("a listed file should lie under the root")
                .display()
                .to_string();
            let rgb = decode(&file)?;
            let rgb = match resize {
                Some([h, w]) if rgb.height() != h || rgb.width() != w => {
                    image::imageops::resize(&rgb, w, h, FilterType::Triangle)
                }
                Some(_) => rgb,
                None => {
                    match &size {
                        Some((h, w, first)) if (*h, *w) != (rgb.height(), rgb.width()) => {
                            return Err(IngestError::Dataset {
                                path: file.clone(),
                                message: format!(
                                    "image is {}x{} (HxW) but {first} is {h}x{w}; set `dataset.resize: [H, W]` in the manifest to resize them",
                                    rgb.height(),
                                    rgb.width()
                                ),
                            });
                        }
                        Some(_) => {}
                        None => size = Some((rgb.height(), rgb.width(), rel.clone())),
                    }
                    rgb
                }
            };
            records.push(Record {
                id: records.len() as i64,
                label: label as i32,
                source: rel,
                pixels: rgb.into_raw(),
            });
        }
    }
    if records.is_empty() {
        return Err(IngestError::Dataset {
            path: root.to_path_buf(),
            message: "the class subfolders hold no images".into(),
        });
    }
    let (height, width) = match (resize, size) {
        (Some([h, w]), _) => (h, w),
        (None, Some((h, w, _))) => (h, w),
        (None, None) => unreachable!("a non-empty folder without resize sets the size"),
    };
    Ok(Dataset {
        class_names: classes,
        height,
        width,
        train_pool: records,
        test_pool: None,
    })
}
