//! Helpers for the end-to-end tests: locating the built stage binaries and the data, running
//! a binary and reading what it wrote, and making tiny datasets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub mod compare;

/// The repository root: `PRIVYNET_ROOT` when set (a bench binary run on a copy of the project
/// elsewhere), else the one this was built in.
pub fn root() -> PathBuf {
    std::env::var_os("PRIVYNET_ROOT")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A built stage binary: from `PRIVYNET_BIN_DIR` when set (to compare two builds), else the
/// release build's; an error says how to build it.
pub fn built(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("PRIVYNET_BIN_DIR")
        .map_or_else(|| root().join("target/release"), PathBuf::from);
    let p = dir.join(name);
    if !p.is_file() {
        return Err(format!(
            "{} is not built: run `cargo build --release --workspace --bins` (make build and make test do)",
            p.display()
        ));
    }
    Ok(p)
}

/// A built stage binary (`make test` builds them before running tests).
pub fn bin(name: &str) -> PathBuf {
    built(name).unwrap_or_else(|e| panic!("{e}"))
}

/// A file under data/ (filled by `make data`).
pub fn data(rel: &str) -> PathBuf {
    let p = root().join("data").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make data` (with DATA_MIRROR=../shared/data offline)",
        p.display()
    );
    p
}

/// The real SqueezeNet 1.1 (original fp16 file).
pub fn squeezenet() -> PathBuf {
    data("models/squeezenet1.1_fp16_opset7.onnx")
}

/// The real first CIFAR-10 training batch.
pub fn cifar_batch1() -> PathBuf {
    data("cifar-10/batches-bin-from-jpeg-q75/data_batch_1.bin.gz")
}

/// Runs a binary from the repository root and returns its output.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the binary should start")
}

/// The output's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The output's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts success, printing stderr otherwise.
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Asserts failure with a message containing every `needle`.
pub fn fails_with(o: &Output, needles: &[&str]) {
    assert!(
        !o.status.success(),
        "expected failure, got success:\n{}",
        stderr(o)
    );
    let e = stderr(o);
    for n in needles {
        assert!(e.contains(n), "stderr lacks `{n}`:\n{e}");
    }
}

/// Writes a manifest for the smoke slice of real data into `dir`, with outputs under `dir/out`.
pub fn smoke_manifest(dir: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("pipelines/smoke.yaml"))
        .expect("pipelines/smoke.yaml should exist");
    let text = format!("{text}\nout_dir: {}\n{extra}", dir.join("out").display());
    let p = dir.join("manifest.yaml");
    std::fs::write(&p, text).expect("the temp dir should be writable");
    p
}

/// Slices the manifest's model at `cut`, keeping `channels` (a count or `all`), into `out`
/// (local.onnx, topology.arrow, selection.arrow).
pub fn slice(manifest: &str, cut: &str, channels: &str, out: &Path) {
    ok(&run(
        "privynet-slice",
        &[
            "--manifest",
            manifest,
            "--cut",
            cut,
            "--channels",
            channels,
            "--output",
            out.to_str().unwrap(),
        ],
    ));
}

/// Reads every batch of an Arrow IPC or Parquet artifact of `kind`.
pub fn read_all(path: &Path, kind: privynet_core::ArtifactKind) -> Vec<arrow::array::RecordBatch> {
    if path.extension().is_some_and(|e| e == "parquet") {
        let (_, r) =
            privynet_core::io::open_parquet(path, kind, None, 8192).expect("readable parquet");
        r.collect::<Result<Vec<_>, _>>().expect("readable batches")
    } else {
        privynet_core::io::read_arrow(path, kind)
            .expect("readable arrow")
            .1
    }
}

/// A column of a batch, downcast (the core's helper, panicking as a test should).
pub fn col<'a, T: arrow::array::Array + 'static>(
    b: &'a arrow::array::RecordBatch,
    name: &str,
) -> &'a T {
    privynet_core::column(b, name, Path::new("(test batch)")).unwrap()
}

/// Writes a features file of `rows` (id, label, split, values) with feature shape `shape`.
pub fn write_features(path: &Path, shape: [usize; 3], rows: &[(i64, i32, &str, Vec<f32>)]) {
    use arrow::array::{FixedSizeListArray, Float32Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let len = shape.iter().product::<usize>();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Int32, false),
        Field::new("split", DataType::Utf8, false),
        Field::new(
            "features",
            DataType::FixedSizeList(item.clone(), len as i32),
            false,
        ),
    ]);
    let mut p = privynet_core::Provenance::new("test", "-");
    p.set(
        "feature_shape",
        format!("{},{},{}", shape[0], shape[1], shape[2]),
    );
    p.set("topology", "null");
    p.set("preprocess", "{}");
    let values: Vec<f32> = rows.iter().flat_map(|r| r.3.clone()).collect();
    let batch = arrow::array::RecordBatch::try_new(
        Arc::new(schema.clone()),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(
                FixedSizeListArray::try_new(
                    item,
                    len as i32,
                    Arc::new(Float32Array::from(values)),
                    None,
                )
                .unwrap(),
            ),
        ],
    )
    .unwrap();
    privynet_core::io::write_artifact(
        path,
        privynet_core::ArtifactKind::Features,
        schema,
        &p,
        &[batch],
    )
    .unwrap();
}

/// Kills `child` while it is writing `out`: as soon as the hidden temporary file beside `out`
/// appears (the atomic writers' `.<name>.*.tmp`), not after a fixed delay, which a faster stage
/// outruns. Panics if the child exits before it could be killed mid-write.
pub fn kill_while_writing(mut child: std::process::Child, out: &Path) {
    let dir = out.parent().expect("an output inside a folder");
    let prefix = format!(".{}.", out.file_name().unwrap().to_string_lossy());
    let writing = || {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&prefix) && name.ends_with(".tmp")
            })
        })
    };
    let start = std::time::Instant::now();
    while !writing() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{} finished ({status}) before it could be killed mid-write",
                out.display()
            );
        }
        assert!(
            start.elapsed().as_secs() < 120,
            "{} never started writing",
            out.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Whether the Slurm test cluster is up (started here if need be); false only without Slurm.
pub fn slurm_cluster() -> bool {
    test_service(
        &["sbatch", "slurmctld"],
        "Slurm is not installed (apt-get install slurm-wlm munge, then scripts/slurm-up.sh)",
        "scripts/slurm-up.sh",
    )
}

/// Starts a test service with its script (which leaves one already up alone) when all of
/// `commands` are installed; else says why the test is skipped and returns false.
pub fn test_service(commands: &[&str], missing: &str, script: &str) -> bool {
    let check: Vec<String> = commands.iter().map(|c| format!("command -v {c}")).collect();
    let installed = Command::new("sh")
        .args(["-c", &check.join(" && ")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("skipping: {missing}");
        return false;
    }
    let up = Command::new(root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("{script} should start: {e}"));
    assert!(up.status.success(), "{script} failed:\n{}", stderr(&up));
    true
}

/// The nodes of a run's event log (`events.jsonl` in `out`) with events of `kind` (`ran`,
/// `submitted`, ...), in log order.
pub fn event_nodes(out: &Path, kind: &str) -> Vec<String> {
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == kind)
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect()
}
