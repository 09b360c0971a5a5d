//! `privynet-bench`: measures the extract stage against ONNX Runtime's own throughput on the
//! same batches (the ceiling), and the extract stage's peak memory for 10,000 and 60,000 images;
//! the training-step throughput of the cloud network and the attacker's IRN against the same
//! networks in PyTorch (`steps`); the train and attack stages end to end; and the optimisation
//! attack's settings on a finished run (`inversion`); `privynet predict` on a finished run's
//! deployed pair against ONNX Runtime alone (`predict`).
//! Prints tables; run it with `make bench` after `make build data`. The figures are the
//! library's; this picks them.

// Keeps freed memory in the process instead of returning it to the OS and faulting it back in
// every training step (the `system-alloc` feature measures without it).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Result, bail};

use privynet_bench::{inversion, kernels, predict, stages, steps};
use privynet_e2e::root;

fn main() -> Result<()> {
    #[cfg(not(feature = "system-alloc"))]
    privynet_nn::memory::keep_freed_memory();
    // `privynet-bench [extract|nn|all|steps [FILTER]|variants]`: one part, or extract and nn
    // (the default). `steps` is nn's in-process table alone (FILTER: the networks whose name
    // contains it), `variants` the IRN variants behind the training-speed proposals, `kernels` the
    // project's convolution kernels against burn's,
    // `inversion [RUN_DIR]` the optimisation attack's settings on a finished run's topologies,
    // `predict [RUN_DIR]` the deployed pair's throughput against ONNX Runtime alone.
    let part = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match part.as_str() {
        "steps" => steps::run(&root(), std::env::args().nth(2).as_deref()),
        "variants" => steps::variants(&root()),
        "kernels" => kernels::run(&root()),
        "inversion" => inversion::run(&root(), std::env::args().nth(2).as_deref()),
        "predict" => predict::run(&root(), std::env::args().nth(2).as_deref()),
        "extract" | "nn" | "all" => {
            if part != "extract" {
                steps::run(&root(), None)?;
            }
            stages::run(&root(), part != "nn", part != "extract")
        }
        _ => {
            bail!(
                "unknown part `{part}`: expected extract, nn, all, steps, kernels, variants, inversion or predict"
            )
        }
    }
}
