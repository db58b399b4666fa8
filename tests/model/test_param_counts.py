"""Parameter counts of docs/model.md §3–§4, on the meta device (no memory)."""
import pytest
import torch

from dip import create_model


def count(module):
    return sum(p.numel() for p in module.parameters())


def meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def test_dip_xl16_total_backbone_and_head():
    m = meta_model("DiP-XL/16")
    assert count(m) == 631_989_411
    assert count(m.local_decoder) == 6_968_067
    assert count(m) - count(m.local_decoder) == 625_021_344
    assert count(m.blocks[0]) == 23_898_384
    assert count(m.s_embedder) + count(m.t_embedder) + count(m.y_embedder) == 3_663_360


HEAD_TABLE = {  # docs/model.md §3, per layer at P=16, D=1152
    "enc1": 1_792, "enc2": 73_856, "enc3": 295_168, "enc4": 1_180_160, "bottleneck": 852_480,
    "up4": 1_049_088, "dec4": 2_359_552, "up3": 262_400, "dec3": 589_952, "up2": 65_664, "dec2": 147_520,
    "up1": 16_448, "dec1": 73_792, "out_conv": 195,
}


@pytest.mark.parametrize("name", ["DiP-XL/16", "DiP-XL/32"])
def test_head_layers_match_the_paper_table(name):
    head = meta_model(name).local_decoder
    assert {n: count(c) for n, c in head.named_children()} == HEAD_TABLE


def test_xl32_patch_embedding_grows():
    m = meta_model("DiP-XL/32")
    assert tuple(m.s_embedder.proj.weight.shape) == (1152, 3072)
    assert count(m) == 631_989_411 + (3072 - 768) * 1152


def test_other_presets():
    assert round(count(meta_model("DiP-L/16")) / 1e6, 1) == 425.4
    assert round(count(meta_model("DiP-T/8")) / 1e6, 1) == 1.7  # head base width 32 (the demo recipe)
    dit_only = meta_model("DiT-only-XL/16")
    assert not hasattr(dit_only, "local_decoder")
    assert round(count(dit_only) / 1e6) == 629


def test_p8_head_generalisation():
    head = meta_model("DiP-XL/16", patch_size=8, image_size=256).local_decoder
    assert head.stages == 3
    assert not hasattr(head, "enc4")
    assert tuple(head.bottleneck[0].weight.shape) == (256, 256 + 1152, 1, 1)  # bottleneck = last stage's width
    assert tuple(head.dec1[0].weight.shape) == (64, 128, 3, 3)


def test_head_width_and_stage_options():
    head = meta_model("DiP-XL/16", head_base_width=32, head_max_width=128, head_stages=2).local_decoder
    assert [getattr(head, f"enc{k}")[0].out_channels for k in (1, 2)] == [32, 64]
    with pytest.raises(ValueError, match="head stages"):
        meta_model("DiP-XL/16", head_stages=5)
    with pytest.raises(ValueError, match="power of two"):
        meta_model("DiP-XL/16", patch_size=12, image_size=240)
