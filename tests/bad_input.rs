//! One table of bad inputs across every stage binary and the runner: each case must exit
//! non-zero with a message that names the thing and what was expected, never panic, and leave
//! nothing at its output path. The README lists the categories.

use std::path::{Path, PathBuf};

use privynet_e2e::*;

/// One bad input: the binary, its arguments, the words its error must contain, and the
/// output path that must not exist afterwards.
struct Case {
    name: &'static str,
    bin: &'static str,
    args: Vec<String>,
    expect: Vec<String>,
    out: Option<PathBuf>,
    /// Runs the binary with files limited to this many KiB (`ulimit -f`, SIGXFSZ ignored), so
    /// its writes fail as on a full disk.
    fsize_kib: Option<u32>,
}

/// The valid artifacts the cases start from (the smoke slice of real data), and broken copies.
struct Fixture {
    dir: PathBuf,
    manifest: String,
    images: String,
    conv1: PathBuf,
    fire3: PathBuf,
    features: String,
}

impl Fixture {
    fn new(dir: &Path) -> Self {
        let m = smoke_manifest(dir, "");
        let ms = m.to_str().unwrap().to_string();
        ok(&run("privynet-ingest", &["--manifest", &ms]));
        // The smoke manifest draws selections at random (no Fisher scoring: fast).
        let sliced = |cut: &str| {
            let out = dir.join(format!("{cut}-8"));
            slice(&ms, cut, "8", &out);
            out
        };
        let (conv1, fire3) = (sliced("conv1"), sliced("fire3"));
        let features = dir.join("features.parquet");
        extract(&ms, &conv1, &features);
        let f = Self {
            dir: dir.to_path_buf(),
            manifest: ms,
            images: dir.join("out/images.parquet").display().to_string(),
            conv1,
            fire3,
            features: features.display().to_string(),
        };
        f.write_broken_files();
        f
    }

    /// Broken inputs: truncated and empty artifacts, non-ONNX and truncated models, gzip that
    /// does not decompress, a folder dataset with a corrupt image, a manifest with bad syntax.
    fn write_broken_files(&self) {
        let d = &self.dir;
        let half = |from: &str, to: &str| {
            let bytes = std::fs::read(from).unwrap();
            std::fs::write(d.join(to), &bytes[..bytes.len() / 2]).unwrap();
        };
        half(&self.images, "trunc_images.parquet");
        half(&self.features, "trunc_features.parquet");
        half(squeezenet().to_str().unwrap(), "trunc.onnx");
        std::fs::write(d.join("empty.parquet"), b"").unwrap();
        std::fs::write(d.join("garbage.onnx"), b"this is not a protobuf at all").unwrap();
        // A gzip header followed by bytes that are not a deflate stream.
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(&[0xff; 64]);
        std::fs::write(d.join("data_batch_1.bin.gz"), gz).unwrap();
        let cls = d.join("folder/cat");
        std::fs::create_dir_all(&cls).unwrap();
        let ok_png = image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]));
        ok_png.save(cls.join("good.png")).unwrap();
        std::fs::write(cls.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        std::fs::write(d.join("a_file.txt"), b"a file, not a folder").unwrap();
        std::fs::write(
            d.join("syntax.yaml"),
            "name: x\nseed: 1\ndescription: 'unterminated\n",
        )
        .unwrap();
    }

    fn p(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.join("outs").join(name)
    }
}

