#!/usr/bin/env python3
"""Model zoo check: which torchvision architectures and ONNX exporters privynet-slice supports.

For each model (--models) and exporter (--exporters: dynamo, torchscript) it exports
torchvision.models.<name>(weights=None), with seeded random batch norms and biases, to
DIR/<name>-<exporter>.onnx; lists its cut points (`privynet-slice --list`); slices it at a
middle cut keeping every channel; checks the local network against ONNX Runtime's value of
the cut tensor in the full model (pass: max abs diff / max(1, max |value|) <= 1e-4); and
compares the two exporters' cut-point tables. With --burn it also runs privynet-nn's `zoo`
test (`cargo test --release -p privynet-nn --test local_net zoo`) on DIR.

It prints one line per (model, exporter), then a summary with the library versions, and exits
1 if anything failed: an export, listing or slicing error, a listing that stops at an
unsupported op, a cut that resolved to another tensor than the listing's, a difference over
the tolerance, tables that differ between exporters, or the burn test.

Needs Python 3.9+ with torch 2.9+, torchvision, onnx, onnxscript, onnxruntime, numpy and
pyarrow, and the release binaries (`cargo build --release`, or --bin DIR). The weights are
random (nothing is downloaded). Run it from the repository root; relative paths that do not
exist there are taken relative to the repository. It is a manual tool: no test or CI runs it.

    python scripts/model-zoo.py [--out DIR] [--models resnet18,...] [--exporters dynamo,torchscript]
                                [--input-size 224] [--bin target/release] [--burn]
"""

import argparse
import contextlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = "resnet18,mobilenet_v2,mobilenet_v3_small,shufflenet_v2_x1_0"
EXPORTERS = ("dynamo", "torchscript")
TOLERANCE = 1e-4
TABLE_KEYS = ("layer", "channels", "height", "width", "macs", "params")


class Failure(Exception):
    """A failed step, with the one-line message to print on the model's line."""


def parse_args():
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/privynet-zoo", help="folder for exports and slices")
    p.add_argument("--models", default=MODELS, help="comma-separated torchvision model names")
    p.add_argument("--exporters", default=",".join(EXPORTERS), help="dynamo and/or torchscript")
    p.add_argument("--input-size", type=int, default=224, help="square input size S")
    p.add_argument("--bin", default="target/release", help="folder of privynet-slice")
    p.add_argument("--burn", action="store_true", help="also run privynet-nn's zoo test on --out")
    args = p.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.exporters = [e for e in args.exporters.split(",") if e]
    bad = [e for e in args.exporters if e not in EXPORTERS]
    if bad:
        p.error(f"unknown exporter {bad[0]!r}: choose from {', '.join(EXPORTERS)}")
    args.out = Path(args.out).absolute()
    slicer = Path(args.bin) / "privynet-slice"
    args.slicer = slicer if slicer.exists() else ROOT / slicer
    if not args.slicer.exists():
        p.error(f"{slicer} not found: build it with `cargo build --release` or pass --bin")
    return args


