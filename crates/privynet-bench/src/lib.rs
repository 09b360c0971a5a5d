//! The benchmarks behind `make bench`, one module per figure: the extract stage against ONNX
//! Runtime's own throughput and its peak memory (`extract`), the train and attack stages end to
//! end (`training`), both on a fresh ingestion (`stages`), the training-step throughput of the
//! cloud network and the IRN against PyTorch (`steps`), with the arithmetic and the gemm peak
//! behind its GFLOP/s (`flops`), the project's own kernels against burn's (`kernels`), the
//! optimisation attack's settings (`inversion`), `privynet predict` against ONNX Runtime's own throughput (`predict`);
//! `process` runs and measures the stage binaries.
//!
//! Each figure measures and prints in one function; the binary only picks the figures. Errors
//! are `anyhow`'s, as in a binary: nothing recovers from a failed measurement, it is reported.

pub mod extract;
pub mod flops;
pub mod inversion;
pub mod kernels;
pub mod predict;
pub mod process;
pub mod stages;
pub mod steps;
pub mod training;