fn case(name: &'static str, bin: &'static str, args: &[&str], expect: &[&str]) -> Case {
    Case {
        name,
        bin,
        args: args.iter().map(|s| s.to_string()).collect(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
        out: None,
        fsize_kib: None,
    }
}

impl Case {
    /// The file that must not exist afterwards, when the output is a folder that may rightly
    /// remain (a training run's folder keeps its resume state).
    fn must_not_leave(mut self, path: PathBuf) -> Self {
        self.out = Some(path);
        self
    }

    /// Run with files limited to `kib` KiB.
    fn disk_full(mut self, kib: u32) -> Self {
        self.fsize_kib = Some(kib);
        self
    }

    /// The case's output path (passed as `-o`), which must not exist afterwards.
    fn to(mut self, out: PathBuf) -> Self {
        self.args.push("--output".into());
        self.args.push(out.display().to_string());
        self.out = Some(out);
        self
    }
}

/// The manifest and `--set` cases, through the binaries that read them.
fn manifest_cases(f: &Fixture) -> Vec<Case> {
    let m = f.manifest.as_str();
    let ingest_set = |name, set: &str, expect: &[&str]| {
        case(
            name,
            "privynet-ingest",
            &["--manifest", m, "--set", set],
            expect,
        )
        .to(f.out(name).with_extension("parquet"))
    };
    let syntax = f.p("syntax.yaml");
    let missing = f.p("nope.yaml");
    let dir = f.dir.display().to_string();
    let many: Vec<String> = (1..=64).map(|d| d.to_string()).collect();
    let grid = format!("sweep.channels=[{}]", many.join(","));
    vec![
        case(
            "manifest-syntax",
            "privynet-ingest",
            &["--manifest", &syntax],
            &["syntax.yaml:4", "unexpected end of stream"],
        )
        .to(f.out("manifest-syntax.parquet")),
        case(
            "manifest-missing",
            "privynet-ingest",
            &["--manifest", &missing],
            &["nope.yaml"],
        )
        .to(f.out("manifest-missing.parquet")),
        case(
            "manifest-is-a-folder",
            "privynet-ingest",
            &["--manifest", &dir],
            &[&dir],
        )
        .to(f.out("manifest-is-a-folder.parquet")),
        ingest_set("unknown-key", "train.wdth=3", &["unknown field `wdth`"]),
        ingest_set("wrong-type", "train.epochs=many", &["train", "many"]),
        ingest_set(
            "set-without-value",
            "train.epochs",
            &["train.epochs", "KEY=VALUE"],
        ),
        ingest_set(
            "nan-limit",
            "optimize.limits.max_psnr=.nan",
            &["optimize.limits.max_psnr", "finite"],
        ),
        ingest_set(
            "negative-noise",
            "sweep.noise=[0,-0.5]",
            &["sweep.noise", "-0.5", "finite fraction >= 0"],
        ),
        ingest_set("nan-noise", "sweep.noise=[.nan]", &["sweep.noise", "NaN"]),
        ingest_set(
            "unsupported-bits",
            "sweep.bits=[32,16]",
            &["sweep.bits", "16 bits is not supported", "[32, 8, 4]"],
        ),
        ingest_set(
            "zero-bytes-limit",
            "optimize.limits.max_bytes_per_image=0",
            &["optimize.limits.max_bytes_per_image", "at least 1 byte"],
        ),
        ingest_set(
            "zero-train-split",
            "dataset.splits.train=0",
            &["dataset.splits.train", "at least 1"],
        ),
        ingest_set(
            "negative-lr",
            "train.lr=-0.1",
            &["train.lr", "greater than 0"],
        ),
        ingest_set(
            "infinite-weight-decay",
            "train.weight_decay=.inf",
            &["train.weight_decay", "finite"],
        ),
        ingest_set(
            "zero-victims",
            "attack.victims=0",
            &["attack.victims", "at least 1"],
        ),
        ingest_set(
            "absurd-input-size",
            "model.input_size=100000",
            &["model.input_size", "4096", "100000"],
        ),
        case(
            "grid-explodes",
            "privynet",
            &[
                "status",
                m,
                "--set",
                &grid,
                "--set",
                "sweep.cuts=[conv1,fire2,fire3,fire4,fire5]",
            ],
            &["320 topologies", "sweep.max_topologies"],
        ),
        case(
            "unknown-cut",
            "privynet",
            &["status", m, "--set", "sweep.cuts=[fire42]"],
            &["fire42"],
        ),
        case(
            "zero-jobs",
            "privynet",
            &["run", m, "--jobs", "0"],
            &["--jobs", "0 is not in 1.."],
        ),
    ]
}

/// Stages that cannot write: a full disk (simulated with a file-size limit: every write past it
/// fails) and an output folder that cannot be created.
fn write_failure_cases(f: &Fixture) -> Vec<Case> {
    let m = f.manifest.as_str();
    let local = f.conv1.join("local.onnx").display().to_string();
    let topo = f.conv1.join("topology.arrow").display().to_string();
    vec![
        case(
            "ingest-disk-full",
            "privynet-ingest",
            &["--manifest", m],
            &["ingest-disk-full.parquet", "File too large"],
        )
        .to(f.out("ingest-disk-full.parquet"))
        .disk_full(64),
        case(
            "extract-disk-full",
            "privynet-extract",
            &["--manifest", m, "--model", &local],
            &["extract-disk-full.parquet", "File too large"],
        )
        .to(f.out("extract-disk-full.parquet"))
        .disk_full(64),
        case(
            "train-disk-full",
            "privynet-train",
            &[
                "--manifest",
                m,
                "--features",
                &f.features,
                "--topology",
                &topo,
            ],
            &["train-disk-full", "File too large"],
        )
        .to(f.out("train-disk-full"))
        .must_not_leave(f.out("train-disk-full").join("train_summary.arrow"))
        .disk_full(16),
        case(
            "ingest-unwritable-folder",
            "privynet-ingest",
            &["--manifest", m],
            &["/sys/privynet-test"],
        )
        .to(PathBuf::from("/sys/privynet-test/images.parquet")),
    ]
}

/// The dataset cases of the ingest stage.
fn ingest_cases(f: &Fixture) -> Vec<Case> {
    // `sizes`: the --train and --test values.
    let ingest = |name: &'static str, dataset: &str, sizes: [&str; 2], expect: &[&str]| {
        let args = [
            "--format",
            "cifar10-binary",
            "--dataset",
            dataset,
            "--train",
            sizes[0],
            "--test",
            sizes[1],
        ];
        case(name, "privynet-ingest", &args, expect).to(f.out(name).with_extension("parquet"))
    };
    let gz = f.p("data_batch_1.bin.gz");
    let cifar = cifar_batch1().display().to_string();
    let under_file = f.p("a_file.txt/cifar");
    let folder = f.p("folder");
    vec![
        ingest(
            "gzip-corrupt",
            &gz,
            ["1", "1"],
            &["data_batch_1.bin.gz", "not a valid gzip file"],
        ),
        ingest(
            "dataset-missing",
            &f.p("nope"),
            ["1", "1"],
            &["nope", "make data"],
        ),
        ingest(
            "dataset-under-a-file",
            &under_file,
            ["1", "1"],
            &["a_file.txt"],
        ),
        ingest(
            "splits-too-large",
            &cifar,
            ["20000", "1"],
            &["20001 images", "has 10000"],
        ),
        ingest(
            "ingest-zero-test",
            &cifar,
            ["1", "0"],
            &["dataset.splits.test", "at least 1"],
        ),
        case(
            "corrupt-image-in-folder",
            "privynet-ingest",
            &[
                "--format",
                "image-folder",
                "--dataset",
                &folder,
                "--train",
                "1",
                "--test",
                "1",
            ],
            &["broken.png"],
        )
        .to(f.out("corrupt-image-in-folder.parquet")),
    ]
}

