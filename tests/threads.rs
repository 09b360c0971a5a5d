//! The stages whose nodes the runner gives every core when they start alone
//! (`Stage::takes_idle_cores`: training and the attack) write the same bits on one thread and
//! on three, on the smoke slice of real CIFAR-10 through the real SqueezeNet at fire3 (7x7
//! maps, so the kernels split their work into several tiles).

use privynet_e2e::*;
use std::path::Path;
use std::process::Command;

/// Runs stage `name` with `args` on `threads` worker threads.
fn on_threads(name: &str, args: &[&str], threads: usize) {
    let o = Command::new(bin(name))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .current_dir(root())
        .output()
        .expect("the binary should start");
    ok(&o);
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn training_and_the_attack_give_the_same_bits_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let m = smoke_manifest(dir.path(), "");
    let ms = m.to_str().unwrap();
    let sets = ["--set", "sweep.cuts=[fire3]", "--set", "sweep.channels=[8]"];
    let mut args = vec!["run", ms, "--until", "extract"];
    args.extend_from_slice(&sets);
    ok(&run("privynet", &args));
    let (out, topo) = (dir.path().join("out"), dir.path().join("out/fire3-d8"));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (features, topology) = (
        path(&topo.join("features.parquet")),
        path(&topo.join("topology.arrow")),
    );

    for threads in [1, 3] {
        let o = path(&dir.path().join(format!("train-{threads}")));
        let train = [
            "--manifest",
            ms,
            "--features",
            &features,
            "--topology",
            &topology,
            "--epochs",
            "1",
            "--output",
            &o,
        ];
        on_threads("privynet-train", &train, threads);
        let o = path(&dir.path().join(format!("attack-{threads}")));
        let (images, selection) = (
            path(&out.join("images.parquet")),
            path(&topo.join("selection.arrow")),
        );
        let local = path(&topo.join("local.onnx"));
        let attack = [
            "--manifest",
            ms,
            "--images",
            &images,
            "--features",
            &features,
            "--topology",
            &topology,
            "--selection",
            &selection,
            "--local-network",
            &local,
            "--max-epochs",
            "1",
            "--set",
            "attack.optimization.iterations=5",
            "--set",
            "attack.modes=[known-selection]",
            "--output",
            &o,
        ];
        on_threads("privynet-attack", &attack, threads);
    }
    for file in [
        "train-{}/cloud_model.bpk",
        "attack-{}/privacy.parquet",
        "attack-{}/reconstructions.png",
    ] {
        let [one, three] =
            [1, 3].map(|t| bytes(&dir.path().join(file.replace("{}", &t.to_string()))));
        assert!(one == three, "{file}: one thread and three differ");
    }
}
