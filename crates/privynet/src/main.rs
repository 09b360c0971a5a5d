//! `privynet`: runs a pipeline manifest (`run`), says what is stale and why (`status`), and
//! shows any artifact (`show`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use privynet::dag::{self, Stage};
use privynet::exec::{self, Decision, Outcome, RunOptions};
use privynet::lock::LockFile;

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
        /// divided among them as threads.
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// Show which nodes are stale and why, without running anything.
    Status {
        manifest: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Show an artifact's kind, schema, provenance and first rows.
    Show {
        path: PathBuf,
        /// Rows to show.
        #[arg(long, default_value_t = 5)]
        rows: usize,
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

/// Nodes run at once by default: one per core, at most 4. burn's CPU training scales poorly
/// across threads (on 2 cores one 2-thread process trained the IRN at 1.65-1.7x, the cloud
/// network at 1.5-1.8x its one-thread speed, while two one-thread processes side by side each
/// kept their full speed: `make bench BENCH=steps` with `RAYON_NUM_THREADS=1`), so on small
/// machines many narrow stages beat few wide ones. The cap keeps memory bounded (every attack
/// holds its pool and network) and gives big machines several threads per stage.
fn default_jobs(cores: usize) -> usize {
    cores.clamp(1, 4)
}

fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the privynet binary")?;
    Ok(exe
        .parent()
        .context("the binary has no folder")?
        .to_path_buf())
}

fn stage_arg(name: &str) -> Result<Stage> {
    if let Some(s) = Stage::from_name(name) {
        return Ok(s);
    }
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
    bail!("no stage named `{name}`; stages: {}", names.join(", "));
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Show { path, rows } => {
            print!("{}", privynet::show::render(&path, rows)?);
            Ok(0)
        }
        Cmd::Status { manifest, set } => status(&manifest, &set),
        Cmd::Run {
            manifest,
            set,
            stage,
            topology,
            until,
            force,
            jobs,
        } => {
            let t = Instant::now();
            let mut dag = dag::build(&manifest, &set)
                .with_context(|| format!("planning {}", manifest.display()))?;
            let whole = stage.is_none() && until.is_none();
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            let jobs = jobs.unwrap_or_else(|| default_jobs(cores)).max(1);
            // A `RAYON_NUM_THREADS` the user set reaches the stages as it is.
            let threads = std::env::var_os("RAYON_NUM_THREADS")
                .is_none()
                .then(|| (cores / jobs).max(1));
            println!(
                "pipeline {} -> {}",
                manifest.display(),
                dag.out_dir.display()
            );
            let mut outcomes: Vec<(String, Outcome)> = Vec::new();
            // A model-based run has two passes: the optimizer chooses from the sampled
            // topologies, then the choice (when it was not sampled) is evaluated for real and
            // the optimizer reruns with its measured values. The second pass rebuilds the DAG,
            // which now holds the choice, and skips everything already up to date.
            for pass in 0..3 {
                let selected = select(
                    &dag,
                    stage.as_deref(),
                    until.as_deref(),
                    topology.as_deref(),
                )?;
                let forced: HashSet<usize> = if force && pass == 0 {
                    selected
                        .clone()
                        .unwrap_or_else(|| (0..dag.nodes.len()).collect())
                } else {
                    HashSet::new()
                };
                let opts = RunOptions {
                    selected,
                    force: forced,
                    jobs,
                    threads,
                    bin_dir: bin_dir()?,
                };
                let run = exec::run(&dag, &opts)?;
                let failed = run
                    .values()
                    .any(|o| matches!(o, Outcome::Failed { .. } | Outcome::Blocked { .. }));
                for (i, o) in run {
                    let id = dag.nodes[i].id.clone();
                    outcomes.retain(|(k, _)| *k != id);
                    outcomes.push((id, o));
                }
                if !whole || failed {
                    break;
                }
                let next = dag::build(&manifest, &set)
                    .with_context(|| format!("planning {}", manifest.display()))?;
                let known: HashSet<&str> = dag.nodes.iter().map(|n| n.id.as_str()).collect();
                let new: Vec<&str> = next
                    .nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .filter(|id| !known.contains(id))
                    .collect();
                if new.is_empty() {
                    break;
                }
                println!(
                    "the optimizer chose a topology that was not sampled: evaluating it ({})",
                    new.join(", ")
                );
                dag = next;
            }
            let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
            let failed = count(|o| matches!(o, Outcome::Failed { .. } | Outcome::Blocked { .. }));
            println!(
                "done in {:.1}s: {} ran, {} up to date, {} failed, {} blocked",
                t.elapsed().as_secs_f64(),
                count(|o| matches!(o, Outcome::Ran { .. })),
                count(|o| matches!(o, Outcome::Skipped)),
                count(|o| matches!(o, Outcome::Failed { .. })),
                count(|o| matches!(o, Outcome::Blocked { .. })),
            );
            let mut ran: Vec<(f64, &str)> = outcomes
                .iter()
                .filter_map(|(id, o)| match o {
                    Outcome::Ran { seconds, .. } => Some((*seconds, id.as_str())),
                    _ => None,
                })
                .collect();
            if !ran.is_empty() {
                ran.sort_by(|a, b| b.0.total_cmp(&a.0));
                println!("wall time per node:");
                for (s, id) in ran {
                    println!("  {id:<28} {s:>7.1}s");
                }
            }
            if whole
                && failed == 0
                && let Ok(table) = privynet::show::summary(&dag.out_dir)
            {
                println!("\n{table}");
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}

/// The nodes a run considers: a stage's (optionally one topology's), everything up to a stage,
/// or all (`None`).
fn select(
    dag: &dag::Dag,
    stage: Option<&str>,
    until: Option<&str>,
    topology: Option<&str>,
) -> Result<Option<HashSet<usize>>> {
    Ok(match (stage, until) {
        (Some(s), _) => {
            let nodes = dag.select(stage_arg(s)?, topology);
            if nodes.is_empty() {
                bail!(
                    "no `{s}` node{}",
                    topology
                        .map(|t| format!(" for topology `{t}`"))
                        .unwrap_or_default()
                );
            }
            Some(nodes.into_iter().collect())
        }
        (None, Some(u)) => Some(dag.closure(&dag.select(stage_arg(u)?, topology))),
        (None, None) => None,
    })
}

fn status(manifest: &Path, set: &[String]) -> Result<i32> {
    let dag =
        dag::build(manifest, set).with_context(|| format!("planning {}", manifest.display()))?;
    let mut lock = LockFile::load(&dag.out_dir)?;
    let bins = bin_dir()?;
    let mut stale: HashSet<usize> = HashSet::new();
    for i in dag.order()? {
        let n = &dag.nodes[i];
        let upstream = n.deps.iter().find(|d| stale.contains(d));
        let line = if let Some(d) = upstream {
            stale.insert(i);
            format!(
                "stale    {:<28} (upstream {} will rerun)",
                n.id, dag.nodes[*d].id
            )
        } else {
            let bin = exec::binary(&bins, n.stage.binary())?;
            match exec::decide(&dag, &mut lock, i, &bin)? {
                Decision::UpToDate => format!("ok       {:<28}", n.id),
                Decision::Run(why) => {
                    stale.insert(i);
                    format!("stale    {:<28} ({why})", n.id)
                }
            }
        };
        println!("  {line}");
    }
    println!("{} of {} nodes stale", stale.len(), dag.nodes.len());
    Ok(0)
}
