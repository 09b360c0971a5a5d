//! The ingest stage from its flags and the manifest to `images.parquet`: [`Request::resolve`]
//! puts the flags over the manifest's `dataset` section, [`run`] reads, splits and writes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use privynet_core::Provenance;
use privynet_core::manifest::{DatasetFormat, ImageCount, Manifest, SplitSizes};

use crate::{IngestError, cifar, folder, split, write};

/// The binary's flags, each overriding its manifest key when given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub format: Option<DatasetFormat>,
    pub dataset: Option<PathBuf>,
    pub train: Option<usize>,
    pub val: Option<usize>,
    pub attacker: Option<usize>,
    pub test: Option<usize>,
    pub resize: Option<[u32; 2]>,
    pub seed: Option<u64>,
    pub output: Option<PathBuf>,
    /// Write the final training's images (`final.train_images`) instead of the splits.
    pub final_images: bool,
}

/// One ingestion, every value resolved from the flags and the manifest.
#[derive(Debug, Clone)]
pub struct Request {
    pub format: DatasetFormat,
    /// The dataset's folder (or CIFAR-10 tarball).
    pub path: PathBuf,
    pub resize: Option<[u32; 2]>,
    pub sizes: SplitSizes,
    pub seed: u64,
    /// The images.parquet to write.
    pub output: PathBuf,
    /// For the final training: the train split grown to this many images, no attacker split.
    pub final_train_images: Option<ImageCount>,
    /// The manifest's name for provenance (`-` when run from flags).
    pub manifest_label: String,
}

/// `--resize HEIGHT,WIDTH` (clap's value parser).
pub fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let (h, w) = s.split_once(',').ok_or("expected HEIGHT,WIDTH")?;
    Ok([
        h.trim().parse().map_err(|_| "HEIGHT is not a number")?,
        w.trim().parse().map_err(|_| "WIDTH is not a number")?,
    ])
}

impl Request {
    /// Puts the flags over the manifest (flags win) and checks the split sizes.
    pub fn resolve(
        flags: &Flags,
        manifest: Option<&Manifest>,
        manifest_label: String,
    ) -> Result<Self, IngestError> {
        let usage = |m: &str| IngestError::Usage(m.to_string());
        let ds = manifest.map(|m| &m.dataset);
        let format = flags
            .format
            .or(ds.map(|d| d.format))
            .ok_or_else(|| usage("no dataset format: pass --format or --manifest"))?;
        let path = flags
            .dataset
            .clone()
            .or_else(|| ds.map(|d| d.path.clone()))
            .ok_or_else(|| usage("no dataset path: pass --dataset or --manifest"))?;
        let resize = flags.resize.or_else(|| ds.and_then(|d| d.resize));
        let sizes = SplitSizes {
            train: flags
                .train
                .or(ds.map(|d| d.splits.train))
                .ok_or_else(|| usage("no train size: pass --train or --manifest"))?,
            val: flags.val.or(ds.map(|d| d.splits.val)).unwrap_or(0),
            attacker: flags
                .attacker
                .or(ds.map(|d| d.splits.attacker))
                .unwrap_or(0),
            test: flags
                .test
                .or(ds.map(|d| d.splits.test))
                .ok_or_else(|| usage("no test size: pass --test or --manifest"))?,
        };
        sizes.validate().map_err(|m| {
            IngestError::Usage(format!("invalid split sizes (manifest and flags): {m}"))
        })?;
        let seed = privynet_core::manifest::seed_of(flags.seed, manifest);
        let final_train_images = if flags.final_images {
            let f = manifest
                .and_then(|m| m.final_training.as_ref())
                .ok_or_else(|| {
                    usage("--final needs a manifest with a `final` section (final.train_images)")
                })?;
            Some(f.train_images)
        } else {
            None
        };
        let output = match (&flags.output, final_train_images) {
            (Some(o), _) => Some(o.clone()),
            (None, Some(_)) => manifest.map(|m| m.out_dir().join("final/images.parquet")),
            (None, None) => privynet_core::manifest::images_of(None, manifest),
        }
        .ok_or_else(|| usage("no output: pass --output or --manifest"))?;
        Ok(Self {
            format,
            path,
            resize,
            sizes,
            seed,
            output,
            final_train_images,
            manifest_label,
        })
    }
}

