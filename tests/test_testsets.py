"""cogsynth.testsets: every registered test set and transfer dataset read back from its fake layout, the errors a wrong
folder gets before any image is opened, and the readers checked against torchvision's own parsers (issue 25)."""
import random, shutil, tarfile
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import CogsynthError, RegistryKeyError
from cogsynth.testsets import (ILSVRC_DEVKIT, ILSVRC_GROUND_TRUTH, TESTSETS, TRANSFER_DATASETS, LabeledImages, LayoutError,
                               eurosat_split, fake_layout, layout_entry, load_testset, transfer_splits)

ENTRIES = [(n, layout) for reg in (TESTSETS, TRANSFER_DATASETS) for n in reg for layout in reg[n].fakes]


@pytest.fixture
def tv_flowers_md5(monkeypatch):
    "Fake .mat files cannot match the md5 sums torchvision's Flowers102 checks."
    monkeypatch.setattr("torchvision.datasets.flowers102.check_integrity", lambda *a, **k: True)


def _colour(ds, i): return np.asarray(ds.load(i), float).mean((0, 1))


@pytest.mark.parametrize("name,layout", ENTRIES)
def test_every_layout_reads_back_with_its_labels(name, layout, tmp_path, tv_flowers_md5):
    entry = layout_entry(name)
    fake = fake_layout(name, tmp_path/"d", per_class=2, classes=3, layout=layout)
    for split in entry.counts:
        ds = entry.load(fake.root, split, **fake.kwargs)
        assert (len(ds), len(ds.classes), ds.split, ds.name) == (fake.expected[split], 3, split, name)
        assert np.bincount(ds.targets).tolist() == [len(ds) // 3] * 3
        means = {}
        for i, t in enumerate(ds.targets): means.setdefault(t, []).append(_colour(ds, i))
        centres = {t: np.mean(v, 0) for t, v in means.items()}
        assert all(np.abs(np.array(v) - centres[t]).max() < 10 for t, v in means.items())   # one colour per label
        assert min(np.abs(centres[a] - centres[b]).max() for a in centres for b in centres if a < b) > 30
        im, y = ds[0]
        assert im.mode == "RGB" and y == ds.targets[0]


def test_no_image_is_opened_while_loading(tmp_path, monkeypatch, tv_flowers_md5):
    fakes = [(n, fake_layout(n, tmp_path/n/lay, layout=lay)) for n, lay in ENTRIES]
    import PIL.Image
    def boom(*a, **k): raise AssertionError("an image was opened")
    monkeypatch.setattr(PIL.Image, "open", boom)
    for n, fake in fakes:
        for split in layout_entry(n).counts: layout_entry(n).load(fake.root, split, **fake.kwargs)


@pytest.mark.parametrize("name", [n for n in TRANSFER_DATASETS if "torchvision" in TRANSFER_DATASETS[n].fakes])
def test_torchvision_layout_gives_the_official_split(name, tmp_path, tv_flowers_md5):
    a, b = (transfer_splits(name, tmp_path/lay, **fake_layout(name, tmp_path/lay, layout=lay).kwargs) for lay in ("official", "torchvision"))
    for split in a:
        assert (a[split].layout, b[split].layout) == ("official", "torchvision")
        assert a[split].classes == b[split].classes
        key = (lambda d: sorted((Path(p).stem.lstrip("0"), d.classes[t]) for p, t in d.samples))
        assert key(a[split]) == key(b[split])   # Cars' layouts number files with 6 and 5 digits


def test_ilsvrc_devkit_labels_as_torchvision_parses_them(tmp_path, monkeypatch):
    "The flat folder read through meta.mat gives each image the wnid torchvision's parse_devkit/val_archive sorts it into."
    from torchvision.datasets import imagenet
    fake = fake_layout("imagenet-val", tmp_path/"flat", per_class=3, classes=4, layout="ilsvrc")
    flat = load_testset("imagenet-val", fake.root, **fake.kwargs)
    arch = tmp_path/"archives"; arch.mkdir()
    with tarfile.open(arch/"ILSVRC2012_devkit_t12.tar.gz", "w:gz") as t: t.add(fake.root/ILSVRC_DEVKIT, ILSVRC_DEVKIT)
    with tarfile.open(arch/"ILSVRC2012_img_val.tar", "w") as t:
        for f in sorted(fake.root.glob("*.JPEG")): t.add(f, f.name)
    monkeypatch.setattr(imagenet, "_verify_archive", lambda *a, **k: None)   # our archives are not the real ones
    imagenet.parse_devkit_archive(str(arch)); imagenet.parse_val_archive(str(arch))
    folders = load_testset("imagenet-val", arch/"val", **fake.kwargs)
    assert folders.layout == "wnid folders" and flat.layout == "ilsvrc devkit"
    by_name = lambda d: {Path(p).name: d.classes[t] for p, t in d.samples}
    assert by_name(flat) == by_name(folders) and flat.classes == folders.classes
    assert [flat.classes[t] for t in flat.targets][:4] == sorted(flat.classes)   # image j is of the writer's class (j - 1) % 4


def test_ilsvrc_ids_are_not_sorted_wnid_order(tmp_path):
    "A reader that took ILSVRC2012_ID k as the k-th sorted wnid would get every label of this fake wrong but the middle one."
    fake = fake_layout("imagenet-val", tmp_path/"flat", per_class=1, classes=3, layout="ilsvrc")
    truth = [int(t) for t in (fake.root/ILSVRC_DEVKIT/"data"/ILSVRC_GROUND_TRUTH).read_text().split()]
    ds = load_testset("imagenet-val", fake.root, **fake.kwargs)
    naive = [i - 1 for i in truth]
    assert ds.targets == [0, 1, 2] and naive == [2, 1, 0]


def test_imagenet_v2_folder_is_the_sorted_wnid_index(tmp_path):
    from cogsynth.wordnet import imagenet_wnids
    fake = fake_layout("imagenet-v2", tmp_path/"v2", per_class=1, classes=2)   # folders 0 and 999
    ds = load_testset("imagenet-v2", fake.root, **fake.kwargs)
    assert {Path(p).parent.name: ds.classes[t] for p, t in ds.samples} == {"0": imagenet_wnids()[0], "999": "n15075141"}
    shutil.move(fake.root/"999", fake.root/"500")
    ds = load_testset("imagenet-v2", fake.root, **fake.kwargs)
    assert ds.classes == [imagenet_wnids()[0], imagenet_wnids()[500]]


@pytest.mark.parametrize("name", list(TESTSETS) + list(TRANSFER_DATASETS))
def test_an_empty_or_foreign_folder_is_a_layout_error(name, tmp_path):
    (tmp_path/"empty").mkdir()
    entry = layout_entry(name)
    for split in entry.counts:
        with pytest.raises(LayoutError) as e: entry.load(tmp_path/"empty", split, expected=None)
        assert name in str(e.value) and entry.layout in str(e.value)
    with pytest.raises(LayoutError, match="is not a folder"): entry.load(tmp_path/"missing", next(iter(entry.counts)))


SPLIT_FILES = {"aircraft": "data/images_variant_test.txt", "cars196": "cars_annos.mat", "dtd": "labels/test1.txt",
               "flowers": "setid.mat", "pets": "annotations/test.txt", "food101": "meta/test.txt", "sun397": "Testing_01.txt",
               "inat2018": "val2018.json", "inat2019": "val2019.json"}

@pytest.mark.parametrize("name,file", SPLIT_FILES.items())
def test_a_missing_split_file_is_named_with_the_official_layout(name, file, tmp_path):
    fake = fake_layout(name, tmp_path/"d")
    (fake.root/file).unlink()
    with pytest.raises(LayoutError) as e: TRANSFER_DATASETS[name].load(fake.root, "test", **fake.kwargs)
    msg = str(e.value)
    assert Path(file).name in msg and "is missing" in msg and TRANSFER_DATASETS[name].layout in msg


def test_a_missing_devkit_ground_truth_is_named(tmp_path):
    fake = fake_layout("imagenet-val", tmp_path/"d", layout="ilsvrc")
    (fake.root/ILSVRC_DEVKIT/"data"/ILSVRC_GROUND_TRUTH).unlink()
    with pytest.raises(LayoutError, match="pass devkit=DIR"): load_testset("imagenet-val", fake.root, **fake.kwargs)
    shutil.move(fake.root/ILSVRC_DEVKIT, tmp_path/"kit")   # a devkit elsewhere is found with devkit=
    (tmp_path/"kit"/"data"/ILSVRC_GROUND_TRUTH).write_text("".join(f"{3 - j % 3}\n" for j in range(6)))
    assert len(load_testset("imagenet-val", fake.root, devkit=tmp_path/"kit", **fake.kwargs)) == 6


@pytest.mark.parametrize("name", list(TESTSETS) + list(TRANSFER_DATASETS))
def test_an_image_count_unlike_the_datasets_is_refused_unless_a_subset_is_meant(name, tmp_path):
    entry = layout_entry(name)
    fake = fake_layout(name, tmp_path/"d")
    split = next(iter(entry.counts))
    with pytest.raises(LayoutError) as e: entry.load(fake.root, split, **fake.options or {})
    assert f"found {fake.expected[split]:,} images, expected {entry.counts[split]:,}" in str(e.value) and "expected=None" in str(e.value)
    with pytest.raises(LayoutError, match="found 3 classes, expected 7"): entry.load(fake.root, split, expected=None, n_classes=7, **fake.options or {})
    assert len(entry.load(fake.root, split, expected=None, **fake.options or {})) == fake.expected[split]


def test_a_missing_listed_image_is_named(tmp_path):
    fake = fake_layout("food101", tmp_path/"d")
    victim = next((fake.root/"images").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(LayoutError, match=f"1 of the 6 images .* missing, e.g. .*{victim.name}"):
        transfer_splits("food101", fake.root, **fake.kwargs)
    assert len(TRANSFER_DATASETS["food101"].load(fake.root, "trainval", check_files=False, **fake.kwargs)) == 6


def test_a_subset_keeps_the_test_sets_order(tmp_path):
    fake = fake_layout("imagenet-a", tmp_path/"d", classes=4)
    full = load_testset("imagenet-a", fake.root, **fake.kwargs)
    ds = load_testset("imagenet-a", fake.root, classes=[full.classes[3], full.classes[1], "n00000000"], **fake.kwargs)
    assert ds.classes == [full.classes[1], full.classes[3]] and ds.targets == [0, 0, 1, 1]
    assert [p for p, _ in ds.samples] == [p for p, t in full.samples if t in (1, 3)]
    with pytest.raises(CogsynthError, match="none of the 1 classes"): full.subset(["n00000000"])


def test_eurosat_split_is_feng_et_al_per_class_and_seeded():
    sizes = [3000, 3000, 3000, 2500, 2500, 2000, 2500, 3000, 2500, 3000]
    files = {f"c{i}": [f"c{i}/{j}.jpg" for j in range(n)] for i, n in enumerate(sizes)}
    a, b, c = eurosat_split(files), eurosat_split(files), eurosat_split(files, seed=1)
    assert {s: len(v) for s, v in a.items()} == {"test": 8_100, "val": 5_400, "train": 13_500}
    assert a == b and a["test"] != c["test"]
    assert all(np.bincount([t for _, t in a[s]]).tolist() == [n] * 10 for s, n in (("test", 810), ("val", 540)))
    # the same draw as naver/trex after random.seed(0): per sorted class, random.shuffle(list(range(n))) of its sorted files
    random.seed(0)
    expect = []
    for label, cls in enumerate(sorted(files)):
        order = list(range(len(files[cls]))); random.shuffle(order)
        expect += [(sorted(files[cls])[i], label) for i in order[:810]]
    assert a["test"] == expect


def test_names_options_and_probes():
    assert list(TESTSETS) == ["imagenet-val", "imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a"]
    assert list(TRANSFER_DATASETS) == ["aircraft", "cars196", "dtd", "eurosat", "flowers", "pets", "food101", "sun397", "inat2018", "inat2019"]
    assert [n for n in TRANSFER_DATASETS if TRANSFER_DATASETS[n].probe == "sgd"] == ["inat2018", "inat2019"]
    assert all(TRANSFER_DATASETS[n].probe == "lbfgs" for n in TRANSFER_DATASETS if not n.startswith("inat"))
    assert all(TESTSETS.doc(n) and TESTSETS[n].counts == {"test": TESTSETS[n].counts["test"]} for n in TESTSETS)
    assert {n: TESTSETS[n].counts["test"] for n in TESTSETS} == {"imagenet-val": 50_000, "imagenet-v2": 10_000, "imagenet-sketch": 50_889,
                                                                 "imagenet-r": 30_000, "imagenet-a": 7_500}
    with pytest.raises(RegistryKeyError, match="--data='imagenet-s'.*did you mean"): TESTSETS["imagenet-s"]
    with pytest.raises(RegistryKeyError, match="name='aircraf'"): fake_layout("aircraf", "/nonexistent")
    with pytest.raises(CogsynthError, match="takes no option"): TESTSETS["imagenet-r"].load("/", devkit="x")
    with pytest.raises(CogsynthError, match="expected='all'"): TESTSETS["imagenet-r"].wanted_counts("test", "all")
    with pytest.raises(CogsynthError, match="split='train'"): TRANSFER_DATASETS["dtd"].load("/", "train")


def test_labeled_images_is_picklable_for_dataloader_workers(tmp_path):
    import pickle
    fake = fake_layout("imagenet-r", tmp_path/"d")
    ds = load_testset("imagenet-r", fake.root, **fake.kwargs)
    back = pickle.loads(pickle.dumps(ds))
    assert isinstance(back, LabeledImages) and back.samples == ds.samples and back[0][1] == ds[0][1]
