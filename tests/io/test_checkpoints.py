"""The released checkpoint layout (docs/model.md §5): strict loading, Lightning files, formats, errors."""
import os

import pytest
import torch
import torch.nn.functional as F

from dip import create_model
from dip.io.checkpoints import read_file
from dip.io.weights import load_weights, save_weights
from dip_kernels.patch_embed import patch_embed, patchify, unpatchify


def released_shapes(depth, D, heads, K, P, mlp, head_widths=(64, 128, 256, 512)):
    """Names and shapes of the authors' state dict, written out from §5 (independently of our modules)."""
    s = {"s_embedder.proj.weight": (D, 3 * P * P), "s_embedder.proj.bias": (D,),
         "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
         "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
         "y_embedder.embedding_table.weight": (K + 1, D)}
    hd = D // heads
    for i in range(depth):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": (D,), b + "attn.qkv.weight": (3 * D, D), b + "attn.q_norm.weight": (hd,),
                  b + "attn.k_norm.weight": (hd,), b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                  b + "norm2.weight": (D,), b + "mlp.w1.weight": (mlp, D), b + "mlp.w3.weight": (mlp, D),
                  b + "mlp.w2.weight": (D, mlp), b + "adaLN_modulation.0.weight": (6 * D, D),
                  b + "adaLN_modulation.0.bias": (6 * D,)})
    w = head_widths
    convs = {"enc1": (w[0], 3, 3), "enc2": (w[1], w[0], 3), "enc3": (w[2], w[1], 3), "enc4": (w[3], w[2], 3),
             "bottleneck": (w[3], w[3] + D, 1), "dec4": (w[2], 2 * w[3], 3), "dec3": (w[1], 2 * w[2], 3),
             "dec2": (w[0], 2 * w[1], 3), "dec1": (w[0], 2 * w[0], 3)}
    for n, (co, ci, k) in convs.items():
        s[f"local_decoder.{n}.0.weight"] = (co, ci, k, k)
        s[f"local_decoder.{n}.0.bias"] = (co,)
    for n, c in {"up4": w[3], "up3": w[2], "up2": w[1], "up1": w[0]}.items():
        s[f"local_decoder.{n}.weight"] = (c, c, 2, 2)  # ConvTranspose: (C_in, C_out, 2, 2)
        s[f"local_decoder.{n}.bias"] = (c,)
    s["local_decoder.out_conv.weight"] = (3, w[0], 1, 1)
    s["local_decoder.out_conv.bias"] = (3,)
    return s


SMALL = dict(depth=2, hidden_size=144, num_heads=2, num_classes=7, image_size=32)  # head_dim 72 like XL


def small_model():
    return create_model("DiP-XL/16", **SMALL)


def random_state(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v, generator=g) for k, v in shapes.items()}


def test_model_names_and_shapes_are_the_released_layout():
    assert {k: tuple(v.shape) for k, v in small_model().state_dict().items()} == released_shapes(2, 144, 2, 7, 16, 384)


def test_xl16_layout_on_meta():
    with torch.device("meta"):
        m = create_model("DiP-XL/16")
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == released_shapes(26, 1152, 16, 1000, 16, 3072)


def test_released_state_dict_loads_strictly(tmp_path):
    state = random_state(released_shapes(2, 144, 2, 7, 16, 384), 0)
    path = tmp_path / "plain.pt"
    torch.save(state, path)
    m = small_model()
    report = load_weights(m, path)
    assert report.skipped == [] and report.missing == [] and report.unexpected == []
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


class Hyper(dict):
    """Stands for Lightning's AttributeDict: a dict subclass the weights-only unpickler refuses."""


def lightning_file(path, raw, ema):
    hp = Hyper(lr=1e-4)
    hp.cfg = {"fn": print}
    sd = {f"denoiser.{k}": v for k, v in raw.items()}
    sd.update({f"ema_denoiser.{k}": v for k, v in ema.items()})
    sd["diffusion_trainer.proj.0.weight"] = torch.zeros(4, 4)
    sd["diffusion_trainer.encoder.cls_token"] = torch.zeros(1, 1, 4)
    torch.save({"state_dict": sd, "hyper_parameters": hp, "epoch": 3, "optimizer_states": [{"step": 1}]}, path)


def test_lightning_checkpoint_ema_by_default_raw_on_request(tmp_path):
    shapes = released_shapes(2, 144, 2, 7, 16, 384)
    raw, ema = random_state(shapes, 1), random_state(shapes, 2)
    path = tmp_path / "last.ckpt"
    lightning_file(path, raw, ema)
    m = small_model()
    with pytest.raises(ValueError, match="weights-only loading refuses; if you trust this file, pass --trust-pickle"):
        load_weights(m, path)  # Python objects besides tensors: only with the caller's trust
    report = load_weights(m, path, trust=True)
    torch.testing.assert_close(m.blocks[1].mlp.w2.weight, ema["blocks.1.mlp.w2.weight"], rtol=0, atol=0)
    assert "ema_denoiser." in report.source
    assert "diffusion_trainer.proj.0.weight" in report.skipped
    assert "denoiser.blocks.0.norm1.weight" in report.skipped
    load_weights(m, path, which="raw", trust=True)
    torch.testing.assert_close(m.blocks[1].mlp.w2.weight, raw["blocks.1.mlp.w2.weight"], rtol=0, atol=0)


