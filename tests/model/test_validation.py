"""Bad input gets a ValueError naming the argument and the expected value."""
import pytest
import torch

from dip import DiP, create_model
from tests.support.models import model_inputs, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model().eval()


def good(model):
    return model_inputs(model)


@pytest.mark.parametrize("make,match", [
    (lambda x, t, y: (x[:, :2], t, y), r"x must be a \(B, 3, H, W\)"),
    (lambda x, t, y: (x[0], t, y), r"x must be a \(B, 3, H, W\)"),
    (lambda x, t, y: (x[..., :30], t, y), "divisible by the patch size 8, got 32×30"),
    (lambda x, t, y: (x.double(), t, y), "x dtype must match"),
    (lambda x, t, y: ((x > 0).long(), t, y), "x must be a floating-point"),
    (lambda x, t, y: (x, t[:1], y), r"t must have shape \(B,\) = \(2,\), got \(1,\)"),
    (lambda x, t, y: (x, t[:, None], y), r"t must have shape \(B,\)"),
    (lambda x, t, y: (x, (t * 10).long(), y), "t must be a floating-point"),
    (lambda x, t, y: (x, t + 2, y), r"t must be in \[0, 1\]"),
    (lambda x, t, y: (x, t, y[:1]), r"y must have shape \(B,\) = \(2,\)"),
    (lambda x, t, y: (x, t, y.float()), "y must be an int64"),
    (lambda x, t, y: (x, t, y.to(torch.uint8)), r"y must be an int64 \(or int32\) tensor of labels, got torch.uint8"),
    (lambda x, t, y: (x, t, y.to(torch.int16)), "y must be an int64"),
    (lambda x, t, y: (x[:0], t[:0], y[:0]), r"at least one image \(B ≥ 1\), got B = 0"),
    (lambda x, t, y: (x.index_fill(0, torch.tensor([1]), float("nan")), t, y), "x holds NaN or inf"),
    (lambda x, t, y: (x.index_fill(0, torch.tensor([0]), float("inf")), t, y), "x holds NaN or inf"),
    (lambda x, t, y: (x, t.index_fill(0, torch.tensor([0]), float("nan")), y), "t holds NaN or inf"),
    (lambda x, t, y: (x, t, torch.tensor([0, 11])), r"y labels must be in 0..10 \(10 = null class\)"),
    (lambda x, t, y: (x, t, torch.tensor([-1, 3])), "y labels must be in"),
    (lambda x, t, y: (x.to("meta"), t, y), "x must be on the model's device cpu"),
    (lambda x, t, y: (x, t.to("meta"), y), "t must be on the model's device"),
])
def test_forward_errors(model, make, match):
    with pytest.raises(ValueError, match=match):
        model(*make(*good(model)))


def test_null_class_is_a_valid_label(model):
    x, t, _ = good(model)
    model(x, t, torch.tensor([10, 10]))


def test_unconditional_accepts_only_the_null_row():
    m = tiny_model(num_classes=0)
    x, t, _ = good(m)
    with pytest.raises(ValueError, match="only 0 \\(the null row\\)"):
        m(x, t, torch.tensor([0, 1]))


def test_value_checks_can_be_turned_off(model):
    x, t, _ = good(model)
    model.check_inputs = False
    try:
        assert torch.isfinite(model(x, t + 2, torch.tensor([0, 10]))).all()  # t outside [0, 1], unchecked
    finally:
        model.check_inputs = True


@pytest.mark.parametrize("kw,match", [
    (dict(hidden_size=120, num_heads=4), "multiple of 4 for 2D RoPE, got 30"),
    (dict(hidden_size=130, num_heads=4), "divisible by num_heads"),
    (dict(image_size=36), "image_size must be divisible by patch_size 8"),
    (dict(num_classes=-1), "num_classes must be ≥ 0"),
    (dict(head="mlp"), "head must be 'detailer' or 'dit'"),
    (dict(kernels="cudnn"), "kernels backend must be one of"),
    (dict(depth=0), "depth must be a positive integer, got 0"),
    (dict(in_channels=0), "in_channels must be a positive integer"),
    (dict(head_base_width=0), "head_base_width must be a positive integer"),
    (dict(hidden_size=0), "hidden_size must be a positive integer"),
])
def test_construction_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kw)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown model preset 'DiP-H/16'"):
        create_model("DiP-H/16")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['hiden_size'\]"):
        create_model("DiP-T/8", hiden_size=3)
    assert isinstance(create_model("DiP-T/8", depth=1), DiP)


def test_int32_labels_are_accepted(model):
    x, t, y = good(model)
    torch.testing.assert_close(model(x, t, y.int()), model(x, t, y))


def test_float64_under_autocast_is_named(model):
    x, t, y = good(model)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="autocast does not run float64"):
        model(x.double(), t, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_cast_to_half_precision_runs(dtype):
    model = tiny_model().eval().to(dtype)
    x, t, y = model_inputs(model)
    out = model(x.to(dtype), t, y)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()


def test_a_meta_device_model_runs_with_checks_on():
    with torch.device("meta"):
        model = tiny_model()
        x, t, y = torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([1, 2])
    assert model.check_inputs and model(x, t, y).shape == (2, 3, 32, 32)  # shapes only: meta tensors hold no values
