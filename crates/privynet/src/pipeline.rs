//! `privynet run` and `privynet status`: which nodes the command line selects, the passes of
//! a model-based run, and what is printed along the way and at the end.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use privynet_core::Manifest;
use privynet_core::manifest::{ExecutorKind, ExecutorSpec};

use crate::RunError;
use crate::dag::{self, Dag, Node, Stage};
use crate::exec::{self, Decision, Outcome, RunOptions};
use crate::hold::RunFolder;
use crate::lock::LockFile;
use crate::slurm::{SlurmExecutor, ZoneSplit};

/// What `privynet run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub manifest: PathBuf,
    /// `--set KEY=VALUE` overrides of the manifest.
    pub set: Vec<String>,
    /// Only this stage's nodes.
    pub stage: Option<String>,
    /// With `stage` (or `until`): only this topology's nodes.
    pub topology: Option<String>,
    /// This stage's nodes and everything they depend on.
    pub until: Option<String>,
    /// Run the selected nodes even when up to date (in the first pass).
    pub force: bool,
    /// Nodes run at once; `None` for [`default_jobs`] of the cores (local executor only).
    pub jobs: Option<usize>,
    /// Where the nodes run, over the manifest's `executor.kind`.
    pub executor: Option<ExecutorKind>,
}

/// Nodes run at once by default: one per core, at most 4. burn's CPU training scales poorly
/// across threads (on 2 cores one 2-thread process trained the IRN at 1.65-1.7x, the cloud
/// network at 1.5-1.8x its one-thread speed, while two one-thread processes side by side each
/// kept their full speed: `make bench BENCH=steps` with `RAYON_NUM_THREADS=1`), so on small
/// machines many narrow stages beat few wide ones. The cap keeps memory bounded (every attack
/// holds its pool and network) and gives big machines several threads per stage.
pub fn default_jobs(cores: usize) -> usize {
    cores.clamp(1, 4)
}

/// The folder holding the stage binaries: the running executable's own.
pub fn bin_dir() -> Result<PathBuf, RunError> {
    let exe = std::env::current_exe()
        .map_err(|e| RunError::context("locating the privynet binary", e))?;
    Ok(exe
        .parent()
        .ok_or_else(|| RunError::Dag("the binary has no folder".into()))?
        .to_path_buf())
}

/// The DAG of a manifest, an error saying which manifest it was planning.
pub fn plan(manifest: &Path, set: &[String]) -> Result<Dag, RunError> {
    dag::build(manifest, set)
        .map_err(|e| RunError::context(format!("planning {}", manifest.display()), e))
}

fn stage_named(name: &str) -> Result<Stage, RunError> {
    if let Some(stage) = Stage::from_name(name) {
        return Ok(stage);
    }
    let names: Vec<&str> = Stage::all().map(|s| s.name()).collect();
    Err(RunError::Dag(format!(
        "no stage named `{name}`; stages: {}",
        names.join(", ")
    )))
}

/// The nodes a run considers: a stage's (optionally one topology's), everything up to a stage,
/// or all (`None`).
pub fn select(
    dag: &Dag,
    stage: Option<&str>,
    until: Option<&str>,
    topology: Option<&str>,
) -> Result<Option<HashSet<usize>>, RunError> {
    Ok(match (stage, until) {
        (Some(s), _) => {
            let nodes = dag.select(stage_named(s)?, topology);
            if nodes.is_empty() {
                return Err(RunError::Dag(format!(
                    "no `{s}` node{}",
                    topology
                        .map(|t| format!(" for topology `{t}`"))
                        .unwrap_or_default()
                )));
            }
            Some(nodes.into_iter().collect())
        }
        (None, Some(u)) => Some(dag.closure(&dag.select(stage_named(u)?, topology))),
        (None, None) => None,
    })
}

/// How each node of a run ended, by id, in the order they first ended; a later pass's outcome
/// replaces an earlier one's.
type Outcomes = Vec<(String, Outcome)>;