/// The slice stage: models that are not ONNX or are cut short, cuts and counts that do not fit.
fn slice_cases(f: &Fixture) -> Vec<Case> {
    let m = f.manifest.as_str();
    let slice = |name: &'static str, extra: &[&str], expect: &[&str]| {
        let mut args = vec!["--manifest", m, "--method", "random"];
        args.extend_from_slice(extra);
        case(name, "privynet-slice", &args, expect).to(f.out(name))
    };
    let garbage = f.p("garbage.onnx");
    let trunc = f.p("trunc.onnx");
    let nope = f.p("nope.onnx");
    vec![
        slice(
            "onnx-garbage",
            &["--model", &garbage, "--cut", "conv1", "--channels", "8"],
            &["garbage.onnx", "ONNX"],
        ),
        slice(
            "onnx-truncated",
            &["--model", &trunc, "--cut", "conv1", "--channels", "8"],
            &["trunc.onnx"],
        ),
        slice(
            "onnx-missing",
            &["--model", &nope, "--cut", "conv1", "--channels", "8"],
            &["nope.onnx"],
        ),
        slice(
            "slice-unknown-cut",
            &["--cut", "fire42", "--channels", "8"],
            &["fire42"],
        ),
        slice(
            "slice-zero-channels",
            &["--cut", "conv1", "--channels", "0"],
            &["channels", "0"],
        ),
        slice(
            "slice-too-many-channels",
            &["--cut", "conv1", "--channels", "65"],
            &["65", "64"],
        ),
        slice(
            "slice-zero-input",
            &["--cut", "conv1", "--channels", "8", "--input-size", "0"],
            &["input_size", "got 0"],
        ),
        slice(
            "slice-absurd-input",
            &[
                "--cut",
                "conv1",
                "--channels",
                "8",
                "--input-size",
                "100000",
            ],
            &["input_size", "100000"],
        ),
    ]
}

