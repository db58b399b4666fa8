"""End-to-end speed of DiP: training throughput and sampling latency, per kernel backend, eager and compiled.

Training step (default DiP-XL/16 at 256², batch 32, bf16 autocast on CUDA): images/s, model FLOP utilisation
(MFU = model FLOPs per step / time / a dense GEMM rate measured in the same run), peak memory; the optimizer +
EMA time is shown separately. Sampling: seconds per image for N Euler steps with CFG (batch 1 doubled to 2, both
halves every step, the paper's setting) and throughput at a larger batch. One table, ratios to torch eager, JSON.

Model FLOPs (forward, per image), matmuls and attention only: per block 2·T·(3D² + D² + 3·D·hidden) + 2·6D² (adaLN,
once per image) + 4·T²·D (QKᵀ and AV); patch embedding 2·T·3P²·D; time MLP; the Detailer head's convolutions
(``bench_detailer.head_flops``). Training = 3 × forward.

    python benchmarks/bench_model.py                          # CUDA: DiP-XL/16; CPU: DiP-T/8, tiny settings
    python benchmarks/bench_model.py --backends torch,triton --compile both --out results/model.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detailer import head_flops  # noqa: E402
from common import environment, gemm_tflops, print_table, time_ms, write_json  # noqa: E402

from dip import create_model  # noqa: E402
from dip.diffusion import flow_loss, interpolate, sample  # noqa: E402
from dip.train import EMA  # noqa: E402


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


def train_row(preset, backend, compiled, batch, device, autocast, reps, gemm, merged=False):
    """One training-step measurement: step ms, img/s, MFU, peak memory, optimizer+EMA ms."""
    torch.manual_seed(0)
    model = create_model(preset, kernels=backend, merged_projections=merged).to(device)
    model.check_inputs = False
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-3,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    ema = EMA(model, 0.9999, warmup=False)
    x, eps, t, y = batch_for(model, batch, device)

    def fwd_bwd():
        with autocast:
            loss = flow_loss(run(interpolate(x, eps, t), t, y), x, eps)
        loss.backward()

    def update():
        opt.step()
        ema.update(model)
        opt.zero_grad(set_to_none=True)

    def step():
        fwd_bwd()
        update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms = time_ms(step, device, reps)
    fwd_bwd()
    update_ms = time_ms(update, device, reps)
    flops = 3 * forward_flops(model) * batch
    tflops = flops / (step_ms * 1e-3) / 1e12
    return {"mode": "train", "backend": backend + ("+merged" if merged else ""), "compiled": compiled,
            "batch": batch, "ms": step_ms,
            "img/s": batch / (step_ms * 1e-3), "TFLOP/s": tflops, "MFU%": 100 * tflops / gemm,
            "opt+ema ms": update_ms,
            "peak GB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


@torch.no_grad()
def sample_row(preset, backend, compiled, batch, steps, device, autocast, merged=False):
    """Seconds per image for ``steps`` Euler steps with CFG (both halves every step)."""
    torch.manual_seed(0)
    model = create_model(preset, kernels=backend, merged_projections=merged).to(device).eval()
    model.check_inputs = False
    run = torch.compile(model) if compiled else model
    x, _, _, y = batch_for(model, batch, device)

    def go():
        with autocast:
            sample(run, x, y, null_label=model.num_classes, steps=steps, cfg_scale=2.9, interval=(0.11, 0.97))

    go()  # warm-up / compilation
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    go()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"mode": f"sample {steps}×2 NFE", "backend": backend + ("+merged" if merged else ""),
            "compiled": compiled, "batch": batch,
            "ms": 1e3 * seconds, "img/s": batch / seconds, "s/img": seconds / batch}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default=None, help="default DiP-XL/16 on CUDA, DiP-T/8 on CPU")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 32 on CUDA, 4 on CPU)")
    p.add_argument("--backends", default="torch,auto", help="comma list of torch, triton, cuda, auto")
    p.add_argument("--compile", default="both", choices=["eager", "compiled", "both"])
    p.add_argument("--merged", action="store_true", help="also time merged W1|W3 and adaLN GEMMs per backend")
    p.add_argument("--sample-steps", type=int, default=None, help="default 100 on CUDA, 3 on CPU")
    p.add_argument("--sample-batch", type=int, default=None, help="throughput batch (default 64 on CUDA, 2 on CPU)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    preset = args.preset or ("DiP-XL/16" if cuda else "DiP-T/8")
    batch, reps = args.batch or (32 if cuda else 4), args.reps or (10 if cuda else 2)
    steps, sample_batch = args.sample_steps or (100 if cuda else 3), args.sample_batch or (64 if cuda else 2)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    gemm = gemm_tflops(device, torch.bfloat16 if cuda else torch.float32)
    modes = {"eager": [False], "compiled": [True], "both": [False, True]}[args.compile]
    print(f"{preset}, {device.type}, dense GEMM {gemm:.1f} TFLOP/s in this run")
    rows = []
    for backend in args.backends.split(","):
        for compiled in modes:
            for merged in (False, True) if args.merged else (False,):
                rows.append(train_row(preset, backend, compiled, batch, device, autocast, reps, gemm, merged))
                for b in (1, sample_batch):
                    rows.append(sample_row(preset, backend, compiled, b, steps, device, autocast, merged))
    for row in rows:
        base = next(r for r in rows if r["mode"] == row["mode"] and r["batch"] == row["batch"])
        row["speedup"] = base["ms"] / row["ms"]
    print_table(rows, ["mode", "backend", "compiled", "batch", "ms", "img/s", "s/img", "TFLOP/s", "MFU%",
                       "opt+ema ms", "peak GB", "speedup"])
    if not cuda:
        print("(CPU numbers at a tiny preset: they exercise the script; absolute times only count on a GPU)")
    write_json(args.out, {"benchmark": "model", "preset": preset, "batch": batch, "sample_steps": steps,
                          "gemm_tflops": gemm, "environment": environment(device), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
