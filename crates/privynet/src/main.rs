//! `privynet`: runs a pipeline manifest (`run`), says what is stale and why (`status`), shows
//! any artifact (`show`), and lists the stages (`stages`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use privynet::pipeline::{self, RunRequest};
use privynet_core::manifest::ExecutorKind;

/// PrivyNet-rs: privacy-preserving split training, one stage binary per step.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a pipeline manifest: every stale node of its DAG, in dependency order.
    Run {
        manifest: PathBuf,
        /// Override a manifest value (repeatable), e.g. `--set extract.batch_size=64`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Run only this stage's nodes (their inputs must exist).
        #[arg(long)]
        stage: Option<String>,
        /// With --stage: only this topology (e.g. fire3-d8).
        #[arg(long)]
        topology: Option<String>,
        /// Run this stage's nodes and everything they depend on.
        #[arg(long, conflicts_with = "stage")]
        until: Option<String>,
        /// Run the selected nodes even when up to date.
        #[arg(long)]
        force: bool,
        /// Nodes to run at once (default: the cores, at most 4); each stage gets the cores
        /// divided among them as threads. At least 1.
        #[arg(short, long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        jobs: Option<usize>,
        /// Where the nodes run: `local` (default) or `slurm`, one batch job per node with
        /// afterok dependencies (over the manifest's `executor.kind`).
        #[arg(long)]
        executor: Option<ExecutorKind>,
    },
    /// Show which nodes are stale and why, without running anything.
    Status {
        manifest: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// With `slurm`, also list the run's jobs still queued or running.
        #[arg(long)]
        executor: Option<ExecutorKind>,
    },
    /// Show an artifact's kind, schema, provenance and first rows.
    Show {
        path: PathBuf,
        /// Rows to show.
        #[arg(long, default_value_t = 5)]
        rows: usize,
    },
    /// Classify images with a deployed pair: `privynet-predict` with these arguments (see
    /// `privynet predict --help`), e.g. `--deploy runs/NAME/deploy --images data/cifar-10
    /// --split test -o predictions.parquet` (images.parquet, an image folder or CIFAR-10
    /// binaries; `--local-only --features-out F`, then `--features F`, runs the halves apart).
    #[command(disable_help_flag = true)]
    Predict {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the stages: each one's binary, zone, what it reads and writes, what makes it stale.
    Stages {
        /// Only the names, one per line (what the Makefile's stage targets are).
        #[arg(long)]
        names: bool,
    },
}

fn main() {
    privynet_core::logging::init();
    match run(Cli::parse()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            eprintln!("error: {}", privynet_core::logging::describe(e.as_ref()));
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Predict { args } => {
            // ONNX Runtime stays out of the runner: the stage binary beside it does the work.
            let bin = privynet::exec::binary(&privynet::pipeline::bin_dir()?, "privynet-predict")?;
            let status = std::process::Command::new(&bin)
                .args(&args)
                .status()
                .map_err(|e| anyhow::anyhow!("running {}: {e}", bin.display()))?;
            Ok(status.code().unwrap_or(1))
        }
        Cmd::Stages { names: true } => {
            privynet::stage::Stage::all().for_each(|s| println!("{}", s.name()));
            Ok(0)
        }
        Cmd::Stages { names: false } => {
            print!("{}", privynet::stage::describe());
            Ok(0)
        }
        Cmd::Show { path, rows } => {
            print!("{}", privynet::show::render(&path, rows)?);
            Ok(0)
        }
        Cmd::Status {
            manifest,
            set,
            executor,
        } => {
            pipeline::status(&manifest, &set, executor)?;
            Ok(0)
        }
        Cmd::Run {
            manifest,
            set,
            stage,
            topology,
            until,
            force,
            jobs,
            executor,
        } => {
            let all_finished = pipeline::run(&RunRequest {
                manifest,
                set,
                stage,
                topology,
                until,
                force,
                jobs,
                executor,
            })?;
            Ok(if all_finished { 0 } else { 1 })
        }
    }
}