/// The extract stage: inputs of the wrong kind or cut short, settings out of range.
fn extract_cases(f: &Fixture) -> Vec<Case> {
    let m = f.manifest.as_str();
    let local = f.conv1.join("local.onnx").display().to_string();
    let topo = f.conv1.join("topology.arrow").display().to_string();
    let sel = f.conv1.join("selection.arrow").display().to_string();
    let extract = |name: &'static str, extra: &[&str], expect: &[&str]| {
        let mut args = vec!["--manifest", m];
        args.extend_from_slice(extra);
        case(name, "privynet-extract", &args, expect).to(f.out(name).with_extension("parquet"))
    };
    let trunc = f.p("trunc_images.parquet");
    let nope = f.p("nope.onnx");
    vec![
        extract(
            "extract-images-are-features",
            &["--images", &f.features, "--model", &local],
            &["features.parquet", "images"],
        ),
        extract(
            "extract-images-truncated",
            &["--images", &trunc, "--model", &local],
            &["trunc_images.parquet"],
        ),
        extract(
            "extract-batch-zero",
            &["--model", &local, "--batch-size", "0"],
            &["extract.batch_size", "at least 1"],
        ),
        extract(
            "extract-unknown-split",
            &["--model", &local, "--splits", "bogus"],
            &["bogus", "expected one of"],
        ),
        extract("extract-model-missing", &["--model", &nope], &["nope.onnx"]),
        case(
            "defend-short-secret",
            "privynet-defend",
            &[
                "--manifest",
                m,
                "--features",
                &f.features,
                "--topology",
                &topo,
                "--secret",
                &f.p("a_file.txt"),
                "--noise",
                "0.5",
                "--bits",
                "8",
            ],
            &["a_file.txt", "32 bytes"],
        )
        .to(f.out("defend-short-secret.parquet")),
        extract(
            "extract-topology-wrong-kind",
            &["--model", &local, "--topology", &sel],
            &["selection.arrow", "topology"],
        ),
        extract(
            "extract-absurd-input",
            &[
                "--model",
                &local,
                "--topology",
                &topo,
                "--input-size",
                "100000",
            ],
            &["input_size", "100000"],
        ),
    ]
}

