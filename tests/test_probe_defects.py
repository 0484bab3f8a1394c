"""Issue 17 (items 4-6, 9), issue 16 item 4, issue 13 and issue 24 (point 1) for the probe: each test failed on the tree before its fix."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from cogsynth.core import CogsynthError
from cogsynth.probe import cog_benchmark, extract_features, load_features, linear_probe
from cogsynth.features import feature_entries

ROOT = Path(__file__).resolve().parent.parent


def cli(*argv):
    from cogsynth.cli import main
    return main(["probe", *map(str, argv)])


@pytest.fixture(scope="module")
def cnn():
    import torch
    from cogsynth.models import create_encoder
    torch.manual_seed(0)
    return create_encoder("cnn_small")


def gaussians(seed, n=30, dim=12, classes=4, spread=1.0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(classes, dim)) * spread
    y = np.repeat(np.arange(classes), n)
    return (c[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


# ---------------------------------------------------------------- 17.4: torn feature files
def entry_of(cnn, store, **kw):
    "Extract the test digits 5 and 6 at pre_logits into `store`; the entry folder."
    return extract_features(cnn, "digits", layers=["pre_logits"], split="test", classes=[5, 6], out=store, device="cpu", **kw)["pre_logits"].path.parent


def test_truncated_features_file_names_the_file_and_the_fix(tmp_path, cnn):
    entry = entry_of(cnn, tmp_path)
    npy = entry/"pre_logits.npy"
    npy.write_bytes(npy.read_bytes()[:1500])
    with pytest.raises(CogsynthError, match=r"pre_logits\.npy is truncated or unreadable.*extract again"):
        load_features(entry, "pre_logits")


def test_torn_sidecar_names_the_file(tmp_path, cnn):
    side = entry_of(cnn, tmp_path)/"pre_logits.json"
    side.write_text(side.read_text()[:40])
    with pytest.raises(CogsynthError, match=r"pre_logits\.json is truncated or unreadable"):
        load_features(side)


@pytest.mark.parametrize("victim,keep", [("pre_logits.npy", 1500), ("pre_logits.json", 40), ("pre_logits.labels.npy", 100)])
def test_extraction_re_extracts_a_torn_cache(tmp_path, cnn, victim, keep):
    first = extract_features(cnn, "digits", layers=["pre_logits"], split="test", classes=[5, 6], out=tmp_path, device="cpu")
    ref, entry = np.array(first["pre_logits"].X), first["pre_logits"].path.parent; del first
    f = entry/victim
    f.write_bytes(f.read_bytes()[:keep])
    again = extract_features(cnn, "digits", layers=["pre_logits"], split="test", classes=[5, 6], out=tmp_path, device="cpu")
    np.testing.assert_array_equal(again["pre_logits"].X, ref)


def test_a_torn_cache_is_told_by_its_type(tmp_path, cnn):
    from cogsynth.features import TornFeaturesError, _cache_state, read_sidecar
    entry = entry_of(cnn, tmp_path)
    key = read_sidecar(entry/"pre_logits.json")["key"]
    assert _cache_state(entry, "pre_logits", key) is None
    assert _cache_state(entry, "pre_logits", "another")[1] is False
    npy = entry/"pre_logits.npy"
    npy.write_bytes(npy.read_bytes()[:1500])
    why, torn = _cache_state(entry, "pre_logits", key)
    assert torn and why.startswith(f"{npy} is truncated or unreadable") and "an extraction" not in why
    with pytest.raises(TornFeaturesError, match="extract again"): load_features(entry, "pre_logits")


def test_cache_key_holds_the_extraction_precision_and_the_storage_dtype(tmp_path, cnn):
    kw = dict(layers=["pre_logits"], split="test", classes=[5, 6], out=tmp_path, device="cpu")
    half = extract_features(cnn, "digits", **kw)["pre_logits"]
    full = extract_features(cnn, "digits", dtype="fp32", **kw)["pre_logits"]
    bf16 = extract_features(cnn, "digits", dtype="fp32", precision="bf16", **kw)["pre_logits"]
    assert (half.X.dtype, full.X.dtype) == (np.float16, np.float32)
    assert len({half.meta["key"], full.meta["key"], bf16.meta["key"]}) == 3 and bf16.meta["precision"] == "bf16"


# ---------------------------------------------------------------- 17.5: stale cog results
def test_cog_benchmark_does_not_report_another_encoders_results(tmp_path):
    a = {"seen": (gaussians(0, spread=0.3), gaussians(1, spread=0.3)), "L1": (gaussians(2, spread=0.3), gaussians(3, spread=0.3))}
    b = {"seen": (gaussians(10, spread=2.0), gaussians(11, spread=2.0)), "L1": (gaussians(12, spread=2.0), gaussians(13, spread=2.0))}
    kw = dict(model="same-name", seeds=(0,), solver="lbfgs", trials=0, max_iter=50, device="cpu")
    ra = cog_benchmark(a, out=tmp_path, **kw)
    with pytest.raises(CogsynthError, match=r"train\.sha256=.*on_change='replace'"):     # refused by default, naming the difference
        cog_benchmark(b, out=tmp_path, **kw)            # another "encoder" probed into the same folder under the same name
    rb = cog_benchmark(b, out=tmp_path, on_change="replace", **kw)
    fresh = cog_benchmark(b, **kw)
    assert rb["levels"]["L1"]["top1_mean"] == fresh["levels"]["L1"]["top1_mean"] != ra["levels"]["L1"]["top1_mean"]
    stored = json.loads((tmp_path/"same-name"/"L1"/"seed0.json").read_text())
    assert stored["top1"] == fresh["levels"]["L1"]["top1_mean"]


def test_cog_benchmark_reuses_only_with_the_same_settings(tmp_path):
    lv = {"seen": (gaussians(0), gaussians(1)), "L1": (gaussians(2), gaussians(3))}
    kw = dict(model="m", seeds=(0,), solver="lbfgs", device="cpu")
    cog_benchmark(lv, out=tmp_path, trials=0, C=1.0, **kw)
    seed0 = tmp_path/"m"/"L1"/"seed0.json"
    mtime = seed0.stat().st_mtime_ns
    cog_benchmark(lv, out=tmp_path, trials=0, C=1.0, **kw)
    assert seed0.stat().st_mtime_ns == mtime                                     # same identity: reused
    with pytest.raises(CogsynthError, match=r"probe\.hparams\.C=1\.0 -> 0\.01"):
        cog_benchmark(lv, out=tmp_path, trials=0, C=0.01, **kw)                 # default: refused
    with pytest.warns(FutureWarning, match="on_change='refuse'"), pytest.raises(CogsynthError, match="hparams.C"):
        cog_benchmark(lv, out=tmp_path, trials=0, C=0.01, on_change="error", **kw)   # the old word
    r = cog_benchmark(lv, out=tmp_path, trials=0, C=0.01, on_change="recompute", **kw)
    assert json.loads(seed0.read_text())["hparams"] == {"C": 0.01} and r["levels"]["L1"]["runs"][0]["hparams"] == {"C": 0.01}


# ---------------------------------------------------------------- 17.6: in-place image edits
def test_feature_cache_sees_an_image_replaced_under_the_same_name(tmp_path, cnn):
    from cogsynth.data import write_digits_folder
    root = write_digits_folder(tmp_path/"imgs", split="test", classes=[5, 6])
    extract_features(cnn, str(root), layers=["pre_logits"], out=tmp_path/"cache", device="cpu", batch_size=64)
    a, b = sorted((root/"5").glob("*.png"))[0], sorted((root/"6").glob("*.png"))[0]
    st = a.stat()
    a.write_bytes(b.read_bytes())                                              # replaced in place, name kept
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    cached = extract_features(cnn, str(root), layers=["pre_logits"], out=tmp_path/"cache", device="cpu", batch_size=64)
    fresh = extract_features(cnn, str(root), layers=["pre_logits"], out=tmp_path/"fresh", device="cpu", batch_size=64)
    np.testing.assert_array_equal(cached["pre_logits"].X, fresh["pre_logits"].X)


def test_content_hash_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    from cogsynth.data import write_digits_folder, ImageFolderDataset
    from cogsynth.probe import dataset_fingerprint
    root = write_digits_folder(tmp_path/"imgs", split="test", classes=[5])
    before = dataset_fingerprint(ImageFolderDataset(root), content_hash=True)
    fast_before = dataset_fingerprint(ImageFolderDataset(root, check=False))
    a = sorted((root/"5").glob("*.png"))[0]
    st, data = a.stat(), bytearray(a.read_bytes())
    data[-20] ^= 1                                                             # same size, same mtime
    a.write_bytes(bytes(data)); os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert dataset_fingerprint(ImageFolderDataset(root, check=False)) == fast_before          # size and mtime alone miss it
    assert dataset_fingerprint(ImageFolderDataset(root, check=False), content_hash=True) != before


# ---------------------------------------------------------------- 17.9: a new user's mistakes
def test_folder_without_train_and_test_is_refused(tmp_path, capsys):
    from cogsynth.data import write_digits_folder
    flat = write_digits_folder(tmp_path/"L1", split="test", classes=[5, 6, 7])
    assert cli("--model", "cnn_small", "--random-init", "--data", f"L1={flat}", "--trials", "0", "--seeds", "0", "--out", tmp_path/"run", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert "has no train/ sub-folder" in err and "same images" in err and "--data L1=" in err
    assert not (tmp_path/"run"/"features").exists()                           # refused before any extraction


def test_features_with_a_layer_the_test_split_lacks(tmp_path, capsys):
    from cogsynth.probe import save_features
    X, y = gaussians(0)
    for split, layers in (("train", ("pre_logits", "stages.1")), ("test", ("pre_logits",))):
        for l in layers: save_features(tmp_path/"feats"/"L1"/split, l, X, y, ["a", "b", "c", "d"])
    assert cli("--features", tmp_path/"feats", "--data", "L1=x", "--trials", "0", "--seeds", "0", "--out", tmp_path/"run") == 2
    err = capsys.readouterr().err
    assert "lacks features of layer(s) ['stages.1']" in err and str(tmp_path/"feats"/"L1"/"test") in err


def test_bad_digit_in_a_data_spec_names_the_item(tmp_path, capsys):
    assert cli("--model", "cnn_small", "--random-init", "--data", "seen=digits:7,8,x", "--out", tmp_path/"run") == 2
    err = capsys.readouterr().err
    assert "--data seen=digits:7,8,x" in err and "'x'" in err


# ---------------------------------------------------------------- 13: one vocabulary, CLI that explains itself
def test_precision_vocabulary_is_cores():
    X, y = gaussians(0)
    with pytest.raises(CogsynthError, match="fp32"):
        linear_probe(X, y, X, y, trials=0, precision="float32", device="cpu")
    with pytest.raises(CogsynthError, match="fp16"):
        extract_features("cnn_small", "digits", dtype="float16")
    assert linear_probe(X, y, X, y, trials=0, precision="fp32", device="cpu")["precision"] == "fp32"


def test_probe_help_shows_every_default():
    from cogsynth.cli import build_parser
    sub = build_parser("probe")._subparsers._group_actions[0].choices["probe"]
    fmt = sub._get_formatter()
    shown = {a.option_strings[-1]: fmt._expand_help(a) for a in sub._actions if a.option_strings and a.dest != "help"}
    assert [o for o, h in shown.items() if not h.strip() or "(default: " not in h] == []
    assert shown["--trials"].endswith("(default: 30)") and "(default: 22 37 45 77 93, naver/cog's" in shown["--seeds"]
    assert shown["--solver"].endswith("(default: sgd)") and shown["--precision"].endswith("(default: fp32)")
    assert shown["--on-change"].endswith("(default: refuse)") and "--random-init" in shown


@pytest.mark.parametrize("argv,flag", [(["--trials", "-1"], "--trials=-1"), (["--batch-size", "0"], "--batch-size=0"),
                                       (["--precision", "float32"], "--precision='float32'"), (["--shots", "0"], "--shots [0]")])
def test_cli_errors_name_the_flag(tmp_path, capsys, argv, flag):
    assert cli("--model", "cnn_small", "--random-init", "--data", "seen=digits:seen", "--out", tmp_path/"e", *argv) == 2
    assert flag in capsys.readouterr().err


def test_probe_and_analysis_form_no_import_cycle():
    src = {m: (ROOT/"cogsynth"/f"{m}.py").read_text() for m in ("features", "extract", "solvers", "probe", "cog", "analysis", "protocols")}
    assert "cogsynth.analysis" not in src["probe"] and "from .analysis" not in src["probe"]
    assert "cogsynth.protocols" not in src["analysis"]
    import re
    for m, s in src.items():                      # no private names of another module
        assert not re.findall(r"from (?:cogsynth)?\.?\w+ import [^\n]*\b_[a-z]", s), m
    code = "import sys, cogsynth.probe; assert 'cogsynth.analysis' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- 13: the protocol registry
def test_every_registered_protocol_runs(tmp_path):
    from cogsynth.probe import Features
    from cogsynth.protocols import list_protocols, get_protocol, run_protocol
    def feats(seed):
        X, y = gaussians(seed)
        return {"pre_logits": Features(X, y, meta={"layer": "pre_logits"})}
    small = dict(seeds=(0,), trials=0, shots=(1, 2), n_init=1, knn=True)
    assert set(list_protocols()) >= {"cog", "fewshot", "genindex", "stats", "transfer"}
    for name in list_protocols():
        p = get_protocol(name)
        names = ("aircraft", "inat2018") if p.datasets is not None else ("seen", "L1")   # a protocol with its own reader names its datasets
        data = {n: {sp: feats(10 * i + j) for j, sp in enumerate(p.splits or ("train", "test"))} for i, n in enumerate(names)}
        kw = {k: v for k, v in small.items() if k in p.settings()}
        if p.open_settings(): kw["epochs"] = 20
        res = run_protocol(name, data, out=tmp_path/name, model="toy", **kw)
        assert isinstance(res, dict) and res["message"], name
        assert any((tmp_path/name).glob("*.json")), name


def test_bad_baseline_fails_before_any_extraction(tmp_path, capsys):
    assert cli("--model", "cnn_small", "--random-init", "--data", "seen=digits:seen", "--baseline", tmp_path/"none", "--out", tmp_path/"run", "--device", "cpu") == 2
    assert "no baseline results at" in capsys.readouterr().err
    assert not (tmp_path/"run"/"features").exists()


def test_levels_refuse_a_split_they_do_not_have(tmp_path, capsys):
    assert cli("--model", "cnn_small", "--random-init", "--levels", "imagenet-cog", "--image-root", tmp_path, "--seen-root", tmp_path, "--protocol", "stats",
               "--split", "val", "--out", tmp_path/"run") == 2
    assert "--split='val' is not one of: train, test" in capsys.readouterr().err


def test_extract_all_reads_images_with_the_encoders_size_and_statistics(tmp_path):
    from cogsynth.data import write_digits_folder
    from cogsynth.models import create_encoder, save_encoder
    from cogsynth.protocols import dataset_for, extract_all
    enc = save_encoder(tmp_path/"run"/"encoder.pt", create_encoder("cnn_small"), "cnn_small", img_size=24, mean=[0.1] * 3, std=[0.2] * 3)
    data = {"L1": {"train": dataset_for(str(write_digits_folder(tmp_path/"L1", split="test", classes=[5, 6])), "train", whole_ok=True)}}
    tf = extract_all(data, model=enc, out=tmp_path/"o", device="cpu")["L1"]["train"]["pre_logits"].meta["transform"]
    assert "Resize(size=(24, 24)" in tf and "Normalize(mean=[0.1, 0.1, 0.1], std=[0.2, 0.2, 0.2])" in tf


# ---------------------------------------------------------------- 16.4: ImageNet-CoG on a fake image root
def fake_imagenet(root, per_level=2, n_images=5, seen=("n01440764", "n01443537", "n01484850")):
    from PIL import Image
    from cogsynth.core import write_json
    from cogsynth.levels import LEVELS_SCHEMA, load_levels
    pub = load_levels("imagenet-cog")
    rng = np.random.default_rng(0)
    levels = [{"name": l["name"], "concepts": l["concepts"][:per_level]} for l in pub["levels"]]
    def images(folder, shade):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_images): Image.fromarray((rng.random((8, 8, 3)) * 60 + shade).astype(np.uint8)).save(folder/f"{folder.name}_{i}.JPEG")
    for k, l in enumerate(levels):
        for j, c in enumerate(l["concepts"]): images(Path(root)/"in21k"/c["wnid"], 20 * (2 * k + j))
    for j, w in enumerate(seen):
        for split in ("train", "val"): images(Path(root)/"in1k"/split/w, 60 * j)
    write_json(Path(root)/"levels.json", {"schema": LEVELS_SCHEMA, "seen": {"source": "fake", "count": len(seen)}, "levels": levels})
    return Path(root)/"in21k", Path(root)/"in1k", Path(root)/"levels.json", levels


def test_imagenet_cog_lists_every_missing_concept_before_extracting(tmp_path, capsys):
    in21k, in1k, lv, levels = fake_imagenet(tmp_path)
    gone = [levels[0]["concepts"][1]["wnid"], levels[4]["concepts"][0]["wnid"]]
    for w in gone: (in21k/w).rename(tmp_path/w)
    (in1k/"val"/"n01484850").rename(tmp_path/"seen_gone")
    splits = {"schema": "cogsynth.splits/1", "splits": {c["wnid"]: {"train": [f"{c['wnid']}/{c['wnid']}_{i}.JPEG" for i in range(3)],
                                                                    "test": [f"{c['wnid']}/{c['wnid']}_4.JPEG", f"{c['wnid']}/missing.JPEG"]}
                                                     for l in levels for c in l["concepts"]}}
    (tmp_path/"splits.json").write_text(json.dumps(splits))
    rc = cli("--protocol", "cog", "--levels", lv, "--image-root", in21k, "--seen-root", in1k, "--splits", tmp_path/"splits.json",
             "--model", "cnn_small", "--random-init", "--out", tmp_path/"run", "--device", "cpu")
    assert rc == 2
    err = capsys.readouterr().err
    listed = (tmp_path/"run"/"missing.txt").read_text().splitlines()
    assert len(listed) == 2 + 1 + 8                  # two concept folders, one seen folder, every other concept's missing image
    for w in gone: assert w in err
    assert "n01484850" in err and "nothing extracted" in err
    assert not (tmp_path/"run"/"features").exists()


def test_imagenet_cog_runs_the_protocol_on_a_fake_root(tmp_path):
    in21k, in1k, lv, _ = fake_imagenet(tmp_path)
    out = tmp_path/"run"
    assert cli("--protocol", "cog", "--levels", lv, "--image-root", in21k, "--seen-root", in1k, "--n-train", 3, "--n-test", 2,
               "--model", "cnn_small", "--random-init", "--trials", 0, "--seeds", 0, "--out", out, "--device", "cpu") == 0
    res = json.loads((out/"cog.json").read_text())["results"][0]
    assert list(res["levels"]) == ["seen", "L1", "L2", "L3", "L4", "L5"]
    for lvl in ("L1", "L5"):
        tr, te = (load_features(feature_entries(out/"features"/lvl/sp)[0], "pre_logits") for sp in ("train", "test"))
        assert (len(tr), len(te)) == (6, 4) and tr.classes == sorted(tr.classes)
    assert (out/"cog.md").exists() and (out/"cog.csv").exists()


def test_imagenet_cog_reads_navers_split_pickle_safely(tmp_path, capsys):
    import pickle
    in21k, in1k, lv, levels = fake_imagenet(tmp_path)
    wnids = [c["wnid"] for l in levels for c in l["concepts"]]
    official = {w: {"train": np.array([f"{w}/{w}_{i}.JPEG" for i in range(800)]), "test": np.array([f"{w}/{w}_t{i}.JPEG" for i in range(50)])}
                for w in wnids}
    with open(tmp_path/"cog_concepts_split_file.pkl", "wb") as f: pickle.dump(official, f)
    rc = cli("--protocol", "cog", "--levels", lv, "--image-root", in21k, "--seen-root", in1k, "--splits", tmp_path/"cog_concepts_split_file.pkl",
             "--model", "cnn_small", "--random-init", "--out", tmp_path/"run", "--device", "cpu")
    assert rc == 2                                                   # the fake root holds 5 of each concept's 850 images
    listed = (tmp_path/"run"/"missing.txt").read_text().splitlines()
    assert len(listed) == len(wnids) and all("845 image(s)" in l for l in listed)
    assert not (tmp_path/"run"/"features").exists()


# ---------------------------------------------------------------- 24.1: labels are joined by class name
def digit_level(root, train, test):
    from cogsynth.data import write_digits_folder
    write_digits_folder(root/"train", split="train", classes=train); write_digits_folder(root/"test", split="test", classes=test)
    return root


def test_a_training_class_absent_from_the_test_folder_shifts_no_label(tmp_path):
    lv = digit_level(tmp_path/"L1", [5, 6, 7], [5, 7])                 # class 6 has no test images
    full = digit_level(tmp_path/"full", [5, 6, 7], [5, 6, 7])
    base = ["--model", "cnn_small", "--random-init", "--trials", "0", "--seeds", "22", "--device", "cpu"]
    assert cli(*base, "--data", f"L1={lv}", "--out", tmp_path/"run") == 0
    assert cli(*base, "--data", f"L1={full}", "--out", tmp_path/"ref") == 0
    res = json.loads((tmp_path/"run"/"cog.json").read_text())["results"][0]["levels"]["L1"]
    assert res["top1_mean"] > 80, res["top1_mean"]                     # by position, the 7s were scored as 6s: about 50
    # the same probe on the full test folder's 5s and 7s, joined by name in Python: the same number
    tr, te = (load_features(feature_entries(tmp_path/"ref"/"features"/"L1"/sp)[0], "pre_logits") for sp in ("train", "test"))
    keep = te.names != "6"
    expected = linear_probe(tr.X, tr.names, te.X[keep], te.names[keep], trials=0, seed=22, device="cpu")["top1"]
    assert res["top1_mean"] == expected


def test_a_test_class_unknown_to_training_is_named(tmp_path, capsys):
    lv = digit_level(tmp_path/"L1", [5, 6], [5, 8])
    assert cli("--model", "cnn_small", "--random-init", "--data", f"L1={lv}", "--trials", "0", "--seeds", "22", "--device", "cpu",
               "--out", tmp_path/"run") == 2
    err = capsys.readouterr().err
    assert "level 'L1': test class(es) ['8'] do not occur in the training set (its 2 classes: 5, 6)" in err
    assert not (tmp_path/"run"/"features").exists()                           # refused before any extraction


def test_linear_probe_joins_class_names_not_positions():
    X, y = gaussians(0, classes=3)
    names = np.array(["cat", "dog", "emu"])[y]
    keep = names != "dog"
    a = linear_probe(X, names, X[keep], names[keep], trials=0, solver="lbfgs", device="cpu")
    b = linear_probe(X, y, X[keep], y[keep], trials=0, solver="lbfgs", device="cpu")
    assert a["top1"] == b["top1"] and a["classes"] == ["cat", "dog", "emu"]
