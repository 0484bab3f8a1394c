"""cogsynth evaluate (issue 25.2, 25.4): every registered test set layout scored against a hand computation, predictions
restricted to the classes a test set has, errors before any image is read, a killed run resumed without reading an
image twice, the identity of a stored evaluation, torchrun shards, the command on a `cogsynth train` run."""
import contextlib, io, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cogsynth.testsets as ts
from cogsynth.core import CogsynthError
from cogsynth.evaluate import eval_transform_for, evaluate, evaluate_table, class_filter, plot_evaluation, read_evaluation
from cogsynth.models import build_classifier, create_encoder, load_classifier, save_classifier, save_encoder
from cogsynth.runs import IdentityChanged
from cogsynth.testsets import LayoutError, fake_layout, load_testset
from cogsynth.wordnet import imagenet_wnids

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COGSYNTH_QUIET": "1"}
N = 8                                                       # classes of the fakes and of the models


def _cli(*args):
    "`cogsynth ARGS` in this process: (return code, stdout, stderr)."
    from cogsynth.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([*map(str, args)])
    return rc, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def opened(fail:bool=False, after:int|None=None):
    "Record every image a test set opens; `fail`: any open is an error; `after`: the open after that many is a crash."
    paths, real = [], ts.open_image
    class Crash(BaseException): pass
    def spy(path, mode="RGB"):
        if fail: raise AssertionError(f"an image was opened: {path}")
        if after is not None and len(paths) >= after: raise Crash("killed")
        paths.append(path)
        return real(path, mode)
    from unittest import mock
    with mock.patch("cogsynth.testsets.open_image", side_effect=spy): yield paths


def random_classifier(folder, classes, *, seed=0, bias=None):
    "A cnn_tiny classifier with a random head over `classes` (a large `bias` on some), saved as a cogsynth run."
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    enc = create_encoder("cnn_tiny")
    save_encoder(folder/"encoder.pt", enc, "cnn_tiny", img_size=8)
    net = build_classifier(enc, len(classes), "linear")
    with torch.no_grad():
        net.head.weight.normal_(0, 3.0)
        for c, b in (bias or {}).items(): net.head.bias[list(classes).index(c)] = b
    save_classifier(folder/"classifier.pt", net, "linear", classes, folder/"encoder.pt", {})
    return folder


@pytest.fixture(scope="module")
def wnids(tmp_path_factory):
    "The wnids of the fakes with N classes (the same for every layout), sorted."
    return load_testset("imagenet-r", fake_layout("imagenet-r", tmp_path_factory.mktemp("w"), per_class=1, classes=N).root, expected=None).classes


@pytest.fixture(scope="module")
def model(tmp_path_factory, wnids):
    return random_classifier(tmp_path_factory.mktemp("m")/"run", wnids)


def truth_of(name, layout, path, wnids):
    "The class of a fake's image, from its path alone (not through the readers)."
    p = Path(path)
    if layout == "ilsvrc": return wnids[(int(p.stem.split("_")[-1]) - 1) % N]          # image j is of class (j - 1) % N
    if name == "imagenet-v2": return imagenet_wnids("1k")[int(p.parent.name)]          # folder i: class i of the sorted wnids
    return p.parent.name                                                               # a wnid folder


def hand_scores(run, files, truths, scored):
    "Top-1 and top-5 by a forward pass of our own, only the logits of `scored` classes competing."
    from PIL import Image
    clf = load_classifier(run)
    tf = eval_transform_for(clf)
    with torch.no_grad(): logits = clf.model(torch.stack([tf(Image.open(f).convert("RGB")) for f in files]))
    mask = torch.tensor([c in scored for c in clf.classes])
    logits[:, ~mask] = -float("inf")
    t = torch.tensor([clf.classes.index(c) for c in truths])
    top = logits.topk(min(5, int(mask.sum())), 1).indices
    return 100 * (top[:, 0] == t).float().mean().item(), 100 * (top == t[:, None]).any(1).float().mean().item()


LAYOUTS = [(n, lay) for n in ts.TESTSETS for lay in ts.TESTSETS[n].fakes]


