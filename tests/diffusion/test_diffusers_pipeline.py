"""The diffusers pipeline (dip/diffusion/diffusers_pipeline.py; docs/model.md §7.3): with the flow-matching Euler
scheduler on DiP's grid it is dip's sampler; diffusers' flow schedulers reach the exact Gaussian flow map."""
import pytest
import torch
from torch import nn

from dip.diffusion.solvers import sample
from tests.support.flows import MU, SIGMA, gaussian_velocity
from tests.support.models import draw, random_model

pytest.importorskip("diffusers")


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


@pytest.mark.parametrize("call, match", [
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(class_labels=[0.9, 1.9, 2.9]), "class_labels"),
    (dict(class_labels=["cat", 1]), "class_labels"),
    (dict(class_labels=[1, 11]), "class_labels"),
    (dict(guidance_interval=(0.97, 0.11)), "guidance_interval"),
    (dict(output_type="latent"), "output_type"),
    (dict(generator=[torch.Generator()] * 2), "one per label"),
    (dict(latents=torch.zeros(2, 3, 32, 32)), "latents"),
])
def test_bad_arguments_are_named_before_any_step(call, match):
    import diffusers

    pipe = pipeline(random_model(), diffusers.FlowMatchEulerDiscreteScheduler())
    steps = []
    pipe.velocity = lambda *a, **k: steps.append(1)  # no step may run
    kwargs = {"class_labels": [1, 2, 3], "num_inference_steps": 2, **call}
    with pytest.raises(ValueError, match=match):
        pipe(kwargs.pop("class_labels"), **kwargs)
    assert steps == []


def test_a_non_flow_matching_scheduler_is_refused():
    import diffusers

    with pytest.raises(ValueError, match="not a flow-matching scheduler"):
        pipeline(random_model(), diffusers.DDPMScheduler())([1], num_inference_steps=2)


def test_one_generator_per_label_gives_per_sample_noise():
    import diffusers

    pipe = pipeline(random_model(), diffusers.FlowMatchEulerDiscreteScheduler())
    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]
    both = pipe([1, 2], num_inference_steps=2, generator=gens([5, 6]), output_type="pt").images
    alone = pipe([2], num_inference_steps=2, generator=gens([6]), output_type="pt").images
    torch.testing.assert_close(both[1:], alone, rtol=1e-5, atol=1e-5)
