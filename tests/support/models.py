"""Small DiP models and inputs for fast CPU tests."""
import torch

from dip import create_model


def tiny_model(**overrides):
    """A DiP-T/8-shaped model small enough for fast CPU tests."""
    return create_model("DiP-T/8", **overrides)


def model_inputs(model, batch=2, size=None, device="cpu", seed=0):
    """Random (x, t, y) for ``model``: non-zero-mean images, t in (0, 1), labels including the null class."""
    g = torch.Generator().manual_seed(seed)
    size = size or model.image_size
    x = (0.5 + torch.randn(batch, model.in_channels, size, size, generator=g)).clamp(-1, 1)
    t = torch.rand(batch, generator=g)
    y = torch.randint(0, model.num_classes + 1, (batch,), generator=g)
    y[-1] = model.num_classes
    return x.to(device), t.to(device), y.to(device)


def random_model(device="cpu", **kw):
    """``tiny_model`` with every weight drawn N(0, 0.05²) (zero-initialised output layers would make every velocity
    0), in eval mode, input checks off."""
    torch.manual_seed(0)
    model = tiny_model(image_size=32, num_classes=10, **kw).to(device).eval()
    for p in model.parameters():  # zero-initialised output layers would make every velocity 0
        p.data.normal_(0, 0.05)
    model.check_inputs = False
    return model


def draw(device, batch=3):
    """Seeded noise (batch, 3, 32, 32) and labels [1, 2, 3][:batch] on ``device``."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, 32, 32, generator=g).to(device), torch.tensor([1, 2, 3][:batch], device=device)
