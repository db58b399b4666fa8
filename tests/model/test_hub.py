"""Hub conventions and diffusers interop (dip/model/hub.py, dip/diffusion/diffusers_pipeline.py; docs/model.md
§5.1, §7.3): save_pretrained / from_pretrained round trip offline, checkpoint conversion, and the pipeline against
dip's sampler."""
import json

import pytest
import torch
from torch import nn

from dip import DiP, create_model
from dip.diffusion.solvers import sample
from tests.support.flows import MU, SIGMA, gaussian_velocity
from tests.support.models import draw, random_model

pytest.importorskip("huggingface_hub")


def test_save_pretrained_round_trip_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local folder needs no network
    model = random_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == model.architecture  # the architecture only: no run-time choices such as kernels
    assert (tmp_path / "model.safetensors").is_file()
    loaded = DiP.from_pretrained(tmp_path, kernels="torch").eval()
    assert isinstance(loaded, DiP) and loaded.architecture == model.architecture
    x, y = draw("cpu")
    t = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
    loaded.save_pretrained(tmp_path / "again")  # a loaded model saves the same files
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == config


def test_a_detailer_less_model_keeps_its_head(tmp_path):
    model = create_model("DiP-T/8", head="dit")
    model.save_pretrained(tmp_path)
    assert DiP.from_pretrained(tmp_path).head == "dit"


def test_checkpoint_conversion_command(tmp_path):
    from dip.cli.convert import main
    from dip.io.weights import save_weights

    model = random_model()
    save_weights(tmp_path / "w.safetensors", model.state_dict())
    main(["--ckpt", str(tmp_path / "w.safetensors"), "--model", "DiP-T/8", "--out", str(tmp_path / "hub")])
    loaded = DiP.from_pretrained(tmp_path / "hub")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


class GaussianFlow(nn.Module):
    """The exact velocity of Gaussian data as a 'transformer' (labels ignored): its flow map is known."""

    num_classes, in_channels, image_size = 2, 3, 4

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y):
        return gaussian_velocity(x, t)


def pipeline(model, scheduler):
    from dip.diffusion.diffusers_pipeline import DiPPipeline

    pipe = DiPPipeline(transformer=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_with_the_euler_scheduler_is_dips_sampler():
    diffusers = pytest.importorskip("diffusers")
    from dip.diffusion.diffusers_pipeline import flow_sigmas

    model = random_model()
    noise, y = draw("cpu")
    for shift in (1.0, 3.0):
        expected = sample(model, noise, y, null_label=10, steps=8, cfg_scale=3.0, interval=(0.1, 0.7), shift=shift)
        pipe = pipeline(model, diffusers.FlowMatchEulerDiscreteScheduler())
        got = pipe(y, num_inference_steps=8, guidance_scale=3.0, guidance_interval=(0.1, 0.7), latents=noise,
                   sigmas=flow_sigmas(8, shift), output_type="pt").images
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # the parity rule of fp32


@pytest.mark.parametrize("name", ["FlowMatchEulerDiscreteScheduler", "DPMSolverMultistepScheduler",
                                  "UniPCMultistepScheduler"])
def test_flow_schedulers_reach_the_exact_flow_map(name):
    diffusers = pytest.importorskip("diffusers")
    flow = {} if name.startswith("FlowMatch") else dict(use_flow_sigmas=True, prediction_type="flow_prediction")
    pipe = pipeline(GaussianFlow(), getattr(diffusers, name)(**flow))
    noise = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = pipe([0] * 8, num_inference_steps=25, guidance_scale=1.0, latents=noise, output_type="pt").images
    error = (out - (MU + SIGMA * noise)).abs().max().item()
    assert error < (0.2 if name.startswith("FlowMatch") else 0.03), error  # Euler: first order; a wrong sign: O(1)


def test_pipeline_outputs_pil_images():
    diffusers = pytest.importorskip("diffusers")
    pipe = pipeline(random_model(), diffusers.FlowMatchEulerDiscreteScheduler())
    images = pipe([1, 2], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert len(images) == 2 and images[0].size == (32, 32)
    with pytest.raises(ValueError, match="takes no custom sigmas"):
        pipeline(random_model(), diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True))(
            [1], num_inference_steps=2, sigmas=[1.0, 0.5])