def test_save_round_trip_both_formats(tmp_path):
    m, ema = small_model(), small_model()
    for name in ("w.safetensors", "w.pt", "both.ckpt", "both.safetensors"):
        path = tmp_path / name
        save_weights(path, m.state_dict(), ema.state_dict() if name.startswith("both") else None)
        fresh = small_model()
        load_weights(fresh, path)
        want = ema if name.startswith("both") else m
        for (k, a), b in zip(fresh.state_dict().items(), want.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert sorted(os.listdir(tmp_path)) == ["both.ckpt", "both.safetensors", "w.pt", "w.safetensors"]  # no temp files


def test_errors(tmp_path):
    m = small_model()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_weights(m, tmp_path / "absent.pt")
    bad = tmp_path / "corrupt.pt"
    save_weights(bad, m.state_dict())
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_file(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_file(junk)
    wrong = tmp_path / "wrong.pt"
    save_weights(wrong, create_model("DiP-XL/16", **{**SMALL, "num_classes": 9}).state_dict())
    with pytest.raises(ValueError, match="does not match the model"):
        load_weights(m, wrong)
    with pytest.raises(ValueError, match="which must be"):
        load_weights(m, wrong, which="best")


def test_patch_vectors_are_c_i_j_ordered():
    img = torch.randn(2, 3, 32, 48)
    vecs = F.unfold(img, 16, stride=16).transpose(1, 2)  # (B, T, 3·16·16): (c, i, j), row-major tokens
    torch.testing.assert_close(patchify(img, 16).reshape(2, 6, 768), vecs, rtol=0, atol=0)
    torch.testing.assert_close(unpatchify(patchify(img, 16), 2, 32, 48), img, rtol=0, atol=0)
    w, b = torch.randn(5, 768), torch.randn(5)
    torch.testing.assert_close(patch_embed(img, w, b, 16), vecs @ w.T + b, rtol=1e-5, atol=1e-4)  # fp32 sum order


def test_merged_projections_keep_the_released_layout(tmp_path):
    """W1|W3 and all adaLN Linears as single GEMMs: same parameters, same outputs, released names in and out."""
    torch.manual_seed(0)
    plain = small_model()
    merged = create_model("DiP-XL/16", **SMALL, merged_projections=True)
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in plain.parameters())
    assert {k: tuple(v.shape) for k, v in merged.state_dict().items()} == released_shapes(2, 144, 2, 7, 16, 384)
    path = tmp_path / "w.safetensors"
    save_weights(path, plain.state_dict())
    load_weights(merged, path)
    x = torch.randn(2, 3, 32, 32)
    t, y = torch.rand(2), torch.tensor([0, 7])
    torch.testing.assert_close(merged(x, t, y), plain(x, t, y), rtol=1e-5, atol=1e-5)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("spoil,match", [
    (lambda t: t.round().to(torch.int32), "is stored as torch.int32, the model keeps it in floating point"),
    (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "holds NaN or inf values"),
])
def test_weights_stored_as_integers_or_non_finite_are_refused(tmp_path, spoil, match):
    m = small_model()
    state = dict(m.state_dict())
    state["final_layer.linear.weight" if "final_layer.linear.weight" in state else "s_embedder.proj.weight"] = \
        spoil(state["s_embedder.proj.weight"] if "final_layer.linear.weight" not in state
              else state["final_layer.linear.weight"])
    save_weights(tmp_path / "w.safetensors", state)
    with pytest.raises(ValueError, match=match):
        load_weights(small_model(), tmp_path / "w.safetensors")


def test_load_weights_reads_dip_training_checkpoints(tmp_path):
    from dip.cli.train import main

    main(["--model", "DiP-T/8", "--device", "cpu", "--batch", "4", "--final-samples", "0", "--steps", "1",
          "--out", str(tmp_path)])
    ckpt = sorted((tmp_path / "checkpoints").glob("step_*.pt"))[-1]
    model = create_model("DiP-T/8")
    report = load_weights(model, ckpt)
    saved = torch.load(ckpt, weights_only=True)["ema"]
    assert "dip.train checkpoint (ema weights)" in report.source
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_a_trusted_file_still_cannot_set_state_on_allowlisted_classes():
    import collections
    import io
    import pickle

    from dip.io.checkpoints import _RestrictedUnpickler

    # GLOBAL collections.Counter, then BUILD with (None, {"pwned": 1}): pickle's slot-state path would setattr the
    # class itself, for the whole process
    payload = b"ccollections\nCounter\nN}(Vpwned\nI1\nu\x86b."
    with pytest.raises(pickle.UnpicklingError, match="refusing to set state on 'Counter'"):
        _RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not hasattr(collections.Counter, "pwned")
