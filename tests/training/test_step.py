"""The one training step (dip/training/step.py, docs/model.md §6): the trainer and every benchmark run the same
function; a step whose loss or gradient is not finite leaves weights, optimizer state and EMA bitwise unchanged,
decided on the device; and no training step outside logging makes a host synchronisation."""
import inspect
from pathlib import Path

import pytest
import torch

import dip
from dip.diffusion.flow import flow_loss, interpolate
from dip.training import loop
from dip.training.config import resolve
from dip.training.ema import EMA
from dip.training.step import train_step
from tests.support.models import tiny_model

pytest.importorskip("sklearn")

DIP = Path(dip.__file__).parent
SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def test_benchmarks_train_with_the_trainers_step():
    from benchmarks import bench_model
    from benchmarks.experiments import overfit_single_image

    assert loop.train_step is train_step
    assert bench_model.train_step is train_step and overfit_single_image.train_step is train_step
    for module in (bench_model, overfit_single_image):
        assert "train_step(" in inspect.getsource(module)  # called, not only imported


def batch(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, model.image_size, model.image_size, generator=g).clamp(-1, 1)
    return x, torch.randn(x.shape, generator=g), torch.rand(4, generator=g), torch.randint(0, 10, (4,), generator=g)


def training(fused: bool):
    torch.manual_seed(0)
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **({"fused": True} if fused else
                                                                              {"foreach": True}))
    ema = EMA(model, 0.999, warmup=True)
    return model, opt, ema


def step(model, opt, ema, seed, poison=False):
    def loss_fn(b):
        x, eps, t, y = b
        loss = flow_loss(model(interpolate(x, eps, t), t, y), x, eps)
        return loss * float("nan") if poison else loss

    return train_step(model, opt, ema, [batch(model, seed)], loss_fn, grad_clip=1.0)


def state_of(model, opt, ema):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [{k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for s in opt.state.values()],
            [t.clone() for t in ema.shadow], ema.updates)


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


@pytest.mark.parametrize("fused", [False, True])
def test_a_skipped_step_changes_nothing(fused):
    model, opt, ema = training(fused)
    assert bool(step(model, opt, ema, 0).applied)
    before = state_of(model, opt, ema)
    result = step(model, opt, ema, 1, poison=True)
    assert not bool(result.applied) and not torch.isfinite(result.loss)
    assert same(state_of(model, opt, ema), before)
    # and the run goes on exactly as if the step had not happened
    step(model, opt, ema, 2)
    twin = training(fused)
    step(*twin, 0)
    step(*twin, 2)
    assert same(state_of(model, opt, ema), state_of(*twin))


@pytest.mark.parametrize("fused", [False, True])
def test_a_skipped_first_step_leaves_a_fresh_optimizer(fused):
    model, opt, ema = training(fused)
    step(model, opt, ema, 1, poison=True)
    step(model, opt, ema, 2)
    twin = training(fused)
    step(*twin, 2)
    assert same(state_of(model, opt, ema), state_of(*twin))


def counting_syncs(monkeypatch, record):
    """Wrap the Tensor methods that wait for the device; record calls made by dip's own code outside dip/io (the
    data pipeline reads host memory by design), and every call on a tensor that is not on the CPU."""
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = Path(inspect.currentframe().f_back.f_code.co_filename)
            ours = DIP in caller.parents and DIP / "io" not in caller.parents
            if ours or self.device.type != "cpu":
                record(_name, caller)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)


def test_no_host_sync_in_training_steps_outside_logging(tmp_path, monkeypatch):
    cfg = resolve({"out": str(tmp_path), "device": "cpu", "batch": 8, "steps": 6, "log_every": 3, "ckpt_every": 100,
                   "sample_every": 100, "final_samples": 0, "accum": 2})
    trainer = loop.Trainer(cfg)
    phase = {"name": "set-up"}
    seen = []

    def phased(method, name):
        def run(self, *args, **kwargs):
            outer, phase["name"] = phase["name"], name
            try:
                return method(self, *args, **kwargs)
            finally:
                phase["name"] = outer if name != "step" else "between steps"
        return run

    for method, name in ((loop.Trainer.train_step, "step"), (loop.Trainer.log_window, "logging"),
                         (loop.Trainer.finish, "end")):
        monkeypatch.setattr(loop.Trainer, method.__name__, phased(method, name))
    counting_syncs(monkeypatch, lambda what, where: seen.append((phase["name"], what, where.name)))
    try:
        summary = trainer.run()
    finally:
        trainer.lock.release()
    assert summary["steps"] == 6
    assert [s for s in seen if s[0] in ("step", "between steps")] == []
    assert any(s[0] == "logging" for s in seen)  # the counter does see the reads it should
