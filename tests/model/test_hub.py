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


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A saved DiP-T/8 folder; the Hub offline (nothing here may reach the network)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    random_model().save_pretrained(tmp_path / "hub")
    return tmp_path / "hub"


def test_a_flipped_weight_byte_is_caught_by_the_digest(folder):
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x10  # inside the last tensor's data
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the digest"):
        DiP.from_pretrained(folder)


@pytest.mark.parametrize("keep", [0, 50])
def test_truncated_weights_are_named(folder, keep):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        DiP.from_pretrained(folder)


@pytest.mark.parametrize("change", [{"hidden_size": 64}, {"num_classes": 5}, {"head_base_width": 16},
                                    {"patch_size": 16}])
def test_a_config_json_of_another_architecture_names_it(folder, change):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match="config.json"):
        DiP.from_pretrained(folder)


def test_an_override_that_contradicts_the_weights_is_named(folder):
    with pytest.raises(ValueError, match="does not fit the architecture"):
        DiP.from_pretrained(folder, num_classes=5)


def test_missing_files_and_local_paths_are_not_found_at_once(folder, tmp_path):
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        DiP.from_pretrained(folder)
    for missing in (tmp_path / "nowhere", "./nowhere", "runs/x/y"):
        with pytest.raises(FileNotFoundError, match="not found"):
            DiP.from_pretrained(missing)


def test_an_unwritable_folder_is_named_before_writing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file"):
        random_model().save_pretrained(blocker)