/// Runs a manifest's pipeline as `privynet run` does and prints its summary; true when no
/// node failed or was blocked.
pub fn run(request: &RunRequest) -> Result<bool, RunError> {
    let started = Instant::now();
    let mut dag = plan(&request.manifest, &request.set)?;
    let whole = request.stage.is_none() && request.until.is_none();
    let (jobs, threads) = parallelism(request.jobs);
    let executor = executor_of(request)?;
    // Held until the run returns: a second runner on this folder is refused at once.
    let _folder = RunFolder::hold(&dag.out_dir)?;
    println!(
        "pipeline {} -> {}",
        request.manifest.display(),
        dag.out_dir.display()
    );
    let mut outcomes: Outcomes = Vec::new();
    // A model-based run has two passes: the optimizer chooses from the sampled topologies,
    // then the choice (when it was not sampled) is evaluated for real and the optimizer reruns
    // with its measured values. The second pass rebuilds the DAG, which now holds the choice,
    // and skips everything already up to date.
    for pass in 0..3 {
        let failed = run_pass(
            &dag,
            request,
            pass == 0,
            (jobs, threads),
            &executor,
            &mut outcomes,
        )?;
        if !whole || failed {
            break;
        }
        match next_pass(&dag, request)? {
            Some(next) => dag = next,
            None => break,
        }
    }
    let failed = print_summary(&outcomes, started);
    if whole
        && failed == 0
        && let Ok(table) = crate::show::summary(&dag.out_dir)
    {
        println!("\n{table}");
    }
    Ok(failed == 0)
}

/// Where a run's nodes run, resolved from the flag and the manifest.
enum Executor {
    Local,
    /// The manifest's Slurm settings, and the flag the Ctrl-C handler sets.
    Slurm(Box<privynet_core::manifest::SlurmSpec>, Arc<AtomicBool>),
}

/// The executor of a run: `--executor`, else the manifest's `executor.kind`. For Slurm, Ctrl-C
/// cancels the submitted jobs (the executor sees the flag) and the run ends as failed.
fn executor_of(request: &RunRequest) -> Result<Executor, RunError> {
    let spec = executor_spec(&request.manifest, &request.set)?;
    match request.executor.unwrap_or(spec.kind) {
        ExecutorKind::Local => Ok(Executor::Local),
        ExecutorKind::Slurm => {
            let interrupted = Arc::new(AtomicBool::new(false));
            let flag = interrupted.clone();
            ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
                .map_err(|e| RunError::context("installing the Ctrl-C handler", e))?;
            Ok(Executor::Slurm(Box::new(spec.slurm), interrupted))
        }
    }
}

/// The manifest's `executor` section.
fn executor_spec(manifest: &Path, set: &[String]) -> Result<ExecutorSpec, RunError> {
    let m = Manifest::load(manifest, set)
        .map_err(|e| RunError::context(format!("planning {}", manifest.display()), e))?;
    Ok(m.executor)
}

/// The nodes run at once (`jobs`, else [`default_jobs`] of the cores) and the threads each
/// stage gets (the cores divided among them), unless the user set `RAYON_NUM_THREADS`: that
/// reaches the stages as it is.
fn parallelism(jobs: Option<usize>) -> (usize, Option<usize>) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let jobs = jobs.unwrap_or_else(|| default_jobs(cores)).max(1);
    let threads = std::env::var_os("RAYON_NUM_THREADS")
        .is_none()
        .then(|| (cores / jobs).max(1));
    (jobs, threads)
}

