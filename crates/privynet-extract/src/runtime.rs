//! ONNX Runtime, loaded at run time from the project's cache (`.cache/onnxruntime`, filled by
//! `make ort`) or from `ORT_DYLIB_PATH`, so users never export anything by hand.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::{Array4, ArrayView4, Ix4};
use ort::session::Session;
use ort::value::TensorRef;

use crate::ExtractError;

const LIB: &str = "libonnxruntime.so";

/// Where the library is looked for, in order.
pub fn candidates() -> Vec<PathBuf> {
    // An explicit ORT_DYLIB_PATH is the only place looked at: a user who names a library
    // wants that one, not a silent fallback.
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    // Walk up from the binary (target/release/privynet-x) and from the working directory to
    // find the repository's cache.
    let mut roots = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(5).map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")));
    for r in roots {
        out.push(r.join(".cache/onnxruntime").join(LIB));
    }
    out
}

/// The ONNX Runtime library path that will be loaded.
pub fn library_path() -> Result<PathBuf, ExtractError> {
    let c = candidates();
    c.iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| ExtractError::NoRuntime {
            looked: c
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn environment() -> Result<&'static ort::environment::Environment, ExtractError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        tracing::debug!(library = %path.display(), "loading ONNX Runtime");
        ort::init_from(&path)
            .map_err(|e| format!("loading {}: {e}", path.display()))?
            .with_name("privynet")
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ExtractError::Ort(e.clone()))
}

/// An input's or output's declared dimensions; ONNX Runtime says -1 for an open one.
fn dims(outlet: &ort::value::Outlet) -> Vec<Option<usize>> {
    outlet
        .dtype()
        .tensor_shape()
        .map(|s| s.iter().map(|&d| usize::try_from(d).ok()).collect())
        .unwrap_or_default()
}

/// One ONNX Runtime session over a model with a single image input and a named output.
pub struct Runner {
    session: Session,
    input: String,
    output: String,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("input", &self.input)
            .field("output", &self.output)
            .finish()
    }
}

impl Runner {
    /// Opens a session; the model must have an output named `output`. Its worker threads sleep
    /// when idle rather than spin, so that the pipeline's reader and encoders get the cores
    /// between batches.
    pub fn open(path: &Path, output: &str, threads: Option<usize>) -> Result<Self, ExtractError> {
        Self::open_with_spinning(path, output, threads, false)
    }

    /// As [`Runner::open`], choosing whether idle worker threads spin (ONNX Runtime's default,
    /// fastest when nothing else needs the cores).
    pub fn open_with_spinning(
        path: &Path,
        output: &str,
        threads: Option<usize>,
        spin: bool,
    ) -> Result<Self, ExtractError> {
        if !path.is_file() {
            return Err(ExtractError::Model {
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        let env = environment()?;
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let session = Session::builder(env)?
            .with_intra_threads(threads)?
            .with_intra_op_spinning(spin)?
            .commit_from_file(path)
            .map_err(|e| ExtractError::Model {
                path: path.to_path_buf(),
                message: format!("ONNX Runtime cannot load it: {e}"),
            })?;
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        if !outputs.iter().any(|o| o == output) {
            return Err(ExtractError::Model {
                path: path.to_path_buf(),
                message: format!(
                    "has no output named `{output}` (its outputs: {}); a local network from `privynet-slice` has exactly one output, `features`",
                    outputs.join(", ")
                ),
            });
        }
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(ExtractError::Model {
                path: path.to_path_buf(),
                message: format!(
                    "expected one input, found {}: {}",
                    inputs.len(),
                    inputs.join(", ")
                ),
            });
        };
        Ok(Self {
            input: input.clone(),
            session,
            output: output.to_string(),
        })
    }

    /// The declared shape of the model's input (`None` for a dimension it leaves open, such
    /// as the batch).
    pub fn input_dims(&self) -> Vec<Option<usize>> {
        self.session.inputs().first().map(dims).unwrap_or_default()
    }

    /// The declared shape of the output this runner returns.
    pub fn output_dims(&self) -> Vec<Option<usize>> {
        let outputs = self.session.outputs();
        outputs
            .iter()
            .find(|o| o.name() == self.output)
            .map(dims)
            .unwrap_or_default()
    }

    /// Runs a batch and returns every output of the model by name (for checks against the
    /// full model's intermediate tensors).
    pub fn run_all(
        &mut self,
        x: ArrayView4<'_, f32>,
    ) -> Result<std::collections::BTreeMap<String, ndarray::ArrayD<f32>>, ExtractError> {
        let tensor = TensorRef::from_array_view(x)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])?;
        let mut out = std::collections::BTreeMap::new();
        for (name, value) in outputs.iter() {
            out.insert(
                name.to_string(),
                value.try_extract_array::<f32>()?.to_owned(),
            );
        }
        Ok(out)
    }

    /// Runs a batch [N, C, H, W] and returns the output [N, D, H', W'].
    pub fn run(&mut self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, ExtractError> {
        let tensor = TensorRef::from_array_view(x)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])?;
        let y = outputs[self.output.as_str()].try_extract_array::<f32>()?;
        y.to_owned()
            .into_dimensionality::<Ix4>()
            .map_err(|e| ExtractError::Ort(format!("output `{}` is not rank 4: {e}", self.output)))
    }
}