@pytest.mark.parametrize("name,layout", LAYOUTS)
def test_every_testset_layout_matches_a_hand_computation(name, layout, tmp_path, model, wnids):
    fake = fake_layout(name, tmp_path/"d", per_class=2, classes=N, layout=layout)
    rec = evaluate(model, {name: fake.root}, tmp_path/"out", options={name: {"expected": None}}, device="cpu")
    files = [str(p) for p in sorted(fake.root.rglob("*")) if p.suffix.lower() in (".jpeg", ".jpg") and "devkit" not in str(p)]
    top1, top5 = hand_scores(model, files, [truth_of(name, layout, f, wnids) for f in files], wnids)
    got = rec["testsets"][name]
    assert (got["images"], got["classes"], got["logits"]) == (2 * N, N, N)
    assert got["top1"] == pytest.approx(top1) and got["top5"] == pytest.approx(top5)
    assert (tmp_path/"out"/"evaluate.md").read_text().count("|") > 10 and (tmp_path/"out"/"evaluate.png").stat().st_size > 1000


def test_random_model_is_not_trivially_right(tmp_path, model, wnids):
    "The hand computations above discriminate: neither top-1 nor top-5 of the random head is 0 or 100."
    fake = fake_layout("imagenet-sketch", tmp_path/"s", per_class=3, classes=N)
    got = evaluate(model, {"imagenet-sketch": fake.root}, tmp_path/"out", options={"imagenet-sketch": {"expected": None}}, device="cpu")
    s = got["testsets"]["imagenet-sketch"]
    assert 0 < s["top1"] < s["top5"] < 100, s


def test_predictions_restricted_to_the_classes_a_testset_has(tmp_path, wnids):
    "A 200-class-style subset: the model's best logit is a class the test set lacks; masked, the other classes compete."
    fake = fake_layout("imagenet-r", tmp_path/"r", per_class=3, classes=N)
    gone = wnids[4:]
    for w in gone: [p.unlink() for p in (fake.root/w).iterdir()]; (fake.root/w).rmdir()
    run = random_classifier(tmp_path/"biased", wnids, bias={gone[0]: 100.0})
    rec = evaluate(run, {"imagenet-r": fake.root}, tmp_path/"out", options={"imagenet-r": {"expected": None}}, device="cpu")["testsets"]["imagenet-r"]
    files = [str(p) for p in sorted(fake.root.rglob("*.jpg"))]
    truths = [Path(f).parent.name for f in files]
    assert hand_scores(run, files, truths, wnids)[0] == 0.0                     # unmasked: the biased absent class wins every image
    top1, top5 = hand_scores(run, files, truths, wnids[:4])
    assert (rec["images"], rec["classes"], rec["logits"]) == (12, 4, 4)
    assert rec["top1"] == pytest.approx(top1) and rec["top5"] == 100.0 == top5 and rec["top1"] > 0


def test_a_class_the_model_lacks_is_named_before_any_image(tmp_path, model, wnids):
    fake = fake_layout("imagenet-a", tmp_path/"a", per_class=2, classes=N + 2)        # 10 classes: some the model never learned
    unknown = sorted(set(load_testset("imagenet-a", fake.root, expected=None).classes) - set(wnids))
    with opened(fail=True):
        with pytest.raises(CogsynthError, match=f"of its {N + 2} classes are no class of the model, e.g. .*{unknown[0]}"):
            evaluate(model, {"imagenet-a": fake.root}, tmp_path/"out", options={"imagenet-a": {"expected": None}}, device="cpu")
    assert not (tmp_path/"out"/"evaluate.json").exists() and not (tmp_path/"out"/"logits").exists()
    rc, _, err = _cli("evaluate", "--model", model, "--data", f"imagenet-a={fake.root}", "--expected", "None", "--out", tmp_path/"cli", "--workers", "0")
    assert rc == 2 and "--drop-unknown" in err and "--classes=" in err, err
    rec = evaluate(model, {"imagenet-a": fake.root}, tmp_path/"out", options={"imagenet-a": {"expected": None}}, device="cpu", drop_unknown=True)
    a = rec["testsets"]["imagenet-a"]
    assert sorted(a["dropped_classes"]) == unknown and a["images"] == 2 * (N + 2 - len(unknown))
    have = sorted(set(wnids) - set(unknown))                                   # a class filter: only these are scored
    sub = evaluate(model, {"imagenet-a": fake.root}, tmp_path/"filtered", options={"imagenet-a": {"expected": None}}, device="cpu", classes=have[:1])
    assert (sub["testsets"]["imagenet-a"]["classes"], sub["testsets"]["imagenet-a"]["logits"], sub["testsets"]["imagenet-a"]["images"]) == (1, 1, 2)


