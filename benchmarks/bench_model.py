"""End-to-end speed of DiP: training throughput and sampling latency, per kernel backend, eager and compiled.

Training step (the function dip.train runs, dip/training/step.py, with the preset's recipe optimizer and EMA; default
DiP-XL/16 at 256², batch 32, bf16 autocast on CUDA): images/s, model FLOP utilisation
(MFU = model FLOPs per step / time / a dense GEMM rate measured in the same run), peak memory; the optimizer +
EMA time is shown separately; gradient checkpointing on/off. Sampling: seconds per image for N Euler steps with CFG
(batch 1 doubled to 2, both halves every step, the paper's setting) and throughput at a larger batch, eager,
compiled and CUDA-graph captured (dip.sample --graph); the forward split between the DiT and the Detailer head.
One table, ratios to torch eager, JSON. Default: the telling subset; ``--full``: the whole matrix.

Model FLOPs (forward, per image), matmuls and attention only: per block 2·T·(3D² + D² + 3·D·hidden) + 2·6D² (adaLN,
once per image) + 4·T²·D (QKᵀ and AV); patch embedding 2·T·3P²·D; time MLP; the Detailer head's convolutions
(``bench_detailer.head_flops``). Training = 3 × forward.

    python benchmarks/bench_model.py                          # CUDA: DiP-XL/16; CPU: DiP-T/8, tiny settings
    python benchmarks/bench_model.py --backends torch,triton --compile both --out results/model.json
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.bench_detailer import head_flops
from benchmarks.common import environment, gemm_tflops, print_table, time_interleaved, time_ms, write_json
from dip import create_model
from dip.diffusion.flow import flow_loss, interpolate
from dip.diffusion.graphed_sampler import GraphedSampler, store_autocast_weights
from dip.diffusion.solvers import sample
from dip.model.presets import recipe
from dip.training.ema import EMA
from dip.training.step import build_optimizer, optimizer_step_if, train_step


def forward_flops(model) -> float:
    """Forward FLOPs per image of ``model`` at its default resolution (formula in the module doc)."""
    T = (model.image_size // model.patch_size) ** 2
    D = model.hidden_size
    hidden = model.blocks[0].mlp.w2.in_features
    per_block = 2 * T * (3 * D * D + D * D + 3 * D * hidden) + 2 * 6 * D * D + 4 * T * T * D
    embed = 2 * T * model.in_channels * model.patch_size**2 * D + 2 * (256 * D + D * D)
    head = head_flops(model.local_decoder, T) if model.head == "detailer" else 2 * T * D * 3 * model.patch_size**2
    return len(model.blocks) * per_block + embed + head


def batch_for(model, batch: int, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, model.image_size, model.image_size, generator=g).to(device).clamp(-1, 1)
    eps = torch.randn(x.shape, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    y = torch.randint(0, model.num_classes + 1, (batch,), generator=g).to(device)
    return x, eps, t, y


def autocast_for(device, amp: torch.dtype | None):
    """Mixed precision in ``amp`` (None: fp32)."""
    return torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None)


def label(backend: str, merged: bool = False, checkpointing: bool = False, graph: bool = False) -> str:
    return backend + "+merged" * merged + "+ckpt" * checkpointing + "+graph" * graph


def train_row(preset, backend, compiled, batch, device, amp, reps, gemm, merged=False, checkpointing=False):
    """One training-step measurement: step ms, img/s, MFU, peak memory, optimizer+EMA ms."""
    torch.manual_seed(0)
    model = create_model(preset, kernels=backend, merged_projections=merged,
                         gradient_checkpointing=checkpointing).to(device)
    model.check_inputs = False
    run = torch.compile(model) if compiled else model
    r = recipe(preset)
    opt = build_optimizer(model.parameters(), lr=r.lr, betas=r.betas, weight_decay=r.weight_decay, device=device)
    ema = EMA(model, r.ema_decay, r.ema_warmup)
    batches = [batch_for(model, batch, device)]

    def loss_fn(b):
        x, eps, t, y = b
        with autocast_for(device, amp):
            return flow_loss(run(interpolate(x, eps, t), t, y), x, eps)

    def step():  # what dip.train runs per optimizer step (accumulation 1, the recipe's clip: none)
        return train_step(run, opt, ema, batches, loss_fn, grad_clip=r.grad_clip)

    def update():  # the step's optimizer + EMA part alone
        applied = torch.ones((), dtype=torch.bool, device=device)
        optimizer_step_if(opt, applied)
        ema.update(model, applied)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms = time_ms(step, device, reps)
    loss_fn(batches[0]).backward()
    update_ms = time_ms(update, device, reps)
    flops = 3 * forward_flops(model) * batch
    tflops = flops / (step_ms * 1e-3) / 1e12
    return {"mode": "train", "backend": label(backend, merged, checkpointing), "compiled": compiled,
            "batch": batch, "ms": step_ms,
            "img/s": batch / (step_ms * 1e-3), "TFLOP/s": tflops, "MFU%": 100 * tflops / gemm,
            "opt+ema ms": update_ms,
            "peak GB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


@torch.no_grad()
def sample_row(preset, backend, compiled, batch, steps, device, amp, merged=False, graph=False):
    """Seconds per image for ``steps`` Euler steps with CFG (both halves every step); ``graph``: the CUDA-graph
    path of dip.sample (one captured step replayed)."""
    torch.manual_seed(0)
    model = create_model(preset, kernels=backend, merged_projections=merged).to(device).eval()
    model.check_inputs = False
    run = torch.compile(model) if compiled else model
    x, _, _, y = batch_for(model, batch, device)
    y = y.clamp_max(model.num_classes - 1)
    if graph:
        if amp is not None:
            store_autocast_weights(model, amp)
        graphed = GraphedSampler(run, batch, null_label=model.num_classes, cfg_scale=2.9, autocast=amp)

    def go():
        if graph:
            graphed(x, y, steps=steps, interval=(0.11, 0.97))
            return
        with autocast_for(device, amp):
            sample(run, x, y, null_label=model.num_classes, steps=steps, cfg_scale=2.9, interval=(0.11, 0.97))

    go()  # warm-up / compilation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    go()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"mode": f"sample {steps}×2 NFE", "backend": label(backend, merged, graph=graph),
            "compiled": compiled, "batch": batch,
            "ms": 1e3 * seconds, "img/s": batch / seconds, "s/img": seconds / batch}


@torch.no_grad()
def split_row(preset, backend, batch, device, amp, reps):
    """[a row]: forward ms of the whole model and of the Detailer head alone on the inputs it received (DiT = the
    rest), at the latency setting's doubled batch; [] for a DiT-only head."""
    torch.manual_seed(0)
    model = create_model(preset, kernels=backend).to(device).eval()
    if model.head != "detailer":
        return []
    model.check_inputs = False
    x, _, t, y = batch_for(model, batch, device)
    seen = {}
    hook = model.local_decoder.register_forward_pre_hook(lambda module, args: seen.setdefault("args", args))
    with autocast_for(device, amp):
        model(x, t, y)
        hook.remove()
        times = time_interleaved({"full": lambda: model(x, t, y), "head": lambda: model.local_decoder(*seen["args"])},
                                 device, reps)
    full_ms, head_ms = times["full"], times["head"]
    return [{"mode": "forward split", "backend": backend, "compiled": False, "batch": batch, "ms": full_ms,
             "DiT ms": full_ms - head_ms, "head ms": head_ms, "head %": 100 * head_ms / full_ms}]