/// Runs the selected nodes of the DAG once (forcing them in the first pass if asked), and
/// records how each ended in `outcomes`; true when one failed or was blocked.
fn run_pass(
    dag: &Dag,
    request: &RunRequest,
    first: bool,
    (jobs, threads): (usize, Option<usize>),
    executor: &Executor,
    outcomes: &mut Outcomes,
) -> Result<bool, RunError> {
    let selected = select(
        dag,
        request.stage.as_deref(),
        request.until.as_deref(),
        request.topology.as_deref(),
    )?;
    let force: HashSet<usize> = if request.force && first {
        selected
            .clone()
            .unwrap_or_else(|| (0..dag.nodes.len()).collect())
    } else {
        HashSet::new()
    };
    let opts = RunOptions {
        selected,
        force,
        jobs,
        threads,
        bin_dir: bin_dir()?,
    };
    let ended = match executor {
        Executor::Local => exec::run(dag, &opts)?,
        Executor::Slurm(spec, interrupted) => {
            let set_threads = threads.is_some();
            let mut slurm = SlurmExecutor::new(
                (**spec).clone(),
                &dag.out_dir,
                set_threads,
                interrupted.clone(),
            )?;
            if cloud_is_remote(dag) {
                // Only the cloud stages go to the cluster; the rest stay with the user.
                let here = exec::LocalExecutor::new(opts.threads, opts.jobs);
                exec::run_with(dag, &opts, &mut ZoneSplit::new(here, slurm))?
            } else {
                exec::run_with(dag, &opts, &mut slurm)?
            }
        }
    };
    let failed = ended.values().any(unfinished);
    for (i, outcome) in ended {
        let id = dag.nodes[i].id.clone();
        // A node that ran in an earlier pass and is up to date in this one ran: the summary
        // counts it so.
        let ran_before = outcomes
            .iter()
            .any(|(k, o)| *k == id && matches!(o, Outcome::Ran { .. }));
        if ran_before && matches!(outcome, Outcome::Skipped) {
            continue;
        }
        outcomes.retain(|(k, _)| *k != id);
        outcomes.push((id, outcome));
    }
    Ok(failed)
}

/// Whether the cloud zone is in object storage (some node writes to an object-store URL).
fn cloud_is_remote(dag: &Dag) -> bool {
    dag.nodes
        .iter()
        .any(|n| n.outputs.iter().any(|o| privynet_store::is_remote(o)))
}

fn unfinished(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed { .. } | Outcome::Blocked { .. })
}

/// The DAG replanned after a pass, when it holds nodes the last one did not (the optimizer's
/// choice, evaluated for real); `None` when the run is complete.
fn next_pass(dag: &Dag, request: &RunRequest) -> Result<Option<Dag>, RunError> {
    let next = plan(&request.manifest, &request.set)?;
    let known: HashMap<&str, Vec<&Path>> = dag
        .nodes
        .iter()
        .map(|n| {
            (
                n.id.as_str(),
                n.inputs.iter().map(|i| i.path.as_path()).collect(),
            )
        })
        .collect();
    // A node is new, or reads other files than it was planned with (the deployment, after
    // the optimizer changed its choice).
    let new: Vec<&Node> = next
        .nodes
        .iter()
        .filter(|n| {
            known.get(n.id.as_str()).is_none_or(|ins| {
                !ins.iter()
                    .copied()
                    .eq(n.inputs.iter().map(|i| i.path.as_path()))
            })
        })
        .collect();
    if new.is_empty() {
        return Ok(None);
    }
    let after_decision = [
        Stage::FinalExtract,
        Stage::FinalDefend,
        Stage::FinalTrain,
        Stage::Deploy,
    ];
    if new.iter().all(|n| after_decision.contains(&n.stage)) {
        if new.iter().any(|n| n.stage != Stage::Deploy) {
            println!("training the choice for deployment");
        } else {
            println!("deploying the choice");
        }
    } else {
        let ids: Vec<&str> = new.iter().map(|n| n.id.as_str()).collect();
        println!(
            "the optimizer chose a topology that was not sampled: evaluating it ({})",
            ids.join(", ")
        );
    }
    Ok(Some(next))
}

/// Prints the counts of the run's outcomes and the wall time of each node that ran; returns
/// how many nodes failed or were blocked.
fn print_summary(outcomes: &Outcomes, started: Instant) -> usize {
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let failed = count(unfinished);
    println!(
        "done in {:.1}s: {} ran, {} up to date, {} failed, {} blocked",
        started.elapsed().as_secs_f64(),
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
        for (seconds, id) in ran {
            println!("  {id:<36} {seconds:>7.1}s");
        }
    }
    failed
}

