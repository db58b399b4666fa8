"""Hub conventions (dip/model/hub.py, dip/cli/convert.py; docs/model.md §5.1): save_pretrained / from_pretrained
round trip offline, and checkpoint conversion."""
import json

import pytest
import torch

from dip import DiP, create_model
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