def first_line(err):
    """The first non-empty line of an exception's message, prefixed with its type."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return line if isinstance(err, Failure) else f"{type(err).__name__}: {line}"


@contextlib.contextmanager
def quiet():
    """Silences Python warnings and everything written to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def build_model(name):
    """torchvision's `name` with seeded random weights and batch-norm statistics, in eval mode.

    Random running statistics and affine parameters make the exporters' batch-norm folding
    leave non-zero conv biases, and the biases torchvision initialises to zero (MobileNetV3's
    squeeze-excitation convs) get random values too: the dynamo exporter drops all-zero
    biases, which would make the exporters' parameter counts differ for no slicer reason."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model.eval()


def export(model, exporter, path, size):
    """Exports `model` to `path` with `exporter`, input `input`, output `logits`, dynamic batch."""
    import torch

    x = torch.randn(1, 3, size, size)
    common = dict(input_names=["input"], output_names=["logits"])
    with quiet():
        if exporter == "dynamo":
            dims = {"x": {0: torch.export.Dim("batch")}}
            torch.onnx.export(model, (x,), str(path), dynamic_shapes=dims, dynamo=True, **common)
        else:
            axes = {"input": {0: "N"}, "logits": {0: "N"}}
            torch.onnx.export(model, (x,), str(path), dynamic_axes=axes, dynamo=False, **common)


def slicer_run(slicer, *args):
    """Runs privynet-slice with `args`: its stdout and stderr, or Failure with its error."""
    proc = subprocess.run([str(slicer), *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if l.strip()] or ["(no message)"]
        errors = [l for l in lines if l.startswith("error")]
        raise Failure(f"privynet-slice failed (exit {proc.returncode}): {(errors or lines)[-1]}")
    return proc.stdout + proc.stderr


def list_cuts(slicer, model, size, arrow):
    """The cut points of `model` (rows of the Arrow listing) and where the listing stopped."""
    import pyarrow.ipc

    text = slicer_run(slicer, "--list", model, "--input-size", size, "-o", arrow)
    rows = pyarrow.ipc.open_file(arrow).read_all().to_pylist()
    stop = re.search(r"listing stops at node `([^`]*)`: op (\S+)", text)
    return rows, (f"{stop[1]} ({stop[2]})" if stop else None)


def pick_cut(rows):
    """The middle cut: the named cut point nearest the middle, else the middle one by tensor.

    Returns the --cut argument and the chosen row."""
    named = [r for r in rows if r["layer"] is not None]
    if named:
        row = min(named, key=lambda r: (abs(r["index"] - len(rows) / 2), r["index"]))
        return row["layer"], row
    row = rows[len(rows) // 2]
    return row["name"], row


def slice_at(slicer, model, size, cut, folder):
    """Slices `model` at `cut` keeping every channel (seed 0) into `folder`.

    Returns the tensor the slicer cut at (from topology.arrow) and the selection's channels
    in position order."""
    import pyarrow.ipc

    slicer_run(slicer, "--model", model, "--input-size", size, "--cut", cut,
               "--channels", "all", "--seed", 0, "-o", folder)
    topo = pyarrow.ipc.open_file(folder / "topology.arrow").read_all().to_pylist()[0]
    sel = pyarrow.ipc.open_file(folder / "selection.arrow").read_all().to_pylist()
    return topo["cut"], [r["channel"] for r in sorted(sel, key=lambda r: r["position"])]


def run_onnx(path, x, outputs=None):
    """ONNX Runtime's `outputs` (default: all) of the model at `path` on `x`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(outputs, {sess.get_inputs()[0].name: x})


def check_local(model, folder, tensor, channels, size):
    """Max abs difference between local.onnx and the full model's `tensor` (channels reordered
    by the selection) on a seeded random [2, 3, S, S] input, and that tensor's max |value|."""
    import numpy as np
    import onnx

    # Load without the external data: the probe model sits next to the original, so its
    # references to the original's .onnx.data still resolve.
    proto = onnx.load(str(model), load_external_data=False)
    if tensor not in [o.name for o in proto.graph.output]:
        proto.graph.output.append(onnx.ValueInfoProto(name=tensor))
    probe = model.with_suffix(".probe.onnx")
    onnx.save(proto, str(probe))
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    try:
        (full,) = run_onnx(probe, x, [tensor])
    except Exception as err:
        raise Failure(f"ONNX Runtime cannot give the cut tensor `{tensor}`: {first_line(err)}")
    finally:
        probe.unlink()
    (local,) = run_onnx(folder / "local.onnx", x)
    expected = full[:, channels]
    if local.shape != expected.shape:
        raise Failure(f"local network gives {list(local.shape)}, full model {list(expected.shape)}")
    return float(np.abs(local - expected).max()), float(np.abs(expected).max())


def shape(row):
    """A cut point's CxHxW."""
    return f"{row['channels']}x{row['height']}x{row['width']}"


