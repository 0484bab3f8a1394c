"""Folder datasets never lose data silently (16-bit PNGs, dropped and emptied classes); one dataset spec syntax."""
import logging, shutil

import numpy as np
import pytest
from PIL import Image

from cogsynth.core import CogsynthError
from cogsynth.data import (DATASETS, ImageFolderDataset, dataset_defaults, dataset_from_spec, parse_dataset_spec, register_dataset,
                           list_datasets, split_dir, write_digits_folder)

def test_16bit_png_is_scaled_not_saturated(tmp_path):
    (tmp_path/"a").mkdir(); (tmp_path/"b").mkdir()
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)   # 0 .. 65,472
    Image.fromarray(ramp).save(tmp_path/"a"/"x.png"); Image.fromarray(ramp).save(tmp_path/"b"/"x.png")
    im = np.asarray(ImageFolderDataset(tmp_path)[0][0])
    assert im.shape == (32, 32, 3) and (im == 255).mean() < 0.01          # convert("RGB") makes 99.6% of them 255
    assert np.abs(im[..., 0].astype(int) - np.round(ramp / 257)).max() <= 1

class _Records(logging.Handler):
    def __init__(self): super().__init__(); self.lines = []
    def emit(self, record): self.lines.append(record.getMessage())

def test_dropped_classes_are_reported(tmp_path):
    root = write_digits_folder(tmp_path/"d", "test", [0, 1])
    (root/"5").mkdir()                                                # an empty class folder
    shutil.copytree(root/"0", root/"_aux")                            # images under a `_` folder
    h = _Records(); logging.getLogger("cogsynth").addHandler(h)
    try: ds = ImageFolderDataset(root)
    finally: logging.getLogger("cogsynth").removeHandler(h)
    assert ds.classes == ["0", "1"] and set(ds.dropped) == {"5", "_aux"}
    text = "\n".join(h.lines)
    assert "'5': no images" in text and "'_aux': 54 image(s) ignored" in text

def test_class_without_readable_image_is_an_error(tmp_path):
    root = write_digits_folder(tmp_path/"d", "test", [0, 1])
    (root/"2").mkdir()
    for i in range(3): (root/"2"/f"{i}.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(CogsynthError, match=r"class\(es\) \['2'\] under .* have no readable image \(3 unreadable"):
        ImageFolderDataset(root)

def test_one_spec_syntax(tmp_path):
    assert [p.kind for p in parse_dataset_spec("digits:0,1,2")] == ["registered"]
    assert dataset_from_spec("digits:7,8,9", "test").classes == ["7", "8", "9"]
    with pytest.raises(CogsynthError, match=r"dataset spec 'digits:7,8,x': digits classes .* \(bad: \['x'\]\)"): parse_dataset_spec("digits:7,8,x")
    with pytest.raises(CogsynthError, match="did you mean 'seen'"): parse_dataset_spec("digits:sen")
    a = write_digits_folder(tmp_path/"a", "train", [0, 1]); b = write_digits_folder(tmp_path/"b", "test", [1, 2])
    mix = dataset_from_spec(f"{a},{b}:0.25")
    assert mix.shares == [0.75, 0.25] and mix.classes == ["0", "1", "2"]
    with_digits = dataset_from_spec(f"digits,{b}:0.5", classes="0,1,2")
    assert with_digits.shares == [0.5, 0.5] and with_digits.classes == ["0", "1", "2"]
    (tmp_path/"s"/"train").mkdir(parents=True); (tmp_path/"s"/"test").mkdir()
    shutil.copytree(a/"0", tmp_path/"s"/"train"/"0"); shutil.copytree(a/"1", tmp_path/"s"/"train"/"1"); shutil.copytree(b/"1", tmp_path/"s"/"test"/"1")
    assert dataset_from_spec(str(tmp_path/"s"), "test").classes == ["1"] and len(dataset_from_spec(str(tmp_path/"s"))) == len(ImageFolderDataset(a))

def test_registry_lists_and_refuses_unknown_names():
    @register_dataset("tiny-test", defaults=dict(img_size=8))
    def _tiny(arg, split, *, img_size, transform=None, **_):
        "A test dataset."
        return dataset_from_spec("digits:0,1", split, img_size=img_size, transform=transform)
    try:
        assert "tiny-test" in list_datasets("tiny*") and dataset_from_spec("tiny-test").classes == ["0", "1"]
        with pytest.raises(CogsynthError, match="did you mean 'tiny-test'"): dataset_from_spec("tiny-tset:1")
    finally: DATASETS.pop("tiny-test")

def test_mix_defaults_are_what_every_part_agrees_on(tmp_path):
    """A mix keeps the settings no two parts disagree on, in either order; with a folder without a test split it has no
    val_split, so validation never reads the training images."""
    from cogsynth.train import build_data
    real = write_digits_folder(tmp_path/"real", "train", [0, 1])
    both = tmp_path/"both"; write_digits_folder(both/"train", "train", [0, 1]); write_digits_folder(both/"test", "test", [0, 1])
    assert split_dir(real, "test") == real and split_dir(real, "test", whole_ok=False) is None and split_dir(both, "test") == both/"test"
    no_val = {k: v for k, v in dataset_defaults("digits").items() if k != "val_split"}
    for spec in (f"digits,{real}:0.5", f"{real},digits:0.5"): assert dataset_defaults(spec) == no_val
    for spec in (f"digits,{both}:0.5", f"{both},digits:0.5"): assert dataset_defaults(spec) == dataset_defaults("digits")
    assert dataset_defaults(f"{both},{real}:0.5") == {}
    assert dataset_defaults("digits")["img_size"] == 16
    train, val, _, _ = build_data(f"digits,{real}:0.5", classes="0,1", img_size=16)
    assert val is None and len(train) > 0
    train, val, _, _ = build_data(f"digits,{both}:0.5", classes="0,1", img_size=16)
    assert val is not None and not {p for p, _ in val.datasets[1].samples} & {p for p, _ in train.datasets[1].samples}