/// The cloud training and the attack: features cut short, of another kind or topology, and
/// parameters out of range from flags or `--set`.
fn train_attack_cases(f: &Fixture) -> Vec<Case> {
    let m = f.manifest.as_str();
    let topo = f.conv1.join("topology.arrow").display().to_string();
    let sel = f.conv1.join("selection.arrow").display().to_string();
    let fire3 = f.fire3.join("topology.arrow").display().to_string();
    let train =
        |name: &'static str, features: &str, topology: &str, extra: &[&str], expect: &[&str]| {
            let mut args = vec![
                "--manifest",
                m,
                "--features",
                features,
                "--topology",
                topology,
            ];
            args.extend_from_slice(extra);
            case(name, "privynet-train", &args, expect).to(f.out(name))
        };
    let attack =
        |name: &'static str, features: &str, selection: &str, extra: &[&str], expect: &[&str]| {
            let mut args = vec![
                "--manifest",
                m,
                "--features",
                features,
                "--topology",
                &topo,
                "--selection",
                selection,
            ];
            args.extend_from_slice(extra);
            case(name, "privynet-attack", &args, expect).to(f.out(name))
        };
    let (trunc, empty, nope) = (
        f.p("trunc_features.parquet"),
        f.p("empty.parquet"),
        f.p("nope.parquet"),
    );
    let feats = f.features.as_str();
    vec![
        train(
            "train-features-truncated",
            &trunc,
            &topo,
            &[],
            &["trunc_features.parquet"],
        ),
        train(
            "train-features-empty",
            &empty,
            &topo,
            &[],
            &["empty.parquet"],
        ),
        train(
            "train-on-images",
            &f.images,
            &topo,
            &[],
            &["images.parquet", "local"],
        ),
        train(
            "train-other-topology",
            feats,
            &fire3,
            &[],
            &["features.parquet", "fire3"],
        ),
        train(
            "train-zero-epochs",
            feats,
            &topo,
            &["--epochs", "0"],
            &["train.epochs", "at least 1"],
        ),
        train(
            "train-nan-lr",
            feats,
            &topo,
            &["--set", "train.lr=.nan"],
            &["train.lr", "finite"],
        ),
        attack(
            "attack-zero-epochs",
            feats,
            &sel,
            &["--max-epochs", "0"],
            &["attack.max_epochs", "at least 1"],
        ),
        attack(
            "attack-selection-wrong-kind",
            feats,
            &topo,
            &[],
            &["topology.arrow", "selection"],
        ),
        attack(
            "attack-holdout-out-of-range",
            feats,
            &sel,
            &["--set", "attack.holdout=1.5"],
            &["attack.holdout", "1.5"],
        ),
        attack(
            "attack-pool-larger-than-its-split",
            feats,
            &sel,
            &["--set", "attack.pool=100000"],
            &[
                "attack.pool` = 100000",
                "`attacker` split",
                "holds 100 rows",
            ],
        ),
        attack(
            "attack-victims-larger-than-their-split",
            feats,
            &sel,
            &["--set", "attack.victims=5000"],
            &["attack.victims` = 5000", "`test` split", "holds 100 rows"],
        ),
        attack(
            "attack-features-missing",
            &nope,
            &sel,
            &[],
            &["nope.parquet"],
        ),
    ]
}