/// The provenance parameters of an ingestion.
#[derive(serde::Serialize)]
struct Params<'a> {
    format: &'a str,
    dataset: String,
    splits: SplitSizes,
    resize: Option<[u32; 2]>,
    seed: u64,
    /// Only for the final training's images, so the splits' provenance is as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    final_train_images: Option<String>,
}

/// Reads the dataset, draws the splits and writes `req.output`; returns the images per split
/// (train, val, attacker, test).
pub fn run(req: &Request) -> Result<[usize; 4], IngestError> {
    let path = &req.path;
    let start = Instant::now();
    let data = match req.format {
        DatasetFormat::Cifar10Binary => {
            if req.resize.is_some() {
                return Err(IngestError::Usage(
                    "`resize` applies to image folders; CIFAR-10 images are 32x32 (the extract stage resizes to the model's input)".into(),
                ));
            }
            cifar::read(path)
        }
        DatasetFormat::ImageFolder => folder::read(path, req.resize),
    }
    .map_err(step("reading the dataset at", path))?;
    let (classes, h, w) = (data.class_names.clone(), data.height, data.width);
    let read_s = start.elapsed().as_secs_f64();
    let splits = match req.final_train_images {
        None => split::split(data, req.sizes, req.seed),
        Some(n) => split::split_final(data, req.sizes, req.seed, n),
    }
    .map_err(step("drawing splits from", path))?;

    let mut prov = Provenance::new("ingest", &req.manifest_label).with_params(&Params {
        format: match req.format {
            DatasetFormat::Cifar10Binary => "cifar10-binary",
            DatasetFormat::ImageFolder => "image-folder",
        },
        dataset: path.display().to_string(),
        splits: req.sizes,
        resize: req.resize,
        seed: req.seed,
        final_train_images: req.final_train_images.map(|n| n.to_string()),
    });
    prov.add_input(path)
        .map_err(|e| step("hashing", path)(e.into()))?;
    let output = &req.output;
    let counts = write::write_images(output, &splits, &classes, h, w, prov)
        .map_err(step("writing", output))?;
    tracing::info!(
        train = counts[0],
        val = counts[1],
        attacker = counts[2],
        test = counts[3],
        read_s = format!("{read_s:.1}"),
        total_s = format!("{:.1}", start.elapsed().as_secs_f64()),
        "wrote {}",
        output.display()
    );
    Ok(counts)
}

/// Wraps an error with the step it broke and the file it was on.
fn step<'a>(what: &'static str, path: &'a Path) -> impl Fn(IngestError) -> IngestError + 'a {
    move |source| IngestError::Step {
        what,
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: &Flags) -> Result<Request, String> {
        Request::resolve(flags, None, "-".into()).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_alone_resolve_with_defaults() {
        let flags = Flags {
            format: Some(DatasetFormat::ImageFolder),
            dataset: Some("imgs".into()),
            train: Some(8),
            test: Some(2),
            output: Some("out/images.parquet".into()),
            ..Flags::default()
        };
        let req = resolve(&flags).unwrap();
        assert_eq!((req.sizes.val, req.sizes.attacker), (0, 0));
        assert_eq!(req.seed, privynet_core::manifest::seed_of(None, None));
        assert_eq!(req.output, Path::new("out/images.parquet"));
    }

    #[test]
    fn a_missing_setting_names_its_flag() {
        let e = resolve(&Flags::default()).unwrap_err();
        assert_eq!(e, "no dataset format: pass --format or --manifest");
        let flags = Flags {
            format: Some(DatasetFormat::Cifar10Binary),
            dataset: Some("c".into()),
            train: Some(1),
            ..Flags::default()
        };
        assert_eq!(
            resolve(&flags).unwrap_err(),
            "no test size: pass --test or --manifest"
        );
    }

    #[test]
    fn resize_is_refused_for_cifar() {
        let req = Request {
            format: DatasetFormat::Cifar10Binary,
            path: "missing".into(),
            resize: Some([8, 8]),
            sizes: SplitSizes {
                train: 1,
                val: 0,
                attacker: 0,
                test: 1,
            },
            seed: 0,
            output: "images.parquet".into(),
            final_train_images: None,
            manifest_label: "-".into(),
        };
        let e = run(&req).unwrap_err().to_string();
        assert!(e.starts_with("`resize` applies to image folders"), "{e}");
    }

    #[test]
    fn sizes_parse_as_height_comma_width() {
        assert_eq!(parse_size("24, 32"), Ok([24, 32]));
        assert!(parse_size("24").is_err());
        assert!(parse_size("a,1").is_err());
    }
}
