"""The CUDA-graph sampling path (issue 8 item 3): the static-buffer Euler step equals the plain sampler; stored bf16
weights give autocast's numbers; a captured graph replays the same samples on CUDA."""
import copy

import pytest
import torch

from dip.cli.sample import main as sample_main
from dip.diffusion.graphed_sampler import GraphedSampler, store_autocast_weights
from dip.diffusion.solvers import sample
from tests.support.models import draw, random_model


def test_stored_bf16_weights_give_autocast_numbers():
    model = random_model()
    x, y = draw("cpu")
    t = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x, t, y)
        got = store_autocast_weights(copy.deepcopy(model), torch.bfloat16)(x, t, y)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("method,schedule,rule", [("euler", "uniform", "float32"), ("ab2", "uniform", "float32"),
                                                  ("pc3", "cosine", "float32"), ("pc3", "cosine", "aligned")])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_static_step_matches_the_plain_sampler(cfg, method, schedule, rule):
    model = random_model()
    noise, y = draw("cpu")
    kw = dict(steps=6, interval=(0.1, 0.7), schedule=schedule, interval_rule=rule)
    expected = sample(model, noise, y, null_label=10, cfg_scale=cfg, method=method, **kw)
    sampler = GraphedSampler(model, 4, null_label=10, cfg_scale=cfg, capture=False, method=method)  # a padding row
    got = sampler(noise, y, **kw)
    # outside the interval the static step computes v_u + 1·(v_c − v_u) instead of v_c, and the multistep update
    # sums its zero-weighted terms too: a few ulps
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    again = sampler(noise[:1], y[:1], **kw)  # buffers (state, history) are reset between calls
    torch.testing.assert_close(again, got[:1], rtol=1e-5, atol=1e-5)


def test_graph_rejects_methods_it_cannot_capture():
    with pytest.raises(ValueError, match="graph sampling supports"):
        GraphedSampler(random_model(), 2, null_label=10, cfg_scale=2.0, capture=False, method="heun")


def test_bad_noise_shape_and_cpu_capture_raise():
    model = random_model()
    sampler = GraphedSampler(model, 2, null_label=10, cfg_scale=2.0, capture=False)
    with pytest.raises(ValueError, match=r"noise must be \(1…2, 3, 32, 32\)"):
        sampler(torch.zeros(3, 3, 32, 32), torch.zeros(3, dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        GraphedSampler(model, 2, null_label=10, cfg_scale=2.0)


def test_graph_flag_needs_cuda(tmp_path, capsys):
    from dip.io.weights import save_weights

    ckpt = tmp_path / "w.safetensors"
    save_weights(ckpt, random_model().state_dict())
    with pytest.raises(SystemExit):
        sample_main(["--ckpt", str(ckpt), "--model", "DiP-T/8", "--device", "cpu", "--graph", "--steps", "2",
                     "--num-samples", "1", "--out", str(tmp_path)])
    assert "dip-sample: error: --graph needs a CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("kernels,method", [("torch", "euler"), ("auto", "euler"), ("auto", "pc3")])
def test_captured_graph_matches_eager_on_cuda(kernels, method):
    model = random_model("cuda", kernels=kernels)
    noise, y = draw("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected = sample(model, noise, y, null_label=10, steps=6, cfg_scale=3.0, interval=(0.1, 0.7), method=method)
    store_autocast_weights(model, torch.bfloat16)
    sampler = GraphedSampler(model, 3, null_label=10, cfg_scale=3.0, autocast=torch.bfloat16, method=method)
    got = sampler(noise, y, steps=6, interval=(0.1, 0.7))
    assert sampler.graph is not None
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)  # bf16 model, 6 steps: same kernels, same math
