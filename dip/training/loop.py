"""The training loop (docs/model.md §6): ``Trainer`` sets a run up (data, model, optimizer, EMA, run folder) and
runs the training step (dip/training/step.py) with logging, checkpoints, sample grids and evaluations.

Reproducibility: every random draw (data order, t, noise, label dropout) is a function of the seed and the
global sample index (dip/training/draws.py), so a run does not depend on the number of ranks, and resuming
continues exactly (bitwise on CPU). Checkpoints are written atomically and hold the model, EMA, optimizer, step,
data position and RNG states. A non-finite loss or gradient skips the step on the device; skips are counted and
reported when logging. ``init_from`` fine-tunes from other weights (a different label set keeps the source's null
row); ``eval_every`` records FID, sFID, precision/recall and the patch diagnostics of the EMA model.
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..diffusion.flow import flow_loss, interpolate
from ..diffusion.generation import SamplingSettings
from ..diffusion.solvers import sample
from ..evaluation.monitor import TrainingMonitor
from ..io.atomic import atomic_write, remove_stale_temporaries
from ..io.checkpoints import read_file, tensor_checksums, tensors_of, trusted_by_name
from ..io.datasets import open_dataset
from ..io.image_writers import save_grid
from ..io.weights import adapt_label_table, check_weights, weights_of
from ..model.presets import create_model, run_model_options
from ..runtime.cpu_load import slowdown_reason
from ..runtime.distributed import init_distributed
from ..runtime.folders import require_free_space, writable_folder
from ..runtime.run_lock import RunLock
from .config import TrainConfig, objective_changes
from .draws import draw_batch
from .ema import EMA
from .repa import DINOv2, Projector, encoder_input, repa_loss
from .schedule import learning_rate
from .state import CheckpointKeeper, checkpoint_paths, load_newest, new_run_id
from .step import StepResult, build_optimizer, train_step


class Trainer:
    """One training run (all ranks run the same code; rank 0 writes files). ``on_final_samples(images, labels, log)``
    (optional) scores the final class-balanced sample grid and returns entries for the run's summary (the digits
    demo passes its classifier accuracy, dip/evaluation/digits.py)."""

    def __init__(self, cfg: TrainConfig, on_final_samples: Callable | None = None):
        self.cfg, self.on_final_samples = cfg, on_final_samples
        self.rank, self.world, self.device = init_distributed(cfg.device)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
        torch.manual_seed(cfg.seed)  # the initial weights
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)  # NumPy takes 32-bit seeds
        self.out = writable_folder(cfg.out, "--out") if self.rank == 0 else Path(cfg.out)
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

    def _build(self, cfg: TrainConfig) -> None:
        """Data, model, optimizer, EMA and loggers of the run (the folder is locked and probed by now)."""
        self.data = open_dataset(cfg.data, cfg.image_size)
        if hasattr(self.data, "check"):  # image files: headers read before any step (every rank: the same dataset)
            bad = self.data.check(skip_bad=cfg.bad_images == "skip")
            if bad and self.rank == 0:
                print(f"left out {len(bad)} unreadable image(s): {', '.join(map(str, bad[:5]))}"
                      f"{' …' if len(bad) > 5 else ''}")
        self.num_classes = 0 if cfg.unconditional else len(self.data.classes)
        per_step = cfg.batch // (self.world * cfg.accum)
        if per_step * self.world * cfg.accum != cfg.batch:
            raise ValueError(f"--batch {cfg.batch} must be divisible by world size × --accum = "
                             f"{self.world * cfg.accum}")
        self.micro = per_step
        if cfg.fsdp and cfg.merged_projections:
            raise ValueError("--merged-projections with --fsdp is not supported (FSDP shards the block layout)")
        model = create_model(cfg.model, image_size=cfg.image_size, num_classes=self.num_classes,
                             kernels=cfg.kernels, gradient_checkpointing=cfg.grad_checkpointing,
                             merged_projections=cfg.merged_projections, **cfg.model_options())
        if cfg.init_from:
            self._initialise_from(model, cfg.init_from)
        self.model = model.to(self.device)
        self.model.check_inputs = False  # inputs are built here; avoid a device sync per step
        self.repa = self._repa()
        self.train_model = self._wrap(self.model)  # before the optimizer: FSDP replaces the parameters
        params = list(self.model.parameters()) + (list(self.repa[0].parameters()) if self.repa else [])
        self.opt = build_optimizer(params, lr=cfg.lr, betas=cfg.recipe.betas, weight_decay=cfg.weight_decay,
                                   device=self.device)
        self.ema = EMA(self.model, cfg.ema_decay, cfg.recipe.ema_warmup)
        if self.rank == 0:  # model, EMA and AdamW's two moments in fp32, twice (the newest and the one being written)
            require_free_space(self.out, "--out", 2 * 4 * 4 * sum(p.numel() for p in self.model.parameters()))
        self.step, self.resumed_from, self.config_changes = 0, None, []
        self.run_id = new_run_id()  # a resume takes the checkpoint's (restore)
        self.keeper = CheckpointKeeper(self.out, self.run_id, cfg.keep, self.log)
        self.skipped = torch.zeros((), dtype=torch.int64, device=self.device)  # read when logging
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" \
            else nullcontext()
        self.writer = self._tensorboard()
        self.monitor = self._monitor()

    # -------------------------------------------------------------------------------------- set-up helpers
    def _initialise_from(self, model, path: str) -> None:
        """Fine-tuning start: the source's EMA weights, its label table adapted to this data's
        classes (``adapt_label_table``)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"--init-from weights not found: {path}")
        state, source = weights_of(read_file(path, trusted_by_name(self.cfg.trust_pickle, path)), "ema")
        check_weights(state, model, path)
        try:
            model.load_state_dict(adapt_label_table(state, model))
        except RuntimeError as err:
            raise ValueError(f"--init-from {path} ({source}) does not fit {self.cfg.model}: {err}") from None
        self.log(f"initialised from {path} ({source})")

    def _monitor(self):
        if not self.cfg.eval_every or self.rank != 0:
            return None
        if not self.cfg.eval_ref:
            raise ValueError("--eval-every needs --eval-ref (a dataset spec such as 'digits', images or statistics)")
        return TrainingMonitor(self.cfg.eval_ref, self.cfg.image_size, self.model.patch_size, self.device,
                               num_samples=self.cfg.eval_samples, logits=self.cfg.inception_logits)

    def _repa(self):
        if not self.cfg.repa_encoder:
            return None
        encoder = DINOv2.from_pretrained(self.cfg.repa_encoder).to(self.device)
        return Projector(self.model.hidden_size, encoder.dim).to(self.device), encoder

    def _wrap(self, model):
        if self.cfg.fsdp:
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
        return torch.compile(wrapped) if self.cfg.compile else wrapped

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.rank == 0):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(self.out / "tensorboard")

    def log(self, message: str) -> None:
        if self.rank == 0:
            tqdm.write(message)

    # -------------------------------------------------------------------------------------- one step
    def micro_batches(self, step: int) -> list:
        """This rank's micro-batches of global batch ``step`` (``draw_batch``), one per accumulation step."""
        first = step * self.cfg.batch + self.rank * self.micro
        return [draw_batch(self.data, self.cfg, first + a * self.world * self.micro, self.micro, self.num_classes,
                           self.device) for a in range(self.cfg.accum)]

    def loss(self, batch) -> torch.Tensor:
        """The objective of one micro-batch (x, y, t, ε): the flow loss (+ the REPA term when an encoder is given)."""
        x, y, t, eps = batch
        xt = interpolate(x, eps, t)
        with self.autocast:
            if self.repa:
                projector, encoder = self.repa
                v, h = self.train_model(xt, t, y, features_block=self.cfg.repa_block)
                with torch.no_grad():
                    z = encoder(encoder_input(x, int(h.shape[1] ** 0.5)))
                extra = self.cfg.repa_weight * repa_loss(projector(h), z)
            else:
                v, extra = self.train_model(xt, t, y), 0.0
        loss = flow_loss(v, x, eps) + extra
        return loss * float("nan") if self.step == self.cfg.debug_nan_step else loss

    def train_step(self) -> StepResult:
        """Global batch ``self.step`` through the training step (dip/training/step.py) at the scheduled lr."""
        self.lr_used = learning_rate(self.step, self.cfg.lr, self.cfg.steps, self.cfg.lr_decay)
        result = train_step(self.train_model, self.opt, self.ema, self.micro_batches(self.step), self.loss,
                            grad_clip=self.cfg.grad_clip, lr=self.lr_used)
        self.skipped += ~result.applied
        return result

    # -------------------------------------------------------------------------------------- checkpoints
    def save(self) -> None:
        if self.cfg.fsdp:
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
                 "run_id": self.run_id, "config_changes": self.config_changes,
                 "samples_seen": self.step * self.cfg.batch, "skipped": int(self.skipped),
                 "ema_updates": self.ema.updates, "config": json.dumps(self.cfg.as_dict()),
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
        self.keeper.wrote(path, self.step)
        self.keeper.prune(self.step)

    def restore(self) -> None:
        """Resume (``--resume auto``: the newest whole checkpoint in ``out``; or a given one) or start fresh. A fresh
        start into a folder that holds checkpoints — another run's, or only damaged ones — is refused unless
        ``overwrite``, which deletes them first; a resume that changes an objective option is refused unless
        ``allow_change`` names it (the change is then recorded with its step)."""
        state = None
        if self.cfg.resume != "none":
            where = self.out if self.cfg.resume == "auto" else Path(self.cfg.resume)
            if where != self.out and not where.exists():
                raise FileNotFoundError(f"--resume checkpoint not found: {where}")
            state = load_newest(where, self.log)
            if state is None and self.cfg.resume != "auto":  # asked to resume from something without a checkpoint
                raise ValueError(f"--resume {where}: no readable checkpoint there (looked for step_*.pt in it and in "
                                 f"its checkpoints/ folder); pass --resume none to start from scratch")
        if state is None:
            self._start_fresh()
            return
        self._check_objective(state)
        if self.cfg.fsdp:
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
        self.step, self.resumed_from = state["step"], state["_path"]
        self.skipped.fill_(state["skipped"])
        self.run_id = state.get("run_id") or self.run_id  # a checkpoint from before run ids: this run adopts it
        self.keeper = CheckpointKeeper(self.out, self.run_id, self.cfg.keep, self.log)
        self._truncate_stats()
        self.log(f"resumed from {state['_path']} at step {self.step}")

    def _start_fresh(self) -> None:
        """Step 0 in ``out``: refused while the folder holds checkpoints (another run's, or damaged ones) unless
        ``overwrite``, which deletes them (and the old stats.jsonl)."""
        found = checkpoint_paths(self.out)
        if found and not self.cfg.overwrite:
            unreadable = "" if self.cfg.resume == "none" else ", none of them readable"
            raise ValueError(f"--out {self.out} holds checkpoints of another run (newest: {found[0]}{unreadable}); "
                             f"starting afresh would mix two runs: choose another --out, resume with --resume auto, "
                             f"or pass --overwrite to delete them")
        if self.rank == 0:
            for path in found:
                path.unlink()
                self.log(f"deleted {path} (--overwrite)")
            self._truncate_stats()

    def _check_objective(self, state: dict) -> None:
        """Refuse a resume whose objective options differ from the checkpoint's, unless each is allowed; record the
        allowed ones (stats.jsonl and the checkpoints' ``config_changes``)."""
        changes = objective_changes(json.loads(state.get("config", "{}")), self.cfg)
        refused = {k: v for k, v in changes.items() if k not in self.cfg.allow_change}
        if refused:
            said = "; ".join(f"--{k.replace('_', '-')} {old} → {new}" for k, (old, new) in refused.items())
            raise ValueError(f"{state['_path']} was trained with other objective settings ({said}): resuming would "
                             f"change the run mid-way; pass --allow-change {' '.join(refused)} to change them from "
                             f"step {state['step']} on, or choose another --out")
        self.config_changes = list(state.get("config_changes", []))
        if changes:
            entry = {"step": state["step"], "changes": {k: list(v) for k, v in changes.items()}}
            self.config_changes.append(entry)
            self.log(f"from step {state['step']} on, this run changes {entry['changes']} (--allow-change)")
            self.record({"step": state["step"], "config_change": entry["changes"]})

    def _load_model_state(self, state: dict) -> None:
        """Load the checkpoint's weights; one of another architecture or class count is named with both
        configurations."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            saved = json.loads(state.get("config", "{}"))
            mine = {"model": self.cfg.model, "image_size": self.cfg.image_size, **self.cfg.model_options()}
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
        model = create_model(self.cfg.model, image_size=self.cfg.image_size, num_classes=self.num_classes,
                             kernels=self.cfg.kernels, **self.cfg.model_options()).to(self.device).eval()
        model.load_state_dict(self.ema.state_dict())
        return model

    @torch.no_grad()
    def sample_grid(self, per_class: int = 8) -> torch.Tensor:
        """Class-balanced samples of the EMA model with the recipe's sampler (unguided 8 per row without classes);
        saved as a PNG grid."""
        r, K = self.cfg.recipe, self.num_classes
        model = self.ema_model()
        y = torch.arange(max(K, 1)).repeat(per_class * (1 if K else 8)).to(self.device)  # row i: every class once
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        noise = torch.randn(len(y), 3, self.cfg.image_size, self.cfg.image_size, generator=g).to(self.device)
        with self.autocast:
            images = sample(model, noise, y, null_label=K, steps=r.sample_steps,
                            cfg_scale=r.cfg_scale if K else 1.0, interval=tuple(r.guidance_interval))
        path = save_grid(images, self.out / "samples" / f"step_{self.step:08d}.png", nrow=K or 8,
                         upscale=max(1, 128 // self.cfg.image_size))
        self.last_grid = path
        self.log(f"wrote {path}")
        return images

    def evaluate(self) -> dict:
        """Metrics of the EMA model with the recipe's sampler (rank 0; the other ranks wait at the next
        collective, so keep --eval-samples modest on big models); the caller records them."""

        r = self.cfg.recipe
        settings = SamplingSettings(steps=r.sample_steps, cfg_scale=r.cfg_scale,
                                    interval=tuple(r.guidance_interval), seed=self.cfg.seed,
                                    precision=self.cfg.precision)
        metrics = {f"eval_{k}": v for k, v in self.monitor(self.ema_model(), settings).items()}
        self.log(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    # -------------------------------------------------------------------------------------- loop
    def stop_now(self, started: float) -> bool:
        """Steps or minutes exhausted. The step count is the same on every rank; a time budget is rank 0's clock,
        broadcast so that every rank stops together — under torchrun checked on logging steps only (a broadcast
        waits for the device)."""
        done = self.cfg.steps is not None and self.step >= self.cfg.steps
        if self.cfg.minutes is None or (self.world > 1 and self.step % self.cfg.log_every):
            return done
        done = done or time.time() - started >= 60 * self.cfg.minutes
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
        length = f"{c.steps:,} steps" if c.steps is not None else f"{c.minutes:g} minutes"
        length += f" (then a {c.minutes:g}-minute cap)" if c.steps is not None and c.minutes else ""
        self.log(f"dip.train: {c.model} on {c.data}, {length} from step {self.step}, global batch {c.batch}, "
                 f"{self.device}{'' if self.device.type == 'cuda' else f' with {torch.get_num_threads()} threads'}, "
                 f"{c.precision}, seed {c.seed} → {self.out}")
        if self.num_classes:
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
        per_step = self.cfg.recipe.seconds_per_step
        done = self.step - first_step
        if (getattr(self, "warned_slow", False) or done < 50 or done % 50 or per_step is None
                or self.cfg.steps is None or self.device.type != "cpu"):
            return
        eta = (time.time() - started) / done * (self.cfg.steps - first_step)
        if eta <= 2 * per_step * self.cfg.steps:
            return
        self.warned_slow = True
        self.log(f"this run is slow: about {eta / 60:.0f} minutes where an idle 2-core CPU takes "
                 f"{per_step * self.cfg.steps / 60:.0f}; {slowdown_reason()} (the result does not change: the run "
                 f"is a fixed number of steps)")

    def log_window(self, window: torch.Tensor, started: float, last_log: float) -> dict:
        """The logging step's record (its one read of the device): mean finite loss over the window (all ranks),
        throughput, skipped steps, lr, EMA decay, memory; says when steps were skipped since the last record."""
        if self.world > 1:
            dist.all_reduce(window)
        loss_sum, count = window.tolist()
        now, skipped = time.time(), int(self.skipped)
        stats = {"step": self.step, "loss": loss_sum / max(count, 1),
                 "img_per_s": self.cfg.log_every * self.cfg.batch / (now - last_log), "skipped": skipped,
                 "lr": self.lr_used, "ema_decay": self.ema.decay_now(),
                 "mem_gb": torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else 0.0,
                 "elapsed_s": now - started}
        self.report_skips(skipped)
        return stats

    def report_skips(self, skipped: int) -> None:
        """Say how many steps were skipped for a non-finite loss or gradient since the last report."""
        new = skipped - self.reported_skips
        if new:
            self.log(f"step {self.step}: {new} step(s) since the last report had a non-finite loss or gradient and "
                     f"were skipped ({skipped} so far)")
        self.reported_skips = skipped

    def run(self) -> dict:
        """Train from the current step (``restore`` first to resume) to the end, then sample and summarise. Between
        logging, checkpoint and sample steps nothing waits for the device: the loss is summed there and read when
        logged."""
        self.announce()
        started = last_log = time.time()
        window = torch.zeros(2, dtype=torch.float64, device=self.device)  # [sum of finite losses, their count]
        first_step, self.reported_skips = self.step, int(self.skipped)
        total = self.cfg.steps
        by_time = total is None  # a --minutes budget: the bar (and its ETA) counts seconds
        bar = tqdm(total=int(60 * self.cfg.minutes) if by_time else total, initial=0 if by_time else self.step,
                   unit="s" if by_time else "step", disable=self.rank != 0, desc="train", dynamic_ncols=True)
        while not self.stop_now(started):
            loss = self.train_step().loss
            finite = torch.isfinite(loss)
            window += torch.stack([torch.where(finite, loss.double(), 0.0), finite.double()])
            self.step += 1
            self.warn_if_slow(started, first_step)
            bar.update(min(int(time.time() - started), bar.total) - bar.n if by_time else 1)
            if self.step % self.cfg.log_every == 0:
                stats = self.log_window(window, started, last_log)
                self.record(stats)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", img_s=f"{stats['img_per_s']:.0f}")
                last_log = time.time()
                window.zero_()
            if self.step % self.cfg.ckpt_every == 0:
                self.save()
            if self.step % self.cfg.sample_every == 0 and self.rank == 0:
                self.sample_grid()
            if self.monitor and self.step % self.cfg.eval_every == 0:
                self.record({"step": self.step, **self.evaluate()})
        bar.close()
        return self.finish(started)

    def finish(self, started: float) -> dict:
        """After the last step: the final checkpoint, the sample grid (scored by ``on_final_samples``), the last
        evaluation, and the run's summary (recorded in stats.jsonl and returned)."""
        self.save()
        self.report_skips(int(self.skipped))
        summary = {"steps": self.step, "skipped": int(self.skipped), "minutes": (time.time() - started) / 60}
        if self.world > 1 and not self.cfg.fsdp:
            summary["ranks_in_sync"] = self.ranks_in_sync()
        if self.rank == 0 and self.cfg.final_samples:
            images = self.sample_grid(self.cfg.final_samples)
            if self.on_final_samples is not None and self.num_classes:
                labels = torch.arange(self.num_classes).repeat(len(images) // self.num_classes)
                summary.update(self.on_final_samples(images, labels, self.log))
            summary["grid"] = str(self.last_grid)
            self.log(f"{self.step:,} steps in {summary['minutes']:.1f} minutes; sample grid: {self.last_grid}")
        if self.monitor and self.step % self.cfg.eval_every != 0:
            summary.update(self.evaluate())
        self.record({"step": self.step, **summary})
        if self.writer:
            self.writer.close()
        return summary
