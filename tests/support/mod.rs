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

/// A built stage binary: from `PRIVYNET_BIN_DIR` when set (to compare two builds, taken as
/// they are), else the release build's, refused when a source it is built from is newer than
/// it (so `cargo test` alone never runs stale binaries without saying so); an error says how to
/// build it.
pub fn built(name: &str) -> Result<PathBuf, String> {
    let given = std::env::var_os("PRIVYNET_BIN_DIR").map(PathBuf::from);
    let dir = given
        .clone()
        .unwrap_or_else(|| root().join("target/release"));
    let p = dir.join(name);
    let build = "run `cargo build --release --workspace --bins` (make build and make test do)";
    if !p.is_file() {
        return Err(format!("{} is not built: {build}", p.display()));
    }
    if given.is_none()
        && let Some(newer) = source_newer_than(name, &p)
    {
        return Err(format!(
            "{} is older than {}, which it is built from: {build}",
            p.display(),
            newer.display()
        ));
    }
    Ok(p)
}

/// A source file of binary `name` (the `.rs` files of its crate and of the workspace crates it
/// depends on, other binaries' own files excepted, and the schemas the core embeds) modified
/// after `binary`, if any. Cargo relinks a binary exactly when one of these changes, so a newer
/// one means the binary is stale.
pub fn source_newer_than(name: &str, binary: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let crates = root().join("crates");
    let owner = owner_of(&crates, name)?;
    let mut stack: Vec<PathBuf> = workspace_crates_of(&crates, &owner)
        .into_iter()
        .map(|c| crates.join(c).join("src"))
        .collect();
    stack.push(root().join("schemas"));
    // Another binary's entry point is not compiled into this one.
    let own_main = crates.join(&owner).join("src/main.rs");
    let own_bin = crates
        .join(&owner)
        .join("src/bin")
        .join(format!("{name}.rs"));
    let other_binary = |p: &Path| {
        let entry =
            p.ends_with("src/main.rs") || p.parent().is_some_and(|d| d.ends_with("src/bin"));
        entry && p != own_bin && !(p == own_main && owner == name)
    };
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("src/bin") || p.starts_with(crates.join(&owner)) {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs" || x == "yaml")
                && !other_binary(&p)
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > built)
            {
                return Some(p);
            }
        }
    }
    None
}

/// The crate folder under `crates` whose package builds binary `name` (`src/main.rs` of the
/// package of that name, or `src/bin/<name>.rs`).
fn owner_of(crates: &Path, name: &str) -> Option<String> {
    std::fs::read_dir(crates).ok()?.flatten().find_map(|e| {
        let dir = e.path();
        let own = dir.file_name()?.to_string_lossy().into_owned();
        let main = own == name && dir.join("src/main.rs").is_file();
        (main || dir.join("src/bin").join(format!("{name}.rs")).is_file()).then_some(own)
    })
}

/// `krate` and the workspace crates it depends on, directly or not (by the `privynet-*` names
/// in the `[dependencies]` of their Cargo.toml files).
fn workspace_crates_of(crates: &Path, krate: &str) -> Vec<String> {
    let mut seen = vec![krate.to_string()];
    let mut i = 0;
    while i < seen.len() {
        let manifest =
            std::fs::read_to_string(crates.join(&seen[i]).join("Cargo.toml")).unwrap_or_default();
        let deps = manifest
            .split("\n[")
            .find(|section| section.starts_with("dependencies]"))
            .unwrap_or_default();
        for line in deps.lines() {
            let dep = line.split(['.', ' ', '=']).next().unwrap_or_default();
            if dep.starts_with("privynet-")
                && crates.join(dep).is_dir()
                && !seen.iter().any(|s| s == dep)
            {
                seen.push(dep.to_string());
            }
        }
        i += 1;
    }
    seen
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
    let _ = slice_with(manifest, cut, channels, out, &[]);
}

/// [`slice`] with more arguments (`--method`, `--images`, ...); returns the slicer's log.
pub fn slice_with(manifest: &str, cut: &str, channels: &str, out: &Path, extra: &[&str]) -> String {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "--manifest",
        manifest,
        "--cut",
        cut,
        "--channels",
        channels,
        "--output",
        out,
    ];
    args.extend_from_slice(extra);
    let o = run("privynet-slice", &args);
    ok(&o);
    stderr(&o)
}