/// The characterization and the optimizer: limits that could never bind, inputs of the wrong
/// kind; and `privynet show` on a file cut short.
fn decision_cases(f: &Fixture) -> Vec<Case> {
    let m = f.manifest.as_str();
    let table = f.p("characterization.parquet");
    let optimize = |name: &'static str, characterization: &str, extra: &[&str], expect: &[&str]| {
        let mut args = vec!["--manifest", m, "--characterization", characterization];
        args.extend_from_slice(extra);
        case(name, "privynet-optimize", &args, expect).to(f.out(name))
    };
    let trunc = f.p("trunc_features.parquet");
    let run_dir = f.p("out");
    vec![
        case(
            "characterize-no-run-dir",
            "privynet-characterize",
            &[
                "--manifest",
                m,
                "--run-dir",
                &f.p("nope"),
                "--topologies",
                "conv1-d8",
            ],
            &["nope"],
        )
        .to(f.out("characterize-no-run-dir.parquet")),
        case(
            "characterize-unknown-topology",
            "privynet-characterize",
            &[
                "--manifest",
                m,
                "--run-dir",
                &run_dir,
                "--topologies",
                "fire9-d3",
            ],
            &["fire9-d3"],
        )
        .to(f.out("characterize-unknown-topology.parquet")),
        optimize(
            "optimize-nan-psnr",
            &table,
            &["--max-psnr", "NaN"],
            &["optimize.limits.max_psnr", "finite"],
        ),
        optimize(
            "optimize-inf-psnr",
            &table,
            &["--max-psnr", "inf"],
            &["optimize.limits.max_psnr", "finite"],
        ),
        optimize(
            "optimize-negative-margin",
            &table,
            &["--margin-scale=-1"],
            &["optimize.margin_scale", "-1"],
        ),
        optimize(
            "optimize-negative-macs",
            &table,
            &["--max-macs=-5"],
            &["optimize.limits.max_macs", "negative"],
        ),
        optimize(
            "optimize-wrong-kind",
            &f.images,
            &[],
            &["images.parquet", "characterization"],
        ),
        optimize(
            "optimize-truncated",
            &trunc,
            &[],
            &["trunc_features.parquet"],
        ),
        case(
            "show-truncated",
            "privynet",
            &["show", &trunc],
            &["trunc_features.parquet"],
        ),
    ]
}

/// What went wrong with one case, or `None` when it behaved.
fn check(c: &Case) -> Option<String> {
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let o = match c.fsize_kib {
        None => run(c.bin, &args),
        Some(kib) => std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' XFSZ; ulimit -f \"$0\"; exec \"$@\"",
                &kib.to_string(),
            ])
            .arg(bin(c.bin))
            .args(&args)
            .current_dir(root())
            .output()
            .unwrap(),
    };
    let err = stderr(&o);
    let mut faults = Vec::new();
    if o.status.success() {
        faults.push("exited 0".to_string());
    }
    if o.status.code().is_none() || err.contains("panicked") {
        faults.push("panicked or was killed".to_string());
    }
    for e in &c.expect {
        if !err.contains(e.as_str()) {
            faults.push(format!("message lacks `{e}`"));
        }
    }
    if let Some(out) = c.out.as_ref().filter(|p| p.exists()) {
        faults.push(format!("left {}", out.display()));
    }
    (!faults.is_empty()).then(|| {
        format!(
            "{} ({} {}): {}\n  stderr: {}",
            c.name,
            c.bin,
            c.args.join(" "),
            faults.join("; "),
            err.trim().replace('\n', "\n          ")
        )
    })
}

/// How many cases the table holds (README, "Bad input").
const CASES: usize = 66;

#[test]
fn every_bad_input_is_refused_by_name_without_a_panic_or_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(dir.path());
    std::fs::create_dir_all(dir.path().join("outs")).unwrap();
    let cases: Vec<Case> = [
        manifest_cases(&f),
        write_failure_cases(&f),
        ingest_cases(&f),
        slice_cases(&f),
        extract_cases(&f),
        train_attack_cases(&f),
        decision_cases(&f),
    ]
    .into_iter()
    .flatten()
    .collect();
    // The README states this count: a case added or lost shows here.
    assert_eq!(
        cases.len(),
        CASES,
        "the table's size changed: update CASES and the README"
    );
    let faults: Vec<String> = cases.iter().filter_map(check).collect();
    assert!(
        faults.is_empty(),
        "{} of {} bad inputs were not refused properly:\n{}",
        faults.len(),
        cases.len(),
        faults.join("\n")
    );
}
