"""REPA (docs/model.md §6) with a small DINOv2 stand-in: loading, token alignment, loss, training with it."""
import pytest
import torch

from dip import create_model
from dip.training.repa import DINOv2, Projector, encoder_input, repa_loss


def stand_in(path):
    torch.manual_seed(0)
    enc = DINOv2(dim=64, depth=2, heads=1, patch=14, pretrain_grid=4)
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.05)
    torch.save(enc.state_dict(), path)
    return enc


def test_dinov2_loads_released_names_and_aligns_tokens(tmp_path):
    enc = stand_in(tmp_path / "dinov2.pth")
    loaded = DINOv2.from_pretrained(tmp_path / "dinov2.pth")
    assert loaded.dim == 64 and len(loaded.blocks) == 2 and not any(p.requires_grad for p in loaded.parameters())
    assert {"cls_token", "pos_embed", "mask_token", "blocks.1.ls2.gamma", "norm.bias"} <= set(enc.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = loaded(encoder_input(x, 4))  # DiP-T/8 at 32²: 4×4 tokens ↔ 56² encoder input, 4×4 patches
    assert z.shape == (2, 16, 64)
    torch.testing.assert_close(z, enc.eval()(encoder_input(x, 4)))
    assert loaded(encoder_input(x, 6)).shape == (2, 36, 64)  # position embedding interpolated
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a DINOv2 state dict"):
        DINOv2.from_pretrained(tmp_path / "bad.pth")


def test_repa_loss_and_features():
    a = torch.randn(2, 5, 8)
    assert repa_loss(a, 3 * a).abs() < 1e-6 and abs(repa_loss(a, -a).item() - 2) < 1e-6
    model = create_model("DiP-T/8")
    x, t, y = torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([1, 2])
    v, h = model(x, t, y, features_block=2)
    torch.testing.assert_close(v, model(x, t, y))
    assert h.shape == (2, 16, 128)
    assert Projector(128, 64)(h).shape == (2, 16, 64)


def test_training_with_repa(tmp_path):
    pytest.importorskip("sklearn")
    from dip.cli.train import main

    stand_in(tmp_path / "dinov2.pth")
    main(["--device", "cpu", "--batch", "4", "--steps", "2", "--final-samples", "0", "--out", str(tmp_path / "run"),
          "--minutes", "10", "--repa-encoder", str(tmp_path / "dinov2.pth")])
    ckpt = torch.load(next((tmp_path / "run" / "checkpoints").glob("*.pt")), weights_only=True)
    assert ckpt["projector"] and "mlp.4.weight" in ckpt["projector"]