/// Extracts the features of the manifest's images through the local network that [`slice`]
/// wrote into `sliced`, to `output`.
pub fn extract(manifest: &str, sliced: &Path, output: &Path) {
    ok(&run(
        "privynet-extract",
        &[
            "--manifest",
            manifest,
            "--model",
            sliced.join("local.onnx").to_str().unwrap(),
            "--topology",
            sliced.join("topology.arrow").to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
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

/// Whether the Slurm test cluster is up (started here if need be); false only where Slurm is
/// missing and the user opted out of its checks.
pub fn slurm_cluster() -> bool {
    test_service(
        "slurm",
        &["sbatch", "slurmctld"],
        "Slurm is not installed (apt-get install slurm-wlm munge, then scripts/slurm-up.sh; make test does both)",
        "scripts/slurm-up.sh",
    )
}

/// The environment variable that lists the checks a user opts out of (comma-separated names,
/// or `all`), on a machine that cannot have what they need (no root for apt-get, say).
pub const OPT_OUT: &str = "PRIVYNET_TEST_OPT_OUT";

/// A check named `check` cannot run here because of `why`. It fails the test, unless the user
/// opted out of it with [`OPT_OUT`]: a skip is never silent. An opted-out check is recorded in
/// `target/test-opt-outs.txt`, which `make test` counts in its last line.
pub fn unavailable(check: &str, why: &str) {
    let opted = std::env::var(OPT_OUT).is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|n| n == check || n == "all")
    });
    assert!(
        opted,
        "the `{check}` checks cannot run: {why}. To run the other tests without them, set {OPT_OUT}={check} (or all)"
    );
    eprintln!("OPTED OUT ({OPT_OUT}): `{check}`: {why}");
    let record = root().join("target/test-opt-outs.txt");
    if let Some(dir) = record.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let line = format!("{check}: {why}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

/// Starts a test service with its script (which leaves one already up alone) when all of
/// `commands` are installed. Where one is missing the `check` is [`unavailable`]: the test
/// fails, or returns false when the user opted out of it.
pub fn test_service(check: &str, commands: &[&str], missing: &str, script: &str) -> bool {
    let check_cmds: Vec<String> = commands.iter().map(|c| format!("command -v {c}")).collect();
    let installed = Command::new("sh")
        .args(["-c", &check_cmds.join(" && ")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        unavailable(check, missing);
        return false;
    }
    let up = Command::new(root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("{script} should start: {e}"));
    assert!(up.status.success(), "{script} failed:\n{}", stderr(&up));
    true
}

/// The Python that has polars and pyarrow (under .cache/python, which `make test` fills):
/// a command with PYTHONPATH set, or `None` where the user opted out of the `python` checks.
pub fn python() -> Option<Command> {
    let pylib = root().join(".cache/python");
    let has = Command::new("python3")
        .args(["-c", "import polars, pyarrow"])
        .env("PYTHONPATH", &pylib)
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        unavailable(
            "python",
            "python3 cannot import polars and pyarrow from .cache/python (python3 -m pip install --target .cache/python polars pyarrow; make test does)",
        );
        return None;
    }
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", pylib);
    Some(c)
}

/// A model file in data/models (or the shared mirror beside the repository), or `None` where
/// it is missing and the user opted out of the `mirror-models` checks (EfficientNet-Lite0 and
/// SqueezeNet's fp32 export have no official ONNX file: only a mirror holds them).
pub fn mirrored_model(name: &str) -> Option<PathBuf> {
    let found = [
        root().join("data/models").join(name),
        root().join("../shared/data/models").join(name),
    ]
    .into_iter()
    .find(|p| p.is_file());
    if found.is_none() {
        unavailable(
            "mirror-models",
            &format!(
                "{name} is in neither data/models nor ../shared/data/models (make data with a mirror that holds it)"
            ),
        );
    }
    found
}

/// The nodes of a run's event log (`events.jsonl` in `out`) with events of `kind` (`ran`,
/// `submitted`, ...), in log order. Only whole lines count: a run still going may be
/// mid-append when this reads.
pub fn event_nodes(out: &Path, kind: &str) -> Vec<String> {
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let whole = &events[..events.rfind('\n').map_or(0, |i| i + 1)];
    whole
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == kind)
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect()
}
