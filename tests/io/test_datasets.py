"""Data: the ADM centre crop, ImageFolder and shards, the index-seeded order, the embedded digits."""
import numpy as np
import pytest
import torch
from PIL import Image

from dip.io.datasets import Digits, ImageFolder, Shards, center_crop, load_batch, open_dataset, sample_indices
from dip.io.shards import prepare


def test_center_crop_box_downsamples_then_bicubic_then_crops():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 700, 3), dtype=np.uint8))
    out = center_crop(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # 300×700 → box to 150×350 → 75×175 (short side < 128 stops) → bicubic to 64×149 → centre crop
    box = image.resize((350, 150), Image.BOX).resize((175, 75), Image.BOX)
    want = np.asarray(box.resize((round(175 * 64 / 75), 64), Image.BICUBIC))[:, 42:106]
    np.testing.assert_array_equal(out, want)


def make_folder(root, per_class=3):
    rng = np.random.default_rng(1)
    for c in ("cat", "ant"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_and_shards(tmp_path):
    folder = ImageFolder(make_folder(tmp_path / "imgs"), 16)
    assert folder.classes == ["ant", "cat"] and len(folder) == 6 and folder[0][0].shape == (16, 16, 3)
    prepare(tmp_path / "imgs", tmp_path / "shards", 16, shard_size=4, workers=2)
    shards = open_dataset(str(tmp_path / "shards"), 16)
    assert isinstance(shards, Shards) and len(shards) == 6
    for i in range(6):
        np.testing.assert_array_equal(shards[i][0], folder[i][0])
        assert shards[i][1] == folder[i][1]
    with pytest.raises(ValueError, match="the model wants 32"):
        open_dataset(str(tmp_path / "shards"), 32)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        open_dataset(str(tmp_path / "nothing"), 16)


def test_sample_order_is_a_function_of_the_global_index():
    whole = sample_indices(3, 10, 0, 35)
    assert sorted(whole[:10].tolist()) == list(range(10)) and sorted(whole[10:20].tolist()) == list(range(10))
    assert not torch.equal(whole[:10], whole[10:20])  # a new permutation each epoch
    torch.testing.assert_close(torch.cat([sample_indices(3, 10, 0, 12), sample_indices(3, 10, 12, 23)]), whole)
    assert not torch.equal(sample_indices(4, 10, 0, 10), whole[:10])


def test_digits_and_batches():
    pytest.importorskip("sklearn")
    d = Digits(32)
    assert len(d) == 1797 and d.classes[3] == "3"
    x, y = load_batch(d, torch.tensor([0, 5]))
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1 and y.tolist() == [0, 5]


def test_every_pillow_format_and_suffix_case_is_read_and_hidden_folders_are_not_classes(tmp_path):
    rgb = Image.fromarray(np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "nested").mkdir(parents=True)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "__pycache__").mkdir()
    rgb.save(tmp_path / "a" / "one.Png")
    rgb.save(tmp_path / "a" / "two.JPG")
    rgb.save(tmp_path / "b" / "nested" / "three.tif")
    rgb.save(tmp_path / "b" / ".hidden.png")
    rgb.save(tmp_path / ".ipynb_checkpoints" / "stray.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path, 8)
    assert folder.classes == ["a", "b"]  # the notebook folder does not become class 0
    assert sorted((p.name, k) for p, k in folder.items) == [("one.Png", 0), ("three.tif", 1), ("two.JPG", 0)]


@pytest.mark.parametrize("mode,value,expected", [
    ("I;16", 65535, 255), ("I;16", 32896, 128), ("I", 65535, 255), ("L", 77, 77), ("P", 5, 5), ("LA", 200, 200),
    ("RGBA", 30, 30), ("CMYK", 0, 255),
])
def test_image_modes_convert_by_their_true_range(tmp_path, mode, value, expected):
    from dip.io.image_formats import to_rgb

    if mode in ("I;16", "I"):
        image = Image.fromarray(np.full((4, 4), value, np.uint16 if mode == "I;16" else np.int32))
        assert image.mode == mode
    elif mode == "P":
        image = Image.new("P", (4, 4), 0)
        image.putpalette([value] * 3 + [0] * 765)
    else:
        image = Image.new(mode, (4, 4), tuple([value] * len(mode)))
    rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (4, 4, 3) and (rgb == expected).all(), (mode, rgb[0, 0])


def test_a_sixteen_bit_grey_png_is_not_white(tmp_path):
    (tmp_path / "c").mkdir()
    Image.fromarray(np.full((8, 8), 20000, np.uint16)).save(tmp_path / "c" / "grey16.png")
    arr, _ = ImageFolder(tmp_path, 8)[0]
    assert abs(int(arr[0, 0, 0]) - round(20000 / 257)) <= 1


def test_prepare_replaces_a_whole_shard_folder_and_refuses_a_foreign_one(tmp_path, capsys):
    make_folder(tmp_path / "imgs")
    out = tmp_path / "shards"
    prepare(tmp_path / "imgs", out, 16, shard_size=2, workers=1)  # 3 shards of 16²
    (tmp_path / ".shards.preparing").mkdir()  # as if an earlier prepare was killed
    (tmp_path / ".shards.preparing" / "images_00007.npy").write_bytes(b"stale")
    prepare(tmp_path / "imgs", out, 8, shard_size=4, workers=1)  # 2 shards of 8²: nothing of the first run left
    assert sorted(p.name for p in out.iterdir()) == ["images_00000.npy", "images_00001.npy", "labels_00000.npy",
                                                     "labels_00001.npy", "meta.json"]
    assert len(open_dataset(str(out), 8)) == 6 and not (tmp_path / ".shards.preparing").exists()
    assert "discarding the unfinished prepare" in capsys.readouterr().out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a dip shard folder"):
        prepare(tmp_path / "imgs", foreign, 8)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_link_back_into_the_dataset_is_refused(tmp_path):
    make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "loop").symlink_to(tmp_path / "imgs", target_is_directory=True)
    with pytest.raises(ValueError, match="loop links back into the dataset"):
        ImageFolder(tmp_path / "imgs", 8)
    elsewhere = tmp_path / "extra" / "cls"
    elsewhere.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(elsewhere / "x.png")
    (tmp_path / "imgs" / "loop").unlink()
    (tmp_path / "imgs" / "linked").symlink_to(elsewhere, target_is_directory=True)  # outside the tree: a class
    data = ImageFolder(tmp_path / "imgs", 8)
    assert data.classes == ["ant", "cat", "linked"] and len(data) == 7


def test_prepare_reads_every_header_before_writing_a_shard(tmp_path):
    make_folder(tmp_path / "imgs")
    bad = next((tmp_path / "imgs").rglob("*.png"))
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read image"):
        prepare(tmp_path / "imgs", tmp_path / "shards", 8, shard_size=1, workers=1)
    assert not (tmp_path / "shards").exists() and not (tmp_path / ".shards.preparing").exists()