def test_wrong_layout_missing_split_file_and_counts_fail_before_any_image(tmp_path, model):
    r = fake_layout("imagenet-r", tmp_path/"r", per_class=2, classes=N)
    flat = fake_layout("imagenet-val", tmp_path/"flat", per_class=2, classes=N, layout="ilsvrc")
    (flat.root/ts.ILSVRC_DEVKIT/"data"/ts.ILSVRC_GROUND_TRUTH).unlink()
    anyc = lambda n: {n: {"expected": None}}
    for split in ("train", "test"): (tmp_path/"digits"/split/"0").mkdir(parents=True)     # split folders, not class folders
    with opened(fail=True):
        with pytest.raises(LayoutError, match="imagenet-v2 at .* holds 8 wnid folders"):
            evaluate(model, {"imagenet-v2": r.root}, tmp_path/"o1", options=anyc("imagenet-v2"), device="cpu")
        with pytest.raises(LayoutError, match=f"none of .* holds both meta.mat and {ts.ILSVRC_GROUND_TRUTH}"):
            evaluate(model, {"imagenet-val": flat.root}, tmp_path/"o2", options=anyc("imagenet-val"), device="cpu")
        with pytest.raises(LayoutError, match="found 16 images, expected 30,000"):
            evaluate(model, {"imagenet-r": r.root}, tmp_path/"o3", device="cpu")
        with pytest.raises(LayoutError, match="holds split folders"):
            evaluate(model, {"real": tmp_path/"digits"}, tmp_path/"o4", device="cpu")
    assert not any((tmp_path/o/"evaluate.json").exists() for o in ("o1", "o2", "o3", "o4"))
    rc, _, err = _cli("evaluate", "--model", model, "--data", f"imagenet-r={r.root}", "--out", tmp_path/"o5", "--workers", "0")
    assert rc == 2 and "--expected=None" in err, err


def test_killed_run_resumes_without_reading_an_image_twice(tmp_path, model):
    fakes = {n: fake_layout(n, tmp_path/n, per_class=2, classes=N) for n in ("imagenet-sketch", "imagenet-r", "imagenet-a")}
    data, anyc = {n: f.root for n, f in fakes.items()}, {n: {"expected": None} for n in fakes}
    with opened(after=2 * N + 5) as first, pytest.raises(BaseException, match="killed"):   # killed during the second test set
        evaluate(model, data, tmp_path/"out", options=anyc, device="cpu")
    assert len(first) == 2 * N + 5 and not (tmp_path/"out"/"evaluate.json").exists()
    with opened() as second:
        rec = evaluate(model, data, tmp_path/"out", options=anyc, device="cpu")
    assert len(second) == 2 * 2 * N and not set(first[:2 * N]) & set(second)         # the first test set's logits were kept
    assert len(set(first) | set(second)) == 3 * 2 * N
    clean = evaluate(model, data, tmp_path/"clean", options=anyc, device="cpu")
    assert rec["testsets"] == clean["testsets"]
    with opened(fail=True): assert evaluate(model, data, tmp_path/"out", options=anyc, device="cpu")["testsets"] == rec["testsets"]
    assert not [p for p in (tmp_path/"out"/"logits").rglob(".work-*")]


