//! An image folder: one subfolder per class (sorted names give the label order), each holding
//! PNG or JPEG files. Every file must decode as an image; sizes must agree unless a resize is
//! asked for, so a resize is never silent.

use std::path::Path;

use image::imageops::FilterType;

use crate::{Dataset, IngestError, Record};

/// Reads an image folder; `resize` is `[height, width]`.
pub fn read(root: &Path, resize: Option<[u32; 2]>) -> Result<Dataset, IngestError> {
    let entries = std::fs::read_dir(root).map_err(|e| IngestError::io(root, e))?;
    let mut classes: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(IngestError::Dataset {
            path: root.to_path_buf(),
            message: "no class subfolders found (expected one subfolder per class holding PNG or JPEG files)".into(),
        });
    }
    let mut records = Vec::new();
    let mut size: Option<(u32, u32, String)> = None;
    for (label, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| IngestError::io(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        for file in files {
            let rel = file
                .strip_prefix(root)
                .expect("a listed file should lie under the root")
                .display()
                .to_string();
            let img = image::open(&file).map_err(|e| IngestError::Dataset {
                path: file.clone(),
                message: format!("not a readable PNG or JPEG image: {e}"),
            })?;
            let rgb = img.to_rgb8();
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