/// Prints, as `privynet status` does, whether each node is up to date or why it would run,
/// and with Slurm the run's jobs still queued or running.
pub fn status(
    manifest: &Path,
    set: &[String],
    executor: Option<ExecutorKind>,
) -> Result<(), RunError> {
    let dag = plan(manifest, set)?;
    if executor.unwrap_or(executor_spec(manifest, set)?.kind) == ExecutorKind::Slurm {
        let queue = crate::slurm::queue_lines(&dag.out_dir)?;
        println!("{} Slurm jobs of this run in the queue", queue.len());
        for line in queue {
            println!("  {line}");
        }
    }
    let mut lock = LockFile::load(&dag.out_dir)?;
    let bins = bin_dir()?;
    let mut stale: HashSet<usize> = HashSet::new();
    for i in dag.order()? {
        let n = &dag.nodes[i];
        let upstream = n.deps.iter().find(|d| stale.contains(d));
        let line = if let Some(d) = upstream {
            stale.insert(i);
            format!(
                "stale    {:<36} (upstream {} will rerun)",
                n.id, dag.nodes[*d].id
            )
        } else {
            let bin = exec::binary(&bins, n.stage.binary())?;
            match exec::decide(&dag, &mut lock, i, &bin)? {
                Decision::UpToDate => format!("ok       {:<36}", n.id),
                Decision::Run(why) => {
                    stale.insert(i);
                    format!("stale    {:<36} ({why})", n.id)
                }
            }
        };
        println!("  {line}");
    }
    println!("{} of {} nodes stale", stale.len(), dag.nodes.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dag::{Input, Node};

    fn node(id: &str, stage: Stage, topology: Option<&str>, input: &str, output: &str) -> Node {
        Node {
            id: id.into(),
            stage,
            topology: topology.map(str::to_string),
            inputs: vec![Input {
                path: PathBuf::from(input),
                kind: None,
            }],
            outputs: vec![PathBuf::from(output)],
            params: BTreeMap::new(),
            args: vec![],
            deps: vec![],
        }
    }

    /// ingest -> slice/a, slice/b -> extract/a.
    fn dag() -> Dag {
        let mut dag = Dag {
            nodes: vec![
                node("ingest", Stage::Ingest, None, "/", "/nonexistent/images"),
                node(
                    "slice/a",
                    Stage::Slice,
                    Some("a"),
                    "/nonexistent/images",
                    "/nonexistent/a",
                ),
                node(
                    "slice/b",
                    Stage::Slice,
                    Some("b"),
                    "/nonexistent/images",
                    "/nonexistent/b",
                ),
                node(
                    "extract/a",
                    Stage::Extract,
                    Some("a"),
                    "/nonexistent/a",
                    "/nonexistent/fa",
                ),
            ],
            out_dir: PathBuf::from("/nonexistent"),
        };
        dag.link().unwrap();
        dag
    }

    #[test]
    fn the_command_line_selects_nodes() {
        let dag = dag();
        assert_eq!(select(&dag, None, None, None).unwrap(), None);
        let slices = select(&dag, Some("slice"), None, None).unwrap();
        assert_eq!(slices, Some(HashSet::from([1, 2])));
        let one = select(&dag, Some("slice"), None, Some("b")).unwrap();
        assert_eq!(one, Some(HashSet::from([2])));
        let upto = select(&dag, None, Some("extract"), None).unwrap();
        assert_eq!(upto, Some(HashSet::from([0, 1, 3])));
    }

    #[test]
    fn a_bad_selection_is_named() {
        let dag = dag();
        let e = select(&dag, Some("slcie"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no stage named `slcie`; stages: ingest, slice,"),
            "{e}"
        );
        let e = select(&dag, Some("train"), None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "no `train` node");
        let e = select(&dag, Some("slice"), None, Some("c"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "no `slice` node for topology `c`");
    }

    #[test]
    fn jobs_default_to_the_cores_up_to_four() {
        assert_eq!(default_jobs(0), 1);
        assert_eq!(default_jobs(2), 2);
        assert_eq!(default_jobs(64), 4);
    }

    #[test]
    fn planning_errors_name_the_manifest() {
        let e = plan(Path::new("/nonexistent/m.yaml"), &[]).unwrap_err();
        let text = privynet_core::logging::describe(&e);
        assert!(text.starts_with("planning /nonexistent/m.yaml: "), "{text}");
    }
}