def test_stored_evaluation_identity(tmp_path, model, wnids):
    r = fake_layout("imagenet-r", tmp_path/"r", per_class=2, classes=N)
    a = fake_layout("imagenet-a", tmp_path/"a", per_class=2, classes=N)
    anyc = {"imagenet-r": {"expected": None}, "imagenet-a": {"expected": None}}
    ev = lambda run, data, **kw: evaluate(run, data, tmp_path/"out", options={n: anyc[n] for n in data}, device="cpu", **kw)
    ev(model, {"imagenet-r": r.root})
    other = random_classifier(tmp_path/"other", wnids, seed=1)
    with pytest.raises(IdentityChanged, match="model.weights_sha256") as e: ev(other, {"imagenet-r": r.root})
    assert "on_change='extend'" not in str(e.value)                            # the model cannot change in one folder
    both = ev(model, {"imagenet-a": a.root}, on_change="extend")
    assert list(both["testsets"]) == ["imagenet-r", "imagenet-a"]
    with opened(fail=True): assert ev(model, {"imagenet-r": r.root, "imagenet-a": a.root})["testsets"] == both["testsets"]   # reused
    ev(other, {"imagenet-r": r.root}, on_change="replace")
    assert (tmp_path/"out"/"evaluate.json.replaced-1").exists() and read_evaluation(tmp_path/"out")["model"] == "other"
    with opened() as again: ev(other, {"imagenet-r": r.root}, on_change="recompute")
    assert len(again) == 2 * N                                                 # recompute reads the images again


def test_timm_name_with_local_imagenet_weights(tmp_path):
    torch.manual_seed(0)
    torch.save(create_encoder("cnn_tiny", num_classes=1000).state_dict(), tmp_path/"w.pth")
    fake = fake_layout("imagenet-r", tmp_path/"r", per_class=2, classes=5)
    rec = evaluate("cnn_tiny", {"imagenet-r": fake.root}, tmp_path/"out", weights=tmp_path/"w.pth", options={"imagenet-r": {"expected": None}}, device="cpu")
    got = rec["testsets"]["imagenet-r"]
    files = [str(p) for p in sorted(fake.root.rglob("*.jpg"))]
    clf = load_classifier("cnn_tiny", weights=tmp_path/"w.pth")
    from PIL import Image
    with torch.no_grad(): logits = clf.model(torch.stack([eval_transform_for(clf)(Image.open(f).convert("RGB")) for f in files]))
    scored = [clf.classes.index(Path(f).parent.name) for f in files]
    mask = torch.zeros(1000, dtype=torch.bool); mask[sorted(set(scored))] = True
    hand = 100 * (logits.masked_fill(~mask, -float("inf")).argmax(1) == torch.tensor(scored)).float().mean().item()
    assert (rec["model"], rec["n_classes"], got["logits"], got["classes"]) == ("cnn_tiny", 1000, 5, 5)
    assert got["top1"] == pytest.approx(hand) and got["top5"] == 100.0
    with pytest.raises(CogsynthError, match="needs weights="):
        evaluate("cnn_tiny", {"imagenet-r": fake.root}, tmp_path/"o2", options={"imagenet-r": {"expected": None}}, device="cpu")


SHARD = """
import sys
from cogsynth.cli import main
sys.exit(main(sys.argv[1:]))
"""

