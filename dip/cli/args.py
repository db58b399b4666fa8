"""Argument types for the command lines: every numeric option is checked against its domain when parsed, so a
mistake ends the command at once with argparse's one-line error naming the option (``dip-train: error: argument
--ema-decay: must be in [0, 1), got 1.5``) instead of running with a silently wrong value; the commands' other
user errors (bad files, unwritable folders) end the same way (``command_errors``). The flags several commands share
are declared once here (``add_device_flags``, ``add_checkpoint_flags``, ``add_sampling_flags``)."""
from __future__ import annotations

import argparse
import importlib.util
import math
from contextlib import contextmanager

import torch

from dip_kernels import BACKENDS

from ..diffusion.generation import SamplingSettings
from ..diffusion.grid import INTERVAL_RULES, SCHEDULES
from ..diffusion.multistep import MULTISTEP_ORDERS
from ..diffusion.solvers import METHODS
from ..model.loading import preset_of
from ..model.presets import PRESETS, recipe


def number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False):
    """An argparse ``type``: a ``kind`` (int or float) value in the interval [low, high] (ends open as asked)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    ends = ("-inf" if low is None else f"{low:g}", "inf" if high is None else f"{high:g}")
    domain = f"{left}{ends[0]}, {ends[1]}{right}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}")
        bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and (value >= high if high_open else value > high))
        if bad:
            raise argparse.ArgumentTypeError(f"must be in {domain}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = number(int, 1)
NON_NEGATIVE_INT = number(int, 0)
POSITIVE = number(float, 0, low_open=True)
NON_NEGATIVE = number(float, 0)
UNIT = number(float, 0, 1)


class Interval(argparse.Action):
    """``--interval LOW HIGH``: two times in [0, 1] with LOW ≤ HIGH (a reversed pair would silently disable
    guidance)."""

    def __call__(self, parser, namespace, values, option_string=None):
        low, high = values
        if low > high:
            parser.error(f"argument {option_string}: LOW must be ≤ HIGH, got {low:g} {high:g}")
        setattr(namespace, self.dest, (low, high))


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def run_command(parser: argparse.ArgumentParser, run, argv=None):
    """Parse ``argv`` with ``parser`` and return ``run(args)``; a user's mistake inside ends with the one-line error
    of ``command_errors``."""
    args = parser.parse_args(argv)
    with command_errors(parser):
        return run(args)


@contextmanager
def command_errors(parser: argparse.ArgumentParser):
    """A user's mistake or a bad file inside a command ends it with argparse's one-line ``prog: error: …`` and exit
    status 2 instead of a traceback (a traceback is for bugs)."""
    try:
        yield
    except USER_ERRORS as err:
        parser.error(str(err))


def add_model_flag(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """``--model PRESET`` (choices: ``PRESETS``)."""
    p.add_argument("--model", default=default, choices=sorted(PRESETS), help=f"preset ({what})")


def add_trust_flag(p: argparse.ArgumentParser, what: str = "FILE") -> None:
    """``--trust-pickle FILE``: trust given per file (dip/io/checkpoints.py)."""
    p.add_argument("--trust-pickle", default=None, metavar="FILE",
                   help=f"read {what} even though it holds Python objects besides tensors (e.g. the authors' "
                        f"Lightning checkpoint)")


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """``--seed``, ``--device``, ``--precision`` and ``--kernels``: where and how a command computes."""
    a = p.add_argument
    a("--seed", type=number(int, 0, 2**64 - 1), default=0)
    a("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")
    a("--precision", choices=["bf16", "fp32"], default=None, help="bf16 autocast (default on CUDA) or fp32 (default "
                                                                 "on CPU)")
    a("--kernels", default=None, choices=list(BACKENDS), help="ops backend (default auto)")


def add_checkpoint_flags(p: argparse.ArgumentParser) -> None:
    """The checkpoint-reading flags of dip.sample, dip.evaluate and dip.convert: ``--model``, ``--which``,
    ``--trust-pickle``."""
    add_model_flag(p, None, "default: the checkpoint's, else DiP-XL/16")
    p.add_argument("--which", default="ema", choices=["ema", "raw"])
    add_trust_flag(p)


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """The model and sampler flags shared by dip.sample and dip.evaluate."""
    add_checkpoint_flags(p)
    a = p.add_argument
    a("--steps", type=POSITIVE_INT, help="default: the preset's recipe")
    a("--cfg", type=NON_NEGATIVE, help="guidance scale (default: the recipe's)")
    a("--interval", type=UNIT, nargs=2, action=Interval, help="guidance interval low high (default: the recipe's)")
    a("--interval-rule", default="float32", choices=list(INTERVAL_RULES),
      help="float32: decide 'inside the interval' on the float32 time grid, as the authors do; exact: on i/N; "
           "aligned: grid points on the bounds, guidance exactly between them (what multistep solvers need)")
    a("--method", default="euler", choices=list(METHODS),
      help="euler (the paper's); ab2 / pc3: 2nd / 3rd-order multistep, one evaluation per step; heun; sde; dopri5: "
           "adaptive reference (torchdiffeq), --steps unused")
    a("--schedule", default="uniform", choices=list(SCHEDULES),
      help="time grid: uniform i/N, or cosine (short steps at both ends: what keeps pc3 third-order)")
    a("--shift", type=POSITIVE, default=1.0, help="timestep shift t / (t + s(1 - t)) on top of the grid")
    a("--skip-uncond", action="store_true", help="skip the unconditional half outside the guidance interval")
    add_device_flags(p)
    a("--graph", action="store_true", help="CUDA-graph sampling (static buffers; needs CUDA and --method euler, ab2 "
                                            "or pc3)")


def settings_from_args(args, model, device: torch.device) -> SamplingSettings:
    """Flags → settings, the preset's recipe filling what was not given."""
    r = recipe(preset_of(model, args.model))
    if args.method == "dopri5" and importlib.util.find_spec("torchdiffeq") is None:
        raise ValueError("--method dopri5 uses torchdiffeq, which is not installed: pip install -e '.[solvers]'")
    if args.graph and (device.type != "cuda" or args.method not in MULTISTEP_ORDERS or args.skip_uncond):
        raise ValueError(f"--graph needs a CUDA device, --method {' / '.join(MULTISTEP_ORDERS)} and no --skip-uncond "
                         f"(got device {device.type}, method {args.method}, skip_uncond {args.skip_uncond})")
    return SamplingSettings(steps=args.steps or r.sample_steps,
                            cfg_scale=args.cfg if args.cfg is not None else r.cfg_scale,
                            interval=tuple(args.interval) if args.interval else r.guidance_interval,
                            method=args.method, shift=args.shift, schedule=args.schedule,
                            skip_uncond=args.skip_uncond, seed=args.seed,
                            precision=args.precision or ("bf16" if device.type == "cuda" else "fp32"),
                            graph=args.graph, interval_rule=args.interval_rule)