def plan(args, cuda: bool) -> list:
    """(kind, settings) of every row: the telling subset by default, the whole matrix with --full."""
    backends = ["torch", "triton", "cuda", "auto"] if args.full else args.backends.split(",")
    modes = [False, True] if args.full else {"eager": [False], "compiled": [True], "both": [False, True]}[args.compile]
    checkpointing = [False, True] if args.full else {"off": [False], "on": [True], "both": [False, True]}[
        args.checkpointing]
    merged = [False, True] if args.full or args.merged else [False]
    graphs = [False, True] if cuda and (args.full or args.graph) else [False]
    rows = []
    for backend in backends:
        for compiled in modes:
            rows += [("train", dict(backend=backend, compiled=compiled, merged=m, checkpointing=c))
                     for m in merged for c in checkpointing]
            rows += [("sample", dict(backend=backend, compiled=compiled, merged=m, graph=g))
                     for m in merged for g in graphs if not (g and compiled)]
        rows.append(("split", dict(backend=backend)))
    kinds = set(args.modes.split(","))
    return [(kind, kw) for kind, kw in rows if kind in kinds]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default=None, help="default DiP-XL/16 on CUDA, DiP-T/8 on CPU")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 32 on CUDA, 4 on CPU)")
    p.add_argument("--backends", default="torch,auto", help="comma list of torch, triton, cuda, auto")
    p.add_argument("--compile", default="both", choices=["eager", "compiled", "both"])
    p.add_argument("--checkpointing", default="off", choices=["off", "on", "both"], help="gradient checkpointing")
    p.add_argument("--merged", action="store_true", help="also time merged W1|W3 and adaLN GEMMs per backend")
    p.add_argument("--graph", action="store_true", help="also time CUDA-graph sampling (eager model; CUDA only)")
    p.add_argument("--full", action="store_true", help="every backend × eager/compiled × checkpointing × merged, "
                                                       "sampling eager/compiled/graph")
    p.add_argument("--sample-steps", type=int, default=None, help="default 100 on CUDA, 3 on CPU")
    p.add_argument("--sample-batch", type=int, default=None, help="throughput batch (default 64 on CUDA, 2 on CPU)")
    p.add_argument("--modes", default="train,sample,split", help="which rows: train (dip.train's step), sample, split "
                                                                 "(the forward's DiT / head split)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    preset = args.preset or ("DiP-XL/16" if cuda else "DiP-T/8")
    batch, reps = args.batch or (32 if cuda else 4), args.reps or (10 if cuda else 2)
    steps, sample_batch = args.sample_steps or (100 if cuda else 3), args.sample_batch or (64 if cuda else 2)
    amp = torch.bfloat16 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    gemm = gemm_tflops(device, torch.bfloat16 if cuda else torch.float32)
    print(f"{preset}, {device.type}, dense GEMM {gemm:.1f} TFLOP/s in this run")
    rows = []
    for kind, kw in plan(args, cuda):
        if kind == "train":
            rows.append(train_row(preset, kw.pop("backend"), kw.pop("compiled"), batch, device, amp, reps, gemm, **kw))
        elif kind == "sample":
            rows += [sample_row(preset, kw["backend"], kw["compiled"], b, steps, device, amp, kw["merged"], kw["graph"])
                     for b in (1, sample_batch)]
        else:
            rows += split_row(preset, kw["backend"], 2, device, amp, reps)
    for row in rows:
        base = next(r for r in rows if r["mode"] == row["mode"] and r["batch"] == row["batch"])
        row["speedup"] = base["ms"] / row["ms"]
    print_table(rows, ["mode", "backend", "compiled", "batch", "ms", "img/s", "s/img", "TFLOP/s", "MFU%",
                       "opt+ema ms", "peak GB", "DiT ms", "head ms", "head %", "speedup"])
    if not cuda:
        print("(CPU numbers at a tiny preset: they exercise the script; absolute times only count on a GPU)")
    write_json(args.out, {"benchmark": "model", "preset": preset, "batch": batch, "sample_steps": steps,
                          "gemm_tflops": gemm, "environment": environment(device), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