def test_torchrun_two_ranks_match_one_process(tmp_path, model):
    fakes = {n: fake_layout(n, tmp_path/n, per_class=3, classes=N) for n in ("imagenet-r", "imagenet-sketch")}
    args = ["evaluate", "--model", str(model), *[x for n, f in fakes.items() for x in ("--data", f"{n}={f.root}")], "--expected", "None",
            "--workers", "0", "--batch-size", "4", "--device", "cpu"]
    (tmp_path/"run.py").write_text(SHARD)
    p = subprocess.run([str(BIN/"torchrun"), "--standalone", "--nproc-per-node", "2", str(tmp_path/"run.py"), *args, "--out", str(tmp_path/"two")],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert _cli(*args, "--out", tmp_path/"one")[0] == 0
    two, one = read_evaluation(tmp_path/"two"), read_evaluation(tmp_path/"one")
    for n in fakes:
        assert {k: two["testsets"][n][k] for k in ("images", "top1", "top5")} == {k: one["testsets"][n][k] for k in ("images", "top1", "top5")}
        a, b = (np.load(next((tmp_path/o/"logits"/n).glob("*/logits.npy"))) for o in ("two", "one"))
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not list((tmp_path/"two"/"logits").rglob(".work-*")) and not list((tmp_path/"two"/"logits").rglob(".shards"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A tiny classifier trained by `cogsynth train` on a fake ImageNet folder of N classes."
    d = tmp_path_factory.mktemp("trained")
    train_dir = fake_layout("imagenet-sketch", d/"train", per_class=6, classes=N).root
    rc, _, err = _cli("train", "--data", train_dir, "--model", "cnn_tiny", "--epochs", "3", "--img-size", "8", "--batch-size", "8",
                      "--lr", "0.1", "--workers", "0", "--device", "cpu", "--out", d/"run")
    assert rc == 0, err
    return d/"run"


def test_cli_evaluates_a_trained_run_on_val_and_a_free_name(tmp_path, trained, wnids):
    val = fake_layout("imagenet-val", tmp_path/"val", per_class=3, classes=N)            # wnid folders
    inverted = tmp_path/"inverted"                                                    # a shifted copy under a free name
    from PIL import Image, ImageOps
    for p in sorted(val.root.rglob("*.JPEG")):
        (inverted/p.parent.name).mkdir(parents=True, exist_ok=True)
        ImageOps.invert(Image.open(p).convert("RGB")).save(inverted/p.parent.name/f"{p.stem}.png")
    rc, out, err = _cli("evaluate", "--model", trained, "--data", f"imagenet-val={val.root}", "--data", f"inverted={inverted}",
                        "--expected", "imagenet-val=24", "--out", tmp_path/"ev", "--workers", "0", "--device", "cpu", "--name", "trained")
    assert rc == 0, err
    rec = read_evaluation(tmp_path/"ev")
    assert rec["testsets"]["imagenet-val"]["top1"] >= 75 and rec["testsets"]["imagenet-val"]["layout"] == "wnid folders"
    assert rec["testsets"]["inverted"]["layout"] == "class folders" and rec["testsets"]["inverted"]["images"] == 24
    assert "| model | IN-Val top-1 | IN-Val top-5 | inverted top-1 | inverted top-5 |" in out
    md = (tmp_path/"ev"/"evaluate.md").read_text()
    assert md.startswith("# Evaluation of trained") and "![top-1 and top-5](evaluate.png)" in md and rec["environment"]["packages"]["torch"]


def test_table_and_figure_of_several_models(tmp_path, model, trained):
    r = fake_layout("imagenet-r", tmp_path/"r", per_class=2, classes=N)
    opt = {"imagenet-r": {"expected": None}}
    a = evaluate(model, {"imagenet-r": r.root}, tmp_path/"a", options=opt, device="cpu", name="random")
    b = evaluate(trained, {"imagenet-r": r.root}, tmp_path/"b", options=opt, device="cpu")
    rows = evaluate_table([a, tmp_path/"b"])
    assert rows == [{"model": "random", "IN-R top-1": round(a["testsets"]["imagenet-r"]["top1"], 2), "IN-R top-5": round(a["testsets"]["imagenet-r"]["top5"], 2)},
                    {"model": "run", "IN-R top-1": round(b["testsets"]["imagenet-r"]["top1"], 2), "IN-R top-5": round(b["testsets"]["imagenet-r"]["top5"], 2)}]
    plot_evaluation([a, b], path=tmp_path/"fig.png")
    assert (tmp_path/"fig.png").stat().st_size > 1000
    with pytest.raises(CogsynthError, match="no evaluation at"): evaluate_table([tmp_path])


def test_class_filter_names_imagenet_100():
    in100 = class_filter("imagenet-100")
    assert len(in100) == len(set(in100)) == 100 and set(in100) <= set(imagenet_wnids("1k"))
    with pytest.raises(CogsynthError, match="is neither a named class set"): class_filter("imagenet-99")