def compare_tables(mine, other, other_name):
    """'same table as OTHER', or the first row where the two listings differ."""
    for a, b in zip(mine, other):
        if any(a[k] != b[k] for k in TABLE_KEYS):
            def row(r):
                return f"{r['layer'] or '-'} {shape(r)} {r['macs']} MACs {r['params']} params"
            return False, f"differs from {other_name} at #{a['index']}: {row(a)} vs {row(b)}"
    if len(mine) != len(other):
        return False, f"{len(mine)} vs {len(other)} cut points in {other_name}"
    return True, f"same table as {other_name}"


def check_one(args, model, name, exporter):
    """Exports, lists, slices and checks one (model, exporter).

    Returns (ok, line text without the table comparison, listing rows)."""
    path = args.out / f"{name}-{exporter}.onnx"
    try:
        export(model, exporter, path, args.input_size)
    except Exception as err:
        raise Failure(f"export failed: {first_line(err)}")
    rows, stop = list_cuts(args.slicer, path, args.input_size, path.with_suffix(".cuts.arrow"))
    named = sum(r["layer"] is not None for r in rows)
    text = f"{len(rows)} cut points, {named} named, "
    text += f"stops at {stop}" if stop else "to the head"
    ok = stop is None
    try:
        cut, row = pick_cut(rows)
        folder = args.out / f"{name}-{exporter}-cut"
        tensor, channels = slice_at(args.slicer, path, args.input_size, cut, folder)
        text += f" | cut {cut} {shape(row)}"
        if tensor != row["name"]:
            got = next((r for r in rows if r["name"] == tensor), None)
            where = f" (#{got['index']}, {shape(got)})" if got else ""
            text += f": WRONG CUT, sliced at tensor `{tensor}`{where}, listing says `{row['name']}`"
            ok = False
        diff, peak = check_local(path, folder, tensor, channels, args.input_size)
        rel = diff / max(1.0, peak)
        good = rel <= TOLERANCE
        text += f": max diff {diff:.1e} (rel {rel:.1e}) {'ok' if good else 'FAIL'}"
        return ok and good, text, rows
    except Exception as err:
        return False, f"{text} | {first_line(err)}", rows


def run_burn(out):
    """Runs privynet-nn's `zoo` test on `out` and prints its `zoo:` lines; False if it failed
    (a missing test is only reported)."""
    cmd = ["cargo", "test", "--release", "-p", "privynet-nn", "--test", "local_net", "zoo",
           "--", "--nocapture"]
    env = dict(os.environ, PRIVYNET_ZOO_DIR=str(out))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        print("burn: cargo not found")
        return False
    text = proc.stdout + proc.stderr
    counts = re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text)
    if "no test target named" in text or (counts and sum(int(a) + int(b) for a, b in counts) == 0):
        print("burn: no `zoo` test in privynet-nn's local_net tests (not run)")
        return True
    zoo = [line for line in text.splitlines() if line.startswith("zoo:")]
    print("\n".join(zoo) if zoo else "burn: the test printed no `zoo:` line")
    if proc.returncode != 0:
        errors = [line for line in text.splitlines() if line.startswith("error")]
        error = f": {errors[0]}" if errors else ""
        print(f"burn: cargo test failed (exit {proc.returncode}){error}")
    else:
        print("burn: cargo test passed")
    return proc.returncode == 0


def main():
    """Checks every (model, exporter), prints a line each and the summary; the exit status."""
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in args.models:
        results = {}
        try:
            model = build_model(name)
        except Exception as err:
            print(f"{name:<20}{'-':<13}{first_line(err)}", flush=True)
            failed += 1
            continue
        for exporter in args.exporters:
            try:
                results[exporter] = check_one(args, model, name, exporter)
            except Exception as err:
                results[exporter] = (False, first_line(err), None)
        for exporter, (ok, text, rows) in results.items():
            other = next((e for e in results if e != exporter), None)
            if other and rows and results[other][2]:
                same, note = compare_tables(rows, results[other][2], other)
                ok, text = ok and same, f"{text} | {note}"
            elif other and rows:
                text += f" | no {other} table to compare"
            failed += not ok
            print(f"{name:<20}{exporter:<13}{text}", flush=True)
    if args.burn and not run_burn(args.out):
        failed += 1
    import onnx
    import onnxruntime
    import torch

    print(f"{failed} failed; torch {torch.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
