#!/usr/bin/env python3
"""PyTorch side of `make bench BENCH=nn`: trains, on CPU, the networks the bench describes.

Usage: bench_torch.py SPEC.json

SPEC.json is written by `privynet-bench` (crates/privynet-bench/src/steps.rs): thread count,
warm-up and timing settings, and a list of networks, each a layer list (conv2d, batchnorm2d,
relu, resize, ...), its input shape, batch size, loss and Adam settings, and the parameter count
burn's network has. Each network is built here layer for layer, checked against that count, and
trained on synthetic tensors of the right shapes for at least `min_seconds` after `warmup`
steps (forward, loss, loss read back, backward, Adam step: what the burn side times); the
figure is the median step.

Prints one JSON object on stdout: {"torch": version, "threads": n, "results": [{"name",
"samples_per_second", "ms_per_step", "steps", "params", "bf16_samples_per_second",
"bf16_ms_per_step"}, ...]}; the bf16 figures are the same step under CPU bf16 autocast, timed
unless SPEC.json says "bf16": false. Exits
3 when torch is missing, so the bench can say so and go on with burn's figures only. Not used
by the tests or by CI.
"""

import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the bench prints burn's figures only
    print(f"torch is not importable: {e}", file=sys.stderr)
    sys.exit(3)


class Resize(nn.Module):
    def __init__(self, mode, size, align_corners):
        super().__init__()
        self.mode, self.size = mode, size
        self.align_corners = align_corners if mode == "bilinear" else None

    def forward(self, x):
        if x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        return F.interpolate(
            x, size=(self.size, self.size), mode=self.mode, align_corners=self.align_corners
        )


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def layer(d):
    op = d["op"]
    if op == "conv2d":
        return nn.Conv2d(
            d["cin"], d["cout"], d["kernel"], stride=d["stride"], padding=d["padding"],
            bias=d["bias"],
        )
    if op == "conv_transpose2d":
        return nn.ConvTranspose2d(
            d["cin"], d["cout"], d["kernel"], stride=d["stride"], padding=d["padding"],
            bias=d["bias"],
        )
    if op == "batch_norm2d":
        return nn.BatchNorm2d(d["channels"], eps=1e-5, momentum=0.1)
    if op == "relu":
        return nn.ReLU()
    if op == "sigmoid":
        return nn.Sigmoid()
    if op == "resize":
        return Resize(d["mode"], d["size"], d["align_corners"])
    if op == "pixel_shuffle":
        return nn.PixelShuffle(d["factor"])
    if op == "global_avg_pool":
        return GlobalAvgPool()
    if op == "linear":
        return nn.Linear(d["cin"], d["cout"], bias=d["bias"])
    raise ValueError(f"unknown layer {op}")


def bench(net, s, bf16=False):
    """The median training step of `net`, in fp32 or (bf16) under CPU bf16 autocast."""
    torch.manual_seed(0)
    model = nn.Sequential(*[layer(d) for d in net["layers"]])
    params = sum(p.numel() for p in model.parameters())
    if params != net["params"]:
        raise SystemExit(
            f"{net['name']}: the torch network has {params} parameters, burn's {net['params']}"
        )
    model.train()
    o = net["optimizer"]
    opt = torch.optim.Adam(
        model.parameters(), lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"],
        weight_decay=o["weight_decay"],
    )
    b, pool = net["batch"], net["pool"]
    g = torch.Generator().manual_seed(0)
    xs = torch.randn([pool, *net["input"]], generator=g)
    loss = net["loss"]
    if loss["kind"] == "cross_entropy":
        ys = torch.randint(0, loss["classes"], (pool,), generator=g)
    else:
        ys = torch.rand([pool, *loss["target"]], generator=g)
    state = {"at": 0}

    def step():
        # The burn side copies `batch` consecutive rows of its pool each step (wrapping).
        idx = torch.arange(state["at"], state["at"] + b) % pool
        state["at"] = (state["at"] + b) % pool
        x, y = xs.index_select(0, idx), ys.index_select(0, idx)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            if loss["kind"] == "cross_entropy":
                lv = F.cross_entropy(out, y)
            else:
                lv = F.mse_loss(out.float(), y)
        lv.item()
        if loss["kind"] == "cross_entropy":
            (out.argmax(1) == y).sum().item()
        opt.zero_grad(set_to_none=True)
        lv.backward()
        opt.step()

    for _ in range(s["warmup"]):
        step()
    # The median step, as on the burn side: other work on a shared machine slows some steps.
    times, t = [], time.perf_counter()
    while len(times) < s["min_steps"] or time.perf_counter() - t < s["min_seconds"]:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    return {
        "name": net["name"],
        "samples_per_second": b / median,
        "ms_per_step": 1000.0 * median,
        "steps": len(times),
        "params": params,
    }


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        s = json.load(f)
    torch.set_num_threads(s["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    results = []
    for net in s["nets"]:
        r = bench(net, s)
        # What bf16 (AMX or AVX-512 BF16 where the CPU has them) would give: the same step
        # under autocast, reported beside fp32, never used by the project's training; only
        # where asked ("bf16", default true: the bench's later rounds leave it out).
        if s.get("bf16", True):
            b = bench(net, s, bf16=True)
            r["bf16_samples_per_second"] = b["samples_per_second"]
            r["bf16_ms_per_step"] = b["ms_per_step"]
        results.append(r)
    print(
        json.dumps(
            {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": results}
        )
    )


if __name__ == "__main__":
    main()
