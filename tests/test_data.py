"""Folder datasets never lose data silently (16-bit PNGs, dropped and emptied classes); one dataset spec syntax."""
import logging, shutil

import numpy as np
import pytest
from PIL import Image

from cogsynth.core import CogsynthError, Registry
from cogsynth.data import (CLASS_SETS, DATASETS, ImageFolderDataset, class_set, dataset_defaults, dataset_from_spec, parse_dataset_spec,
                           register_dataset, list_datasets, split_dir, write_digits_folder)

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
    finally: del DATASETS._entries["tiny-test"], DATASETS._docs["tiny-test"]     # no unregister in Registry: a test's cleanup

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


# --- issue 22: the dataset registry is a core.Registry; data no longer imports the diffusion runner ------------------

def test_registries_are_core_registries_and_every_entry_builds():
    assert isinstance(DATASETS, Registry) and isinstance(CLASS_SETS, Registry)
    for name in DATASETS: assert len(dataset_from_spec(name, "test")) > 0, name
    for name in CLASS_SETS: assert len(class_set(name)) > 0, name

def test_data_does_not_import_generate():
    import subprocess, sys
    code = "import sys, cogsynth.data as d; d.ImageFolderDataset; print('cogsynth.generate' in sys.modules, 'diffusers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]

# --- issue 24: a manifest record must point inside its folder; huge images are refused ------------------------------

def test_manifest_paths_must_stay_inside_their_folder(tmp_path):
    import json, os
    outside = tmp_path/"outside"; outside.mkdir(); Image.new("RGB", (8, 8)).save(outside/"x.png")
    for n, file in enumerate(["../../etc/passwd", "/etc/passwd", "../x.png", "linked/x.png"]):
        root = tmp_path/f"gen{n}"; (root/"cat").mkdir(parents=True); Image.new("RGB", (8, 8)).save(root/"cat"/"a.png")
        os.symlink(outside, root/"linked")
        lines = [{"schema": "cogsynth.generation/1", "meta": {}}, {"id": "a", "class": "cat", "file": "cat/a.png"},
                 {"id": "b", "class": "cat", "file": file}]
        (root/"manifest.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
        with pytest.raises(CogsynthError, match=rf"manifest.jsonl: line 3: file '{file}'"): ImageFolderDataset(root)

def test_a_huge_image_is_refused_with_its_size_and_without_pillows_warning(tmp_path):
    import warnings
    root = write_digits_folder(tmp_path/"d", "test", [0, 1])
    Image.new("1", (12_000, 12_000)).save(root/"1"/"huge.png")          # 144 Mpx, 18 kB on disk
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                   # Pillow's DecompressionBombWarning would raise
        ds = ImageFolderDataset(root)
    assert [p.rsplit("/", 1)[-1] for p, _ in ds.skipped] == ["huge.png"] and "too large: 12000 x 12000 = 144 Mpx" in ds.skipped[0][1]
    with pytest.raises(CogsynthError, match="1 unreadable image.*too large"): ImageFolderDataset(root, on_error="raise")
    lazy = ImageFolderDataset(root, check=False)                         # no header check up front: refused when loaded
    i = next(k for k, (p, _) in enumerate(lazy.samples) if p.endswith("huge.png"))
    assert lazy[i][1] in (0, 1) and "too large" in lazy.skipped[-1][1]

# --- issue 25.1 / 27: ImageNet-100 is a named class set; a level spec says what train takes -------------------------

def _fake_imagenet(root, wnids):
    "A tiny ImageNet-style folder: root/train/<wnid>/<wnid>_<k>.JPEG, two 8 px images per class."
    for c, w in enumerate(wnids):
        (root/"train"/w).mkdir(parents=True)
        for k in range(2): Image.fromarray(np.full((8, 8, 3), (c * 2 + k) % 256, np.uint8)).save(root/"train"/w/f"{w}_{k}.JPEG")
    return root

def test_imagenet_100_restricts_an_imagenet_folder(tmp_path):
    in100 = class_set("imagenet-100")
    assert len(in100) == len(set(in100)) == 100 and in100 == sorted(in100)
    from cogsynth.core import data_file
    assert set(data_file("imagenet100_wnids.txt").read_text().split()) == set(in100)
    root = _fake_imagenet(tmp_path/"in", in100 + ["n01440764", "n01443537"])    # two classes outside the set
    ds = dataset_from_spec(f"{root}:imagenet-100")
    assert ds.classes == in100 and len(ds) == 200
    assert len(dataset_from_spec(str(root)).classes) == 102
    import shutil; shutil.rmtree(root/"train"/in100[7])
    with pytest.raises(CogsynthError, match=r"1 of the 100 classes asked for \(include=\) have no images"): dataset_from_spec(f"{root}:imagenet-100")

def test_train_on_an_imagenet_folder_restricted_to_imagenet_100(tmp_path):
    import contextlib, io, json
    from cogsynth.cli import main
    root = _fake_imagenet(tmp_path/"in", class_set("imagenet-100") + ["n01440764"])
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["train", "--data", f"{root}:imagenet-100", "--model", "cnn_small", "--img-size", "16", "--epochs", "1",
                   "--batch-size", "50", "--workers", "0", "--device", "cpu", "--out", str(tmp_path/"run")])
    assert rc == 0, err.getvalue()[-2000:]
    config = json.loads((tmp_path/"run"/"config.json").read_text())
    assert json.dumps(config).count("n01440764") == 0 and "n01558993" in json.dumps(config)

def test_a_level_spec_names_what_train_takes(tmp_path):
    import contextlib, io
    from cogsynth.cli import main
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["train", "--data", "imagenet-cog:L1", "--out", str(tmp_path/"run")])
    assert rc == 2 and "write the spec as 'DIR:imagenet-cog:L1'" in err.getvalue(), err.getvalue()
    assert "--image-root" not in err.getvalue() and "--splits" not in err.getvalue()
    from cogsynth.levels import resolve_level_spec
    l1 = resolve_level_spec("imagenet-cog:L1")[0]
    root = _fake_imagenet(tmp_path/"in21k", l1[:3])
    with pytest.raises(CogsynthError, match="997 of the 1000 classes asked for"): dataset_from_spec(f"{root}:imagenet-cog:L1")
